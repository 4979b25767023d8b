"""Analytic features of an architecture: parameters, FLOPs and activation memory, without building it.

All counts describe the encoder of :func:`flexibert._model.build_model` (no MLM or classifier head)
for ``B = batch_size`` sequences of ``S = seq_len`` tokens, ``T = B·S``. A layer has width ``h``,
``n`` heads of dimension ``d = h // n`` and feed-forward chain ``w = (h, f_0, ..., f_last, h)``.

Parameters (exact; equals ``sum(p.numel() for p in build_model(spec).parameters())``)::

    embeddings        V·h_0 + P·h_0 + 2·h_0                    (words, positions, LayerNorm)
    sa_sdp head       3·(h·d + d)                              (Q, K, V)
    sa_wma head       3·(h·d + d) + d²                         (+ W)
    l_dft, l_dct head h·d + d                                  (V)
    c_k head          3·(h·d + d) + h·k + d·k + k              (Q, V, pointwise key; depthwise key
                                                                kernel; kernel generator)
    attention output  n·d·h + h,  two LayerNorms 4·h
    feed-forward      Σ_i w_i·w_{i+1} + w_{i+1}
    projection        h_i·h_{i+1} + h_{i+1} where h_i ≠ h_{i+1}

FLOPs (a multiply-accumulate is 2 FLOPs; only matrix products and convolutions are counted, as
implemented here; lookups, biases, softmax, GELU, LayerNorm and additions are not)::

    Linear(a -> b)    2·T·a·b       (every projection, attention output, feed-forward layer)
    sa_sdp head       3·2·T·h·d + 2·2·B·S²·d                   (Q/K/V; scores and context)
    sa_wma head       sa_sdp + 2·T·d²                          (Q·W)
    l_dft head        2·T·h·d + 4·B·S²·d + 4·T·d²             (V; Re(F V F) = C V C - S V S)
    l_dct head        2·T·h·d + 2·B·S²·d + 2·T·d²             (V; D V Dᵀ)
    c_k head          3·2·T·h·d + 2·T·h·k + 2·2·T·d·k          (Q, V, pointwise key; depthwise key;
                                                                kernel generator, dynamic mixing)

Activation memory (float32, 4 bytes per element; inference without autograd, tensors freed once
unused). The peak is the largest of the stages below, each counted in elements; the layer input
``T·h`` stays alive through its layer::

    embeddings        2·T·h_0 + S·h_0
    attention stage   T·h + 2·T·n·d + max over head groups of
                        self-attention (n_g heads)  3·T·n_g·d + 2·B·n_g·S²    (Q, K, V; scores, probs)
                        l_dft (n_g heads)           4·T·n_g·d + 2·S² + 2·d²    (values, products; bases)
                        l_dct (n_g heads)           3·T·n_g·d + S² + d²
                        c_k (one head at a time)    T·h + 5·T·d + 2·T·k
    feed-forward      2·T·h + T·max_i(w_i + 2·w_{i+1})            (layer input, residual; Linear input,
                                                                output and GELU output; the last
                                                                Linear has no GELU: w_i + w_{i+1})
    projection        T·(h_i + h_{i+1})

Surrogate features (the ``analytic`` and ``costs`` sets) are formulas over these counts and a few
sums over layers and heads (:func:`analytic_columns`). The formulas are written once, below, and
evaluated both here for one architecture and by :mod:`flexibert.feature_table` for many embeddings.
"""

from __future__ import annotations

import math

import numpy as np

from flexibert._spec import DEFAULT_MAX_POSITIONS, DEFAULT_VOCAB_SIZE, LayerSpec, as_spec, conv_kernel_size

_BYTES_PER_FLOAT32 = 4


# -- parameters ------------------------------------------------------------------------------------


def _head_parameters(op_type: str, hidden: int, head_dim: int) -> int:
    projection = hidden * head_dim + head_dim
    if op_type == "sa_sdp":
        return 3 * projection
    if op_type == "sa_wma":
        return 3 * projection + head_dim * head_dim
    if op_type in ("l_dft", "l_dct"):
        return projection
    kernel = conv_kernel_size(op_type)
    return 3 * projection + hidden * kernel + head_dim * kernel + kernel


