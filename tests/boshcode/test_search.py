"""The BOSHCODE loop and its modes, on the small analytic oracle."""

from dataclasses import replace

import numpy as np
import pytest

from boshcode._networks import SurrogateSet, TrainSettings
from boshcode._objective import P_MIN, Weights
from boshcode._search import DEFAULT_BUDGET, MODES, BoshcodeSearch, SearchSettings, codesign, make_problem
from boshcode.cli import DEFAULT_BUDGET as CLI_BUDGET
from flexibert import is_valid_embedding

from .conftest import FakeOracle

WEIGHTS = Weights(0.5, 0.2, 0.2, 0.1)
QUICK = SearchSettings(budget=26, n_initial=16, pool_size=128, mutants_per_parent=16, seed=0,
                       train=TrainSettings(min_steps=10, max_steps=30, first_min_steps=60, first_max_steps=120))


def _keys(result):
    return [(e.embedding, e.device) for e in result.evaluations]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_spends_the_budget_on_distinct_valid_pairs(oracle, mode):
    result, problem = codesign(oracle, WEIGHTS, mode=mode, device="slow" if mode == "hw_nas" else None,
                               settings=QUICK)
    assert len(result.evaluations) == QUICK.budget == len(result.history)
    assert len(set(_keys(result))) == QUICK.budget
    assert all(is_valid_embedding(e.embedding) for e in result.evaluations)
    if mode == "nas":  # the pick is the most accurate architecture, not the highest P seen
        assert result.best.performance <= max(result.history)
    else:
        assert result.best.performance == max(result.history)
    assert result.method == ("boshcode" if mode == "codesign" else f"boshcode-{mode}")
    assert oracle.calls >= QUICK.budget


def test_hw_nas_searches_only_its_device(oracle):
    result, problem = codesign(oracle, WEIGHTS, mode="hw_nas", device="slow", settings=QUICK)
    assert problem.devices == ["slow"]
    assert {e.device for e in result.evaluations} == {0}
    with pytest.raises(ValueError, match="give device="):
        make_problem(oracle, WEIGHTS, mode="hw_nas")


def test_vanilla_nas_picks_the_best_device_for_its_most_accurate_architecture(oracle):
    result, problem = codesign(oracle, WEIGHTS, mode="nas", settings=QUICK)
    searched = result.evaluations[: QUICK.budget - 1]
    assert {e.device for e in searched} == {0}  # accuracy is searched on one device
    most_accurate = max(searched, key=lambda e: e.means["accuracy"])
    on_other = result.evaluations[-1]
    assert on_other.embedding == most_accurate.embedding and on_other.device == 1
    assert result.best.embedding == most_accurate.embedding
    assert result.best.performance == max(most_accurate.performance, on_other.performance)
    assert result.kinds[-1] == "device-selection"


def test_no_aleatoric_mode_drops_the_aleatoric_term(oracle, monkeypatch):
    seen = set()
    original = SurrogateSet.acquisition

    def recording(self, arch, device, k1, k2):
        seen.add((k1, k2))
        return original(self, arch, device, k1, k2)

    monkeypatch.setattr(SurrogateSet, "acquisition", recording)
    codesign(oracle, WEIGHTS, mode="no_aleatoric", settings=QUICK)
    assert seen == {(QUICK.k1, 0.0)}
    seen.clear()
    codesign(FakeOracle(), WEIGHTS, mode="codesign", settings=QUICK)
    assert seen == {(QUICK.k1, QUICK.k2)}


def test_the_same_seed_gives_the_same_search():
    first, _ = codesign(FakeOracle(), WEIGHTS, settings=QUICK)
    second, _ = codesign(FakeOracle(), WEIGHTS, settings=QUICK)
    assert _keys(first) == _keys(second) and first.history == second.history
    third, _ = codesign(FakeOracle(), WEIGHTS, settings=replace(QUICK, seed=1))
    assert _keys(third) != _keys(first)


def test_search_improves_on_its_initial_sample():
    settings = replace(QUICK, budget=46)
    improved = 0
    for seed in range(3):
        result, _ = codesign(FakeOracle(), WEIGHTS, settings=replace(settings, seed=seed))
        initial = max(result.history[: settings.n_initial])
        improved += result.best.performance > initial
        assert all(kind in ("initial", "gobi", "uncertainty", "diversity") for kind in result.kinds)
    assert improved >= 2


@pytest.mark.parametrize(("unc_prob", "div_prob", "kind"), [(1.0, 0.0, "uncertainty"), (0.0, 1.0, "diversity"),
                                                            (0.0, 0.0, "gobi")])
def test_query_kinds_follow_their_probabilities(oracle, unc_prob, div_prob, kind):
    settings = replace(QUICK, unc_prob=unc_prob, div_prob=div_prob)
    result, _ = codesign(oracle, WEIGHTS, settings=settings)
    assert set(result.kinds[settings.n_initial:]) == {kind}


