"""The co-design objective: weights, normalisation maxima and the performance P.

    P = alpha * a + beta * (1 - E) + gamma * (1 - W) + epsilon * (1 - T)

with ``a`` the accuracy, ``E`` the energy per sequence, ``W`` the peak power and ``T`` the latency per
sequence, each divided by its maximum (:class:`Maxima`) and clipped to [0, 1], so P lies in [0, 1].
The maxima are fixed before a search starts and shared by every method that is compared, so a P
means the same thing whichever method found it. A term whose weight is zero is not computed at all,
so a device without a power meter can still be searched when beta = gamma = 0.

Architectures that are invalid or break a constraint get :data:`P_MIN` (the least P possible) in the
surrogates' training set, which teaches them to avoid such regions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: The performance given to invalid or constraint-violating points (P never goes below it).
P_MIN = 0.0
#: How far the weights may sum from 1.
WEIGHT_TOLERANCE = 1e-6
#: The hardware measures of P, as named in predictions, and the weight that multiplies each.
HARDWARE_TERMS = {"energy_j": "beta", "peak_power_w": "gamma", "latency_s": "epsilon"}


@dataclass(frozen=True)
class Weights:
    """alpha (accuracy), beta (energy), gamma (peak power), epsilon (latency): non-negative, sum 1."""

    alpha: float
    beta: float
    gamma: float
    epsilon: float

    def __post_init__(self) -> None:
        values = self.as_dict()
        bad = {name: value for name, value in values.items()
               if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)}
        if bad:
            raise ValueError(f"weights must be finite numbers; got {bad}")
        negative = {name: value for name, value in values.items() if value < 0}
        if negative:
            listed = ", ".join(f"{name}={value:g}" for name, value in negative.items())
            raise ValueError(f"weights must not be negative; got {listed}")
        total = sum(values.values())
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            listed = " + ".join(f"{name} {value:g}" for name, value in values.items())
            raise ValueError(f"weights must sum to 1 (within {WEIGHT_TOLERANCE:g}); got {listed} = {total:.9g}")

    def as_dict(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "epsilon": self.epsilon}

    def of(self, measure: str) -> float:
        """The weight of a hardware measure ('latency_s', 'energy_j', 'peak_power_w') or 'accuracy'."""
        return self.alpha if measure == "accuracy" else getattr(self, HARDWARE_TERMS[measure])

    def needed_measures(self) -> list[str]:
        """Hardware measures with a non-zero weight (a device must predict each of them)."""
        return [measure for measure in HARDWARE_TERMS if self.of(measure) > 0]


@dataclass(frozen=True)
class Maxima:
    """The value of each measure that normalises to 1 (None: no data, the term cannot be used)."""

    accuracy: float
    latency_s: float | None
    energy_j: float | None
    peak_power_w: float | None

    def __post_init__(self) -> None:
        for name, value in self.as_dict().items():
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"the normalisation maximum of {name} must be a positive number, got {value!r}")

    def as_dict(self) -> dict[str, float | None]:
        return {"accuracy": self.accuracy, "latency_s": self.latency_s, "energy_j": self.energy_j,
                "peak_power_w": self.peak_power_w}

    def check(self, weights: Weights) -> None:
        missing = [m for m in weights.needed_measures() if getattr(self, m) is None]
        if missing:
            names = {m: HARDWARE_TERMS[m] for m in missing}
            listed = ", ".join(f"{m} (weight {w})" for m, w in names.items())
            raise ValueError(f"no profile has measurements of {listed}; set that weight to 0")


def term_names(weights: Weights) -> list[str]:
    """The measures whose terms enter P (a positive weight), accuracy first."""
    return (["accuracy"] if weights.alpha > 0 else []) + weights.needed_measures()


def term_weights(weights: Weights) -> np.ndarray:
    return np.array([weights.of(name) for name in term_names(weights)], dtype=float)


def normalised_terms(measures: Mapping[str, np.ndarray | None], weights: Weights, maxima: Maxima) -> np.ndarray:
    """The terms of P, one column per :func:`term_names` entry, each in [0, 1] (1 is best):
    accuracy / max, and 1 - value / max for the hardware measures."""
    columns = []
    for name in term_names(weights):
        values, maximum = measures.get(name), getattr(maxima, name)
        if values is None or maximum is None:
            raise ValueError(f"P needs {name} (weight {weights.of(name):g}) but it is not available")
        unit = np.clip(np.asarray(values, dtype=float) / maximum, 0.0, 1.0)
        columns.append(unit if name == "accuracy" else 1.0 - unit)
    n = len(np.asarray(measures["accuracy"]))
    return np.column_stack(columns) if columns else np.zeros((n, 0))


def performance(measures: Mapping[str, np.ndarray | None], weights: Weights, maxima: Maxima) -> np.ndarray:
    """P of each row of ``measures`` ({'accuracy', 'latency_s', 'energy_j', 'peak_power_w'}: arrays).

    A measure with weight zero may be None or absent; one with a positive weight must be given.
    """
    return normalised_terms(measures, weights, maxima) @ term_weights(weights)


def parse_weights(alpha: float, beta: float, gamma: float, epsilon: float) -> Weights:
    """:class:`Weights` from four numbers (raises ValueError with the reason)."""
    return Weights(float(alpha), float(beta), float(gamma), float(epsilon))
