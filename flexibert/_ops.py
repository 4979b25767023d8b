"""Attention-head operations of the FlexiBERT 2.0 space, as torch modules.

Every head maps hidden states ``[batch, seq, hidden]`` to ``[batch, seq, head_dim]``:

- ``sa_sdp``  scaled dot-product self-attention, ``softmax(Q Kᵀ / √d) V``.
- ``sa_wma``  weighted multiplicative attention, ``softmax(Q W Kᵀ / √d) V`` with a learned ``d × d`` W.
- ``l_dft``   FNet-style mixing: the real part of the 2-D DFT (sequence and feature axes) of ``V``.
- ``l_dct``   the orthonormal 2-D DCT-II of ``V``.
- ``c_<k>``   ConvBERT span-based dynamic convolution with an odd kernel of ``k`` positions.

The transforms are fixed matrix products built from the runtime sequence length rather than
``torch.fft``: matrix products export to every runtime, while ONNX ``DFT`` is mishandled by some.
Heads of one kind inside a layer can run fused (see :func:`run_head_group`); the result equals
running each head on its own. The weights of the heads that attend (self-attention over the sequence,
dynamic convolution over a window) are also available alone, for analyses of a model
(:func:`self_attention_weights`, :func:`dynamic_conv_weights`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flexibert._errors import InvalidArchitectureError
from flexibert._spec import conv_kernel_size

# -- fixed transforms ------------------------------------------------------------------------------


def _arange_and_length(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``arange(size)`` and ``size`` as a 0-d tensor. Arithmetic on the tensor form keeps dynamic
    sequence lengths exportable (ONNX exporters reject ``remainder`` with a symbolic scalar)."""
    index = torch.arange(size, device=device)
    return index, index[-1] + 1


