"""External oracles: a process speaking JSON lines (tests/boshcode/oracle_script.py) and module:factory objects."""

from __future__ import annotations

import gc
import json
import math
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import boshcode._external as external
from boshcode._baselines import BaselineSettings, run_baseline
from boshcode._external import MAX_CONSECUTIVE_ERRORS, CommandOracle, ObjectOracle, load_oracle_object
from boshcode._gobi import GobiSettings
from boshcode._networks import TrainSettings
from boshcode._objective import HARDWARE_TERMS, P_MIN, Bounds, Weights
from boshcode._oracle import OracleError
from boshcode._search import SearchSettings, codesign, make_problem
from flexibert import sample_architectures

from . import oracle_script

SCRIPT = Path(__file__).with_name("oracle_script.py")
WEIGHTS = Weights(0.5, 0.2, 0.2, 0.1)
QUICK = 2.0  # seconds: every timeout in these tests
SPECS = sample_architectures(6, method="lhs", seed=0)


@pytest.fixture
def processes(monkeypatch):
    """Every process a CommandOracle starts in the test (to check none is left running)."""
    started = []
    start = external._start

    def recording(argv):
        started.append(start(argv))
        return started[-1]

    monkeypatch.setattr(external, "_start", recording)
    return started


@pytest.fixture
def run(processes, tmp_path):
    """Start oracle_script.py in a mode; ``log=True`` makes it log its stdin to tmp_path/requests.log."""
    oracles = []

    def start(*args, log=False, timeout_s=QUICK, startup_timeout_s=QUICK):
        command = [sys.executable, str(SCRIPT), *args] + (["--log", str(tmp_path / "requests.log")] if log else [])
        oracles.append(CommandOracle(command, timeout_s=timeout_s, startup_timeout_s=startup_timeout_s))
        return oracles[-1]

    yield start
    for oracle in oracles:
        oracle.close()
    assert all(process.poll() is not None for process in processes)


def _requests(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "requests.log").read_text().splitlines()]


def _expected(specs, device, measure):
    return np.array([oracle_script.answer(spec.to_model_dict(), device)[measure] for spec in specs])


# -- the protocol ---------------------------------------------------------------------------------------------------


def test_the_header_gives_devices_bounds_and_measures(run):
    oracle = run("normal")
    assert oracle.devices == ["fast", "slow"]
    assert oracle.bounds == Bounds.from_json(oracle_script.BOUNDS)
    assert sorted(oracle.measures("slow")) == sorted(HARDWARE_TERMS)
    assert oracle.n_calls == 0


def test_predictions_are_the_answers_and_the_requests_are_exact(run, tmp_path):
    oracle = run("normal", log=True)
    predicted = oracle.predict(SPECS[:4], "slow")
    for measure in ("accuracy", *HARDWARE_TERMS):
        np.testing.assert_allclose(predicted[measure]["mean"], _expected(SPECS[:4], "slow", measure))
        np.testing.assert_array_equal(predicted[measure]["std"], 0.0)
    assert oracle.n_calls == 4
    sent = (tmp_path / "requests.log").read_text().splitlines(keepends=True)
    assert sent == [json.dumps({"device": "slow", "model_dict": spec.to_model_dict()}) + "\n" for spec in SPECS[:4]]
    assert oracle.predict([], "fast")["accuracy"]["mean"].shape == (0,)


def test_a_measure_without_bounds_is_none_and_a_null_answer_is_nan(run):
    header = json.dumps({"devices": ["fast"], "bounds": {**oracle_script.BOUNDS, "peak_power_w": None}})
    oracle = run("header", header)
    assert sorted(oracle.measures("fast")) == ["energy_j", "latency_s"]
    assert oracle.predict(SPECS[:2], "fast")["peak_power_w"] is None
    energy = run("nulls").predict(SPECS[:4], "fast")["energy_j"]["mean"]
    assert np.isnan(energy[::2]).all()  # requests 1 and 3 answered null
    np.testing.assert_allclose(energy[1::2], _expected(SPECS[1:4:2], "fast", "energy_j"))


def test_a_device_the_header_does_not_list_is_refused_and_the_oracle_goes_on(run):
    oracle = run("normal")
    with pytest.raises(OracleError, match="'gpu' is not one of the oracle's devices"):
        oracle.predict(SPECS[:1], "gpu")
    assert oracle.predict(SPECS[:1], "fast")["accuracy"]["mean"].shape == (1,)


# -- searches through it ----------------------------------------------------------------------------------------------


def _distinct_requests(tmp_path, n):
    keys = [json.dumps(request, sort_keys=True) for request in _requests(tmp_path)]
    assert len(keys) == len(set(keys)) == n


