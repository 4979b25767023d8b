"""Integer embeddings of architectures, one at a time and as matrices.

An embedding (``1 + 3 * max_layers`` integers, 37 for FlexiBERT 2.0) indexes the layer count and,
per layer, the hidden size, feed-forward stack and attention multiset of a design space; slots past
the layer count are 0 (:func:`embed`, :func:`decode`, :func:`embedding_bounds`).

Searches work on matrices of embeddings, one row per architecture. They move rows freely (a
genetic step, a gradient step on normalised entries) and :func:`repair_embeddings` maps any real
matrix back to the nearest valid one; :func:`random_embeddings` draws a seeded uniform start.
"""

from __future__ import annotations

import functools

import numpy as np

from flexibert._embedding import decode, embed, embedding_bounds, is_valid_embedding
from flexibert._sampling import sample_architectures
from flexibert._space import DesignSpace

__all__ = ["decode", "embed", "embedding_bounds", "is_valid_embedding", "random_embeddings", "repair_embeddings"]


def repair_embeddings(X: np.ndarray, space: DesignSpace | None = None) -> np.ndarray:
    """Valid embeddings (n, embedding length) int64 nearest to any real matrix ``X`` of that shape:
    each entry rounded and clipped to its bounds, the layer count read from the first entry, every
    slot past it zeroed. Valid embeddings come back unchanged."""
    space = space or DesignSpace.default()
    bounds = np.array(embedding_bounds(space), dtype=np.int64)
    X = np.clip(np.rint(np.asarray(X, dtype=float)), bounds[:, 0], bounds[:, 1]).astype(np.int64)
    depths = np.array(space.encoder_layers)[X[:, 0]]
    X[np.arange(X.shape[1])[None, :] >= 1 + 3 * depths[:, None]] = 0
    return X


def random_embeddings(n: int, seed: int, space: DesignSpace | None = None) -> np.ndarray:
    """``n`` distinct architectures drawn uniformly (``sample_architectures(method="random")``), as
    embeddings (n, embedding length) int64. The same ``n``, ``seed`` and space give the same rows."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    # drawing checks every architecture's hash; searches ask for the same start again and again
    return _random_embeddings(space or DesignSpace.default(), n, int(seed)).copy()


@functools.lru_cache(maxsize=8)
def _random_embeddings(space: DesignSpace, n: int, seed: int) -> np.ndarray:
    specs = sample_architectures(n, method="random", seed=seed, space=space)
    return np.array([embed(spec, space) for spec in specs], dtype=np.int64)
