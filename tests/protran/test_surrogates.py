"""The surrogate zoo: one conformance test over every model, then model-specific behaviour."""

import json
import zipfile

import numpy as np
import pytest

from protran.surrogates import (
    COST_FEATURE_NAMES,
    FEATURE_SETS,
    SURROGATE_NAMES,
    NotFittedError,
    feature_names,
    featurize,
    load_surrogate,
    make_surrogate,
)
from protran.surrogates._trees import TreeArrays
from protran.vocabulary import COMPILED_FEATURE_SETS

# Small, fast settings; behaviour (not accuracy at scale) is under test.
FAST = {
    "gbdt": {"n_members": 4, "n_estimators": 40},
    "adaboost": {"n_estimators": 20},
    "dt": {},
    "lr": {},
    "additive": {"n_members": 4},
    "additive-gp": {"n_members": 4},
    "gpr": {"n_restarts": 0},
    "svr": {"n_members": 4},
    "mlp": {"n_members": 3, "hidden": (16, 16), "max_epochs": 150, "patience": 30},
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def target(X):
    """Positive, nonlinear, increasing in every input (so the additive cost model applies)."""
    return 1.0 + X[:, 0] ** 2 + 0.5 * X[:, 1] + 0.3 * np.sin(3.0 * X[:, 2])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 1.0, size=(40, 3))
    X_test = rng.uniform(0.0, 1.0, size=(100, 3))
    return X, target(X), X_test, target(X_test)


def fit(name, data, **extra):
    X, y, _, _ = data
    return make_surrogate(name, seed=3, **FAST[name], **extra).fit(X, y)


def test_fast_settings_cover_every_surrogate():
    assert set(FAST) == set(SURROGATE_NAMES)


@pytest.mark.parametrize("name", SURROGATE_NAMES)
def test_conformance(name, data, tmp_path):
    X, y, X_test, y_test = data
    model = make_surrogate(name, seed=3, **FAST[name])
    assert model.name == name

    # predicting before fit is a clear error
    with pytest.raises(NotFittedError, match="fit"):
        model.predict(X_test)

    # fit returns self; shapes; a finite, non-negative std
    assert model.fit(X, y) is model
    mean = model.predict(X_test)
    mean2, std = model.predict(X_test, return_std=True)
    assert mean.shape == std.shape == (len(X_test),)
    np.testing.assert_array_equal(mean, mean2)
    assert np.all(np.isfinite(std)) and np.all(std >= 0)

    # better than predicting a constant on a nonlinear function
    assert np.mean((mean - y_test) ** 2) < 0.5 * np.var(y_test)

    # deterministic for a seed
    again = make_surrogate(name, seed=3, **FAST[name]).fit(X, y).predict(X_test, return_std=True)
    np.testing.assert_array_equal(again[0], mean)
    np.testing.assert_array_equal(again[1], std)

    # wrong feature count is a clear error
    with pytest.raises(ValueError, match="features"):
        model.predict(X_test[:, :2])

    # save / load reproduces predictions exactly, without pickle
    model.metadata = {"measure": "latency", "scale": 2.5}
    path = model.save(tmp_path / name)
    files = sorted(p.name for p in path.iterdir())
    assert "surrogate.json" in files and "arrays.npz" in files
    assert all(f.endswith(".json") or f == "arrays.npz" for f in files)
    header = json.loads((path / "surrogate.json").read_text())
    assert header["name"] == name
    assert header["n_train_rows"] == len(X)
    assert header["target_transform"] == ("log" if model.log_target else "identity")
    assert "numpy" in header["versions"]
    with np.load(path / "arrays.npz", allow_pickle=False) as arrays:
        assert all(arrays[key].dtype != object for key in arrays.files)
    with zipfile.ZipFile(path / "arrays.npz") as archive:
        assert all(member.endswith(".npy") for member in archive.namelist())
    loaded = load_surrogate(path)
    assert type(loaded) is type(model)
    assert loaded.metadata == model.metadata
    loaded_mean, loaded_std = loaded.predict(X_test, return_std=True)
    np.testing.assert_array_equal(loaded_mean, mean)
    np.testing.assert_array_equal(loaded_std, std)