def dft_matrices(size: int, dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine parts of the ``size``-point DFT matrix, ``F = C - iS``.

    Angles are reduced modulo ``size`` in integer arithmetic first, so float32 stays exact to ~1e-6
    even for long sequences.
    """
    index, length = _arange_and_length(size, device)
    turns = torch.remainder(index[:, None] * index[None, :], length).to(dtype) / length.to(dtype)
    angle = turns * (2.0 * math.pi)
    return torch.cos(angle), torch.sin(angle)


def dct_matrix(size: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` (``D @ x`` transforms the columns of ``x``)."""
    index, length = _arange_and_length(size, device)
    freq, position = index[:, None], index[None, :]
    quarter_turns = torch.remainder((2 * position + 1) * freq, 4 * length).to(dtype) / length.to(dtype)
    angle = quarter_turns * (math.pi / 2.0)
    scale = (torch.where(freq == 0, 1.0, 2.0).to(dtype) / length.to(dtype)).sqrt()
    return torch.cos(angle) * scale


def fourier_mix(values: torch.Tensor) -> torch.Tensor:
    """``Re(fft2(values))`` over the last two axes (sequence, feature), as matrix products.

    With ``F = C - iS`` on both axes, ``Re(F_s V F_d) = C_s V C_d - S_s V S_d``.
    """
    cos_s, sin_s = dft_matrices(values.shape[-2], values.dtype, values.device)
    cos_d, sin_d = dft_matrices(values.shape[-1], values.dtype, values.device)
    return cos_s @ values @ cos_d - sin_s @ values @ sin_d


def cosine_mix(values: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two axes (sequence, feature), as matrix products."""
    dct_s = dct_matrix(values.shape[-2], values.dtype, values.device)
    dct_d = dct_matrix(values.shape[-1], values.dtype, values.device)
    return dct_s @ values @ dct_d.transpose(0, 1)


# -- head modules ----------------------------------------------------------------------------------


class Head(nn.Module):
    """Base class: one attention head of a given ``op_type`` producing ``head_dim`` features."""

    op_type: str = ""

    def __init__(self, hidden_size: int, head_dim: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.head_dim = head_dim

    @property
    def family(self) -> str:
        """'sa', 'l' or 'c': heads of one family share their projection layout."""
        return self.op_type.split("_")[0]

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return run_head_group([self], hidden, attention_mask)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, head_dim={self.head_dim}"


class ScaledDotProductHead(Head):
    op_type = "sa_sdp"

    def __init__(self, hidden_size: int, head_dim: int, attention_dropout: float = 0.1) -> None:
        super().__init__(hidden_size, head_dim)
        self.query = nn.Linear(hidden_size, head_dim)
        self.key = nn.Linear(hidden_size, head_dim)
        self.value = nn.Linear(hidden_size, head_dim)
        self.attention_dropout = attention_dropout


class WeightedMultiplicativeHead(ScaledDotProductHead):
    """Scores ``Q W Kᵀ / √d``; W starts as U(-0.1, 0.1) like FlexiBERT's."""

    op_type = "sa_wma"

    def __init__(self, hidden_size: int, head_dim: int, attention_dropout: float = 0.1) -> None:
        super().__init__(hidden_size, head_dim, attention_dropout)
        self.mix = nn.Parameter(torch.empty(head_dim, head_dim))


class FourierHead(Head):
    op_type = "l_dft"

    def __init__(self, hidden_size: int, head_dim: int) -> None:
        super().__init__(hidden_size, head_dim)
        self.value = nn.Linear(hidden_size, head_dim)


class CosineHead(FourierHead):
    op_type = "l_dct"


class DynamicConvHead(Head):
    """ConvBERT span-based dynamic convolution.

    A depthwise-separable convolution of the input gives a span-aware key; the product with the
    query yields, per position, ``kernel_size`` softmax-normalised weights that mix the values of
    the neighbouring positions (zero-padded at the sequence ends).
    """

    def __init__(self, hidden_size: int, head_dim: int, kernel_size: int) -> None:
        super().__init__(hidden_size, head_dim)
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise InvalidArchitectureError(f"convolution kernel size must be odd and positive, got {kernel_size}")
        self.kernel_size = kernel_size
        self.op_type = f"c_{kernel_size}"
        self.query = nn.Linear(hidden_size, head_dim)
        self.key_depthwise = nn.Conv1d(
            hidden_size, hidden_size, kernel_size, padding=kernel_size // 2, groups=hidden_size, bias=False
        )
        self.key_pointwise = nn.Conv1d(hidden_size, head_dim, 1)
        self.kernel_generator = nn.Linear(head_dim, kernel_size)
        self.value = nn.Linear(hidden_size, head_dim)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel_size={self.kernel_size}"


def make_head(op_type: str, hidden_size: int, head_dim: int, attention_dropout: float = 0.1) -> Head:
    """The head module for an op type such as 'sa_sdp' or 'c_9'."""
    if op_type == "sa_sdp":
        return ScaledDotProductHead(hidden_size, head_dim, attention_dropout)
    if op_type == "sa_wma":
        return WeightedMultiplicativeHead(hidden_size, head_dim, attention_dropout)
    if op_type == "l_dft":
        return FourierHead(hidden_size, head_dim)
    if op_type == "l_dct":
        return CosineHead(hidden_size, head_dim)
    kernel = conv_kernel_size(op_type) if op_type.startswith("c_") and op_type[2:].isdigit() else None
    if kernel is not None:
        return DynamicConvHead(hidden_size, head_dim, kernel)
    raise InvalidArchitectureError(f"unknown operation type '{op_type}'")


# -- forward passes --------------------------------------------------------------------------------


def group_kind(head: Head) -> str:
    """Heads with the same kind can run fused: all self-attention heads together, others per type."""
    return "sa" if head.family == "sa" else head.op_type


def _fused_linear(heads, name: str, hidden: torch.Tensor) -> torch.Tensor:
    """Apply the ``name`` projection of every head at once: ``[B, S, h] -> [B, heads, S, d]``."""
    layers = [getattr(head, name) for head in heads]
    if len(layers) == 1:
        out = layers[0](hidden)
    else:
        weight = torch.cat([layer.weight for layer in layers], dim=0)
        bias = torch.cat([layer.bias for layer in layers], dim=0)
        out = F.linear(hidden, weight, bias)
    return out.unflatten(-1, (len(layers), -1)).transpose(1, 2)


def _merge_heads(context: torch.Tensor) -> torch.Tensor:
    """``[B, heads, S, d] -> [B, S, heads·d]``."""
    return context.transpose(1, 2).flatten(2)


def self_attention_weights(heads, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The attention weights of self-attention heads (sdp before wma, as in a layer), before dropout:
    ``[B, heads, S_query, S_key]``, each row a distribution over the keys."""
    # Canonical order puts every sdp head before every wma head.
    query = _fused_linear(heads, "query", hidden)
    key = _fused_linear(heads, "key", hidden)
    mixes = [head.mix for head in heads if head.op_type == "sa_wma"]
    if mixes:
        n_sdp = len(heads) - len(mixes)
        weighted = query[:, n_sdp:] @ torch.stack(mixes)
        query = torch.cat([query[:, :n_sdp], weighted], dim=1) if n_sdp else weighted
    scores = query @ key.transpose(-1, -2) * (heads[0].head_dim ** -0.5)
    if attention_mask is not None:
        blocked = attention_mask[:, None, None, :] == 0
        scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1)


def _self_attention(heads, hidden, attention_mask) -> torch.Tensor:
    probs = self_attention_weights(heads, hidden, attention_mask)
    value = _fused_linear(heads, "value", hidden)
    probs = F.dropout(probs, heads[0].attention_dropout, heads[0].training)
    return _merge_heads(probs @ value)


def _masked_values(heads, hidden, attention_mask) -> torch.Tensor:
    value = _fused_linear(heads, "value", hidden)
    if attention_mask is not None:  # padded positions must not leak into the global mixing
        value = value * attention_mask[:, None, :, None].to(value.dtype)
    return value


def dynamic_conv_weights(head: DynamicConvHead, hidden: torch.Tensor) -> torch.Tensor:
    """The convolution weights of a dynamic-convolution head: ``[B, S, kernel_size]``, per position a
    distribution over the ``kernel_size`` positions centred on it."""
    query = head.query(hidden)
    span_key = head.key_pointwise(head.key_depthwise(hidden.transpose(1, 2))).transpose(1, 2)
    return torch.softmax(head.kernel_generator(query * span_key), dim=-1)


def _dynamic_conv(head: DynamicConvHead, hidden, attention_mask) -> torch.Tensor:
    weights = dynamic_conv_weights(head, hidden)  # [B, S, k]
    value = head.value(hidden)
    if attention_mask is not None:
        value = value * attention_mask[:, :, None].to(value.dtype)
    pad = head.kernel_size // 2
    padded = F.pad(value, (0, 0, pad, pad))
    seq_len = hidden.shape[1]
    # Shifted slices instead of Tensor.unfold: exports with every ONNX exporter.
    out = weights[..., 0:1] * padded[:, 0:seq_len]
    for offset in range(1, head.kernel_size):
        out = out + weights[..., offset:offset + 1] * padded[:, offset:offset + seq_len]
    return out


def run_head_group(heads, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Run heads of one :func:`group_kind` together: ``[B, S, h] -> [B, S, len(heads)·d]``."""
    kind = group_kind(heads[0])
    if kind == "sa":
        return _self_attention(heads, hidden, attention_mask)
    if kind == "l_dft":
        return _merge_heads(fourier_mix(_masked_values(heads, hidden, attention_mask)))
    if kind == "l_dct":
        return _merge_heads(cosine_mix(_masked_values(heads, hidden, attention_mask)))
    parts = [_dynamic_conv(head, hidden, attention_mask) for head in heads]
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
