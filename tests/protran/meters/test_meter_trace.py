"""PowerTrace arithmetic and the background sampler of PowerMeter."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from protran.meters import MeterError, PowerMeter, PowerTrace, Reading


def test_energy_of_constant_power_is_power_times_window():
    trace = PowerTrace(np.array([0.0, 1.0, 2.0, 3.0]), np.full(4, 5.0))
    assert trace.energy_j() == pytest.approx(15.0)
    assert trace.energy_j(0.5, 2.25) == pytest.approx(5.0 * 1.75)
    assert trace.mean_power_w(0.5, 2.25) == pytest.approx(5.0)


def test_energy_integrates_a_ramp_exactly_with_interpolated_edges():
    t = np.linspace(0.0, 4.0, 9)
    trace = PowerTrace(t, 2.0 * t)  # P = 2t, E(a, b) = b^2 - a^2
    assert trace.energy_j(0.3, 3.1) == pytest.approx(3.1**2 - 0.3**2)
    assert trace.energy_j(1.1, 1.2) == pytest.approx(1.2**2 - 1.1**2)  # between two samples


def test_energy_uses_the_counter_when_present():
    # Power samples say 1 W, the counter says 10 J/s: the counter wins.
    trace = PowerTrace(
        np.array([0.0, 1.0, 2.0]),
        np.ones(3),
        counter_timestamps_s=np.array([0.0, 1.0, 2.0]),
        counter_energy_j=np.array([100.0, 110.0, 120.0]),
    )
    assert trace.has_energy_counter
    assert trace.energy_j() == pytest.approx(20.0)
    assert trace.energy_j(0.5, 1.5) == pytest.approx(10.0)


def test_peak_is_the_largest_sample_inside_the_window():
    trace = PowerTrace(np.arange(6.0), np.array([1.0, 9.0, 2.0, 3.0, 8.0, 1.0]))
    assert trace.peak_power_w() == 9.0
    assert trace.peak_power_w(1.5, 3.5) == 3.0
    # No sample inside: the two bracketing samples are the only observations.
    assert trace.peak_power_w(3.2, 3.4) == 8.0


def test_window_outside_the_samples_is_refused():
    trace = PowerTrace(np.array([1.0, 2.0]), np.array([1.0, 1.0]), meter="fake")
    with pytest.raises(ValueError, match="not covered"):
        trace.energy_j(0.5, 1.5)
    with pytest.raises(ValueError, match="precedes"):
        trace.energy_j(1.8, 1.2)
    with pytest.raises(ValueError, match="no samples"):
        PowerTrace(np.array([]), np.array([])).energy_j()


def test_trace_validates_its_arrays():
    with pytest.raises(ValueError, match="timestamps"):
        PowerTrace(np.array([0.0, 1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="non-decreasing"):
        PowerTrace(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        PowerTrace(np.array([0.0, 1.0]), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="go together"):
        PowerTrace(np.array([0.0]), np.array([1.0]), counter_timestamps_s=np.array([0.0]))


def test_sample_rate_and_round_trip_through_dict():
    trace = PowerTrace(np.array([0.0, 0.5, 1.0]), np.array([1.0, 2.0, 3.0]), meter="x", overflow=[False, True, False])
    assert trace.sample_rate_hz == pytest.approx(2.0)
    assert trace.overflow_count == 1
    again = PowerTrace.from_dict(trace.to_dict())
    assert np.array_equal(again.power_w, trace.power_w) and again.overflow_count == 1 and again.meter == "x"


def test_from_readings_separates_power_samples_from_counter_readings():
    readings = [Reading(0.0, None, 5.0), Reading(0.5, 2.0), Reading(1.0, None, 7.0), Reading(1.5, 4.0)]
    trace = PowerTrace.from_readings(readings, meter="m")
    assert list(trace.timestamps_s) == [0.5, 1.5] and list(trace.power_w) == [2.0, 4.0]
    assert list(trace.counter_energy_j) == [5.0, 7.0]
    assert trace.start_s == 0.0 and trace.end_s == 1.5


class RampMeter(PowerMeter):
    """Power equal to the time since creation, at the reading's own timestamp; counts its reads."""

    name = "ramp"
    default_interval_s = 0.005

    def __init__(self, fail_after: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.origin_s = time.monotonic()
        self.reads = 0
        self.fail_after = fail_after

    def _read(self) -> Reading:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise MeterError("ramp: sensor unplugged")
        now = time.monotonic()
        return Reading(now, now - self.origin_s)

    def read_power_w(self) -> float:
        return self._read().power_w


def test_sampler_covers_the_window_between_start_and_stop():
    meter = RampMeter()
    meter.start()
    t0 = time.monotonic()
    time.sleep(0.05)
    t1 = time.monotonic()
    trace = meter.stop()
    assert trace.meter == "ramp" and len(trace) >= 2
    assert trace.timestamps_s[0] <= t0 and trace.timestamps_s[-1] >= t1
    assert np.all(np.diff(trace.timestamps_s) >= 0)
    # Power is linear in time, which the trapezoid rule integrates exactly: E = (b^2 - a^2) / 2.
    a, b = t0 - meter.origin_s, t1 - meter.origin_s
    assert trace.energy_j(t0, t1) == pytest.approx((b * b - a * a) / 2, rel=1e-9)


def test_context_manager_leaves_the_trace():
    meter = RampMeter()
    with meter:
        time.sleep(0.02)
    assert meter.last_trace is not None and len(meter.last_trace) >= 2
    assert not meter.running


def test_sampler_error_reaches_the_caller():
    meter = RampMeter(fail_after=3)
    meter.start()
    deadline = time.monotonic() + 5
    while meter.reads <= 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    with pytest.raises(MeterError, match="unplugged"):
        meter.stop()
    assert not meter.running


def test_error_before_the_first_reading_fails_start():
    meter = RampMeter(fail_after=0)
    with pytest.raises(MeterError, match="unplugged"):
        meter.start()
    assert not meter.running


def test_start_twice_and_stop_without_start_are_errors():
    meter = RampMeter()
    with pytest.raises(RuntimeError, match="not sampling"):
        meter.stop()
    meter.start()
    try:
        with pytest.raises(RuntimeError, match="already sampling"):
            meter.start()
    finally:
        meter.stop()


def test_listener_sees_every_reading():
    seen: list[Reading] = []
    lock = threading.Lock()

    def listen(reading: Reading) -> None:
        with lock:
            seen.append(reading)

    meter = RampMeter()
    meter.start(listener=listen)
    time.sleep(0.02)
    trace = meter.stop()
    assert [r.power_w for r in seen] == list(trace.power_w)


def test_a_streaming_session_can_keep_no_readings():
    """A meter server streams for as long as it has clients: its session keeps no readings in memory,
    while the listener still sees every one, and a sensor that fails at once still fails start()."""
    seen: list[Reading] = []
    meter = RampMeter()
    meter.start(listener=seen.append, keep_readings=False)
    time.sleep(0.02)
    trace = meter.stop()
    assert len(seen) >= 2 and len(trace.power_w) == 0
    with pytest.raises(MeterError, match="unplugged"):
        RampMeter(fail_after=0).start(keep_readings=False)


def test_negative_interval_is_refused():
    with pytest.raises(ValueError, match="interval_s"):
        RampMeter(interval_s=-1.0)
