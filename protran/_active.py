"""Active learning of hardware-cost surrogates: pure logic, no measurement code.

:class:`ActiveLearner` fits one surrogate per measure on normalised targets, scores candidates with
an acquisition function and estimates its own error; :func:`run_active_learning` drives the loop
against any *oracle* (a callable that returns the measures of one item). ``protran profile`` passes
an oracle that measures an architecture on the board; replay passes one that reveals a recorded row.

Normalisation. Targets are divided per measure by a scale so that errors of different measures and
devices are comparable and ``target_mse`` means the same everywhere. ``scale="max"`` (default) uses
the largest value measured so far, which tends to the data set maximum the replay evaluates with;
``scale="2x_seed_max"`` is the reference's fixed ``2 x max`` of the seed measurements (its MSEs are
about four times smaller for the same fit).

Validation. ``validation="kfold"`` refits fresh surrogates on K folds of the measured rows;
``"split"`` is the reference's insertion-order 80/20 split (one refit); ``"oob"`` uses the
out-of-sample predictions some surrogates give for free (bagged ensembles: out-of-bag; Gaussian
process and Bayesian ridge: leave-one-out); ``"auto"`` uses ``"oob"`` when the surrogate offers it
and ``"kfold"`` otherwise; ``"none"`` skips validation (NaN), for replays that only need the
held-out error.

Transfer. A :class:`TransferPrior` holds surrogates fit on other devices' measurements (each device
normalised by its own maximum). Their predictions for an architecture are appended to its features,
so the new device's model only has to learn how its costs relate to the known devices' (a scale, an
offset, a mix) before it has seen enough rows to learn the costs from scratch. Predictions rather
than measurements are used even where a prior device measured the same architecture: a column that
mixes measured and predicted values would carry two different noise levels. With the ``additive``
cost model the prior adds little on the public boards (``benchmarks/results/replay_public``): its
cost features already carry what the other devices would teach. ``transfer="residual"`` uses the
prior differently: every measure's model is a :class:`~protran._transfer.PriorResidual` (a ridge on
the prior devices' predicted log-measure plus a boosted-tree residual), which needs only a few rows
of the new device (``benchmarks/results/replay_transfer``); ``surrogate_factory`` then only serves
the prior devices' own surrogates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protran.vocabulary import ACQUISITIONS, MEASURE_NAMES

VALIDATIONS = ("auto", "kfold", "split", "oob", "none")
SCALES = ("max", "2x_seed_max")
TRANSFERS = ("columns", "residual")

SurrogateFactory = Callable[[str], Any]
Acquisition = Callable[[np.ndarray, np.ndarray, np.random.Generator, int], np.ndarray]


# -- acquisition ------------------------------------------------------------------------------------


def uncertainty_acquisition(mean: np.ndarray, std: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
    """The ``k`` candidates with the largest predictive std summed over measures (normalised units)."""
    score = np.nansum(std, axis=1)
    return np.argsort(-score, kind="stable")[:k]


def random_acquisition(mean: np.ndarray, std: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` candidates drawn uniformly without replacement."""
    return rng.choice(mean.shape[0], size=k, replace=False)


_ACQUISITIONS: dict[str, Acquisition] = {"uncertainty": uncertainty_acquisition, "random": random_acquisition}


# -- transfer prior ---------------------------------------------------------------------------------


