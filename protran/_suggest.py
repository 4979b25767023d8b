"""Which architectures to train next: the accuracy analogue of the profiler's active learning.

A predicted frontier (:func:`protran.search_frontiers`) rests on predicted accuracies, and the
accuracy model (:mod:`protran._accuracy_model`) is unsure away from the architectures it was fitted
on. Given a budget of ``k`` more GLUE trainings, :func:`suggest_training` picks the architectures
whose scores are expected to raise the predicted frontiers the most.

Candidates
----------
Every point of every frontier given, and architectures near them: ``neighbours`` single moves of each
frontier point (the search's own moves: one head's operation, the head count, a feed-forward width
or depth, a layer's width, two layers more or fewer), kept when their optimistic accuracy, mean
plus :data:`OPTIMISM` standard deviations, would put them on at least one frontier. This is a small
local re-search around the frontiers, cheap beside the search itself, and it reaches the
near-frontier architectures that only their uncertainty keeps off it. Architectures already scored
are never candidates, and neither are architectures that break the constraints on a device (they
count for no frontier of that device).

The gain of a training
----------------------
Training an architecture replaces its predicted accuracy by a score: the predicted mean moves, and
its std falls to the model's *noise level*, the std it gives the architectures it was fitted on
(their median). Before the training the move of the mean is normal with variance
``std² - noise level²`` (the part of the predictive variance the training removes; an
architecture already known that well gains nothing). Its gain is the hypervolume it would then add
to a frontier, in the frontier's normalised units (:func:`protran._pareto.hypervolume`), summed over
every device and measure: the expected hypervolume improvement. A frontier point improves its
frontier when its score turns out higher than predicted; a neighbour, when it turns out high
enough to join.

Expectations are averages over a fixed, seeded set of ``n_samples`` joint draws of every
candidate's score, so a seed always gives the same suggestions. Draws start as independent
stratified normals (each architecture's are the normal quantiles at evenly spaced probabilities, in
a seeded order: less sampling noise than plain draws) and are then correlated: architectures one
move apart are nearly the same model, and their scores rise or fall together. The correlation is the posterior
of a Gaussian process fitted to the scored architectures on their standardised structure features
(:func:`protran.structure_features`), its white noise left out. Adding one point to a
two-objective front has a closed form (a sum over the steps of the front's staircase), computed for
every candidate and draw at once.

Picking ``k``
-------------
First a screen: each candidate's expected gain on its own has a closed form (per step of a
staircase, the expected shortfall of a normal below the step), and only the ``max_candidates``
best enter the picking. A candidate's gain given earlier picks never exceeds its gain alone, so one
left out could only have been picked once the picks' gains fell below the screen's cut.

Greedy: the candidate of largest expected gain is picked, and from then on its accuracy counts as
known (its std at the noise level): in every draw its drawn score joins the frontiers, so a later
candidate gains only where it beats that score too. A candidate close to a pick, in its measures or
in its structure (its draws follow the pick's), has little upside left, and the picks spread along
the frontiers instead of piling up in one region. The gain reported for a pick is its gain given
the earlier picks, so gains fall (hypervolume improvement has diminishing returns), and their sum
is the expected gain of training all ``k``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexibert import ArchSpec, DesignSpace, decode, embed, model_hash
from flexibert.embeddings import repair_embeddings
from protran._pareto import REFERENCE_POINT, Frontier, FrontierPoint, _Moves, normalised_objectives
from protran.models import Constraints, FittedModels
from protran.vocabulary import field_of

#: Draws per architecture for the expectations.
DEFAULT_SAMPLES = 128
#: Single moves tried around each frontier point.
DEFAULT_NEIGHBOURS = 8
#: Candidates (best by their own expected gain) that enter the greedy picking.
DEFAULT_MAX_CANDIDATES = 256
#: A neighbour is a candidate when its mean plus this many stds would put it on a frontier.
OPTIMISM = 2.0
# Upper bound on draws x candidates x staircase steps held at once (memory, not results).
_CHUNK_CELLS = 1 << 22


@dataclass(frozen=True)
class TrainingSuggestion:
    """One architecture to train, its predicted accuracy and the hypervolume its score is expected
    to add (given the suggestions before it)."""

    spec: ArchSpec
    arch_hash: str
    accuracy: float
    accuracy_std: float
    extrapolated: bool
    expected_gain: float

    def to_dict(self) -> dict[str, Any]:
        return {"hash": self.arch_hash, "model_dict": self.spec.to_model_dict(), "accuracy": self.accuracy,
                "accuracy_std": self.accuracy_std, "extrapolated": self.extrapolated,
                "expected_gain": self.expected_gain}


@dataclass
class _Candidates:
    """Architectures with their predicted accuracy and, per frontier, their normalised measure
    coordinate (infinite where the device's constraints rule them out)."""

    specs: list[ArchSpec]
    accuracy: np.ndarray
    std: np.ndarray
    extrapolated: np.ndarray
    coords: list[np.ndarray]
    hashes: list[str | None]

    def subset(self, rows: np.ndarray) -> _Candidates:
        return _Candidates([self.specs[i] for i in rows], self.accuracy[rows], self.std[rows],
                           self.extrapolated[rows], [c[rows] for c in self.coords], [self.hashes[i] for i in rows])


def suggest_training(
    models: FittedModels,
    frontiers: Sequence[Frontier],
    k: int,
    seed: int = 0,
    *,
    constraints: Constraints | None = None,
    scored: Collection[ArchSpec] | None = None,
    n_samples: int = DEFAULT_SAMPLES,
    neighbours: int = DEFAULT_NEIGHBOURS,
    noise_std: float | None = None,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    space: DesignSpace | None = None,
) -> list[TrainingSuggestion]:
    """The ``k`` architectures whose scores are expected to raise ``frontiers`` the most, in the
    order picked (fewer only when there are fewer candidates). See the module docstring.

    ``scored`` are the architectures that already have a score (default: those the accuracy model
    was fitted on); ``constraints`` those the frontiers were searched with; ``noise_std`` the std
    of an architecture once scored (default: the model's median std over its scored architectures);
    ``max_candidates`` how many, best on their own, enter the greedy picking (at least ``k``).
    """
    _check_count("k", k)
    _check_count("n_samples", n_samples)
    _check_count("max_candidates", max_candidates)
    if isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)) or neighbours < 0:
        raise ValueError(f"neighbours must be a non-negative int, got {neighbours!r}")
    if models.accuracy_model is None:
        raise ValueError("no accuracy model: fit the models with accuracy data")
    frontiers = list(frontiers)
    if not frontiers:
        raise ValueError("no frontiers to improve")
    space = space or DesignSpace.default()
    known = set(models.accuracy_specs if scored is None else scored)
    noise = _noise_level(models) if noise_std is None else float(noise_std)

    candidates = _candidates(models, frontiers, constraints or Constraints(), neighbours, seed, space)
    candidates = candidates.subset(np.array([i for i, spec in enumerate(candidates.specs) if spec not in known],
                                            dtype=np.int64))
    # the training reveals the part of the predictive std above the noise level
    revealed = np.sqrt(np.maximum(candidates.std ** 2 - noise ** 2, 0.0))
    # screen on each candidate's own expected gain (exact); ties go to the most uncertain
    alone = _expected_gain_alone(models, frontiers, candidates, revealed)
    order = np.lexsort((-revealed, -alone))[:max(max_candidates, k)]
    candidates, revealed = candidates.subset(order), revealed[order]
    # one joint draw of every candidate's score: similar architectures move together, so once one
    # is picked its neighbours' upside is mostly spent
    draws = _correlated(_stratified_normal(n_samples, len(candidates.specs), seed),
                        _correlation(models, candidates.specs))
    picks, gains = _greedy(models, frontiers, candidates, revealed, draws, k)
    return [_suggestion(candidates, i, gain) for i, gain in zip(picks, gains)]


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _noise_level(models: FittedModels) -> float:
    """The std the accuracy model gives the architectures it was fitted on (median): what any
    architecture's std would fall to once scored."""
    model = models.accuracy_model
    if model is None or not models.accuracy_specs:
        return 0.0
    _, std = model.predict(models.accuracy_specs, return_std=True)
    return float(np.median(std))


