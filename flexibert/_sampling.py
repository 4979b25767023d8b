"""Seeded samplers over a design space, the shallow/deep x narrow/wide model type, and a diversity report.

Every sampler draws points in the unit cube ``[0, 1)^d`` (``d`` = embedding length), maps each
coordinate to an integer embedding entry and decodes it, zeroing the layer slots past the drawn depth.

Why ``stratify_heads`` is on by default: the attention entry indexes every multiset of head types,
and the 12-head multisets make up 18564 of the 21805 entries of FlexiBERT 2.0. Drawing that index
uniformly (as the reference sampler does) puts about 85% of layers at 12 heads. With stratification
the same coordinate first picks the head count uniformly and then the multiset inside that head
count's block, so narrow and wide layers are equally likely. A model is narrow only when *every*
layer is, so most multi-layer samples are still wide models; ``method="lhs_split"`` balances the
four model types (shallow/deep x narrow/wide) the way the reference seed set does.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from flexibert._embedding import decode, embed, embedding_bounds, model_hash
from flexibert._space import DesignSpace
from flexibert._spec import ArchSpec, as_spec
from flexibert.choices import MODEL_TYPES, SAMPLING_METHODS

# Drawing rounds allowed to top up duplicates before giving up (only tiny spaces get near it).
_MAX_TOP_UP_ROUNDS = 1000

Seed = int | np.random.Generator
PointSource = Callable[[int], np.ndarray]


# -- model type ---------------------------------------------------------------------------------


def narrow_limit(values: Sequence[int]) -> int:
    """Largest value a *shallow* or *narrow* model may have (see :func:`model_type`): the largest value of
    the lower half of a sorted choice list: 6 of 2..12 layers, 4 of 2/4/8/12 heads."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def model_type(spec: ArchSpec | dict, space: DesignSpace | None = None) -> str:
    """``'shallow_narrow'``, ``'shallow_wide'``, ``'deep_narrow'`` or ``'deep_wide'``.

    Deep: more layers than the lower half of ``space.encoder_layers`` (FlexiBERT 2.0: more than 6).
    Wide: some layer has more heads than the lower half of ``space.attention_heads`` (more than 4).
    This rule reproduces the ``model_type`` field of every row of the public ProTran/FlexiBERT data.
    """
    spec = as_spec(spec)
    space = space or DesignSpace.default()
    depth = "deep" if spec.num_layers > narrow_limit(space.encoder_layers) else "shallow"
    width = "wide" if max(spec.head_counts) > narrow_limit(space.attention_heads) else "narrow"
    return f"{depth}_{width}"


# -- mapping unit-cube points to embeddings -----------------------------------------------------


def _head_blocks(space: DesignSpace) -> list[tuple[int, int]]:
    """(first index, block size) of each head count's block in ``space.attention_ops``."""
    blocks, start = [], 0
    for n_heads in space.attention_heads:
        size = sum(1 for heads in space.attention_ops if len(heads) == n_heads)
        blocks.append((start, size))
        start += size
    return blocks


def _to_index(unit: np.ndarray, count: int) -> np.ndarray:
    """Map [0, 1) to 0..count-1 in equal-width bins."""
    return np.minimum((unit * count).astype(np.int64), count - 1)


def _attention_indices(unit: np.ndarray, blocks: list[tuple[int, int]], stratify: bool) -> np.ndarray:
    if not stratify:
        start, _ = blocks[0]
        total = blocks[-1][0] + blocks[-1][1] - start
        return start + _to_index(unit, total)
    # Whole part picks the head-count block, the fractional part the multiset inside it.
    scaled = unit * len(blocks)
    which = np.minimum(scaled.astype(np.int64), len(blocks) - 1)
    starts = np.array([start for start, _ in blocks])
    sizes = np.array([size for _, size in blocks])
    inside = np.minimum(((scaled - which) * sizes[which]).astype(np.int64), sizes[which] - 1)
    return starts[which] + inside


def _points_to_embeddings(
    points: np.ndarray, space: DesignSpace, blocks: list[tuple[int, int]], stratify: bool
) -> np.ndarray:
    """Integer embeddings (one row per point); slots past each row's depth are zero."""
    points = np.clip(np.asarray(points, dtype=float), 0.0, np.nextafter(1.0, 0.0))
    n_hidden, n_ff = len(space.hidden_size), len(space.feed_forward_ops)
    embeddings = np.zeros(points.shape, dtype=np.int64)
    embeddings[:, 0] = _to_index(points[:, 0], len(space.encoder_layers))
    embeddings[:, 1::3] = _to_index(points[:, 1::3], n_hidden)
    embeddings[:, 2::3] = _to_index(points[:, 2::3], n_ff)
    embeddings[:, 3::3] = _attention_indices(points[:, 3::3], blocks, stratify)
    depths = np.array(space.encoder_layers)[embeddings[:, 0]]
    used = 1 + 3 * depths
    embeddings[np.arange(space.embedding_length)[None, :] >= used[:, None]] = 0
    return embeddings


