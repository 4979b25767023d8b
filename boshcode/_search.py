"""The BOSHCODE loop (Algorithm 1 of the EdgeTran paper) and its modes.

Start from a seeded Latin-hypercube sample of pairs, EVALUATE them, then until the budget is spent
or the best performance has not improved for ``patience`` evaluations:

1. retrain the surrogates (NPN f, teacher g, student h; warm-started, early-stopped);
2. with probability ``unc_prob`` (alpha_P) query the candidate with the largest uncertainty
   k1 * sigma + k2 * xi; with probability ``div_prob`` (beta_P) query the random candidate farthest
   from everything evaluated (diversity); otherwise the GOBI step below (its queries keep the kind
   "gobi" even with ``n_starts`` 0, when the pool's UCB alone decides);
3. EVALUATE the query and add it to the data.

The networks read an architecture by its structure features (``CodesignProblem.arch_inputs``;
``inputs="embedding"``: by its normalised embedding, as in the paper, or ``"both"``).

GOBI step: a candidate pool (random valid pairs, mutations of the best pairs so far and those
architectures on every device) is scored by UCB on the surrogates; its best points start GOBI
(``boshcode._gobi``), which climbs the networks' continuous inputs. Each optimum is projected to a
valid pair: the nearest, in those inputs, among one- and two-gene mutants of its start (from the
embedding alone: its rounding), on the device it leans to most. The pair with the
highest UCB among the projected optima and the pool, not yet evaluated, is queried. An optimum whose
rounding is not itself a valid pair (slots past the layer count set, device not one-hot) is added to
the training data with P_MIN, so the surrogates learn to stay in the valid region.

Modes (:func:`codesign`): ``"codesign"`` searches every usable device; ``"hw_nas"`` one fixed device;
``"nas"`` maximises accuracy alone and then picks the best device for the most accurate architecture
(the device evaluations count towards the budget); ``"no_aleatoric"`` drops the aleatoric term
(k2 = 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from boshcode._gobi import GobiSettings, gobi
from boshcode._networks import SurrogateSet, TrainSettings
from boshcode._objective import DEFAULT_NORMALISATION, P_MIN, Weights, term_names, term_weights
from boshcode._oracle import Oracle
from boshcode._problem import CodesignProblem, Constraints, Evaluation, check_arch_inputs

MODES = ("codesign", "hw_nas", "nas", "no_aleatoric")
#: Evaluations (the initial sample included) of every method unless told otherwise.
DEFAULT_BUDGET = 100
#: How many stds of P the recommended pair's lower bound holds against it (``benchmarks/codesign_oracle.py``).
DEFAULT_RISK = 0.5
ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class SearchSettings:
    """Settings of the BOSHCODE loop; the defaults are the paper's where it gives them."""

    budget: int = DEFAULT_BUDGET
    n_initial: int = 16
    unc_prob: float = 0.1
    div_prob: float = 0.1
    k1: float = 0.5
    k2: float = 0.5
    patience: int | None = None
    tol: float = 1e-9
    # Three queries per refit of the surrogates: a third fewer refits than two, for the longer refits that
    # TrainSettings now gives (benchmarks/codesign_oracle.py --parts timing).
    queries_per_iteration: int = 3
    # GOBI climbs from the best n_starts pool points (the paper's default: on, e.g. 4). Off by default: on the
    # truth world of benchmarks/codesign_oracle.py ("boshcode-gobi") it did not raise the pair found and took
    # a third of the search's time; the pool's UCB decides.
    n_starts: int = 0
    pool_size: int = 1024
    n_parents: int = 4
    mutants_per_parent: int = 128
    diversity_pool: int = 256
    learn_invalid: bool = True
    # What the networks read of an architecture (ARCH_INPUTS; benchmarks/codesign_oracle.py compares
    # them); a GOBI optimum in structure features is projected to the nearest of this many mutants of its start.
    inputs: str = "structure"
    projection_mutants: int = 64
    time_limit_s: float | None = None
    seed: int = 0
    gobi: GobiSettings = field(default_factory=GobiSettings)
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        if self.budget < 1 or self.n_initial < 1:
            raise ValueError(f"budget and n_initial must be at least 1 (got {self.budget}, {self.n_initial})")
        if not (self.unc_prob >= 0 and self.div_prob >= 0 and self.unc_prob + self.div_prob <= 1):
            raise ValueError(f"unc_prob and div_prob must be probabilities summing to at most 1 "
                             f"(got {self.unc_prob}, {self.div_prob})")
        if self.k1 < 0 or self.k2 < 0:
            raise ValueError(f"k1 and k2 must not be negative (got {self.k1}, {self.k2})")
        check_arch_inputs(self.inputs)
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be at least 1 or None, got {self.patience}")


