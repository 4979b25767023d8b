"""The profiling loop: seeds, acquisition, stopping, resume after an interruption, saved surrogates."""

import dataclasses
import json
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone

import numpy as np
import pytest

from flexibert import count_parameters, model_hash
from protran._profile import (
    ProfileConfig,
    Profiler,
    ReferenceDriftWarning,
    available_measures,
    choose_next,
    cross_validated_mse,
    normalised_targets,
    reference_spec,
)
from protran._protocol import MeasurementResult
from protran._store import RunLeasedError, RunStore
from tests.protran.test_store import REPO, lease_to, needs_proc, start_time


class FakeBoard:
    """Latency grows with parameter count, as on a real CPU; counts calls and can be told to fail."""

    def __init__(self, interrupt_at=None, with_power=False):
        self.calls = []
        self.interrupt_at = interrupt_at
        self.with_power = with_power

    def __call__(self, spec, **settings):
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append(model_hash(spec))
        latency_s = 1e-9 * count_parameters(spec) + 1e-4
        power = {"energy_j": latency_s * 5.0, "peak_power_w": 6.0 + latency_s, "idle_power_w": 2.0,
                 "meter": "fake"} if self.with_power else {}
        return MeasurementResult(arch_hash=model_hash(spec), model_dict=spec.to_model_dict(),
                                 runtime=settings["runtime"], batch_size=settings["batch_size"],
                                 seq_len=settings["seq_len"], num_threads=settings["num_threads"], status="ok",
                                 latency_s=latency_s, repeats=10, **power)


def _config(**changes):
    # reference_every=0, recheck=False: these tests count the board's calls; drift control and rechecks
    # have tests of their own
    settings = dict(device="fake-board", seed_samples=6, max_samples=9, pool_size=16,
                    target_mse=1e-9, patience=2, reference_every=0, recheck=False)
    settings.update(changes)
    return ProfileConfig(**settings)


def test_profile_measures_seeds_then_stops_at_the_budget(tmp_path):
    board = FakeBoard()
    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = Profiler(_config(), store, tmp_path / "out", measure_fn=board).run()
        assert summary.stop_reason == "max_samples"
        assert summary.measured_ok == 9 and len(set(board.calls)) == 9
        assert summary.measures == ["latency_s"]  # no meter: energy and power are not available
        rows = store.measurements(run_id=summary.run_id)
        assert all(row.energy_j is None for row in rows)
        assert store.get_run(summary.run_id).status == "finished"
    manifest = json.loads((tmp_path / "out" / "fake-board.surrogates.json").read_text())
    assert set(manifest["surrogates"]) == {"latency_s"}


def test_profile_converges_when_target_is_easy(tmp_path):
    board = FakeBoard(with_power=True)
    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = Profiler(_config(target_mse=0.5, patience=1, max_samples=20), store, tmp_path / "out",
                           measure_fn=board).run()
    assert summary.converged and summary.stop_reason == "converged"
    assert summary.measured_ok == 6
    assert set(summary.measures) == {"latency_s", "energy_j", "peak_power_w"}


def test_interrupted_profile_resumes_without_losing_or_repeating(tmp_path):
    store_path = tmp_path / "runs.sqlite"
    first = FakeBoard(interrupt_at=7)
    with RunStore(store_path) as store, pytest.raises(KeyboardInterrupt):
        Profiler(_config(), store, tmp_path / "out", measure_fn=first).run()
    with RunStore(store_path) as store:
        assert len(store.measurements()) == 7
        assert store.runs()[0].status == "interrupted"
        second = FakeBoard()
        summary = Profiler(_config(), store, tmp_path / "out", resume=True, measure_fn=second).run()
        assert summary.run_id == store.runs()[0].id
        assert not set(first.calls) & set(second.calls)
        assert summary.measured_ok == 9 and len(second.calls) == 2


def test_resume_with_other_settings_starts_a_new_run(tmp_path):
    store_path = tmp_path / "runs.sqlite"
    with RunStore(store_path) as store, pytest.raises(KeyboardInterrupt):
        Profiler(_config(), store, tmp_path / "out", measure_fn=FakeBoard(interrupt_at=2)).run()
    with RunStore(store_path) as store:
        summary = Profiler(_config(seed=1), store, tmp_path / "out", resume=True, measure_fn=FakeBoard()).run()
        assert len(store.runs()) == 2 and summary.run_id != store.runs()[0].id


def test_pure_pieces():
    class Row:
        def __init__(self, latency, energy):
            self.latency_s, self.energy_j, self.peak_power_w = latency, energy, None

    rows = [Row(1.0, 2.0), Row(4.0, None)]
    assert available_measures(rows) == ["latency_s"]
    values, scale = normalised_targets(rows, "latency_s")
    assert scale == 4.0 and list(values) == [0.25, 1.0]

    class Mean:
        def fit(self, X, y):
            self.mean = y.mean()
            return self

        def predict(self, X, return_std=False):
            mean = np.full(len(X), self.mean)
            return (mean, np.arange(len(X), dtype=float)) if return_std else mean

    X = np.zeros((10, 1))
    y = np.arange(10, dtype=float)
    assert cross_validated_mse(Mean, X, y, folds=5, seed=0) > 0
    assert cross_validated_mse(Mean, X, np.ones(10), folds=5, seed=0) == 0
    pool = ["a", "b", "c"]
    assert choose_next(pool, {"latency_s": Mean().fit(X, y)}, np.zeros((3, 1)), "uncertainty",
                       np.random.default_rng(0)) == "c"


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="max_samples"):
        ProfileConfig(device="x", seed_samples=16, max_samples=8)
    with pytest.raises(ValueError, match="device name"):
        ProfileConfig(device="a/b")
    with pytest.raises(ValueError, match="acquisition"):
        ProfileConfig(device="x", acquisition="greedy")


