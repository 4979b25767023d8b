"""Grow and prune operators on an :class:`~flexibert.ArchSpec` that keep children inside the design space.

The hidden width of a layer never changes, so only heads and feed-forward stacks move. Every child
is validated against the design space (head counts in ``attention_heads``, stack depths in
``feed_forward_depth``, widths in ``feed_forward_dims``):

``grow_attn_head``
    Raise the head count of one layer to the next allowed count (2 -> 4 -> 8 -> 12) by adding heads
    of one op type; the head dim ``hidden // heads`` shrinks accordingly. The new heads sit next to
    the existing heads of their type (canonical order).
``grow_ffnn``
    In one layer, either widen one stack position to the next allowed width (512 -> 1024) or, if the
    stack is shallower than the deepest allowed, append a position as wide as the current last one.
``prune_attn_head``
    Lower the head count of one layer to the next allowed count (12 -> 8 -> 4 -> 2), removing the
    heads with the smallest average weight magnitude.
``prune_ffnn``
    Take the stack position with the smallest mean absolute weight; narrow it to the next lower
    allowed width keeping its largest-magnitude units, or, when it is already at the smallest width
    and the stack has more than one position, drop it.

:func:`inherit_weights` gives a child its parent's weights: :func:`flexibert.transfer_weights`
first (embeddings, norms, MLM head, every unchanged block), then the changed layer is redone by
identity rather than position: each kept head takes the weights of the parent head it came from,
new heads keep their fresh initialisation, a narrowed position keeps its strongest units, an
appended position starts as the identity map, and a dropped position is bridged by the product of
the two linear maps around it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flexibert import (
    ArchSpec,
    DesignSpace,
    EncoderLayer,
    FlexiBertEncoder,
    InvalidArchitectureError,
    LayerSpec,
    copy_block,
    copy_head_weights,
    transfer_weights,
)

GROW_ATTENTION = "grow_attn_head"
GROW_FEED_FORWARD = "grow_ffnn"
PRUNE_ATTENTION = "prune_attn_head"
PRUNE_FEED_FORWARD = "prune_ffnn"
# The order in which the search cycles through the modes (the paper's Table IV).
MODES = (GROW_ATTENTION, GROW_FEED_FORWARD, PRUNE_ATTENTION, PRUNE_FEED_FORWARD)


@dataclass(frozen=True)
class Mutation:
    """One child architecture and how its changed ``layer`` maps onto the parent's.

    ``head_sources[j]`` is the parent head (index in the parent layer) that child head ``j`` comes
    from, or None for a new head. ``ff_change`` is ``(kind, position)`` with kind ``"widen"``,
    ``"append"``, ``"narrow"`` or ``"drop"`` (None: the stack is unchanged); ``ff_kept_units`` are
    the parent units a narrowed position keeps.
    """

    mode: str
    parent: ArchSpec
    child: ArchSpec
    layer: int
    description: str
    head_sources: tuple[int | None, ...]
    ff_change: tuple[str, int] | None = None
    ff_kept_units: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {"mode": self.mode, "layer": self.layer, "description": self.description}


# -- design-space steps --------------------------------------------------------------------------


def _next_allowed(values: Sequence[int], current: int, up: bool) -> int | None:
    ordered = sorted(values)
    candidates = [v for v in ordered if v > current] if up else [v for v in ordered if v < current]
    if not candidates:
        return None
    return candidates[0] if up else candidates[-1]


def _grown_head_count(space: DesignSpace, layer: LayerSpec) -> int | None:
    count = _next_allowed(space.attention_heads, layer.n_heads, up=True)
    return count if count is not None and count <= layer.hidden_size else None


def _checked(space: DesignSpace, spec: ArchSpec) -> ArchSpec:
    space.validate(spec)
    return spec


# -- attention heads ------------------------------------------------------------------------------


def growable_head_slots(spec: ArchSpec, space: DesignSpace) -> list[tuple[int, str]]:
    """Every (layer, op type) pair that :func:`grow_attention_heads` accepts, in layer then op order."""
    return [
        (index, op)
        for index, layer in enumerate(spec.layers)
        if _grown_head_count(space, layer) is not None
        for op in space.operation_types
    ]


def grow_attention_heads(spec: ArchSpec, layer: int, op_type: str, space: DesignSpace) -> Mutation:
    """Add heads of ``op_type`` to ``layer`` until it reaches the next allowed head count."""
    old = spec.layers[layer]
    if op_type not in space.operation_types:
        raise InvalidArchitectureError(f"operation '{op_type}' is not in {list(space.operation_types)}")
    count = _grown_head_count(space, old)
    if count is None:
        raise InvalidArchitectureError(
            f"layer {layer}: {old.n_heads} heads cannot grow within {list(space.attention_heads)}"
        )
    added = count - old.n_heads
    new = LayerSpec(old.hidden_size, old.ops + (op_type,) * added, old.ff_dims)
    # Tag parent heads with their index; new heads with None. Sorting by type is stable, so each
    # head keeps its place among heads of its type and new heads follow the existing ones.
    tagged = [(op, index) for index, op in enumerate(old.ops)] + [(op_type, None)] * added
    order = sorted(range(len(tagged)), key=lambda i: space.op_rank(tagged[i][0]))
    sources = tuple(tagged[i][1] for i in order)
    child = _checked(space, spec.replace_layer(layer, new))
    description = f"layer {layer}: +{added} {op_type} ({old.n_heads} -> {count} heads)"
    return Mutation(GROW_ATTENTION, spec, child, layer, description, sources)


def prune_attention_heads(spec: ArchSpec, layer: int, head_scores: Sequence[float], space: DesignSpace) -> Mutation:
    """Remove the lowest-scoring heads of ``layer`` down to the next lower allowed head count."""
    old = spec.layers[layer]
    if len(head_scores) != old.n_heads:
        raise ValueError(f"layer {layer} has {old.n_heads} heads but {len(head_scores)} scores were given")
    count = _next_allowed(space.attention_heads, old.n_heads, up=False)
    if count is None:
        raise InvalidArchitectureError(
            f"layer {layer}: {old.n_heads} heads cannot shrink within {list(space.attention_heads)}"
        )
    removed = set(np.argsort(np.asarray(head_scores, dtype=float), kind="stable")[: old.n_heads - count].tolist())
    kept = tuple(index for index in range(old.n_heads) if index not in removed)
    new = LayerSpec(old.hidden_size, tuple(old.ops[i] for i in kept), old.ff_dims)
    child = _checked(space, spec.replace_layer(layer, new))
    gone = ", ".join(f"{old.ops[i]}#{i}" for i in sorted(removed))
    description = f"layer {layer}: -{len(removed)} heads [{gone}] ({old.n_heads} -> {count} heads)"
    return Mutation(PRUNE_ATTENTION, spec, child, layer, description, kept)


# -- feed-forward stacks ----------------------------------------------------------------------------


def feed_forward_growths(spec: ArchSpec, space: DesignSpace) -> list[Mutation]:
    """Every one-step growth of a feed-forward stack: widen one position or append one."""
    growths = []
    for index, layer in enumerate(spec.layers):
        heads = tuple(range(layer.n_heads))
        for position, width in enumerate(layer.ff_dims):
            wider = _next_allowed(space.feed_forward_dims, width, up=True)
            if wider is None:
                continue
            dims = layer.ff_dims[:position] + (wider,) + layer.ff_dims[position + 1:]
            child = _checked(space, spec.replace_layer(index, LayerSpec(layer.hidden_size, layer.ops, dims)))
            description = f"layer {index}: widen ff[{position}] {width} -> {wider}"
            growths.append(Mutation(GROW_FEED_FORWARD, spec, child, index, description, heads, ("widen", position)))
        deeper = len(layer.ff_dims) + 1
        if deeper in space.feed_forward_depth:
            dims = layer.ff_dims + (layer.ff_dims[-1],)
            child = _checked(space, spec.replace_layer(index, LayerSpec(layer.hidden_size, layer.ops, dims)))
            description = f"layer {index}: append ff[{deeper - 1}] of {layer.ff_dims[-1]}"
            change = ("append", deeper - 1)
            growths.append(Mutation(GROW_FEED_FORWARD, spec, child, index, description, heads, change))
    return growths


def prune_feed_forward(
    spec: ArchSpec,
    position_scores: Sequence[Sequence[float]],
    unit_scores: Sequence[Sequence[np.ndarray]],
    space: DesignSpace,
    rank: int = 0,
) -> Mutation | None:
    """Shrink the ``rank``-th lowest-scoring prunable stack position (0 = the lowest).

    ``position_scores[i][k]`` scores position ``k`` of layer ``i`` (mean absolute weight);
    ``unit_scores[i][k]`` scores each of its units. Returns None when fewer positions can shrink.
    """
    candidates = []
    for index, layer in enumerate(spec.layers):
        for position, width in enumerate(layer.ff_dims):
            narrower = _next_allowed(space.feed_forward_dims, width, up=False)
            droppable = (len(layer.ff_dims) - 1) in space.feed_forward_depth
            if narrower is not None or droppable:
                candidates.append((float(position_scores[index][position]), index, position, narrower))
    candidates.sort(key=lambda item: item[:3])
    if rank >= len(candidates):
        return None
    _, index, position, narrower = candidates[rank]
    layer = spec.layers[index]
    heads = tuple(range(layer.n_heads))
    if narrower is not None:
        dims = layer.ff_dims[:position] + (narrower,) + layer.ff_dims[position + 1:]
        scores = np.asarray(unit_scores[index][position], dtype=float)
        keep = tuple(sorted(np.argsort(-scores, kind="stable")[:narrower].tolist()))
        child = _checked(space, spec.replace_layer(index, LayerSpec(layer.hidden_size, layer.ops, dims)))
        description = f"layer {index}: narrow ff[{position}] {layer.ff_dims[position]} -> {narrower}"
        return Mutation(PRUNE_FEED_FORWARD, spec, child, index, description, heads, ("narrow", position), keep)
    dims = layer.ff_dims[:position] + layer.ff_dims[position + 1:]
    child = _checked(space, spec.replace_layer(index, LayerSpec(layer.hidden_size, layer.ops, dims)))
    description = f"layer {index}: drop ff[{position}] of {layer.ff_dims[position]}"
    return Mutation(PRUNE_FEED_FORWARD, spec, child, index, description, heads, ("drop", position))


# -- scores from a trained model ------------------------------------------------------------------


def _encoder(model: nn.Module) -> FlexiBertEncoder:
    return model if isinstance(model, FlexiBertEncoder) else model.encoder


@torch.no_grad()
def head_magnitudes(model: nn.Module) -> list[list[float]]:
    """Per layer, per head: the mean over the head's weight tensors of their mean absolute value."""
    return [
        [float(np.mean([p.abs().mean().item() for p in head.parameters() if p.dim() >= 2])) for head in layer.heads]
        for layer in _encoder(model).layers
    ]


