"""How far a reduced-precision runtime moves a trained model's outputs from f32.

A variant (``onnxruntime-int8``, ``openvino-bf16``, ...) is only worth its speed if the model still
computes what it learnt. :func:`output_drift` runs the same masked sequences through the variant and
through its f32 base runtime and compares two things: the final hidden states (mean cosine similarity
per token) and the masked-language-model loss that the pre-training stack's MLM head gives on each.

The exported encoders stop at the hidden states, so the loss is the f32 MLM head, in torch, applied to
the hidden states that each runtime returned: the drift is the encoder's alone. Drift means something
only for trained weights; ``protran drift`` reads a checkpoint of ``flexibert.pretrain`` and writes the
figures of several runtimes as one JSON document (see :func:`drift_report`).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexibert import clitools
from protran.vocabulary import RUNTIME_NAMES

if TYPE_CHECKING:
    import numpy as np

#: Validation sequences of the corpus a drift report runs through each runtime, by default.
DEFAULT_DRIFT_SEQUENCES = 32


@dataclass(frozen=True)
class OutputDrift:
    """A variant's outputs against its f32 base on the same masked sequences.

    ``hidden_cosine``: mean cosine similarity of the final hidden state of every non-padding token;
    ``mlm_loss_f32`` / ``mlm_loss``: masked-token cross-entropy (nats) from the base's and the variant's
    hidden states through the f32 MLM head; ``mlm_loss_increase_rel``: (mlm_loss - mlm_loss_f32) /
    mlm_loss_f32.
    """

    runtime: str
    base_runtime: str
    precision: str
    calibration: str
    sequences: int
    hidden_cosine: float
    mlm_loss_f32: float
    mlm_loss: float
    mlm_loss_increase_rel: float

    def report_entry(self) -> dict[str, Any]:
        """The figures as one runtime's entry of a ``protran drift`` report."""
        return {"base_runtime": self.base_runtime, "precision": self.precision, "calibration": self.calibration,
                "hidden_cosine": self.hidden_cosine, "mlm_loss_f32": self.mlm_loss_f32, "mlm_loss": self.mlm_loss,
                "mlm_loss_increase_rel": self.mlm_loss_increase_rel}


