"""Surrogate models of hardware cost with predictive uncertainty, behind one contract.

Every surrogate follows the scikit-learn style ``fit(X, y, sample_weight=None) -> self`` and
``predict(X, return_std=False) -> mean`` or ``(mean, std)``, takes ``seed`` and ``log_target``, and
saves to a directory of JSON and NPZ files (``save(path)`` / :func:`load_surrogate`), never pickle.

>>> from protran.surrogates import featurize, make_surrogate
>>> X = featurize(specs, features="costs")                     # doctest: +SKIP
>>> model = make_surrogate("additive", seed=0).fit(X, latency_s)  # doctest: +SKIP
>>> mean, std = model.predict(X, return_std=True)              # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protran.surrogates._base import NotFittedError, Surrogate, read_header
from protran.surrogates._features import COST_FEATURE_NAMES, FEATURE_SETS, feature_names, featurize
from protran.surrogates._kernel import GaussianProcessSurrogate, SVRSurrogate
from protran.surrogates._linear import AdditiveCostSurrogate, AdditiveResidualGPSurrogate, BayesianRidgeSurrogate
from protran.surrogates._mlp import MLPEnsembleSurrogate
from protran.surrogates._trees import AdaBoostSurrogate, DecisionTreeSurrogate, GBDTEnsembleSurrogate

_REGISTRY: dict[str, type[Surrogate]] = {
    cls.name: cls
    for cls in (
        GBDTEnsembleSurrogate,
        AdaBoostSurrogate,
        DecisionTreeSurrogate,
        BayesianRidgeSurrogate,
        AdditiveCostSurrogate,
        AdditiveResidualGPSurrogate,
        GaussianProcessSurrogate,
        SVRSurrogate,
        MLPEnsembleSurrogate,
    )
}

SURROGATE_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def make_surrogate(name: str, seed: int = 0, **params: Any) -> Surrogate:
    """A fresh surrogate by name (see ``SURROGATE_NAMES``) with its hyper-parameters."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {SURROGATE_NAMES}")
    try:
        return _REGISTRY[name](seed=seed, **params)
    except TypeError as error:
        raise TypeError(f"surrogate {name!r}: {error}") from None


def load_surrogate(path: str | Path) -> Surrogate:
    """Load a surrogate written by ``Surrogate.save`` (JSON header, NPZ arrays; no pickle)."""
    header = read_header(path)
    name = header.get("name")
    if name not in _REGISTRY:
        raise ValueError(f"{path}: unknown surrogate {name!r}; this edgetran knows {SURROGATE_NAMES}")
    return _REGISTRY[name]._from_saved(header, Path(path))


__all__ = [
    "COST_FEATURE_NAMES",
    "FEATURE_SETS",
    "SURROGATE_NAMES",
    "AdaBoostSurrogate",
    "AdditiveCostSurrogate",
    "AdditiveResidualGPSurrogate",
    "BayesianRidgeSurrogate",
    "DecisionTreeSurrogate",
    "GBDTEnsembleSurrogate",
    "GaussianProcessSurrogate",
    "MLPEnsembleSurrogate",
    "NotFittedError",
    "SVRSurrogate",
    "Surrogate",
    "feature_names",
    "featurize",
    "load_surrogate",
    "make_surrogate",
]