def test_a_random_search_runs_through_the_process_and_asks_each_pair_once(run, tmp_path):
    oracle = run("normal", log=True)
    result = run_baseline("random", make_problem(oracle, WEIGHTS), BaselineSettings(budget=12, n_initial=4))
    assert len(result.evaluations) == 12 == oracle.n_calls
    assert all(e.feasible and e.performance > P_MIN for e in result.evaluations)
    _distinct_requests(tmp_path, 12)


def test_boshcode_runs_through_the_process_and_asks_each_pair_once(run, tmp_path):
    oracle = run("normal", log=True)
    # As little training as the loop allows: what is tested is the traffic with the process.
    settings = SearchSettings(budget=12, n_initial=6, queries_per_iteration=3, pool_size=64, mutants_per_parent=8,
                              n_starts=2, diversity_pool=32, gobi=GobiSettings(max_steps=5),
                              train=TrainSettings(min_steps=3, max_steps=5, first_min_steps=10, first_max_steps=15,
                                                  mc_passes=2))
    result, problem = codesign(oracle, WEIGHTS, settings=settings)
    assert len(result.evaluations) == 12 == oracle.n_calls
    _distinct_requests(tmp_path, 12)
    best = problem.describe(result.best)
    assert best["predicted"]["accuracy"] == pytest.approx(oracle_script.answer(best["model_dict"],
                                                                                best["device"])["accuracy"])


# -- failures ---------------------------------------------------------------------------------------------------------


HEADER_FAILURES = {
    "die": (["die"], r"exited with code 2 before printing its header; .*cannot load the data set"),
    "silent": (["silent"], r"printed no header within 2 s \(startup_timeout_s\)"),
    "invalid bounds": (["header", json.dumps({"devices": ["a"], "bounds": {"accuracy": [0.9, 0.1]}})],
                       r"header has invalid bounds: .*min <= max"),
    "bad devices": (["header", json.dumps({"devices": "a", "bounds": oracle_script.BOUNDS})],
                    r"header gives devices 'a'; they must be a non-empty list"),
    "repeated devices": (["header", json.dumps({"devices": ["a", "a"], "bounds": oracle_script.BOUNDS})],
                         r"distinct"),
    "no bounds": (["header", json.dumps({"devices": ["a"]})], r"header lacks bounds"),
    "not json": (["header", "Loading model..."], r"header \(its first line\) is not JSON: 'Loading model...'"),
    "not an object": (["header", "[1, 2]"], r"header \(its first line\) is a JSON list, not an object"),
}


@pytest.mark.parametrize("case", HEADER_FAILURES)
def test_a_bad_start_raises_and_leaves_no_process(run, processes, case):
    args, message = HEADER_FAILURES[case]
    started = time.monotonic()
    with pytest.raises(OracleError, match=message):
        run(*args)
    assert time.monotonic() - started < QUICK + 3
    assert len(processes) == 1 and processes[0].poll() is not None


ANSWER_FAILURES = {
    "crash": (["crash", "1"], r"exited with code 3 while evaluating model [0-9a-f]{32} .* on fast; the last lines "
                              r"of its stderr: .* \| MemoryError: CUDA out of memory; fix it"),
    "hang": (["hang"], r"gave no answer to the evaluation of model .* within 2 s \(timeout_s\) and was stopped"),
    "garbage": (["garbage"], r"answer is not JSON: 'this is not json'.*print logs to stderr"),
    "list": (["list"], r"answer is a JSON list, not an object"),
    "missing": (["missing"], r"answer lacks latency_s"),
    "text": (["text"], r"answer gives accuracy = \"high\", not a finite number"),
    "chatty": (["chatty"], r"answers no request: 'epoch 1: loss 0.3'|answer is not JSON: 'epoch 1"),
}


@pytest.mark.parametrize("case", ANSWER_FAILURES)
def test_a_bad_answer_raises_stops_the_process_and_every_later_call(run, processes, case):
    args, message = ANSWER_FAILURES[case]
    oracle = run(*args)
    started = time.monotonic()
    with pytest.raises(OracleError, match=message):
        for spec in SPECS[:3]:  # "crash 1" and "chatty" fail on the second request
            oracle.predict([spec], "fast")
    assert time.monotonic() - started < QUICK + 3
    assert processes[0].poll() is not None
    with pytest.raises(OracleError, match="the oracle has stopped: "):
        oracle.predict(SPECS[:1], "fast")


@pytest.mark.parametrize(("line", "message"), [
    ('{"accuracy": NaN, "latency_s": 1}', r"accuracy = NaN, not a finite number:"),
    ('{"accuracy": 0.7, "latency_s": Infinity}', r"latency_s = Infinity, not a finite number or null"),
    ('{"accuracy": 0.7, "latency_s": -1}', r"negative latency_s \(-1\)"),
    ('{"accuracy": null, "latency_s": 1}', r"accuracy = null, not a finite number"),
])
def test_answers_that_are_no_numbers_are_refused(line, message):
    with pytest.raises(ValueError, match=message):
        external._parse_answer(line, ["accuracy", "latency_s"])


