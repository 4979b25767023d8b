"""Which architectures to train next: candidates, greedy expected hypervolume gain, the CLI's JSON."""

from __future__ import annotations

import json

import pytest

from flexibert import model_hash, sample_architectures
from protran._accuracy import load_accuracy
from protran._pareto import Frontier, FrontierPoint, SearchSettings, search_frontiers
from protran._suggest import suggest_training
from protran.cli import main
from protran.models import fit_models, load_profiles
from tests.protran.frontier_inputs import write_accuracy, write_profile

DEVICE = "board_b1_r1"
SMALL_SEARCH = SearchSettings(pop_size=24, n_generations=2, n_initial_samples=16)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suggest")
    profile = write_profile(folder / f"{DEVICE}.json", sample_architectures(40, method="random", seed=1))
    accuracy = write_accuracy(folder / "scores.csv", sample_architectures(14, method="lhs_split", seed=2))
    return profile, accuracy


@pytest.fixture(scope="module")
def models(inputs):
    profile, accuracy = inputs
    return fit_models(load_profiles([profile]), load_accuracy(accuracy), seed=0)


@pytest.fixture(scope="module")
def frontiers(models):
    return search_frontiers(models, DEVICE, settings=SMALL_SEARCH)


@pytest.fixture(scope="module")
def picks(models, frontiers):
    return suggest_training(models, frontiers, 5, seed=0)


def test_suggestions_are_distinct_unscored_and_sorted_by_gain(models, picks):
    assert len(picks) == 5
    assert len({pick.spec for pick in picks}) == 5 and len({pick.arch_hash for pick in picks}) == 5
    scored = set(models.accuracy_specs)
    for pick in picks:
        assert pick.spec not in scored
        assert pick.arch_hash == model_hash(pick.spec)
        assert pick.expected_gain >= 0.0 and pick.accuracy_std > 0.0
    gains = [pick.expected_gain for pick in picks]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(gains, gains[1:]))  # diminishing returns
    assert gains[0] > 0.0


def test_seeded_greedy_and_k(models, frontiers, picks):
    again = suggest_training(models, frontiers, 5, seed=0)
    assert [pick.to_dict() for pick in again] == [pick.to_dict() for pick in picks]
    first = suggest_training(models, frontiers, 1, seed=0)
    assert [pick.to_dict() for pick in first] == [picks[0].to_dict()]  # greedy: a prefix of the longer list
    with pytest.raises(ValueError, match="k must be a positive int"):
        suggest_training(models, frontiers, 0)
    with pytest.raises(ValueError, match="k must be a positive int"):
        suggest_training(models, frontiers, True)


def test_fewer_only_when_fewer_candidates(models, frontiers):
    points = {point.spec for frontier in frontiers for point in frontier.points}
    some_scored = set(list(points)[: len(points) // 2])
    # without neighbours the candidates are the frontier points that are not scored
    everything = suggest_training(models, frontiers, 10_000, neighbours=0, scored=some_scored)
    assert {pick.spec for pick in everything} == points - some_scored
    assert suggest_training(models, frontiers, 3, neighbours=0, scored=points) == []


def _two_point_frontier(models, stds):
    """A frontier of two unscored architectures, the cheaper one less accurate, with chosen stds."""
    low, high = models.accuracy_bounds()
    v_low, v_high = models.measure_bounds(DEVICE, "latency")
    specs = sample_architectures(2, method="random", seed=7)
    points = tuple(
        FrontierPoint(spec, model_hash(spec), low + share * (high - low), std, value, 0.0)
        for spec, share, std, value in zip(specs, (0.5, 0.8), stds, (v_low * 1.2, v_high * 0.8))
    )
    return Frontier(DEVICE, "latency", 0.0, points)


def test_an_uncertain_frontier_point_beats_a_certain_one(models):
    spread = float(models.accuracy_scores.max() - models.accuracy_scores.min())
    for stds in ((spread, 0.02 * spread), (0.02 * spread, spread)):
        frontier = _two_point_frontier(models, stds)
        picks = suggest_training(models, [frontier], 2, neighbours=0, noise_std=0.01 * spread)
        uncertain = frontier.points[stds.index(max(stds))]
        assert picks[0].arch_hash == uncertain.arch_hash
        assert picks[0].expected_gain > picks[1].expected_gain >= 0.0


def test_cli_json_and_text(inputs, capsys):
    profile, accuracy = inputs
    args = ["pareto", "--profile", str(profile), "--accuracy", str(accuracy), "--measure", "latency",
            "--pop-size", "24", "--generations", "2"]
    assert main(args + ["--suggest-training", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["frontiers", "suggested_training"]
    suggested = result["suggested_training"]
    assert len(suggested) == 3
    scored = {model_hash(spec) for spec in sample_architectures(14, method="lhs_split", seed=2)}
    for row in suggested:
        assert set(row) == {"hash", "model_dict", "accuracy", "accuracy_std", "extrapolated", "expected_gain"}
        assert row["hash"] not in scored
    gains = [row["expected_gain"] for row in suggested]
    assert gains == sorted(gains, reverse=True)

    assert main(args + ["--suggest-training", "2"]) == 0
    out = capsys.readouterr().out
    assert "train next: 2 architecture(s)" in out and "expected gain" in out

    assert main(args + ["--suggest-training", "0"]) == 2  # refused before anything is fitted
    assert "--suggest-training" in capsys.readouterr().err
