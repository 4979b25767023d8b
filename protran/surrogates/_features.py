"""Feature matrices for surrogates, computed from architecture specs.

The analytic feature sets (``"embedding"``, ``"analytic"``, ``"both"``, ``"costs"``) and their columns
are defined once, in :mod:`flexibert.feature_table`; see there; they need no model. ``"costs+graph"``
(:data:`protran.vocabulary.COMPILED_FEATURE_SETS`) appends to the cost features what the runtime's
compiler makes of the architecture (``protran.compiled_graph_stats``: node count of the compiled
graph and its nodes by op group), so it needs the runtime the rows were measured with, and compiles
each architecture it has not seen once (seconds each; cached on disk). Here specs become matrices: specs of the
default design space are embedded and read through the cached vectorised table of the workload,
and any other architecture (a kernel size outside the space, say) through the same formulas one
architecture at a time. Both give the same numbers bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flexibert import InvalidArchitectureError, as_spec, embed
from flexibert.feature_table import COST_FEATURE_NAMES, feature_matrix, feature_table, spec_columns
from flexibert.feature_table import FEATURE_SETS as _TABLE_FEATURE_SETS
from flexibert.feature_table import feature_names as _table_feature_names
from protran._graphs import GRAPH_FEATURE_NAMES
from protran.vocabulary import COMPILED_FEATURE_SETS

#: Every feature set a surrogate can be fitted on: the analytic ones, then the compiled-graph ones.
FEATURE_SETS: tuple[str, ...] = (*_TABLE_FEATURE_SETS, *COMPILED_FEATURE_SETS)

__all__ = ["COST_FEATURE_NAMES", "FEATURE_SETS", "feature_names", "featurize"]


def _as_specs(specs) -> list:
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise TypeError("specs must be a sequence of ArchSpec or model_dict objects")
    return [as_spec(spec) for spec in specs]


def _embeddings(specs: list, required: bool) -> np.ndarray | None:
    """The default-space embeddings (rows, 37) of ``specs``; None when one is outside the space and
    the feature set does not need them (the error otherwise)."""
    try:
        return np.array([embed(spec) for spec in specs], dtype=np.int64).reshape(len(specs), -1)
    except InvalidArchitectureError:
        if required:
            raise
        return None


def feature_names(features: str = "embedding") -> list[str]:
    """Column names of :func:`featurize` for one feature set."""
    _check_feature_set(features)
    if features in COMPILED_FEATURE_SETS:
        return [*_table_feature_names("costs"), *GRAPH_FEATURE_NAMES]
    return _table_feature_names(features)


def featurize(specs, features: str = "embedding", batch_size: int = 1, seq_len: int = 128,
              runtime: str | None = None) -> np.ndarray:
    """Feature matrix (rows x columns) of ``specs`` (ArchSpecs or model_dicts) for one feature set.

    ``batch_size`` and ``seq_len`` describe the measured workload; they change the FLOP and memory
    terms of the ``analytic``/``costs`` sets and the compiled graphs of ``costs+graph``, which also
    needs ``runtime`` (a name ``protran.get_runtime`` accepts); the other sets ignore it.
    """
    _check_feature_set(features)
    specs = _as_specs(specs)
    if features in COMPILED_FEATURE_SETS and runtime is None:
        raise ValueError(f"feature set {features!r} describes the compiled graph of one runtime; give the runtime "
                         "the rows were measured with (runtime='onnxruntime', or a profile that records it)")
    if not specs:
        return np.empty((0, len(feature_names(features))))
    if features in COMPILED_FEATURE_SETS:
        from protran._graphs import graph_feature_matrix

        costs = featurize(specs, "costs", batch_size, seq_len)
        return np.hstack([costs, graph_feature_matrix(specs, str(runtime), batch_size, seq_len)])
    embeddings = _embeddings(specs, required=features in ("embedding", "both"))
    if features == "embedding":
        return feature_matrix(None, features, embeddings)
    if embeddings is None:
        columns = spec_columns(specs, batch_size, seq_len)
    else:
        columns = feature_table(None, batch_size, seq_len).columns(embeddings)
    return feature_matrix(columns, features, embeddings)


def _check_feature_set(features: str) -> None:
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; choose one of {FEATURE_SETS}")