def _ff_widths(layer: LayerSpec) -> tuple[int, ...]:
    return (layer.hidden_size, *layer.ff_dims, layer.hidden_size)


def _layer_parameters(layer: LayerSpec) -> int:
    h, n, d = layer.hidden_size, layer.n_heads, layer.head_dim
    heads = sum(_head_parameters(op, h, d) for op in layer.ops)
    widths = _ff_widths(layer)
    feed_forward = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    return heads + (n * d * h + h) + feed_forward + 4 * h


def _projection_pairs(spec) -> list[tuple[int, int]]:
    widths = spec.hidden_sizes
    return [(a, b) for a, b in zip(widths[:-1], widths[1:]) if a != b]


def embedding_parameters(spec, vocab_size: int = DEFAULT_VOCAB_SIZE,
                         max_positions: int = DEFAULT_MAX_POSITIONS) -> int:
    """Parameters of the token, position and segment embeddings (width of the first layer)."""
    h0 = as_spec(spec).hidden_sizes[0]
    return vocab_size * h0 + max_positions * h0 + 2 * h0


def count_parameters(spec, vocab_size: int = DEFAULT_VOCAB_SIZE, max_positions: int = DEFAULT_MAX_POSITIONS) -> int:
    """Exact parameter count of ``build_model(spec, vocab_size=..., max_positions=...)``."""
    spec = as_spec(spec)
    embeddings = embedding_parameters(spec, vocab_size, max_positions)
    projections = sum(a * b + b for a, b in _projection_pairs(spec))
    return embeddings + sum(_layer_parameters(layer) for layer in spec.layers) + projections


# -- FLOPs -----------------------------------------------------------------------------------------


def _head_macs(op_type: str, hidden: int, head_dim: int, batch_size: int, seq_len: int) -> int:
    tokens = batch_size * seq_len
    h, d = hidden, head_dim
    square = batch_size * seq_len * seq_len * d  # one [S, S] x [S, d] product per sequence
    if op_type in ("sa_sdp", "sa_wma"):
        macs = 3 * tokens * h * d + 2 * square
        return macs + (tokens * d * d if op_type == "sa_wma" else 0)
    if op_type == "l_dft":
        return tokens * h * d + 2 * square + 2 * tokens * d * d
    if op_type == "l_dct":
        return tokens * h * d + square + tokens * d * d
    kernel = conv_kernel_size(op_type)
    return 3 * tokens * h * d + tokens * h * kernel + 2 * tokens * d * kernel


def estimate_flops(spec, batch_size: int = 1, seq_len: int = 128) -> int:
    """FLOPs of one inference forward pass of the encoder (formulas in the module docstring)."""
    spec = as_spec(spec)
    _check_shape(batch_size, seq_len)
    tokens = batch_size * seq_len
    macs = 0
    for layer in spec.layers:
        h, n, d = layer.hidden_size, layer.n_heads, layer.head_dim
        macs += sum(_head_macs(op, h, d, batch_size, seq_len) for op in layer.ops)
        macs += tokens * n * d * h
        widths = _ff_widths(layer)
        macs += sum(tokens * a * b for a, b in zip(widths[:-1], widths[1:]))
    macs += sum(tokens * a * b for a, b in _projection_pairs(spec))
    return 2 * macs


# -- activation memory -----------------------------------------------------------------------------


def _group_elements(op_type: str, n_group: int, layer: LayerSpec, batch_size: int, seq_len: int) -> int:
    tokens = batch_size * seq_len
    h, d = layer.hidden_size, layer.head_dim
    if op_type.startswith("sa_"):
        return 3 * tokens * n_group * d + 2 * batch_size * n_group * seq_len * seq_len
    if op_type == "l_dft":
        return 4 * tokens * n_group * d + 2 * seq_len * seq_len + 2 * d * d
    if op_type == "l_dct":
        return 3 * tokens * n_group * d + seq_len * seq_len + d * d
    return tokens * h + 5 * tokens * d + 2 * tokens * conv_kernel_size(op_type)


