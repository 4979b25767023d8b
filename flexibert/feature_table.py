"""Surrogate features of many architectures at once, read from their embeddings.

Searches and surrogate fits score thousands of architectures. The per-architecture formulas of
:func:`flexibert.analytic_features` walk every head of every layer in Python, about a millisecond
each. Every per-layer term splits into a part that depends on the layer's width and attention
multiset and a part that depends on its width and feed-forward stack, so :class:`FeatureTable`
tabulates both once per design space and workload (heads through the same per-head formulas), and
the analytic quantities of an architecture become array lookups and sums over its layers. Integers
are summed exactly and the features are the formulas of ``flexibert._features``, evaluated on the
same integers, so the table and the per-architecture path agree bit for bit (tested).

Feature sets (:data:`FEATURE_SETS`), float matrices with one row per architecture:

- ``"embedding"``: the integer embedding (:func:`flexibert.embed`), as floats. Models that need
  scaled inputs standardise them themselves; trees do not care.
- ``"analytic"``: :data:`ANALYTIC_FEATURE_NAMES` (log10 parameters / FLOPs / activation bytes,
  layer, head and feed-forward counts) for the workload's batch size and sequence length.
- ``"both"``: embedding then analytic.
- ``"costs"``: :data:`COST_FEATURE_NAMES`, linear-scale cost terms that can only add latency or
  energy: parameters (millions), GFLOPs, activation MB, layers, heads and the summed hidden width.

Architectures outside a design space have no embedding in it; :func:`spec_columns` gives their
analytic quantities one architecture at a time, and :func:`feature_matrix` turns either kind of
columns into a feature set.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from flexibert._features import (
    ANALYTIC_FEATURE_NAMES,
    COST_FEATURE_NAMES,
    _check_shape,
    _group_elements,
    _head_macs,
    _head_parameters,
    analytic_columns,
    analytic_matrix,
    cost_matrix,
    stack_columns,
)
from flexibert._space import DesignSpace
from flexibert._spec import DEFAULT_MAX_POSITIONS, DEFAULT_VOCAB_SIZE, LayerSpec

FEATURE_SETS = ("embedding", "analytic", "both", "costs")

Columns = dict[str, np.ndarray]


def feature_names(features: str = "embedding", space: DesignSpace | None = None) -> list[str]:
    """Column names of one feature set (embedding entries are ``embedding_<i>``)."""
    _check_feature_set(features)
    if features == "costs":
        return list(COST_FEATURE_NAMES)
    names: list[str] = []
    if features in ("embedding", "both"):
        names += [f"embedding_{i}" for i in range((space or DesignSpace.default()).embedding_length)]
    if features in ("analytic", "both"):
        names += list(ANALYTIC_FEATURE_NAMES)
    return names


def _needed(columns: Columns | None, features: str) -> Columns:
    if columns is None:
        raise ValueError(f"feature set {features!r} needs the analytic columns")
    return columns


def feature_matrix(columns: Columns | None, features: str, embeddings: np.ndarray | None = None) -> np.ndarray:
    """One feature set (rows, ``len(feature_names(features))``) from analytic columns (arrays of
    length rows, from :meth:`FeatureTable.columns` or :func:`spec_columns`) and, for the
    ``embedding`` and ``both`` sets, the embeddings (rows, embedding length)."""
    _check_feature_set(features)
    if features == "costs":
        return cost_matrix(_needed(columns, features))
    blocks = []
    if features in ("embedding", "both"):
        if embeddings is None:
            raise ValueError(f"feature set {features!r} needs the embeddings")
        blocks.append(np.asarray(embeddings, dtype=float))
    if features in ("analytic", "both"):
        blocks.append(analytic_matrix(_needed(columns, features)))
    return np.hstack(blocks)


def spec_columns(specs: Sequence, batch_size: int = 1, seq_len: int = 128) -> Columns:
    """The analytic columns of architectures (ArchSpecs or model_dicts, in any design space), one
    architecture at a time: the reference the table is tested against, and the path for
    architectures without an embedding."""
    if not specs:
        raise ValueError("spec_columns needs at least one architecture")
    return stack_columns([analytic_columns(spec, batch_size, seq_len) for spec in specs])


class FeatureTable:
    """The analytic columns and feature sets of many valid embeddings of ``space`` for one workload
    (``batch_size`` sequences of ``seq_len`` tokens). Build it through :func:`feature_table`, which
    keeps the tables it built."""

    def __init__(self, space: DesignSpace, batch_size: int, seq_len: int) -> None:
        _check_shape(batch_size, seq_len)
        self.space = space
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.hidden = np.array(space.hidden_size, dtype=np.int64)
        ops = space.operation_types
        self.counts = np.array([[heads.count(op) for op in ops] for heads in space.attention_ops], dtype=np.int64)
        self.n_heads = self.counts.sum(axis=1)
        self.kernels = np.array([int(op[2:]) if op.startswith("c_") else 0 for op in ops], dtype=np.int64)
        self._tabulate_attention()
        self._tabulate_feed_forward()

    def _tabulate_attention(self) -> None:
        """Parameters, MACs and peak elements of the attention stage, per (width, attention index)."""
        ops, B, S = self.space.operation_types, self.batch_size, self.seq_len
        tokens = B * S
        shape = (len(self.hidden), len(self.counts))
        self.att_params, self.att_macs, self.att_peak = (np.zeros(shape, dtype=np.int64) for _ in range(3))
        is_sa = np.array([op.startswith("sa_") for op in ops])
        for hi, h in enumerate(self.space.hidden_size):
            for n in self.space.attention_heads:
                d = h // n
                rows = self.n_heads == n
                if not rows.any():
                    continue
                counts = self.counts[rows]
                per_head_params = np.array([_head_parameters(op, h, d) for op in ops], dtype=np.int64)
                per_head_macs = np.array([_head_macs(op, h, d, B, S) for op in ops], dtype=np.int64)
                # attention heads, their output projection (n·d·h + h) and the two LayerNorms (4·h)
                self.att_params[hi, rows] = counts @ per_head_params + n * d * h + h + 4 * h
                self.att_macs[hi, rows] = counts @ per_head_macs + tokens * n * d * h
                layer = LayerSpec(h, (ops[0],) * n, (self.space.feed_forward_dims[0],))  # carries h and d
                group_peak = np.zeros(int(rows.sum()), dtype=np.int64)
                groups = [(np.flatnonzero(is_sa), "sa_sdp")] + [
                    (np.array([k]), op) for k, op in enumerate(ops) if not is_sa[k]
                ]
                for columns, op in groups:  # self-attention heads form one group, other types one each
                    in_group = counts[:, columns].sum(axis=1)
                    by_count = np.array([_group_elements(op, c, layer, B, S) if c else 0 for c in range(n + 1)],
                                        dtype=np.int64)
                    group_peak = np.maximum(group_peak, by_count[in_group])
                self.att_peak[hi, rows] = 2 * tokens * n * d + group_peak

    def _tabulate_feed_forward(self) -> None:
        """Parameters, MACs and peak elements of the feed-forward stage, per (width, stack index)."""
        tokens = self.batch_size * self.seq_len
        stacks = self.space.feed_forward_ops
        shape = (len(self.hidden), len(stacks))
        self.ff_params, self.ff_macs, self.ff_peak = (np.zeros(shape, dtype=np.int64) for _ in range(3))
        for hi, h in enumerate(self.space.hidden_size):
            for fi, stack in enumerate(stacks):
                widths = (h, *stack, h)
                links = list(zip(widths[:-1], widths[1:]))
                self.ff_params[hi, fi] = sum(a * b + b for a, b in links)
                self.ff_macs[hi, fi] = sum(tokens * a * b for a, b in links)
                # input + output of a Linear, plus the GELU output for all but the last Linear
                widest = max(a + b + (b if i < len(links) - 1 else 0) for i, (a, b) in enumerate(links))
                self.ff_peak[hi, fi] = tokens * h + tokens * widest
        self.ff_width = np.array([sum(stack) for stack in stacks], dtype=np.int64)
        self.ff_depth = np.array([len(stack) for stack in stacks], dtype=np.int64)

    def columns(self, X: np.ndarray) -> Columns:
        """Every analytic quantity (the keys of :func:`flexibert._features.analytic_columns`, one
        ``heads_<type>`` per non-convolution type of the space) of the architectures whose valid
        embeddings are the rows of ``X`` (n, embedding length); each value has shape (n,)."""
        X = np.asarray(X, dtype=np.int64)
        B, S = self.batch_size, self.seq_len
        tokens = B * S
        layers = np.array(self.space.encoder_layers, dtype=np.int64)[X[:, 0]]
        used = np.arange(self.space.max_layers)[None, :] < layers[:, None]
        h_idx, f_idx, a_idx = X[:, 1::3], X[:, 2::3], X[:, 3::3]
        hidden = np.where(used, self.hidden[h_idx], 0)

        def layer_sum(table: np.ndarray) -> np.ndarray:
            return np.where(used, table, 0).sum(axis=1)

        h0 = hidden[:, 0]
        a, b = hidden[:, :-1], hidden[:, 1:]
        projected = used[:, 1:] & (a != b)
        layer_peak = hidden * tokens + np.maximum(self.att_peak[h_idx, a_idx], self.ff_peak[h_idx, f_idx])
        stages = np.column_stack([
            2 * tokens * h0 + S * h0,
            np.where(used, layer_peak, 0).max(axis=1),
            np.where(projected, tokens * (a + b), 0).max(axis=1),
        ])
        counts = np.where(used[:, :, None], self.counts[a_idx], 0).sum(axis=1)  # (rows, op types)
        ops = self.space.operation_types
        conv = self.kernels > 0
        return {
            "params": (DEFAULT_VOCAB_SIZE + DEFAULT_MAX_POSITIONS + 2) * h0
            + layer_sum(self.att_params[h_idx, a_idx] + self.ff_params[h_idx, f_idx])
            + np.where(projected, a * b + b, 0).sum(axis=1),
            "flops": 2 * (layer_sum(self.att_macs[h_idx, a_idx] + self.ff_macs[h_idx, f_idx])
                          + np.where(projected, tokens * a * b, 0).sum(axis=1)),
            "activation_bytes": 4 * stages.max(axis=1),
            "num_layers": layers,
            "hidden_sum": hidden.sum(axis=1),
            "max_hidden_size": hidden.max(axis=1),
            "total_heads": counts.sum(axis=1),
            **{f"heads_{op}": counts[:, k] for k, op in enumerate(ops) if not conv[k]},
            "heads_conv": counts[:, conv].sum(axis=1),
            "kernel_sum": counts @ self.kernels,
            "total_ff_width": layer_sum(self.ff_width[f_idx]),
            "ff_depth_sum": layer_sum(self.ff_depth[f_idx]),
        }

    def featurize(self, X: np.ndarray, features: str, columns: Columns | None = None) -> np.ndarray:
        """The ``features`` matrix (n, ``len(feature_names(features))``) of the valid embeddings
        ``X`` (n, embedding length); ``columns``: this table's :meth:`columns` of ``X``, when
        already computed."""
        if features != "embedding" and columns is None:
            columns = self.columns(X)
        return feature_matrix(columns, features, X)


def feature_table(space: DesignSpace | None = None, batch_size: int = 1, seq_len: int = 128) -> FeatureTable:
    """The :class:`FeatureTable` of ``space`` (default FlexiBERT 2.0) and one workload, built once
    (a tenth of a second) and kept for the next call."""
    _check_shape(batch_size, seq_len)
    return _cached_table(space or DesignSpace.default(), batch_size, seq_len)


@functools.lru_cache(maxsize=16)
def _cached_table(space: DesignSpace, batch_size: int, seq_len: int) -> FeatureTable:
    return FeatureTable(space, batch_size, seq_len)


def _check_feature_set(features: str) -> None:
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; choose one of {FEATURE_SETS}")
