"""Masked-language-model pre-training, GLUE fine-tuning and evaluation, and fine-tuning autotuning.

Determinism: every random draw at optimizer step ``t`` (which blocks form the batch, which tokens
are masked, the dropout masks) comes from generators seeded by ``(seed, t)``; dropout uses the
global torch RNG inside ``torch.random.fork_rng``, so callers' RNG state is left untouched. The same
seed gives the same run on a CPU, and a checkpoint's step and seed pin down all random state, so a
resumed run continues exactly as an uninterrupted one.

Checkpoints are ``torch.save`` dicts of tensors and plain values (model, optimizer and scheduler
state, step, logged losses, and the architecture's ``model_dict``) that load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flexibert._data import (
    DEFAULT_SPECIAL_TOKENS,
    IGNORE_INDEX,
    GlueExamples,
    GlueTask,
    GlueTaskData,
    SpecialTokens,
    TextCorpus,
    _plain_copy,
    derive_seed,
    glue_task,
    load_tokenizer,
    mask_tokens,
    mlm_batches,
)
from flexibert._errors import InvalidArchitectureError

if TYPE_CHECKING:
    from flexibert._model import FlexiBertForMaskedLM
    from flexibert._spec import ArchSpec

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
DEVICES = ("cpu", "cuda", "auto")
# Streams of derived seeds, so that e.g. masks and dropout never share a generator.
_ORDER, _MASK, _DROPOUT = 1, 2, 3
# Fields that may change between an interrupted run and its resumption without changing the result.
_RESUMABLE_CHANGES = {"device", "log_every", "checkpoint_every", "eval_every", "eval_batch_size"}


# -- configuration and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainConfig:
    """Masked-language-model pre-training settings.

    Defaults follow the FlexiBERT recipe: AdamW (β = (0.9, 0.98), ε = 1e-6, weight decay 0.01 on
    all weights except biases and LayerNorms), peak learning rate 1e-4 reached by linear warm-up and
    decayed linearly to 0 at ``max_steps``, 15 % masking. (The reference global-search script uses
    β2 = 0.99.) ``checkpoint_every``/``eval_every`` of 0 mean only at the end.
    """

    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-4
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    mask_prob: float = 0.15
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 0
    eval_every: int = 0
    eval_batch_size: int | None = None

    def __post_init__(self) -> None:
        _check_positive(self, "max_steps", "batch_size", "log_every")
        _check_non_negative(self, "warmup_steps", "checkpoint_every", "eval_every")
        _check_optimizer(self)
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps})")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must lie in (0, 1), got {self.mask_prob!r}")
        if self.eval_batch_size is not None and self.eval_batch_size <= 0:
            raise ValueError(f"eval_batch_size must be positive, got {self.eval_batch_size!r}")
        _check_device_name(self.device)


@dataclass(frozen=True)
class FinetuneConfig:
    """GLUE fine-tuning settings. Defaults follow the FlexiBERT recipe (lr 2e-5, batch 8, weight
    decay 0.01, 6 % warm-up, linear decay, best epoch by validation loss) with AdamW's usual
    β = (0.9, 0.999), ε = 1e-8; sequences are cut to ``max_seq_len`` tokens (reference: 512)."""

    lr: float = 2e-5
    batch_size: int = 8
    epochs: int = 10
    max_seq_len: int = 128
    warmup_ratio: float = 0.06
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "auto"
    select_by: str = "eval_loss"
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        _check_positive(self, "batch_size", "epochs", "max_seq_len", "eval_batch_size")
        _check_optimizer(self)
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must lie in [0, 1], got {self.warmup_ratio!r}")
        if self.select_by not in ("eval_loss", "score"):
            raise ValueError(f"select_by must be 'eval_loss' or 'score', got {self.select_by!r}")
        _check_device_name(self.device)


def _check_positive(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_non_negative(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def _check_optimizer(config) -> None:
    if not config.lr > 0:
        raise ValueError(f"lr must be positive, got {config.lr!r}")
    if len(config.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in config.betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {config.betas!r}")
    if config.eps <= 0 or config.weight_decay < 0:
        raise ValueError("eps must be positive and weight_decay non-negative")
    if config.grad_clip is not None and config.grad_clip <= 0:
        raise ValueError(f"grad_clip must be positive or None, got {config.grad_clip!r}")


def _check_device_name(device: str) -> None:
    if str(device).split(":")[0] not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES} (optionally 'cuda:<index>'), got {device!r}")


@dataclass
class TrainResult:
    """What :func:`pretrain` did. Losses are per masked token (natural log)."""

    loss_history: list[tuple[int, float]] = field(default_factory=list)
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    final_eval_loss: float | None = None
    steps: int = 0
    start_step: int = 0
    elapsed_s: float = 0.0

    def recent_loss(self, n: int = 5) -> float:
        """Mean of the last ``n`` logged training losses (GPTran's model score)."""
        if not self.loss_history:
            raise ValueError("no training loss has been logged")
        return float(np.mean([loss for _, loss in self.loss_history[-n:]]))


def resolve_device(device: str = "auto") -> torch.device:
    """``'auto'`` is CUDA when available, else CPU. Asking for CUDA without it is an error."""
    _check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {device!r} was requested but CUDA is not available to torch {torch.__version__}; use device='cpu'"
        )
    return torch.device(device)


