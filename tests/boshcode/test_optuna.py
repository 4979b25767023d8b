"""The Optuna baselines: same initial sample, budget and oracle as the other baselines, no pair twice."""

from dataclasses import replace

import numpy as np
import pytest

from boshcode import _optuna
from boshcode._baselines import BASELINES, BaselineSettings, run_baseline
from boshcode._objective import Weights
from boshcode._optuna import MULTI_OBJECTIVE, OPTUNA_BASELINES, pareto_best
from boshcode._problem import CodesignProblem
from boshcode._search import make_problem
from flexibert import DesignSpace, is_valid_embedding
from protran import is_non_dominated

from .conftest import FakeOracle

optuna = pytest.importorskip("optuna")  # the "train" extra; the boshcode modules import it only to run

WEIGHTS = Weights(0.5, 0.2, 0.2, 0.1)
SETTINGS = BaselineSettings(budget=24, n_initial=8, seed=3)
# Optuna's GP costs about a second a trial: fewer trials for it.
GP_SETTINGS = replace(SETTINGS, budget=12)
# One layer count, two widths, three attention mixes: 6 architectures on 2 devices, 12 pairs.
TINY_SPACE = DesignSpace(encoder_layers=(1,), hidden_size=(128, 256), attention_heads=(2,),
                         operation_types=("sa_sdp", "l_dft"), feed_forward_depth=(1,), feed_forward_dims=(512,))


def _settings(method: str) -> BaselineSettings:
    return GP_SETTINGS if method.startswith("optuna-gp") else SETTINGS


def _keys(result) -> list[tuple[tuple[int, ...], int]]:
    return [(e.embedding, e.device) for e in result.evaluations]


def test_the_optuna_methods_follow_the_other_baselines():
    assert BASELINES[:4] == ("random", "gbrt", "gpr", "rf") and BASELINES[4:] == OPTUNA_BASELINES
    assert OPTUNA_BASELINES == ("optuna-tpe", "optuna-gp", "optuna-nsga2", "optuna-tpe-mo", "optuna-nsga2-mo")


@pytest.mark.parametrize("method", OPTUNA_BASELINES)
def test_budget_counts_distinct_pairs_after_the_shared_initial_sample(method):
    settings = _settings(method)
    problem = make_problem(FakeOracle(), WEIGHTS)
    X, d = make_problem(FakeOracle(), WEIGHTS).initial_pairs(settings.n_initial, settings.seed)
    result = run_baseline(method, problem, settings)
    keys = _keys(result)
    assert keys[: settings.n_initial] == [(tuple(int(v) for v in x), int(i)) for x, i in zip(X, d)]
    assert len(keys) == len(set(keys)) == settings.budget == problem.n_oracle_calls == problem.oracle.calls
    assert all(is_valid_embedding(e.embedding) for e in result.evaluations)
    assert result.kinds == ["initial"] * settings.n_initial + [method] * (settings.budget - settings.n_initial)
    assert result.method == method and result.stopped == "budget"
    assert result.best.performance == max(result.history)


@pytest.mark.parametrize("method", ["optuna-tpe", "optuna-gp", "optuna-nsga2-mo"])
def test_runs_are_seeded(method):
    settings = replace(_settings(method), budget=10)
    first, second, third = (run_baseline(method, make_problem(FakeOracle(), WEIGHTS), replace(settings, seed=seed))
                            for seed in (3, 3, 4))
    assert _keys(first) == _keys(second) != _keys(third)
    assert first.history == second.history


@pytest.mark.parametrize("method", MULTI_OBJECTIVE)
def test_multi_objective_best_is_the_non_dominated_pair_with_the_highest_p(method):
    result = run_baseline(method, make_problem(FakeOracle(), WEIGHTS), SETTINGS)
    terms = np.array([e.terms for e in result.evaluations])
    front = [e for e, keep in zip(result.evaluations, is_non_dominated(terms)) if keep]
    assert result.best in front
    assert result.best.performance == max(result.history) == max(e.performance for e in front)


def test_non_dominated_and_infeasible_pairs():
    T = np.array([[0.9, 0.1], [0.5, 0.5], [0.4, 0.4], [0.5, 0.5], [0.1, 0.9]])
    assert is_non_dominated(T).tolist() == [True, True, False, True, True]
    problem = make_problem(FakeOracle(), WEIGHTS)
    X, d = problem.initial_pairs(6, 0)
    evaluations = problem.evaluate(X, d)
    best = max(evaluations, key=lambda e: e.performance)
    # a pair that broke a constraint: its terms dominate everything, its P is P_MIN
    broken = replace(best, terms=tuple(1.0 for _ in best.terms), performance=0.0, feasible=False)
    assert pareto_best([*evaluations, broken]) is best


def test_repeated_pairs_do_not_loop_forever(monkeypatch):
    # 12 pairs for a budget of 12: the sampler proposes evaluated pairs again and again
    problem = CodesignProblem(FakeOracle(), WEIGHTS, space=TINY_SPACE)
    monkeypatch.setattr(_optuna, "MAX_TRIALS_PER_EVALUATION", 1)
    result = run_baseline("optuna-tpe", problem, replace(SETTINGS, budget=12, n_initial=4))
    assert len(set(_keys(result))) == 12 == len(result.evaluations) == problem.n_oracle_calls
    assert result.stopped == "budget" and "random" in result.kinds


def test_a_space_smaller_than_the_budget_is_exhausted():
    problem = CodesignProblem(FakeOracle(), WEIGHTS, space=TINY_SPACE)
    result = run_baseline("optuna-nsga2", problem, replace(SETTINGS, budget=16, n_initial=4))
    assert len(set(_keys(result))) == 12 == len(result.evaluations) == problem.n_oracle_calls
    assert result.stopped == "exhausted"


def test_optuna_logging_is_restored():
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        run_baseline("optuna-tpe", make_problem(FakeOracle(), WEIGHTS), replace(SETTINGS, budget=10))
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)
