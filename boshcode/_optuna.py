"""Optuna's samplers as black-box baselines, on the same problem, oracle, budget and initial sample as
BOSHCODE and the other baselines (:func:`boshcode._baselines.run_baseline` dispatches here).

- ``"optuna-tpe"``: the Tree-structured Parzen Estimator (``TPESampler``) on P;
- ``"optuna-gp"``: Optuna's Gaussian-process Bayesian optimisation (``GPSampler``, log expected
  improvement) on P;
- ``"optuna-nsga2"``: the genetic algorithm NSGA-II (``NSGAIISampler``) on P, as a single objective;
- ``"optuna-tpe-mo"``, ``"optuna-nsga2-mo"``: TPE and NSGA-II maximising every term of P separately
  (accuracy, energy, peak power, latency: one objective per term with a positive weight). The search
  knows nothing of the weights; at the end the Pareto set of the evaluated pairs is scalarised by
  them: the result is the non-dominated pair with the highest P.

There is no ``"optuna-gp-mo"``: Optuna 5.1's GPSampler does support several objectives (log expected
hypervolume improvement), but with the four terms of P a trial took 10 to 60 s on a two-core machine,
far from the second a trial the other methods take.

Search space. Optuna's samplers model the parameters that every trial has, so the space is static
and flat: ``device`` (categorical over the device indices), ``layers`` (the layer-count index) and,
for every layer slot ``k`` up to the deepest model, ``hidden_k``, ``ff_k`` and ``attention_k`` (the
indices of the embedding, each an int between 0 and its upper bound). A conditional space (a slot's
parameters only when it is used) would leave the samplers modelling only the few parameters all
trials share. A sampled point therefore carries values for unused slots, and ``repair_embeddings``
zeroes them: every trial decodes to a valid pair. For the Gaussian process the ints with more than
16 values (the feed-forward and attention indices: 258 and 21805 values in FlexiBERT 2.0) are floats
over the same range, rounded by the repair: Optuna optimises its acquisition over such an int by a
line search through its values, parameter by parameter, which cost about 30 s a trial here, against
about 1 s for the continuous relaxation (the one the scikit-learn ``"gpr"`` baseline also uses).

Duplicates. The repair maps many points to one pair, and the samplers propose pairs again. The
budget counts oracle calls, so a pair is evaluated once: a trial that lands on an evaluated pair is
told that pair's value (the problem keeps every answer, asking again is free) and does not count.
After ``MAX_TRIALS_PER_EVALUATION`` times the budget in trials without filling it (a sampler stuck on
a small space), the rest of the budget is filled with random unseen pairs (kind ``"random"``); a
space with fewer pairs than the budget stops when every pair has been evaluated (``stopped`` is
``"exhausted"``).

The initial sample is enqueued (``study.enqueue_trial``) and told first, so every sampler starts from
the pairs every other method starts from, and TPE and the GP model from the first trial after it
(``n_startup_trials`` is its size). The samplers are seeded and otherwise keep Optuna's defaults:
NSGA-II's population of 50 makes a budget of 100 about two generations, the first one random apart
from the initial sample. Infeasible pairs are told like any other (P is P_MIN; their terms as predicted).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from boshcode._problem import CodesignProblem, Evaluation
from boshcode._search import SearchResult, best_of
from flexibert.embeddings import repair_embeddings
from protran import is_non_dominated

if TYPE_CHECKING:
    import optuna

    from boshcode._baselines import BaselineSettings

#: The single-objective methods (on P) and the multi-objective ones (on the terms of P).
SINGLE_OBJECTIVE = ("optuna-tpe", "optuna-gp", "optuna-nsga2")
MULTI_OBJECTIVE = ("optuna-tpe-mo", "optuna-nsga2-mo")
OPTUNA_BASELINES = SINGLE_OBJECTIVE + MULTI_OBJECTIVE
#: Trials (duplicates included) per budgeted evaluation before the rest is filled at random.
MAX_TRIALS_PER_EVALUATION = 20
#: Batches of random pairs drawn to find an unseen one before the space counts as exhausted.
_FILL_DRAWS = 100
_FILL_BATCH = 64
_SLOT_PARAMS = ("hidden", "ff", "attention")
#: Optuna's GP optimises an int with at most this many values by trying them all (MAX_INT_EXHAUSTIVE_SEARCH_PARAMS).
_GP_EXHAUSTIVE_LIMIT = 16

Key = tuple[bytes, int]


def run_optuna(method: str, problem: CodesignProblem, settings: BaselineSettings,
               initial: tuple[np.ndarray, np.ndarray] | None = None) -> SearchResult:
    """Run one Optuna baseline (one of :data:`OPTUNA_BASELINES`) for ``settings.budget`` distinct pairs."""
    from flexibert.lazy import optional_dependency

    with optional_dependency("the Optuna baselines"):
        import optuna
    if method not in OPTUNA_BASELINES:
        raise ValueError(f"unknown Optuna baseline {method!r}; choose one of {OPTUNA_BASELINES}")
    started = time.perf_counter()
    X, d = initial if initial is not None else problem.initial_pairs(min(settings.n_initial, settings.budget),
                                                                     settings.seed)
    X, d = X[: settings.budget], d[: settings.budget]
    with _quiet(optuna):
        run = _OptunaRun(method, problem, settings, len(X), optuna)
        run.start(X, d)
        run.search(MAX_TRIALS_PER_EVALUATION * settings.budget)
    stopped = run.fill(np.random.default_rng(settings.seed))
    best = pareto_best(run.evaluations) if method in MULTI_OBJECTIVE else best_of(run.evaluations)
    return SearchResult(method, best, run.evaluations, time.perf_counter() - started, run.kinds, stopped)


@contextlib.contextmanager
def _quiet(optuna: Any) -> Iterator[None]:
    """Optuna's per-trial INFO lines and its ExperimentalWarnings off, and the caller's verbosity back
    afterwards (its warnings stay: the GP's, say, that it runs slower without the greenlet package)."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(previous)


def _sampler(method: str, seed: int, n_initial: int, optuna: Any) -> optuna.samplers.BaseSampler:
    # The initial sample is the random start: the models take over as soon as it has been told.
    startup = max(1, n_initial)
    family = method.removeprefix("optuna-").removesuffix("-mo")
    if family == "tpe":
        # Independent TPE (Optuna's default, one Parzen estimator per parameter) rather than
        # multivariate=True: on the analytic test oracle (budget 60, n_initial 16, seeds 6-11) it had the
        # higher mean best P at 30 and at 60 evaluations, single- and multi-objective (0.6140 vs 0.6136,
        # 0.6070 vs 0.6037 at 60); that P is nearly a sum over layers, which suits per-parameter models.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if family == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.NSGAIISampler(seed=seed)


def parameter_names(problem: CodesignProblem) -> list[str]:
    """The search parameters in embedding order: ``layers``, then ``hidden_k``, ``ff_k``, ``attention_k``
    for every slot ``k`` (``device`` comes on top)."""
    slots = (problem.arch_dim - 1) // 3
    return ["layers", *(f"{name}_{k}" for k in range(slots) for name in _SLOT_PARAMS)]


def search_space(problem: CodesignProblem, optuna: Any, relax_wide: bool = False,
                 ) -> dict[str, optuna.distributions.BaseDistribution]:
    """The static space: every embedding entry an int in [0, its upper bound], and the device.

    ``relax_wide``: entries with more than ``_GP_EXHAUSTIVE_LIMIT`` values are floats in the same range
    instead (rounded by the repair), for the Gaussian process (see the module docstring)."""
    dist = optuna.distributions
    space: dict[str, Any] = {"device": dist.CategoricalDistribution(list(range(problem.n_devices)))}
    for name, upper in zip(parameter_names(problem), problem.upper):
        wide = relax_wide and upper + 1 > _GP_EXHAUSTIVE_LIMIT
        space[name] = dist.FloatDistribution(0.0, float(upper)) if wide else dist.IntDistribution(0, int(upper))
    return space


class _OptunaRun:
    """One study and the distinct pairs it has evaluated, in order."""

    def __init__(self, method: str, problem: CodesignProblem, settings: BaselineSettings, n_initial: int,
                 optuna: Any) -> None:
        self.method, self.problem, self.budget = method, problem, settings.budget
        self.multi = method in MULTI_OBJECTIVE
        directions = ["maximize"] * (problem.n_terms if self.multi else 1)
        sampler = _sampler(method, settings.seed, n_initial, optuna)
        self.study = optuna.create_study(directions=directions, sampler=sampler)
        self.space = search_space(problem, optuna, relax_wide=method.startswith("optuna-gp"))
        self.names = parameter_names(problem)
        self.evaluations: list[Evaluation] = []
        self.kinds: list[str] = []
        self.keys: set[Key] = set()

    def start(self, X: np.ndarray, d: np.ndarray) -> None:
        """Evaluate the initial pairs (in one batch, like the other baselines) and tell them first."""
        keep = _first_occurrences(X, d)
        X, d = np.asarray(X, dtype=np.int64)[keep], np.asarray(d, dtype=np.int64)[keep]
        for evaluation in self.problem.evaluate(X, d):
            self._record(evaluation, "initial")
            params = dict(zip(self.names, (int(v) for v in evaluation.embedding)), device=evaluation.device)
            self.study.enqueue_trial(params)
            self._tell(self.study.ask(self.space), evaluation)

    def search(self, max_trials: int) -> None:
        """Ask, repair, evaluate (free for a pair seen before) and tell until the budget is spent."""
        while len(self.evaluations) < self.budget and len(self.study.trials) < max_trials:
            trial = self.study.ask(self.space)
            X, d = self._pair(trial.params)
            evaluation = self.problem.evaluate(X, d)[0]
            if _key(evaluation) not in self.keys:
                self._record(evaluation, self.method)
            self._tell(trial, evaluation)

    def fill(self, rng: np.random.Generator) -> str:
        """Random unseen pairs for what the sampler left of the budget; "exhausted" if none are left."""
        while len(self.evaluations) < self.budget:
            fresh = self._random_unseen(rng)
            if fresh is None:
                return "exhausted"
            self._record(self.problem.evaluate(*fresh)[0], "random")
        return "budget"

    def _random_unseen(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        for _ in range(_FILL_DRAWS):
            X, d = self.problem.random_pairs(_FILL_BATCH, rng)
            for i, key in enumerate(_keys(X, d)):
                if key not in self.keys:
                    return X[i: i + 1], d[i: i + 1]
        return None

    def _pair(self, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        raw = np.array([[params[name] for name in self.names]], dtype=float)  # the GP's floats are rounded here
        return repair_embeddings(raw, self.problem.space), np.array([params["device"]], dtype=np.int64)

    def _record(self, evaluation: Evaluation, kind: str) -> None:
        self.evaluations.append(evaluation)
        self.kinds.append(kind)
        self.keys.add(_key(evaluation))

    def _tell(self, trial: optuna.Trial, evaluation: Evaluation) -> None:
        values: float | list[float] = list(evaluation.terms) if self.multi else evaluation.performance
        self.study.tell(trial, values)


def pareto_best(evaluations: Sequence[Evaluation]) -> Evaluation:
    """The pair with the highest P among the non-dominated ones (by their terms of P).

    Only feasible pairs are candidates when there are any: an infeasible pair's P is P_MIN whatever its
    terms, so it may dominate pairs that are worth more. As every weight of a term is positive, a pair
    that dominates another has a higher P, so this is the highest P overall; it is found through the
    Pareto set because that is what a multi-objective search returns.
    """
    pool = [e for e in evaluations if e.feasible] or list(evaluations)
    return best_of([pool[i] for i in np.flatnonzero(is_non_dominated(np.array([e.terms for e in pool])))])


def _key(evaluation: Evaluation) -> Key:
    return np.asarray(evaluation.embedding, dtype=np.int64).tobytes(), int(evaluation.device)


def _keys(X: np.ndarray, d: np.ndarray) -> list[Key]:
    return [(row.tobytes(), int(device)) for row, device in zip(np.asarray(X, dtype=np.int64), d)]


def _first_occurrences(X: np.ndarray, d: np.ndarray) -> list[int]:
    """Row indices of the first occurrence of each distinct pair (the evaluations hold each pair once)."""
    seen: dict[Key, int] = {}
    for i, key in enumerate(_keys(X, d)):
        seen.setdefault(key, i)
    return sorted(seen.values())
