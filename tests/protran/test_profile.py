"""The profiling loop: seeds, acquisition, stopping, resume after an interruption, saved surrogates."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from flexibert import count_parameters, model_hash
from protran._profile import (
    ProfileConfig,
    Profiler,
    available_measures,
    choose_next,
    cross_validated_mse,
    normalised_targets,
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
    settings = dict(device="fake-board", seed_samples=6, max_samples=9, pool_size=16,
                    target_mse=1e-9, patience=2)
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
    config = ProfileConfig(device="fake-board")
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
    config = ProfileConfig(device="fake-board")
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
