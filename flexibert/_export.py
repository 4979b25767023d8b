"""Export a FlexiBERT encoder to ONNX, OpenVINO IR and TorchScript.

Every exported graph has static shapes ``[batch_size, seq_len]``, one int64 input ``input_ids`` and
one float32 output ``hidden_states``. ONNX uses the dynamo exporter at opset 18: OpenVINO's ONNX
reader mishandles ``DFT`` from opset 20 on, and the legacy exporter cannot trace ``torch.fft``.

When an export fails, the error names the runtime and, where it can be found by exporting the heads
(and then the layers) of the model one at a time, the operation at fault.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import logging
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flexibert._errors import ExportError
from flexibert._spec import ArchSpec
from flexibert.choices import EXPORT_FORMATS
from flexibert.lazy import MissingDependencyError, optional_dependency

ONNX_OPSET = 18
INPUT_NAME = "input_ids"
OUTPUT_NAME = "hidden_states"
ONNX_EXPORTERS = ("dynamo", "tracing")
FILE_NAMES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.pt"}
_RUNTIME_TITLES = {"onnx": "ONNX", "openvino": "OpenVINO", "torchscript": "TorchScript"}
_MAX_LOCALISATION_TRIES = 24
# Protobuf caps a single ONNX file at 2 GiB; the largest architectures of the space exceed it.
# Leave room for the graph and for constants the exporter folds into initializers.
SINGLE_FILE_LIMIT_BYTES = 1_800_000_000


def export_formats() -> tuple[str, ...]:
    """Names of the supported export formats: ``('onnx', 'openvino', 'torchscript')``."""
    return EXPORT_FORMATS


# -- inputs ----------------------------------------------------------------------------------------


def as_model(spec_or_model: ArchSpec | dict | nn.Module, seed: int = 0, **build_options: Any) -> nn.Module:
    """An ``nn.Module`` as given, or the encoder of an ArchSpec / model_dict built from ``seed``."""
    if isinstance(spec_or_model, nn.Module):
        return spec_or_model
    if isinstance(spec_or_model, (ArchSpec, dict)):
        from flexibert._model import build_model

        return build_model(spec_or_model, seed=seed, **build_options)
    raise TypeError(f"expected an ArchSpec, a model_dict or a torch.nn.Module, got {type(spec_or_model).__name__}")


def vocab_size_of(model: nn.Module) -> int:
    """Number of token ids the model accepts: its ``vocab_size`` or its first embedding table."""
    size = getattr(model, "vocab_size", None)
    if isinstance(size, int) and size > 0:
        return size
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return embedding.num_embeddings if embedding is not None else 1


def example_input_ids(
    batch_size: int, seq_len: int, vocab_size: int, seed: int = 0, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Reproducible random token ids ``[batch_size, seq_len]`` (int64) below ``vocab_size``."""
    check_shape(batch_size, seq_len)
    generator = torch.Generator().manual_seed(int(seed))
    ids = torch.randint(0, max(int(vocab_size), 1), (batch_size, seq_len), generator=generator)
    return ids.to(device)


def check_shape(batch_size: int, seq_len: int) -> None:
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_output_path(path: str | Path, fmt: str, suffix: str | None = None) -> Path:
    """Fail early, before any slow work, when ``path`` cannot be written."""
    path = Path(path)
    title = _RUNTIME_TITLES[fmt]
    if suffix is not None and path.suffix != suffix:
        raise ValueError(f"{title} model path must end with '{suffix}', got '{path}'")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write the {title} model to '{path}': it is a directory")
    parent = path.parent
    if not parent.exists():
        raise FileNotFoundError(
            f"cannot write the {title} model to '{path}': directory '{parent}' does not exist"
        )
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write the {title} model to '{path}': '{parent}' is not a directory")
    try:  # os.access is wrong for root and for some network file systems; try it for real.
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as error:
        raise PermissionError(
            f"cannot write the {title} model to '{path}': directory '{parent}' is not writable ({error})"
        ) from None
    return path


def _example_for(model: nn.Module, batch_size: int, seq_len: int) -> torch.Tensor:
    """Put ``model`` in eval mode, check that eager torch runs it, return the example input."""
    check_shape(batch_size, seq_len)
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = example_input_ids(batch_size, seq_len, vocab_size_of(model), device=device)
    try:
        with torch.no_grad():
            output = model(ids)
    except Exception as error:
        raise ValueError(
            f"the model does not run in torch on input_ids of shape {tuple(ids.shape)}: {error}"
        ) from error
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model must return one tensor to be exported, got {type(output).__name__}")
    return ids


