"""Training-free metrics of freshly initialised models: finite, seeded, independent of the batch of
architectures, and reachable from ``protran proxy --training-free``."""

import json
import math

import numpy as np
import pytest

pytest.importorskip("tokenizers")  # the probe batch is real text of the shipped corpus

from flexibert import ArchSpec, model_hash
from protran._training_free import (
    COMBINED_METRIC,
    MODEL_METRICS,
    PROBE_SEQUENCES,
    PROBE_TOKENS,
    TrainingFreeCombination,
    hamming_kernel_log_determinant,
    jacobian_covariance_score,
    load_training_free_combination,
    nuclear_norm,
)
from protran.cli import main
from protran.vocabulary import DEFAULT_TRAINING_FREE_METRIC, TRAINING_FREE_METRICS


def tiny(ops_per_layer, hidden=(32, 32), ff=((64,), (64,))) -> ArchSpec:
    """A two-layer architecture narrower than the design space allows, to keep tests fast."""
    return ArchSpec.from_model_dict({"l": len(ops_per_layer), "o": ops_per_layer, "h": list(hidden),
                                     "f": [list(f) for f in ff]}, space=False)


TINY = [
    tiny([["sa_sdp_16", "sa_wma_16"], ["c_5_16", "c_9_16"]]),
    tiny([["sa_sdp_8", "l_dft_8", "l_dct_8", "c_9_8"], ["sa_wma_32"]], hidden=(32, 32), ff=((64, 32), (48,))),
    tiny([["l_dft_16", "c_5_16"], ["sa_sdp_48"]], hidden=(32, 48), ff=((64,), (64,))),  # a projection between
]


@pytest.fixture(scope="module")
def tiny_metrics():
    from protran import training_free_metrics

    return training_free_metrics(TINY)


def test_every_metric_is_finite_on_every_operation(tiny_metrics):
    assert set(tiny_metrics) == set(TRAINING_FREE_METRICS)
    for name, values in tiny_metrics.items():
        assert values.shape == (len(TINY),) and np.isfinite(values).all(), name
    assert ((tiny_metrics["head_confidence"] > 0) & (tiny_metrics["head_confidence"] <= 1)).all()
    for name in ("head_importance", "synaptic_diversity", "synaptic_saliency"):
        assert (tiny_metrics[name] > 0).all(), name
    # log x + 1/x >= 1 for every eigenvalue
    assert (tiny_metrics["jacobian_cov"] <= -PROBE_SEQUENCES + 1e-6).all()


def test_values_are_seeded_and_do_not_depend_on_the_other_architectures(tiny_metrics):
    from protran import training_free_metrics

    alone = training_free_metrics([TINY[2]], MODEL_METRICS)
    reversed_order = training_free_metrics(TINY[::-1], MODEL_METRICS)
    for name in MODEL_METRICS:
        assert alone[name][0] == tiny_metrics[name][2], name
        assert np.array_equal(reversed_order[name][::-1], tiny_metrics[name]), name
    other_seed = training_free_metrics([TINY[2]], ["head_importance"], seed=1)
    assert other_seed["head_importance"][0] != tiny_metrics["head_importance"][2]


def test_one_metric_alone_equals_its_value_among_all(tiny_metrics):
    from protran import training_free_metrics

    for name in ("head_confidence", "jacobian_cov"):
        assert training_free_metrics(TINY[:1], [name])[name][0] == pytest.approx(tiny_metrics[name][0], rel=1e-9)


def test_a_model_without_attention_weights_has_the_confidence_of_uniform_attention():
    from protran import training_free_metrics

    transforms_only = tiny([["l_dft_16", "l_dct_16"], ["l_dct_32"]])
    values = training_free_metrics([transforms_only], ["head_confidence", "head_importance"])
    assert values["head_confidence"][0] == pytest.approx(1 / PROBE_TOKENS)
    assert values["head_importance"][0] > 0  # gates work on any head's output


