"""Head-level weight transfer from a trained parent model to a child architecture.

Blocks are matched by position:

- Layer ``i`` goes to layer ``i`` for ``i < min(L_parent, L_child)``; other child layers keep their
  initialisation. Projections between layers transfer where both models have one.
- Embeddings: word and position tables copy their common rows and the first ``m`` columns
  (``m = min(h_parent, h_child)``); LayerNorms copy ``[:m]``.
- Head ``j`` (canonical order) transfers when parent and child heads at ``j`` share their family
  (``sa``, ``l`` or ``c``): the Q/K/V (whichever both have) copy their top-left ``d × m`` block
  (``d = min`` of the head dims). A WMA matrix transfers only between two WMA heads (top-left
  block). A convolution head transfers its pointwise key and, for the kernel axis, copies equal
  kernels and resizes differing ones by linear interpolation (depthwise kernel and the kernel
  generator's rows). The attention output dense copies, for each transferred head, the column
  block of that head (its first ``d`` columns) and rows ``[:m]``.
- Feed-forward: each shared stack layer ``k < min(depth_parent, depth_child)`` copies its top-left
  block; the output dense (``f_last -> h``) copies ``[:m, :min(f_last)]``.
- Wrapper heads (MLM head, pooler; the classifier when label counts agree) copy top-left blocks.

Modes:

- ``"ordered"`` (reference 'OD'): truncated blocks are copied as they are.
- ``"random_projection"`` (reference 'RP'): where a layer's hidden width differs between parent and
  child, every block along that layer's hidden axis is mixed by one Gaussian matrix
  ``R ∈ R^{m×m}`` with entries N(0, 1/m), drawn from ``torch.Generator().manual_seed(seed)``
  (one per layer, in layer order; the embeddings use layer 0's). The source is truncated to ``m``
  first, then columns on the hidden axis become ``W[:, :m] @ Rᵀ`` and rows ``R @ W[:m]``;
  LayerNorm parameters and depthwise kernels are truncated only. Where widths agree both modes
  copy directly. Wrapper heads are always ordered.

:func:`transfer_weights` returns the fraction of the child's parameters, by element count, that
were written from the parent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flexibert._model import EncoderLayer, FlexiBertEncoder, FlexiBertForMaskedLM, FlexiBertForSequenceClassification
from flexibert._ops import DynamicConvHead, Head
from flexibert._spec import as_spec

_MODES = {"ordered": "ordered", "od": "ordered", "random_projection": "random_projection", "rp": "random_projection"}

Index = tuple


@torch.no_grad()
def copy_block(
    dst: torch.Tensor,
    src: torch.Tensor,
    dst_index: Index = (),
    src_index: Index = (),
    row_mix: torch.Tensor | None = None,
    col_mix: torch.Tensor | None = None,
) -> int:
    """Write the common top-left block of ``src[src_index]`` into ``dst[dst_index]``; mix its first
    axis with ``row_mix`` (``R @ block``) and its last axis with ``col_mix`` (``block @ Rᵀ``).
    Returns the number of elements written."""
    source, target = src[src_index], dst[dst_index]
    common = tuple(slice(0, min(a, b)) for a, b in zip(source.shape, target.shape))
    block = source[common]
    if row_mix is not None:
        block = torch.tensordot(row_mix, block, dims=([1], [0]))
    if col_mix is not None:
        block = block @ col_mix.T
    target[common] = block
    return block.numel()


def _resize_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the last axis (kernel positions) of ``weight`` [..., k] by linear interpolation."""
    if weight.shape[-1] == size:
        return weight
    flat = weight.reshape(1, -1, weight.shape[-1])
    resized = F.interpolate(flat, size=size, mode="linear", align_corners=True)
    return resized.reshape(*weight.shape[:-1], size)


def _linear(dst: nn.Linear, src: nn.Linear, row_mix=None, col_mix=None) -> int:
    return (
        copy_block(dst.weight, src.weight, row_mix=row_mix, col_mix=col_mix)
        + copy_block(dst.bias, src.bias, row_mix=row_mix)
    )


def _layer_norm(dst: nn.LayerNorm, src: nn.LayerNorm) -> int:
    return copy_block(dst.weight, src.weight) + copy_block(dst.bias, src.bias)


@torch.no_grad()
def _conv_head(dst: DynamicConvHead, src: DynamicConvHead, mix) -> int:
    count = copy_block(dst.key_pointwise.weight[..., 0], src.key_pointwise.weight[..., 0], col_mix=mix)
    count += copy_block(dst.key_pointwise.bias, src.key_pointwise.bias)
    # Depthwise kernels are per channel: truncate channels, resize the kernel axis.
    count += copy_block(dst.key_depthwise.weight, _resize_kernel(src.key_depthwise.weight, dst.kernel_size))
    generator_weight = _resize_kernel(src.kernel_generator.weight.T, dst.kernel_size).T  # [k, d]
    count += copy_block(dst.kernel_generator.weight, generator_weight)
    count += copy_block(dst.kernel_generator.bias, _resize_kernel(src.kernel_generator.bias, dst.kernel_size))
    return count


def copy_head_weights(dst: Head, src: Head, mix) -> int:
    """Copy one head's weights into another (top-left blocks where sizes differ, ``mix`` projecting the
    hidden axis when not None); return the number of elements copied."""
    count = 0
    for name in ("query", "key", "value"):
        if hasattr(dst, name) and hasattr(src, name):
            count += _linear(getattr(dst, name), getattr(src, name), col_mix=mix)
    if dst.op_type == "sa_wma" and src.op_type == "sa_wma":
        count += copy_block(dst.mix, src.mix)
    if isinstance(dst, DynamicConvHead) and isinstance(src, DynamicConvHead):
        count += _conv_head(dst, src, mix)
    return count


