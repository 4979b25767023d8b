"""Predicted Pareto frontiers of accuracy against latency, energy or peak power, per device.

For every device with a hardware profile (a ProTran ``dataset.json`` or a run store), the frontier is
the set of architectures of the whole design space that no other architecture beats on both
predicted accuracy (higher is better) and the predicted measure (lower is better).

Search (:func:`search_frontiers`): NSGA-II over the 37-integer embedding, seeded, with Deb's
constraint domination and pymoo's non-dominated sorting and crowding distance, in a numpy loop
(pymoo's own algorithm objects cost more per individual than the surrogates do). A device's measures
are searched together: one population per measure, all sharing every evaluation. Variation swaps
whole layers between parents and applies small semantic moves (one head's operation, the head
count, one feed-forward width or depth, a layer's width, two layers more or fewer); every candidate
is repaired into a valid architecture (indices clipped, slots past the layer count zeroed). The
start holds the device's measured architectures, the scored ones, a seeded random sample, and the
frontiers of predicted accuracy against parameters, FLOPs and activation memory together with the
most accurate architecture found (searched once and shared by every device: every hardware cost
grows with model size, and the costly end of every frontier is the most accurate architecture).
The frontier is taken from every architecture evaluated, not only the last population.

Models: :class:`protran.models.FittedModels` (accuracy and one hardware model per device and measure).
Reported values are its predictions for one architecture at a time (:meth:`FittedModels.predict`), so
``protran predict`` given the same inputs reproduces them exactly; the search itself scores whole
populations at once.

Hypervolume: objectives are normalised per device and measure with bounds fixed by the data, never
by the search: accuracy as ``(a_max - a) / (a_max - a_min)`` over the scores the accuracy model was
fitted on, the measure as ``(log v - log v_min) / (log v_max - log v_min)`` over the device's measured
values. The reference point is ``(1.1, 1.1)`` in those units (:data:`REFERENCE_POINT`); points beyond
it add nothing. The same rule holds for every device, measure and search length.

Constraints (:class:`protran.models.Constraints`) bound predicted means (latency, energy, peak power) and exact
properties (parameters, layers); they enter NSGA-II as inequality constraints, and every frontier
point satisfies them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexibert import ArchSpec, DesignSpace, InvalidArchitectureError, decode, embed
from flexibert.embeddings import random_embeddings, repair_embeddings
from flexibert.feature_table import feature_table
from protran._accuracy_model import structure_features_of_embeddings
from protran.models import MIN_ROWS_PER_MEASURE, Constraints, FittedModels
from protran.vocabulary import field_of

REFERENCE_POINT = (1.1, 1.1)

ProgressCallback = Callable[[dict[str, Any]], None]


# -- frontier -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontierPoint:
    """One architecture on a frontier with its predicted accuracy and measure (mean and std)."""

    spec: ArchSpec
    arch_hash: str
    accuracy: float
    accuracy_std: float
    value: float
    value_std: float
    #: True when the architecture lies outside the range of the scored ones (its accuracy is an extrapolation).
    extrapolated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"model_dict": self.spec.to_model_dict(), "hash": self.arch_hash, "accuracy": self.accuracy,
                "accuracy_std": self.accuracy_std, "extrapolated": self.extrapolated, "value": self.value,
                "value_std": self.value_std}


@dataclass(frozen=True)
class Frontier:
    """The predicted Pareto frontier of one target (a device under a runtime) and measure, cheapest
    point first. ``device`` is the target's label (``protran.models.target_label``); ``runtime`` the
    runtime its profile was measured with (None where unknown, as for the public boards)."""

    device: str
    measure: str
    hypervolume: float
    points: tuple[FrontierPoint, ...]
    evaluations: int = 0
    search_s: float = 0.0
    runtime: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "runtime": self.runtime, "measure": self.measure,
                "hypervolume": self.hypervolume, "points": [point.to_dict() for point in self.points]}


def is_non_dominated(Y: np.ndarray) -> np.ndarray:
    """True for the rows of ``Y`` (n, k), higher better in every column, that no other row dominates
    (at least as good everywhere, better somewhere); equal rows are all kept. O(n^2 k) memory-light
    enough for the few hundred points of a search; :func:`non_dominated` is the sorted 2-D case."""
    Y = np.asarray(Y, dtype=float).reshape(len(Y), -1)
    at_least = np.all(Y[:, None, :] >= Y[None, :, :], axis=2)
    better = np.any(Y[:, None, :] > Y[None, :, :], axis=2)
    return ~np.any(at_least & better, axis=0)  # [j, i]: row j dominates row i


def non_dominated(accuracy: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of the points that no other point beats (higher accuracy, lower value), one per
    distinct (accuracy, value) pair, sorted by increasing value: :func:`is_non_dominated` for two
    objectives in O(n log n), as the frontier searches call it on every generation."""
    accuracy, value = np.asarray(accuracy, dtype=float), np.asarray(value, dtype=float)
    order = np.lexsort((-accuracy, value))  # by value, then best accuracy first
    ordered = accuracy[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(ordered)[:-1]])
    return order[ordered > best_before].astype(np.int64)