@dataclass
class SearchResult:
    """What a search found and how: ``history`` is the P of every evaluation, in order."""

    method: str
    best: Evaluation
    evaluations: list[Evaluation]
    elapsed_s: float
    kinds: list[str] = field(default_factory=list)
    stopped: str = "budget"
    n_invalid_rows: int = 0

    @property
    def history(self) -> list[float]:
        return [e.performance for e in self.evaluations]

    def best_so_far(self) -> np.ndarray:
        return np.maximum.accumulate(np.array(self.history)) if self.evaluations else np.empty(0)


def best_of(evaluations: list[Evaluation]) -> Evaluation:
    """The first evaluation with the highest P."""
    return max(evaluations, key=lambda e: e.performance)


def recommend(evaluations: list[Evaluation], risk: float = DEFAULT_RISK, top: int = 0) -> list[Evaluation]:
    """The pair to recommend and ``top`` alternatives: the evaluated pairs with the highest lower bound
    P - risk * std of P, best first, feasible ones before any that broke a constraint or failed.

    The pair with the highest *predicted* P is, among many candidates, the one whose prediction most
    likely errs upwards (the winner's curse); holding each pair's uncertainty against it prefers a pair
    nearly as good that the models are sure of. ``risk`` 0 gives the highest P.
    """
    if risk < 0:
        raise ValueError(f"risk must not be negative, got {risk}")
    ranked = sorted(evaluations, key=lambda e: (not e.feasible, -e.lower_bound(risk)))
    return ranked[: 1 + max(top, 0)]


# -- the data the surrogates learn from ----------------------------------------------------------------


class _TrainingData:
    def __init__(self, problem: CodesignProblem, arch_inputs: Callable[[np.ndarray], np.ndarray]) -> None:
        self.problem = problem
        self.arch_inputs = arch_inputs
        self.arch: list[np.ndarray] = []
        self.device: list[np.ndarray] = []
        self.terms: list[tuple[float, ...]] = []
        self.valid: list[bool] = []

    def add_evaluations(self, evaluations: list[Evaluation]) -> None:
        if not evaluations:
            return
        self.arch += list(self.arch_inputs(np.array([e.embedding for e in evaluations])))
        self.device += list(self.problem.encode_device(np.array([e.device for e in evaluations])))
        self.terms += [e.terms for e in evaluations]
        self.valid += [e.feasible for e in evaluations]

    def add_invalid(self, arch: np.ndarray, device: np.ndarray) -> None:
        """An input that is no valid pair: P_MIN (every term at its worst)."""
        self.arch.append(np.asarray(arch, dtype=float))
        self.device.append(np.asarray(device, dtype=float))
        self.terms.append(tuple(P_MIN for _ in range(self.problem.n_terms)))
        self.valid.append(False)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (np.array(self.arch), np.array(self.device), np.array(self.terms).reshape(len(self.arch), -1),
                np.array(self.valid))


# -- candidates ----------------------------------------------------------------------------------------


