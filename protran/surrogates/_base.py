"""The contract every surrogate follows, its input checks, the target transform and persistence.

A surrogate maps a feature matrix to one measure and reports a predictive standard deviation.
Subclasses implement ``_fit`` and ``_predict`` on the *transformed* target and ``_state`` /
``_set_state`` for persistence; everything else (validation, log targets, the file format) lives here
so that every model behaves the same way.

Files: ``save(path)`` creates the directory ``path`` holding ``surrogate.json`` (a header with the
name, hyper-parameters, feature set, target transform, number of training rows and library
versions) and ``arrays.npz`` (plain numeric arrays, read back with ``allow_pickle=False``). Models
with a native text format (xgboost) add their own JSON files. Nothing is pickled.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

HEADER_FILE = "surrogate.json"
ARRAYS_FILE = "arrays.npz"
FILE_FORMAT = "edgetran-surrogate"
FORMAT_VERSION = 1

_VERSIONED = ("numpy", "scipy", "scikit-learn", "xgboost", "torch", "edgetran")


class NotFittedError(RuntimeError):
    """A surrogate was asked to predict or save before ``fit``."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class Surrogate:
    """Base class: ``fit(X, y, sample_weight=None) -> self``, ``predict(X, return_std=False)``, ``save(path)``.

    ``sample_weight`` (shape ``(n,)``, finite, non-negative, not all zero; None = equal weights) says
    how much each row counts, e.g. the inverse variance of a noisy measurement. Weights are
    normalised to mean 1 so that regularisation keeps its strength; an integer weight ``k`` on a row
    stands for ``k`` copies of it (exactly where the model allows, approximately otherwise: see each
    model). Equal weights are the unweighted fit, bit for bit.

    ``log_target=True`` fits the model to ``log(y)`` (targets must be positive). Predictions are then
    reported in original units as the median ``exp(mu)`` with the delta-method standard deviation
    ``exp(mu) * sigma``, where ``mu``/``sigma`` are the model's mean and std in log space.
    ``features`` is a free label of the feature set (saved in the header) and ``metadata`` a
    JSON-serialisable dict the caller may fill (for example the measure and its normalisation).
    """

    name: ClassVar[str] = "base"
    #: True when the subclass applies ``log_target`` itself (its loss is defined in log space).
    _handles_log_target: ClassVar[bool] = False

    def __init__(self, *, seed: int = 0, log_target: bool = False, features: str | None = None) -> None:
        self.seed = int(seed)
        self.log_target = bool(log_target)
        self.features = features
        self.metadata: dict[str, Any] = {}
        self.n_features_in_: int | None = None
        self.n_train_rows_: int | None = None

    # -- hyper-parameters -------------------------------------------------------------------------

    def _hyper_params(self) -> dict[str, Any]:
        """Model-specific constructor arguments (JSON-serialisable)."""
        return {}

    def get_params(self) -> dict[str, Any]:
        return {"seed": self.seed, "log_target": self.log_target, "features": self.features, **self._hyper_params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fit / predict --------------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None) -> Surrogate:
        X = self._check_X(X, fitting=True)
        y = np.asarray(y, dtype=float)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be a 1-D array with one value per row of X ({X.shape[0]}), got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinite values")
        if self.log_target and np.any(y <= 0):
            raise ValueError("log_target=True needs strictly positive targets; got a value <= 0")
        if X.shape[0] < 2:
            raise ValueError(f"need at least 2 training rows, got {X.shape[0]}")
        weights = check_sample_weight(sample_weight, X.shape[0])
        target = np.log(y) if self.log_target and not self._handles_log_target else y
        self.n_features_in_ = X.shape[1]
        self._fit(X, target, weights)
        self.n_train_rows_ = X.shape[0]
        return self

    def predict(self, X, return_std: bool = False):
        self._check_fitted()
        X = self._check_X(X, fitting=False)
        mean, std = self._predict(X)
        if self.log_target and not self._handles_log_target:
            mean = np.exp(mean)
            std = mean * std
        std = np.maximum(std, 0.0)
        return (mean, std) if return_std else mean

    def out_of_sample_predictions(self) -> np.ndarray | None:
        """Predictions for the last ``fit``'s rows from models that did not see them (NaN where none).

        Bagged models give them for free (out-of-bag); None when the model cannot, in which case
        callers cross-validate by refitting. Not kept by ``save``.
        """
        values = self._out_of_sample()
        if values is None:
            return None
        if self.log_target and not self._handles_log_target:
            return np.exp(values)
        return values

    def _out_of_sample(self) -> np.ndarray | None:
        return None

    def _fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        """Fit on the (transformed) target; ``sample_weight`` is None (equal weights) or has mean 1."""
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # -- checks -----------------------------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return self.n_train_rows_ is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} ('{self.name}') is not fitted yet; call fit(X, y) first")

    def _check_X(self, X, fitting: bool) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (rows x features), got {X.ndim} dimension(s)")
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinite values")
        if not fitting and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but this '{self.name}' surrogate was fitted on {self.n_features_in_}"
            )
        return X

    # -- persistence ------------------------------------------------------------------------------------

    def _state(self, directory: Path) -> dict[str, np.ndarray]:
        """Fitted arrays to store; may also write model-native files into ``directory``."""
        raise NotImplementedError

    def _set_state(self, arrays: dict[str, np.ndarray], directory: Path) -> None:
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write the fitted surrogate to the directory ``path`` (created; existing files replaced)."""
        self._check_fitted()
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = self._state(directory)
        np.savez(directory / ARRAYS_FILE, **arrays)
        header = {
            "format": FILE_FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "params": self.get_params(),
            "feature_set": self.features,
            "target_transform": "log" if self.log_target else "identity",
            "n_features": self.n_features_in_,
            "n_train_rows": self.n_train_rows_,
            "metadata": self.metadata,
            "versions": library_versions(),
        }
        (directory / HEADER_FILE).write_text(json.dumps(header, indent=2, sort_keys=True), encoding="utf-8")
        return directory

    @classmethod
    def _from_saved(cls, header: dict[str, Any], directory: Path) -> Surrogate:
        params = dict(header["params"])
        model = cls(**params)
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        model._set_state(arrays, directory)
        model.n_features_in_ = int(header["n_features"])
        model.n_train_rows_ = int(header["n_train_rows"])
        model.metadata = dict(header.get("metadata") or {})
        return model


def read_header(path: str | Path) -> dict[str, Any]:
    directory = Path(path)
    header_path = directory / HEADER_FILE
    if not header_path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved surrogate: {HEADER_FILE} is missing")
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{header_path} is not valid JSON: {error}") from None
    except RecursionError:
        raise ValueError(f"{header_path}: JSON nested too deeply (more than about a thousand levels)") from None
    if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
        raise ValueError(f"{header_path} is not an {FILE_FORMAT} header")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{header_path} has format version {header.get('format_version')}, this edgetran reads {FORMAT_VERSION}"
        )
    return header


def check_sample_weight(sample_weight, n_rows: int) -> np.ndarray | None:
    """Validated weights normalised to mean 1, or None when they are all equal (the unweighted fit)."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=float)
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},) (one weight per row), got {weights.shape}")
    if not np.all(np.isfinite(weights)):
        raise ValueError("sample_weight contains NaN or infinite values")
    if np.any(weights < 0):
        raise ValueError("sample_weight must be non-negative")
    total = weights.sum()
    if not total > 0:
        raise ValueError("sample_weight must not be all zero")
    if np.all(weights == weights[0]):
        return None
    return weights * (n_rows / total)