def _suggestion(candidates: _Candidates, i: int, gain: float) -> TrainingSuggestion:
    spec = candidates.specs[i]
    arch_hash = candidates.hashes[i] or model_hash(spec)
    return TrainingSuggestion(spec, arch_hash, float(candidates.accuracy[i]), float(candidates.std[i]),
                              bool(candidates.extrapolated[i]), float(gain))


# -- candidates ---------------------------------------------------------------------------------------


def _candidates(models: FittedModels, frontiers: list[Frontier], constraints: Constraints, neighbours: int,
                seed: int, space: DesignSpace) -> _Candidates:
    """Every frontier point, then the neighbours whose optimistic accuracy reaches a frontier."""
    points: dict[ArchSpec, FrontierPoint] = {}
    for frontier in frontiers:
        for point in frontier.points:
            points.setdefault(point.spec, point)
    candidates = _predict(models, frontiers, constraints,
                          list(points) + _neighbour_specs(list(points), neighbours, seed, space))
    _use_reported_values(models, frontiers, candidates, points)
    keep = _reaches_a_frontier(models, frontiers, candidates)
    keep[: len(points)] = True  # a frontier point is a candidate whatever its std
    return candidates.subset(np.flatnonzero(keep))


def _use_reported_values(models: FittedModels, frontiers: list[Frontier], candidates: _Candidates,
                         points: dict[ArchSpec, FrontierPoint]) -> None:
    """The frontier points (the first candidates) take the values their frontiers report, so each
    frontier's own points sit exactly on its staircase."""
    for i, point in enumerate(points.values()):
        candidates.accuracy[i], candidates.std[i] = point.accuracy, point.accuracy_std
        candidates.extrapolated[i], candidates.hashes[i] = point.extrapolated, point.arch_hash
    index = {spec: i for i, spec in enumerate(points)}
    for coords, frontier in zip(candidates.coords, frontiers):
        coords[[index[p.spec] for p in frontier.points]] = _frontier_coordinates(models, frontier)[1]


