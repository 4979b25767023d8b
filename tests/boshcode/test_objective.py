import numpy as np
import pytest

from boshcode._objective import (
    P_MIN,
    Bounds,
    Weights,
    normalised_terms,
    parse_weights,
    performance,
    performance_std,
    term_names,
    term_stds,
    term_weights,
)

MAXIMA = Bounds(accuracy=(0.1, 0.8), latency_s=(0.01, 10.0), energy_j=(1.0, 100.0), peak_power_w=(0.5, 50.0))


def test_weights_must_sum_to_one():
    Weights(0.5, 0.2, 0.2, 0.1)
    Weights(0.5, 0.2, 0.2, 0.1 + 5e-7)  # within the tolerance
    with pytest.raises(ValueError, match="sum to 1"):
        Weights(0.5, 0.2, 0.2, 0.2)
    with pytest.raises(ValueError, match="sum to 1"):
        Weights(0.5, 0.2, 0.2, 0.1 + 2e-6)


def test_negative_weights_are_rejected_by_name():
    with pytest.raises(ValueError, match="beta=-0.1"):
        Weights(0.7, -0.1, 0.3, 0.1)


def test_non_finite_weights_are_rejected():
    with pytest.raises(ValueError, match="finite"):
        parse_weights(float("nan"), 0.5, 0.5, 0.0)


def test_performance_by_hand():
    measures = {"accuracy": np.array([0.4, 0.8]), "latency_s": np.array([5.0, 0.0]),
                "energy_j": np.array([50.0, 100.0]), "peak_power_w": np.array([25.0, 0.0])}
    weights = Weights(0.4, 0.3, 0.2, 0.1)
    expected_0 = 0.4 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.1 * 0.5
    expected_1 = 0.4 * 1.0 + 0.3 * 0.0 + 0.2 * 1.0 + 0.1 * 1.0
    np.testing.assert_allclose(performance(measures, weights, MAXIMA, "max"), [expected_0, expected_1])


def test_measures_beyond_the_maximum_are_clipped():
    measures = {"accuracy": np.array([1.6]), "latency_s": np.array([30.0]), "energy_j": np.array([0.0]),
                "peak_power_w": np.array([0.0])}
    # accuracy counts as 1, latency as its maximum (term 0), so P stays in [0, 1].
    np.testing.assert_allclose(performance(measures, Weights(0.5, 0.2, 0.2, 0.1), MAXIMA, "max"), [0.9])


def test_zero_weight_measures_may_be_missing():
    measures = {"accuracy": np.array([0.4]), "latency_s": np.array([1.0]), "energy_j": None, "peak_power_w": None}
    np.testing.assert_allclose(performance(measures, Weights(0.5, 0.0, 0.0, 0.5), MAXIMA, "max"), [0.25 + 0.45])
    with pytest.raises(ValueError, match="energy_j"):
        performance(measures, Weights(0.5, 0.1, 0.0, 0.4), MAXIMA, "max")


def test_terms_times_weights_is_performance():
    rng = np.random.default_rng(0)
    measures = {"accuracy": rng.random(5), "latency_s": 10 * rng.random(5), "energy_j": 100 * rng.random(5),
                "peak_power_w": 50 * rng.random(5)}
    weights = Weights(0.3, 0.0, 0.3, 0.4)
    terms = normalised_terms(measures, weights, MAXIMA, "max")
    assert term_names(weights) == ["accuracy", "peak_power_w", "latency_s"]
    assert terms.shape == (5, 3) and np.all((terms >= 0) & (terms <= 1))
    np.testing.assert_allclose(terms @ term_weights(weights), performance(measures, weights, MAXIMA, "max"))


def test_bounds_check_names_the_missing_measure():
    maxima = Bounds(accuracy=(0.1, 0.8), latency_s=(1.0, 10.0))
    maxima.check(Weights(0.5, 0.0, 0.0, 0.5))
    with pytest.raises(ValueError, match="energy_j"):
        maxima.check(Weights(0.5, 0.5, 0.0, 0.0))


