"""The co-design problem: encoding, projection to valid pairs, sampling, mutation and EVALUATE."""

import numpy as np
import pytest

from boshcode._objective import P_MIN, Weights
from boshcode._problem import CodesignProblem, Constraints
from flexibert import decode, is_valid_embedding, sample_architectures

from .conftest import FakeOracle, embedding_of

WEIGHTS = Weights(0.5, 0.2, 0.2, 0.1)


@pytest.fixture
def problem(oracle) -> CodesignProblem:
    return CodesignProblem(oracle, WEIGHTS)


def test_projection_of_any_real_point_decodes(problem):
    rng = np.random.default_rng(0)
    Z = rng.uniform(-0.5, 1.5, (500, problem.arch_dim))
    X = problem.project_arch(Z)
    assert X.dtype == np.int64
    assert np.all((X >= 0) & (problem.upper >= X))
    assert all(is_valid_embedding(row) for row in X)


def test_projection_keeps_valid_embeddings_and_rounds_to_the_nearest(problem):
    rng = np.random.default_rng(1)
    X = problem.random_embeddings(200, rng)
    Z = problem.encode_arch(X)
    np.testing.assert_array_equal(problem.project_arch(Z), X)
    # Less than half a step off in every used entry: the projection is the point we started from.
    step = 1.0 / np.where(problem.upper > 0, problem.upper, 1)
    used = ~problem.unused_slots(Z)
    noisy = Z + used * rng.uniform(-0.45, 0.45, Z.shape) * step
    np.testing.assert_array_equal(problem.project_arch(noisy), X)


def test_projection_zeroes_slots_past_the_layer_count(problem):
    Z = np.full((1, problem.arch_dim), 0.5)
    Z[0, 0] = 0.0  # two layers: slots 7.. are unused
    X = problem.project_arch(Z)[0]
    assert decode(X).num_layers == 2
    assert np.all(X[7:] == 0) and np.all(X[1:7] > 0)
    assert not problem.is_consistent(Z)[0]
    assert problem.is_consistent(problem.encode_arch(X[None]))[0]


def test_random_embeddings_are_valid_and_cover_every_depth(problem):
    X = problem.random_embeddings(600, np.random.default_rng(2))
    assert all(is_valid_embedding(row) for row in X)
    assert set(X[:, 0]) == set(range(problem.upper[0] + 1))


def test_mutations_are_valid_neighbours(problem):
    rng = np.random.default_rng(3)
    X = problem.random_embeddings(300, rng)
    for n_changes in (1, 2):
        M = problem.mutate(X, rng, n_changes)
        assert all(is_valid_embedding(row) for row in M)
        same_depth = M[:, 0] == X[:, 0]
        changed = np.sum(M[same_depth] != X[same_depth], axis=1)
        assert np.all(changed <= n_changes)
        assert np.mean(changed > 0) > 0.5  # a mutation usually changes something


def test_initial_pairs_are_seeded_and_balanced_over_devices(oracle):
    problem = CodesignProblem(FakeOracle(devices=("fast", "slow", "tiny")), WEIGHTS)
    X, d = problem.initial_pairs(12, seed=7)
    X2, d2 = problem.initial_pairs(12, seed=7)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(d, d2)
    assert np.bincount(d, minlength=3).tolist() == [4, 4, 4]
    assert all(is_valid_embedding(row) for row in X)
    X3, _ = problem.initial_pairs(12, seed=8)
    assert not np.array_equal(X, X3)


def test_encoding_is_normalised_embedding_and_one_hot_device(problem):
    X = problem.random_embeddings(5, np.random.default_rng(4))
    E = problem.encode(X, np.array([0, 1, 0, 1, 1]))
    assert E.shape == (5, problem.arch_dim + 2)
    assert np.all((E >= 0) & (E <= 1))
    np.testing.assert_array_equal(E[:, -2:], [[1, 0], [0, 1], [1, 0], [0, 1], [0, 1]])


def test_evaluate_scores_p_and_asks_each_pair_once(oracle, problem):
    specs = sample_architectures(4, method="random", seed=5)
    X = np.array([embedding_of(spec) for spec in specs])
    d = np.array([0, 1, 0, 1])
    first = problem.evaluate(X, d)
    assert oracle.calls == 4
    again = problem.evaluate(X[::-1], d[::-1])
    assert oracle.calls == 4 and [e.performance for e in again] == [e.performance for e in first][::-1]
    predicted = oracle.predict(specs[:1], "fast")
    bounds = oracle.bounds

    def log_term(measure):
        low, high = getattr(bounds, measure)
        value = np.clip(predicted[measure]["mean"][0], low, high)
        return 1 - (np.log(value) - np.log(low)) / (np.log(high) - np.log(low))

    low, high = bounds.accuracy
    expected = (0.5 * np.clip((predicted["accuracy"]["mean"][0] - low) / (high - low), 0, 1)
                + 0.2 * log_term("energy_j") + 0.2 * log_term("peak_power_w") + 0.1 * log_term("latency_s"))
    assert problem.normalise == "log"
    assert first[0].performance == pytest.approx(expected)
    assert 0 < first[0].performance_std < 0.5
    assert problem.seen(X, d).all() and not problem.seen(X, 1 - d).any()


def test_constraint_violations_score_p_min(oracle):
    specs = sample_architectures(6, method="random", seed=6)
    X = np.array([embedding_of(spec) for spec in specs])
    d = np.zeros(len(X), dtype=np.int64)
    free = CodesignProblem(oracle, WEIGHTS).evaluate(X, d)
    latencies = sorted(e.means["latency_s"] for e in free)
    limit = latencies[2]
    bounded = CodesignProblem(FakeOracle(), WEIGHTS, constraints=Constraints(max_latency_s=limit)).evaluate(X, d)
    for loose, tight in zip(free, bounded):
        if loose.means["latency_s"] <= limit:
            assert tight.feasible and tight.performance == loose.performance
        else:
            assert not tight.feasible and tight.performance == P_MIN
    with pytest.raises(ValueError, match="positive"):
        Constraints(max_energy_j=-1.0)


def test_devices_without_a_power_meter_are_left_out_with_a_warning():
    oracle = FakeOracle(devices=("fast", "slow"), no_meter=("slow",))
    with pytest.warns(UserWarning, match="slow .no energy_j, peak_power_w."):
        problem = CodesignProblem(oracle, WEIGHTS)
    assert problem.devices == ["fast"]
    latency_only = CodesignProblem(oracle, Weights(0.5, 0.0, 0.0, 0.5))
    assert latency_only.devices == ["fast", "slow"]
    with pytest.raises(ValueError, match="no device can give every measure.*slow .no energy_j"):
        CodesignProblem(FakeOracle(devices=("slow",), no_meter=("slow",)), WEIGHTS)


def test_unknown_devices_are_named():
    with pytest.raises(ValueError, match="unknown device.*'gpu'"):
        CodesignProblem(FakeOracle(), WEIGHTS, devices=["gpu"])


def test_describe_is_json_ready(problem):
    X = problem.random_embeddings(1, np.random.default_rng(8))
    described = problem.describe(problem.evaluate(X, np.array([1]))[0])
    assert described["device"] == "slow"
    assert set(described["predicted"]) == {"accuracy", "latency_s", "energy_j", "peak_power_w"}
    assert decode(described["embedding"]).to_model_dict() == described["model_dict"]
    assert len(described["hash"]) == 32