# -- optimisation helpers -------------------------------------------------------------------------------


def _adamw(model: nn.Module, config) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (biases and LayerNorm parameters are 1-D)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps)


def _linear_schedule(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the peak over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimizer_step(model: nn.Module, loss: torch.Tensor, optimizer, scheduler, grad_clip: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()


def _seeded_dropout(seed: int, step: int) -> None:
    # Inside fork_rng: reseeding the global generators per step ties dropout to (seed, step).
    torch.manual_seed(derive_seed(seed, step, _DROPOUT))


@contextlib.contextmanager
def _deferred_interrupt():
    """Hold a first Ctrl-C until the current step is complete (``flag[0]`` turns True), so that a
    checkpoint never records a half-applied update; a second Ctrl-C interrupts at once."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True
        logger.warning("interrupt received: stopping after this step (press Ctrl-C again to stop now)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


# -- masked-language-model loss and evaluation --------------------------------------------------------


def _vocab_size(model: nn.Module) -> int:
    encoder = getattr(model, "encoder", model)
    size = getattr(encoder, "vocab_size", None)
    if size is None:
        raise TypeError("the model has no vocab_size; pass a FlexiBertForMaskedLM from build_mlm_model()")
    return int(size)


def _mlm_loss_sum(
    model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, pad_id: int
) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy over masked tokens, number of masked tokens)."""
    attention_mask = (input_ids != pad_id).long()
    attention_mask = attention_mask if bool((attention_mask == 0).any()) else None
    selected = labels != IGNORE_INDEX
    if hasattr(model, "encoder") and hasattr(model, "mlm_head"):
        # Decode only the masked positions: the vocabulary projection dominates small models.
        hidden = model.encoder(input_ids, attention_mask)
        logits = model.mlm_head(hidden[selected])
    else:
        logits = model(input_ids, attention_mask)[selected]
    return F.cross_entropy(logits.float(), labels[selected], reduction="sum"), int(selected.sum())


def _blocks_of(corpus, split: str) -> tuple[torch.Tensor, SpecialTokens | None]:
    if isinstance(corpus, TextCorpus):
        return getattr(corpus, split), corpus.special_tokens
    if not isinstance(corpus, torch.Tensor) or corpus.dim() != 2 or corpus.dtype != torch.int64:
        raise TypeError("a corpus must be a TextCorpus or an int64 tensor of token blocks [n_blocks, seq_len]")
    return corpus, None


def _check_vocab(blocks: torch.Tensor, vocab_size: int) -> None:
    if blocks.numel() and int(blocks.max()) >= vocab_size:
        raise ValueError(
            f"the corpus has token id {int(blocks.max())} but the model's vocabulary has {vocab_size} entries;"
            " build the model with vocab_size=tokenizer.get_vocab_size()"
        )


@torch.no_grad()
def evaluate_mlm(
    model: nn.Module,
    blocks: torch.Tensor | TextCorpus,
    batch_size: int = 32,
    seed: int = 0,
    *,
    mask_prob: float = 0.15,
    special_tokens: SpecialTokens | None = None,
) -> float:
    """Mean masked-token cross-entropy of ``model`` on ``blocks`` (a TextCorpus: its validation
    split), in eval mode, on the model's device. Masks depend only on the blocks, ``batch_size``,
    ``mask_prob`` and ``seed``, so models evaluated with the same arguments see identical masks."""
    blocks, corpus_special = _blocks_of(blocks, "validation")
    special = special_tokens or corpus_special or DEFAULT_SPECIAL_TOKENS
    if len(blocks) == 0:
        raise ValueError("no blocks to evaluate on")
    vocab_size = _vocab_size(model)
    _check_vocab(blocks, vocab_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        batches = mlm_batches(blocks, batch_size, mask_prob, seed, vocab_size=vocab_size, special_tokens=special)
        for input_ids, labels in batches:
            loss_sum, n = _mlm_loss_sum(model, input_ids.to(device), labels.to(device), special.pad)
            total, count = total + float(loss_sum), count + n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no token was masked; the blocks hold only special tokens")
    return total / count


def _pretrain_batch(blocks: torch.Tensor, step: int, config: PretrainConfig, vocab_size: int, special: SpecialTokens):
    """The masked batch of optimizer step ``step``: epochs are seeded permutations of the blocks."""
    steps_per_epoch = max(1, len(blocks) // config.batch_size)
    epoch, position = divmod(step, steps_per_epoch)
    order = _epoch_order(config.seed, epoch, len(blocks))
    batch = blocks[order[position * config.batch_size : (position + 1) * config.batch_size]]
    generator = torch.Generator().manual_seed(derive_seed(config.seed, step, _MASK))
    return mask_tokens(batch, vocab_size, config.mask_prob, generator=generator, special_tokens=special)


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, epoch, _ORDER)))


# -- checkpoints -----------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (a temporary file, then a rename), so an interruption never
    leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`pretrain` safely (``weights_only=True``). Its ``"model"``
    entry is the model's ``state_dict``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a pre-training checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def _architecture_record(model: nn.Module) -> dict[str, Any]:
    """``{"architecture": {"model_dict": ...}}`` for a FlexiBERT model, so that the checkpoint alone
    rebuilds it (``flexibert serve``, ``protran drift``); nothing for another module (the sizes are in
    the weights)."""
    spec = getattr(getattr(model, "encoder", model), "spec", None)
    # Through JSON: plain lists and strings, which torch.load(weights_only=True) reads back.
    return {} if spec is None else {"architecture": {"model_dict": json.loads(spec.to_json())}}


def load_mlm_checkpoint(path: str | Path, spec: ArchSpec | None = None) -> FlexiBertForMaskedLM:
    """The masked-language model (encoder and head, in eval mode) of a :func:`pretrain` checkpoint.

    Its architecture is the one the checkpoint records, or ``spec`` (for a checkpoint written before
    architectures were recorded); vocabulary and positions are the sizes of the embedding tables the
    weights hold. Every problem is one line: ``FileNotFoundError``, ``ValueError`` or
    :class:`~flexibert.InvalidArchitectureError`.
    """
    state = _read_checkpoint(path)
    weights = state.get("model")
    if not isinstance(weights, dict) or "encoder.embeddings.word_embeddings.weight" not in weights:
        raise ValueError(f"{path}: the checkpoint holds no FlexiBERT masked-language model weights")
    if not any(key.startswith("mlm_head.") for key in weights):
        raise ValueError(f"{path}: the checkpoint holds an encoder without its masked-language-model head")
    from flexibert._model import build_mlm_model

    spec = spec if spec is not None else _recorded_spec(state, path)
    vocab_size, _ = weights["encoder.embeddings.word_embeddings.weight"].shape
    max_positions, _ = weights["encoder.embeddings.position_embeddings.weight"].shape
    model = build_mlm_model(spec, vocab_size=int(vocab_size), max_positions=int(max_positions))
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2] or [str(error)]
        raise ValueError(f"{path}: the weights do not fit the architecture ({first[0].strip()}); "
                         "give the model_dict it was trained with") from None
    return model.eval()


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return load_checkpoint(path)
    except (OSError, ValueError):
        raise
    except Exception as error:  # torch raises RuntimeError or UnpicklingError for a damaged or foreign file
        raise ValueError(f"{path}: not a readable pre-training checkpoint ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None


def _recorded_spec(state: dict[str, Any], path: str | Path) -> ArchSpec:
    from flexibert._spec import ArchSpec

    record = state.get("architecture")
    model_dict = record.get("model_dict") if isinstance(record, dict) else None
    if not isinstance(model_dict, dict):
        raise ValueError(f"{path}: the checkpoint records no architecture; give its model_dict")
    try:
        # A trained model may lie outside the design space's choices (a small test model): it only has
        # to be a well-formed architecture.
        return ArchSpec.from_model_dict(model_dict, space=False)
    except InvalidArchitectureError as error:
        raise InvalidArchitectureError(f"{path}: the recorded architecture is invalid ({error})") from None


def _config_record(config) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


def _check_resumable(path: Path, saved: dict[str, Any], config: PretrainConfig) -> None:
    current = _config_record(config)
    changed = sorted(key for key in current if key not in _RESUMABLE_CHANGES and saved.get(key) != current[key])
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {current[key]!r}" for key in changed)
        raise ValueError(f"cannot resume {path} exactly: the configuration changed ({details})")


def _history_tensor(history: list[tuple[int, float]]) -> torch.Tensor:
    return torch.tensor(history, dtype=torch.float64).reshape(-1, 2)


def _history_list(tensor: torch.Tensor) -> list[tuple[int, float]]:
    return [(int(step), float(loss)) for step, loss in tensor.tolist()]


# -- pre-training ---------------------------------------------------------------------------------------


def pretrain(
    model: nn.Module,
    corpus_train: torch.Tensor | TextCorpus,
    config: PretrainConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    corpus_eval: torch.Tensor | TextCorpus | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    *,
    run_steps: int | None = None,
    special_tokens: SpecialTokens | None = None,
) -> TrainResult:
    """Pre-train ``model`` (a :class:`FlexiBertForMaskedLM`) in place with masked language modelling.

    ``corpus_train`` is a block tensor ``[n, seq_len]`` or a :class:`TextCorpus` (its train split);
    ``corpus_eval`` likewise (a TextCorpus gives its validation split). The model moves to the
    configured device and stays there, in eval mode, afterwards.

    With ``checkpoint_dir``, ``checkpoint.pt`` there is written every ``checkpoint_every`` steps, at
    the end, and when the run is interrupted (KeyboardInterrupt). ``resume=True`` continues from it
    (or starts afresh when there is none); an existing checkpoint without ``resume`` is an error.
    ``run_steps`` stops this call after that many steps, keeping the schedule of ``max_steps``.
    ``progress(step, max_steps, loss)`` is called at every logged step.
    """
    config = config or PretrainConfig()
    blocks, corpus_special = _blocks_of(corpus_train, "train")
    eval_blocks = None if corpus_eval is None else _blocks_of(corpus_eval, "validation")[0]
    special = special_tokens or corpus_special or DEFAULT_SPECIAL_TOKENS
    if len(blocks) == 0:
        raise ValueError("the training corpus has no blocks")
    vocab_size = _vocab_size(model)
    _check_vocab(blocks, vocab_size)
    if run_steps is not None and (not isinstance(run_steps, int) or run_steps <= 0):
        raise ValueError(f"run_steps must be a positive int or None, got {run_steps!r}")
    device = resolve_device(config.device)
    model.to(device)
    optimizer = _adamw(model, config)
    scheduler = _linear_schedule(optimizer, config.warmup_steps, config.max_steps)
    result = TrainResult()
    window = [0.0, 0]  # sum and count of losses since the last log
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    if path is not None and path.exists():
        if not resume:
            raise FileExistsError(f"{path} exists; pass resume=True to continue that run or use another checkpoint_dir")
        state = load_checkpoint(path, map_location=device)
        _check_resumable(path, state["config"], config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        result.steps = result.start_step = int(state["step"])
        result.loss_history = _history_list(state["loss_history"])
        result.eval_history = _history_list(state["eval_history"])
        window = [float(state["window"][0]), int(state["window"][1])]
        logger.info("resuming %s at step %d", path, result.steps)

    def checkpoint() -> None:
        if path is not None:
            save_checkpoint(path, {
                "format": CHECKPOINT_FORMAT,
                "step": result.steps,
                "config": _config_record(config),
                "model": model.state_dict(),
                **_architecture_record(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "loss_history": _history_tensor(result.loss_history),
                "eval_history": _history_tensor(result.eval_history),
                "window": torch.tensor(window, dtype=torch.float64),
                **_architecture_record(model),
            })

    def evaluate() -> float:
        loss = evaluate_mlm(model, eval_blocks, config.eval_batch_size or config.batch_size, config.seed,
                            mask_prob=config.mask_prob, special_tokens=special)
        result.eval_history.append((result.steps, loss))
        logger.info("step %d: eval loss %.4f", result.steps, loss)
        return loss

    stop = config.max_steps if run_steps is None else min(config.max_steps, result.steps + run_steps)
    started = time.perf_counter()
    between_steps = True  # False while an update is half applied: no checkpoint then
    model.train()
    try:
        with _deferred_interrupt() as interrupted, torch.random.fork_rng(devices=_rng_devices(device)):
            while result.steps < stop:
                step, between_steps = result.steps, False
                input_ids, labels = _pretrain_batch(blocks, step, config, vocab_size, special)
                _seeded_dropout(config.seed, step)
                loss_sum, count = _mlm_loss_sum(model, input_ids.to(device), labels.to(device), special.pad)
                loss = loss_sum / max(count, 1)
                _optimizer_step(model, loss, optimizer, scheduler, config.grad_clip)
                window = [window[0] + loss.item(), window[1] + 1]
                result.steps, between_steps = step + 1, True
                if result.steps % config.log_every == 0 or result.steps == config.max_steps:
                    logged = window[0] / window[1]
                    result.loss_history.append((result.steps, logged))
                    window = [0.0, 0]
                    logger.info("step %d/%d: loss %.4f", result.steps, config.max_steps, logged)
                    if progress is not None:
                        progress(result.steps, config.max_steps, logged)
                if eval_blocks is not None and config.eval_every and result.steps % config.eval_every == 0:
                    evaluate()
                    model.train()
                if config.checkpoint_every and result.steps % config.checkpoint_every == 0:
                    checkpoint()
                if interrupted[0]:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        if between_steps:
            checkpoint()
        model.eval()
        raise
    model.eval()
    if eval_blocks is not None:
        done = result.eval_history and result.eval_history[-1][0] == result.steps
        result.final_eval_loss = result.eval_history[-1][1] if done else evaluate()
    checkpoint()
    result.elapsed_s = time.perf_counter() - started
    return result


# -- GLUE metrics ----------------------------------------------------------------------------------------


def glue_metrics(task: str | GlueTask, predictions, labels, *, combine: str = "mean") -> dict[str, float]:
    """GLUE metrics of one task, with ``"score"`` the task's number in the GLUE average.

    Predictions are class ids or logits ``[n, classes]`` (scores for STS-B). Metrics: accuracy for
    every classification task, plus Matthews correlation (CoLA; its score) and F1 of class 1
    (MRPC, QQP); Pearson and Spearman correlations for STS-B. Where GLUE reports two numbers (MRPC,
    QQP, STS-B) the score is their mean (``combine="mean"``, the GLUE leaderboard) or their maximum
    (``combine="max"``, as in the FlexiBERT reference). Undefined correlations (a constant input)
    count as 0.
    """
    task = glue_task(task)
    if combine not in ("mean", "max"):
        raise ValueError(f"combine must be 'mean' or 'max', got {combine!r}")
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task.is_regression:
        predictions = predictions.reshape(len(predictions), -1)[:, 0] if predictions.ndim > 1 else predictions
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=1)
    if predictions.shape != labels.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(
            f"predictions {predictions.shape} and labels {labels.shape} must be 1-D of equal non-zero length"
        )
    pick = np.mean if combine == "mean" else np.max
    if task.is_regression:
        pearson = _pearson(predictions.astype(float), labels.astype(float))
        spearman = _pearson(_ranks(predictions), _ranks(labels))
        return {"pearson": pearson, "spearman": spearman, "score": float(pick([pearson, spearman]))}
    accuracy = float(np.mean(predictions == labels))
    metrics = {"accuracy": accuracy}
    if task.name == "cola":
        metrics["matthews_corr"] = _matthews(predictions, labels)
        metrics["score"] = metrics["matthews_corr"]
    elif task.name in ("mrpc", "qqp"):
        metrics["f1"] = _f1(predictions, labels)
        metrics["score"] = float(pick([accuracy, metrics["f1"]]))
    else:
        metrics["score"] = accuracy
    return metrics


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denominator) if denominator > 0 else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values)  # ties get their average rank, as in Spearman's definition