def test_listed_architectures_are_measured_in_order_as_their_own_run_and_resume(tmp_path):
    from flexibert import sample_architectures
    from protran._profile import measure_listed

    specs = sample_architectures(5, method="random", seed=3)
    config = ProfileConfig(device="fake-board", reference_every=0)
    with RunStore(tmp_path / "runs.sqlite") as store:
        with pytest.raises(KeyboardInterrupt):
            measure_listed(config, specs, store, purpose="holdout", measure_fn=FakeBoard(interrupt_at=2))
        board = FakeBoard()
        summary = measure_listed(config, specs, store, purpose="holdout", resume=True, measure_fn=board)
        assert board.calls == [model_hash(spec) for spec in specs[2:]]  # nothing measured twice
        assert (summary.requested, summary.measured_ok, summary.failed) == (5, 5, 0)
        run = store.get_run(summary.run_id)
        assert run.config["purpose"] == "holdout" and run.status == "finished"
        assert [m.arch_hash for m in store.measurements(run_id=summary.run_id)] == [model_hash(s) for s in specs]
        # another purpose (or another list) is a new run, never a continuation of this one
        retest = measure_listed(config, specs[:2], store, purpose="retest", resume=True, measure_fn=FakeBoard())
        assert retest.run_id != summary.run_id and retest.measured_ok == 2
    with pytest.raises(ValueError, match="at least one architecture"):
        measure_listed(config, [], RunStore(tmp_path / "other.sqlite"))


# -- one process per run ----------------------------------------------------------------------------------


def _interrupted_run(store_path, tmp_path, at=7) -> int:
    with RunStore(store_path) as store, pytest.raises(KeyboardInterrupt):
        Profiler(_config(), store, tmp_path / "out", measure_fn=FakeBoard(interrupt_at=at)).run()
    with RunStore(store_path) as store:
        (run,) = store.runs()
        assert run.status == "interrupted" and store.lease(run.id) is None  # Ctrl-C frees the run
        return run.id


@needs_proc
def test_resume_refuses_a_run_another_live_profiler_holds_and_takes_it_once_that_one_is_gone(
        tmp_path, other_process):
    store_path = tmp_path / "runs.sqlite"
    run_id = _interrupted_run(store_path, tmp_path)
    lease_to(store_path, run_id, other_process.pid, start=start_time(other_process.pid))
    with RunStore(store_path) as store:
        board = FakeBoard()
        with pytest.raises(RunLeasedError, match=rf"run {run_id} .* held by pid {other_process.pid} .*still running"):
            Profiler(_config(), store, tmp_path / "out", resume=True, measure_fn=board)
        assert board.calls == [] and len(store.runs()) == 1 and len(store.measurements(status=None)) == 7
        other_process.kill()
        other_process.wait()
        summary = Profiler(_config(), store, tmp_path / "out", resume=True, measure_fn=board).run()
        assert summary.run_id == run_id and len(board.calls) == 2
        attempts = store.measurements(run_id=run_id, status=None)
        assert len(attempts) == 9 == len({a.arch_hash for a in attempts})  # max_samples, nothing twice
        assert store.get_run(run_id).status == "finished" and store.lease(run_id) is None


@needs_proc
def test_listed_resume_refuses_a_run_another_live_process_holds(tmp_path, other_process):
    from flexibert import sample_architectures
    from protran._profile import measure_listed

    specs = sample_architectures(4, method="random", seed=3)
    config = ProfileConfig(device="fake-board", reference_every=0)
    with RunStore(tmp_path / "runs.sqlite") as store:
        with pytest.raises(KeyboardInterrupt):
            measure_listed(config, specs, store, purpose="holdout", measure_fn=FakeBoard(interrupt_at=1))
        (run,) = store.runs()
        lease_to(store.path, run.id, other_process.pid, start=start_time(other_process.pid))
        board = FakeBoard()
        with pytest.raises(RunLeasedError, match=f"held by pid {other_process.pid}"):
            measure_listed(config, specs, store, purpose="holdout", resume=True, measure_fn=board)
        assert board.calls == [] and len(store.runs()) == 1


@needs_proc
def test_a_profiler_whose_run_is_taken_over_stops_and_leaves_the_run_to_its_new_holder(tmp_path, other_process):
    with RunStore(tmp_path / "runs.sqlite") as store:
        board = FakeBoard()
        profiler = Profiler(_config(), store, tmp_path / "out", measure_fn=board)

        def taken_over_after_three(spec, **settings):
            if len(board.calls) == 3:
                lease_to(store.path, profiler.run_id, other_process.pid, start=start_time(other_process.pid))
            return board(spec, **settings)

        profiler._measure_fn = taken_over_after_three
        with pytest.raises(RunLeasedError, match="lost its lease"):
            profiler.run()
        assert len(store.measurements(status=None)) == 3  # the fourth was refused
        run = store.get_run(profiler.run_id)
        assert run.status == "running" and store.lease(run.id).pid == other_process.pid  # the new holder's


def test_an_error_mid_run_frees_the_run_for_resuming(tmp_path):
    class Broken(FakeBoard):
        def __call__(self, spec, **settings):
            if len(self.calls) == 2:
                raise RuntimeError("the runtime crashed")
            return super().__call__(spec, **settings)

    with RunStore(tmp_path / "runs.sqlite") as store:
        with pytest.raises(RuntimeError, match="crashed"):
            Profiler(_config(), store, tmp_path / "out", measure_fn=Broken()).run()
        (run,) = store.runs()
        assert run.status == "interrupted" and store.lease(run.id) is None