# -- the three exporters on any module -------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence tracer warnings, exporter progress and log lines while exporting."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript", "openvino")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _weight_bytes(module: nn.Module) -> int:
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def _to_onnx(module: nn.Module, args: tuple, path: Path, names: bool = True, dynamo: bool = True) -> None:
    with _quiet():
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=dynamo,
            opset_version=ONNX_OPSET,
            external_data=_weight_bytes(module) > SINGLE_FILE_LIMIT_BYTES,
            input_names=[INPUT_NAME] if names else None,
            output_names=[OUTPUT_NAME] if names else None,
            verbose=False,
        )


def _to_openvino(module: nn.Module, args: tuple, path: Path, names: bool = True) -> None:
    with optional_dependency("exporting to OpenVINO IR"):
        import openvino as ov

    with _quiet():
        if names:
            shape = ov.PartialShape(list(args[0].shape))
            converted = ov.convert_model(module, example_input=args[0], input=[(INPUT_NAME, shape, ov.Type.i64)])
            converted.outputs[0].get_tensor().set_names({OUTPUT_NAME})
        else:
            converted = ov.convert_model(module, example_input=args)
        ov.save_model(converted, str(path), compress_to_fp16=False)


def _to_torchscript(module: nn.Module, args: tuple, path: Path, names: bool = True) -> None:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, args, check_trace=False)
        torch.jit.save(traced, str(path))


_EXPORTERS: dict[str, Callable[[nn.Module, tuple, Path, bool], None]] = {
    "onnx": _to_onnx,
    "openvino": _to_openvino,
    "torchscript": _to_torchscript,
}


def _export_with(fmt: str, spec_or_model, path, batch_size: int, seq_len: int, suffix: str | None,
                 exporter: Callable[..., None] | None = None) -> Path:
    path = _check_output_path(path, fmt, suffix)
    model = as_model(spec_or_model)
    was_training = model.training
    try:
        ids = _example_for(model, batch_size, seq_len)
        try:
            (exporter or _EXPORTERS[fmt])(model, (ids,), path)
        except MissingDependencyError:
            raise  # nothing to diagnose in the model: the user installs an extra
        except Exception as error:
            raise _export_error(fmt, model, ids, error) from error
    finally:
        model.train(was_training)
    return path


# -- public exporters ------------------------------------------------------------------------------


def export_onnx(spec_or_model, path: str | Path, batch_size: int = 1, seq_len: int = 128,
                exporter: str = "dynamo") -> Path:
    """Write a single-file ONNX model (opset 18, static shapes) and return its path.

    ``exporter="dynamo"`` (the default) is torch's current exporter; ``exporter="tracing"`` uses the
    older tracing exporter, several times faster and exact for every op of the design space at static
    shapes (the profiler uses it, since it exports one model per measurement).

    ``spec_or_model`` is an ArchSpec, a model_dict (built with seed 0) or an ``nn.Module`` that maps
    ``input_ids`` to one tensor. Weights beyond protobuf's 2 GiB limit (the largest architectures of
    the space) go to ``<file name>.data`` beside the model, which ONNX Runtime finds on its own.
    Raises :class:`ExportError` when the export fails.
    """
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; choose one of {ONNX_EXPORTERS}")
    chosen = functools.partial(_to_onnx, dynamo=exporter == "dynamo")
    return _export_with("onnx", spec_or_model, path, batch_size, seq_len, suffix=None, exporter=chosen)


def export_openvino(spec_or_model, path_xml: str | Path, batch_size: int = 1, seq_len: int = 128) -> Path:
    """Write an OpenVINO IR (``.xml`` plus ``.bin`` beside it, float32 weights); return the ``.xml`` path.

    Converted from the torch module directly, which handles every op of the design space.
    """
    return _export_with("openvino", spec_or_model, path_xml, batch_size, seq_len, suffix=".xml")


def export_torchscript(spec_or_model, path: str | Path, batch_size: int = 1, seq_len: int = 128) -> Path:
    """Write a traced TorchScript module (load it with ``torch.jit.load``); return its path."""
    return _export_with("torchscript", spec_or_model, path, batch_size, seq_len, suffix=None)


def export(
    spec_or_model,
    out_dir: str | Path,
    formats: Iterable[str] = EXPORT_FORMATS,
    batch_size: int = 1,
    seq_len: int = 128,
) -> dict[str, Path]:
    """Export to each of ``formats`` under ``out_dir`` (created if missing): ``{format: path}``.

    File names are ``model.onnx``, ``model.xml`` (+ ``model.bin``) and ``model.pt``.
    """
    formats = _check_formats(formats)
    check_shape(batch_size, seq_len)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"export directory '{out_dir}' exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = as_model(spec_or_model)  # build once for every format
    exporters = {"onnx": export_onnx, "openvino": export_openvino, "torchscript": export_torchscript}
    return {fmt: exporters[fmt](model, out_dir / FILE_NAMES[fmt], batch_size, seq_len) for fmt in formats}