class TransferPrior:
    """Surrogates of other devices whose predictions become extra input columns.

    ``datasets`` holds one ``(X, Y)`` per device, ``Y`` with one column per measure in
    ``measures`` order (NaN where a device lacks a measure). Each column is divided by its maximum.
    """

    def __init__(self, surrogate_factory: SurrogateFactory, measures: Sequence[str] = MEASURE_NAMES) -> None:
        self.surrogate_factory = surrogate_factory
        self.measures = tuple(measures)
        self.models_: list[dict[str, Any]] = []

    def fit(self, datasets: Sequence[tuple[np.ndarray, np.ndarray]]) -> TransferPrior:
        if not datasets:
            raise ValueError("a transfer prior needs at least one device's measurements")
        self.models_ = []
        for X, Y in datasets:
            X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float).reshape(len(X), -1)
            if Y.shape[1] != len(self.measures):
                raise ValueError(
                    f"prior targets have {Y.shape[1]} columns, expected {len(self.measures)} ({self.measures})"
                )
            models = {}
            for j, measure in enumerate(self.measures):
                rows = np.isfinite(Y[:, j])
                if rows.sum() >= 2 and np.nanmax(Y[:, j]) > 0:
                    target = Y[rows, j] / np.max(Y[rows, j])
                    models[measure] = self.surrogate_factory(measure).fit(X[rows], target)
            self.models_.append(models)
        return self

    def n_columns(self, measure: str) -> int:
        return sum(measure in models for models in self.models_)

    def columns(self, X: np.ndarray, measure: str) -> np.ndarray:
        """Predicted (device-max-normalised) ``measure`` of every prior device, one column each."""
        predictions = [models[measure].predict(X) for models in self.models_ if measure in models]
        return np.column_stack(predictions) if predictions else np.empty((len(X), 0))


# -- learner ----------------------------------------------------------------------------------------


