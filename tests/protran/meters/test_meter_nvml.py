"""NVML meter logic against a stand-in ``pynvml`` module (this machine has no NVIDIA driver)."""

from __future__ import annotations

import sys
import time
import types

import pytest

from protran.meters import MeterError, MeterUnavailableError, NvmlMeter


class NVMLError(Exception):
    pass


def fake_pynvml(*, gpus=1, driver=True, energy_supported=True, power_mw=150_000, instant_mw=None):
    """A module with the pynvml calls the meter uses; energy grows by 1 J per read."""
    module = types.ModuleType("pynvml")
    module.NVMLError = NVMLError
    module.NVML_FI_DEV_POWER_INSTANT = 186
    state = {"initialised": 0, "energy_mj": 1_000_000, "power_mw": power_mw}
    module.state = state

    def init():
        if not driver:
            raise NVMLError("NVML Shared Library Not Found")
        state["initialised"] += 1

    def shutdown():
        state["initialised"] -= 1

    def energy(handle):
        if not energy_supported:
            raise NVMLError("Not Supported")
        state["energy_mj"] += 1000
        return state["energy_mj"]

    def field_values(handle, ids):
        value = types.SimpleNamespace(uiVal=instant_mw or 0)
        return [types.SimpleNamespace(nvmlReturn=0 if instant_mw is not None else 3, value=value)]

    module.nvmlInit = init
    module.nvmlShutdown = shutdown
    module.nvmlDeviceGetCount = lambda: gpus
    module.nvmlDeviceGetHandleByIndex = lambda index: ("gpu", index)
    module.nvmlDeviceGetName = lambda handle: b"NVIDIA H100 80GB HBM3"
    module.nvmlDeviceGetPowerUsage = lambda handle: state["power_mw"]
    module.nvmlDeviceGetTotalEnergyConsumption = energy
    module.nvmlDeviceGetFieldValues = field_values
    return module


@pytest.fixture
def install(monkeypatch):
    def put(**kwargs):
        module = fake_pynvml(**kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return put


def test_power_is_read_in_milliwatts(install):
    install(power_mw=152_340)
    meter = NvmlMeter()
    assert meter.gpu_name == "NVIDIA H100 80GB HBM3"
    assert meter.read_power_w() == pytest.approx(152.34)


def test_energy_counter_gives_exact_trace_energy(install):
    module = install()
    meter = NvmlMeter(interval_s=0.002)
    assert meter.has_energy_counter
    meter.start()
    time.sleep(0.02)
    trace = meter.stop()
    assert trace.has_energy_counter
    # The fake counter advances 1 J per read: energy is the number of reads in the trace minus one.
    assert trace.energy_j() == pytest.approx(len(trace.counter_energy_j) - 1.0)
    assert set(trace.power_w) == {150.0}
    meter.close()
    assert module.state["initialised"] == 0


def test_without_energy_counter_the_trace_integrates_power(install):
    install(energy_supported=False)
    meter = NvmlMeter(interval_s=0.002)
    assert not meter.has_energy_counter and meter.read_energy_j() is None
    with meter:
        time.sleep(0.01)
    trace = meter.last_trace
    assert not trace.has_energy_counter
    assert trace.energy_j() == pytest.approx(150.0 * trace.duration_s)


def test_instant_power_field(install):
    install(instant_mw=99_500)
    assert NvmlMeter(power_field="instant").read_power_w() == pytest.approx(99.5)
    install(instant_mw=None)
    with pytest.raises(MeterUnavailableError, match="instantaneous power"):
        NvmlMeter(power_field="instant")
    with pytest.raises(ValueError, match="power_field"):
        NvmlMeter(power_field="peak")


def test_missing_driver_is_unavailable_with_the_reason(install):
    install(driver=False)
    reason = NvmlMeter.unavailable_reason()
    assert reason is not None and "NVML Shared Library Not Found" in reason and "driver" in reason
    with pytest.raises(MeterUnavailableError, match="cannot initialise NVML"):
        NvmlMeter()


def test_missing_package_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with pytest.raises(MeterUnavailableError, match="nvidia-ml-py"):
        NvmlMeter()


def test_bad_index_and_no_gpu(install):
    module = install(gpus=1)
    with pytest.raises(MeterUnavailableError, match="index 3 out of range"):
        NvmlMeter(index=3)
    assert module.state["initialised"] == 0  # shut down again after the failure
    install(gpus=0)
    assert NvmlMeter.unavailable_reason() == "nvml: the driver reports no GPU"


def test_read_failure_during_sampling_is_an_error(install):
    module = install()
    meter = NvmlMeter(interval_s=0.002)
    meter.start()

    def broken(handle):
        raise NVMLError("GPU is lost")

    module.nvmlDeviceGetPowerUsage = broken
    meter._thread.join(timeout=5)
    with pytest.raises(MeterError, match="GPU is lost"):
        meter.stop()


def test_this_machine_reports_why_nvml_is_missing():
    # Real pynvml here: no driver, so the reason must say so rather than fail.
    reason = NvmlMeter.unavailable_reason()
    if reason is None:
        pytest.skip("an NVIDIA driver is present on this machine")
    assert reason.startswith("nvml:")