def candidate_pool(problem: CodesignProblem, evaluations: list[Evaluation], rng: np.random.Generator,
                   pool_size: int, n_parents: int, mutants_per_parent: int) -> tuple[np.ndarray, np.ndarray]:
    """Random valid pairs, one- and two-gene mutations of the best pairs so far (on their device or
    another), and the best architectures on every device; pairs already evaluated are left out."""
    X, d = problem.random_pairs(pool_size, rng)
    parts_X, parts_d = [X], [d]
    parents = sorted(evaluations, key=lambda e: -e.performance)[:n_parents]
    if parents and mutants_per_parent > 0:
        parent_X = np.repeat(np.array([e.embedding for e in parents]), mutants_per_parent, axis=0)
        parent_d = np.repeat(np.array([e.device for e in parents]), mutants_per_parent)
        changes = 1 + (rng.random(len(parent_X)) < 0.3)
        mutants = np.vstack([problem.mutate(parent_X[changes == k], rng, k) for k in (1, 2)])
        mutant_d = np.concatenate([parent_d[changes == k] for k in (1, 2)])
        moved = rng.random(len(mutant_d)) < 0.2
        mutant_d = np.where(moved, rng.integers(0, problem.n_devices, len(mutant_d)), mutant_d)
        every_device = np.repeat(np.array([e.embedding for e in parents]), problem.n_devices, axis=0)
        parts_X += [mutants, every_device]
        parts_d += [mutant_d, np.tile(np.arange(problem.n_devices), len(parents))]
    X, d = np.vstack(parts_X), np.concatenate(parts_d)
    X, index = np.unique(np.column_stack([X, d]), axis=0, return_index=True)
    X, d = X[np.argsort(index), :-1], X[np.argsort(index), -1]
    fresh = ~problem.seen(X, d)
    return X[fresh], d[fresh]


def _top_distinct(X: np.ndarray, key: np.ndarray, n: int, taken: set[bytes]) -> list[int]:
    """Indices of the ``n`` rows with the smallest ``key`` whose architectures differ from each other
    and from ``taken`` (updated), so one iteration's queries do not pile onto one architecture."""
    chosen = []
    for i in np.argsort(key, kind="stable"):
        arch = X[i].tobytes()
        if arch not in taken:
            taken.add(arch)
            chosen.append(int(i))
            if len(chosen) == n:
                break
    return chosen


# -- the loop ------------------------------------------------------------------------------------------