_RESUMER = """
import sys
import time
from pathlib import Path

from protran._profile import Profiler
from protran._store import RunLeasedError, RunStore
from tests.protran.test_profile import FakeBoard, _config

store_path, out, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
board = FakeBoard()


def gated(spec, **settings):
    while not gate.exists():  # hold the run, alive, until the test has seen the other one refused
        time.sleep(0.01)
    return board(spec, **settings)


with RunStore(store_path) as store:
    print("ready", flush=True)
    sys.stdin.readline()  # both resume together
    try:
        summary = Profiler(_config(), store, out, resume=True, measure_fn=gated).run()
    except RunLeasedError as error:
        print("refused", error, flush=True)
        sys.exit(3)
    print("finished", summary.run_id, len(board.calls), flush=True)
"""


@needs_proc
def test_two_processes_resuming_one_interrupted_run_measure_it_once(tmp_path):
    store_path = tmp_path / "runs.sqlite"
    run_id = _interrupted_run(store_path, tmp_path)
    gate = tmp_path / "gate"
    resumers = [subprocess.Popen([sys.executable, "-c", _RESUMER, str(store_path), str(tmp_path / "out"), str(gate)],
                                 cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(2)]
    try:
        assert [resumer.stdout.readline() for resumer in resumers] == ["ready\n"] * 2
        for resumer in resumers:
            resumer.stdin.write("go\n")
            resumer.stdin.flush()
        deadline = time.monotonic() + 60
        while all(resumer.poll() is None for resumer in resumers) and time.monotonic() < deadline:
            time.sleep(0.05)
        (loser,) = [resumer for resumer in resumers if resumer.poll() is not None]
        (winner,) = [resumer for resumer in resumers if resumer is not loser]
        assert loser.returncode == 3 and f"held by pid {winner.pid} " in loser.stdout.read()
    finally:
        gate.touch()
        outputs = [resumer.communicate("", timeout=60)[0] for resumer in resumers]
    assert winner.returncode == 0 and outputs[resumers.index(winner)].split() == ["finished", str(run_id), "2"]
    with RunStore(store_path) as store:
        attempts = store.measurements(status=None)
        assert len(store.runs()) == 1 and len(attempts) == 9 == len({a.arch_hash for a in attempts})
        assert store.get_run(run_id).status == "finished" and store.lease(run_id) is None


# -- drift control ---------------------------------------------------------------------------------------


class DriftingBoard(FakeBoard):
    """A board that, after ``steady`` calls (references included), slows down by ``slowdown`` per call,
    from ``start`` times the true latency: a machine that heats up and throttles. ``truth`` keeps the
    undrifted latencies."""

    def __init__(self, slowdown=0.01, start=1.0, steady=0, **kwargs):
        super().__init__(**kwargs)
        self.slowdown, self.start, self.steady, self.truth = slowdown, start, steady, {}

    def __call__(self, spec, **settings):
        measured = super().__call__(spec, **settings)
        self.truth[measured.arch_hash] = measured.latency_s
        drifted = max(0, len(self.calls) - 1 - self.steady)
        latency = measured.latency_s * self.start * (1 + self.slowdown * drifted)
        started = datetime.now(timezone.utc).isoformat()  # the order of rows and references, as on a board
        return dataclasses.replace(measured, latency_s=latency, latency_iqr_s=0.1 * latency, started_at=started,
                                   finished_at=datetime.now(timezone.utc).isoformat())


def test_references_correct_a_drifting_board_and_flag_the_drift(tmp_path):
    board = DriftingBoard(slowdown=0.02, steady=6)  # steady over the first three references, then heating up
    with RunStore(tmp_path / "runs.sqlite") as store, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = Profiler(_config(reference_every=2), store, tmp_path / "out", measure_fn=board).run()
        rows = store.measurements(run_id=summary.run_id, status=None)
        references = store.references(summary.run_id)
        models = store.models()
    # 9 rows (the budget, references not counted), one reference at the start and after every 2 rows
    assert summary.measured_ok == 9 and len(rows) == 9 and len({row.arch_hash for row in rows}) == 9
    assert len(references) == 5 and all(ref.status == "ok" for ref in references)
    assert len(board.calls) == 14 and set(board.calls[i] for i in (0, 3, 6, 9, 12)) == {model_hash(reference_spec(
        ProfileConfig(device="x").design_space()))}
    assert models and all(record.metrics["rows"] == 9 for record in models)  # fitted on the rows alone
    corrected = np.array([row.latency_s / board.truth[row.arch_hash] - 1 for row in rows])
    raw = np.array([row.latency_raw_s / board.truth[row.arch_hash] - 1 for row in rows])
    assert np.abs(raw).max() > 0.1 and np.abs(corrected).max() < 0.045
    assert np.abs(corrected).mean() < np.abs(raw).mean() / 2.5
    factors = [row.conditions["drift_factor"] for row in rows]
    # within the 5 % threshold (references 1.00, 1.00, 1.00) no correction; beyond it (1.06, 1.12) by it
    assert factors[:6] == [1.0] * 6 and factors[6:] == pytest.approx([1 / 1.06, 1 / 1.06, 1 / 1.12])
    for row in rows:
        assert row.conditions["drift_factor"] == pytest.approx(row.latency_s / row.latency_raw_s)
        assert row.latency_iqr_s == pytest.approx(0.1 * row.latency_raw_s * row.conditions["drift_factor"])
    assert summary.reference_drift == pytest.approx(0.12) and summary.drift_exceeded
    drift_warnings = [w for w in caught if issubclass(w.category, ReferenceDriftWarning)]
    assert len(drift_warnings) == 1 and "\n" not in str(drift_warnings[0].message)
    assert "drifted by 6.0%" in str(drift_warnings[0].message)  # warned once, when it first crossed 5%


def test_a_steady_board_is_within_the_threshold_and_a_failed_reference_keeps_the_factor(tmp_path):
    class FailingReferences(DriftingBoard):
        def __call__(self, spec, **settings):
            measured = super().__call__(spec, **settings)
            if len(self.calls) == 5:  # the second reference, after 3 rows
                return dataclasses.replace(measured, status="failed", latency_s=None, latency_iqr_s=None)
            return measured

    board = FailingReferences(slowdown=0.001)
    with RunStore(tmp_path / "runs.sqlite") as store, warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceDriftWarning)
        summary = Profiler(_config(reference_every=3), store, tmp_path / "out", measure_fn=board).run()
        rows = store.measurements(run_id=summary.run_id, status=None)
        statuses = [ref.status for ref in store.references(summary.run_id)]
    assert statuses == ["ok", "failed", "ok", "ok"]
    # references 1.000, (failed), 1.008, 1.012: baseline their median 1.008, drift |1 / 1.008 - 1|
    assert not summary.drift_exceeded and summary.reference_drift == pytest.approx(1 - 1 / 1.008)
    factors = [row.conditions["drift_factor"] for row in rows]
    assert factors == [1.0] * 9  # within the threshold nothing is corrected, whatever failed


