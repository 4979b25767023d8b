"""The co-design objective: weights, normalisation and the performance P.

    P = alpha * a + beta * e + gamma * w + epsilon * t

with ``a``, ``e``, ``w``, ``t`` the accuracy, energy per sequence, peak power and latency per sequence,
each mapped to [0, 1] (1 is best) with the bounds of the data (:class:`Bounds`: the smallest and largest
value of each measure) and clipped, so P lies in [0, 1]. Two normalisations:

- ``"max"`` (the EdgeTran paper's): a / a_max and 1 - v / v_max. One slow board makes v_max so large
  that every other device's hardware terms sit near 1, and beta, gamma, epsilon barely matter;
- ``"log"`` (the default): (a - a_min) / (a_max - a_min) and 1 - (log v - log v_min) / (log v_max - log
  v_min). Costs spread over orders of magnitude between devices, and a log scale gives every factor of
  two the same weight, on a GPU as on a board.

The bounds are fixed before a search starts and shared by every method compared, so a P means the
same thing whichever method found it. A term whose weight is zero is not computed at all, so a
device without a power meter can still be searched when beta = gamma = 0. The std of P follows from
the measures' stds to first order (:func:`performance_std`).

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
#: How each measure is mapped to [0, 1] (see the module docstring); "log" unless told otherwise.
NORMALISATIONS = ("max", "log")
DEFAULT_NORMALISATION = "log"
_TINY_SPAN = 1e-12
# A cost at or below zero (a predictor's undershoot) is read as this fraction of the smallest cost seen.
_LOG_FLOOR = 1e-3


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
class Bounds:
    """The smallest and largest value of each measure in the data, ``(min, max)`` (None: no data, the
    term cannot be used). Fixed before a search and shared by every method compared on one oracle."""

    accuracy: tuple[float, float]
    latency_s: tuple[float, float] | None = None
    energy_j: tuple[float, float] | None = None
    peak_power_w: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for name, pair in self.as_dict().items():
            if pair is None:
                if name == "accuracy":
                    raise ValueError("the bounds need accuracy: [min, max]")
                continue
            low, high = pair
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"the bounds of {name} must be two finite numbers, min <= max; got {list(pair)}")
            if name != "accuracy" and low <= 0:
                raise ValueError(f"the bounds of {name} must be positive (a cost), got {list(pair)}")
            if name == "accuracy" and high <= 0:
                raise ValueError(f"the largest accuracy must be positive, got {list(pair)}")

    def as_dict(self) -> dict[str, tuple[float, float] | None]:
        return {"accuracy": self.accuracy, "latency_s": self.latency_s, "energy_j": self.energy_j,
                "peak_power_w": self.peak_power_w}

    def to_json(self) -> dict[str, list[float] | None]:
        return {name: None if pair is None else [float(pair[0]), float(pair[1])]
                for name, pair in self.as_dict().items()}

    @classmethod
    def from_json(cls, data: object) -> Bounds:
        """Bounds from ``{"accuracy": [min, max], "latency_s": [min, max] | null, ...}`` (ValueError with
        the reason for anything else; measures left out count as null)."""
        if not isinstance(data, dict):
            raise ValueError(f"bounds must be an object of [min, max] pairs, got {type(data).__name__}")
        unknown = sorted(set(data) - set(MEASURE_NAMES))
        if unknown:
            raise ValueError(f"unknown measure(s) {unknown} in the bounds; known: {list(MEASURE_NAMES)}")
        pairs: dict[str, tuple[float, float] | None] = {}
        for name in MEASURE_NAMES:
            value = data.get(name)
            if value is None:
                pairs[name] = None
                continue
            if (not isinstance(value, (list, tuple)) or len(value) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ValueError(f"the bounds of {name} must be [min, max], got {value!r}")
            pairs[name] = (float(value[0]), float(value[1]))
        if pairs["accuracy"] is None:
            raise ValueError("the bounds need accuracy: [min, max]")
        return cls(**pairs)  # type: ignore[arg-type]

    def check(self, weights: Weights) -> None:
        missing = [m for m in weights.needed_measures() if getattr(self, m) is None]
        if missing:
            names = {m: HARDWARE_TERMS[m] for m in missing}
            listed = ", ".join(f"{m} (weight {w})" for m, w in names.items())
            raise ValueError(f"no profile has measurements of {listed}; set that weight to 0")


#: Every measure of P, accuracy first.
MEASURE_NAMES = ("accuracy", *HARDWARE_TERMS)


def check_normalisation(normalise: str) -> str:
    if normalise not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalise!r}; choose one of {NORMALISATIONS}")
    return normalise


def term_names(weights: Weights) -> list[str]:
    """The measures whose terms enter P (a positive weight), accuracy first."""
    return (["accuracy"] if weights.alpha > 0 else []) + weights.needed_measures()


def term_weights(weights: Weights) -> np.ndarray:
    return np.array([weights.of(name) for name in term_names(weights)], dtype=float)


def _unit(name: str, values: np.ndarray, pair: tuple[float, float], normalise: str) -> tuple[np.ndarray, np.ndarray]:
    """A measure mapped to [0, 1] (1 is best), unclipped, and the derivative of that map."""
    low, high = pair
    if normalise == "max":
        if name == "accuracy":
            return values / high, np.full_like(values, 1.0 / high)
        return 1.0 - values / high, np.full_like(values, -1.0 / high)
    if name == "accuracy":
        span = max(high - low, _TINY_SPAN)
        return (values - low) / span, np.full_like(values, 1.0 / span)
    log_span = max(math.log(high) - math.log(low), _TINY_SPAN)
    positive = np.maximum(values, low * _LOG_FLOOR)  # a cost at or below zero counts as the best seen
    return 1.0 - (np.log(positive) - math.log(low)) / log_span, -1.0 / (positive * log_span)


def normalised_terms(measures: Mapping[str, np.ndarray | None], weights: Weights, bounds: Bounds,
                     normalise: str = DEFAULT_NORMALISATION) -> np.ndarray:
    """The terms of P, one column per :func:`term_names` entry, each clipped to [0, 1] (1 is best).

    ``"max"``: accuracy / max, 1 - value / max for the hardware measures. ``"log"``: (a - min) / (max - min)
    for accuracy, 1 - (log v - log min) / (log max - log min) for the hardware measures.
    """
    check_normalisation(normalise)
    columns = []
    for name in term_names(weights):
        values, pair = measures.get(name), getattr(bounds, name)
        if values is None or pair is None:
            raise ValueError(f"P needs {name} (weight {weights.of(name):g}) but it is not available")
        unit, _ = _unit(name, np.asarray(values, dtype=float), pair, normalise)
        columns.append(np.clip(unit, 0.0, 1.0))
    n = len(np.asarray(measures["accuracy"]))
    return np.column_stack(columns) if columns else np.zeros((n, 0))


def term_stds(means: Mapping[str, np.ndarray | None], stds: Mapping[str, np.ndarray | None], weights: Weights,
              bounds: Bounds, normalise: str = DEFAULT_NORMALISATION) -> np.ndarray:
    """The std of each term of P (same columns as :func:`normalised_terms`) from the measures' stds, to
    first order (|d term / d value| * std). A missing std counts as 0 (a measured value). Each is capped
    at 0.5, half the range of a term: beyond that the linearisation says nothing useful."""
    check_normalisation(normalise)
    columns = []
    for name in term_names(weights):
        values, pair, spread = means.get(name), getattr(bounds, name), stds.get(name)
        if values is None or pair is None:
            raise ValueError(f"P needs {name} (weight {weights.of(name):g}) but it is not available")
        values = np.asarray(values, dtype=float)
        _, slope = _unit(name, values, pair, normalise)
        spread = np.zeros_like(values) if spread is None else np.nan_to_num(np.asarray(spread, dtype=float))
        columns.append(np.minimum(np.abs(slope) * np.abs(spread), 0.5))
    n = len(np.asarray(means["accuracy"]))
    return np.column_stack(columns) if columns else np.zeros((n, 0))


def performance(measures: Mapping[str, np.ndarray | None], weights: Weights, bounds: Bounds,
                normalise: str = DEFAULT_NORMALISATION) -> np.ndarray:
    """P of each row of ``measures`` ({'accuracy', 'latency_s', 'energy_j', 'peak_power_w'}: arrays).

    A measure with weight zero may be None or absent; one with a positive weight must be given.
    """
    return normalised_terms(measures, weights, bounds, normalise) @ term_weights(weights)


def performance_std(means: Mapping[str, np.ndarray | None], stds: Mapping[str, np.ndarray | None],
                    weights: Weights, bounds: Bounds, normalise: str = DEFAULT_NORMALISATION) -> np.ndarray:
    """The std of P from the terms' stds, the terms taken as independent: sqrt(sum w_i^2 s_i^2)."""
    return np.sqrt(term_stds(means, stds, weights, bounds, normalise) ** 2 @ term_weights(weights) ** 2)


def parse_weights(alpha: float, beta: float, gamma: float, epsilon: float) -> Weights:
    """:class:`Weights` from four numbers (raises ValueError with the reason)."""
    return Weights(float(alpha), float(beta), float(gamma), float(epsilon))