def test_p_min_is_the_least_performance():
    measures = {"accuracy": np.array([0.0]), "latency_s": np.array([1e9]), "energy_j": np.array([1e9]),
                "peak_power_w": np.array([1e9])}
    for normalise in ("max", "log"):
        assert performance(measures, Weights(0.25, 0.25, 0.25, 0.25), MAXIMA, normalise)[0] == P_MIN


def test_log_normalisation_by_hand():
    # accuracy (a - min) / (max - min); costs 1 - (log v - log min) / (log max - log min)
    measures = {"accuracy": np.array([0.45]), "latency_s": np.array([0.1]), "energy_j": np.array([10.0]),
                "peak_power_w": np.array([5.0])}
    terms = normalised_terms(measures, Weights(0.25, 0.25, 0.25, 0.25), MAXIMA, "log")
    np.testing.assert_allclose(terms, [[0.5, 0.5, 0.5, 2 / 3]])


def test_log_normalisation_gives_every_factor_the_same_step():
    # Halving a cost raises its term by the same amount whether the device is fast or slow: the reason
    # one slow board cannot squeeze the others' terms to 1 as it does under "max".
    weights = Weights(0.0, 0.0, 0.0, 1.0)
    latencies = np.array([0.02, 0.04, 4.0, 8.0])
    measures = {"accuracy": np.full(4, 0.5), "latency_s": latencies}
    log = performance(measures, weights, MAXIMA, "log")
    assert log[0] - log[1] == pytest.approx(log[2] - log[3])
    top = performance(measures, weights, MAXIMA, "max")
    assert top[0] - top[1] < (log[0] - log[1]) / 10


def test_term_stds_follow_the_slope_of_each_normalisation():
    weights = Weights(0.5, 0.0, 0.0, 0.5)
    means = {"accuracy": np.array([0.5]), "latency_s": np.array([1.0])}
    stds = {"accuracy": np.array([0.07]), "latency_s": np.array([0.1])}
    np.testing.assert_allclose(term_stds(means, stds, weights, MAXIMA, "max"), [[0.07 / 0.8, 0.1 / 10.0]])
    log_span = np.log(10.0) - np.log(0.01)
    np.testing.assert_allclose(term_stds(means, stds, weights, MAXIMA, "log"), [[0.07 / 0.7, 0.1 / log_span]])
    expected = np.hypot(0.5 * 0.07 / 0.7, 0.5 * 0.1 / log_span)
    np.testing.assert_allclose(performance_std(means, stds, weights, MAXIMA, "log"), [expected])
    # by finite differences
    step = 1e-6
    up = performance({"accuracy": np.array([0.5]), "latency_s": np.array([1.0 + step])}, weights, MAXIMA, "log")
    base = performance(means, weights, MAXIMA, "log")
    assert abs((up - base)[0] / step) * 0.1 == pytest.approx(0.5 * 0.1 / log_span, rel=1e-4)


def test_bounds_from_json_and_back():
    bounds = Bounds.from_json({"accuracy": [0.5, 0.9], "latency_s": [0.001, 2], "energy_j": None})
    assert bounds.latency_s == (0.001, 2.0) and bounds.energy_j is None and bounds.peak_power_w is None
    assert Bounds.from_json(bounds.to_json()) == bounds
    for bad, reason in (({"latency_s": [1, 2]}, "accuracy"), ({"accuracy": [0.9, 0.5]}, "min <= max"),
                        ({"accuracy": [0, 1], "latency_s": [0, 2]}, "positive"),
                        ({"accuracy": [0, 1], "speed": [1, 2]}, "unknown"),
                        ({"accuracy": "high"}, r"\[min, max\]"), ([1, 2], "object")):
        with pytest.raises(ValueError, match=reason):
            Bounds.from_json(bad)