def _reaches_a_frontier(models: FittedModels, frontiers: list[Frontier], candidates: _Candidates) -> np.ndarray:
    """Whether each candidate's optimistic accuracy would add to at least one frontier."""
    optimistic = _accuracy_coordinate(models, candidates.accuracy + OPTIMISM * candidates.std)[None, :]
    reach = np.zeros(len(candidates.specs), dtype=bool)
    for coords, frontier in zip(candidates.coords, frontiers):
        base_a, base_v = _frontier_coordinates(models, frontier)
        reach |= _improvement(base_a[None, :], base_v, optimistic, coords)[0] > 0
    return reach


def _neighbour_specs(specs: list[ArchSpec], count: int, seed: int, space: DesignSpace) -> list[ArchSpec]:
    """Distinct single-move neighbours of ``specs`` (``count`` tries each), none of them in ``specs``."""
    if count == 0 or not specs:
        return []
    X = np.array([embed(spec, space) for spec in specs], dtype=np.int64)
    moved = _Moves(space).mutate(np.repeat(X, count, axis=0), np.random.default_rng(seed))
    moved = np.unique(repair_embeddings(moved, space), axis=0)
    given = set(specs)
    return [spec for spec in (decode(row, space) for row in moved) if spec not in given]


def _predict(models: FittedModels, frontiers: list[Frontier], constraints: Constraints,
             specs: list[ArchSpec]) -> _Candidates:
    """Batch predictions of every candidate on every device of ``frontiers``."""
    from flexibert import count_parameters

    params = np.array([count_parameters(s) for s in specs] if constraints.max_params is not None
                      else [0] * len(specs), dtype=np.int64)
    layers = np.array([spec.num_layers for spec in specs], dtype=np.int64)
    predicted = {device: models.predict_arrays(specs, device) for device in dict.fromkeys(f.device for f in frontiers)}
    accuracy = next(iter(predicted.values()))["accuracy"]
    assert accuracy is not None  # the models have an accuracy model (checked)
    coords = []
    for frontier in frontiers:
        means = {m: _mean(predicted[frontier.device], field_of(m)) for m in models.measures(frontier.device)}
        feasible = np.all(constraints.violations(params, layers, means) <= 0, axis=1)
        coords.append(np.where(feasible, _value_coordinate(models, frontier, means[frontier.measure]), np.inf))
    return _Candidates(list(specs), accuracy["mean"].copy(), accuracy["std"].copy(),
                       accuracy["extrapolated"].astype(bool), coords, [None] * len(specs))


def _mean(predicted: dict[str, dict[str, np.ndarray] | None], name: str) -> np.ndarray:
    values = predicted[name]
    assert values is not None  # a modelled measure of the device
    return values["mean"]


# -- coordinates --------------------------------------------------------------------------------------


def _accuracy_coordinate(models: FittedModels, accuracy: np.ndarray) -> np.ndarray:
    """Accuracy in the hypervolume's units (to minimise), by the hypervolume's own formula."""
    return normalised_objectives(accuracy, np.ones(len(accuracy)), models.accuracy_bounds(), (1.0, 1.0))[:, 0]