def test_invalid_gobi_optima_enter_the_training_data_with_p_min(oracle):
    problem = make_problem(oracle, WEIGHTS)
    search = BoshcodeSearch(problem, replace(QUICK, inputs="both"))
    X, d = problem.initial_pairs(4, seed=0)
    search._record(problem.evaluate(X, d), "initial")
    valid_arch = problem.arch_inputs(X[:2], "both")
    one_hot = problem.encode_device(d[:2])
    search._learn_invalid(valid_arch, one_hot, np.array([0.5, 0.6]))
    assert search.n_invalid_rows == 0 and len(search.data.arch) == 4
    inconsistent = valid_arch.copy()
    inconsistent[:, problem.arch_dim - 1] = 0.9  # a slot past every layer count that the embedding uses
    relaxed = np.array([[0.5, 0.5], [0.0, 1.0]])
    search._learn_invalid(np.vstack([inconsistent[:1], valid_arch[1:]]), relaxed, np.array([0.4, 0.7]))
    assert search.n_invalid_rows == 1
    arch, device, terms, valid = search.data.arrays()
    assert len(arch) == 5 and not valid[-1] and np.all(terms[-1] == P_MIN)
    np.testing.assert_array_equal(device[-1], [0.5, 0.5])
    assert len(search.evaluations) == 4  # never an evaluation, only a training row


def test_invalid_rows_are_learnt_during_a_search(oracle):
    search = BoshcodeSearch(make_problem(oracle, WEIGHTS), replace(QUICK, inputs="embedding", n_starts=4))
    result = search.run()
    _, _, terms, valid = search.data.arrays()
    assert len(valid) == QUICK.budget + result.n_invalid_rows
    assert np.all(terms[~valid] == P_MIN)


def test_patience_and_time_limit_stop_early(oracle):
    result, _ = codesign(oracle, WEIGHTS, settings=replace(QUICK, budget=60, patience=5))
    assert result.stopped == "converged" and len(result.evaluations) < 60
    best = np.maximum.accumulate(result.history)
    assert np.all(best[-5:] == best[-1])
    result, _ = codesign(FakeOracle(), WEIGHTS, settings=replace(QUICK, budget=60, time_limit_s=0.0))
    assert result.stopped == "time" and len(result.evaluations) == QUICK.n_initial


def test_settings_are_checked():
    with pytest.raises(ValueError, match="architecture inputs"):
        SearchSettings(inputs="pixels")
    with pytest.raises(ValueError, match="probabilities"):
        SearchSettings(unc_prob=0.6, div_prob=0.6)
    with pytest.raises(ValueError, match="k1 and k2"):
        SearchSettings(k2=-1.0)
    with pytest.raises(ValueError, match="unknown mode"):
        make_problem(FakeOracle(), WEIGHTS, mode="fast")
    defaults = SearchSettings()
    assert (defaults.unc_prob, defaults.div_prob, defaults.k1, defaults.k2) == (0.1, 0.1, 0.5, 0.5)
    assert defaults.budget == DEFAULT_BUDGET == CLI_BUDGET


@pytest.mark.parametrize("inputs", ["structure", "embedding", "both"])
def test_every_kind_of_architecture_input_searches_distinct_valid_pairs(oracle, inputs):
    settings = replace(QUICK, inputs=inputs, unc_prob=0.0, div_prob=0.0, n_starts=2)  # GOBI and its projection
    search = BoshcodeSearch(make_problem(oracle, WEIGHTS), settings)
    result = search.run()
    assert len(set(_keys(result))) == QUICK.budget
    assert all(is_valid_embedding(e.embedding) for e in result.evaluations)
    problem = search.problem
    n_features = problem.n_arch_inputs("structure")
    assert n_features > 10
    expected = {"embedding": problem.arch_dim, "structure": n_features, "both": problem.arch_dim + n_features}
    assert search.data.arrays()[0].shape[1] == problem.n_arch_inputs(inputs) == expected[inputs]
    assert np.all((search.data.arrays()[0] >= 0) & (search.data.arrays()[0] <= 1))


def test_gobi_optima_in_structure_features_project_to_the_nearest_mutant_of_their_start(oracle):
    problem = make_problem(oracle, WEIGHTS)
    search = BoshcodeSearch(problem, replace(QUICK, projection_mutants=32))
    starts, _ = problem.random_pairs(3, np.random.default_rng(1))
    targets, _ = problem.random_pairs(3, np.random.default_rng(2))
    z = problem.arch_inputs(targets)  # optima that moved far from their starts
    projected = search._project(z, starts)
    assert all(is_valid_embedding(row) for row in projected)
    assert np.any(projected != starts)  # some optimum found a mutant nearer than its start
    distance = ((problem.arch_inputs(projected) - z) ** 2).sum(axis=1)
    assert np.all(distance <= ((problem.arch_inputs(starts) - z) ** 2).sum(axis=1))