# -- point sources ------------------------------------------------------------------------------
# scipy.stats takes seconds to import, so it is imported only when a sampler runs.


def _engine_kwargs(engine: type, rng: np.random.Generator) -> dict:
    # scipy >= 1.15 takes `rng`; older releases take a Generator through `seed`.
    return {"rng": rng} if "rng" in inspect.signature(engine).parameters else {"seed": rng}


def _random_source(d: int, rng: np.random.Generator) -> PointSource:
    return lambda k: rng.random((k, d))


def _lhs_source(d: int, rng: np.random.Generator) -> PointSource:
    from scipy.stats import qmc

    # A fresh optimised Latin hypercube per call; top-up rounds get their own small design.
    kwargs = _engine_kwargs(qmc.LatinHypercube, rng)
    return lambda k: qmc.LatinHypercube(d, optimization="random-cd", **kwargs).random(k)


def _sequence_source(engine) -> PointSource:
    def draw(k: int) -> np.ndarray:
        with warnings.catch_warnings():
            # Sobol warns when k is not a power of two; the points are still valid, only less balanced.
            warnings.filterwarnings("ignore", message=".*balance properties.*", category=UserWarning)
            return engine.random(k)

    return draw


def _van_der_corput(index: int) -> float:
    """Base-2 radical inverse: 0, 1/2, 1/4, 3/4, 1/8, ..."""
    value, scale = 0.0, 0.5
    while index:
        value += scale * (index & 1)
        index >>= 1
        scale /= 2
    return value