def test_nuclear_norm_is_the_sum_of_singular_values():
    import torch

    matrix = torch.randn(5, 3, 2, generator=torch.Generator().manual_seed(0))
    expected = torch.linalg.svdvals(matrix.reshape(5, 6).double()).sum()
    assert nuclear_norm(matrix) == pytest.approx(float(expected), rel=1e-9)


def test_hamming_kernel_counts_agreeing_units():
    import torch

    codes = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    agree = np.array([[4, 2, 1], [2, 4, 1], [1, 1, 4]], dtype=float)  # units minus Hamming distance
    assert hamming_kernel_log_determinant([codes]) == pytest.approx(np.log(np.linalg.det(agree)))
    # a layer of codes split over two tensors adds up the same
    assert hamming_kernel_log_determinant([codes[:, :2], codes[:, 2:]]) == pytest.approx(np.log(np.linalg.det(agree)))
    assert hamming_kernel_log_determinant([codes[[0, 0, 1]]]) == -math.inf  # two identical sequences


def test_jacobian_score_is_highest_for_uncorrelated_jacobians():
    import torch
    from scipy.linalg import hadamard

    uncorrelated = torch.tensor(hadamard(8)[1:5], dtype=torch.float64)  # centred, orthogonal rows
    correlated = torch.stack([torch.arange(8.0) + 0.01 * torch.arange(8.0) ** 2 * i for i in range(4)])
    assert jacobian_covariance_score(uncorrelated) == pytest.approx(-4.0, abs=1e-4)  # every eigenvalue 1
    assert jacobian_covariance_score(correlated) < -1000


def test_combination_file_loads_and_scores_an_architecture_by_itself(tiny_metrics):
    combination = load_training_free_combination()
    assert set(combination.metrics) <= set(TRAINING_FREE_METRICS) - {COMBINED_METRIC}
    assert len(combination.weights) == len(combination.metrics) == len(combination.center)
    assert all(s > 0 for s in combination.scale)
    single = combination.score({name: tiny_metrics[name][:1] for name in combination.metrics})
    assert single[0] == pytest.approx(tiny_metrics[COMBINED_METRIC][0])
    assert TrainingFreeCombination.from_json(combination.to_json()) == combination


def test_fitting_a_combination_learns_which_metric_matters():
    rng = np.random.default_rng(0)
    values = {"params": np.exp(rng.normal(15, 1, 80)), "head_confidence": rng.uniform(0.03, 0.2, 80)}
    target = np.log(values["params"]) + 0.05 * rng.normal(size=80)
    combination = TrainingFreeCombination.fit(values, target, ("params", "head_confidence"))
    assert combination.weights[0] > 0.9 and abs(combination.weights[1]) < 0.1
    assert np.corrcoef(combination.score(values), target)[0, 1] > 0.99


def test_unknown_metrics_are_refused():
    from protran import training_free_metrics, training_free_scores

    with pytest.raises(ValueError, match="unknown training-free metric 'bogus'"):
        training_free_metrics(TINY[:1], ["bogus"])
    with pytest.raises(ValueError, match="unknown training-free metric"):
        training_free_scores(TINY[:1], "bogus")
    assert DEFAULT_TRAINING_FREE_METRIC in TRAINING_FREE_METRICS


SMALL = {"l": 2, "o": [["sa_sdp_64", "sa_sdp_64"], ["c_5_64", "l_dft_64"]], "h": [128, 128], "f": [[256], [256]]}


def test_cli_scores_by_a_model_metric(tmp_path, capsys):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL))
    assert main(["proxy", str(path), "--training-free", "--metric", "head_confidence", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["scores"]
    assert [set(row) for row in scores] == [{"hash", "score"}]
    assert scores[0]["hash"] == model_hash(ArchSpec.from_model_dict(SMALL))
    assert 0 < scores[0]["score"] <= 1


def test_cli_refuses_an_unknown_metric_in_one_line(tmp_path, capsys):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL))
    assert main(["proxy", str(path), "--training-free", "--metric", "bogus"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "unknown --metric 'bogus'" in captured.err
    assert "head_confidence" in captured.err