def normalised_objectives(accuracy: np.ndarray, value: np.ndarray, accuracy_bounds: tuple[float, float],
                          value_bounds: tuple[float, float]) -> np.ndarray:
    """Both objectives to minimise, in the units of the hypervolume (module docstring)."""
    a_min, a_max = accuracy_bounds
    v_min, v_max = value_bounds
    log_span = math.log(v_max) - math.log(v_min) if v_max > v_min else 1.0
    return np.column_stack([
        (a_max - np.asarray(accuracy, dtype=float)) / (a_max - a_min),
        (np.log(np.asarray(value, dtype=float)) - math.log(v_min)) / log_span,
    ])


def hypervolume(accuracy: np.ndarray, value: np.ndarray, accuracy_bounds: tuple[float, float],
                value_bounds: tuple[float, float]) -> float:
    """Hypervolume of the points in normalised units against :data:`REFERENCE_POINT` (pymoo)."""
    from pymoo.indicators.hv import HV

    if len(accuracy) == 0:
        return 0.0
    objectives = normalised_objectives(accuracy, value, accuracy_bounds, value_bounds)
    return float(HV(ref_point=np.array(REFERENCE_POINT))(objectives))


# -- search -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSettings:
    """NSGA-II settings: population, generations, seed, and how many random architectures join the start."""

    pop_size: int = 300
    n_generations: int = 40
    seed: int = 0
    n_initial_samples: int = 64

    def __post_init__(self) -> None:
        for name in ("pop_size", "n_generations", "n_initial_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")