def _hammersly_source(d: int, n: int, rng: np.random.Generator) -> PointSource:
    """First coordinate i/n, the others a scrambled Halton sequence in d-1 dimensions."""
    from scipy.stats import qmc

    halton = qmc.Halton(d - 1, scramble=True, **_engine_kwargs(qmc.Halton, rng))
    drawn = 0

    def draw(k: int) -> np.ndarray:
        nonlocal drawn
        index = np.arange(drawn, drawn + k)
        # Top-up rounds (after duplicates) shift the i/n lattice by 1/2, 1/4, 3/4, ... of a cell.
        offsets = np.array([_van_der_corput(int(r)) for r in index // n])
        drawn += k
        return np.column_stack([(index % n + offsets) / n, halton.random(k)])

    return draw


def _point_source(method: str, d: int, n: int, rng: np.random.Generator) -> PointSource:
    from scipy.stats import qmc

    if method == "random":
        return _random_source(d, rng)
    if method in ("lhs", "lhs_split"):
        return _lhs_source(d, rng)
    if method == "sobol":
        return _sequence_source(qmc.Sobol(d, scramble=True, **_engine_kwargs(qmc.Sobol, rng)))
    if method == "halton":
        return _sequence_source(qmc.Halton(d, scramble=True, **_engine_kwargs(qmc.Halton, rng)))
    if method == "hammersly":
        return _hammersly_source(d, n, rng)
    raise ValueError(f"unknown sampling method '{method}'; choose one of {list(SAMPLING_METHODS)}")


# -- public samplers ----------------------------------------------------------------------------


def _as_generator(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise TypeError(f"seed must be an int or a numpy.random.Generator, got {type(seed).__name__}")


def _split_blocks(space: DesignSpace) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Head-count blocks of narrow (lower half of head counts) and wide layers."""
    limit = narrow_limit(space.attention_heads)
    blocks = list(zip(space.attention_heads, _head_blocks(space)))
    narrow = sorted(block for heads, block in blocks if heads <= limit)
    wide = sorted(block for heads, block in blocks if heads > limit)
    if not wide:
        raise ValueError("method 'lhs_split' needs at least two head counts in the design space")
    return narrow, wide


def _count_architectures(space: DesignSpace, blocks: list[tuple[int, int]]) -> int:
    """Size of the part of ``space`` whose layers take their head types from ``blocks``."""
    per_layer = len(space.hidden_size) * len(space.feed_forward_ops) * sum(size for _, size in blocks)
    return sum(per_layer**layers for layers in space.encoder_layers)


def _contiguous(blocks: list[tuple[int, int]]) -> bool:
    return all(start + size == following for (start, size), (following, _) in zip(blocks, blocks[1:]))


def _draw_unique(
    sources: list[tuple[str, PointSource, list[tuple[int, int]]]],
    quotas: list[int],
    space: DesignSpace,
    stratify: bool,
) -> list[ArchSpec]:
    """Draw until every source has contributed its quota of architectures new to the sample."""
    specs: list[ArchSpec] = []
    seen: set[str] = set()
    for (kind, source, blocks), quota in zip(sources, quotas):
        taken = 0
        for _ in range(_MAX_TOP_UP_ROUNDS):
            if taken == quota:
                break
            embeddings = _points_to_embeddings(source(quota - taken), space, blocks, stratify)
            for row in embeddings:
                spec = decode(row, space)
                key = model_hash(spec)
                if key not in seen and taken < quota:
                    seen.add(key)
                    specs.append(spec)
                    taken += 1
        else:
            if taken < quota:
                raise ValueError(
                    f"could only draw {taken} distinct {kind}architectures out of {quota}; "
                    "the design space is too small"
                )
    return specs


def sample_architectures(
    n: int,
    method: str = "lhs",
    seed: Seed = 0,
    space: DesignSpace | None = None,
    stratify_heads: bool = True,
) -> list[ArchSpec]:
    """Draw ``n`` distinct architectures (by model hash) from ``space`` (default FlexiBERT 2.0).

    Methods: ``'random'`` (uniform), ``'lhs'`` (Latin hypercube, random-CD optimised), ``'lhs_split'``
    (half the points with only narrow layers, half with only wide layers, each half a Latin
    hypercube, as the reference seed set), ``'sobol'`` and ``'halton'`` (scrambled), ``'hammersly'``
    (first coordinate i/n, then a scrambled Halton sequence). ``stratify_heads`` picks each layer's
    head count uniformly before its head types (see the module docstring); ``False`` samples the
    attention index range uniformly, as the reference does. Duplicates are replaced by fresh points.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if method not in SAMPLING_METHODS:
        raise ValueError(f"unknown sampling method '{method}'; choose one of {list(SAMPLING_METHODS)}")
    space = space or DesignSpace.default()
    if n > space.size:
        raise ValueError(f"cannot draw {n} distinct architectures from a design space of {space.size}")
    rng = _as_generator(seed)
    d = space.embedding_length
    if method == "lhs_split":
        narrow, wide = _split_blocks(space)
        if not stratify_heads and not (_contiguous(narrow) and _contiguous(wide)):
            raise ValueError("method 'lhs_split' without stratify_heads needs head counts in ascending order")
        quotas = [n // 2, n - n // 2]
        for kind, quota, blocks in zip(("narrow", "wide"), quotas, (narrow, wide)):
            if quota > _count_architectures(space, blocks):
                raise ValueError(
                    f"cannot draw {quota} distinct {kind} architectures for 'lhs_split': the design space "
                    f"holds {_count_architectures(space, blocks)}"
                )
        sources = [
            (kind, _point_source(method, d, quota, rng), blocks)
            for kind, quota, blocks in zip(("narrow ", "wide "), quotas, (narrow, wide))
        ]
    else:
        sources, quotas = [("", _point_source(method, d, n, rng), _head_blocks(space))], [n]
    return _draw_unique(sources, quotas, space, stratify_heads)


# -- diversity ----------------------------------------------------------------------------------


def normalized_embeddings(specs: Sequence[ArchSpec], space: DesignSpace | None = None) -> np.ndarray:
    """Embeddings with each entry divided by its upper bound, so every entry lies in [0, 1]."""
    space = space or DesignSpace.default()
    upper = np.array([high for _, high in embedding_bounds(space)], dtype=float)
    upper[upper == 0] = 1.0
    return np.array([embed(as_spec(spec), space) for spec in specs], dtype=float) / upper


def diversity_report(specs: Sequence[ArchSpec], space: DesignSpace | None = None) -> dict:
    """Spread of a sample: pairwise Euclidean distances of normalised embeddings and model types.

    Returns ``n``, ``distances`` (the condensed array of all pairwise distances, for box plots),
    ``min``/``median``/``mean``/``max`` of it, ``model_types`` (count per shallow/deep x
    narrow/wide), ``layers`` (count per layer count) and ``heads`` (count of layers per head count).
    """
    space = space or DesignSpace.default()
    specs = [as_spec(spec) for spec in specs]
    if len(specs) < 2:
        raise ValueError(f"a diversity report needs at least 2 architectures, got {len(specs)}")
    from scipy.spatial.distance import pdist

    distances = pdist(normalized_embeddings(specs, space), metric="euclidean")
    types = dict.fromkeys(MODEL_TYPES, 0)
    for spec in specs:
        types[model_type(spec, space)] += 1
    layers = {count: sum(spec.num_layers == count for spec in specs) for count in space.encoder_layers}
    heads = {
        count: sum(layer_heads == count for spec in specs for layer_heads in spec.head_counts)
        for count in space.attention_heads
    }
    return {
        "n": len(specs),
        "distances": distances,
        "min": float(distances.min()),
        "median": float(np.median(distances)),
        "mean": float(distances.mean()),
        "max": float(distances.max()),
        "model_types": types,
        "layers": layers,
        "heads": heads,
    }