def _layer_peak_elements(layer: LayerSpec, batch_size: int, seq_len: int) -> int:
    tokens = batch_size * seq_len
    h, n, d = layer.hidden_size, layer.n_heads, layer.head_dim
    groups: dict[str, int] = {}
    for op in layer.ops:
        key = "sa" if op.startswith("sa_") else op
        groups[key] = groups.get(key, 0) + 1
    group_peak = max(
        _group_elements("sa_sdp" if key == "sa" else key, count, layer, batch_size, seq_len)
        for key, count in groups.items()
    )
    attention = 2 * tokens * n * d + group_peak
    widths = _ff_widths(layer)
    links = list(zip(widths[:-1], widths[1:]))
    # input + output of a Linear, plus the GELU output for all but the last Linear of the stack
    feed_forward = tokens * h + tokens * max(a + b + (b if i < len(links) - 1 else 0) for i, (a, b) in enumerate(links))
    return tokens * h + max(attention, feed_forward)


def activation_memory_bytes(spec, batch_size: int = 1, seq_len: int = 128) -> int:
    """Approximate peak float32 activation footprint of an inference forward pass, in bytes
    (formula in the module docstring). Weights are not included."""
    spec = as_spec(spec)
    _check_shape(batch_size, seq_len)
    tokens = batch_size * seq_len
    h0 = spec.hidden_sizes[0]
    stages = [2 * tokens * h0 + seq_len * h0]
    stages += [_layer_peak_elements(layer, batch_size, seq_len) for layer in spec.layers]
    stages += [tokens * (a + b) for a, b in _projection_pairs(spec)]
    return _BYTES_PER_FLOAT32 * max(stages)


# -- summaries -------------------------------------------------------------------------------------


def analytic_features(
    spec,
    batch_size: int = 1,
    seq_len: int = 128,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = DEFAULT_MAX_POSITIONS,
) -> dict[str, int]:
    """``{"params", "flops", "activation_bytes"}`` of the encoder."""
    spec = as_spec(spec)
    return {
        "params": count_parameters(spec, vocab_size, max_positions),
        "flops": estimate_flops(spec, batch_size, seq_len),
        "activation_bytes": activation_memory_bytes(spec, batch_size, seq_len),
    }


# Head types counted one by one in the features; convolutions are counted together.
_NAMED_HEAD_TYPES = ("sa_sdp", "sa_wma", "l_dft", "l_dct")


def analytic_columns(
    spec,
    batch_size: int = 1,
    seq_len: int = 128,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = DEFAULT_MAX_POSITIONS,
) -> dict[str, int]:
    """Every analytic quantity of one architecture, named as the feature formulas below read them.

    ``params``, ``flops``, ``activation_bytes`` (:func:`analytic_features`), ``num_layers``,
    ``hidden_sum`` and ``max_hidden_size`` (over layers), ``total_heads``, ``heads_<type>`` for
    sa_sdp, sa_wma, l_dft and l_dct, ``heads_conv`` and ``kernel_sum`` (over convolution heads),
    ``total_ff_width`` and ``ff_depth_sum`` (over layers). :class:`flexibert.feature_table.FeatureTable`
    gives the same columns for many embeddings at once.
    """
    spec = as_spec(spec)
    ops = [op for layer in spec.layers for op in layer.ops]
    kernels = [conv_kernel_size(op) for op in ops if op.startswith("c_")]
    return {
        **analytic_features(spec, batch_size, seq_len, vocab_size, max_positions),
        "num_layers": spec.num_layers,
        "hidden_sum": sum(spec.hidden_sizes),
        "max_hidden_size": max(spec.hidden_sizes),
        "total_heads": len(ops),
        **{f"heads_{op}": ops.count(op) for op in _NAMED_HEAD_TYPES},
        "heads_conv": len(kernels),
        "kernel_sum": sum(kernels),
        "total_ff_width": sum(sum(layer.ff_dims) for layer in spec.layers),
        "ff_depth_sum": sum(len(layer.ff_dims) for layer in spec.layers),
    }


