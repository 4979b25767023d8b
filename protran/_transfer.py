"""Transfer from known boards to a new one: a ridge on their predicted costs plus a tree residual.

Why another prior. :class:`~protran._active.TransferPrior` appends the other boards' predictions to
the features of the new board's own surrogate. With the ``additive`` cost model that adds almost
nothing (``benchmarks/results/replay_public``): the model still has to learn a weight per cost
feature from the new board's rows, and the extra columns are just more features to weigh. What the
other boards really teach is the *shape* of the cost over the design space; a new board mostly
differs by a scale and a mild warp. :class:`PriorResidual` fits exactly that, in log space:

    log y  =  a + sum_k w_k log p_k(x)  +  r(x)

where ``p_k(x)`` is prior board ``k``'s predicted (max-normalised) measure for architecture ``x``.
The linear part is a ridge whose coefficients are shrunk towards the *geometric mean of the prior
boards* (``w_k = 1/K``), not towards zero: with four rows and no evidence the best guess for a new
board is "costs proportional to the known boards'", and a ridge towards zero would instead flatten
the prediction to a constant. ``r(x)`` is a small boosted-tree model on the architecture features
for what the prior boards do not share (a board that is memory-bound where the others are not),
with few shallow, strongly shrunk trees so that 4-8 rows cannot make it chase noise. This is the
cross-device strategy described in the literature for a few measured architectures on an unseen
board (ridge on the other devices' predicted log-measure plus a boosted residual, bootstrapped).

Uncertainty: ``n_bootstrap`` members refit both parts on bootstrap samples of the rows; the std is
their spread of the log prediction, turned into the target's units by the delta method (``exp(mu)
* sigma``) as every ``log_target`` surrogate does. The mean is the fit on all rows. Members' out-of-bag
predictions give the learner a validation estimate without refitting (``validation="auto"``).

Also here: :func:`cross_validated_r2` (how much of a measure's variance the architecture explains,
used to decide whether a measure is worth spending measurements on), the constants the replay
benchmark ``benchmarks/replay_transfer.py`` chose, and the stopping rule :func:`prior_converged`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protran.surrogates._base import Surrogate, bootstrap_indices, out_of_bag_mean

if TYPE_CHECKING:
    from protran._active import TransferPrior

#: Seed rows to measure on a new board when a prior is given (``benchmarks/results/replay_transfer``).
PRIOR_SEED_SAMPLES = 6
#: Below this cross-validated R^2 a measure counts as not predictable from the architecture: the
#: profiler should not spend measurements on its uncertainty (peak power on several boards).
PREDICTABLE_R2 = 0.5
#: The stopping rule with a prior never stops before this many measured rows: below it the
#: out-of-bag validation estimate rests on too few rows to be trusted.
PRIOR_MIN_ROWS = 8

# Prior predictions are max-normalised positive costs; a floor keeps their logs finite.
_PRIOR_FLOOR = 1e-6


class PriorResidual(Surrogate):
    """``log y = a + sum_k w_k log p_k(x) + r(x)``: a ridge on the prior boards' predictions and a
    boosted-tree residual on the architecture features (see the module docstring).

    ``X`` is the architecture feature matrix the ``prior`` was fit on; ``fit`` computes the prior
    columns ``prior.columns(X, measure)`` itself. ``alpha`` is the ridge penalty pulling the weights
    towards the prior boards' geometric mean. ``residual_trees`` boosted trees of depth
    ``residual_depth`` with ``residual_learning_rate`` model the ridge's log-residual (0 trees: no
    residual); below ``residual_min_rows`` rows it is skipped (nothing to learn from).
    ``own_model`` (optional): a factory of the new board's own no-prior surrogate (the additive
    cost model, say); its cross-fitted (``own_folds``-fold) log prediction becomes one more ridge
    column, shrunk towards 0, so that boards whose costs the features already explain can lean on
    it (see ``_own_column``). Bootstrap members reuse the cross-fitted column of the full fit.
    ``sample_weight`` weights both parts (ridge and xgboost instance weights); bootstrap members
    take the weights of the rows they draw. Not registered by name and not saved: it needs a prior.
    """

    name = "prior_residual"
    _handles_log_target = True

    def __init__(
        self,
        prior: TransferPrior,
        measure: str,
        *,
        n_bootstrap: int = 8,
        alpha: float = 0.1,
        residual_trees: int = 10,
        residual_depth: int = 2,
        residual_learning_rate: float = 0.1,
        residual_min_rows: int = 4,
        own_model: Callable[[], Any] | None = None,
        own_folds: int = 4,
        **base: Any,
    ) -> None:
        base.setdefault("log_target", True)
        if not base["log_target"]:
            raise ValueError("PriorResidual works in log space; log_target must be True")
        super().__init__(**base)
        if int(n_bootstrap) < 2:
            raise ValueError(f"n_bootstrap must be at least 2 to give a spread, got {n_bootstrap}")
        if not float(alpha) > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}")
        if prior.n_columns(measure) < 1:
            raise ValueError(f"the prior has no device with measure {measure!r}")
        self.prior = prior
        self.measure = measure
        self.n_bootstrap = int(n_bootstrap)
        self.alpha = float(alpha)
        self.residual_trees = int(residual_trees)
        self.residual_depth = int(residual_depth)
        self.residual_learning_rate = float(residual_learning_rate)
        self.residual_min_rows = int(residual_min_rows)
        self.own_model = own_model
        self.own_folds = int(own_folds)

    def _hyper_params(self) -> dict[str, Any]:
        keys = ("measure", "n_bootstrap", "alpha", "residual_trees", "residual_depth", "residual_learning_rate",
                "residual_min_rows")
        return {key: getattr(self, key) for key in keys}

    # -- one member: ridge towards the prior's geometric mean, then trees ----------------------------------

    def _log_prior(self, X: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(self.prior.columns(X, self.measure), _PRIOR_FLOOR))

    def _columns(self, X: np.ndarray) -> np.ndarray:
        """Ridge inputs of new rows: the prior's log columns, then the own model's log prediction."""
        P = self._log_prior(X)
        if self.own_ is None:
            return P
        return np.column_stack([P, np.log(np.maximum(self.own_.predict(X), _PRIOR_FLOOR))])

    def _own_column(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray | None:
        """Cross-fitted log prediction of the new board's own (no-prior) model for its training rows.

        Out-of-fold, so that the ridge weighs it by how well it predicts rows it did not see: where the
        board's own cost model already generalises from these few rows (a board whose costs follow
        the cost features closely), the ridge leans on it; where it does not, on the prior boards.
        In-sample predictions would look perfect everywhere and always win. Sets ``own_`` (fit on
        every row) for prediction. None below 4 rows: too few to hold any out.
        """
        self.own_ = None
        if self.own_model is None or len(y) < 4:
            return None
        order = np.random.default_rng(self.seed).permutation(len(y))
        column = np.empty(len(y))
        for fold in np.array_split(order, min(self.own_folds, len(y))):
            train = np.setdiff1d(order, fold)
            weight = None if sample_weight is None else sample_weight[train]
            model = self.own_model().fit(X[train], y[train], sample_weight=weight)
            column[fold] = model.predict(X[fold])
        self.own_ = self.own_model().fit(X, y, sample_weight=sample_weight)
        return np.log(np.maximum(column, _PRIOR_FLOOR))

    def _fit_member(self, X: np.ndarray, P: np.ndarray, t: np.ndarray, weight: np.ndarray | None,
                    seed: int) -> tuple[np.ndarray, Any]:
        """Ridge coefficients ``[a, w_1..w_K]`` and the residual booster (None when skipped)."""
        from sklearn.linear_model import Ridge

        # Shrinking w - 1/K towards 0 is shrinking w towards the prior boards' geometric mean: fit the
        # deviation. The own model's column (last, when present) is shrunk towards 0 instead.
        n_prior = self.prior.n_columns(self.measure)
        anchor = P[:, :n_prior].mean(axis=1)
        ridge = Ridge(alpha=self.alpha).fit(P, t - anchor, sample_weight=weight)
        offset = np.zeros(P.shape[1])
        offset[:n_prior] = 1.0 / n_prior
        coef = np.concatenate([[ridge.intercept_], ridge.coef_ + offset])
        booster = None
        if self.residual_trees > 0 and len(np.unique(X, axis=0)) >= self.residual_min_rows:
            residual = t - self._linear(coef, P)
            booster = self._fit_trees(X, residual, weight, seed)
        return coef, booster

    @staticmethod
    def _linear(coef: np.ndarray, P: np.ndarray) -> np.ndarray:
        return coef[0] + P @ coef[1:]

    def _fit_trees(self, X: np.ndarray, residual: np.ndarray, weight: np.ndarray | None, seed: int):
        import xgboost

        model = xgboost.XGBRegressor(
            n_estimators=self.residual_trees, max_depth=self.residual_depth,
            learning_rate=self.residual_learning_rate,
            # min_child_weight 2: no leaf for a single row, so one outlier cannot get its own correction.
            min_child_weight=2.0, reg_lambda=1.0, base_score=0.0, random_state=seed, n_jobs=1,
        )
        return model.fit(X, residual, sample_weight=weight).get_booster()

    def _member_output(self, coef: np.ndarray, booster: Any, X: np.ndarray, P: np.ndarray) -> np.ndarray:
        output = self._linear(coef, P)
        if booster is not None:
            output = output + booster.inplace_predict(X).astype(np.float64)
        return output

    # -- the surrogate contract -------------------------------------------------------------------------

    def _fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        t = np.log(y)
        P = self._log_prior(X)
        own = self._own_column(X, y, sample_weight)
        if own is not None:
            P = np.column_stack([P, own])
        self.coef_, self.booster_ = self._fit_member(X, P, t, sample_weight, self.seed)
        rng = np.random.default_rng(self.seed)
        self.members_ = []
        in_bag = np.zeros((self.n_bootstrap, len(t)), dtype=bool)
        for index in range(self.n_bootstrap):
            rows = bootstrap_indices(rng, len(t))
            in_bag[index, rows] = True
            weight = None if sample_weight is None else sample_weight[rows]
            if weight is not None and not weight.sum() > 0:
                weight = None  # a bootstrap of zero-weight rows: fall back to equal weights
            self.members_.append(self._fit_member(X[rows], P[rows], t[rows], weight, self.seed * 1009 + index + 1))
        each = np.stack([self._member_output(c, b, X, P) for c, b in self.members_])
        oob, _ = out_of_bag_mean(each, in_bag)
        self.oob_ = np.exp(oob)

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        P = self._columns(X)
        mean = np.exp(self._member_output(self.coef_, self.booster_, X, P))
        each = np.stack([self._member_output(c, b, X, P) for c, b in self.members_])
        return mean, mean * each.std(axis=0, ddof=1)

    def _out_of_sample(self) -> np.ndarray | None:
        return getattr(self, "oob_", None)

    def _state(self, directory: Path) -> dict[str, np.ndarray]:
        raise NotImplementedError("a PriorResidual depends on its TransferPrior and is not saved; refit it")

    def _set_state(self, arrays: dict[str, np.ndarray], directory: Path) -> None:
        raise NotImplementedError("a PriorResidual depends on its TransferPrior and is not saved; refit it")


# -- how predictable is a measure ------------------------------------------------------------------------


def cross_validated_r2(make_model: Callable[[], Any], X, y, folds: int = 5, seed: int = 0) -> float:
    """K-fold cross-validated R^2: ``1 - SSE / SST`` of out-of-fold predictions of ``y`` from ``X``.

    ``make_model()`` returns a fresh surrogate. SST is around the mean of all rows, so a model that
    knows nothing scores about 0 (slightly below: each fold's mean differs) and noise it chases
    scores below 0. Rows are shuffled with ``seed``; NaN targets are dropped.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    known = np.isfinite(y)
    X, y = X[known], y[known]
    if len(y) < 3 or int(folds) < 2:
        raise ValueError(f"need at least 3 rows and 2 folds, got {len(y)} rows and {folds} folds")
    order = np.random.default_rng(seed).permutation(len(y))
    predicted = np.empty(len(y))
    for fold in np.array_split(order, min(int(folds), len(y))):
        train = np.setdiff1d(order, fold)
        predicted[fold] = make_model().fit(X[train], y[train]).predict(X[fold])
    total = float(np.sum((y - y.mean()) ** 2))
    if total <= 0:
        return math.nan  # a constant measure: nothing to explain
    return 1.0 - float(np.sum((y - predicted) ** 2)) / total


# -- when to stop measuring a new board ------------------------------------------------------------------


def prior_converged(val_mse_history: Sequence[float], n_rows: int, target_mse: float = 0.005,
                    patience: int = 2, min_rows: int = PRIOR_MIN_ROWS) -> bool:
    """Stop measuring a board learnt with a prior: the validation MSE (worst predictable measure,
    one value per fit, oldest first) was ``<= target_mse`` at the last ``patience`` fits and at
    least ``min_rows`` rows are measured. The out-of-bag estimate of a few rows is noisy both ways;
    ``min_rows`` keeps a lucky estimate at 4-6 rows from ending the run (replay_transfer README)."""
    if n_rows < min_rows or len(val_mse_history) < patience:
        return False
    recent = list(val_mse_history)[-patience:]
    return all(math.isfinite(v) and v <= target_mse for v in recent)