def _value_coordinate(models: FittedModels, frontier: Frontier, values: np.ndarray) -> np.ndarray:
    """A frontier's measure in the hypervolume's units."""
    bounds = models.measure_bounds(frontier.device, frontier.measure)
    return normalised_objectives(np.zeros(len(values)), values, (0.0, 1.0), bounds)[:, 1]


def _frontier_coordinates(models: FittedModels, frontier: Frontier) -> tuple[np.ndarray, np.ndarray]:
    accuracy = np.array([p.accuracy for p in frontier.points], dtype=float)
    values = np.array([p.value for p in frontier.points], dtype=float)
    return _accuracy_coordinate(models, accuracy), _value_coordinate(models, frontier, values)


# -- expected improvement ---------------------------------------------------------------------------------


def _stratified_normal(n_samples: int, n: int, seed: int) -> np.ndarray:
    """(n_samples, n) standard normal draws: each column the quantiles at (i + 0.5) / n_samples, in
    its own seeded order (each column's mean and spread nearly exact, the columns independent)."""
    from scipy.special import ndtri

    quantiles = ndtri((np.arange(n_samples) + 0.5) / n_samples)
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.permutation(quantiles) for _ in range(n)]) if n else np.zeros((n_samples, 0))


def _correlation(models: FittedModels, specs: list[ArchSpec]) -> np.ndarray:
    """Correlation of the candidates' true accuracies, from a Gaussian process (constant x RBF +
    white noise) fitted to the scored architectures' scores on their standardised structure
    features: the posterior covariance of the noise-free part, which is near 1 between
    architectures one move apart and falls with distance. Identity without scored architectures."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, WhiteKernel
    from sklearn.gaussian_process.kernels import ConstantKernel as Constant

    from protran._accuracy_model import structure_features

    scores = np.asarray(models.accuracy_scores, dtype=float)
    if len(scores) < 2 or np.ptp(scores) == 0 or not specs:
        return np.eye(len(specs))
    scored = structure_features(models.accuracy_specs)
    center, width = scored.mean(axis=0), scored.std(axis=0)
    width[width == 0] = 1.0
    white = WhiteKernel(0.1, (1e-3, 1e1))
    process = GaussianProcessRegressor(Constant(1.0, (1e-2, 1e2)) * RBF(10.0, (1e-1, 1e3)) + white,
                                       random_state=models.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a bound reached is an answer
        process.fit((scored - center) / width, (scores - scores.mean()) / scores.std())
    _, covariance = process.predict((structure_features(specs) - center) / width, return_cov=True)
    covariance -= process.kernel_.k2.noise_level * np.eye(len(specs))  # repeat noise is not shared
    scale = np.sqrt(np.maximum(np.diag(covariance), 1e-12))
    return np.clip(covariance / np.outer(scale, scale), -1.0, 1.0)


def _correlated(z: np.ndarray, correlation: np.ndarray) -> np.ndarray:
    """Rows of ``z`` (independent standard normals) turned into draws with ``correlation``
    (Cholesky, with as little jitter as the factorisation needs; unique, so reproducible)."""
    n = len(correlation)
    for jitter in (0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2):
        try:
            factor = np.linalg.cholesky(correlation + jitter * np.eye(n))
        except np.linalg.LinAlgError:
            continue
        return z @ factor.T / math.sqrt(1.0 + jitter)
    return z  # not reached for a correlation matrix: at 1e-2 jitter it is safely positive definite


def _staircase(base_a: np.ndarray, base_v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steps of a set of points against :data:`REFERENCE_POINT` (both objectives minimised):
    sorted by measure, the best accuracy so far. ``base_a`` (draws, m) and ``base_v`` (m,) are the
    set's coordinates, its measures shared by every draw; the set need not be non-dominated.

    Returns each step's height (draws, m + 1) and its lower and upper measure edge (m + 1,): the
    first step, left of every point, is the reference itself.
    """
    ref_a, ref_v = REFERENCE_POINT
    order = np.argsort(base_v, kind="stable")
    edges = np.minimum(base_v[order], ref_v)
    steps = np.minimum(np.minimum.accumulate(base_a[:, order], axis=1), ref_a) if len(order) else base_a
    heights = np.concatenate([np.full((len(base_a), 1), ref_a), steps], axis=1)
    return heights, np.concatenate([[-np.inf], edges]), np.concatenate([edges, [ref_v]])