def test_correct_reproduces_the_live_rule_for_another_threshold(tmp_path, capsys):
    from protran.cli import main

    def factors(store, run_id):  # by position: the two runs may choose other architectures after the seeds
        return [row.conditions["drift_factor"] for row in store.measurements(run_id=run_id)]

    with RunStore(tmp_path / "a.sqlite") as store:  # corrected live with the default 5 %
        first = Profiler(_config(reference_every=3), store, tmp_path / "a", measure_fn=DriftingBoard()).run()
        before = factors(store, first.run_id)
    with RunStore(tmp_path / "b.sqlite") as store, warnings.catch_warnings():  # live with 1 %
        warnings.simplefilter("ignore", ReferenceDriftWarning)
        live = Profiler(_config(reference_every=3, drift_threshold=0.01), store, tmp_path / "b",
                        measure_fn=DriftingBoard()).run()
        expected = factors(store, live.run_id)
    assert before != expected
    assert main(["correct", "--store", str(tmp_path / "a.sqlite"), "--drift-threshold", "0.01", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["rows"] == 9 and result["changed"] == sum(a != b for a, b in zip(before, expected)) > 0
    with RunStore(tmp_path / "a.sqlite") as store:
        assert factors(store, first.run_id) == pytest.approx(expected)
        for row in store.measurements(run_id=first.run_id):
            assert row.latency_s == pytest.approx(row.latency_raw_s * row.conditions["drift_factor"])
            assert row.latency_iqr_s == pytest.approx(0.1 * row.latency_s)
    lease_to(tmp_path / "a.sqlite", first.run_id, pid=1)  # as a process measuring the run would hold it
    assert main(["correct", "--store", str(tmp_path / "a.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "being measured" in err


def test_drift_factor_corrects_only_beyond_the_threshold():
    from protran._profile import drift_factor, reference_baseline

    assert reference_baseline([1.0, 1.2, 0.9, 5.0]) == pytest.approx(1.0)  # the median of the first three
    assert reference_baseline([]) is None
    assert drift_factor(1.0, 1.04, 0.05) == 1.0 and drift_factor(1.0, 0.96, 0.05) == 1.0
    assert drift_factor(1.0, 1.06, 0.05) == pytest.approx(1 / 1.06)
    assert drift_factor(1.0, 0.9, 0.05) == pytest.approx(1 / 0.9)
    assert drift_factor(1.0, 1.04, 0.01) == pytest.approx(1 / 1.04)


def test_reference_every_0_leaves_the_rows_uncorrected(tmp_path):
    board = DriftingBoard()
    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = Profiler(_config(reference_every=0), store, tmp_path / "out", measure_fn=board).run()
        rows = store.measurements(run_id=summary.run_id, status=None)
        assert store.references(summary.run_id) == []
    assert len(board.calls) == 9 and summary.reference_drift is None and not summary.drift_exceeded
    assert all(row.latency_raw_s is None and "drift_factor" not in row.conditions for row in rows)


def test_resume_corrects_relative_to_the_first_reference_of_the_run(tmp_path):
    store_path = tmp_path / "runs.sqlite"
    with RunStore(store_path) as store, pytest.raises(KeyboardInterrupt):
        Profiler(_config(reference_every=3), store, tmp_path / "out",
                 measure_fn=DriftingBoard(slowdown=0, interrupt_at=5)).run()
    hotter = DriftingBoard(slowdown=0, start=1.5)  # the machine is 50% slower in the second session
    with RunStore(store_path) as store, pytest.warns(ReferenceDriftWarning, match="drifted by 50.0%"):
        summary = Profiler(_config(reference_every=3), store, tmp_path / "out", resume=True, measure_fn=hotter).run()
        rows = store.measurements(run_id=summary.run_id, status=None)
        references = [ref.latency_s for ref in store.references(summary.run_id)]
    # 2 references in the first session (start, after 3 rows), 3 in the second (start, after 3 and 6 rows)
    assert summary.run_id == 1 and len(rows) == 9 and len(references) == 5
    assert references[2] == pytest.approx(1.5 * references[0])  # the resumed session starts with a reference
    for row in rows[3:]:  # measured after the resume
        assert row.conditions["drift_factor"] == pytest.approx(1 / 1.5)
        assert row.latency_s == pytest.approx(hotter.truth[row.arch_hash])
    assert summary.reference_drift == pytest.approx(0.5) and summary.drift_exceeded


def test_the_cli_refuses_a_negative_reference_interval_in_one_line(tmp_path, capsys):
    from protran.cli import main

    assert main(["profile", "--device", "x", "--reference-every", "-1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--reference-every" in err
    assert main(["profile", "--device", "x", "--drift-threshold", "-0.1", "--out", str(tmp_path)]) == 2
    assert "--drift-threshold" in capsys.readouterr().err
    assert main(["profile", "--device", "x", "--drift-correction", "median", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--drift-correction" in err
    assert not list(tmp_path.iterdir())  # refused before anything was written
    with pytest.raises(ValueError, match="drift_correction"):
        _config(drift_correction="median")


def test_bracket_corrects_each_row_by_the_references_on_both_sides(tmp_path):
    """A board slowing by 2 % per call, a reference before and after every row: the bracket rule puts
    every row at the baseline's speed, where the latest rule leaves each one a call's drift slow."""
    def run(name, correction):
        with RunStore(tmp_path / f"{name}.sqlite") as store, warnings.catch_warnings():
            warnings.simplefilter("ignore", ReferenceDriftWarning)
            board = DriftingBoard(slowdown=0.02)
            summary = Profiler(_config(reference_every=1, drift_threshold=0.0, drift_correction=correction), store,
                               tmp_path / name, measure_fn=board).run()
            rows = store.measurements(run_id=summary.run_id, status=None)
            return board, rows, store.references(summary.run_id)

    board, rows, references = run("bracket", "bracket")
    assert len(rows) == 9 and len(references) == 10  # a reading before the first row and after every row
    # calls alternate reference, row, reference, ...: row k (call 2k+1) lies between readings 2k and
    # 2k+2, and the baseline is the median of all ten readings (1.00, 1.04, ..., 1.36: 1.18), so every
    # row is put at that one level
    level = np.array([row.latency_s / board.truth[row.arch_hash] for row in rows])
    assert level == pytest.approx([1.18] * 9, rel=5e-4)
    latest_board, latest_rows, _ = run("latest", "latest")
    latest = np.array([row.latency_s / latest_board.truth[row.arch_hash] for row in latest_rows])
    assert np.all(latest[2:] > 1.04 * 1.01)  # a row runs one call slower than the reading before it
    # protran correct turns the latest store into the bracket one, from the same raw latencies
    from protran.cli import main
    assert main(["correct", "--store", str(tmp_path / "latest.sqlite"), "--drift-correction", "bracket",
                 "--drift-threshold", "0", "--json"]) == 0
    with RunStore(tmp_path / "latest.sqlite") as store:
        recorrected = [row.latency_s / latest_board.truth[row.arch_hash] for row in store.measurements(run_id=1)]
    assert recorrected == pytest.approx(level, rel=1e-9)


def test_bracket_baseline_is_the_median_of_the_first_runs_readings():
    """Not the first three (the first minutes of a session are not its usual speed), and not the later
    runs' (a retest is put at the profile's level, not at its own)."""
    from protran._profile import bracket_baseline
    from protran._store import Reference

    def ref(run_id, latency, status="ok"):
        return Reference(id=0, run_id=run_id, measured_at="", latency_s=latency, latency_ci_rel=0.01, status=status)

    readings = [ref(1, 1.3), ref(1, 1.2), ref(1, 1.0), ref(1, None, "failed"), ref(1, 0.9), ref(1, 1.0),
                ref(2, 5.0), ref(2, 5.0)]
    assert bracket_baseline(readings) == pytest.approx(1.0)
    assert bracket_baseline([ref(3, None, "failed"), ref(2, 2.0)]) == pytest.approx(2.0)
    assert bracket_baseline([]) is None


def test_bracket_reading_is_the_geometric_mean_and_falls_back_to_the_latest():
    from protran._profile import bracket_reading

    assert bracket_reading(1.0, 1.21) == pytest.approx(1.1) and bracket_reading(0.9, None) == 0.9


class NoisyBoard(FakeBoard):
    """A FakeBoard whose every ``noisy_every``-th row is off by +-50 % and says so with a wide CI; the
    other rows are exact and converged (a CI below the protocol's target)."""

    def __init__(self, noisy_every=4):
        super().__init__()
        self.noisy_every = noisy_every

    def __call__(self, spec, **settings):
        result = super().__call__(spec, **settings)
        index = len(self.calls) - 1
        if index % self.noisy_every == self.noisy_every - 1:
            factor = 1.5 if (index // self.noisy_every) % 2 == 0 else 0.5
            return dataclasses.replace(result, latency_s=result.latency_s * factor, latency_ci_rel=0.5)
        return dataclasses.replace(result, latency_ci_rel=0.005)


def test_noisy_rows_weigh_less_and_the_weighted_fit_is_closer_to_the_truth(tmp_path):
    from flexibert import sample_architectures
    from protran._profile import row_weights
    from protran.surrogates import featurize, make_surrogate

    config = _config(seed_samples=24, max_samples=24)
    with RunStore(tmp_path / "runs.sqlite") as store:
        profiler = Profiler(config, store, tmp_path / "out", measure_fn=NoisyBoard())
        profiler.run()
        rows = profiler._ok_rows()
        weighted = profiler._fit(rows)["latency_s"]
    noisy = np.array([row.latency_ci_rel == 0.5 for row in rows])
    assert 4 <= noisy.sum() <= 8

    weights = row_weights(rows, config.target_rel_ci)
    assert weights is not None and np.isclose(weights.mean(), 1.0)
    assert np.allclose(weights[~noisy], weights[~noisy][0])  # converged rows weigh the same
    assert np.allclose(weights[noisy] / weights[~noisy][0], (config.target_rel_ci / 0.5) ** 2)

    features = featurize([row.spec for row in rows], features=config.features, batch_size=config.batch_size,
                         seq_len=config.seq_len)
    targets, scale = normalised_targets(rows, "latency_s")
    unweighted = make_surrogate(config.surrogate, seed=config.seed).fit(features, targets)

    held_out = sample_architectures(60, method="random", seed=12345, space=profiler.space)
    truth = np.array([1e-9 * count_parameters(spec) + 1e-4 for spec in held_out]) / scale
    X = featurize(held_out, features=config.features, batch_size=config.batch_size, seq_len=config.seq_len)
    error_weighted = np.mean((weighted.predict(X) - truth) ** 2)
    error_unweighted = np.mean((unweighted.predict(X) - truth) ** 2)
    assert error_weighted < 0.5 * error_unweighted

    # without CIs (imported rows) every row weighs the same: the plain fit
    assert row_weights([dataclasses.replace(row, latency_ci_rel=None) for row in rows], 0.02) is None


def test_the_cli_prints_the_drift(tmp_path, capsys, monkeypatch):
    import protran._profile as profiling
    from protran.cli import main
    from tests.protran.test_cli import TINY_SPACE, _fake_measure

    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    monkeypatch.setattr(profiling, "_default_measure", _fake_measure)
    args = ["profile", "--device", "ci-cpu", "--space", str(space), "--seed-samples", "4", "--max-samples", "4",
            "--meter", "none", "--surrogate", "gbdt", "--reference-every", "2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    drift_lines = [line for line in capsys.readouterr().out.splitlines() if "reference drift" in line]
    assert drift_lines == ["  reference drift 0.0% (within the 5.0% threshold; latencies corrected for it)"]
    assert main([*args, "--out", str(tmp_path / "b"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reference_drift"] == 0.0 and summary["drift_exceeded"] is False


def test_a_retest_run_is_corrected_to_the_profile_runs_baseline(tmp_path):
    from flexibert import sample_architectures
    from protran._profile import measure_listed

    with RunStore(tmp_path / "runs.sqlite") as store:
        Profiler(_config(reference_every=3), store, tmp_path / "out", measure_fn=DriftingBoard(slowdown=0)).run()
        specs = sample_architectures(4, method="random", seed=5)
        hotter = DriftingBoard(slowdown=0, start=1.3)  # hours later the machine is 30% slower
        other = ProfileConfig(device="other-board", reference_every=3)
        with pytest.warns(ReferenceDriftWarning, match="drifted by 30.0%"):
            retest = measure_listed(_config(reference_every=3), specs, store, purpose="retest", measure_fn=hotter)
        rows = store.measurements(run_id=retest.run_id)
        # another board's run has a baseline of its own: its first reference, so no correction
        fresh = measure_listed(other, specs[:1], store, purpose="retest", measure_fn=DriftingBoard(slowdown=0,
                                                                                                      start=1.3))
        other_row = store.measurements(run_id=fresh.run_id)[0]
    assert len(rows) == 4
    for row in rows:
        assert row.latency_s == pytest.approx(hotter.truth[row.arch_hash])
        assert row.latency_raw_s == pytest.approx(1.3 * hotter.truth[row.arch_hash])
    assert other_row.conditions["drift_factor"] == pytest.approx(1.0)


class WideOnce(FakeBoard):
    """The first measurement of every architecture in ``wide`` misses the CI target (a burst of load);
    the next one converges."""

    def __init__(self, wide, **kwargs):
        super().__init__(**kwargs)
        self.wide = set(wide)

    def __call__(self, spec, **settings):
        measured = super().__call__(spec, **settings)
        if measured.arch_hash in self.wide:
            self.wide.discard(measured.arch_hash)
            return dataclasses.replace(measured, status="unstable", latency_ci_rel=0.08,
                                       latency_s=measured.latency_s * 1.3, time_capped=True)
        return dataclasses.replace(measured, latency_ci_rel=0.01)


@pytest.mark.parametrize("remeasure", [True, False])
def test_rows_whose_ci_stayed_wide_are_measured_again_at_the_end(tmp_path, remeasure):
    from flexibert import sample_architectures

    seeds = sample_architectures(6, method="lhs_split", seed=0)
    wide = {model_hash(seeds[1]), model_hash(seeds[4])}
    board = WideOnce(wide)
    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = Profiler(_config(remeasure=remeasure), store, tmp_path / "out", measure_fn=board).run()
        current = store.measurements(run_id=summary.run_id, status=None)
        every = store.measurements(run_id=summary.run_id, status=None, include_superseded=True)
    assert len(current) == 9 == len({row.arch_hash for row in current})  # still one row per architecture
    if not remeasure:
        assert len(board.calls) == 9 and summary.unstable == 2 and len(every) == 9
        return
    assert board.calls[9:] == [model_hash(seeds[1]), model_hash(seeds[4])]  # after the budget, in order
    assert summary.unstable == 0 and all(row.status == "ok" for row in current)
    superseded = [row for row in every if row.superseded_by is not None]
    assert len(every) == 11 and {row.arch_hash for row in superseded} == wide
    assert all(row.status == "unstable" for row in superseded)  # kept, never deleted


class SlowOnce(FakeBoard):
    """Measures ``slow`` architectures 1.5x too slow, with a narrow CI, the first time only: a timed
    window stretched evenly by load on the host."""

    def __init__(self, slow, **kwargs):
        super().__init__(**kwargs)
        self.slow = set(slow)

    def __call__(self, spec, **settings):
        measured = dataclasses.replace(super().__call__(spec, **settings), latency_ci_rel=0.01)
        if measured.arch_hash in self.slow:
            self.slow.discard(measured.arch_hash)
            return dataclasses.replace(measured, latency_s=measured.latency_s * 1.5)
        return measured


@pytest.mark.parametrize("recheck", [True, False])
def test_a_row_measured_slow_is_rechecked_at_the_end_and_the_faster_row_kept(tmp_path, recheck):
    from flexibert import sample_architectures

    seeds = sample_architectures(16, method="lhs_split", seed=0)
    slow = model_hash(seeds[5])
    board = SlowOnce({slow})
    config = _config(seed_samples=16, max_samples=16, recheck=recheck)
    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = Profiler(config, store, tmp_path / "out", measure_fn=board).run()
        current = {row.arch_hash: row for row in store.measurements(run_id=summary.run_id, status=None)}
        every = store.measurements(run_id=summary.run_id, status=None, include_superseded=True)
    assert len(current) == 16
    if not recheck:
        assert len(board.calls) == 16 and len(every) == 16
        return
    # the slow row, and only rows the other rows disagree with, are measured again after the budget
    assert board.calls[16] == slow and len(board.calls) <= 16 + 1 + int(0.1 * 16)
    truth = 1e-9 * count_parameters(seeds[5]) + 1e-4
    assert current[slow].latency_s == pytest.approx(truth)  # the faster row is current
    superseded = [row for row in every if row.superseded_by is not None]
    assert [row.arch_hash for row in superseded] == [slow]
    assert superseded[0].latency_s == pytest.approx(1.5 * truth)  # kept, never deleted


def test_disagreeing_rows_are_the_slow_outliers_worst_first():
    from protran._profile import disagreeing_rows

    rel = np.array([0.01, -0.02, 0.03, -0.5, 0.0, -0.2, 0.6, -0.01])
    # the robust spread ignores the outliers; a row predicted slower than measured (0.6) is not taken
    assert disagreeing_rows(rel, sigmas=3.0, floor=0.08, limit=5) == [3, 5]
    assert disagreeing_rows(rel, sigmas=3.0, floor=0.08, limit=1) == [3]
    assert disagreeing_rows(rel, sigmas=3.0, floor=0.3, limit=5) == [3]
    assert disagreeing_rows(rel, sigmas=3.0, floor=0.08, limit=0) == []


def test_a_listed_run_measures_its_wide_rows_again_and_keeps_the_better_one(tmp_path):
    from flexibert import sample_architectures
    from protran._profile import measure_listed

    specs = sample_architectures(3, method="random", seed=3)

    class StillWide(FakeBoard):  # the re-measurement is even wider: the first row stays current
        def __call__(self, spec, **settings):
            measured = super().__call__(spec, **settings)
            if measured.arch_hash != model_hash(specs[0]):
                return measured
            ci = 0.05 if self.calls.count(measured.arch_hash) == 1 else 0.09
            return dataclasses.replace(measured, status="unstable", latency_ci_rel=ci)

    with RunStore(tmp_path / "runs.sqlite") as store:
        board = StillWide()
        summary = measure_listed(_config(), specs, store, purpose="holdout", measure_fn=board)
        current = store.measurements(run_id=summary.run_id, status=None)
        every = store.measurements(run_id=summary.run_id, status=None, include_superseded=True)
    assert len(board.calls) == 4 and len(current) == 3 and len(every) == 4
    assert [row.latency_ci_rel for row in current if row.status == "unstable"] == [0.05]
    assert every[3].superseded_by == every[0].id


# -- transfer prior and predictability -------------------------------------------------------------------


class ScaledBoard(FakeBoard):
    """Another board: the same cost shape as FakeBoard, three times slower, with a mild warp, and a peak
    power that is pure noise (seeded by the architecture), as on boards whose supply decides it."""

    def __call__(self, spec, **settings):
        measured = super().__call__(spec, **settings)
        latency = 3.0 * measured.latency_s ** 1.05
        noise = np.random.default_rng(int(measured.arch_hash[:8], 16)).uniform(5.0, 10.0)
        return dataclasses.replace(measured, latency_s=latency, energy_j=4.0 * latency, peak_power_w=noise,
                                   idle_power_w=2.0, meter="fake")


def _prior_store(tmp_path):
    path = tmp_path / "prior.sqlite"
    with RunStore(path) as store:
        Profiler(_config(device="known-board", max_samples=24, seed_samples=16, target_mse=1e-9), store,
                 tmp_path / "prior-out", measure_fn=FakeBoard(with_power=True)).run()
    return path


def test_a_prior_starts_from_few_seeds_and_stops_on_its_own_rule(tmp_path):
    from protran._transfer import PRIOR_MIN_ROWS

    prior = _prior_store(tmp_path)
    board = ScaledBoard()
    config = _config(device="new-board", seed_samples=4, max_samples=40, target_mse=0.005, patience=2,
                     prior_paths=(str(prior),))
    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = Profiler(config, store, tmp_path / "out", measure_fn=board).run()
        run = store.get_run(summary.run_id)
    assert summary.prior_devices == 1 and run.config["prior"] == ["prior.sqlite"]
    assert summary.converged and PRIOR_MIN_ROWS <= summary.measured_ok < 40
    # peak power is noise on this board: reported, and not what the loop waited for
    assert summary.not_predictable == ["peak_power_w"] and summary.predictability_r2["peak_power_w"] < 0.5
    assert summary.predictability_r2["latency_s"] > 0.9


def test_without_a_prior_an_unpredictable_measure_does_not_hold_the_loop(tmp_path):
    config = _config(seed_samples=8, max_samples=40, target_mse=0.005, patience=2)
    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = Profiler(config, store, tmp_path / "out", measure_fn=ScaledBoard()).run()
    assert summary.converged and summary.measured_ok < 40
    assert summary.cv_mse["peak_power_w"] > 0.005 and summary.not_predictable == ["peak_power_w"]


def test_a_bad_prior_is_refused_before_any_run(tmp_path):
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match="not a file"):
        _config(prior_paths=(str(tmp_path / "missing.sqlite"),))
    with RunStore(tmp_path / "runs.sqlite") as store:
        with pytest.raises(Exception, match="empty|no board|rows"):
            Profiler(_config(prior_paths=(str(tmp_path / "empty.json"),)), store, tmp_path / "out",
                     measure_fn=FakeBoard())
        assert store.runs() == []


def test_processes_reach_the_measure_call_only_when_more_than_one(tmp_path):
    seen = []

    def board(spec, **settings):
        seen.append(settings.get("processes"))
        return FakeBoard()(spec, **settings)

    for processes in (1, 2):
        with RunStore(tmp_path / f"runs{processes}.sqlite") as store:
            Profiler(_config(max_samples=6, processes=processes), store, tmp_path / "out", measure_fn=board).run()
    assert seen == [None] * 6 + [2] * 6
    with pytest.raises(ValueError, match="processes"):
        _config(processes=0)


class InProcessBoard(DriftingBoard):
    """A drifting board that, asked for a reference, times it in the same call at the call's drift: the
    reading moves with the row it was read beside."""

    def __call__(self, spec, reference=None, **settings):
        measured = super().__call__(spec, **settings)
        if reference is None:
            return measured
        level = measured.latency_s / self.truth[measured.arch_hash]
        reading = {"arch_hash": model_hash(reference), "status": "ok", "latency_ci_rel": 0.01, "repeats": 10,
                   "latency_s": (1e-9 * count_parameters(reference) + 1e-4) * level}
        return dataclasses.replace(measured, conditions={**measured.conditions, "reference": reading})


def test_in_process_corrects_each_row_by_its_own_reading(tmp_path):
    """A board slowing by 2 % per call: each row's own reading puts it at the run's median level, with no
    reference measured on its own; ``protran correct`` recomputes the same factors from the store."""
    board = InProcessBoard(slowdown=0.02)
    with RunStore(tmp_path / "runs.sqlite") as store, warnings.catch_warnings():
        warnings.simplefilter("ignore", ReferenceDriftWarning)
        summary = Profiler(_config(reference_every=4, drift_threshold=0.0, drift_correction="in-process"), store,
                           tmp_path / "out", measure_fn=board).run()
        rows = store.measurements(run_id=summary.run_id, status=None)
        references = store.references(summary.run_id)
    assert len(board.calls) == len(rows) == 9  # no reference in a call of its own
    assert len(references) == 9 and all(ref.conditions["in_process"] for ref in references)
    assert [ref.conditions["row_arch_hash"] for ref in references] == [row.arch_hash for row in rows]
    level = np.array([row.latency_s / board.truth[row.arch_hash] for row in rows])
    raw = np.array([row.latency_raw_s / board.truth[row.arch_hash] for row in rows])
    assert raw == pytest.approx(1 + 0.02 * np.arange(9))
    assert level == pytest.approx([1.08] * 9)  # the median of the nine readings' levels, 1.00 ... 1.16
    assert summary.reference_drift == pytest.approx(0.08 / 1.08)
    from protran.cli import main
    factors = [row.conditions["drift_factor"] for row in rows]
    assert main(["correct", "--store", str(tmp_path / "runs.sqlite"), "--drift-correction", "in-process",
                 "--drift-threshold", "0", "--json"]) == 0
    with RunStore(tmp_path / "runs.sqlite") as store:
        assert [row.conditions["drift_factor"] for row in store.measurements(run_id=1)] == pytest.approx(factors)


def test_in_process_asks_the_measure_call_for_the_reference_and_leaves_rows_without_a_reading(tmp_path):
    seen = []

    def board(spec, **settings):
        seen.append(settings.get("reference"))
        return FakeBoard()(spec, **settings)  # reads no reference: nothing to correct by

    with RunStore(tmp_path / "runs.sqlite") as store:
        summary = Profiler(_config(drift_correction="in-process"), store, tmp_path / "out", measure_fn=board).run()
        rows = store.measurements(run_id=summary.run_id)
        assert store.references(summary.run_id) == []
    reference = reference_spec(ProfileConfig(device="x").design_space())
    assert len(seen) == 9 and all(model_hash(spec) == model_hash(reference) for spec in seen)
    assert all(row.latency_raw_s is None and "drift_factor" not in row.conditions for row in rows)
