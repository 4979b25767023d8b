import numpy as np
import pytest

from boshcode._objective import (
    P_MIN,
    Maxima,
    Weights,
    normalised_terms,
    parse_weights,
    performance,
    term_names,
    term_weights,
)

MAXIMA = Maxima(accuracy=0.8, latency_s=10.0, energy_j=100.0, peak_power_w=50.0)


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
    np.testing.assert_allclose(performance(measures, weights, MAXIMA), [expected_0, expected_1])


def test_measures_beyond_the_maximum_are_clipped():
    measures = {"accuracy": np.array([1.6]), "latency_s": np.array([30.0]), "energy_j": np.array([0.0]),
                "peak_power_w": np.array([0.0])}
    # accuracy counts as 1, latency as its maximum (term 0), so P stays in [0, 1].
    np.testing.assert_allclose(performance(measures, Weights(0.5, 0.2, 0.2, 0.1), MAXIMA), [0.9])


def test_zero_weight_measures_may_be_missing():
    measures = {"accuracy": np.array([0.4]), "latency_s": np.array([1.0]), "energy_j": None, "peak_power_w": None}
    np.testing.assert_allclose(performance(measures, Weights(0.5, 0.0, 0.0, 0.5), MAXIMA), [0.25 + 0.45])
    with pytest.raises(ValueError, match="energy_j"):
        performance(measures, Weights(0.5, 0.1, 0.0, 0.4), MAXIMA)


def test_terms_times_weights_is_performance():
    rng = np.random.default_rng(0)
    measures = {"accuracy": rng.random(5), "latency_s": 10 * rng.random(5), "energy_j": 100 * rng.random(5),
                "peak_power_w": 50 * rng.random(5)}
    weights = Weights(0.3, 0.0, 0.3, 0.4)
    terms = normalised_terms(measures, weights, MAXIMA)
    assert term_names(weights) == ["accuracy", "peak_power_w", "latency_s"]
    assert terms.shape == (5, 3) and np.all((terms >= 0) & (terms <= 1))
    np.testing.assert_allclose(terms @ term_weights(weights), performance(measures, weights, MAXIMA))


def test_maxima_check_names_the_missing_measure():
    maxima = Maxima(accuracy=0.8, latency_s=10.0, energy_j=None, peak_power_w=None)
    maxima.check(Weights(0.5, 0.0, 0.0, 0.5))
    with pytest.raises(ValueError, match="energy_j"):
        maxima.check(Weights(0.5, 0.5, 0.0, 0.0))


def test_p_min_is_the_least_performance():
    measures = {"accuracy": np.array([0.0]), "latency_s": np.array([1e9]), "energy_j": np.array([1e9]),
                "peak_power_w": np.array([1e9])}
    assert performance(measures, Weights(0.25, 0.25, 0.25, 0.25), MAXIMA)[0] == P_MIN