def _widths(lower: np.ndarray, upper: np.ndarray, cand_v: np.ndarray) -> np.ndarray:
    """How much of each step lies right of each candidate (n, steps); none for a ruled-out one."""
    with np.errstate(invalid="ignore"):  # an infinite measure (ruled out) adds nothing
        widths = np.clip(upper[None, :] - np.maximum(lower[None, :], cand_v[:, None]), 0.0, None)
    return np.nan_to_num(widths, nan=0.0, posinf=0.0)


def _improvement(base_a: np.ndarray, base_v: np.ndarray, cand_a: np.ndarray, cand_v: np.ndarray) -> np.ndarray:
    """Hypervolume each candidate adds to each draw's set of points, shape (draws, candidates):
    on each step right of it, the step's width times how far below the step it lies. ``cand_a``
    (draws, n) and ``cand_v`` (n,) are the candidates' coordinates (:func:`_staircase` for the set's)."""
    heights, lower, upper = _staircase(base_a, base_v)
    result = np.zeros(cand_a.shape)
    chunk = max(1, _CHUNK_CELLS // (len(base_a) * len(lower)))
    for start in range(0, len(cand_v), chunk):
        part = slice(start, start + chunk)
        depth = np.clip(heights[:, None, :] - cand_a[:, part, None], 0.0, None)
        result[:, part] = np.einsum("dnj,nj->dn", depth, _widths(lower, upper, cand_v[part]))
    return result


def _expected_improvement(base_a: np.ndarray, base_v: np.ndarray, mean_a: np.ndarray, std_a: np.ndarray,
                          cand_v: np.ndarray) -> np.ndarray:
    """The expectation of :func:`_improvement` over one set (``base_a`` of shape (m,)) when each
    candidate's accuracy coordinate is normal (``mean_a``, ``std_a``): per step, the width times
    E[max(0, height - a)], in closed form."""
    from scipy.special import ndtr

    heights, lower, upper = _staircase(base_a[None, :], base_v)
    gap = heights[0][None, :] - mean_a[:, None]
    spread = np.where(std_a > 0, std_a, 1.0)[:, None]  # no spread: the improvement of the mean itself
    z = gap / spread
    expected = np.where(std_a[:, None] > 0, gap * ndtr(z) + spread * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi),
                        np.maximum(gap, 0.0))
    return (expected * _widths(lower, upper, cand_v)).sum(axis=1)


def _expected_gain_alone(models: FittedModels, frontiers: list[Frontier], candidates: _Candidates,
                         revealed: np.ndarray) -> np.ndarray:
    """Each candidate's expected gain on its own, summed over the frontiers (exact)."""
    low, high = models.accuracy_bounds()
    mean_a = _accuracy_coordinate(models, candidates.accuracy)
    gain = np.zeros(len(candidates.specs))
    for coords, frontier in zip(candidates.coords, frontiers):
        base_a, base_v = _frontier_coordinates(models, frontier)
        gain += _expected_improvement(base_a, base_v, mean_a, revealed / (high - low), coords)
    return gain


def _greedy(models: FittedModels, frontiers: list[Frontier], candidates: _Candidates, revealed: np.ndarray,
            draws: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """Pick up to ``k`` candidates one at a time by expected gain given the earlier picks."""
    n = len(candidates.specs)
    # each candidate's accuracy after training, per draw: the same on every device and measure
    drawn = _accuracy_coordinate(models, (candidates.accuracy[None, :] + revealed[None, :] * draws).ravel())
    drawn = drawn.reshape(draws.shape)
    sets = []
    for frontier in frontiers:
        base_a, base_v = _frontier_coordinates(models, frontier)
        sets.append((np.repeat(base_a[None, :], len(draws), axis=0), base_v))
    picks: list[int] = []
    gains: list[float] = []
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        gain = np.zeros(n)
        for (set_a, set_v), coords in zip(sets, candidates.coords):
            gain += _improvement(set_a, set_v, drawn, coords).mean(axis=0)
        best = int(np.argmax(np.where(available, gain, -np.inf)))
        picks.append(best)
        gains.append(max(float(gain[best]), 0.0))
        available[best] = False
        # from now on its accuracy is known: its drawn score joins every draw's frontiers
        sets = [(np.column_stack([set_a, drawn[:, best]]), np.append(set_v, coords[best]))
                for (set_a, set_v), coords in zip(sets, candidates.coords)]
    return picks, gains