def output_drift(
    model,
    runtime,
    corpus_ids,
    *,
    batch_size: int = 1,
    num_threads: int | None = 1,
    seed: int = 0,
    mask_prob: float = 0.15,
    special_tokens=None,
) -> OutputDrift:
    """The drift of ``runtime`` (a name or a :class:`~protran.Runtime`) from its f32 base runtime.

    ``model`` is a masked-language model (``flexibert.build_mlm_model``, trained); its encoder is
    prepared in both runtimes at ``[batch_size, seq_len]`` and its MLM head computes both losses in f32
    torch from the hidden states each runtime returned (the exported encoder ends there). ``corpus_ids``
    are int64 token blocks ``[n, seq_len]`` (e.g. ``load_corpus().validation``); whole batches of them
    are masked as the pre-training stack masks them (``flexibert.mlm_batches`` with ``seed``). The
    encoder runs without an attention mask, as exported encoders do. ``special_tokens`` defaults to the
    project's ids 0-4. An unavailable runtime raises ``RuntimeUnavailableError``.
    """
    import numpy as np
    import torch

    from flexibert import IGNORE_INDEX, SpecialTokens, mlm_batches
    from protran._runtimes import Runtime, get_runtime

    if not (hasattr(model, "encoder") and hasattr(model, "mlm_head")):
        raise TypeError("output_drift needs a masked-language model (flexibert.build_mlm_model), not a bare encoder")
    variant_runtime = runtime if isinstance(runtime, Runtime) else get_runtime(runtime)
    variant = variant_runtime.variant
    blocks = torch.as_tensor(np.asarray(corpus_ids), dtype=torch.int64)
    if blocks.dim() != 2:
        raise ValueError(f"corpus_ids must be token blocks [n, seq_len], got shape {tuple(blocks.shape)}")
    whole = len(blocks) - len(blocks) % batch_size
    if whole == 0:
        raise ValueError(f"{len(blocks)} sequences do not fill one batch of {batch_size}")
    special = special_tokens or SpecialTokens(pad=0, unk=1, cls=2, sep=3, mask=4)
    model = model.eval()
    vocab_size = int(model.encoder.vocab_size)
    seq_len = int(blocks.shape[1])
    with tempfile.TemporaryDirectory(prefix="protran-drift-") as scratch:
        variant_session = variant_runtime.prepare(model.encoder, batch_size, seq_len, num_threads,
                                                  Path(scratch) / "variant")
        with variant_session, get_runtime(variant.base_runtime).prepare(
                model.encoder, batch_size, seq_len, num_threads, Path(scratch) / "base") as base_session:
            cosines: list[np.ndarray] = []
            loss_sum_f32, loss_sum, count = 0.0, 0.0, 0
            for ids, labels in mlm_batches(blocks[:whole], batch_size, mask_prob, seed, vocab_size=vocab_size,
                                           special_tokens=special):
                ids_np = ids.numpy()
                hidden_f32, hidden = base_session.infer(ids_np), variant_session.infer(ids_np)
                tokens = ids_np != special.pad
                cosines.append(_cosines(hidden_f32[tokens], hidden[tokens]))
                selected = labels != IGNORE_INDEX
                count += int(selected.sum())
                loss_sum_f32 += _loss_sum(model, hidden_f32, selected, labels)
                loss_sum += _loss_sum(model, hidden, selected, labels)
    if count == 0:
        raise ValueError("no token was masked; the sequences hold only special tokens")
    loss_f32, loss = loss_sum_f32 / count, loss_sum / count
    return OutputDrift(
        runtime=variant.name, base_runtime=variant.base_runtime, precision=variant.precision,
        calibration=variant.calibration, sequences=whole, hidden_cosine=float(np.concatenate(cosines).mean()),
        mlm_loss_f32=loss_f32, mlm_loss=loss, mlm_loss_increase_rel=(loss - loss_f32) / loss_f32,
    )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import numpy as np

    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(norms, 1e-30)


def _loss_sum(model, hidden: np.ndarray, selected, labels) -> float:
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        logits = model.mlm_head(torch.from_numpy(hidden)[selected].float())
        return float(F.cross_entropy(logits, labels[selected], reduction="sum"))


# -- checkpoints and the report -------------------------------------------------------------------------


def load_mlm_checkpoint(path: str | Path, arch: str | Path | None = None):
    """(model, spec): the masked-language model of a ``flexibert.pretrain`` checkpoint
    (``flexibert.load_mlm_checkpoint``), its architecture the one the checkpoint records or else
    ``arch`` (a model_dict JSON file). Every problem is a ``ValueError`` or ``OSError`` of one line."""
    from flexibert import ArchSpec
    from flexibert import load_mlm_checkpoint as load_model

    spec = None if arch is None else ArchSpec.from_model_dict(json.loads(Path(arch).read_text(encoding="utf-8")),
                                                              space=False)
    try:
        model = load_model(path, spec)
    except ValueError as error:
        if arch is None and "records no architecture" in str(error):
            raise ValueError(f"{error}: pass --arch MODEL_DICT.json") from None
        raise
    return model, model.encoder.spec


