"""Black-box baselines on the same problem, oracle, budget and initial sample as BOSHCODE.

- ``"random"``: uniformly drawn valid pairs after the initial sample.
- ``"gbrt"``, ``"rf"``, ``"gpr"``: sequential Bayesian optimisation with UCB = mu + kappa * sigma on a
  scikit-learn model of P over the same encoding (normalised embedding + one-hot device):
  gradient-boosted quantile regressors (sigma from the 16th and 84th percentiles, as scikit-optimize
  did), a random forest (sigma = spread of the trees), and a Gaussian process (Matern 5/2 with one
  length scale per input, plus white noise). The acquisition is maximised over the same candidate
  pool as BOSHCODE's (random pairs and mutations of the best pairs); for the Gaussian process the
  pool's best points are refined further by L-BFGS-B on the continuous encoding, then projected to
  valid pairs like GOBI's optima.

kappa defaults to 1.96, scikit-optimize's default for its confidence-bound acquisition. With
``inputs="structure"`` the models read the architecture's structure features (as BOSHCODE's networks
do by default, ``CodesignProblem.arch_inputs``) instead of its embedding; the Gaussian process then
keeps to the pool (no rounding maps features back to an architecture).

The ``"optuna-..."`` methods run Optuna's samplers (TPE, Gaussian process, NSGA-II; on P or on its terms
as several objectives) on the same problem: see :mod:`boshcode._optuna`, imported only when one runs.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from boshcode._optuna import OPTUNA_BASELINES, run_optuna  # imports optuna only when one runs
from boshcode._problem import CodesignProblem, check_arch_inputs
from boshcode._search import DEFAULT_BUDGET, SearchResult, best_of, candidate_pool

BASELINES = ("random", "gbrt", "gpr", "rf", *OPTUNA_BASELINES)


@dataclass(frozen=True)
class BaselineSettings:
    budget: int = DEFAULT_BUDGET
    n_initial: int = 16
    kappa: float = 1.96
    pool_size: int = 1024
    n_parents: int = 4
    mutants_per_parent: int = 128
    gbrt_estimators: int = 30
    forest_estimators: int = 100
    lbfgs_starts: int = 5
    lbfgs_steps: int = 30
    inputs: str = "embedding"
    seed: int = 0

    def __post_init__(self) -> None:
        check_arch_inputs(self.inputs)


class _GBRTQuantiles:
    """Three gradient-boosted regressors for the 16th, 50th and 84th percentiles."""

    def __init__(self, n_estimators: int, seed: int) -> None:
        from sklearn.ensemble import GradientBoostingRegressor

        self.models = [GradientBoostingRegressor(loss="quantile", alpha=q, n_estimators=n_estimators,
                                                 random_state=seed) for q in (0.16, 0.5, 0.84)]

    def fit(self, X: np.ndarray, y: np.ndarray) -> _GBRTQuantiles:
        for model in self.models:
            model.fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low, mid, high = (model.predict(X) for model in self.models)
        return mid, np.abs(high - low) / 2.0


class _Forest:
    def __init__(self, n_estimators: int, seed: int) -> None:
        from sklearn.ensemble import RandomForestRegressor

        self.model = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=3, random_state=seed, n_jobs=1)

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Forest:
        self.model.fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The trees' own arrays: the same numbers as tree.predict, without its per-call input checks.
        rows = np.asarray(X, dtype=np.float32)
        per_tree = np.stack([tree.tree_.predict(rows).reshape(len(rows), -1)[:, 0] for tree in self.model.estimators_])
        return per_tree.mean(axis=0), per_tree.std(axis=0)


class _GaussianProcess:
    """Matern 5/2 with one length scale per input (scikit-optimize's bounds) plus white noise.

    The kernel's hyper-parameters are optimised (with restarts) on the first fit and every
    ``refit_every`` fits; in between the last ones are kept, which is what makes 40 length scales
    affordable at every iteration.
    """

    def __init__(self, n_features: int, seed: int, refit_every: int = 10) -> None:
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        self.kernel = ConstantKernel(1.0, (0.01, 1000.0)) * Matern(
            length_scale=np.ones(n_features), length_scale_bounds=(0.01, 100.0), nu=2.5,
        ) + WhiteKernel(1e-3, noise_level_bounds=(1e-8, 1e-1))
        self.seed = seed
        self.refit_every = refit_every
        self.n_fits = 0
        self.model = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> _GaussianProcess:
        from sklearn.gaussian_process import GaussianProcessRegressor

        tune = self.n_fits % self.refit_every == 0
        self.model = GaussianProcessRegressor(self.kernel, normalize_y=True, random_state=self.seed,
                                              n_restarts_optimizer=2 if tune else 0,
                                              optimizer="fmin_l_bfgs_b" if tune else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # length scales at their bounds are expected for unused slots
            self.model.fit(X, y)
        self.kernel = self.model.kernel_
        self.n_fits += 1
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.model.predict(X, return_std=True)
        return mean, std


def _model(method: str, n_features: int, settings: BaselineSettings, seed: int):
    if method == "gbrt":
        return _GBRTQuantiles(settings.gbrt_estimators, seed)
    if method == "rf":
        return _Forest(settings.forest_estimators, seed)
    return _GaussianProcess(n_features, seed)


def run_baseline(method: str, problem: CodesignProblem, settings: BaselineSettings | None = None,
                 initial: tuple[np.ndarray, np.ndarray] | None = None) -> SearchResult:
    """Run one baseline; ``initial`` defaults to the problem's seeded initial pairs (the same pairs
    BOSHCODE starts from for the same seed and n_initial)."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {BASELINES}")
    settings = settings or BaselineSettings()
    if method in OPTUNA_BASELINES:
        return run_optuna(method, problem, settings, initial)
    started = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    X, d = initial if initial is not None else problem.initial_pairs(min(settings.n_initial, settings.budget),
                                                                     settings.seed)
    evaluations = problem.evaluate(X[: settings.budget], d[: settings.budget])
    kinds = ["initial"] * len(evaluations)
    n_features = problem.n_arch_inputs(settings.inputs) + problem.n_devices
    model = None if method == "random" else _model(method, n_features, settings, int(rng.integers(2**31)))
    while len(evaluations) < settings.budget:
        if model is None:
            Q, q = _random_unseen(problem, rng)
        else:
            Q, q = _bo_query(model, method, problem, evaluations, settings, rng)
        evaluations += problem.evaluate(Q, q)
        kinds.append(method)
    return SearchResult(method, best_of(evaluations), evaluations, time.perf_counter() - started, kinds)