class BoshcodeSearch:
    """One run of the BOSHCODE loop on a problem (see the module docstring)."""

    def __init__(self, problem: CodesignProblem, settings: SearchSettings | None = None,
                 progress: ProgressCallback | None = None) -> None:
        self.problem = problem
        self.settings = settings or SearchSettings()
        self.progress = progress
        self.rng = np.random.default_rng(self.settings.seed)
        # Accuracy (the first term when alpha > 0) does not depend on the device: its outputs are
        # wired to the architecture alone, so every evaluation teaches it whatever the device.
        self.surrogates = SurrogateSet(problem.n_arch_inputs(self.settings.inputs), problem.n_devices,
                                       term_weights(problem.weights),
                                       seed=self.settings.seed, settings=self.settings.train,
                                       n_arch_only=int(problem.weights.alpha > 0),
                                       log_terms=np.array([name != "accuracy" and problem.normalise == "max"
                                                           for name in term_names(problem.weights)]))
        self.data = _TrainingData(problem, self.arch_inputs)
        # the embedding's entries come first in the inputs when the networks read it
        self.n_embedding_inputs = problem.arch_dim if self.settings.inputs != "structure" else 0
        self.evaluations: list[Evaluation] = []
        self.kinds: list[str] = []
        self.n_invalid_rows = 0

    def run(self, initial: tuple[np.ndarray, np.ndarray] | None = None) -> SearchResult:
        s = self.settings
        started = time.perf_counter()
        X, d = initial if initial is not None else self.problem.initial_pairs(min(s.n_initial, s.budget), s.seed)
        self._record(self.problem.evaluate(X[: s.budget], d[: s.budget]), "initial")
        stopped, stale, best = "budget", 0, best_of(self.evaluations).performance
        while len(self.evaluations) < s.budget:
            if s.time_limit_s is not None and time.perf_counter() - started > s.time_limit_s:
                stopped = "time"
                break
            X_new, d_new, kinds = self.next_query()
            self._record(self.problem.evaluate(X_new, d_new), kinds)
            current = best_of(self.evaluations).performance
            stale = 0 if current > best + s.tol else stale + len(X_new)
            best = max(best, current)
            if self.progress is not None:
                self.progress({"evaluations": len(self.evaluations), "budget": s.budget, "kinds": kinds,
                               "performance": self.evaluations[-1].performance, "best": best})
            if s.patience is not None and stale >= s.patience:
                stopped = "converged"
                break
        return SearchResult("boshcode", best_of(self.evaluations), list(self.evaluations),
                            time.perf_counter() - started, list(self.kinds), stopped, self.n_invalid_rows)

    def _record(self, evaluations: list[Evaluation], kinds: str | list[str]) -> None:
        self.evaluations += evaluations
        self.kinds += [kinds] * len(evaluations) if isinstance(kinds, str) else list(kinds)
        self.data.add_evaluations(evaluations)

    def next_query(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Retrain the surrogates and choose the next queries (``queries_per_iteration`` of them, each
        drawn as uncertainty, diversity or GOBI sampling); returns (embeddings, devices, kinds)."""
        s, p = self.settings, self.problem
        self.surrogates.fit(*self.data.arrays())
        n_queries = min(s.queries_per_iteration, s.budget - len(self.evaluations))
        draws = self.rng.random(n_queries)
        kinds = np.where(
            draws < s.unc_prob, "uncertainty", np.where(draws < s.unc_prob + s.div_prob, "diversity", "gobi")
        )
        X, d = self._pool()
        A = self.arch_inputs(X)  # the networks' inputs of the candidates, computed once per iteration
        chosen: list[int] = []
        taken: set[bytes] = set()
        n_gobi = int(np.sum(kinds == "gobi"))
        if n_gobi:
            X, d, A, ucb = self._gobi_candidates(X, d, A)
            chosen += _top_distinct(X, -ucb, n_gobi, taken)
        n_uncertain = int(np.sum(kinds == "uncertainty"))
        if n_uncertain:
            spread = self.surrogates.uncertainty_numpy(A, p.encode_device(d), s.k1, s.k2)
            chosen += _top_distinct(X, -spread, n_uncertain, taken)
        queries_X, queries_d = [X[chosen]], [d[chosen]]
        for _ in range(int(np.sum(kinds == "diversity"))):
            R, r = self._diversity_query(np.vstack(queries_X), np.concatenate(queries_d))
            queries_X.append(R)
            queries_d.append(r)
        order = [k for k in ("gobi", "uncertainty", "diversity") for _ in range(int(np.sum(kinds == k)))]
        return np.vstack(queries_X), np.concatenate(queries_d), order

    def _pool(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        X, d = candidate_pool(self.problem, self.evaluations, self.rng, s.pool_size, s.n_parents,
                              s.mutants_per_parent)
        if len(X) == 0:  # everything drawn was seen: fall back to fresh random pairs
            X, d = self.problem.random_pairs(s.pool_size, self.rng)
        return X, d

    def _diversity_query(self, pending_X: np.ndarray, pending_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The random pair farthest from everything evaluated or already chosen in this iteration."""
        p = self.problem
        X, d = p.random_pairs(self.settings.diversity_pool, self.rng)
        inputs = self.settings.inputs
        known = np.vstack([np.hstack(self.data.arrays()[:2]), p.encode(pending_X, pending_d, inputs)])
        distances = np.sqrt(((p.encode(X, d, inputs)[:, None, :] - known[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
        distances[p.seen(X, d)] = -1.0
        i = int(np.argmax(distances))
        return X[i: i + 1], d[i: i + 1]

    def arch_inputs(self, X: np.ndarray) -> np.ndarray:
        return self.problem.arch_inputs(X, self.settings.inputs)

    def _gobi_candidates(self, X: np.ndarray, d: np.ndarray,
                         A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The pool (``X``, ``d``, its architecture inputs ``A``) plus the projected GOBI optima started from
        its best points, with their inputs and UCB."""
        s, p = self.settings, self.problem
        pool_ucb = self.surrogates.acquisition_numpy(A, p.encode_device(d), s.k1, s.k2)
        starts = np.argsort(-pool_ucb)[: s.n_starts]
        if starts.size == 0:  # GOBI switched off: the pool alone
            return X, d, A, pool_ucb

        def acquisition(arch, device):
            return self.surrogates.acquisition(arch, device, s.k1, s.k2)

        n_embedding = self.n_embedding_inputs

        def unused(Z: np.ndarray) -> np.ndarray:  # slots past the layer count; never a feature
            mask = np.zeros(Z.shape, dtype=bool)
            mask[:, :n_embedding] = p.unused_slots(Z[:, :n_embedding])
            return mask

        z_arch, z_device, z_ucb = gobi(acquisition, A[starts], p.encode_device(d[starts]),
                                       s.gobi, seed=int(self.rng.integers(2**31)),
                                       fixed_device=p.n_devices == 1, unused=unused if n_embedding else None)
        if s.learn_invalid and n_embedding:
            self._learn_invalid(z_arch, z_device, z_ucb)
        G, g = self._project(z_arch, X[starts]), np.argmax(z_device, axis=1)
        fresh = ~p.seen(G, g)
        G, g = G[fresh], g[fresh]
        G_inputs = self.arch_inputs(G)
        gobi_ucb = self.surrogates.acquisition_numpy(G_inputs, p.encode_device(g), s.k1, s.k2)
        return (np.vstack([G, X]), np.concatenate([g, d]), np.vstack([G_inputs, A]),
                np.concatenate([gobi_ucb, pool_ucb]))

    def _project(self, z_arch: np.ndarray, start_X: np.ndarray) -> np.ndarray:
        """Valid embeddings for GOBI optima ``z_arch`` (in the networks' inputs) climbed from ``start_X``.

        From the embedding alone, the rounding. Structure features need not belong to any architecture,
        and no rounding maps them back: the nearest (in the inputs) of ``projection_mutants`` one- and
        two-gene mutants of the start (and of the rounding, when the embedding is read too) is the
        valid architecture that went furthest the way GOBI did.
        """
        p, s = self.problem, self.settings
        n_embedding = self.n_embedding_inputs
        rounded = p.project_arch(z_arch[:, :n_embedding]) if n_embedding else start_X
        if s.inputs == "embedding" or s.projection_mutants < 1:
            return rounded
        n, k = len(z_arch), s.projection_mutants
        parents = np.repeat(start_X, k, axis=0)
        two = self.rng.random(len(parents)) < 0.5
        mutants = parents.copy()
        for changes, rows in ((1, ~two), (2, two)):
            if rows.any():
                mutants[rows] = p.mutate(parents[rows], self.rng, changes)
        candidates = np.concatenate([rounded[:, None, :], mutants.reshape(n, k, -1)], axis=1)  # (n, k + 1, dim)
        inputs = self.arch_inputs(candidates.reshape(n * (k + 1), -1)).reshape(n, k + 1, -1)
        nearest = np.argmin(((inputs - z_arch[:, None, :]) ** 2).sum(axis=2), axis=1)
        return candidates[np.arange(n), nearest]

    def _learn_invalid(self, z_arch: np.ndarray, z_device: np.ndarray, z_ucb: np.ndarray) -> None:
        """Add the best GOBI optimum that is not itself a valid pair to the data with P_MIN."""
        p = self.problem
        one_hot = np.rint(np.clip(z_device, 0, 1))
        device_ok = one_hot.sum(axis=1) == 1
        invalid = ~(p.is_consistent(z_arch[:, : self.n_embedding_inputs]) & device_ok)
        if invalid.any():
            i = int(np.flatnonzero(invalid)[np.argmax(z_ucb[invalid])])
            self.data.add_invalid(z_arch[i], z_device[i])
            self.n_invalid_rows += 1


# -- entry points --------------------------------------------------------------------------------------


def make_problem(oracle: Oracle, weights: Weights, mode: str = "codesign", device: str | None = None,
                 constraints: Constraints | None = None, normalise: str = DEFAULT_NORMALISATION,
                 runtimes: Sequence[str] | None = None) -> CodesignProblem:
    """The problem a mode searches: every usable target (device under a runtime), or only ``device``
    for ``"hw_nas"``; ``runtimes`` keeps the targets under those runtimes."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if mode == "hw_nas" and device is None:
        raise ValueError("mode 'hw_nas' searches one fixed device: give device=")
    devices = [device] if device is not None else None
    return CodesignProblem(oracle, weights, devices=devices, constraints=constraints or Constraints(),
                           normalise=normalise, runtimes=runtimes)


def codesign(oracle: Oracle, weights: Weights, mode: str = "codesign", device: str | None = None,
             settings: SearchSettings | None = None, constraints: Constraints | None = None,
             progress: ProgressCallback | None = None, normalise: str = DEFAULT_NORMALISATION,
             problem: CodesignProblem | None = None,
             initial: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[SearchResult, CodesignProblem]:
    """Run BOSHCODE in one of :data:`MODES`; returns the result and the problem it was scored on.

    ``problem`` (made by :func:`make_problem` for this mode) and ``initial`` (the pairs to start from
    in place of the seeded sample) let a caller resume a search: see ``boshcode._state``.
    """
    settings = settings or SearchSettings()
    problem = problem or make_problem(oracle, weights, mode, device, constraints, normalise)
    if mode == "no_aleatoric":
        settings = replace(settings, k2=0.0)
    if mode != "nas":
        result = BoshcodeSearch(problem, settings, progress).run(initial)
        result.method = "boshcode" if mode == "codesign" else f"boshcode-{mode}"
        return result, problem
    return _vanilla_nas(oracle, problem, settings, progress), problem


def _vanilla_nas(oracle: Oracle, problem: CodesignProblem, settings: SearchSettings,
                 progress: ProgressCallback | None) -> SearchResult:
    """Search for accuracy alone (on one device: accuracy does not depend on it), then evaluate the
    most accurate architecture on every device and keep the pair with the highest P."""
    started = time.perf_counter()
    accuracy_only = CodesignProblem(oracle, Weights(1.0, 0.0, 0.0, 0.0), devices=problem.devices[:1],
                                    space=problem.space, normalise=problem.normalise)
    other_devices = np.arange(1, problem.n_devices)
    search_budget = max(1, settings.budget - other_devices.size)
    found = BoshcodeSearch(accuracy_only, replace(settings, budget=search_budget), progress).run()
    # Score the searched architectures with the real objective on the device they were searched on,
    # then the most accurate one on every other device.
    X = np.array([e.embedding for e in found.evaluations])
    evaluations = problem.evaluate(X, np.zeros(len(X), dtype=np.int64))
    on_devices = problem.evaluate(np.array([found.best.embedding] * other_devices.size), other_devices)
    searched = evaluations[found.evaluations.index(found.best)]
    choice = best_of([searched, *on_devices])
    return SearchResult("boshcode-nas", choice, evaluations + on_devices, time.perf_counter() - started,
                        found.kinds + ["device-selection"] * len(on_devices), found.stopped,
                        found.n_invalid_rows)
