"""The measurement protocol: the stopping rule, the worker process and its failure modes, power."""

from __future__ import annotations

import importlib.util
import math
import sys
import textwrap
import time

import numpy as np
import pytest
from scipy.stats import binom

from flexibert import ArchSpec, model_hash
from protran._protocol import (
    MeasurementResult,
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