def _encoder_layer(dst: EncoderLayer, src: EncoderLayer, mix) -> int:
    count = 0
    d_dst, d_src = dst.spec.head_dim, src.spec.head_dim
    out_weight_dst, out_weight_src = dst.attention_output.weight, src.attention_output.weight
    for j, (head_dst, head_src) in enumerate(zip(dst.heads, src.heads)):
        if head_dst.family != head_src.family:
            continue
        count += copy_head_weights(head_dst, head_src, mix)
        count += copy_block(
            out_weight_dst,
            out_weight_src,
            (slice(None), slice(j * d_dst, (j + 1) * d_dst)),
            (slice(None), slice(j * d_src, (j + 1) * d_src)),
            row_mix=mix,
        )
    count += copy_block(dst.attention_output.bias, src.attention_output.bias, row_mix=mix)
    count += _layer_norm(dst.attention_norm, src.attention_norm)
    linears_dst, linears_src = dst.feed_forward.linears, src.feed_forward.linears
    for k in range(min(len(linears_dst), len(linears_src)) - 1):  # shared stack layers
        count += _linear(linears_dst[k], linears_src[k], col_mix=mix if k == 0 else None)
    count += _linear(linears_dst[-1], linears_src[-1], row_mix=mix)
    return count + _layer_norm(dst.output_norm, src.output_norm)


def _mixing_matrices(parent: FlexiBertEncoder, child: FlexiBertEncoder, mode: str, seed: int) -> list:
    """One R per shared layer (None where widths agree or in ordered mode)."""
    generator = torch.Generator().manual_seed(int(seed))
    mixes = []
    for h_parent, h_child in zip(parent.spec.hidden_sizes, child.spec.hidden_sizes):
        m = min(h_parent, h_child)
        matrix = torch.randn(m, m, generator=generator) / m**0.5
        mixes.append(matrix if mode == "random_projection" and h_parent != h_child else None)
    return mixes


def _encoder(parent: FlexiBertEncoder, child: FlexiBertEncoder, mode: str, seed: int) -> int:
    mixes = _mixing_matrices(parent, child, mode, seed)
    count = copy_block(
        child.embeddings.word_embeddings.weight, parent.embeddings.word_embeddings.weight, col_mix=mixes[0]
    )
    count += copy_block(
        child.embeddings.position_embeddings.weight, parent.embeddings.position_embeddings.weight, col_mix=mixes[0]
    )
    count += _layer_norm(child.embeddings.layer_norm, parent.embeddings.layer_norm)
    for i, (layer_child, layer_parent) in enumerate(zip(child.layers, parent.layers)):
        count += _encoder_layer(layer_child, layer_parent, mixes[i])
    for i, (proj_child, proj_parent) in enumerate(zip(child.projections, parent.projections)):
        if i + 1 < len(mixes) and isinstance(proj_child, nn.Linear) and isinstance(proj_parent, nn.Linear):
            count += _linear(proj_child, proj_parent, row_mix=mixes[i + 1], col_mix=mixes[i])
    return count


def _wrapper_heads(parent: nn.Module, child: nn.Module) -> int:
    count = 0
    if isinstance(parent, FlexiBertForMaskedLM) and isinstance(child, FlexiBertForMaskedLM):
        count += _linear(child.mlm_head.dense, parent.mlm_head.dense)
        count += _layer_norm(child.mlm_head.layer_norm, parent.mlm_head.layer_norm)
        count += _linear(child.mlm_head.decoder, parent.mlm_head.decoder)
    if isinstance(parent, FlexiBertForSequenceClassification) and isinstance(
        child, FlexiBertForSequenceClassification
    ):
        count += _linear(child.pooler, parent.pooler)
        if child.num_labels == parent.num_labels:
            count += _linear(child.classifier, parent.classifier)
    return count


def _find_encoder(model: nn.Module, role: str) -> FlexiBertEncoder:
    if isinstance(model, FlexiBertEncoder):
        return model
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, FlexiBertEncoder):
        return encoder
    raise TypeError(
        f"{role} model must be a FlexiBertEncoder or wrap one as `.encoder`, got {type(model).__name__}"
    )


def transfer_weights(
    parent_model: nn.Module,
    child_model: nn.Module,
    parent_spec=None,
    child_spec=None,
    mode: str = "ordered",
    seed: int = 0,
) -> float:
    """Copy parent weights into ``child_model`` in place (see the module docstring for the rules).

    Models are encoders from :func:`build_model` or MLM/classifier wrappers around them. Specs
    default to the models' own and, when given, must match them. ``mode`` is ``"ordered"`` or
    ``"random_projection"`` (also ``"OD"``/``"RP"``). Returns the fraction of the child's
    parameter elements that came from the parent.
    """
    key = str(mode).lower()
    if key not in _MODES:
        raise ValueError(f"unknown transfer mode {mode!r}; expected 'ordered' or 'random_projection'")
    parent, child = _find_encoder(parent_model, "parent"), _find_encoder(child_model, "child")
    for role, encoder, spec in (("parent", parent, parent_spec), ("child", child, child_spec)):
        if spec is not None and as_spec(spec) != encoder.spec:
            raise ValueError(f"{role}_spec does not describe the {role} model: {as_spec(spec)} vs {encoder.spec}")
    copied = _encoder(parent, child, _MODES[key], seed) + _wrapper_heads(parent_model, child_model)
    return copied / sum(p.numel() for p in child_model.parameters())


__all__ = ["transfer_weights"]