@pytest.mark.parametrize("name", SURROGATE_NAMES)
def test_log_target_gives_positive_predictions_and_round_trips(name, data, tmp_path):
    X, y, X_test, _ = data
    model = make_surrogate(name, seed=1, log_target=True, **FAST[name]).fit(X, y)
    mean, std = model.predict(X_test, return_std=True)
    assert np.all(mean > 0) and np.all(np.isfinite(std)) and np.all(std >= 0)
    loaded = load_surrogate(model.save(tmp_path / "m"))
    assert json.loads((tmp_path / "m" / "surrogate.json").read_text())["target_transform"] == "log"
    np.testing.assert_array_equal(loaded.predict(X_test), mean)


@pytest.mark.parametrize("name", SURROGATE_NAMES)
def test_bad_inputs_are_rejected(name, data):
    X, y, _, _ = data
    model = make_surrogate(name, **FAST[name])
    with pytest.raises(ValueError, match="NaN"):
        model.fit(np.where(np.eye(len(X), 3, dtype=bool), np.nan, X), y)
    with pytest.raises(ValueError, match="one value per row"):
        model.fit(X, y[:-1])
    with pytest.raises(ValueError, match="positive"):
        make_surrogate(name, log_target=True, **FAST[name]).fit(X, y - 10.0)


def test_make_surrogate_errors():
    with pytest.raises(ValueError, match="unknown surrogate 'nope'"):
        make_surrogate("nope")
    with pytest.raises(TypeError, match="gbdt"):
        make_surrogate("gbdt", not_a_parameter=1)


def test_load_surrogate_rejects_foreign_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="surrogate.json"):
        load_surrogate(tmp_path)
    (tmp_path / "surrogate.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="header"):
        load_surrogate(tmp_path)


@pytest.mark.parametrize("name", ["gbdt", "additive", "svr", "gpr", "lr"])
def test_out_of_sample_predictions_track_the_targets(name, data):
    X, y, _, _ = data
    model = fit(name, data)
    held_out = model.out_of_sample_predictions()
    assert held_out.shape == y.shape
    usable = np.isfinite(held_out)
    assert usable.mean() > 0.6  # 4 bagged members leave about 84% of the rows out at least once
    assert np.mean((held_out[usable] - y[usable]) ** 2) < 0.5 * np.var(y)


# -- gbdt: calibrated spread -----------------------------------------------------------------------


def _coverage(calibrate: bool, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)

    def f(X):
        return np.sin(3 * X[:, 0]) + X[:, 1] ** 2 + 0.5 * X[:, 2]

    X = rng.uniform(-1, 1, size=(250, 3))
    X_test = rng.uniform(-1, 1, size=(1000, 3))
    y = f(X) + rng.normal(0, 0.3, len(X))
    y_test = f(X_test) + rng.normal(0, 0.3, len(X_test))
    model = make_surrogate("gbdt", seed=seed, n_members=8, n_estimators=80, calibrate=calibrate).fit(X, y)
    mean, std = model.predict(X_test, return_std=True)
    z = np.abs(y_test - mean) / std
    return float(np.mean(z <= 1.0)), float(np.mean(z <= 2.0))


def test_gbdt_intervals_are_calibrated_on_noisy_data():
    within_1, within_2 = _coverage(calibrate=True, seed=0)
    assert 0.55 <= within_1 <= 0.85
    assert 0.85 <= within_2 <= 0.995
    raw_1, _ = _coverage(calibrate=False, seed=0)
    assert raw_1 < within_1  # the raw member spread alone is overconfident


# -- model specifics --------------------------------------------------------------------------------


def test_tree_arrays_match_scikit_learn():
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(80, 5)), rng.normal(size=80)
    trees = [DecisionTreeRegressor(max_depth=d, random_state=0).fit(X, y) for d in (2, None)]
    X_new = rng.normal(size=(50, 5))
    each = TreeArrays.from_sklearn([t.tree_ for t in trees]).predict_each(X_new)
    for row, tree in zip(each, trees):
        np.testing.assert_array_equal(row, tree.predict(X_new))


def test_adaboost_mean_is_scikit_learns_weighted_median(data):
    from sklearn.ensemble import AdaBoostRegressor
    from sklearn.tree import DecisionTreeRegressor

    X, y, X_test, _ = data
    ours = make_surrogate("adaboost", seed=5, n_estimators=30).fit(X, y)
    reference = AdaBoostRegressor(DecisionTreeRegressor(random_state=5), n_estimators=30, random_state=5).fit(X, y)
    mean, std = ours.predict(X_test, return_std=True)
    np.testing.assert_allclose(mean, reference.predict(X_test))
    spread = np.std([tree.predict(X_test) for tree in reference.estimators_], axis=0)
    np.testing.assert_allclose(std, spread)


