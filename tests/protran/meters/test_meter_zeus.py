"""Zeus meter logic against a stand-in ``zeus.monitor`` module (no Zeus, no hardware needed)."""

from __future__ import annotations

import sys
import threading
import time
import types
from dataclasses import dataclass, field

import pytest

from protran.meters import MeterError, MeterUnavailableError, ZeusMeter, detect_meter
from protran.meters._auto import AUTO_ORDER, METERS
from protran.meters._zeus import measurement_energy_j


@dataclass
class FakeMeasurement:
    time: float
    gpu_energy: dict[int, float]
    cpu_energy: dict[int, float] | None = None
    dram_energy: dict[int, float] | None = None
    soc_energy: object | None = None


@dataclass
class FakeState:
    gpu_w: float = 200.0
    cpu_w: float = 50.0
    gpus: int = 1
    cpus: int = 1
    fail_end_after: int | None = None  # end_window raises after this many windows
    windows: list[tuple[float, float]] = field(default_factory=list)  # (begin, end) of closed windows
    open: dict[str, float] = field(default_factory=dict)
    cancelled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def fake_zeus(monkeypatch: pytest.MonkeyPatch, state: FakeState) -> FakeState:
    """Install ``zeus`` and ``zeus.monitor`` modules whose monitor draws constant power."""

    class ZeusMonitor:
        def __init__(self, gpu_indices=None, cpu_indices=None, approx_instant_energy=False, log_file=None,
                     sync_execution_with="torch"):
            self.gpu_indices = list(range(state.gpus)) if gpu_indices is None else list(gpu_indices)
            self.cpu_indices = list(range(state.cpus)) if cpu_indices is None else list(cpu_indices)
            self.soc_is_present = False

        def begin_window(self, key, sync_execution=True, restart=False):
            assert sync_execution is False  # the meter's thread must not synchronise CUDA
            with state.lock:
                if key in state.open:
                    raise ValueError(f"Measurement window '{key}' already exists")
                state.open[key] = time.monotonic()

        def end_window(self, key, sync_execution=True, cancel=False):
            with state.lock:
                begin = state.open.pop(key)
                if cancel:
                    state.cancelled += 1
                    return FakeMeasurement(0.0, {})
                if state.fail_end_after is not None and len(state.windows) >= state.fail_end_after:
                    raise RuntimeError("NVML: GPU is lost")
                end = time.monotonic()
                state.windows.append((begin, end))
            seconds = end - begin
            return FakeMeasurement(
                time=seconds,
                gpu_energy={i: state.gpu_w * seconds for i in self.gpu_indices},
                cpu_energy={i: state.cpu_w * seconds for i in self.cpu_indices} if self.cpu_indices else None,
            )

    package = types.ModuleType("zeus")
    monitor = types.ModuleType("zeus.monitor")
    monitor.ZeusMonitor = ZeusMonitor
    package.monitor = monitor
    monkeypatch.setitem(sys.modules, "zeus", package)
    monkeypatch.setitem(sys.modules, "zeus.monitor", monitor)
    return state


def test_zeus_is_named_but_never_picked_by_auto():
    assert METERS["zeus"] is ZeusMeter and ZeusMeter.name == "zeus"
    assert "zeus" not in AUTO_ORDER


def test_missing_zeus_gives_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "zeus", None)  # import zeus -> ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "zeus.monitor", raising=False)
    reason = ZeusMeter.unavailable_reason()
    assert reason is not None and "\n" not in reason
    assert "pip install 'edgetran[zeus]'" in reason
    with pytest.raises(MeterUnavailableError, match=r"edgetran\[zeus\]"):
        detect_meter("zeus")


def test_no_device_is_a_reason_not_an_error(monkeypatch):
    fake_zeus(monkeypatch, FakeState(gpus=0, cpus=0))
    reason = ZeusMeter.unavailable_reason()
    assert reason is not None and reason.startswith("zeus:") and "no GPU" in reason
    with pytest.raises(MeterUnavailableError, match="no GPU"):
        ZeusMeter()
    fake_zeus(monkeypatch, FakeState())
    assert ZeusMeter.unavailable_reason() is None