def drift_report(
    checkpoint: str | Path,
    runtimes: list[str],
    *,
    arch: str | Path | None = None,
    sequences: int = DEFAULT_DRIFT_SEQUENCES,
    batch_size: int = 1,
    seq_len: int = 128,
    num_threads: int | None = 1,
    seed: int = 0,
    corpus: str | Path | None = None,
) -> dict[str, Any]:
    """The ``protran drift`` document: ``{"model": {"checkpoint", "arch_hash"}, "sequences": N,
    "runtimes": {name: entry}}``, an entry being :meth:`OutputDrift.report_entry` or, for a runtime that
    cannot run here, ``{"available": false, "reason": ...}``. The sequences are the first ``sequences``
    validation blocks of ``corpus`` (default the shipped one, with the shipped tokenizer)."""
    from flexibert import load_corpus, model_hash
    from protran._runtimes import RuntimeUnavailableError, get_runtime

    model, spec = load_mlm_checkpoint(checkpoint, arch)
    blocks = load_corpus(corpus, seq_len=seq_len).validation[:sequences]
    if int(blocks.max()) >= model.encoder.vocab_size:
        raise ValueError(f"the corpus has token ids beyond the model's vocabulary of {model.encoder.vocab_size}; "
                         "give the corpus the checkpoint was trained on (--corpus)")
    whole = len(blocks) - len(blocks) % batch_size
    entries: dict[str, Any] = {}
    for name in runtimes:
        runtime = get_runtime(name)
        reason = runtime.unavailable_reason()
        if reason is not None:
            entries[name] = {"available": False, "reason": reason}
            continue
        try:
            drift = output_drift(model, runtime, blocks, batch_size=batch_size, num_threads=num_threads, seed=seed)
        except RuntimeUnavailableError as error:  # a device found missing only when preparing
            entries[name] = {"available": False, "reason": str(error)}
            continue
        entries[name] = drift.report_entry()
    return {"model": {"checkpoint": str(checkpoint), "arch_hash": model_hash(spec)}, "sequences": whole,
            "runtimes": entries}


# -- the command ---------------------------------------------------------------------------------------


def add_drift_parser(sub: argparse._SubParsersAction) -> None:
    p = clitools.add_command(
        sub, "drift", _drift,
        "how far reduced-precision runtimes move a trained model's hidden states and MLM loss from f32",
        "protran drift --checkpoint runs/pretrain/checkpoint.pt --runtime onnxruntime-int8 "
        "--runtime openvino-int8 --out drift.json",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt of flexibert's pretrain (or its folder)")
    p.add_argument("--runtime", required=True, action="append", choices=RUNTIME_NAMES,
                   help="a runtime to compare with its f32 base (repeatable)")
    p.add_argument("--arch", help="model_dict JSON of the checkpoint's architecture, for a checkpoint without one")
    p.add_argument("--sequences", type=clitools.positive_int, default=DEFAULT_DRIFT_SEQUENCES,
                   help=f"validation sequences of the corpus to run (default {DEFAULT_DRIFT_SEQUENCES})")
    p.add_argument("--batch-size", type=clitools.positive_int, default=1)
    p.add_argument("--seq-len", type=clitools.positive_int, default=128)
    p.add_argument("--threads", type=clitools.positive_int, default=1, help="inference threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks (default 0)")
    p.add_argument("--corpus", help="corpus folder or text file (default the shipped corpus)")
    p.add_argument("--out", help="also write the JSON report to this file")


def _drift(args: argparse.Namespace) -> int:
    if not Path(args.checkpoint).exists():
        raise clitools.CliError(
            f"checkpoint not found: {args.checkpoint}; give a checkpoint.pt of flexibert's pretrain")
    report = drift_report(args.checkpoint, list(dict.fromkeys(args.runtime)), arch=args.arch,
                          sequences=args.sequences, batch_size=args.batch_size, seq_len=args.seq_len,
                          num_threads=args.threads, seed=args.seed, corpus=args.corpus)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
        return 0
    print(f"{report['model']['arch_hash'][:8]} on {report['sequences']} sequences:")
    for name, entry in report["runtimes"].items():
        if "reason" in entry:
            print(f"  {name:17s} not available: {entry['reason']}")
        else:
            print(f"  {name:17s} hidden cosine {entry['hidden_cosine']:.4f}, MLM loss {entry['mlm_loss_f32']:.3f} -> "
                  f"{entry['mlm_loss']:.3f} ({_percent(entry['mlm_loss_increase_rel'])})")
    return 0


def _percent(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.2%}"
