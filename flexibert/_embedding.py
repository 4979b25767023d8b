"""The training-free integer embedding of an architecture and the reference model hash.

Embedding (length ``1 + 3 * max_layers``, 37 for FlexiBERT 2.0): ``e[0]`` is the *index* of the
layer count in ``space.encoder_layers``; for layer ``i``, ``e[3i+1]`` indexes ``space.hidden_size``,
``e[3i+2]`` indexes ``space.feed_forward_ops`` and ``e[3i+3]`` indexes ``space.attention_ops``.
Unused layer slots are 0.

Hash: a Weisfeiler-Lehman style md5 hash of the layer graph
(input -> heads -> add_norm -> ff... -> add_norm -> ... -> output, with residual edges), salted with
the hidden sizes and feed-forward widths. Both match the keys and ``embedding`` fields of the
public ProTran/EdgeTran datasets bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from flexibert._errors import InvalidArchitectureError
from flexibert._space import DesignSpace
from flexibert._spec import ArchSpec, LayerSpec

_HASH_ROUNDS = 5


@functools.lru_cache(maxsize=8)
def _index_tables(space: DesignSpace) -> tuple[dict, dict]:
    ff_index = {ops: i for i, ops in enumerate(space.feed_forward_ops)}
    att_index = {ops: i for i, ops in enumerate(space.attention_ops)}
    return ff_index, att_index


def embed(spec: ArchSpec, space: DesignSpace | None = None) -> list[int]:
    """The integer embedding of ``spec`` in ``space`` (default FlexiBERT 2.0: 37 ints)."""
    space = space or DesignSpace.default()
    space.validate(spec)
    ff_index, att_index = _index_tables(space)
    embedding = [0] * space.embedding_length
    embedding[0] = space.encoder_layers.index(spec.num_layers)
    for i, layer in enumerate(spec.layers):
        embedding[3 * i + 1] = space.hidden_size.index(layer.hidden_size)
        embedding[3 * i + 2] = ff_index[layer.ff_dims]
        embedding[3 * i + 3] = att_index[tuple(sorted(layer.ops, key=space.op_rank))]
    return embedding


def decode(embedding: Sequence[int], space: DesignSpace | None = None) -> ArchSpec:
    """Inverse of :func:`embed`. Raises InvalidArchitectureError for an invalid embedding."""
    space = space or DesignSpace.default()
    values = [int(v) for v in embedding]
    if len(values) != space.embedding_length:
        raise InvalidArchitectureError(
            f"embedding has {len(values)} entries, the design space needs {space.embedding_length}"
        )
    if not 0 <= values[0] < len(space.encoder_layers):
        raise InvalidArchitectureError(
            f"embedding[0] = {values[0]} is not a layer-count index in 0..{len(space.encoder_layers) - 1}"
        )
    num_layers = space.encoder_layers[values[0]]
    tail = values[1 + 3 * num_layers:]
    if any(tail):
        raise InvalidArchitectureError(
            f"embedding has non-zero entries past layer {num_layers} (positions {3 * num_layers + 1}..)"
        )
    bounds = (len(space.hidden_size), len(space.feed_forward_ops), len(space.attention_ops))
    names = ("hidden-size", "feed-forward", "attention")
    layers = []
    for i in range(num_layers):
        h_idx, f_idx, a_idx = values[3 * i + 1: 3 * i + 4]
        for value, bound, name, offset in zip((h_idx, f_idx, a_idx), bounds, names, (1, 2, 3)):
            if not 0 <= value < bound:
                raise InvalidArchitectureError(
                    f"layer {i}: embedding[{3 * i + offset}] = {value} is not a {name} index in 0..{bound - 1}"
                )
        layers.append(LayerSpec(space.hidden_size[h_idx], space.attention_ops[a_idx], space.feed_forward_ops[f_idx]))
    return ArchSpec(tuple(layers))


def is_valid_embedding(embedding: Sequence[int], space: DesignSpace | None = None) -> bool:
    try:
        decode(embedding, space)
    except InvalidArchitectureError:
        return False
    return True


def embedding_bounds(space: DesignSpace | None = None) -> list[tuple[int, int]]:
    """Inclusive (low, high) bounds of each embedding entry."""
    space = space or DesignSpace.default()
    per_layer = [
        (0, len(space.hidden_size) - 1),
        (0, len(space.feed_forward_ops) - 1),
        (0, len(space.attention_ops) - 1),
    ]
    return [(0, len(space.encoder_layers) - 1)] + per_layer * space.max_layers


# -- hash ---------------------------------------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _layer_graph(spec: ArchSpec) -> tuple[list[str], list[tuple[int, int]]]:
    labels = ["input"]
    edges: list[tuple[int, int]] = []
    layer_input = 0
    for layer in spec.layers:
        heads = list(range(len(labels), len(labels) + layer.n_heads))
        labels.extend(layer.op_strings)
        attention_norm = len(labels)
        labels.append("add_norm")
        edges += [(layer_input, h) for h in heads] + [(h, attention_norm) for h in heads]
        edges.append((layer_input, attention_norm))
        previous = attention_norm
        for dim in layer.ff_dims:
            labels.append(f"f{dim}")
            edges.append((previous, len(labels) - 1))
            previous = len(labels) - 1
        output_norm = len(labels)
        labels.append("add_norm")
        edges += [(previous, output_norm), (attention_norm, output_norm)]
        layer_input = output_norm
    labels.append("output")
    edges.append((layer_input, len(labels) - 1))
    return labels, edges


def model_hash(spec: ArchSpec) -> str:
    """The reference model hash (32 hex chars), as used for the keys of ProTran datasets."""
    labels, edges = _layer_graph(spec)
    count = len(labels)
    ins: list[list[int]] = [[] for _ in range(count)]
    outs: list[list[int]] = [[] for _ in range(count)]
    for src, dst in edges:
        outs[src].append(dst)
        ins[dst].append(src)
    hashes = [_md5(str((len(outs[v]), len(ins[v]), labels[v]))) for v in range(count)]
    for _ in range(_HASH_ROUNDS):
        hashes = [
            _md5(
                "".join(sorted(hashes[w] for w in ins[v])) + "|"
                + "".join(sorted(hashes[w] for w in outs[v])) + "|" + hashes[v]
            )
            for v in range(count)
        ]
    fingerprint = _md5(str(sorted(hashes)))
    model_dict = spec.to_model_dict()
    return _md5(fingerprint + str(model_dict["h"]) + str(model_dict["f"]))