class ActiveLearner:
    """One surrogate per measure, an acquisition function and a validation estimate.

    ``surrogate_factory(measure)`` returns a fresh, unfitted surrogate. ``acquisition`` is a name in
    ``ACQUISITIONS`` or a callable ``(mean, std, rng, k) -> indices`` over normalised predictions of
    shape (candidates, measures). With a ``prior``, ``transfer="columns"`` (default) appends the prior
    devices' predictions to the features; ``transfer="residual"`` fits a
    :class:`~protran._transfer.PriorResidual` per measure instead, with ``transfer_params`` as its
    keyword options (``stack_own=True`` adds this learner's own surrogate as a cross-fitted column).
    """

    def __init__(
        self,
        surrogate_factory: SurrogateFactory,
        *,
        measures: Sequence[str] = MEASURE_NAMES,
        acquisition: str | Acquisition = "uncertainty",
        batch_size: int = 1,
        validation: str = "auto",
        n_folds: int = 5,
        scale: str = "max",
        prior: TransferPrior | None = None,
        seed: int = 0,
        transfer: str = "columns",
        transfer_params: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(acquisition, str) and acquisition not in _ACQUISITIONS:
            raise ValueError(f"unknown acquisition {acquisition!r}; choose one of {ACQUISITIONS} or pass a callable")
        if validation not in VALIDATIONS:
            raise ValueError(f"unknown validation {validation!r}; choose one of {VALIDATIONS}")
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES}")
        if transfer not in TRANSFERS:
            raise ValueError(f"unknown transfer {transfer!r}; choose one of {TRANSFERS}")
        if int(batch_size) < 1 or int(n_folds) < 2:
            raise ValueError(f"batch_size must be >= 1 and n_folds >= 2, got {batch_size} and {n_folds}")
        if not measures:
            raise ValueError("measures must name at least one measure")
        if prior is not None and tuple(prior.measures) != tuple(measures):
            raise ValueError(f"the prior covers measures {prior.measures}, the learner {tuple(measures)}")
        self.surrogate_factory = surrogate_factory
        self.measures = tuple(measures)
        self.acquisition = acquisition
        self.batch_size = int(batch_size)
        self.validation = validation
        self.n_folds = int(n_folds)
        self.scale = scale
        self.prior = prior
        self.seed = int(seed)
        self.transfer = transfer
        self.transfer_params = dict(transfer_params or {})
        self.rng = np.random.default_rng(seed)
        self.models_: dict[str, Any] = {}
        self.scale_: np.ndarray | None = None

    # -- fitting --------------------------------------------------------------------------------------

    def _new_model(self, measure: str) -> Any:
        """A fresh, unfitted model of ``measure``: the prior-residual model or the factory's surrogate."""
        if self.prior is not None and self.transfer == "residual" and self.prior.n_columns(measure):
            from protran._transfer import PriorResidual

            params = dict(self.transfer_params)
            if params.pop("stack_own", False):
                # The new device's own surrogate, cross-fitted, becomes one more column of the ridge.
                params["own_model"] = lambda: self.surrogate_factory(measure)
            return PriorResidual(self.prior, measure, seed=self.seed, **params)
        return self.surrogate_factory(measure)

    def _inputs(self, X: np.ndarray, measure: str) -> np.ndarray:
        if self.prior is None or self.transfer == "residual":
            return X  # the residual model computes the prior's columns itself
        return np.hstack([X, self.prior.columns(X, measure)])

    def _update_scale(self, Y: np.ndarray) -> None:
        with np.errstate(all="ignore"):
            current = np.nanmax(np.abs(Y), axis=0)
        if self.scale == "2x_seed_max" and self.scale_ is not None:
            return  # fixed once, from the first (seed) fit
        factor = 2.0 if self.scale == "2x_seed_max" else 1.0
        scale = factor * current
        self.scale_ = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)

    def fit(self, X, Y) -> ActiveLearner:
        """Fit every measure's surrogate on the rows where that measure is known (not NaN)."""
        X, Y = self._check(X, Y)
        self._update_scale(Y)
        self.X_, self.Y_ = X, Y
        self.models_ = {}
        for j, measure in enumerate(self.measures):
            rows = np.isfinite(Y[:, j])
            if rows.sum() < 2:
                raise ValueError(f"measure '{measure}' has {int(rows.sum())} known values; need at least 2 to fit")
            model = self._new_model(measure)
            self.models_[measure] = model.fit(self._inputs(X[rows], measure), Y[rows, j] / self.scale_[j])
        return self

    def _check(self, X, Y) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=float)
        Y = np.asarray(Y, dtype=float)
        if Y.ndim == 1:
            Y = Y[:, None]
        if X.ndim != 2 or Y.shape != (X.shape[0], len(self.measures)):
            raise ValueError(
                f"expected X (rows x features) and Y (rows x {len(self.measures)} measures {self.measures}); "
                f"got {X.shape} and {Y.shape}"
            )
        return X, Y

    def _check_fitted(self) -> None:
        if not self.models_:
            raise RuntimeError("the learner is not fitted yet; call fit(X, Y) first")

    # -- prediction and acquisition -----------------------------------------------------------------

    def predict(self, X, normalised: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std per measure, shape (rows, measures); original units unless ``normalised``."""
        self._check_fitted()
        X = np.asarray(X, dtype=float)
        mean = np.empty((X.shape[0], len(self.measures)))
        std = np.empty_like(mean)
        for j, measure in enumerate(self.measures):
            mean[:, j], std[:, j] = self.models_[measure].predict(self._inputs(X, measure), return_std=True)
        if not normalised:
            mean, std = mean * self.scale_, std * self.scale_
        return mean, std

    @property
    def selection_needs_fit(self) -> bool:
        """False when the acquisition ignores the surrogates (random), so fits may be skipped."""
        return self.acquisition != "random"

    def select(self, X_candidates, k: int | None = None) -> np.ndarray:
        """Indices of the next ``k`` (default ``batch_size``) candidates to measure."""
        X_candidates = np.asarray(X_candidates, dtype=float)
        k = min(self.batch_size if k is None else int(k), X_candidates.shape[0])
        if k <= 0:
            return np.empty(0, dtype=int)
        acquisition = _ACQUISITIONS.get(self.acquisition, self.acquisition) if isinstance(self.acquisition, str) \
            else self.acquisition
        if not self.selection_needs_fit:
            mean = std = np.zeros((X_candidates.shape[0], len(self.measures)))
        else:
            mean, std = self.predict(X_candidates, normalised=True)
        picked = np.asarray(acquisition(mean, std, self.rng, k), dtype=int)
        if picked.size != np.unique(picked).size:
            raise ValueError("the acquisition function returned the same candidate twice")
        return picked

    # -- validation -----------------------------------------------------------------------------------

    def validation_mse(self) -> dict[str, float]:
        """Estimated MSE of each measure's normalised predictions on unseen rows (see module doc)."""
        self._check_fitted()
        if self.validation == "none":
            return {measure: math.nan for measure in self.measures}
        result = {}
        for j, measure in enumerate(self.measures):
            rows = np.isfinite(self.Y_[:, j])
            X, y = self.X_[rows], self.Y_[rows, j] / self.scale_[j]
            held_out = None
            if self.validation in ("auto", "oob"):
                held_out = self.models_[measure].out_of_sample_predictions()
            if held_out is None:
                method = "split" if self.validation == "split" else "kfold"
                held_out = self._refit_predictions(X, y, measure, method)
            usable = np.isfinite(held_out)
            result[measure] = float(np.mean((held_out[usable] - y[usable]) ** 2)) if usable.any() else math.inf
        return result

    def _refit_predictions(self, X: np.ndarray, y: np.ndarray, measure: str, method: str) -> np.ndarray:
        n = len(y)
        held_out = np.full(n, np.nan)
        if method == "split":
            cut = int(round(0.8 * n))
            folds = [np.arange(cut, n)] if 2 <= cut < n else []
        else:
            order = np.random.default_rng(self.seed).permutation(n)
            folds = np.array_split(order, min(self.n_folds, n)) if n >= 3 else []
        for fold in folds:
            train = np.setdiff1d(np.arange(n), fold)
            if len(train) < 2:
                continue
            model = self._new_model(measure).fit(self._inputs(X[train], measure), y[train])
            held_out[fold] = model.predict(self._inputs(X[fold], measure))
        return held_out


# -- the loop ---------------------------------------------------------------------------------------


@dataclass
class ActiveStep:
    """The state after one fit: how many rows, what was just measured, validation, whether to stop."""

    n_measured: int
    new_items: list
    val_mse: dict[str, float]
    passes: int
    stop_reason: str | None
    learner: ActiveLearner
    failed_items: list = field(default_factory=list)


def _as_values(result: Any, measures: Sequence[str]) -> np.ndarray:
    if isinstance(result, Mapping):
        missing = [m for m in measures if m not in result]
        if missing:
            raise ValueError(f"the oracle's result lacks measure(s) {missing}; it returned keys {sorted(result)}")
        values = [result[m] for m in measures]
    else:
        values = list(result)
        if len(values) != len(measures):
            raise ValueError(f"the oracle returned {len(values)} values, expected {len(measures)} ({list(measures)})")
    return np.array([np.nan if v is None else float(v) for v in values])


def _default_key(item: Any) -> Hashable:
    try:
        hash(item)
    except TypeError:
        return id(item)
    return item


def run_active_learning(
    learner: ActiveLearner,
    oracle: Callable[[Any], Mapping[str, float] | Sequence[float] | None],
    candidates: Sequence | Callable[[np.random.Generator], Sequence],
    featurize: Callable[[Sequence], np.ndarray],
    *,
    seed_items: Sequence = (),
    measured: Sequence[tuple[Any, Mapping[str, float] | Sequence[float]]] = (),
    key: Callable[[Any], Hashable] | None = None,
    target_mse: float = 0.005,
    patience: int = 3,
    max_samples: int | None = None,
    max_hours: float | None = None,
    stop_on_convergence: bool = True,
    fit_when: Callable[[int], bool] | None = None,
) -> Iterator[ActiveStep]:
    """Measure seeds, then fit, validate, pick and measure until a stop condition; yield every fit.

    - ``oracle(item)`` returns the item's measures (a mapping by name or a sequence in
      ``learner.measures`` order; None or NaN for a measure it could not take), or None when the
      measurement failed (the item is skipped and reported in ``failed_items``).
    - ``candidates`` is a fixed pool (each item is measured at most once) or a callable
      ``rng -> pool`` that draws fresh candidates every iteration; ``key`` (for example the model
      hash) keeps already measured items out of fresh pools.
    - ``measured`` resumes a run: its items count as measured and are not sent to the oracle.
    - Stops when every measure's validation MSE is ``<= target_mse`` for ``patience`` consecutive
      fits (if ``stop_on_convergence``), after ``max_samples`` oracle calls in total, after
      ``max_hours``, or when the pool is exhausted. The last yielded step names the reason.
    - ``fit_when(n_measured)``: when the acquisition does not need the surrogates (random), fit
      and yield only where it returns True (and at the end); for cheap replays of random querying.
    """
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    started = time.monotonic()
    identity = key or _default_key
    items: list = [item for item, _ in measured]
    values: list[np.ndarray] = [_as_values(result, learner.measures) for _, result in measured]
    seen = {identity(item) for item in items}
    attempts = len(items)
    fixed_pool = None if callable(candidates) else list(candidates)
    available = None if fixed_pool is None else [i for i, item in enumerate(fixed_pool) if identity(item) not in seen]

    def budget_left() -> bool:
        return max_samples is None or attempts < max_samples

    def measure(batch: Sequence) -> tuple[list, list]:
        nonlocal attempts
        done, failed = [], []
        for item in batch:
            attempts += 1
            seen.add(identity(item))
            result = oracle(item)
            if result is None:
                failed.append(item)
                continue
            items.append(item)
            values.append(_as_values(result, learner.measures))
            done.append(item)
        return done, failed

    pending_seeds = [item for item in seed_items if identity(item) not in seen]
    if available is not None:
        seed_keys = {identity(item) for item in pending_seeds}
        available = [i for i in available if identity(fixed_pool[i]) not in seed_keys]
    if max_samples is not None:
        pending_seeds = pending_seeds[: max(0, max_samples - attempts)]
    new_items, failed_items = measure(pending_seeds)
    passes = 0
    while True:
        if len(items) < 2:
            raise RuntimeError(f"only {len(items)} successful measurement(s); need at least 2 to fit a surrogate")
        stop_reason = None
        if not budget_left():
            stop_reason = "max_samples"
        elif max_hours is not None and time.monotonic() - started >= max_hours * 3600:
            stop_reason = "max_hours"
        elif available is not None and not available:
            stop_reason = "pool_exhausted"
        must_fit = learner.selection_needs_fit or fit_when is None or fit_when(len(items)) or stop_reason
        if must_fit:
            learner.fit(featurize(items), np.vstack(values))
            val_mse = learner.validation_mse()
            passes = passes + 1 if all(v <= target_mse for v in val_mse.values()) else 0
            if stop_on_convergence and passes >= patience:
                stop_reason = "converged"
            yield ActiveStep(len(items), new_items, val_mse, passes, stop_reason, learner, failed_items)
            new_items, failed_items = [], []
        if stop_reason is not None:
            return
        if available is not None:
            pool_indices = available
            pool = [fixed_pool[i] for i in available]
        else:
            pool = [item for item in candidates(learner.rng) if identity(item) not in seen]
            pool_indices = None
        if not pool:  # a fresh pool held nothing new
            if not must_fit:
                learner.fit(featurize(items), np.vstack(values))
                val_mse = learner.validation_mse()
            yield ActiveStep(len(items), new_items, val_mse, passes, "pool_exhausted", learner, failed_items)
            return
        k = learner.batch_size if max_samples is None else min(learner.batch_size, max_samples - attempts)
        picked = learner.select(featurize(pool), k)
        if pool_indices is not None:
            chosen = {pool_indices[p] for p in picked}
            available = [i for i in available if i not in chosen]
        batch_items, batch_failed = measure([pool[p] for p in picked])
        new_items += batch_items
        failed_items += batch_failed
