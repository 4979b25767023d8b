"""Tree surrogates: a decision tree, the reference AdaBoost ensemble and a bagged xgboost ensemble.

AdaBoost is fit by :func:`adaboost_r2`, which grows the same trees as scikit-learn's
``AdaBoostRegressor`` (same algorithm, same random stream) about three times faster.

scikit-learn trees are stored as their node arrays and evaluated by one vectorised numpy traversal,
both after ``fit`` and after loading, so a saved model predicts exactly what the fitted one did and
no pickle or scikit-learn internals are involved. xgboost members use xgboost's own JSON format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protran.surrogates._base import Surrogate, bootstrap_indices, out_of_bag_mean, robust_scale_ratio

_LEAF = -1
_ADABOOST_LOSSES = ("linear", "square", "exponential")
_TREE_FIELDS = ("left", "right", "feature", "threshold", "value", "roots")


@dataclass
class TreeArrays:
    """Several binary regression trees concatenated into flat node arrays."""

    left: np.ndarray  # global index of the left child, -1 at leaves
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray  # node mean
    roots: np.ndarray  # index of each tree's root

    @classmethod
    def from_sklearn(cls, trees: list) -> TreeArrays:
        parts: dict[str, list[np.ndarray]] = {key: [] for key in ("left", "right", "feature", "threshold", "value")}
        roots = []
        offset = 0
        for tree in trees:
            roots.append(offset)
            for key, children in (("left", tree.children_left), ("right", tree.children_right)):
                children = np.asarray(children, dtype=np.int64)
                parts[key].append(np.where(children == _LEAF, _LEAF, children + offset))
            parts["feature"].append(np.asarray(tree.feature, dtype=np.int64))
            parts["threshold"].append(np.asarray(tree.threshold, dtype=np.float64))
            parts["value"].append(np.asarray(tree.value, dtype=np.float64).reshape(tree.node_count, -1)[:, 0])
            offset += tree.node_count
        return cls(**{key: np.concatenate(chunks) for key, chunks in parts.items()}, roots=np.asarray(roots, np.int64))

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Leaf index reached by every row in every tree, shape (trees, rows)."""
        # scikit-learn compares float32 inputs with float64 thresholds; do the same for identical splits.
        X = np.asarray(X, dtype=np.float32).astype(np.float64)
        node = np.repeat(self.roots[:, None], X.shape[0], axis=1)
        rows = np.arange(X.shape[0])[None, :]
        while True:
            internal = self.left[node] != _LEAF
            if not internal.any():
                return node
            go_left = X[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(internal, np.where(go_left, self.left[node], self.right[node]), node)

    def predict_each(self, X: np.ndarray) -> np.ndarray:
        return self.value[self.apply(X)]

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_{key}": getattr(self, key) for key in _TREE_FIELDS}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], prefix: str) -> TreeArrays:
        return cls(**{key: arrays[f"{prefix}_{key}"] for key in _TREE_FIELDS})


class DecisionTreeSurrogate(Surrogate):
    """One CART regression tree. The std is the spread (population std) of the training targets in
    the leaf a row falls into, so it is 0 wherever a leaf holds a single row or equal targets;
    ``min_samples_leaf=2`` (the default) keeps it informative.

    ``sample_weight`` goes to scikit-learn's tree (weighted split criterion and leaf means); the leaf
    std is then the weighted spread. ``min_samples_leaf`` counts rows, not weight, so a weight of 2
    is like a duplicated row only where that limit does not bind."""

    name = "dt"

    def __init__(self, *, max_depth: int | None = None, min_samples_leaf: int = 2, **base: Any) -> None:
        super().__init__(**base)
        self.max_depth = max_depth
        self.min_samples_leaf = int(min_samples_leaf)

    def _hyper_params(self) -> dict[str, Any]:
        return {"max_depth": self.max_depth, "min_samples_leaf": self.min_samples_leaf}

    def _fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        from sklearn.tree import DecisionTreeRegressor

        model = DecisionTreeRegressor(
            max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf, random_state=self.seed
        ).fit(X, y, sample_weight=sample_weight)
        self.trees_ = TreeArrays.from_sklearn([model.tree_])
        leaves = self.trees_.apply(X)[0]
        leaf_std = np.zeros_like(self.trees_.value)
        weights = np.ones(len(y)) if sample_weight is None else sample_weight
        for leaf in np.unique(leaves):
            inside = leaves == leaf
            if sample_weight is None:
                leaf_std[leaf] = y[inside].std()
            elif weights[inside].sum() > 0:
                mean = np.average(y[inside], weights=weights[inside])
                leaf_std[leaf] = np.sqrt(np.average((y[inside] - mean) ** 2, weights=weights[inside]))
        self.leaf_std_ = leaf_std

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        leaves = self.trees_.apply(X)[0]
        return self.trees_.value[leaves], self.leaf_std_[leaves]

    def _state(self, directory: Path) -> dict[str, np.ndarray]:
        return {**self.trees_.state("tree"), "leaf_std": self.leaf_std_}

    def _set_state(self, arrays: dict[str, np.ndarray], directory: Path) -> None:
        self.trees_ = TreeArrays.from_state(arrays, "tree")
        self.leaf_std_ = arrays["leaf_std"]


def weighted_median(predictions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per column of ``predictions`` (members, rows): the weighted median, as AdaBoost.R2 defines it."""
    per_row = predictions.T
    order = np.argsort(per_row, axis=1)
    cdf = np.cumsum(weights[order], axis=1)
    median_position = (cdf >= 0.5 * cdf[:, -1:]).argmax(axis=1)
    rows = np.arange(per_row.shape[0])
    return per_row[rows, order[rows, median_position]]


def adaboost_r2(
    X: np.ndarray, y: np.ndarray, n_estimators: int, learning_rate: float, loss: str, max_depth: int | None, seed: int,
    sample_weight: np.ndarray | None = None,
) -> tuple[list, np.ndarray]:
    """AdaBoost.R2 over CART trees; the fitted trees (``tree_`` objects) and their weights.

    The same algorithm and random stream as ``sklearn.ensemble.AdaBoostRegressor(
    DecisionTreeRegressor(max_depth, random_state=seed), random_state=seed)``, so the same trees,
    without its per-estimator cloning and input validation (which cost most of the time on the small
    data of a profiling run). ``sample_weight`` is the initial boosting distribution (as in
    scikit-learn); None is uniform.
    """
    import sklearn
    from sklearn.tree import DecisionTreeRegressor

    random_state = np.random.RandomState(seed)  # the legacy stream scikit-learn draws from
    n_rows = len(y)
    X32 = np.ascontiguousarray(X, dtype=np.float32)  # what the trees see in any case
    y = np.ascontiguousarray(y, dtype=np.float64)
    if sample_weight is None:
        sample_weight = np.full(n_rows, 1.0 / n_rows)
    else:
        sample_weight = np.asarray(sample_weight, dtype=np.float64) / np.sum(sample_weight)
    epsilon = np.finfo(np.float64).eps
    trees, weights = [], []
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        for iboost in range(n_estimators):
            sample_weight = np.clip(sample_weight, epsilon, None)
            tree_seed = random_state.randint(np.iinfo(np.int32).max)
            rows = random_state.choice(np.arange(n_rows), size=n_rows, replace=True, p=sample_weight)
            tree = DecisionTreeRegressor(max_depth=max_depth, random_state=tree_seed)
            tree.fit(X32[rows], y[rows], check_input=False)
            error = np.abs(tree.predict(X32, check_input=False) - y)
            if error.max() != 0:
                error /= error.max()
            if loss == "square":
                error **= 2
            elif loss == "exponential":
                error = 1.0 - np.exp(-error)
            estimator_error = float((sample_weight * error).sum())
            if estimator_error <= 0:  # perfect fit: keep it, stop
                trees.append(tree.tree_)
                weights.append(1.0)
                break
            if estimator_error >= 0.5:  # worse than chance: drop it (unless it is the only one), stop
                if not trees:
                    trees.append(tree.tree_)
                    weights.append(0.0)
                break
            beta = estimator_error / (1.0 - estimator_error)
            trees.append(tree.tree_)
            weights.append(learning_rate * np.log(1.0 / beta))
            if iboost < n_estimators - 1:
                sample_weight = sample_weight * np.power(beta, (1.0 - error) * learning_rate)
                total = sample_weight.sum()
                if not np.isfinite(total) or total <= 0:
                    break
                sample_weight /= total
    return trees, np.asarray(weights, dtype=np.float64)


class AdaBoostSurrogate(Surrogate):
    """The reference ProTran surrogate: AdaBoost.R2 over unlimited-depth CART trees.

    Mean: the weighted median of the trees (scikit-learn's ``AdaBoostRegressor.predict``).
    Std: the unweighted standard deviation of the individual trees' predictions, as the reference
    computes it. That spread is not calibrated; it only ranks candidates.
    ``sample_weight`` is the initial boosting distribution (the rows each tree's resample draws from).
    """

    name = "adaboost"

    def __init__(
        self,
        *,
        n_estimators: int = 500,
        learning_rate: float = 1.0,
        loss: str = "linear",
        max_depth: int | None = None,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if loss not in _ADABOOST_LOSSES:
            raise ValueError(f"loss must be one of {_ADABOOST_LOSSES}, got {loss!r}")
        self.n_estimators = int(n_estimators)
        self.learning_rate = float(learning_rate)
        self.loss = loss
        self.max_depth = max_depth

    def _hyper_params(self) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "loss": self.loss,
            "max_depth": self.max_depth,
        }

    def _fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        trees, weights = adaboost_r2(X, y, self.n_estimators, self.learning_rate, self.loss, self.max_depth, self.seed,
                                     sample_weight)
        self.trees_ = TreeArrays.from_sklearn(trees)
        self.estimator_weights_ = weights

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        each = self.trees_.predict_each(X)
        return weighted_median(each, self.estimator_weights_), each.std(axis=0)

    def _state(self, directory: Path) -> dict[str, np.ndarray]:
        return {**self.trees_.state("tree"), "estimator_weights": self.estimator_weights_}

    def _set_state(self, arrays: dict[str, np.ndarray], directory: Path) -> None:
        self.trees_ = TreeArrays.from_state(arrays, "tree")
        self.estimator_weights_ = arrays["estimator_weights"]


class GBDTEnsembleSurrogate(Surrogate):
    """A bagged ensemble of xgboost regressors with a calibrated spread.

    Each of ``n_members`` boosted models is trained on its own bootstrap sample with its own seed; the
    mean is their average. Boosted trees fit residuals, so the spread *inside* one model means
    nothing; the spread *across* bootstrap members does. With ``calibrate=True`` that spread is
    multiplied by a factor ``c`` fit so that ``|r| / (c s)`` has the median of ``|N(0, 1)|``, where ``r``
    are the out-of-bag residuals of the training rows and ``s`` the out-of-bag members' spread there:
    the std then matches the errors on unseen rows (noise included), not only the members'
    disagreement, and a few outlying measurements cannot inflate it.
    ``sample_weight`` reaches every member as xgboost's instance weights, taken along with the
    bootstrap rows (a row drawn twice carries its weight twice); the bootstrap itself stays uniform.
    """

    name = "gbdt"

    def __init__(
        self,
        *,
        n_members: int = 8,
        n_estimators: int = 200,
        max_depth: int = 3,
        learning_rate: float = 0.05,
        subsample: float = 0.8,
        colsample_bytree: float = 1.0,
        min_child_weight: float = 1.0,
        reg_lambda: float = 1.0,
        calibrate: bool = True,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if int(n_members) < 2:
            raise ValueError(f"n_members must be at least 2 to give a spread, got {n_members}")
        self.n_members = int(n_members)
        self.n_estimators = int(n_estimators)
        self.max_depth = int(max_depth)
        self.learning_rate = float(learning_rate)
        self.subsample = float(subsample)
        self.colsample_bytree = float(colsample_bytree)
        self.min_child_weight = float(min_child_weight)
        self.reg_lambda = float(reg_lambda)
        self.calibrate = bool(calibrate)

    def _hyper_params(self) -> dict[str, Any]:
        keys = (
            "n_members", "n_estimators", "max_depth", "learning_rate", "subsample",
            "colsample_bytree", "min_child_weight", "reg_lambda", "calibrate",
        )
        return {key: getattr(self, key) for key in keys}

    def _member(self, index: int):
        import xgboost

        return xgboost.XGBRegressor(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            min_child_weight=self.min_child_weight,
            reg_lambda=self.reg_lambda,
            random_state=self.seed * 1009 + index,
            n_jobs=1,
        )

    def _fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        rng = np.random.default_rng(self.seed)
        n_rows = X.shape[0]
        self.boosters_ = []
        in_bag = np.zeros((self.n_members, n_rows), dtype=bool)
        for index in range(self.n_members):
            rows = bootstrap_indices(rng, n_rows)
            in_bag[index, rows] = True
            weights = None if sample_weight is None else sample_weight[rows]
            self.boosters_.append(self._member(index).fit(X[rows], y[rows], sample_weight=weights).get_booster())
        each = self._predict_each(X)
        self.oob_mean_, counts = out_of_bag_mean(each, in_bag)
        self.calibration_ = self._calibration(each, in_bag, counts, y) if self.calibrate else 1.0

    def _calibration(self, each: np.ndarray, in_bag: np.ndarray, counts: np.ndarray, y: np.ndarray) -> float:
        usable = counts >= 2
        spread = np.nanstd(np.where(in_bag, np.nan, each)[:, usable], axis=0, ddof=1)
        return robust_scale_ratio(y[usable] - self.oob_mean_[usable], spread)

    def _predict_each(self, X: np.ndarray) -> np.ndarray:
        return np.stack([booster.inplace_predict(X).astype(np.float64) for booster in self.boosters_])

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        each = self._predict_each(X)
        return each.mean(axis=0), self.calibration_ * each.std(axis=0, ddof=1)

    def _out_of_sample(self) -> np.ndarray | None:
        return getattr(self, "oob_mean_", None)

    def _state(self, directory: Path) -> dict[str, np.ndarray]:
        for index, booster in enumerate(self.boosters_):
            booster.save_model(str(directory / f"member_{index}.json"))
        return {"calibration": np.asarray(self.calibration_)}

    def _set_state(self, arrays: dict[str, np.ndarray], directory: Path) -> None:
        import xgboost

        self.boosters_ = []
        for index in range(self.n_members):
            path = directory / f"member_{index}.json"
            if not path.is_file():
                raise FileNotFoundError(f"saved gbdt surrogate is missing {path.name}")
            booster = xgboost.Booster()
            booster.load_model(str(path))
            booster.set_param({"nthread": 1})
            self.boosters_.append(booster)
        self.calibration_ = float(arrays["calibration"])