def _check_formats(formats: Iterable[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    formats = list(dict.fromkeys(formats))
    unknown = [fmt for fmt in formats if fmt not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(EXPORT_FORMATS)}")
    if not formats:
        raise ValueError(f"no export format given; choose from {list(EXPORT_FORMATS)}")
    return formats


# -- errors and localisation -----------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _summarise_exception(error: BaseException, limit: int = 400) -> str:
    """One line that says why an exporter failed, without its advice and stack traces."""
    text = _ANSI.sub("", str(error)).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines()]
    summary = None
    for marker in ("## Exception summary", "Summary:"):  # torch.onnx and OpenVINO reports
        if marker in lines:
            rest = [line.removeprefix("-- ") for line in lines[lines.index(marker) + 1:] if line and line != "⬆️"]
            summary = " ".join(rest[:2]) if marker == "Summary:" else (rest[0] if rest else None)
            break
    summary = summary or next(line for line in lines if line)
    summary = re.sub(r"^<class '[\w.]+'>: ", "", summary)
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."


def _export_error(fmt: str, model: nn.Module, ids: torch.Tensor, error: BaseException) -> ExportError:
    title = _RUNTIME_TITLES[fmt]
    try:
        where = _locate_failure(fmt, model, ids)
    except Exception:  # localisation is a courtesy; never hide the original failure behind it
        where = None
    place = f" at {where}" if where else ""
    return ExportError(f"{title} export failed{place}: {_summarise_exception(error)}")


def _locate_failure(fmt: str, model: nn.Module, ids: torch.Tensor) -> str | None:
    """Export each distinct head type alone, then each distinct layer alone; describe the first
    that fails (e.g. ``"op 'c_9' (layer 1, head 3)"``), or None when each exports on its own."""
    exporter = _EXPORTERS[fmt]
    batch_size, seq_len = ids.shape
    candidates = itertools.islice(_localisation_candidates(model), _MAX_LOCALISATION_TRIES)
    first_failure, any_success = None, False
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / FILE_NAMES[fmt]
        for module, hidden_size, description in candidates:
            generator = torch.Generator().manual_seed(0)
            hidden = torch.randn(batch_size, seq_len, hidden_size, generator=generator).to(ids.device)
            try:
                exporter(module, (hidden,), target, False)
                any_success = True
            except Exception:
                first_failure = first_failure or description
            if first_failure and any_success:
                return first_failure
        # Every part failed: blame the first only if the exporter handles a plain Linear layer.
        if first_failure and _exports_plain_linear(exporter, target):
            return first_failure
    return None


def _exports_plain_linear(exporter, target: Path) -> bool:
    try:
        exporter(nn.Linear(4, 4).eval(), (torch.zeros(1, 2, 4),), target, False)
    except Exception:
        return False
    return True


def _localisation_candidates(model: nn.Module) -> Iterator[tuple[nn.Module, int, str]]:
    """(module, input width, description): heads (modules with an ``op_type``), one per op type,
    then encoder layers (``layers.<i>`` with a ``spec``), one per distinct layer spec."""
    seen_ops: set[str] = set()
    layers: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        op_type = getattr(module, "op_type", None)
        hidden_size = getattr(module, "hidden_size", None)
        if isinstance(op_type, str) and op_type and isinstance(hidden_size, int):
            if op_type not in seen_ops:
                seen_ops.add(op_type)
                yield module, hidden_size, f"op '{op_type}' ({_position(name)})"
        elif re.fullmatch(r"(.*\.)?layers\.\d+", name) and hasattr(getattr(module, "spec", None), "hidden_size"):
            layers.append((name, module))
    seen_layers: set[Any] = set()
    for name, module in layers:
        if module.spec in seen_layers:
            continue
        seen_layers.add(module.spec)
        ops = "+".join(getattr(module.spec, "ops", ()))
        yield module, module.spec.hidden_size, f"{_position(name)} (ops {ops})"


def _position(name: str) -> str:
    """'layers.1.heads.3' -> 'layer 1, head 3'; other names are quoted as module paths."""
    layer = re.search(r"layers\.(\d+)", name)
    head = re.search(r"heads\.(\d+)", name)
    if layer and head:
        return f"layer {layer.group(1)}, head {head.group(1)}"
    if layer:
        return f"layer {layer.group(1)}"
    return f"module '{name}'"
