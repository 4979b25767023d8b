"""The measurement protocol: the stopping rule, the worker process and its failure modes, power."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from flexibert import ArchSpec, model_hash
from protran._measure_worker import ParentWatch
from protran._protocol import (
    MeasurementResult,
    _classify,
    has_converged,
    interquartile_range,
    measure_architecture,
    median_ci_rank,
    median_confidence_interval,
    relative_ci_half_width,
    time_repeats,
)
from protran._store import RunStore

TINY = {"l": 2, "o": [["sa_sdp_64", "sa_sdp_64"], ["l_dft_64", "c_5_64"]], "h": [128, 128], "f": [[256], [256]]}
HAS_RUNTIMES = importlib.util.find_spec("protran._runtimes") is not None
needs_runtimes = pytest.mark.skipif(not HAS_RUNTIMES, reason="protran._runtimes is not available")


# -- the stopping rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [6, 7, 10, 11, 30, 99, 100, 1000, 4321])
def test_median_ci_rank_is_the_widest_rank_with_enough_coverage(n):
    rank = median_ci_rank(n, 0.95)
    assert rank >= 1
    assert 2 * binom.cdf(rank - 1, n, 0.5) <= 0.05          # coverage >= 95%
    assert 2 * binom.cdf(rank, n, 0.5) > 0.05               # one rank further in would not cover


def test_too_few_samples_give_no_interval():
    assert median_ci_rank(5, 0.95) == 0
    low, median, high = median_confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (low, median, high) == (-math.inf, 3.0, math.inf)
    assert relative_ci_half_width([1.0] * 5) == math.inf


def test_median_interval_from_order_statistics():
    samples = [7.0, 2.0, 9.0, 1.0, 5.0, 10.0, 3.0, 6.0, 8.0, 4.0]
    # n = 10: P(B <= 1) = 11/1024 <= 2.5% < P(B <= 2) = 56/1024, so the interval is [x_(2), x_(9)].
    assert median_confidence_interval(samples) == (2.0, 5.5, 9.0)
    assert relative_ci_half_width(samples) == pytest.approx((9.0 - 2.0) / 2 / 5.5)
    assert interquartile_range(samples) == pytest.approx(np.percentile(samples, 75) - np.percentile(samples, 25))


def test_stopping_rule_on_synthetic_timings():
    rng = np.random.default_rng(0)
    steady = 0.010 * np.exp(rng.normal(0.0, 0.01, size=200))
    noisy = 0.010 * np.exp(rng.normal(0.0, 0.5, size=20))
    assert has_converged(steady, target_rel_ci=0.02, min_repeats=10)
    assert not has_converged(noisy, target_rel_ci=0.02, min_repeats=10)
    assert not has_converged(steady[:9], target_rel_ci=0.5, min_repeats=10)  # min_repeats first
    assert has_converged([0.01] * 10, target_rel_ci=1e-9, min_repeats=10)
    # Outliers (a shared machine) barely move the median's interval.
    spiky = np.concatenate([steady, [0.8] * 10])
    assert has_converged(spiky, target_rel_ci=0.02, min_repeats=10)


class FakeClock:
    """perf_counter_ns and monotonic for time_repeats, advanced by the fake inference."""

    def __init__(self, durations_s):
        self.now_s = 100.0
        self.durations_s = iter(durations_s)

    def run(self):
        self.now_s += next(self.durations_s)

    def ns(self):
        return int(round(self.now_s * 1e9))

    def monotonic(self):
        return self.now_s


def _time(durations, **options):
    clock = FakeClock(durations)
    return time_repeats(clock.run, clock_ns=clock.ns, monotonic=clock.monotonic, **options)


def test_time_repeats_stops_at_min_repeats_when_steady():
    timing = _time([0.5] * 1000, min_repeats=10, target_rel_ci=0.02, time_cap_s=100.0)
    assert timing.converged and not timing.time_capped
    assert len(timing.batch_latencies_s) == 10
    assert timing.batch_latencies_s[0] == pytest.approx(0.5)
    assert timing.window_end_s - timing.window_start_s == pytest.approx(5.0)


def test_time_repeats_hits_the_time_cap_when_noisy():
    timing = _time([0.1, 1.0] * 1000, min_repeats=10, target_rel_ci=0.02, time_cap_s=20.0)
    assert timing.time_capped and not timing.converged
    assert 20.0 <= timing.window_end_s - timing.window_start_s < 21.1


def test_time_repeats_calls_back_between_repeats_outside_the_timing():
    clock = FakeClock([0.5] * 100)
    calls = []

    def between():  # a slow check (1 s) must not count as inference time
        calls.append(len(calls))
        clock.now_s += 1.0

    timing = time_repeats(clock.run, clock_ns=clock.ns, monotonic=clock.monotonic, min_repeats=10,
                          target_rel_ci=0.02, time_cap_s=100.0, between_repeats=between)
    assert len(calls) == len(timing.batch_latencies_s) == 10
    assert timing.batch_latencies_s == pytest.approx((0.5,) * 10)


def test_time_repeats_respects_max_repeats_and_min_window():
    timing = _time([0.1, 1.0] * 1000, min_repeats=10, max_repeats=30, target_rel_ci=0.02, time_cap_s=1e6)
    assert len(timing.batch_latencies_s) == 30 and not timing.converged and not timing.time_capped
    timing = _time([0.01] * 1000, min_repeats=10, target_rel_ci=0.02, time_cap_s=100.0, min_window_s=2.0)
    assert timing.converged and len(timing.batch_latencies_s) == 200


# -- the worker process: failure modes (stand-in workers, no model needed) --------------------------------------


def script(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


FAKE_TIMING_WORKER = script(
    """
    import json, sys, time
    request = json.loads(sys.stdin.read())
    start = time.monotonic()
    time.sleep(0.3)
    end = time.monotonic()
    print("a library chatting on stdout")
    print(json.dumps({"status": "ok", "batch_latencies_s": [0.03] * 10, "window_start_s": start,
                      "window_end_s": end, "time_capped": False, "confidence": 0.95,
                      "versions": {"fakeruntime": "1.0"}}))
    """
)


def measure(worker_command, **options):
    settings = dict(runtime="onnxruntime", batch_size=2, seq_len=16, timeout_s=30.0, worker_command=worker_command)
    settings.update(options)
    return measure_architecture(TINY, **settings)


def test_worker_reply_becomes_a_result():
    result = measure(FAKE_TIMING_WORKER)
    assert result.status == "ok" and result.error is None
    assert result.latency_s == pytest.approx(0.03 / 2)            # median batch latency / batch size
    assert result.repeats == 10 and result.latency_ci_rel == 0.0 and result.latency_iqr_s == 0.0
    assert result.arch_hash == model_hash(ArchSpec.from_model_dict(TINY))
    assert result.versions["fakeruntime"] == "1.0" and result.versions["python"]
    assert result.host["cpu_model"] and result.num_threads == 1
    assert result.energy_j is None and result.peak_power_w is None and result.idle_power_w is None
    assert result.meter is None


def test_crashing_worker_is_failed_with_stderr_tail():
    result = measure(script("import sys; sys.stderr.write('segfault-ish trouble'); sys.exit(3)"))
    assert result.status == "failed" and result.latency_s is None
    assert "code 3" in result.error and "segfault-ish trouble" in result.error


def test_garbled_reply_is_failed():
    result = measure(script("print('not json')"))
    assert result.status == "failed" and "code 0" in result.error


def test_hanging_worker_is_killed_at_the_timeout():
    started = time.monotonic()
    result = measure(script("import time; time.sleep(60)"), timeout_s=1.0)
    assert result.status == "timeout" and "1 s timeout" in result.error
    assert time.monotonic() - started < 30


def test_memory_errors_and_sigkill_are_oom():
    result = measure(script("raise MemoryError('cannot allocate 80 GB')"))
    assert result.status == "oom" and "MemoryError" in result.error
    result = measure(script("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert result.status == "oom" and "SIGKILL" in result.error


# Messages as the libraries print them when memory runs out (the sizes and paths vary).
OUT_OF_MEMORY_MESSAGES = [
    "RuntimeError: [enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 123 bytes. Error code 12 (Cannot allocate memory)",
    "RuntimeException: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
    "MatMul node. Status Message: bfc_arena.cc:376 onnxruntime::BFCArena::AllocateRawInternal Failed to allocate "
    "memory for requested buffer of size 1073741824",
    "RuntimeException: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad allocation",
    "RuntimeError: Exception from src/inference/src/cpp/core.cpp:109:\nstd::bad_alloc",
    "terminate called after throwing an instance of 'std::bad_alloc'\n  what():  std::bad_alloc",
    "OSError: [Errno 12] Cannot allocate memory",
    "RuntimeError: mmap of 4294967296 bytes failed: ENOMEM",
    "_ArrayMemoryError: Unable to allocate 74.5 GiB for an array with shape (10000000000,) and data type float64",
    "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
]
OTHER_FAILURES = [
    "RuntimeError: The size of tensor a (16) must match the size of tensor b (32) at non-singleton dimension 1",
    "ValueError: memory_format must be torch.contiguous_format",
    "OSError: [Errno 28] No space left on device",
    "worker exited with code 3",
]


@pytest.mark.parametrize("message", OUT_OF_MEMORY_MESSAGES)
def test_allocator_messages_are_oom_in_any_case(message):
    assert _classify(1, {"error": message, "error_type": "RuntimeError"}, "").status == "oom"
    assert _classify(1, None, message.upper()).status == "oom"        # in the stderr tail only
    assert _classify(-signal.SIGABRT, None, message).status == "oom"   # std::bad_alloc uncaught: abort


@pytest.mark.parametrize("message", OTHER_FAILURES)
def test_other_failures_are_not_oom(message):
    assert _classify(1, {"error": message, "error_type": "RuntimeError"}, "").status == "failed"
    assert _classify(1, None, message).status == "failed"


def test_memory_error_subclasses_and_foreign_sigkill_are_oom():
    reply = {"error": "_ArrayMemoryError: no room", "error_type": "_ArrayMemoryError", "memory_error": True}
    assert _classify(1, reply, "").status == "oom"
    killed = _classify(-signal.SIGKILL, None, "")
    assert killed.status == "oom" and "out-of-memory killer" in killed.error
    assert _classify(-signal.SIGSEGV, None, "").status == "failed"


def test_allocator_message_on_stderr_is_oom():
    message = OUT_OF_MEMORY_MESSAGES[0]
    result = measure(script(f"import sys; sys.stderr.write({message!r}); sys.exit(1)"))
    assert result.status == "oom" and "DefaultCPUAllocator" in result.error


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux")
def test_worker_under_a_memory_limit_is_oom():
    # The real worker's main() with the measurement replaced by an allocation beyond the address-space limit.
    limited = script(
        """
        import re, resource, sys
        import numpy as np
        import protran._measure_worker as worker

        def measure(request, watch=None):
            in_use = int(re.search(r"VmSize:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (in_use + 256 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
            return {"bytes": np.ones(2**31).nbytes}                      # 16 GiB

        worker.measure = measure
        sys.exit(worker.main())
        """
    )
    result = measure(limited)
    assert result.status == "oom" and "Unable to allocate" in result.error


def test_worker_gets_the_thread_count():
    echo = script(
        """
        import json, os, sys, time
        json.loads(sys.stdin.read())
        now = time.monotonic()
        print(json.dumps({"status": "ok", "batch_latencies_s": [0.01] * 10, "window_start_s": now,
                          "window_end_s": now + 0.1, "versions": {"omp": os.environ["OMP_NUM_THREADS"]}}))
        """
    )
    assert measure(echo, num_threads=3).versions["omp"] == "3"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"min_repeats": 3, "max_repeats": 5}, "too small"),
        ({"min_repeats": 50, "max_repeats": 20}, "min_repeats"),
        ({"target_rel_ci": 0.0}, "target_rel_ci"),
        ({"timeout_s": -1}, "timeout_s"),
    ],
)
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        measure(FAKE_TIMING_WORKER, **options)


# -- the worker dies with its parent ------------------------------------------------------------------------------

on_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the death signal is Linux's")

# A parent process (a stand-in profiler) that measures with the worker command given as JSON in argv[1].
PARENT = script(
    f"""
    import json, sys
    from protran._protocol import measure_architecture
    measure_architecture({TINY!r}, "onnxruntime", seq_len=16, vocab_size=100, timeout_s=60.0, min_window_s=30.0,
                         time_cap_s=30.0, worker_command=json.loads(sys.argv[1]))
    """
)

# A slow worker that writes its pid to argv[1]; with argv[2] == "poll" it checks for its parent between
# "repeats", otherwise it sleeps and only the death signal can end it.
SLOW_WORKER = script(
    """
    import os, sys, time
    from protran._measure_worker import watch_parent
    watch = watch_parent()
    with open(sys.argv[1] + ".tmp", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    for _ in range(3000):
        time.sleep(0.02)
        if sys.argv[2] == "poll":
            watch.exit_if_parent_gone()
    """
)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper that never comes, as in a container, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: trust kill(0)
        return True
    return state not in ("Z", "X")


def _wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _kill_parent_and_check_worker(worker_command, find_worker, settle_s: float = 0.3) -> None:
    """Start a parent that runs ``worker_command``, SIGKILL the parent ``settle_s`` after the worker
    has started, and check that the worker is gone within two seconds."""
    parent = subprocess.Popen([*PARENT, json.dumps(worker_command)])
    worker_pid = None
    try:
        assert _wait_until(lambda: find_worker(parent.pid) is not None, 20.0), "the worker never started"
        worker_pid = find_worker(parent.pid)
        time.sleep(settle_s)
        parent.kill()
        parent.wait()
        assert _wait_until(lambda: not _alive(worker_pid), 2.0), "the worker outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if worker_pid is not None and _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def _pid_in(path: Path):
    return lambda parent_pid: int(path.read_text()) if path.exists() else None


@on_linux
def test_death_signal_kills_a_worker_that_never_checks(tmp_path):
    pid_file = tmp_path / "worker.pid"
    _kill_parent_and_check_worker([*SLOW_WORKER, str(pid_file), "sleep"], _pid_in(pid_file))


def test_worker_behind_a_forking_wrapper_sees_the_pipe_close(tmp_path):
    # sh runs the worker as its child and waits (the command is not its last), so the worker's own parent
    # is sh, which outlives the profiler: no death signal, only the pipe tells.
    pid_file = tmp_path / "worker.pid"
    wrapped = ["sh", "-c", '"$@"; exit $?', "sh", *SLOW_WORKER, str(pid_file), "poll"]
    _kill_parent_and_check_worker(wrapped, _pid_in(pid_file))


def test_a_worker_whose_parent_is_already_gone_exits(tmp_path):
    read_end, write_end = os.pipe()
    os.close(write_end)
    assert ParentWatch(os.getppid(), read_end).parent_gone()          # the pipe at end-of-file
    assert ParentWatch(os.getppid() + 1, None).direct_child is False   # a wrapper between: no pid test
    os.close(read_end)
    read_end, write_end = os.pipe()
    assert not ParentWatch(os.getppid(), read_end).parent_gone()      # open and silent: alive
    assert not ParentWatch(None, None).parent_gone()                  # started by hand: never gone
    os.close(read_end)
    os.close(write_end)


def _child_worker(parent_pid: int) -> int | None:
    """The pid of a ``protran._measure_worker`` process whose parent is ``parent_pid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent_pid and b"protran._measure_worker" in command:
            return int(entry.name)
    return None


@needs_runtimes
@on_linux
@pytest.mark.parametrize("settle_s", [0.0, 3.0])
def test_the_real_worker_dies_with_the_profiler(settle_s):
    # Killed at once, the worker is still importing and finds its parent gone when it arms the signal;
    # after 3 s it is building, warming up or timing (its window would last 30 s).
    from protran._protocol import default_worker_command

    _kill_parent_and_check_worker(default_worker_command(), _child_worker, settle_s)


# -- power: a fake meter with a known power ---------------------------------------------------------------------


class ConstantMeter:
    """A stand-in PowerMeter: a constant power, sampled every millisecond between start() and stop()."""

    name = "constant"
    interval_s = 0.001

    def __init__(self, power_w: float) -> None:
        self.power_w = power_w
        self.started_s = None

    def start(self):
        self.started_s = time.monotonic()

    def stop(self):
        from protran.meters._base import PowerTrace

        timestamps = np.arange(self.started_s, time.monotonic() + self.interval_s, self.interval_s)
        return PowerTrace(timestamps, np.full(timestamps.shape, self.power_w), meter=self.name)


class BrokenMeter(ConstantMeter):
    def stop(self):
        raise RuntimeError("i2c bus went away")


@pytest.mark.skipif(importlib.util.find_spec("protran.meters._base") is None, reason="protran.meters not available")
def test_energy_is_the_power_integral_over_the_timed_window_per_sequence():
    meter = ConstantMeter(4.0)
    result = measure(FAKE_TIMING_WORKER, meter=meter, idle_s=0.05, min_window_s=0.0)
    assert result.status == "ok" and result.meter == "constant"
    window_s = result.window_end_s - result.window_start_s
    assert window_s >= 0.3
    assert result.energy_j == pytest.approx(4.0 * window_s / (10 * 2))    # P * t / (repeats * batch)
    assert result.peak_power_w == pytest.approx(4.0)
    assert result.mean_power_w == pytest.approx(4.0)
    assert result.idle_power_w == pytest.approx(4.0)


def test_meter_failure_keeps_latency_and_reports_power_missing():
    result = measure(FAKE_TIMING_WORKER, meter=BrokenMeter(4.0), idle_s=0.0, min_window_s=0.0)
    assert result.status == "ok" and result.latency_s == pytest.approx(0.015)
    assert result.energy_j is None and "i2c bus went away" in result.error


def test_failed_measurement_has_no_energy():
    result = measure(script("import sys; sys.exit(1)"), meter=ConstantMeter(4.0), idle_s=0.01, min_window_s=0.0)
    assert result.status == "failed" and result.energy_j is None and result.peak_power_w is None


# -- real measurements ----------------------------------------------------------------------------------------------


@needs_runtimes
@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_real_measurement_of_a_tiny_model(runtime, tmp_path):
    result = measure_architecture(
        TINY, runtime, batch_size=2, seq_len=16, num_threads=1, vocab_size=100, warmup=2, min_repeats=10,
        target_rel_ci=0.05, time_cap_s=5.0, timeout_s=120.0,
    )
    assert result.status in ("ok", "unstable"), result.error
    assert result.repeats >= 10 and result.latency_s > 0
    assert result.latency_s == pytest.approx(np.median(result.batch_latencies_s) / 2)
    assert result.energy_j is None
    assert result.versions["python"] and result.versions.get(runtime)
    with RunStore(tmp_path / "runs.sqlite") as store:
        run_id = store.create_run("this-host", runtime, batch_size=2, seq_len=16, num_threads=1)
        store.add_measurement(run_id, result)
        (stored,) = store.measurements(run_id, status=None)
        assert stored.latency_s == result.latency_s and stored.status == result.status


@needs_runtimes
def test_unknown_runtime_fails_in_the_worker():
    result = measure_architecture(TINY, "tensorflow-lite", seq_len=16, vocab_size=100, timeout_s=120.0)
    assert result.status == "failed" and "tensorflow-lite" in result.error


def test_result_rejects_unknown_status():
    with pytest.raises(ValueError, match="status"):
        MeasurementResult("h", {}, "torch", 1, 16, 1, "done")


def test_malformed_reply_is_failed():
    result = measure(script("print('{\"status\": \"ok\", \"batch_latencies_s\": []}')"))
    assert result.status == "failed" and "malformed" in result.error and "no batch latencies" in result.error


def test_a_worker_killed_by_a_signal_says_which():
    result = measure(script("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))
    assert result.status == "failed" and "SIGSEGV" in result.error


# -- measurement conditions: pinning, frequency scaling, load ---------------------------------------------------

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no sched_setaffinity on this OS")


def _last_cpu() -> int:
    return max(os.sched_getaffinity(0))


@needs_affinity
def test_pinning_applies_to_the_worker_and_the_threads_it_starts_later():
    cpu = _last_cpu()
    code = f"""
        import json, os, threading
        from protran._measure_worker import pin_to_cpus
        in_effect = pin_to_cpus([{cpu}])
        seen = []
        thread = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
        thread.start(); thread.join()
        print(json.dumps({{"in_effect": in_effect, "process": sorted(os.sched_getaffinity(0)), "thread": seen[0]}}))
        """
    out = subprocess.run(script(code), capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(out) == {"in_effect": [cpu], "process": [cpu], "thread": [cpu]}


PINNING_WORKER = script(
    """
    import json, sys, time
    from protran._measure_worker import pin_to_cpus
    from protran._protocol import ConditionsProbe
    request = json.loads(sys.stdin.read())
    affinity = pin_to_cpus(request["cpus"])
    probe = ConditionsProbe(affinity, pinned=request["cpus"] is not None)
    probe.start()
    start = time.monotonic()
    time.sleep(0.3)
    end = time.monotonic()
    print(json.dumps({"status": "ok", "batch_latencies_s": [0.03] * 10, "window_start_s": start,
                      "window_end_s": end, "conditions": probe.stop()}))
    """
)


@needs_affinity
def test_pinned_conditions_reach_the_result_and_survive_the_store(tmp_path):
    cpu = _last_cpu()
    result = measure(PINNING_WORKER, cpus=[cpu])
    assert result.status == "ok", result.error
    conditions = result.conditions
    assert conditions["cpus"] == [cpu] and conditions["cpus_requested"] == [cpu] and conditions["pinned"] is True
    assert set(conditions["governor"]) == {"before", "after"} and str(cpu) in conditions["freq_khz"]["before"]
    assert conditions["load"]["window_s"] > 0.2 and conditions["load"]["threshold_cpus"] == 0.25
    assert conditions["under_load"] in (True, False, None)
    with RunStore(tmp_path / "runs.sqlite") as store:
        run_id = store.create_run("this-host", "onnxruntime", batch_size=2, seq_len=16, num_threads=1)
        store.add_measurement(run_id, result)
        (stored,) = store.measurements(run_id, status=None)
    assert stored.conditions == json.loads(json.dumps(conditions))


def test_unpinned_fake_worker_has_empty_conditions():
    assert measure(FAKE_TIMING_WORKER).conditions == {}


@needs_affinity
@pytest.mark.parametrize(
    "cpus, threads, message",
    [([99999], 1, "CPU 99999 is not available"), ([], 1, "at least one CPU"), ([-1], 1, "non-negative"),
     ([0], 2, "2 threads need at least as many pinned CPUs")],
)
def test_bad_cpus_are_refused_before_the_worker_starts(cpus, threads, message):
    if cpus == [0] and 0 not in os.sched_getaffinity(0):
        pytest.skip("CPU 0 is not available here")
    with pytest.raises(ValueError, match=message):
        measure(script("raise SystemExit('must not run')"), cpus=cpus, num_threads=threads)


def test_pinning_unavailable_on_this_os_says_so(monkeypatch):
    from protran import _protocol

    monkeypatch.delattr(_protocol.os, "sched_setaffinity", raising=False)
    with pytest.raises(ValueError, match="not available on this OS"):
        _protocol.check_cpus([0])
    assert _protocol.check_cpus(None) is None


def _cpufreq_tree(root: Path, cpus: dict[int, dict[str, str]]) -> None:
    from tests.protran.meters.meter_sysfs_tree import write_tree

    write_tree(root, {f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}": f"{value}\n"
                      for cpu, files in cpus.items() for name, value in files.items()})


def test_governor_and_frequencies_from_a_fake_sysfs_tree(tmp_path):
    from protran._protocol import frequency_scaling, read_cpufreq

    _cpufreq_tree(tmp_path, {
        0: {"scaling_governor": "powersave", "scaling_cur_freq": "1200000", "scaling_min_freq": "800000",
            "scaling_max_freq": "3600000"},
        1: {"scaling_governor": "performance"},      # the frequencies are not exposed
    })
    readings = read_cpufreq([0, 1, 2], tmp_path / "sys")
    assert readings == {
        "0": {"governor": "powersave", "cur": 1200000, "min": 800000, "max": 3600000},
        "1": {"governor": "performance", "cur": None, "min": None, "max": None},
        "2": {"governor": None, "cur": None, "min": None, "max": None},   # no cpufreq: not available
    }
    assert frequency_scaling(readings) is True
    assert frequency_scaling({"1": readings["1"], "2": readings["2"]}) is False
    assert frequency_scaling({"2": readings["2"]}) is None
    fixed = {"0": {"governor": "userspace", "cur": 2, "min": 2, "max": 2}}
    assert frequency_scaling(fixed) is True                   # a governor other than performance
    assert frequency_scaling({"0": {"governor": None, "cur": 2, "min": 2, "max": 2}}) is False


def _stat(*cpus: tuple[int, int, int, int]) -> str:
    """/proc/stat text from (user, system, idle, iowait) ticks per CPU; the 'cpu' line is their sum."""
    line = "{} {} 0 {} {} {} 0 0 0 0 0"
    total = [sum(values) for values in zip(*cpus)]
    rows = [line.format("cpu", total[0], total[1], total[2], total[3])]
    rows += [line.format(f"cpu{i}", *values) for i, values in enumerate(cpus)]
    return "\n".join(rows + ["intr 1 2 3", "ctxt 42", "btime 1"]) + "\n"


def test_cpu_load_from_recorded_proc_stat_pairs():
    from protran._protocol import cpu_load, parse_proc_stat

    before = parse_proc_stat(_stat((100, 0, 1000, 0), (50, 50, 900, 0)))
    # over 1 s (100 ticks per CPU): cpu0 fully busy, cpu1 60 ticks busy (40 user, 20 system) and 40 idle
    after = parse_proc_stat(_stat((200, 0, 1000, 0), (90, 70, 930, 10)))
    assert before["all"] == (200, 2100) and before["1"] == (100, 1000)
    load = cpu_load(before, after, [0], worker_cpu_s=0.9, elapsed_s=1.0)
    assert load == {"worker_cpus": 0.9, "busy_cpus_all": 1.6, "busy_cpus_pinned": 1.0,
                    "other_cpus_all": pytest.approx(0.7), "other_cpus_pinned": pytest.approx(0.1)}
    unreadable = cpu_load(None, after, [0], worker_cpu_s=0.9, elapsed_s=1.0)
    assert unreadable["busy_cpus_all"] is None and unreadable["other_cpus_all"] is None


@pytest.mark.parametrize("cpu1_busy_ticks, under_load", [(20, False), (25, False), (30, True), (90, True)])
def test_under_load_flag_threshold(tmp_path, cpu1_busy_ticks, under_load):
    from protran._protocol import ConditionsProbe

    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text(_stat((0, 0, 0, 0), (0, 0, 0, 0)))
    clock = iter([10.0, 11.0])       # a 1 s window
    cpu_time = iter([5.0, 6.0])      # the worker kept one CPU busy
    probe = ConditionsProbe([0], pinned=True, sysfs_root=tmp_path / "sys", proc_root=proc,
                            cpu_time=lambda: next(cpu_time), monotonic=lambda: next(clock))
    probe.start()
    (proc / "stat").write_text(_stat((100, 0, 0, 0), (cpu1_busy_ticks, 0, 100 - cpu1_busy_ticks, 0)))
    conditions = probe.stop()
    assert conditions["load"]["other_cpus_all"] == pytest.approx(cpu1_busy_ticks / 100)
    assert conditions["under_load"] is under_load
    assert conditions["governor"] == {"before": {"0": None}, "after": {"0": None}}   # no sysfs: not available
    assert conditions["frequency_scaling"] is None and conditions["cpus"] == [0]


def test_no_proc_stat_leaves_the_load_flag_unknown(tmp_path):
    from protran._protocol import ConditionsProbe

    probe = ConditionsProbe([0], pinned=False, sysfs_root=tmp_path, proc_root=tmp_path / "absent")
    probe.start()
    conditions = probe.stop()
    assert conditions["under_load"] is None and conditions["load"]["busy_cpus_all"] is None


def test_frequency_scaling_is_warned_once_per_process(monkeypatch):
    import warnings

    from protran import _protocol

    monkeypatch.setattr(_protocol, "_frequency_warning_given", False)
    scaling = script(
        """
        import json, sys, time
        json.loads(sys.stdin.read())
        now = time.monotonic()
        conditions = {"cpus": [0], "governor": {"before": {"0": "powersave"}, "after": {"0": "powersave"}},
                      "frequency_scaling": True, "under_load": False}
        print(json.dumps({"status": "ok", "batch_latencies_s": [0.01] * 10, "window_start_s": now,
                          "window_end_s": now + 0.1, "conditions": conditions}))
        """
    )
    with pytest.warns(_protocol.FrequencyScalingWarning, match="governor powersave"):
        result = measure(scaling)
    assert result.conditions["frequency_scaling"] is True and result.status == "ok"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        measure(scaling)                                          # the second time: silent


@pytest.mark.parametrize("command", ["profile", "measure"])
def test_cli_refuses_an_unknown_cpu_in_one_line(tmp_path, capsys, command):
    from protran.cli import main

    model = tmp_path / "tiny.json"
    model.write_text(json.dumps(TINY))
    out = tmp_path / "out"
    argv = [command, *([str(model)] if command == "measure" else []), "--device", "d", "--meter", "none",
            "--cpus", "99999", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "99999" in err and "not available" in err
    assert not out.exists()


def test_cli_parses_cpu_lists():
    from protran.cli import build_parser

    args = build_parser().parse_args(["profile", "--device", "d", "--cpus", "0,2-3"])
    assert args.cpus == (0, 2, 3)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["profile", "--device", "d", "--cpus", "a"])


def test_a_version_4_store_gains_empty_conditions(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    result = measure(FAKE_TIMING_WORKER)
    with RunStore(path) as store:
        run_id = store.create_run("this-host", "onnxruntime", batch_size=2, seq_len=16, num_threads=1)
        store.add_measurement(run_id, result)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE measurements DROP COLUMN conditions")
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.close()
    with RunStore(path) as store:
        (stored,) = store.measurements(run_id, status=None)
        assert store.schema_version == 6 and stored.conditions == {}


# -- several processes per measurement ----------------------------------------------------------------------


def counting_worker(tmp_path, latencies_s):
    """A stand-in worker whose n-th process (counted in a file) times ``latencies_s[n]`` per batch, or
    fails where that entry is None. An entry ``(row, reference)`` also times the reference, when the
    request names one and ``reference`` is not None (None: a worker that does not time it)."""
    counter = tmp_path / "processes"
    counter.write_text("0")
    return script(
        f"""
        import json, pathlib, sys, time
        request = json.loads(sys.stdin.read())
        counter = pathlib.Path({str(counter)!r})
        n = int(counter.read_text())
        counter.write_text(str(n + 1))
        latency = {list(latencies_s)!r}[n]
        if latency is None:
            sys.exit("process " + str(n) + " crashed")
        latency, reference = latency if isinstance(latency, (list, tuple)) else (latency, None)
        start = time.monotonic()
        reply = {{"status": "ok", "batch_latencies_s": [latency] * 10, "window_start_s": start,
                  "window_end_s": start + 10 * latency, "time_capped": False, "confidence": 0.95}}
        if request.get("reference_model_dict") is not None and reference is not None:
            reply["reference"] = {{"batch_latencies_s": [reference] * 12, "converged": True,
                                  "window_start_s": start, "window_end_s": start + 12 * reference}}
        print(json.dumps(reply))
        """
    ), counter


def test_two_processes_that_agree_give_their_median(tmp_path):
    worker, counter = counting_worker(tmp_path, [0.030, 0.0306, 0.5])
    result = measure(worker, processes=2)
    assert counter.read_text() == "2"  # within twice the 2 % target: no third process
    assert result.status == "ok" and result.repeats == 20
    assert result.latency_s == pytest.approx((0.030 + 0.0306) / 2 / 2)
    # the row's interval is half the processes' range, wider than each one's (0 here)
    assert result.latency_ci_rel == pytest.approx(0.0006 / 0.0303 / 2)
    assert [p["latency_s"] for p in result.conditions["processes"]] == pytest.approx([0.015, 0.0153])


def test_two_processes_that_disagree_call_a_third(tmp_path):
    worker, counter = counting_worker(tmp_path, [0.030, 0.036, 0.031, 0.5])
    result = measure(worker, processes=2)
    assert counter.read_text() == "3"
    assert result.latency_s == pytest.approx(0.031 / 2)  # the median: the stray process does not move it
    assert len(result.conditions["processes"]) == 3 and result.repeats == 30
    assert result.latency_ci_rel == pytest.approx(0.006 / 0.031 / 2)


def test_a_failed_process_fails_the_measurement_and_stops(tmp_path):
    worker, counter = counting_worker(tmp_path, [0.030, None, 0.030])
    result = measure(worker, processes=3)
    assert counter.read_text() == "2"
    assert result.status == "failed" and result.latency_s is None and "crashed" in result.error


def test_one_process_is_the_default_and_processes_are_checked(tmp_path):
    worker, counter = counting_worker(tmp_path, [0.030, 0.036])
    result = measure(worker)
    assert counter.read_text() == "1" and "processes" not in result.conditions
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="processes"):
            measure(worker, processes=bad)


def test_combined_power_is_the_median_energy_and_the_largest_peak():
    from protran._protocol import combine_processes

    def one(latency_s, energy_j, peak_w, status="ok"):
        return MeasurementResult(arch_hash="h", model_dict=TINY, runtime="onnxruntime", batch_size=1, seq_len=16,
                                 num_threads=1, status=status, latency_s=latency_s, latency_ci_rel=0.01, repeats=10,
                                 energy_j=energy_j, peak_power_w=peak_w, mean_power_w=energy_j / latency_s,
                                 idle_power_w=2.0, meter="fake", conditions={"cpus": [1]})

    combined = combine_processes([one(0.010, 0.05, 7.0), one(0.012, 0.07, 9.0), one(0.011, 0.06, 8.0, "unstable")])
    assert combined.latency_s == pytest.approx(0.011) and combined.energy_j == pytest.approx(0.06)
    assert combined.peak_power_w == 9.0 and combined.idle_power_w == 2.0 and combined.status == "unstable"
    assert combined.conditions["cpus"] == [1] and len(combined.conditions["processes"]) == 3
    with pytest.raises(ValueError):
        combine_processes([])


# -- the reference read in the measuring process --------------------------------------------------------


REFERENCE = {"l": 2, "o": [["sa_sdp_64", "sa_sdp_64"], ["sa_sdp_64", "sa_sdp_64"]], "h": [128, 128],
             "f": [[512], [512]]}


def test_the_reference_read_in_the_process_lands_in_the_conditions(tmp_path):
    worker, counter = counting_worker(tmp_path, [(0.030, 0.090), (0.030, 0.090)])
    result = measure(worker, reference=REFERENCE)
    reading = result.conditions["reference"]
    assert counter.read_text() == "1" and result.latency_s == pytest.approx(0.015)  # the row as without it
    assert reading["status"] == "ok" and reading["latency_s"] == pytest.approx(0.045) and reading["repeats"] == 12
    assert reading["arch_hash"] == model_hash(ArchSpec.from_model_dict(REFERENCE))
    assert "reference" not in measure(worker).conditions  # none asked for, none read


def test_a_worker_that_times_no_reference_leaves_the_row_and_says_so(tmp_path):
    from protran._protocol import reference_latency

    worker, _ = counting_worker(tmp_path, [(0.030, None)])
    result = measure(worker, reference=REFERENCE)
    assert result.status == "ok" and result.latency_s == pytest.approx(0.015)
    assert result.conditions["reference"]["status"] == "failed" and reference_latency(result) is None


def test_processes_that_agree_after_their_own_reference_need_no_third(tmp_path):
    # the second process ran 20 % slower, row and reference alike: the host, not the row
    worker, counter = counting_worker(tmp_path, [(0.030, 0.100), (0.036, 0.120), (0.5, 0.5)])
    result = measure(worker, reference=REFERENCE, processes=2)
    assert counter.read_text() == "2"
    assert result.latency_s == pytest.approx(0.033 / 2)  # the raw latency: the processes' median
    # the reading puts the row at the processes' median ratio to their references, 0.3
    assert result.latency_s / result.conditions["reference"]["latency_s"] == pytest.approx(0.3)
    assert result.latency_ci_rel == pytest.approx(0.0)  # their ratios agree
    assert [p["reference_latency_s"] for p in result.conditions["processes"]] == pytest.approx([0.05, 0.06])


def test_processes_whose_ratios_disagree_call_more_up_to_twice_less_one(tmp_path):
    pairs = [(0.030, 0.100), (0.036, 0.100), (0.033, 0.100), (0.040, 0.100), (0.031, 0.100), (0.5, 0.5)]
    worker, counter = counting_worker(tmp_path, pairs)
    result = measure(worker, reference=REFERENCE, processes=3)
    assert counter.read_text() == "5"  # 3, then one more while they disagree, up to 2 * 3 - 1
    assert result.latency_s / result.conditions["reference"]["latency_s"] == pytest.approx(0.33)
    worker, counter = counting_worker(tmp_path, [(0.030, 0.100), (0.0303, 0.100), (0.0306, 0.1), (0.5, 0.5)])
    measure(worker, reference=REFERENCE, processes=3)
    assert counter.read_text() == "3"  # within twice the 2 % target: no more


@needs_runtimes
def test_the_real_worker_times_the_reference_after_the_row():
    result = measure_architecture(TINY, "onnxruntime", seq_len=16, vocab_size=100, timeout_s=120.0,
                                  reference=REFERENCE, min_repeats=10, max_repeats=50)
    reading = result.conditions["reference"]
    assert result.status in ("ok", "unstable") and reading["status"] in ("ok", "unstable")
    assert reading["latency_s"] > 0 and reading["repeats"] >= 10
