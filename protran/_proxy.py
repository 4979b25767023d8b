"""An accuracy proxy anyone can measure: the masked-language-model loss after a short, fixed
pre-training budget on a local corpus.

Without GLUE results an architecture can still be ranked: every architecture is pre-trained from
the same seed with the same batches and masks (the training stack's determinism), for the same
number of steps, and scored by its loss on the corpus's validation blocks. Lower is better. The
budget is far too short to match fully pre-trained models; what matters is whether the order of
architectures agrees with the order of their downstream accuracy, which :func:`rank_correlation`
reports where both exist.

Results are :class:`protran._store.AccuracyRecord` rows of task :data:`PROXY_TASK` (the loss in
``pretrain_loss``, the steps in ``pretrain_steps``), so they live in the run store beside real
accuracy data. Their ``score`` is ``exp(-loss)``, the geometric-mean probability the model gives the
masked token: higher is better and it lies in (0, 1], like an accuracy, so ``protran pareto --task
mlm_proxy`` and ``boshcode codesign --task mlm_proxy`` use it as they use a GLUE score.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexibert import ArchSpec, model_hash
from protran._store import AccuracyRecord

PROXY_TASK = "mlm_proxy"


@dataclass(frozen=True)
class ProxyConfig:
    """The fixed budget: ``steps`` AdamW steps of ``batch_size`` blocks of ``seq_len`` tokens, with a
    linear warm-up to ``lr`` over ``warmup_steps`` and decay to 0. A higher rate than full
    pre-training (1e-4) because the run is short."""

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 64
    lr: float = 5e-4
    warmup_steps: int = 20
    seed: int = 0
    device: str = "cpu"
    eval_blocks: int | None = 128

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.eval_blocks is not None and self.eval_blocks < 1:
            raise ValueError(f"eval_blocks must be a positive int or None, got {self.eval_blocks!r}")

    @property
    def source(self) -> str:
        """A label of the budget, stored as the records' source."""
        return (f"mlm_proxy(steps={self.steps},batch={self.batch_size},seq={self.seq_len},lr={self.lr:g},"
                f"seed={self.seed})")


@dataclass(frozen=True)
class ProxyResult:
    """The proxy of one architecture: validation MLM loss after the budget, and what it cost."""

    arch_hash: str
    eval_loss: float
    train_loss: float
    steps: int
    elapsed_s: float

    def to_record(self, spec: ArchSpec, config: ProxyConfig) -> AccuracyRecord:
        return AccuracyRecord(spec=spec, arch_hash=self.arch_hash, task=PROXY_TASK, score=math.exp(-self.eval_loss),
                              pretrain_loss=self.eval_loss, pretrain_steps=self.steps, source=config.source)


def load_proxy_corpus(config: ProxyConfig, corpus_dir: str | Path | None = None):
    """The corpus shipped in ``datasets/corpus`` (or ``corpus_dir``) in blocks of ``config.seq_len``,
    with its tokenizer."""
    from flexibert import load_corpus

    return load_corpus(corpus_dir, seq_len=config.seq_len)


def mlm_proxy(spec: ArchSpec, corpus, config: ProxyConfig | None = None) -> ProxyResult:
    """Pre-train ``spec`` from scratch for the fixed budget and return its validation MLM loss."""
    import torch

    from flexibert import PretrainConfig, build_mlm_model, evaluate_mlm, pretrain

    config = config or ProxyConfig()
    started = time.perf_counter()
    model = build_mlm_model(spec, seed=config.seed, vocab_size=corpus.vocab_size,
                            max_positions=max(config.seq_len, 2))
    train_config = PretrainConfig(
        max_steps=config.steps, batch_size=config.batch_size, lr=config.lr,
        warmup_steps=min(config.warmup_steps, config.steps), seed=config.seed, device=config.device,
        log_every=max(1, config.steps // 10),
    )
    result = pretrain(model, corpus.train, train_config, special_tokens=corpus.special_tokens)
    validation = corpus.validation if config.eval_blocks is None else corpus.validation[: config.eval_blocks]
    with torch.no_grad():
        loss = evaluate_mlm(model, validation, batch_size=config.batch_size, seed=config.seed,
                            special_tokens=corpus.special_tokens)
    return ProxyResult(model_hash(spec), float(loss), float(result.recent_loss()), result.steps,
                       time.perf_counter() - started)


def measure_proxies(specs: Sequence[ArchSpec], config: ProxyConfig | None = None, corpus=None,
                    progress: Callable[[int, int, ProxyResult], None] | None = None) -> list[ProxyResult]:
    """:func:`mlm_proxy` of every architecture, on one corpus; ``progress(done, total, result)``."""
    config = config or ProxyConfig()
    corpus = corpus if corpus is not None else load_proxy_corpus(config)
    results = []
    for index, spec in enumerate(specs):
        results.append(mlm_proxy(spec, corpus, config))
        if progress is not None:
            progress(index + 1, len(specs), results[-1])
    return results


def rank_correlation(proxy_loss: Sequence[float], accuracy: Sequence[float]) -> dict[str, float]:
    """Spearman's rho and Kendall's tau between the proxy (negated loss: higher is better) and the
    reference accuracy, with their p-values and the number of architectures."""
    from scipy.stats import kendalltau, spearmanr

    score, reference = -np.asarray(proxy_loss, dtype=float), np.asarray(accuracy, dtype=float)
    if score.shape != reference.shape or score.size < 3:
        raise ValueError(f"need at least 3 paired values, got {score.size} and {reference.size}")
    rho = spearmanr(score, reference)
    tau = kendalltau(score, reference)
    return {"n": int(score.size), "spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
            "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue)}