class _Evaluator:
    """Scores valid embeddings on one device: predicted accuracy, parameters, layers and measures."""

    def __init__(self, models: FittedModels, device: str, space: DesignSpace) -> None:
        from protran._accuracy import ACCURACY_BATCH_SIZE, ACCURACY_SEQ_LEN

        profile = models.profiles[device]
        self.accuracy_table = feature_table(space, ACCURACY_BATCH_SIZE, ACCURACY_SEQ_LEN)
        self.device_table = feature_table(space, profile.batch_size, profile.seq_len)
        self.models = models
        self.device = device
        self.space = space
        self.measures = models.measures(device)

    def evaluate(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(accuracy, params, layers, {measure: mean}) for each row of ``X``."""
        from protran.vocabulary import DEFAULT_FEATURES

        X = np.asarray(X, dtype=np.int64)
        columns = self.accuracy_table.columns(X)
        accuracy = self.models.accuracy_model.predict_features(
            structure_features_of_embeddings(X, self.space, columns))
        features = self.device_table.featurize(X, DEFAULT_FEATURES)
        measures = {m: self.models.hardware[self.device][m].predict(features) for m in self.measures}
        return accuracy, columns["params"], columns["num_layers"], measures


def _initial_embeddings(models: FittedModels, device: str, space: DesignSpace,
                        settings: SearchSettings) -> np.ndarray:
    """Start from what is known (measured and scored architectures), a seeded random sample, and
    the device-independent frontier of predicted accuracy against parameters."""
    rows = []
    for spec in [row.spec for row in models.profiles[device].rows] + list(models.accuracy_specs):
        try:
            rows.append(embed(spec, space))
        except InvalidArchitectureError:
            continue  # measured outside this design space
    rows = np.array(rows, dtype=np.int64).reshape(len(rows), space.embedding_length)
    sample = random_embeddings(settings.n_initial_samples, settings.seed, space)
    return np.unique(np.vstack([rows, sample, _size_frontier(models, space, settings)]), axis=0)


_SIZE_MEASURES = ("params", "flops", "activation_bytes")


def _size_frontier(models: FittedModels, space: DesignSpace, settings: SearchSettings) -> np.ndarray:
    """Embeddings on the frontiers of predicted accuracy against log parameters, log FLOPs and log
    activation memory (of one 128-token sequence), the most accurate one included.

    Every hardware cost grows with these sizes, so their frontiers, searched once per models and
    settings (one population each, sharing evaluations) and shared by every device and measure,
    start each device's search close to its own frontiers.
    """
    from protran._accuracy import ACCURACY_BATCH_SIZE, ACCURACY_SEQ_LEN

    cache = models.__dict__.setdefault("_size_frontiers", {})
    key = (space, settings)
    if key in cache:
        return cache[key]
    table = feature_table(space, ACCURACY_BATCH_SIZE, ACCURACY_SEQ_LEN)
    archive: list[tuple[np.ndarray, np.ndarray]] = []

    def evaluate(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        columns = table.columns(X)
        accuracy = models.accuracy_model.predict_features(structure_features_of_embeddings(X, space, columns))
        sizes = np.column_stack([np.log(columns[name].astype(float)) for name in _SIZE_MEASURES])
        archive.append((X, np.column_stack([accuracy, sizes])))
        # one population per size, and one that seeks accuracy alone: the frontiers' costly end
        # holds the most accurate architecture, which every device shares
        sizes = np.column_stack([sizes, np.zeros(len(X))])
        F = np.stack([np.column_stack([-accuracy, sizes[:, j]]) for j in range(sizes.shape[1])], axis=1)
        return F, np.zeros(len(X))

    _nsga2(evaluate, random_embeddings(settings.pop_size, settings.seed, space), space, settings,
           len(_SIZE_MEASURES) + 1)
    X = np.concatenate([x for x, _ in archive])
    values = np.concatenate([v for _, v in archive])
    fronts = [non_dominated(values[:, 0], values[:, j]) for j in range(1, values.shape[1])]
    cache[key] = np.unique(X[np.concatenate(fronts)], axis=0)
    return cache[key]


def _step(index: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One position up or down an ordered list of ``size`` choices; at either end, the only way."""
    step = rng.choice([-1, 1], size=len(index))
    step = np.where(index + step < 0, 1, np.where(index + step >= size, -1, step))
    return index + step if size > 1 else index


class _Moves:
    """Small semantic changes of architectures, applied to many embeddings at once.

    A move changes one thing a designer would change: one head's operation, the number of heads,
    one feed-forward width, the feed-forward depth, a layer's width, or the number of layers (new
    layers copy the last one). Plain index steps would be poor moves: neighbouring attention indices
    differ in their last head only, and a random attention index is a 12-head layer 85% of the time.
    Multisets of heads and feed-forward stacks are looked up by a numeric key, so every move is a
    few array operations on the whole population.
    """

    def __init__(self, space: DesignSpace) -> None:
        self.space = space
        self.depths = np.array(space.encoder_layers, dtype=np.int64)
        self.n_hidden = len(space.hidden_size)
        # attention multisets as head counts per operation type
        self.head_counts = np.array(space.attention_heads, dtype=np.int64)
        self.type_counts = np.array([[heads.count(op) for op in space.operation_types]
                                     for heads in space.attention_ops], dtype=np.int64)
        self._count_base = int(self.head_counts.max()) + 1
        self.att_keys, self.att_order = self._lookup(self._att_key(self.type_counts))
        # feed-forward stacks as width indices, padded with -1
        self.n_widths = len(space.feed_forward_dims)
        self.ff_depths = np.array(space.feed_forward_depth, dtype=np.int64)
        width_index = {w: i for i, w in enumerate(space.feed_forward_dims)}
        self.ff_widths = np.full((len(space.feed_forward_ops), max(space.feed_forward_depth)), -1, dtype=np.int64)
        for i, stack in enumerate(space.feed_forward_ops):
            self.ff_widths[i, :len(stack)] = [width_index[w] for w in stack]
        self.ff_keys, self.ff_order = self._lookup(self._ff_key(self.ff_widths))

    @staticmethod
    def _lookup(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(keys)
        return keys[order], order

    def _att_key(self, counts: np.ndarray) -> np.ndarray:
        return counts @ (self._count_base ** np.arange(counts.shape[1], dtype=np.int64))

    def _ff_key(self, widths: np.ndarray) -> np.ndarray:
        return (widths + 1) @ ((self.n_widths + 1) ** np.arange(widths.shape[1], dtype=np.int64))

    def _att_index(self, counts: np.ndarray) -> np.ndarray:
        return self.att_order[np.searchsorted(self.att_keys, self._att_key(counts))]

    def _ff_index(self, widths: np.ndarray) -> np.ndarray:
        return self.ff_order[np.searchsorted(self.ff_keys, self._ff_key(widths))]

    # -- single moves on a vector of gene values -----------------------------------------------

    def _pick_head(self, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One head per row, uniformly: the index of its operation type."""
        cumulative = np.cumsum(counts, axis=1)
        draw = rng.random(len(counts)) * cumulative[:, -1]
        return np.minimum((cumulative <= draw[:, None]).sum(axis=1), counts.shape[1] - 1)

    def swap_head(self, att: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        counts = self.type_counts[att].copy()
        rows = np.arange(len(att))
        old = self._pick_head(counts, rng)
        new = (old + rng.integers(1, counts.shape[1], size=len(att))) % counts.shape[1]
        counts[rows, old] -= 1
        counts[rows, new] += 1
        return self._att_index(counts)

    def resize_heads(self, att: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        counts = self.type_counts[att].copy()
        rows = np.arange(len(att))
        current = np.searchsorted(self.head_counts, counts.sum(axis=1))
        target = self.head_counts[_step(current, len(self.head_counts), rng)]
        while True:
            total = counts.sum(axis=1)
            change = np.sign(target - total)
            if not change.any():
                return self._att_index(counts)
            # remove a random head, or add a copy of a random head
            counts[rows, self._pick_head(counts, rng)] += change

    def step_width(self, ff: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        widths = self.ff_widths[ff].copy()
        rows = np.arange(len(ff))
        depth = (widths >= 0).sum(axis=1)
        position = (rng.random(len(ff)) * depth).astype(np.int64)
        widths[rows, position] = _step(widths[rows, position], self.n_widths, rng)
        return self._ff_index(widths)

    def resize_stack(self, ff: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        widths = self.ff_widths[ff].copy()
        rows = np.arange(len(ff))
        depth = (widths >= 0).sum(axis=1)
        target = self.ff_depths[_step(np.searchsorted(self.ff_depths, depth), len(self.ff_depths), rng)]
        last = widths[rows, depth - 1]
        for position in range(widths.shape[1]):
            grow = (position >= depth) & (position < target)
            widths[grow, position] = last[grow]
            widths[position >= target, position] = -1
        return self._ff_index(widths)

    def change_depth(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Two layers more (copies of the last layer) or fewer."""
        X = X.copy()
        rows = np.arange(len(X))
        layers = self.depths[X[:, 0]]
        target_index = _step(X[:, 0], len(self.depths), rng)
        target = self.depths[target_index]
        last = np.stack([X[rows, 3 * layers - 2 + k] for k in range(3)], axis=1)
        for slot in range(self.space.max_layers):
            grow = (slot >= layers) & (slot < target)
            X[grow, 1 + 3 * slot: 4 + 3 * slot] = last[grow]
            X[slot >= target, 1 + 3 * slot: 4 + 3 * slot] = 0
        X[:, 0] = target_index
        return X

    def mutate(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random move per row, on the depth or on a gene of a used layer slot."""
        X = np.asarray(X, dtype=np.int64).copy()
        layers = self.depths[X[:, 0]]
        gene = (rng.random(len(X)) * (1 + 3 * layers)).astype(np.int64)
        kind = np.where(gene == 0, 0, (gene - 1) % 3 + 1)  # 0 depth, 1 hidden, 2 feed-forward, 3 attention
        rows = np.flatnonzero(kind == 0)
        if len(rows):
            X[rows] = self.change_depth(X[rows], rng)
        rows = np.flatnonzero(kind == 1)
        X[rows, gene[rows]] = _step(X[rows, gene[rows]], self.n_hidden, rng)
        for kind_value, moves in ((2, (self.step_width, self.resize_stack)), (3, (self.swap_head, self.resize_heads))):
            rows = np.flatnonzero(kind == kind_value)
            which = rng.random(len(rows)) < 0.5
            for chosen, move in ((which, moves[0]), (~which, moves[1])):
                selected = rows[chosen]
                if len(selected):
                    X[selected, gene[selected]] = move(X[selected, gene[selected]], rng)
        return X


def _layer_crossover(first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform crossover of whole layers: each child takes every (width, feed-forward, attention)
    triple, and the depth, from one parent or the other."""
    swap = np.empty(first.shape, dtype=bool)
    swap[:, 0] = rng.random(len(first)) < 0.5
    swap[:, 1:] = np.repeat(rng.random((len(first), (first.shape[1] - 1) // 3)) < 0.5, 3, axis=1)
    return np.where(swap, second, first), np.where(swap, first, second)


def _survivors(F: np.ndarray, violation: np.ndarray, n_survive: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NSGA-II survival with Deb's constraint domination: feasible points by non-dominated front and
    crowding distance (pymoo's sorting and crowding), then infeasible ones by total violation.

    Returns the survivors' indices and every point's rank and crowding distance.
    """
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rank = np.full(len(F), np.iinfo(np.int64).max, dtype=np.int64)
    crowding = np.zeros(len(F))
    chosen: list[np.ndarray] = []
    feasible = np.flatnonzero(violation <= 0)
    level = 0
    if len(feasible):
        for front in NonDominatedSorting().do(F[feasible], n_stop_if_ranked=n_survive):
            members = feasible[front]
            distance = calc_crowding_distance(F[members])
            rank[members], crowding[members] = level, distance
            level += 1
            room = n_survive - sum(len(c) for c in chosen)
            if len(members) > room:
                chosen.append(members[np.argsort(-distance, kind="stable")[:room]])
                break
            chosen.append(members)
    room = n_survive - sum(len(c) for c in chosen)
    if room > 0:
        infeasible = np.flatnonzero(violation > 0)
        infeasible = infeasible[np.argsort(violation[infeasible], kind="stable")][:room]
        rank[infeasible] = level + np.arange(len(infeasible))
        chosen.append(infeasible)
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64), rank, crowding


def _binary_tournament(rank: np.ndarray, crowding: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` winners of random pairs: lower rank wins, then larger crowding distance, then a coin."""
    a, b = rng.integers(len(rank), size=(2, n))
    a_wins = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (
        (crowding[a] > crowding[b]) | ((crowding[a] == crowding[b]) & (rng.random(n) < 0.5))))
    return np.where(a_wins, a, b)


def _nsga2(
    evaluate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    initial: np.ndarray,
    space: DesignSpace,
    settings: SearchSettings,
    n_populations: int = 1,
    on_generation: Callable[[int, int], None] | None = None,
) -> None:
    """NSGA-II over embeddings, with ``n_populations`` populations that share every evaluation.

    ``evaluate(X) -> (F, violation)``: ``F[i, p]`` holds the two objectives (both minimised) of row
    ``i`` for population ``p``. Every generation each population breeds its children, all children
    are evaluated at once, and each population picks its survivors from its members and *all*
    children: populations chasing related objectives (latency and energy, say) hand each other
    good architectures. Every architecture is evaluated once (children equal to an evaluated one
    are moved again or dropped).
    """
    rng = np.random.default_rng(settings.seed)
    moves = _Moves(space)
    seen: set[bytes] = set()

    def fresh(X: np.ndarray) -> np.ndarray:
        X = np.unique(repair_embeddings(X, space), axis=0)
        keep = [i for i, row in enumerate(X) if row.tobytes() not in seen]
        seen.update(X[i].tobytes() for i in keep)
        return X[keep]

    pool_X = fresh(initial)
    pool_F, pool_violation = evaluate(pool_X)
    members = [np.zeros(0, dtype=np.int64) for _ in range(n_populations)]
    new = np.arange(len(pool_X))
    for generation in range(settings.n_generations):
        offspring = []
        for p in range(n_populations):
            candidates = np.concatenate([members[p], new])
            survivors, rank, crowding = _survivors(pool_F[candidates, p], pool_violation[candidates], settings.pop_size)
            members[p] = candidates[survivors]
            parents = members[p][_binary_tournament(rank[survivors], crowding[survivors],
                                                    2 * ((settings.pop_size + 1) // 2), rng)].reshape(2, -1)
            offspring.append(np.vstack(_layer_crossover(pool_X[parents[0]], pool_X[parents[1]], rng)))
        children = _mutate(moves, np.vstack(offspring), rng)
        for _ in range(3):  # children equal to an evaluated architecture get another move
            repeated = np.array([row.tobytes() in seen for row in children], dtype=bool)
            if not repeated.any():
                break
            children[repeated] = moves.mutate(children[repeated], rng)
        children = fresh(children)
        new = np.arange(len(pool_X), len(pool_X) + len(children))
        if len(children):
            child_F, child_violation = evaluate(children)
            pool_X = np.vstack([pool_X, children])
            pool_F = np.concatenate([pool_F, child_F])
            pool_violation = np.concatenate([pool_violation, child_violation])
        if on_generation is not None:
            on_generation(generation + 1, len(seen))


def _mutate(moves: _Moves, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One or more moves per row (geometric: half the rows get one, a quarter two, ...)."""
    X = np.asarray(X, dtype=np.int64).copy()
    count = rng.geometric(0.5, size=len(X))
    for round_ in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > round_)
        X[rows] = moves.mutate(X[rows], rng)
    return X


def search_frontiers(
    models: FittedModels,
    device: str,
    constraints: Constraints | None = None,
    settings: SearchSettings | None = None,
    progress: ProgressCallback | None = None,
    space: DesignSpace | None = None,
) -> list[Frontier]:
    """The predicted frontiers of accuracy against every modelled measure of ``device``.

    One NSGA-II population per measure; the populations share every evaluation (latency and energy
    frontiers hold many of the same architectures). A device's frontiers are always searched
    together, so each one is the same whichever measures a caller keeps. ``progress`` is called
    after every generation with ``{"device", "generation", "n_generations", "evaluations"}``.
    """
    import time

    started = time.perf_counter()
    constraints = constraints or Constraints()
    settings = settings or SearchSettings()
    space = space or DesignSpace.default()
    measures = models.measures(device)
    if not measures:
        raise ValueError(f"device '{device}' has no measure with at least {MIN_ROWS_PER_MEASURE} measured rows")
    constraints.check_measures(measures, device)
    if constraints.max_layers is not None and constraints.max_layers < min(space.encoder_layers):
        raise ValueError(f"--max-layers {constraints.max_layers}: the design space has no model with fewer than "
                         f"{min(space.encoder_layers)} layers")

    evaluator = _Evaluator(models, device, space)
    workload = models.workloads.get(device)
    runtime = workload.runtime if workload is not None else None
    accuracy_bounds = models.accuracy_bounds()
    value_bounds = {m: models.measure_bounds(device, m) for m in measures}
    archive: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (X, [accuracy, *measures], feasible)

    def evaluate(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        accuracy, params, layers, values = evaluator.evaluate(X)
        violation = np.maximum(constraints.violations(params, layers, values), 0.0).sum(axis=1)
        archive.append((X, np.column_stack([accuracy] + [values[m] for m in measures]), violation <= 0))
        F = np.stack([normalised_objectives(accuracy, values[m], accuracy_bounds, value_bounds[m]) for m in measures],
                     axis=1)
        return F, violation

    def on_generation(generation: int, evaluations: int) -> None:
        if progress is not None:
            progress({"device": device, "generation": generation, "n_generations": settings.n_generations,
                      "evaluations": evaluations})

    _nsga2(evaluate, _initial_embeddings(models, device, space, settings), space, settings, len(measures),
           on_generation)
    X, values, feasible = _archive_arrays(archive)
    frontiers = []
    for j, measure in enumerate(measures):
        points = _frontier_points(models, device, measure, constraints, X[feasible],
                                  values[feasible][:, [0, j + 1]], space)
        if not points:
            raise ValueError(f"no architecture found on '{device}' that meets the constraints "
                             f"({constraints.describe()}) after {len(X)} candidates; relax them")
        volume = hypervolume(np.array([p.accuracy for p in points]), np.array([p.value for p in points]),
                             accuracy_bounds, value_bounds[measure])
        frontiers.append(Frontier(device, measure, volume, tuple(points), evaluations=len(X),
                                  search_s=time.perf_counter() - started, runtime=runtime))
    return frontiers


def search_frontier(
    models: FittedModels,
    device: str,
    measure: str,
    constraints: Constraints | None = None,
    settings: SearchSettings | None = None,
    progress: ProgressCallback | None = None,
    space: DesignSpace | None = None,
) -> Frontier:
    """The frontier of one measure: :func:`search_frontiers` of the device, that measure's entry."""
    available = models.measures(device)
    if measure not in available:
        raise ValueError(f"device '{device}' has no {measure} model (measured: {', '.join(available) or 'none'})")
    frontiers = search_frontiers(models, device, constraints, settings, progress, space)
    return frontiers[available.index(measure)]


def _archive_arrays(archive: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.concatenate([x for x, _, _ in archive])
    values = np.concatenate([v for _, v, _ in archive])
    feasible = np.concatenate([f for _, _, f in archive])
    X, first = np.unique(X, axis=0, return_index=True)
    return X, values[first], feasible[first]


def _frontier_points(models: FittedModels, device: str, measure: str, constraints: Constraints, X: np.ndarray,
                     values: np.ndarray, space: DesignSpace) -> list[FrontierPoint]:
    """Non-dominated points among the feasible evaluated architectures, with their reported values
    recomputed one architecture at a time (constraints and the filter applied again to those)."""
    candidates = non_dominated(values[:, 0], values[:, 1])
    specs = [_decode(X[i].tobytes(), space) for i in candidates]
    rows = models.predict(specs, device)
    field_name = field_of(measure)
    accuracy = np.array([row["predicted"]["accuracy"]["mean"] for row in rows])
    predicted = {m: np.array([row["predicted"][field_of(m)]["mean"] for row in rows])
                 for m in models.measures(device)}
    params = np.array([_parameters(spec) for spec in specs], dtype=np.int64).reshape(len(specs))
    layers = np.array([spec.num_layers for spec in specs], dtype=np.int64).reshape(len(specs))
    feasible = np.all(constraints.violations(params, layers, predicted) <= 0, axis=1)
    kept = np.flatnonzero(feasible)[non_dominated(accuracy[feasible], predicted[measure][feasible])]
    return [
        FrontierPoint(specs[i], rows[i]["hash"], float(accuracy[i]), rows[i]["predicted"]["accuracy"]["std"],
                      rows[i]["predicted"][field_name]["mean"], rows[i]["predicted"][field_name]["std"],
                      rows[i]["predicted"]["accuracy"]["extrapolated"])
        for i in kept
    ]


@functools.lru_cache(maxsize=1 << 16)
def _decode(key: bytes, space: DesignSpace) -> ArchSpec:
    return decode(np.frombuffer(key, dtype=np.int64), space)


def _parameters(spec: ArchSpec) -> int:
    from flexibert import count_parameters

    return count_parameters(spec)
