"""The active-learning core with synthetic oracles (no measurement, no data files)."""

import math

import numpy as np
import pytest

from protran._active import (
    ActiveLearner,
    TransferPrior,
    random_acquisition,
    run_active_learning,
    uncertainty_acquisition,
)
from protran.surrogates import make_surrogate
from protran.vocabulary import MEASURE_NAMES as MEASURES

N_POOL = 60


@pytest.fixture(scope="module")
def world():
    """A pool of items 0..N-1 with positive features and three smooth positive measures."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 5.0, size=(N_POOL, 3))
    Y = np.column_stack([
        0.2 + 0.3 * X[:, 0] + 0.1 * X[:, 1],
        1.0 + 2.0 * X[:, 0] + 0.5 * X[:, 2],
        3.0 + 0.2 * X[:, 1],
    ])
    return X, Y


def lr_factory(measure):
    return make_surrogate("lr")


def additive_factory(measure):
    return make_surrogate("additive", n_members=3)


def make_oracle(Y, calls=None):
    def oracle(item):
        if calls is not None:
            calls.append(item)
        return dict(zip(MEASURES, Y[item]))
    return oracle


def run(world, learner=None, **kwargs):
    X, Y = world
    learner = learner or ActiveLearner(lr_factory, seed=0)
    options = {"seed_items": list(range(8)), "stop_on_convergence": False, "max_samples": 20}
    options.update(kwargs)
    calls = options.pop("calls", None)
    return list(run_active_learning(
        learner, make_oracle(Y, calls), candidates=list(range(N_POOL)),
        featurize=lambda items: X[list(items)], **options))


def test_seeds_first_then_one_per_step_without_repeats(world):
    calls = []
    steps = run(world, calls=calls)
    assert calls[:8] == list(range(8))
    assert len(calls) == len(set(calls)) == 20
    assert [step.n_measured for step in steps] == list(range(8, 21))
    assert steps[0].new_items == list(range(8))
    assert all(len(step.new_items) == 1 for step in steps[1:])
    assert steps[-1].stop_reason == "max_samples"
    assert all(step.stop_reason is None for step in steps[:-1])


def test_converges_on_an_easy_problem(world):
    steps = run(world, target_mse=1e-3, patience=2, stop_on_convergence=True, max_samples=None)
    assert steps[-1].stop_reason == "converged"
    assert steps[-1].passes == 2
    assert all(value <= 1e-3 for value in steps[-1].val_mse.values())
    assert steps[-1].n_measured < N_POOL


def test_impossible_target_runs_to_the_end_of_the_pool(world):
    steps = run(world, target_mse=0.0, stop_on_convergence=True, max_samples=None)
    assert steps[-1].stop_reason == "pool_exhausted"
    assert steps[-1].n_measured == N_POOL


def test_uncertainty_queries_the_most_uncertain_candidate(world):
    X, Y = world
    learner = ActiveLearner(lr_factory).fit(X[:10], Y[:10])
    _, std = learner.predict(X[10:], normalised=True)
    assert learner.select(X[10:])[0] == int(np.argmax(std.sum(axis=1)))
    picked = uncertainty_acquisition(np.zeros((4, 3)), np.array([[1, 0, 0], [0, 0, 3], [1, 1, 0], [0, 0, 0]]),
                                     np.random.default_rng(0), 2)
    assert picked.tolist() == [1, 2]


def test_random_querying_is_seeded_and_skips_fits(world):
    first = [step.new_items for step in run(world, learner=ActiveLearner(lr_factory, acquisition="random", seed=4))]
    second = [step.new_items for step in run(world, learner=ActiveLearner(lr_factory, acquisition="random", seed=4))]
    other = [step.new_items for step in run(world, learner=ActiveLearner(lr_factory, acquisition="random", seed=5))]
    assert first == second != other
    sparse = run(world, learner=ActiveLearner(lr_factory, acquisition="random", seed=4), fit_when=lambda n: n % 4 == 0)
    assert [step.n_measured for step in sparse] == [8, 12, 16, 20]
    assert sum((step.new_items for step in sparse), []) == sum(first, [])
    assert random_acquisition(np.zeros((5, 1)), np.zeros((5, 1)), np.random.default_rng(0), 5).tolist() != []


def test_batches_and_custom_acquisition(world):
    def lowest_index(mean, std, rng, k):
        return np.arange(k)

    steps = run(world, learner=ActiveLearner(lr_factory, acquisition=lowest_index, batch_size=3), max_samples=17)
    assert [step.n_measured for step in steps] == [8, 11, 14, 17]
    assert steps[1].new_items == [8, 9, 10]


def test_failed_measurements_are_skipped_and_reported(world):
    X, Y = world

    def flaky(item):
        return None if item % 5 == 0 else dict(zip(MEASURES, Y[item]))

    steps = list(run_active_learning(ActiveLearner(lr_factory), flaky, list(range(N_POOL)), lambda i: X[list(i)],
                                     seed_items=list(range(8)), max_samples=15, stop_on_convergence=False))
    assert steps[0].failed_items == [0, 5]
    assert steps[0].n_measured == 6
    assert steps[-1].stop_reason == "max_samples"


def test_resume_does_not_measure_again(world):
    X, Y = world
    calls = []
    done = [(item, list(Y[item])) for item in range(5)]
    steps = list(run_active_learning(ActiveLearner(lr_factory), make_oracle(Y, calls), list(range(N_POOL)),
                                     lambda i: X[list(i)], seed_items=list(range(8)), measured=done,
                                     max_samples=10, stop_on_convergence=False))
    assert calls[:3] == [5, 6, 7] and not set(calls) & set(range(5))
    assert steps[-1].n_measured == 10


def test_fresh_candidate_pools_with_a_key(world):
    X, Y = world
    draws = []

    def candidates(rng):
        pool = [int(i) for i in rng.choice(N_POOL, size=10, replace=False)]
        draws.append(pool)
        return pool

    steps = list(run_active_learning(ActiveLearner(lr_factory, seed=1), make_oracle(Y), candidates,
                                     lambda i: X[list(i)], seed_items=list(range(6)), key=lambda i: i,
                                     max_samples=16, stop_on_convergence=False))
    measured = sum((step.new_items for step in steps), [])
    assert len(measured) == len(set(measured)) == 16
    assert len(draws) == 10


@pytest.mark.parametrize("validation", ["kfold", "split", "oob", "auto"])
def test_validation_modes(world, validation):
    X, Y = world
    learner = ActiveLearner(additive_factory, validation=validation).fit(X[:20], Y[:20])
    mse = learner.validation_mse()
    assert set(mse) == set(MEASURES)
    assert all(math.isfinite(v) and 0 <= v < 0.01 for v in mse.values())
    none = ActiveLearner(additive_factory, validation="none").fit(X[:20], Y[:20]).validation_mse()
    assert all(math.isnan(v) for v in none.values())


def test_scales(world):
    X, Y = world
    running = ActiveLearner(lr_factory, scale="max").fit(X[:10], Y[:10])
    np.testing.assert_allclose(running.scale_, Y[:10].max(axis=0))
    fixed = ActiveLearner(lr_factory, scale="2x_seed_max").fit(X[:10], Y[:10])
    fixed.fit(X[:30], Y[:30])
    np.testing.assert_allclose(fixed.scale_, 2 * Y[:10].max(axis=0))
    mean, _ = running.predict(X[:5])
    normalised, _ = running.predict(X[:5], normalised=True)
    np.testing.assert_allclose(mean, normalised * running.scale_)


def test_missing_measure_values_are_left_out(world):
    X, Y = world
    Y = Y.copy()
    Y[::2, 1] = np.nan
    learner = ActiveLearner(lr_factory).fit(X[:20], Y[:20])
    assert learner.models_["energy"].n_train_rows_ == 10
    assert np.all(np.isfinite(learner.predict(X[20:25])[0]))


def test_transfer_prior_adds_one_column_per_device(world):
    X, Y = world
    prior = TransferPrior(additive_factory).fit([(X, Y * 3.0), (X, Y + 1.0)])
    assert prior.columns(X[:7], "energy").shape == (7, 2)
    learner = ActiveLearner(additive_factory, prior=prior).fit(X[:4], Y[:4])
    assert learner.models_["latency"].n_features_in_ == X.shape[1] + 2
    mean, _ = learner.predict(X[4:])
    assert np.mean(np.abs(mean / Y[4:] - 1)) < 0.1  # four rows and the prior suffice here


def test_learner_input_errors(world):
    X, Y = world
    with pytest.raises(ValueError, match="acquisition"):
        ActiveLearner(lr_factory, acquisition="greedy")
    with pytest.raises(ValueError, match="validation"):
        ActiveLearner(lr_factory, validation="loo")
    with pytest.raises(ValueError, match="3 measures"):
        ActiveLearner(lr_factory).fit(X[:5], Y[:5, :2])
    with pytest.raises(RuntimeError, match="not fitted"):
        ActiveLearner(lr_factory).predict(X)
    with pytest.raises(ValueError, match="lacks measure"):
        list(run_active_learning(ActiveLearner(lr_factory), lambda item: {"latency": 1.0}, [0, 1, 2],
                                 lambda i: X[list(i)], seed_items=[0, 1]))
    with pytest.raises(RuntimeError, match="need at least 2"):
        list(run_active_learning(ActiveLearner(lr_factory), lambda item: None, [0, 1, 2],
                                 lambda i: X[list(i)], seed_items=[0, 1]))
