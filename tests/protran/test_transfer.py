"""Transfer to a new board: the prior-residual model, cross-validated R^2, the stopping rule, replay."""

import json

import numpy as np
import pytest

from protran._active import ActiveLearner, TransferPrior
from protran._transfer import (
    PREDICTABLE_R2,
    PRIOR_MIN_ROWS,
    PRIOR_SEED_SAMPLES,
    PriorResidual,
    cross_validated_r2,
    prior_converged,
)
from protran.surrogates import make_surrogate

MEASURES = ("latency",)
FAST = {"n_bootstrap": 4, "residual_trees": 5}


def board_costs(X, weights, overhead, warp=1.0):
    """A board's latency: an overhead plus a weighted sum of (non-negative) cost features, warped."""
    return (overhead + X @ weights) ** warp


@pytest.fixture(scope="module")
def boards():
    """Three known boards and a new one that is a scaled, warped mix of them (plus 1% noise)."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 1.0, size=(200, 4))
    known = [
        board_costs(X, np.array([1.0, 0.2, 0.1, 0.0]), 0.05),
        board_costs(X, np.array([0.3, 1.0, 0.2, 0.1]), 0.10),
        board_costs(X, np.array([0.5, 0.5, 0.0, 0.6]), 0.02),
    ]
    new = 7.0 * known[0] ** 0.45 * known[1] ** 0.4 * known[2] ** 0.35 * rng.normal(1.0, 0.01, len(X))
    return X, known, new


def fit_prior(X, known):
    factory = lambda measure: make_surrogate("additive", seed=0, n_members=3)  # noqa: E731
    return TransferPrior(factory, MEASURES).fit([(X[:120], y[:120, None]) for y in known])


@pytest.fixture(scope="module")
def prior(boards):
    X, known, _ = boards
    return fit_prior(X, known)


def test_contract(boards, prior):
    X, _, y = boards
    model = PriorResidual(prior, "latency", seed=1, **FAST)
    assert model.fit(X[:8], y[:8]) is model
    mean = model.predict(X[100:])
    mean2, std = model.predict(X[100:], return_std=True)
    assert mean.shape == std.shape == (100,)
    np.testing.assert_array_equal(mean, mean2)
    assert np.all(np.isfinite(mean)) and np.all(mean > 0)
    assert np.all(np.isfinite(std)) and np.all(std >= 0) and std.max() > 0
    oob = model.out_of_sample_predictions()
    assert oob is not None and oob.shape == (8,)


def test_deterministic_with_the_seed_and_seed_matters(boards, prior):
    X, _, y = boards
    a = PriorResidual(prior, "latency", seed=1, **FAST).fit(X[:8], y[:8]).predict(X[100:], return_std=True)
    b = PriorResidual(prior, "latency", seed=1, **FAST).fit(X[:8], y[:8]).predict(X[100:], return_std=True)
    c = PriorResidual(prior, "latency", seed=2, **FAST).fit(X[:8], y[:8]).predict(X[100:], return_std=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_sample_weight_changes_the_fit(boards, prior):
    X, _, y = boards
    y = y[:8].copy()
    y[0] *= 3.0  # an outlier: weighting it down must move the prediction there
    plain = PriorResidual(prior, "latency", seed=0, **FAST).fit(X[:8], y)
    weights = np.ones(8)
    weights[0] = 0.01
    weighted = PriorResidual(prior, "latency", seed=0, **FAST).fit(X[:8], y, sample_weight=weights)
    assert abs(weighted.predict(X[:1])[0] - plain.predict(X[:1])[0]) > 0.05 * plain.predict(X[:1])[0]
    # equal weights are the unweighted fit
    equal = PriorResidual(prior, "latency", seed=0, **FAST).fit(X[:8], y, sample_weight=np.full(8, 2.0))
    np.testing.assert_array_equal(equal.predict(X[100:]), plain.predict(X[100:]))
    with pytest.raises(ValueError, match="sample_weight"):
        PriorResidual(prior, "latency", **FAST).fit(X[:8], y, sample_weight=np.ones(7))


def test_few_rows_and_bad_input(boards, prior):
    X, _, y = boards
    for n in (2, 3):
        mean, std = PriorResidual(prior, "latency", **FAST).fit(X[:n], y[:n]).predict(X[100:], return_std=True)
        assert np.all(np.isfinite(mean)) and np.all(std >= 0)
    with pytest.raises(ValueError, match="at least 2"):
        PriorResidual(prior, "latency", **FAST).fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="positive"):
        PriorResidual(prior, "latency", **FAST).fit(X[:4], np.array([1.0, 0.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="no device"):
        PriorResidual(prior, "energy")
    with pytest.raises(RuntimeError, match="fit"):
        PriorResidual(prior, "latency").predict(X[:3])


def test_learns_a_warped_new_board_from_six_rows(boards, prior):
    """The new board is a power-law mix of the known ones, close to their geometric mean: the prior
    model needs only a scale and small corrections of the exponents; a model without prior has to
    learn the whole cost surface from six rows."""
    X, _, y = boards
    train, test = np.arange(120, 126), np.arange(140, 200)
    with_prior = PriorResidual(prior, "latency", seed=0).fit(X[train], y[train])
    without = make_surrogate("additive", seed=0).fit(X[train], y[train])
    scale = y.max()

    def mse(model):
        return float(np.mean(((model.predict(X[test]) - y[test]) / scale) ** 2))

    assert mse(with_prior) < 0.3 * mse(without)
    assert mse(with_prior) < 1e-3


def test_own_model_column_is_used(boards, prior):
    X, _, y = boards
    own = lambda: make_surrogate("additive", seed=0, n_members=2)  # noqa: E731
    model = PriorResidual(prior, "latency", own_model=own, **FAST).fit(X[:8], y[:8])
    assert model.coef_.shape == (1 + prior.n_columns("latency") + 1,)
    assert np.all(np.isfinite(model.predict(X[100:])))


def test_cross_validated_r2():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 1.0, size=(60, 3))
    learnable = 1.0 + 2.0 * X[:, 0] + X[:, 1]
    noise = rng.uniform(1.0, 2.0, size=60)
    make = lambda: make_surrogate("additive", seed=0, n_members=3)  # noqa: E731
    assert cross_validated_r2(make, X, learnable, folds=5, seed=0) > 0.98
    assert cross_validated_r2(make, X, noise, folds=5, seed=0) < 0.05
    assert cross_validated_r2(make, X, noise, folds=5, seed=0) == cross_validated_r2(make, X, noise, folds=5, seed=0)
    with pytest.raises(ValueError, match="3 rows"):
        cross_validated_r2(make, X[:2], learnable[:2])


def test_constants_and_stopping_rule():
    assert 4 <= PRIOR_SEED_SAMPLES <= 8
    assert 0.0 < PREDICTABLE_R2 < 1.0
    low, high = 0.001, 0.02
    assert not prior_converged([low, low], n_rows=PRIOR_MIN_ROWS - 1)  # too few rows
    assert prior_converged([high, low, low], n_rows=PRIOR_MIN_ROWS, patience=2)
    assert not prior_converged([low, high], n_rows=20, patience=2)  # the latest fit is above target
    assert not prior_converged([low], n_rows=20, patience=2)  # not yet patience fits
    assert not prior_converged([float("nan"), low], n_rows=20, patience=2)


def test_learner_uses_prior_residual_models(boards, prior):
    X, _, y = boards
    factory = lambda measure: make_surrogate("additive", seed=0, n_members=3)  # noqa: E731
    learner = ActiveLearner(factory, measures=MEASURES, prior=prior, transfer="residual",
                            transfer_params=FAST, validation="auto")
    learner.fit(X[120:126], y[120:126, None])
    assert isinstance(learner.models_["latency"], PriorResidual)
    mean, std = learner.predict(X[140:])
    assert mean.shape == std.shape == (60, 1)
    assert np.isfinite(learner.validation_mse()["latency"])
    columns = ActiveLearner(factory, measures=MEASURES, prior=prior).fit(X[120:126], y[120:126, None])
    assert not isinstance(columns.models_["latency"], PriorResidual)
    with pytest.raises(ValueError, match="transfer"):
        ActiveLearner(factory, measures=MEASURES, prior=prior, transfer="bogus")


def test_replay_with_residual_prior_and_few_seeds():
    from flexibert import model_hash, sample_architectures
    from protran import ProfileRow
    from protran._replay import replay
    from protran.surrogates import featurize

    specs = sample_architectures(40, method="random", seed=0)
    costs = featurize(specs, features="costs")

    def board(a, b, power):
        latency = 0.5 + a * costs[:, 0] + b * costs[:, 1]
        return [ProfileRow(spec, model_hash(spec), float(t), float(3.0 * t), float(power + 0.001 * costs[i, 0]))
                for i, (spec, t) in enumerate(zip(specs, latency))]

    new = board(0.02, 0.01, 5.0)
    priors = {"one": board(0.03, 0.005, 4.0), "two": board(0.01, 0.02, 6.0)}
    result = replay(new, prior_rows=priors, seed_samples=4, max_samples=8, transfer="residual",
                    transfer_params=FAST, seed_choice="lhs", test_fraction=0.25, validation="auto",
                    surrogate_params={"n_members": 3})
    json.dumps(result, allow_nan=False)
    assert set(result) >= {"samples_to_target", "curve", "n_rows", "n_test", "measured", "settings"}
    assert [entry["n"] for entry in result["curve"]] == list(range(4, 9))
    assert result["measured"][:4] == [row.arch_hash for row in new[:4]]  # the first LHS rows
    assert result["settings"]["seed_samples"] == 4
    assert set(result["curve"][0]) == {"n", "holdout_mse", "val_mse", "within_10pct"}