def _random_unseen(problem: CodesignProblem, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    while True:
        X, d = problem.random_pairs(16, rng)
        fresh = np.flatnonzero(~problem.seen(X, d))
        if fresh.size:
            return X[fresh[:1]], d[fresh[:1]]


def _bo_query(model, method: str, problem: CodesignProblem, evaluations, settings: BaselineSettings,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    def encode(X: np.ndarray, d: np.ndarray) -> np.ndarray:
        return problem.encode(X, d, settings.inputs)

    E = encode(np.array([e.embedding for e in evaluations]), np.array([e.device for e in evaluations]))
    y = np.array([e.performance for e in evaluations])
    model.fit(E, y)

    def ucb(encoded: np.ndarray) -> np.ndarray:
        mean, std = model.predict(encoded)
        return mean + settings.kappa * std

    X, d = candidate_pool(problem, evaluations, rng, settings.pool_size, settings.n_parents,
                          settings.mutants_per_parent)
    if len(X) == 0:
        return _random_unseen(problem, rng)
    scores = ucb(encode(X, d))
    if method == "gpr" and settings.inputs == "embedding":
        starts = np.argsort(-scores)[: settings.lbfgs_starts]
        G, g = _lbfgs_refine(ucb, problem.encode(X[starts], d[starts]), problem, settings.lbfgs_steps)
        fresh = ~problem.seen(G, g)
        if fresh.any():
            X, d = np.vstack([G[fresh], X]), np.concatenate([g[fresh], d])
            scores = np.concatenate([ucb(problem.encode(G[fresh], g[fresh])), scores])
    i = int(np.argmax(scores))
    return X[i: i + 1], d[i: i + 1]


def _lbfgs_refine(ucb, starts: np.ndarray, problem: CodesignProblem, max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS-B on -UCB from each start (gradients by forward differences in one batched predict),
    then projection to valid pairs."""
    from scipy.optimize import minimize

    step = 1e-4
    optima = []
    for start in starts:
        def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
            shifted = np.vstack([z, np.minimum(z + step * np.eye(z.size), 1.0)])
            values = -ucb(shifted)
            return float(values[0]), (values[1:] - values[0]) / step

        result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * start.size,
                          options={"maxiter": max_steps})
        optima.append(result.x)
    Z = np.array(optima)
    return problem.project_arch(Z[:, : problem.arch_dim]), np.argmax(Z[:, problem.arch_dim:], axis=1)