def test_windows_become_a_trace_whose_energy_is_zeus_energy(monkeypatch):
    state = fake_zeus(monkeypatch, FakeState(gpu_w=200.0, cpu_w=50.0))
    meter = detect_meter("zeus", interval_s="0.02", gpu_indices="0")
    assert isinstance(meter, ZeusMeter) and meter.gpu_indices == [0] and meter.cpu_indices == [0]
    readings = []
    meter.start(listener=readings.append)
    t0 = time.monotonic()
    time.sleep(0.15)
    t1 = time.monotonic()
    trace = meter.stop()
    assert not state.open  # every window was closed
    assert len(state.windows) >= 3 and len(trace) == 2 * len(state.windows) == len(readings)
    # Two readings per window, at its begin and its end, both with its mean power (GPU + CPU).
    assert trace.power_w == pytest.approx(250.0, rel=0.02)  # our instants vs Zeus's differ by µs
    assert trace.peak_power_w() == pytest.approx(250.0, rel=0.02)
    assert trace.has_energy_counter and trace.counter_energy_j[0] == 0.0
    # Energy over whole windows is what Zeus measured; the gaps between windows are bridged.
    measured_j = sum(250.0 * (end - begin) for begin, end in state.windows)
    assert trace.energy_j() >= measured_j - 1e-9
    assert trace.energy_j() == pytest.approx(250.0 * trace.duration_s, rel=0.02)  # clocks differ by µs
    first_begin, first_end = state.windows[0]
    assert trace.energy_j(trace.start_s, trace.timestamps_s[1]) == pytest.approx(250.0 * (first_end - first_begin))
    # A window between start() and stop() is covered, and its energy is power x time.
    assert trace.energy_j(t0, t1) == pytest.approx(250.0 * (t1 - t0), rel=0.02)
    assert trace.mean_power_w(t0, t1) == pytest.approx(250.0, rel=0.02)
    meter.close()


def test_power_steps_follow_the_windows(monkeypatch):
    state = fake_zeus(monkeypatch, FakeState(gpu_w=100.0, cpus=0))
    meter = ZeusMeter(interval_s=0.03)
    meter.start()
    time.sleep(0.08)
    state.gpu_w = 300.0
    time.sleep(0.1)
    trace = meter.stop()
    # Each window holds its mean: 100 W, 300 W, or between for the one window that straddles the change.
    assert ((trace.power_w > 98.0) & (trace.power_w < 306.0)).all()
    assert trace.power_w[0] == pytest.approx(100.0, rel=0.02) and trace.power_w[-1] == pytest.approx(300.0, rel=0.02)
    assert trace.peak_power_w() == pytest.approx(300.0, rel=0.02)
    assert trace.energy_j() == pytest.approx(float(trace.counter_energy_j[-1]))
    # The power steps integrate to the counter: the two ways to compute energy agree.
    steps = type(trace)(trace.timestamps_s, trace.power_w)
    assert steps.energy_j() == pytest.approx(trace.energy_j(), rel=1e-9)


def test_read_power_w_is_one_window(monkeypatch):
    fake_zeus(monkeypatch, FakeState(gpu_w=120.0, cpus=0))
    assert ZeusMeter(interval_s=0.01).read_power_w() == pytest.approx(120.0, rel=0.02)


def test_a_zeus_error_in_a_window_is_a_meter_error(monkeypatch):
    state = fake_zeus(monkeypatch, FakeState(fail_end_after=2))
    meter = ZeusMeter(interval_s=0.01)
    meter.start()
    time.sleep(0.1)
    with pytest.raises(MeterError, match="zeus: measurement window failed: NVML: GPU is lost"):
        meter.stop()
    assert not state.open  # the failed window was not left open
    state.fail_end_after = 0
    with pytest.raises(MeterError, match="GPU is lost"):
        meter.start()  # failing on the first window fails start()


def test_energy_sums_everything_measured():
    soc = types.SimpleNamespace(cpu_total_mj=1000, efficiency_cores_mj=[400], gpu_mj=500, ane_mj=None, dram_mj=250)
    measurement = FakeMeasurement(1.0, {0: 10.0, 1: 5.0}, cpu_energy={0: 3.0}, dram_energy={0: 1.0}, soc_energy=soc)
    assert measurement_energy_j(measurement) == pytest.approx(19.0 + 1.75)
    jetson = types.SimpleNamespace(cpu_energy_mj=100.0, gpu_energy_mj=200.0, total_energy_mj=900.0)
    assert measurement_energy_j(FakeMeasurement(1.0, {}, soc_energy=jetson)) == pytest.approx(0.9)
