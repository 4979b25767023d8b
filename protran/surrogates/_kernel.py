"""Kernel surrogates: a Gaussian process and a bagged support-vector regressor.

Both keep only plain arrays after ``fit`` (training inputs, dual coefficients, Cholesky factor,
kernel hyper-parameters) and predict from them with the same code before and after loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from protran.surrogates._base import (
    Standardizer,
    Surrogate,
    bootstrap_indices,
    out_of_bag_mean,
    robust_scale_ratio,
)

_KERNELS = ("matern", "rbf")


def _row_noise_kernel(noise: float, bounds, inverse_weight: np.ndarray):
    """A white-noise kernel whose level on the training rows is ``noise / w_i`` (per-row noise)."""
    from sklearn.gaussian_process.kernels import WhiteKernel

    class RowNoiseKernel(WhiteKernel):
        def __init__(self, noise_level=1.0, noise_level_bounds=(1e-5, 1e5), inverse_weight=None):
            super().__init__(noise_level, noise_level_bounds)
            self.inverse_weight = inverse_weight

        def __call__(self, X, Y=None, eval_gradient=False):
            result = super().__call__(X, Y, eval_gradient)
            training = Y is None and self.inverse_weight is not None and len(X) == len(self.inverse_weight)
            if not training:
                return result
            scale = np.diag(self.inverse_weight)
            if eval_gradient:
                K, gradient = result
                return K @ scale, gradient * self.inverse_weight[None, :, None] * np.eye(len(X))[:, :, None]
            return result @ scale

    return RowNoiseKernel(noise, bounds, inverse_weight)


def _gp_kernel(name: str, nu: float, constant: float, length_scale, noise: float, fixed: bool = False,
               inverse_weight: np.ndarray | None = None):
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern, WhiteKernel

    bounds = "fixed" if fixed else None
    length_scale = np.asarray(length_scale, dtype=float)
    length_scale = float(length_scale) if length_scale.ndim == 0 else length_scale
    if name == "matern":
        shape = Matern(length_scale, (1e-2, 1e3) if bounds is None else bounds, nu=nu)
    else:
        shape = RBF(length_scale, (1e-2, 1e3) if bounds is None else bounds)
    scale = ConstantKernel(constant, (1e-3, 1e3) if bounds is None else bounds)
    noise_bounds = (1e-6, 1e1) if bounds is None else bounds
    if inverse_weight is None:
        white = WhiteKernel(noise, noise_bounds)
    else:
        white = _row_noise_kernel(noise, noise_bounds, inverse_weight)
    return scale * shape + white


class GaussianProcessSurrogate(Surrogate):
    """scikit-learn ``GaussianProcessRegressor`` with ``C * Matern(nu) + White`` (or RBF) on
    standardised features, ``normalize_y=True``. The std includes the fitted noise level.
    ``ard=True`` gives one length scale per feature (slow for the 37-entry embedding).
    Out-of-sample predictions are the exact leave-one-out values at the fitted hyper-parameters.

    ``sample_weight`` makes the noise per row: row ``i`` gets the noise level ``sigma^2 / w_i``
    (``sigma^2`` the fitted white-noise level, i.e. the noise of a row of average weight, as weights
    have mean 1), so a row of weight 2 counts as two independent copies of it would for the
    posterior at given hyper-parameters (the hyper-parameters, feature scaling and target
    normalisation still see each row once). This is the ``alpha_i = base_alpha / w_i`` of
    scikit-learn's per-row ``alpha`` with the base fitted instead of fixed. A weight of 0 is
    floored at 1e-12 (a row with practically infinite noise). Predictions at new rows use the noise
    ``sigma^2`` of an average row.
    """

    name = "gpr"

    def __init__(
        self, *, kernel: str = "matern", nu: float = 2.5, ard: bool = False, n_restarts: int = 2, **base: Any
    ) -> None:
        super().__init__(**base)
        if kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {_KERNELS}, got {kernel!r}")
        self.kernel = kernel
        self.nu = float(nu)
        self.ard = bool(ard)
        self.n_restarts = int(n_restarts)

    def _hyper_params(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "nu": self.nu, "ard": self.ard, "n_restarts": self.n_restarts}

    def _fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor

        self.scaler_ = Standardizer().fit(X)
        Z = self.scaler_.transform(X)
        length_scale = np.ones(Z.shape[1]) if self.ard else 1.0
        inverse_weight = None if sample_weight is None else 1.0 / np.maximum(sample_weight, 1e-12)
        model = GaussianProcessRegressor(
            _gp_kernel(self.kernel, self.nu, 1.0, length_scale, 1e-2, inverse_weight=inverse_weight),
            normalize_y=True,
            n_restarts_optimizer=self.n_restarts,
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            # Bounds hit on tiny data sets are expected; the fit is still usable.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(Z, y)
        fitted = model.kernel_
        self.constant_ = float(fitted.k1.k1.constant_value)
        self.length_scale_ = np.atleast_1d(np.asarray(fitted.k1.k2.length_scale, dtype=float))
        self.noise_ = float(fitted.k2.noise_level)
        self.z_train_ = Z
        self.alpha_ = np.asarray(model.alpha_, dtype=float).ravel()
        self.cholesky_ = np.asarray(model.L_, dtype=float)
        self.y_mean_ = float(np.ravel(model._y_train_mean)[0])
        self.y_std_ = float(np.ravel(model._y_train_std)[0])

    def _kernel_object(self):
        length_scale = self.length_scale_ if self.ard else self.length_scale_[0]
        return _gp_kernel(self.kernel, self.nu, self.constant_, length_scale, self.noise_, fixed=True)

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.linalg import solve_triangular

        kernel = self._kernel_object()
        Z = self.scaler_.transform(X)
        cross = kernel(Z, self.z_train_)
        mean = cross @ self.alpha_
        v = solve_triangular(self.cholesky_, cross.T, lower=True, check_finite=False)
        variance = np.maximum(kernel.diag(Z) - np.einsum("ij,ij->j", v, v), 0.0)
        return mean * self.y_std_ + self.y_mean_, np.sqrt(variance) * self.y_std_

    def _out_of_sample(self) -> np.ndarray | None:
        from scipy.linalg import cho_solve

        if not hasattr(self, "alpha_"):
            return None
        inverse_diag = np.diag(cho_solve((self.cholesky_, True), np.eye(len(self.alpha_))))
        normalised_y = self.cholesky_ @ (self.cholesky_.T @ self.alpha_)
        loo = normalised_y - self.alpha_ / inverse_diag
        return loo * self.y_std_ + self.y_mean_

    def _state(self, directory: Path) -> dict[str, np.ndarray]:
        return {
            **self.scaler_.state(),
            "constant": np.asarray(self.constant_),
            "length_scale": self.length_scale_,
            "noise": np.asarray(self.noise_),
            "z_train": self.z_train_,
            "alpha": self.alpha_,
            "cholesky": self.cholesky_,
            "y_mean": np.asarray(self.y_mean_),
            "y_std": np.asarray(self.y_std_),
        }

    def _set_state(self, arrays: dict[str, np.ndarray], directory: Path) -> None:
        self.scaler_ = Standardizer.from_state(arrays)
        self.constant_ = float(arrays["constant"])
        self.length_scale_ = arrays["length_scale"]
        self.noise_ = float(arrays["noise"])
        self.z_train_ = arrays["z_train"]
        self.alpha_ = arrays["alpha"]
        self.cholesky_ = arrays["cholesky"]
        self.y_mean_ = float(arrays["y_mean"])
        self.y_std_ = float(arrays["y_std"])


class SVRSurrogate(Surrogate):
    """RBF support-vector regression on standardised features and targets.

    The mean is the SVR fit on all rows. The std is the spread of ``n_members`` SVRs fit on bootstrap
    samples, rescaled (robustly) to match their out-of-bag residuals, like the ``gbdt`` ensemble.
    ``sample_weight`` goes to scikit-learn's ``SVR`` (it scales ``C`` per row), for the full model and
    for each member along with its bootstrap rows.
    """

    name = "svr"

    def __init__(
        self, *, C: float = 10.0, epsilon: float = 0.05, gamma: float | str = "scale", n_members: int = 8, **base: Any
    ) -> None:
        super().__init__(**base)
        if int(n_members) < 2:
            raise ValueError(f"n_members must be at least 2 to give a spread, got {n_members}")
        self.C = float(C)
        self.epsilon = float(epsilon)
        self.gamma = gamma
        self.n_members = int(n_members)

    def _hyper_params(self) -> dict[str, Any]:
        return {"C": self.C, "epsilon": self.epsilon, "gamma": self.gamma, "n_members": self.n_members}

    def _fit_one(
        self, Z: np.ndarray, t: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, float]:
        from sklearn.svm import SVR

        model = SVR(kernel="rbf", C=self.C, epsilon=self.epsilon, gamma=self.gamma_).fit(Z, t, sample_weight=weights)
        return Z[model.support_], np.asarray(model.dual_coef_, dtype=float).ravel(), float(model.intercept_[0])

    def _fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        self.scaler_ = Standardizer().fit(X)
        Z = self.scaler_.transform(X)
        self.y_mean_ = float(y.mean())
        self.y_std_ = float(y.std()) or 1.0
        t = (y - self.y_mean_) / self.y_std_
        variance = Z.var()
        self.gamma_ = 1.0 / (Z.shape[1] * variance) if self.gamma == "scale" and variance > 0 else (
            1.0 if self.gamma == "scale" else float(self.gamma)
        )
        rng = np.random.default_rng(self.seed)
        fits = [self._fit_one(Z, t, sample_weight)]
        in_bag = np.zeros((self.n_members, Z.shape[0]), dtype=bool)
        for index in range(self.n_members):
            rows = bootstrap_indices(rng, Z.shape[0])
            in_bag[index, rows] = True
            fits.append(self._fit_one(Z[rows], t[rows], None if sample_weight is None else sample_weight[rows]))
        self.support_ = np.concatenate([fit[0] for fit in fits])
        self.dual_ = np.concatenate([fit[1] for fit in fits])
        self.intercepts_ = np.array([fit[2] for fit in fits])
        self.bounds_ = np.cumsum([0] + [len(fit[1]) for fit in fits])
        self.calibration_ = 1.0
        each = self._each(Z)[1:]
        oob, counts = out_of_bag_mean(each, in_bag)
        self.oob_ = oob * self.y_std_ + self.y_mean_
        usable = counts >= 2
        spread = np.nanstd(np.where(in_bag, np.nan, each)[:, usable], axis=0, ddof=1)
        self.calibration_ = robust_scale_ratio(t[usable] - oob[usable], spread)

    def _each(self, Z: np.ndarray) -> np.ndarray:
        """Outputs (standardised) of the full model (row 0) and of each bootstrap member."""
        from scipy.spatial.distance import cdist

        gram = np.exp(-self.gamma_ * cdist(Z, self.support_, "sqeuclidean"))
        outputs = [
            gram[:, start:stop] @ self.dual_[start:stop] + intercept
            for start, stop, intercept in zip(self.bounds_[:-1], self.bounds_[1:], self.intercepts_)
        ]
        return np.stack(outputs)

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        each = self._each(self.scaler_.transform(X))
        std = self.calibration_ * each[1:].std(axis=0, ddof=1)
        return each[0] * self.y_std_ + self.y_mean_, std * self.y_std_

    def _out_of_sample(self) -> np.ndarray | None:
        return getattr(self, "oob_", None)

    def _state(self, directory: Path) -> dict[str, np.ndarray]:
        return {
            **self.scaler_.state(),
            "support": self.support_,
            "dual": self.dual_,
            "intercepts": self.intercepts_,
            "bounds": self.bounds_,
            "gamma": np.asarray(self.gamma_),
            "y_mean": np.asarray(self.y_mean_),
            "y_std": np.asarray(self.y_std_),
            "calibration": np.asarray(self.calibration_),
        }

    def _set_state(self, arrays: dict[str, np.ndarray], directory: Path) -> None:
        self.scaler_ = Standardizer.from_state(arrays)
        self.support_ = arrays["support"]
        self.dual_ = arrays["dual"]
        self.intercepts_ = arrays["intercepts"]
        self.bounds_ = arrays["bounds"]
        self.gamma_ = float(arrays["gamma"])
        self.y_mean_ = float(arrays["y_mean"])
        self.y_std_ = float(arrays["y_std"])
        self.calibration_ = float(arrays["calibration"])
