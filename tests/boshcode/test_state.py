"""Risk-aware recommendation and the search state that lets a stopped search resume."""

import json

import numpy as np
import pytest

from boshcode._baselines import BaselineSettings, run_baseline
from boshcode._networks import TrainSettings
from boshcode._objective import Weights
from boshcode._oracle import OracleError
from boshcode._problem import Evaluation
from boshcode._search import SearchSettings, codesign, make_problem, recommend
from boshcode._state import initial_with, load_state, resume, save_state, state_header

from .conftest import FakeOracle

WEIGHTS = Weights(0.5, 0.2, 0.2, 0.1)
QUICK = SearchSettings(budget=24, n_initial=10, pool_size=128, mutants_per_parent=16, seed=0,
                       train=TrainSettings(min_steps=5, max_steps=20, first_min_steps=30, first_max_steps=60))


def _evaluation(p: float, std: float, feasible: bool = True, i: int = 0) -> Evaluation:
    return Evaluation((i,), 0, p, (p,), {}, {}, feasible, std)


def test_recommend_holds_uncertainty_against_a_pair():
    sure, lucky, broken = _evaluation(0.80, 0.01, i=1), _evaluation(0.84, 0.10, i=2), _evaluation(0.0, 0, False, 3)
    assert recommend([lucky, sure, broken], risk=0) == [lucky]
    assert recommend([lucky, sure, broken], risk=1) == [sure]
    assert recommend([lucky, sure, broken], risk=1, top=5) == [sure, lucky, broken]
    assert sure.lower_bound(2.0) == pytest.approx(0.78)
    with pytest.raises(ValueError, match="risk"):
        recommend([sure], risk=-1)


def test_infeasible_pairs_come_last_even_with_a_high_lower_bound():
    odd = _evaluation(0.9, 0.0, feasible=False)
    assert recommend([odd, _evaluation(0.1, 0.05, i=1)], risk=1)[0].feasible


def test_state_round_trip_and_resume_costs_no_oracle_call(tmp_path):
    problem = make_problem(FakeOracle(), WEIGHTS)
    result = run_baseline("random", problem, BaselineSettings(budget=12, n_initial=6, seed=1))
    header = state_header(problem, "random/codesign")
    path = save_state(tmp_path / "state.json", header, problem.evaluated())
    assert json.loads(path.read_text())["devices"] == ["fast", "slow"]

    oracle = FakeOracle()
    again = make_problem(oracle, WEIGHTS)
    done = resume(path, again, "random/codesign")
    assert [e.performance for e in done] == result.history and oracle.calls == 0
    X, d = initial_with(again, done, 6, seed=1)
    more = run_baseline("random", again, BaselineSettings(budget=18, n_initial=6, seed=1), initial=(X, d))
    assert more.history[:12] == result.history and len(more.history) == 18 and again.n_oracle_calls == 6


def test_a_state_tops_up_the_initial_sample():
    problem = make_problem(FakeOracle(), WEIGHTS)
    X, d = problem.initial_pairs(8, seed=0)
    done = problem.evaluate(X[:3], d[:3])
    X2, d2 = initial_with(problem, done, 8, seed=0)
    np.testing.assert_array_equal(X2, X) and np.testing.assert_array_equal(d2, d)


def test_resume_refuses_another_problem_and_damaged_files(tmp_path):
    problem = make_problem(FakeOracle(), WEIGHTS)
    problem.evaluate(*problem.initial_pairs(4, seed=0))
    path = save_state(tmp_path / "state.json", state_header(problem, "boshcode/codesign"), problem.evaluated())
    with pytest.raises(ValueError, match="normalise"):
        resume(path, make_problem(FakeOracle(), WEIGHTS, normalise="max"), "boshcode/codesign")
    with pytest.raises(ValueError, match="devices"):
        resume(path, make_problem(FakeOracle(devices=("fast", "tiny")), WEIGHTS), "boshcode/codesign")
    data = json.loads(path.read_text())
    data["evaluations"][1]["embedding"] = [99] * 37
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="evaluation 2: the embedding"):
        resume(path, make_problem(FakeOracle(), WEIGHTS), "boshcode/codesign")
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a boshcode search state"):
        load_state(path)


class _FailingOracle(FakeOracle):
    """Answers ``answers`` pairs, then fails as a crashed external oracle would."""

    def __init__(self, answers: int) -> None:
        super().__init__()
        self.answers = answers

    def predict(self, specs, device):
        if self.calls + len(specs) > self.answers:
            raise OracleError("the oracle process exited with status 1")
        return super().predict(specs, device)


def test_a_search_stopped_by_its_oracle_resumes_to_the_same_budget(tmp_path):
    oracle = _FailingOracle(answers=15)
    problem = make_problem(oracle, WEIGHTS)
    path = tmp_path / "state.json"
    header = state_header(problem, "boshcode/codesign")
    problem.on_evaluated = lambda _: save_state(path, header, problem.evaluated())
    with pytest.raises(OracleError):
        codesign(oracle, WEIGHTS, settings=QUICK, problem=problem)
    saved = len(load_state(path)[1])
    assert 10 <= saved <= 15  # everything the oracle answered before it failed

    healthy = FakeOracle()
    again = make_problem(healthy, WEIGHTS)
    done = resume(path, again, "boshcode/codesign")
    result, _ = codesign(healthy, WEIGHTS, settings=QUICK, problem=again,
                         initial=initial_with(again, done, QUICK.n_initial, QUICK.seed))
    assert len(result.evaluations) == QUICK.budget and healthy.calls == QUICK.budget - saved
    assert len({(e.embedding, e.device) for e in result.evaluations}) == QUICK.budget


def test_p_std_grows_with_the_measures_std():
    class Noisy(FakeOracle):
        def __init__(self, scale):
            super().__init__()
            self.scale = scale

        def predict(self, specs, device):
            out = super().predict(specs, device)
            for measure in out.values():
                if measure is not None:
                    measure["std"] = measure["std"] * self.scale
            return out

    X, d = make_problem(FakeOracle(), WEIGHTS).initial_pairs(6, seed=2)
    quiet = make_problem(Noisy(1.0), WEIGHTS).evaluate(X, d)
    loud = make_problem(Noisy(3.0), WEIGHTS).evaluate(X, d)
    assert [e.performance for e in quiet] == [e.performance for e in loud]
    assert all(b.performance_std > a.performance_std > 0 for a, b in zip(quiet, loud))