def test_decision_tree_std_is_the_leaf_spread():
    X = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]])
    y = np.array([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    model = make_surrogate("dt", max_depth=1, min_samples_leaf=1).fit(X, y)
    mean, std = model.predict(np.array([[0.05], [1.05]]), return_std=True)
    np.testing.assert_allclose(mean, [2.0, 10.0])
    np.testing.assert_allclose(std, [np.std([1.0, 2.0, 3.0]), 0.0])


def test_additive_model_recovers_costs_and_ignores_outliers():
    rng = np.random.default_rng(2)
    X = rng.uniform(1, 10, size=(30, 3))
    y = 2.0 + 0.5 * X[:, 0] + 1.5 * X[:, 2]  # feature 1 adds nothing
    y_bad = y.copy()
    y_bad[:4] *= 5.0  # a few wild measurements, as on the first rows of a real board
    X_new = rng.uniform(1, 10, size=(20, 3))
    truth = 2.0 + 0.5 * X_new[:, 0] + 1.5 * X_new[:, 2]
    robust = make_surrogate("additive", n_members=4).fit(X, y_bad)
    np.testing.assert_allclose(robust.predict(X_new), truth, rtol=0.03)
    plain = make_surrogate("additive", n_members=4, loss="linear").fit(X, y_bad)
    assert np.abs(plain.predict(X_new) / truth - 1).max() > 0.1


def test_additive_residual_gp_corrects_what_the_features_miss(data, tmp_path):
    X, y, X_test, y_test = data
    plain = make_surrogate("additive", n_members=4).fit(X, y)
    corrected = make_surrogate("additive", n_members=4, residual_gp=True).fit(X, y)

    def error(model):
        return np.mean((model.predict(X_test) - y_test) ** 2)

    assert error(corrected) < 0.5 * error(plain)  # sin(3 x) is not a sum of non-negative costs
    loaded = load_surrogate(corrected.save(tmp_path / "m"))
    for a, b in zip(loaded.predict(X_test, return_std=True), corrected.predict(X_test, return_std=True)):
        np.testing.assert_array_equal(a, b)
    held_out = corrected.out_of_sample_predictions()
    usable = np.isfinite(held_out)
    plain_held_out = plain.out_of_sample_predictions()
    assert np.mean((held_out[usable] - y[usable]) ** 2) < np.mean((plain_held_out[usable] - y[usable]) ** 2)


def test_additive_gp_follows_a_row_that_the_robust_fit_calls_an_outlier():
    rng = np.random.default_rng(4)
    X = rng.uniform(1, 10, size=(30, 3))
    y = 2.0 + 0.5 * X[:, 0] + 1.5 * X[:, 2]
    corner = np.array([[1.0, 1.0, 9.0]])  # where the costs say 16 and the board takes 10
    X, y = np.vstack([X, corner]), np.append(y, 10.0)
    robust = make_surrogate("additive", n_members=4).fit(X, y)
    follows = make_surrogate("additive-gp", n_members=4).fit(X, y)
    assert robust.predict(corner)[0] > 10.0 * 1.3  # the measurement was set aside as an outlier
    assert follows.predict(corner)[0] == pytest.approx(10.0, rel=0.15)
    typical = rng.uniform(1, 10, size=(20, 3))
    truth = 2.0 + 0.5 * typical[:, 0] + 1.5 * typical[:, 2]
    np.testing.assert_allclose(follows.predict(typical), truth, rtol=0.1)
    assert follows.residual_gp and follows.loss == "linear"


def test_additive_model_needs_non_negative_features():
    with pytest.raises(ValueError, match="non-negative"):
        make_surrogate("additive").fit(np.array([[1.0], [-1.0], [2.0]]), np.array([1.0, 2.0, 3.0]))


def test_ensemble_sizes_are_checked():
    for name in ("gbdt", "additive", "svr", "mlp"):
        with pytest.raises(ValueError, match="n_members"):
            make_surrogate(name, n_members=1)


# -- features ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def specs():
    from flexibert import sample_architectures

    return sample_architectures(6, method="random", seed=0)


@pytest.mark.parametrize("features", [f for f in FEATURE_SETS if f not in COMPILED_FEATURE_SETS])
def test_featurize_shapes_and_names(features, specs):  # costs+graph: tests/protran/test_graphs.py
    X = featurize(specs, features=features)
    assert X.shape == (len(specs), len(feature_names(features)))
    assert np.all(np.isfinite(X))
    assert featurize([], features=features).shape == (0, X.shape[1])


def test_featurize_sets_and_errors(specs):
    from flexibert import embed

    both = featurize(specs, features="both")
    np.testing.assert_array_equal(both[:, :37], featurize(specs, features="embedding"))
    np.testing.assert_array_equal(both[:, 37:], featurize(specs, features="analytic"))
    assert featurize(specs[:1])[0].tolist() == [float(v) for v in embed(specs[0])]
    costs = featurize(specs, features="costs")
    assert np.all(costs > 0) and len(COST_FEATURE_NAMES) == costs.shape[1]
    model_dicts = [spec.to_model_dict() for spec in specs]
    np.testing.assert_array_equal(featurize(model_dicts, features="costs"), costs)
    with pytest.raises(ValueError, match="unknown feature set"):
        featurize(specs, features="pixels")
    with pytest.raises(TypeError, match="sequence"):
        featurize(specs[0], features="costs")


def test_costs_grow_with_the_batch(specs):
    one = featurize(specs, features="costs", batch_size=1)
    many = featurize(specs, features="costs", batch_size=8)
    flops = COST_FEATURE_NAMES.index("gflops")
    np.testing.assert_allclose(many[:, flops], 8 * one[:, flops])
    np.testing.assert_array_equal(many[:, 0], one[:, 0])  # parameters do not depend on the batch


# Weight k on a row should act like k copies of it. Exactly so for the additive model (weighted
# least squares, up to the solver's tolerance); for Bayesian ridge closely (its evidence updates
# count rows, not weight). Elsewhere the copies also change bootstraps, scalings, tree limits or
# hyper-parameter fits, so the test checks the weaker property that matters: down-weighting a few
# outliers lowers the error on clean held-out truth (the additive model's robust loss already
# ignores outliers, so it is checked by the copies alone).
_COPIES_TOLERANCE = {"additive": 1e-4, "lr": 2e-2}


@pytest.mark.parametrize("name", SURROGATE_NAMES)
def test_sample_weight_conformance(name, data):
    X, y, X_test, y_test = data
    n = len(y)

    def fit_predict(X_fit, y_fit, sample_weight=None):
        model = make_surrogate(name, seed=3, **FAST[name]).fit(X_fit, y_fit, sample_weight=sample_weight)
        return model.predict(X_test, return_std=True)

    # None and all-ones (any constant) are the unweighted fit, bit for bit
    plain = fit_predict(X, y)
    ones = fit_predict(X, y, np.full(n, 2.5))
    np.testing.assert_array_equal(plain[0], ones[0])
    np.testing.assert_array_equal(plain[1], ones[1])

    # bad weights are refused before any fitting
    model = make_surrogate(name, **FAST[name])
    for bad in (np.full(n - 1, 1.0), np.full((n, 1), 1.0), np.r_[-1.0, np.ones(n - 1)],
                np.r_[np.nan, np.ones(n - 1)], np.zeros(n)):
        with pytest.raises(ValueError, match="sample_weight"):
            model.fit(X, y, sample_weight=bad)
    assert not model.is_fitted

    if name in _COPIES_TOLERANCE:
        weights = np.ones(n)
        weights[:10] = 3.0
        copies = fit_predict(np.vstack([X, X[:10], X[:10]]), np.r_[y, y[:10], y[:10]])[0]
        weighted = fit_predict(X, y, weights)[0]
        np.testing.assert_allclose(weighted, copies, rtol=_COPIES_TOLERANCE[name])
        assert np.mean(np.abs(plain[0] - copies)) > 10 * np.mean(np.abs(weighted - copies))
    else:
        noisy = y.copy()
        noisy[:6] *= np.array([3.0, 0.3, 3.0, 0.3, 3.0, 0.3])
        weights = np.ones(n)
        weights[:6] = 0.05
        error_equal = np.mean((fit_predict(X, noisy)[0] - y_test) ** 2)
        error_weighted = np.mean((fit_predict(X, noisy, weights)[0] - y_test) ** 2)
        assert error_weighted < 0.75 * error_equal