def stack_columns(rows: list[dict[str, int]]) -> dict[str, np.ndarray]:
    """Per-architecture columns (a list of :func:`analytic_columns`) as one array per column."""
    return {name: np.array([row[name] for row in rows]) for name in rows[0]}


# -- feature formulas ------------------------------------------------------------------------------
# Each feature is a formula over the analytic columns of many architectures at once (a dict of
# arrays, one entry per architecture). The per-architecture vector below and the vectorised table
# of flexibert.feature_table both evaluate these formulas, so a feature is defined here only: a new
# one is a new entry. Integer columns are exact and every division and logarithm is the same
# float64 operation on both paths, so the two agree bit for bit.


def _log10(values: np.ndarray) -> np.ndarray:
    # math.log10 of the exact integers; numpy's log10 may differ in the last bit.
    return np.array([math.log10(value) for value in np.asarray(values).tolist()], dtype=float)


def _heads(columns: dict[str, np.ndarray], op_type: str) -> np.ndarray:
    # a design space without this head type has no column for it
    return columns.get(f"heads_{op_type}", np.zeros(len(columns["num_layers"]), dtype=np.int64))


def _mean_conv_kernel(columns: dict[str, np.ndarray]) -> np.ndarray:
    conv = columns["heads_conv"]
    return np.where(conv > 0, columns["kernel_sum"] / np.maximum(conv, 1), 0.0)


_ANALYTIC_FORMULAS = {
    "log10_params": lambda c: _log10(c["params"]),
    "log10_flops": lambda c: _log10(c["flops"]),
    "log10_activation_bytes": lambda c: _log10(c["activation_bytes"]),
    "num_layers": lambda c: c["num_layers"],
    "mean_hidden_size": lambda c: c["hidden_sum"] / c["num_layers"],
    "max_hidden_size": lambda c: c["max_hidden_size"],
    "total_heads": lambda c: c["total_heads"],
    **{f"heads_{op}": (lambda c, op=op: _heads(c, op)) for op in _NAMED_HEAD_TYPES},
    "heads_conv": lambda c: c["heads_conv"],
    "mean_conv_kernel": _mean_conv_kernel,
    "total_ff_width": lambda c: c["total_ff_width"],
    "mean_ff_depth": lambda c: c["ff_depth_sum"] / c["num_layers"],
}

# Linear-scale cost terms that can only add latency or energy (for additive cost models): the summed
# hidden width sizes the per-head relative-position tables and the per-layer norms.
_COST_FORMULAS = {
    "params_millions": lambda c: c["params"] / 1e6,
    "gflops": lambda c: c["flops"] / 1e9,
    "activation_mb": lambda c: c["activation_bytes"] / 1e6,
    "num_layers": lambda c: c["num_layers"],
    "total_heads": lambda c: c["total_heads"],
    "total_hidden_size": lambda c: c["hidden_sum"],
}

ANALYTIC_FEATURE_NAMES: tuple[str, ...] = tuple(_ANALYTIC_FORMULAS)
COST_FEATURE_NAMES: tuple[str, ...] = tuple(_COST_FORMULAS)


def analytic_matrix(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The analytic features (rows, ``len(ANALYTIC_FEATURE_NAMES)``) of stacked analytic columns."""
    return np.column_stack([formula(columns) for formula in _ANALYTIC_FORMULAS.values()]).astype(float)


def cost_matrix(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The cost features (rows, ``len(COST_FEATURE_NAMES)``) of stacked analytic columns."""
    return np.column_stack([formula(columns) for formula in _COST_FORMULAS.values()]).astype(float)


def analytic_feature_vector(
    spec,
    batch_size: int = 1,
    seq_len: int = 128,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = DEFAULT_MAX_POSITIONS,
) -> list[float]:
    """A fixed-length numeric description for surrogate models, ordered as ``ANALYTIC_FEATURE_NAMES``."""
    columns = analytic_columns(spec, batch_size, seq_len, vocab_size, max_positions)
    return analytic_matrix(stack_columns([columns]))[0].tolist()


def _check_shape(batch_size: int, seq_len: int) -> None:
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(seq_len, int) or seq_len <= 0:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