def test_an_error_key_that_is_null_is_no_error():
    line = '{"accuracy": 0.7, "latency_s": null, "error": null, "note": "mine"}'
    assert external._parse_answer(line, ["accuracy", "latency_s"]) == {"accuracy": 0.7, "latency_s": pytest.approx(
        math.nan, nan_ok=True)}


def test_echo_stderr_shows_what_the_oracle_logs(processes, capsys):
    with pytest.raises(OracleError, match="cannot load the data set"):
        CommandOracle([sys.executable, str(SCRIPT), "die"], startup_timeout_s=QUICK, echo_stderr=True)
    assert "oracle_script: cannot load the data set" in capsys.readouterr().err


def test_a_command_that_cannot_start_says_why(tmp_path):
    with pytest.raises(OracleError, match="no-such-oracle not found"):
        CommandOracle("no-such-oracle --fast")
    script = tmp_path / "oracle.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(OracleError, match="is not executable; make it executable"):
        CommandOracle([str(script)])
    with pytest.raises(ValueError, match="command is empty"):
        CommandOracle("  ")
    with pytest.raises(ValueError, match="timeout_s must be a positive"):
        CommandOracle("true", timeout_s=0)


# -- the end of the process -------------------------------------------------------------------------------------------


def test_close_ends_the_process_and_can_be_called_twice(run, processes):
    with run("normal") as oracle:
        oracle.predict(SPECS[:1], "fast")
    assert processes[0].wait(timeout=1) == 0  # it saw EOF on stdin and exited by itself
    oracle.close()
    stubborn = run("stubborn")
    started = time.monotonic()
    stubborn.close(grace_s=0.2)  # it ignores EOF and SIGTERM: killed
    assert processes[1].poll() == -9 and time.monotonic() - started < 3


def test_an_oracle_dropped_without_close_does_not_leave_its_process(processes):
    oracle = CommandOracle([sys.executable, str(SCRIPT), "normal"], timeout_s=QUICK, startup_timeout_s=QUICK)
    del oracle
    gc.collect()
    assert processes[0].poll() is not None


# -- error answers ----------------------------------------------------------------------------------------------------


def test_error_answers_score_p_min_with_a_warning(run):
    oracle = run("flaky", "3")
    with pytest.warns(UserWarning, match=r"could not evaluate model [0-9a-f]{32} .*: out of memory on request \d; "
                                         r"the pair scores P_MIN") as caught:
        result = run_baseline("random", make_problem(oracle, WEIGHTS), BaselineSettings(budget=8, n_initial=4))
    assert len([w for w in caught if "could not evaluate" in str(w.message)]) == 2  # requests 3 and 6
    failed = [e for e in result.evaluations if not e.feasible]
    assert len(failed) == 2 and all(e.performance == P_MIN for e in failed)
    assert all(math.isnan(e.means["accuracy"]) for e in failed)


def test_errors_in_a_row_stop_the_search(run):
    oracle = run("errors")
    with pytest.warns(UserWarning, match="out of memory"):
        predicted = oracle.predict(SPECS[: MAX_CONSECUTIVE_ERRORS - 1], "fast")
    assert np.isnan(predicted["accuracy"]["mean"]).all() and np.isnan(predicted["latency_s"]["mean"]).all()
    with pytest.raises(OracleError, match=r"answered errors to 5 evaluations in a row; the last: out of memory on "
                                          r"request 5 \(model .* on slow\)"):
        oracle.predict(SPECS[:1], "slow")


# -- Python objects ---------------------------------------------------------------------------------------------------