def _f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    true_positive = float(np.sum((predictions == positive) & (labels == positive)))
    predicted, actual = float(np.sum(predictions == positive)), float(np.sum(labels == positive))
    return 2 * true_positive / (predicted + actual) if predicted + actual > 0 else 0.0


def _matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Matthews correlation (Gorodkin's R_K); binary MCC for two classes."""
    classes = np.union1d(predictions, labels)
    confusion = np.array([[np.sum((labels == t) & (predictions == p)) for p in classes] for t in classes], dtype=float)
    n, correct = confusion.sum(), np.trace(confusion)
    true_totals, predicted_totals = confusion.sum(axis=1), confusion.sum(axis=0)
    covariance = correct * n - true_totals @ predicted_totals
    denominator = math.sqrt((n * n - predicted_totals @ predicted_totals) * (n * n - true_totals @ true_totals))
    return float(covariance / denominator) if denominator > 0 else 0.0


# -- fine-tuning -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    ids: list[list[int]]
    labels: torch.Tensor


def _encode(examples: GlueExamples, tokenizer, max_seq_len: int) -> _Encoded:
    if examples.labels is None:
        raise ValueError(f"{examples.source or 'the examples'} has no labels (a test file?)")
    encoder = _plain_copy(tokenizer)
    encoder.enable_truncation(max_length=max_seq_len)
    inputs = examples.text_a if examples.text_b is None else list(zip(examples.text_a, examples.text_b))
    encodings = encoder.encode_batch(inputs)
    dtype = torch.float32 if examples.task.is_regression else torch.int64
    return _Encoded([encoding.ids for encoding in encodings], torch.tensor(examples.labels, dtype=dtype))


def _pad(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.int64)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return input_ids, (input_ids != pad_id).long()


def _classification_loss(
    task: GlueTask, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    if task.is_regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels, reduction=reduction)
    return F.cross_entropy(logits.float(), labels, reduction=reduction)


def _as_classifier(model_or_spec, task: GlueTask, seed: int, vocab_size: int) -> nn.Module:
    """A classifier for ``task``: used as it is, built around a (pre-trained) encoder, or built
    from a spec with ``seed``."""
    from flexibert._model import (
        FlexiBertEncoder,
        FlexiBertForMaskedLM,
        FlexiBertForSequenceClassification,
        build_classifier,
    )

    if isinstance(model_or_spec, FlexiBertForSequenceClassification):
        if model_or_spec.num_labels != task.num_labels:
            raise ValueError(
                f"the classifier has {model_or_spec.num_labels} labels but {task.name.upper()} needs {task.num_labels}"
            )
        return model_or_spec
    if isinstance(model_or_spec, (FlexiBertForMaskedLM, FlexiBertEncoder)):
        encoder = getattr(model_or_spec, "encoder", model_or_spec)
        classifier = build_classifier(encoder.spec, task.num_labels, seed, encoder.vocab_size, encoder.max_positions)
        classifier.encoder.load_state_dict(encoder.state_dict())
        return classifier
    if isinstance(model_or_spec, nn.Module):
        raise TypeError(
            f"cannot fine-tune a {type(model_or_spec).__name__}; pass a FlexiBERT model or an architecture spec"
        )
    return build_classifier(model_or_spec, task.num_labels, seed, vocab_size)


@torch.no_grad()
def _evaluate_classifier(
    model, task: GlueTask, data: _Encoded, batch_size: int, pad_id: int, device
) -> tuple[float, np.ndarray]:
    model.eval()
    loss_sum, outputs = 0.0, []
    for start in range(0, len(data.ids), batch_size):
        input_ids, attention_mask = _pad(data.ids[start : start + batch_size], pad_id)
        logits = model(input_ids.to(device), attention_mask.to(device))
        labels = data.labels[start : start + batch_size].to(device)
        loss_sum += float(_classification_loss(task, logits, labels, reduction="sum"))
        outputs.append(logits.float().cpu())
    logits = torch.cat(outputs)
    predictions = logits.squeeze(-1) if task.is_regression else logits.argmax(dim=-1)
    return loss_sum / len(data.ids), predictions.numpy()


def finetune(
    model_or_spec,
    task_data: GlueTaskData,
    config: FinetuneConfig | None = None,
    *,
    tokenizer=None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Fine-tune on a GLUE-format task and return the validation metrics of the best epoch.

    ``model_or_spec`` is a classifier (fine-tuned in place and left holding the best epoch's
    weights), a pre-trained MLM model or encoder (copied into a new classifier), or an architecture
    spec (a classifier initialised from ``config.seed``). The best epoch has the lowest validation
    loss (or highest score, ``select_by="score"``). The metrics are those of :func:`glue_metrics`
    plus ``eval_loss`` and ``epoch``. ``progress(epoch, epochs, metrics)`` follows every epoch.
    """
    config = config or FinetuneConfig()
    if not isinstance(task_data, GlueTaskData):
        raise TypeError("task_data must be a GlueTaskData (see load_glue_task)")
    tokenizer = load_tokenizer() if tokenizer is None else tokenizer
    task = task_data.task
    special = SpecialTokens.from_tokenizer(tokenizer)
    model = _as_classifier(model_or_spec, task, config.seed, tokenizer.get_vocab_size())
    if tokenizer.get_vocab_size() > model.encoder.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the model only {model.encoder.vocab_size}"
        )
    if config.max_seq_len > model.encoder.max_positions:
        raise ValueError(
            f"max_seq_len {config.max_seq_len} exceeds the model's max_positions {model.encoder.max_positions}"
        )
    train = _encode(task_data.train, tokenizer, config.max_seq_len)
    validation = _encode(task_data.validation, tokenizer, config.max_seq_len)
    device = resolve_device(config.device)
    model.to(device)
    steps_per_epoch = math.ceil(len(train.ids) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = _adamw(model, config)
    scheduler = _linear_schedule(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    best: tuple[float, dict[str, float], dict[str, torch.Tensor]] | None = None
    step = 0
    with torch.random.fork_rng(devices=_rng_devices(device)):
        for epoch in range(config.epochs):
            model.train()
            order = _epoch_order(config.seed, epoch, len(train.ids))
            for start in range(0, len(order), config.batch_size):
                rows = order[start : start + config.batch_size].tolist()
                input_ids, attention_mask = _pad([train.ids[row] for row in rows], special.pad)
                _seeded_dropout(config.seed, step)
                logits = model(input_ids.to(device), attention_mask.to(device))
                loss = _classification_loss(task, logits, train.labels[rows].to(device))
                _optimizer_step(model, loss, optimizer, scheduler, config.grad_clip)
                step += 1
            eval_loss, predictions = _evaluate_classifier(
                model, task, validation, config.eval_batch_size, special.pad, device
            )
            metrics = glue_metrics(task, predictions, validation.labels.numpy())
            metrics.update(eval_loss=eval_loss, epoch=float(epoch + 1))
            logger.info("%s epoch %d: %s", task.name, epoch + 1, metrics)
            if progress is not None:
                progress(epoch + 1, config.epochs, metrics)
            key = eval_loss if config.select_by == "eval_loss" else -metrics["score"]
            if best is None or key < best[0]:
                best = (key, metrics, {name: value.detach().clone() for name, value in model.state_dict().items()})
    model.load_state_dict(best[2])
    model.eval()
    return best[1]


# -- autotuning ------------------------------------------------------------------------------------------


@dataclass
class TuningResult:
    """Best hyper-parameters found by :func:`tune_finetuning`, its metrics, and every trial."""

    best_params: dict[str, Any]
    best_metrics: dict[str, float]
    trials: list[dict[str, Any]]


def _finetune_trial(shared: tuple[GlueTaskData, Any], start, config: FinetuneConfig) -> dict[str, float]:
    """One autotune trial: fine-tune ``start`` with ``config`` on the shared ``(task data, tokenizer)``.
    Depends on its arguments only, so it gives the same metrics wherever it runs (same threads)."""
    task_data, tokenizer = shared
    return finetune(start, task_data, config, tokenizer=tokenizer)


def _here(fn: Callable[..., Any], argument_tuples: list[tuple[Any, ...]]) -> list[Any]:
    return [fn(*arguments) for arguments in argument_tuples]


def tune_finetuning(
    model_or_spec,
    task_data: GlueTaskData,
    n_trials: int = 10,
    seed: int = 0,
    *,
    config: FinetuneConfig | None = None,
    tokenizer=None,
    lr_range: tuple[float, float] = (2e-5, 5e-4),
    batch_sizes: Sequence[int] = (8, 16, 32),
    n_startup_trials: int | None = None,
    parallel: int = 1,
    executor: Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
) -> TuningResult:
    """Search the learning rate (log-uniform over ``lr_range``) and batch size (``batch_sizes``) of
    :func:`finetune` with Optuna's TPE sampler seeded by ``seed``, maximising the GLUE score.

    Every trial starts from the same weights: a copy of the given model, or the spec initialised
    from ``config.seed``. TPE takes over after ``n_startup_trials`` random trials (default: half of
    ``n_trials``, at most 10).

    Trials elsewhere: with ``parallel`` > 1 the study asks for that many trials at a time (a round),
    runs them together and tells their scores before the next round; ``executor(fn,
    argument_tuples)`` runs a round's trials (default: here, one after another; e.g.
    :func:`flexibert.ray_executor`: one Ray task each). The rounds, not the executor, decide what TPE
    sees, so the same ``seed`` and ``parallel`` give the same trials on any executor. ``storage``: an
    Optuna RDB URL (``sqlite:///tuning.db``, a PostgreSQL URL...) that holds the study under
    ``study_name``, shared with any process that loads it; a study already there is continued
    (``n_trials`` more), and its earlier trials count in the result.
    """
    import optuna

    config = config or FinetuneConfig()
    tokenizer = load_tokenizer() if tokenizer is None else tokenizer
    if not isinstance(n_trials, int) or n_trials <= 0:
        raise ValueError(f"n_trials must be a positive int, got {n_trials!r}")
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel <= 0:
        raise ValueError(f"parallel must be a positive int, got {parallel!r}")
    low, high = lr_range
    if not 0 < low <= high:
        raise ValueError(f"lr_range must be (low, high) with 0 < low <= high, got {lr_range!r}")
    if not batch_sizes or any(not isinstance(size, int) or size <= 0 for size in batch_sizes):
        raise ValueError(f"batch_sizes must be positive ints, got {batch_sizes!r}")
    startup = n_startup_trials if n_startup_trials is not None else min(10, max(1, n_trials // 2))
    trials: list[dict[str, Any]] = []

    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        return {
            "lr": trial.suggest_float("lr", low, high, log=True),
            "batch_size": trial.suggest_categorical("batch_size", list(batch_sizes)),
        }

    def start():
        return copy.deepcopy(model_or_spec) if isinstance(model_or_spec, nn.Module) else model_or_spec

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial)
        metrics = finetune(start(), task_data, replace(config, **params), tokenizer=tokenizer)
        trial.set_user_attr("metrics", metrics)
        trials.append({"number": trial.number, "params": params, "metrics": metrics})
        return metrics["score"]

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage, study_name=study_name,
                                load_if_exists=storage is not None)
    if parallel == 1 and executor is None:
        study.optimize(objective, n_trials=n_trials)
    else:
        shared = (task_data, tokenizer)  # one object: an executor ships it once
        run = executor or _here
        done = 0
        while done < n_trials:
            asked = [study.ask() for _ in range(min(parallel, n_trials - done))]
            params = [suggest(trial) for trial in asked]
            try:
                results = run(_finetune_trial, [(shared, start(), replace(config, **p)) for p in params])
            except BaseException:
                for trial in asked:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            for trial, p, metrics in zip(asked, params, results):
                trial.set_user_attr("metrics", metrics)
                study.tell(trial, metrics["score"])
                trials.append({"number": trial.number, "params": p, "metrics": metrics})
            done += len(asked)
    # earlier trials of a stored study (storage): their params and metrics, as the study keeps them
    seen = {trial["number"] for trial in trials}
    earlier = [{"number": t.number, "params": dict(t.params), "metrics": dict(t.user_attrs["metrics"])}
               for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
               if t.number not in seen and "metrics" in t.user_attrs]
    trials = sorted(earlier + trials, key=lambda trial: trial["number"])
    best = next(trial for trial in trials if trial["number"] == study.best_trial.number)
    return TuningResult(dict(best["params"]), dict(best["metrics"]), trials)


__all__ = [
    "CHECKPOINT_NAME",
    "FinetuneConfig",
    "PretrainConfig",
    "TrainResult",
    "TuningResult",
    "evaluate_mlm",
    "finetune",
    "glue_metrics",
    "load_checkpoint",
    "pretrain",
    "resolve_device",
    "save_checkpoint",
    "tune_finetuning",
]
