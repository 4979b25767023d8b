"""Feature matrices for surrogates, computed from architecture specs without building models.

Feature sets:

- ``"embedding"``: the 37-entry integer embedding (``flexibert.embed``), as floats. Models that need
  scaled inputs standardise them themselves; trees do not care.
- ``"analytic"``: ``flexibert``'s analytic feature vector (log10 parameters / FLOPs / activation
  bytes, layer, head and feed-forward counts) for the given batch size and sequence length.
- ``"both"``: embedding then analytic.
- ``"costs"``: linear-scale cost terms that can only add latency or energy: parameters (millions),
  GFLOPs, activation MB, layers, heads and the summed hidden width (which sizes the per-head
  relative-position tables and the per-layer norms). Made for the ``additive`` surrogate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

FEATURE_SETS = ("embedding", "analytic", "both", "costs")

COST_FEATURE_NAMES = (
    "params_millions",
    "gflops",
    "activation_mb",
    "num_layers",
    "total_heads",
    "total_hidden_size",
)


def _as_specs(specs) -> list:
    from flexibert._spec import as_spec

    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise TypeError("specs must be a sequence of ArchSpec or model_dict objects")
    return [as_spec(spec) for spec in specs]


def _embedding_rows(specs: list) -> np.ndarray:
    from flexibert import embed

    return np.array([embed(spec) for spec in specs], dtype=float).reshape(len(specs), -1)


def _analytic_rows(specs: list, batch_size: int, seq_len: int) -> np.ndarray:
    from flexibert._features import ANALYTIC_FEATURE_NAMES, analytic_feature_vector

    rows = [analytic_feature_vector(spec, batch_size, seq_len) for spec in specs]
    return np.array(rows, dtype=float).reshape(len(specs), len(ANALYTIC_FEATURE_NAMES))


def _cost_rows(specs: list, batch_size: int, seq_len: int) -> np.ndarray:
    from flexibert._features import analytic_features

    rows = []
    for spec in specs:
        counts = analytic_features(spec, batch_size, seq_len)
        rows.append([
            counts["params"] / 1e6,
            counts["flops"] / 1e9,
            counts["activation_bytes"] / 1e6,
            spec.num_layers,
            sum(layer.n_heads for layer in spec.layers),
            sum(spec.hidden_sizes),
        ])
    return np.array(rows, dtype=float).reshape(len(specs), len(COST_FEATURE_NAMES))


def feature_names(features: str = "embedding") -> list[str]:
    """Column names of :func:`featurize` for one feature set."""
    _check_feature_set(features)
    if features == "costs":
        return list(COST_FEATURE_NAMES)
    names: list[str] = []
    if features in ("embedding", "both"):
        from flexibert import DesignSpace

        names += [f"embedding_{i}" for i in range(DesignSpace.default().embedding_length)]
    if features in ("analytic", "both"):
        from flexibert._features import ANALYTIC_FEATURE_NAMES

        names += list(ANALYTIC_FEATURE_NAMES)
    return names


def featurize(specs, features: str = "embedding", batch_size: int = 1, seq_len: int = 128) -> np.ndarray:
    """Feature matrix (rows x columns) of ``specs`` (ArchSpecs or model_dicts) for one feature set.

    ``batch_size`` and ``seq_len`` describe the measured workload; they change the FLOP and memory
    terms of the ``analytic``/``costs`` sets only.
    """
    _check_feature_set(features)
    specs = _as_specs(specs)
    if not specs:
        return np.empty((0, len(feature_names(features))))
    if features == "costs":
        return _cost_rows(specs, batch_size, seq_len)
    blocks = []
    if features in ("embedding", "both"):
        blocks.append(_embedding_rows(specs))
    if features in ("analytic", "both"):
        blocks.append(_analytic_rows(specs, batch_size, seq_len))
    return np.hstack(blocks)


def _check_feature_set(features: str) -> None:
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; choose one of {FEATURE_SETS}")