@torch.no_grad()
def feed_forward_magnitudes(model: nn.Module) -> tuple[list[list[float]], list[list[np.ndarray]]]:
    """Per stack position: mean |W| of the linear map producing it, and per-unit importance
    ``‖W_in[u, :]‖ · ‖W_out[:, u]‖`` (incoming row norm times outgoing column norm)."""
    positions, units = [], []
    for layer in _encoder(model).layers:
        linears = layer.feed_forward.linears
        positions.append([linears[k].weight.abs().mean().item() for k in range(len(linears) - 1)])
        units.append([
            (linears[k].weight.norm(dim=1) * linears[k + 1].weight.norm(dim=0)).numpy()
            for k in range(len(linears) - 1)
        ])
    return positions, units


def head_gradient_norms(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor]) -> list[list[float]]:
    """Per layer, per head: the L2 norm of the gradient of ``loss_fn(model)`` w.r.t. the head's parameters.

    Computed in eval mode: without dropout the norms are deterministic."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        loss_fn(model).backward()
        norms = [
            [
                float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in head.parameters() if p.grad is not None)))
                for head in layer.heads
            ]
            for layer in _encoder(model).layers
        ]
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return norms


# -- weight inheritance ---------------------------------------------------------------------------


@torch.no_grad()
def _redo_heads(dst: EncoderLayer, src: EncoderLayer, init: EncoderLayer, sources: Sequence[int | None]) -> None:
    d_dst, d_src = dst.spec.head_dim, src.spec.head_dim
    out_dst, out_src, out_init = dst.attention_output.weight, src.attention_output.weight, init.attention_output.weight
    for j, source in enumerate(sources):
        columns = (slice(None), slice(j * d_dst, (j + 1) * d_dst))
        if source is None:  # a new head: back to its own initialisation
            dst.heads[j].load_state_dict(init.heads[j].state_dict())
            out_dst[columns] = out_init[columns]
            continue
        copy_head_weights(dst.heads[j], src.heads[source], None)
        copy_block(out_dst, out_src, columns, (slice(None), slice(source * d_src, (source + 1) * d_src)))


@torch.no_grad()
def _redo_feed_forward(dst: EncoderLayer, src: EncoderLayer, mutation: Mutation) -> None:
    """Fix what positional transfer cannot know. Linear ``k`` of a stack maps into position ``k``;
    the last linear maps back to the hidden width."""
    if mutation.ff_change is None:
        return
    kind, position = mutation.ff_change
    lin_dst, lin_src = dst.feed_forward.linears, src.feed_forward.linears
    if kind == "append":
        # As wide as the position before it: the identity keeps the stack's function close to the
        # parent's (exact but for one more GELU). Linears before and after it transferred in place.
        lin_dst[position].weight.copy_(torch.eye(*lin_dst[position].weight.shape))
        lin_dst[position].bias.zero_()
    elif kind == "narrow":
        keep = torch.tensor(mutation.ff_kept_units)
        lin_dst[position].weight.copy_(lin_src[position].weight[keep])
        lin_dst[position].bias.copy_(lin_src[position].bias[keep])
        lin_dst[position + 1].weight.copy_(lin_src[position + 1].weight[:, keep])
    elif kind == "drop":
        # W_{p+1}(W_p x + b_p) + b_{p+1}: the two maps around the dropped position, merged (its GELU
        # is lost); later linears shift down by one.
        w_in, b_in = lin_src[position].weight, lin_src[position].bias
        w_out, b_out = lin_src[position + 1].weight, lin_src[position + 1].bias
        lin_dst[position].weight.copy_(w_out @ w_in)
        lin_dst[position].bias.copy_(w_out @ b_in + b_out)
        for k in range(position + 1, len(lin_dst)):
            lin_dst[k].load_state_dict(lin_src[k + 1].state_dict())
    # "widen": positional transfer already copies the old units; the new ones keep their init.


def inherit_weights(
    parent_model: nn.Module,
    child_model: nn.Module,
    mutation: Mutation,
    mode: str = "ordered",
    seed: int = 0,
) -> float:
    """Give ``child_model`` (freshly initialised) its parent's weights; returns the fraction of
    the child's parameter elements :func:`flexibert.transfer_weights` wrote.

    ``mode`` is the transfer mode (``"ordered"`` or ``"random_projection"``). Grow and prune never
    change a hidden width, and the two modes differ only where widths differ, so here they agree.
    """
    parent, child = _encoder(parent_model), _encoder(child_model)
    if parent.spec != mutation.parent or child.spec != mutation.child:
        raise ValueError("the models do not match the mutation's parent and child architectures")
    index = mutation.layer
    init = copy.deepcopy(child.layers[index])
    fraction = transfer_weights(parent_model, child_model, mode=mode, seed=seed)
    _redo_heads(child.layers[index], parent.layers[index], init, mutation.head_sources)
    _redo_feed_forward(child.layers[index], parent.layers[index], mutation)
    return fraction


__all__ = [
    "GROW_ATTENTION",
    "GROW_FEED_FORWARD",
    "MODES",
    "PRUNE_ATTENTION",
    "PRUNE_FEED_FORWARD",
    "Mutation",
    "feed_forward_growths",
    "feed_forward_magnitudes",
    "grow_attention_heads",
    "growable_head_slots",
    "head_gradient_norms",
    "head_magnitudes",
    "inherit_weights",
    "prune_attention_heads",
    "prune_feed_forward",
]