class Standardizer:
    """Column-wise centring and scaling learnt on the training rows (constant columns keep scale 1)."""

    def __init__(self, mean: np.ndarray | None = None, scale: np.ndarray | None = None) -> None:
        self.mean = mean
        self.scale = scale

    def fit(self, X: np.ndarray) -> Standardizer:
        self.mean = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale = np.where(scale > 1e-12, scale, 1.0)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) / self.scale

    def state(self, prefix: str = "x") -> dict[str, np.ndarray]:
        return {f"{prefix}_mean": self.mean, f"{prefix}_scale": self.scale}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], prefix: str = "x") -> Standardizer:
        return cls(arrays[f"{prefix}_mean"], arrays[f"{prefix}_scale"])


def bootstrap_indices(rng: np.random.Generator, n_rows: int) -> np.ndarray:
    """A bootstrap sample that holds at least two distinct rows (models need some spread)."""
    while True:
        rows = rng.integers(0, n_rows, size=n_rows)
        if np.unique(rows).size >= min(2, n_rows):
            return rows


def out_of_bag_mean(member_predictions: np.ndarray, in_bag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and count of the members' predictions for the rows they did not train on.

    ``member_predictions`` and ``in_bag`` are (members, rows); rows no member left out get NaN.
    """
    out = ~in_bag
    counts = out.sum(axis=0)
    sums = np.where(out, member_predictions, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return mean, counts


# median(|z|) of a standard normal: turns a median absolute ratio into a std ratio.
_NORMAL_MAD = 0.6744897501960817


def robust_scale_ratio(residuals: np.ndarray, spreads: np.ndarray) -> float:
    """Factor ``c`` such that ``c * spread`` is the std of ``residuals``, from a median (outliers in
    the measurements should not blow up every interval)."""
    usable = np.isfinite(residuals) & (spreads > 0)
    if usable.sum() < 2:
        return 1.0
    ratio = np.median(np.abs(residuals[usable]) / spreads[usable]) / _NORMAL_MAD
    return float(np.clip(ratio, 1e-3, 1e3))