ORACLE_MODULE = '''
    import numpy as np

    BOUNDS = {"accuracy": [0.6, 0.9], "latency_s": [0.001, 2.0], "energy_j": None, "peak_power_w": None}


    class MyOracle:
        devices = ["cpu"]
        bounds = BOUNDS

        def __init__(self, n_out=None):
            self.n_out = n_out

        def predict(self, specs, device):
            n = len(specs) if self.n_out is None else self.n_out
            layers = np.array([spec.num_layers for spec in specs[:n]], dtype=float)
            return {"accuracy": {"mean": 0.6 + layers / 100, "std": np.zeros(n)},
                    "latency_s": {"mean": layers / 10}}

        @classmethod
        def make(cls):
            return cls()


    ORACLE = MyOracle()


    def make():
        return MyOracle()


    def short():
        return MyOracle(n_out=0)


    def broken():
        raise RuntimeError("no GPU here")


    def not_an_oracle():
        return 42


    def bad_bounds():
        oracle = MyOracle()
        oracle.bounds = {"accuracy": [0.6, 0.9], "latency": [1, 2]}
        return oracle
'''


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """tmp_path as the current directory, with the oracle module and two broken ones written there."""
    (tmp_path / "ext_oracle_mod.py").write_text(textwrap.dedent(ORACLE_MODULE))
    (tmp_path / "ext_needs_dep.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "ext_raises.py").write_text("1 / 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_oracle_object puts the directory on it
    yield tmp_path
    for name in ("ext_oracle_mod", "ext_needs_dep", "ext_raises"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("target", ["ext_oracle_mod:make", "ext_oracle_mod:MyOracle", "ext_oracle_mod:ORACLE",
                                    "ext_oracle_mod:MyOracle.make"])
def test_load_oracle_object_finds_factories_classes_and_objects(modules, target):
    oracle = load_oracle_object(target)
    assert isinstance(oracle, ObjectOracle) and oracle.devices == ["cpu"]
    assert oracle.bounds == Bounds(accuracy=(0.6, 0.9), latency_s=(0.001, 2.0))
    assert oracle.measures("cpu") == ["latency_s"]
    predicted = oracle.predict(SPECS[:3], "cpu")
    np.testing.assert_allclose(predicted["accuracy"]["mean"], [0.6 + spec.num_layers / 100 for spec in SPECS[:3]])
    np.testing.assert_array_equal(predicted["latency_s"]["std"], 0.0)
    assert predicted["energy_j"] is None
    assert oracle.n_out is None  # other attributes are the object's own


def test_an_object_oracle_runs_a_search(modules):
    oracle = load_oracle_object("ext_oracle_mod:make")
    result = run_baseline("random", make_problem(oracle, Weights(0.5, 0.0, 0.0, 0.5)),
                          BaselineSettings(budget=6, n_initial=3))
    assert len(result.evaluations) == 6 and all(e.feasible for e in result.evaluations)


def test_an_object_oracle_that_predicts_the_wrong_shape_raises(modules):
    with pytest.raises(OracleError, match="gave 0 means and 0 stds of accuracy for 2 architectures"):
        load_oracle_object("ext_oracle_mod:short").predict(SPECS[:2], "cpu")


LOAD_FAILURES = {
    "ext_oracle_mod": r"named 'module:factory' \(e.g. 'my_oracle:make'\)",
    "ext_oracle_mod.py:make": r"without .py: 'ext_oracle_mod:make'",
    "ext-oracle:make": r"with Python names",
    "ext_absent_mod:make": r"no module named 'ext_absent_mod' in the current directory",
    "ext_needs_dep:make": r"No module named 'no_such_dependency_xyz' \(a module it imports is missing",
    "ext_raises:make": r"importing the oracle module 'ext_raises' failed: ZeroDivisionError",
    "ext_oracle_mod:nothing": r"module 'ext_oracle_mod' has no attribute 'nothing'",
    "ext_oracle_mod:MyOracle.nothing": r"has no attribute 'MyOracle.nothing' \(no 'nothing'\)",
    "ext_oracle_mod:broken": r"factory ext_oracle_mod:broken raised RuntimeError: no GPU here",
    "ext_oracle_mod:not_an_oracle": r"object of type int, which is no oracle: it lacks devices, bounds, predict",
    "ext_oracle_mod:bad_bounds": r"ext_oracle_mod:bad_bounds gives invalid bounds: unknown measure\(s\) \['latency'\]",
}


@pytest.mark.parametrize("target", LOAD_FAILURES)
def test_load_oracle_object_failures_say_what_is_wrong(modules, target):
    with warnings.catch_warnings(), pytest.raises(ValueError, match=LOAD_FAILURES[target]) as raised:
        load_oracle_object(target)
    assert "\n" not in str(raised.value)


def test_an_external_oracles_accuracy_is_not_charged_for_drift(modules, capsys):
    from boshcode.cli import main

    drift = modules / "drift.json"
    drift.write_text(json.dumps({"model": {"checkpoint": "c", "arch_hash": "h"}, "sequences": 4, "runtimes": {
        "onnxruntime-int8": {"base_runtime": "onnxruntime", "precision": "int8", "calibration": None,
                             "hidden_cosine": 0.9, "mlm_loss_f32": 5.0, "mlm_loss": 6.0,
                             "mlm_loss_increase_rel": 0.2}}}))
    args = ["codesign", "--oracle", "ext_oracle_mod:make", "--alpha", "0.5", "--beta", "0", "--gamma", "0",
            "--epsilon", "0.5", "--method", "random", "--budget", "6", "--runtime-drift", str(drift), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["drift_charge"] is None and out["runtime"] is None
    assert out["targets"] == [{"device": "cpu", "runtime": None}]
    assert "accuracy is taken as given" in captured.err
    assert main([*args, "--drift-charge", "on"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "taken as given" in err
