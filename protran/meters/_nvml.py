"""NVIDIA GPUs through NVML (the nvidia-ml-py package, imported as ``pynvml``)."""

from __future__ import annotations

import importlib
import threading
import time
from typing import Any

from protran.meters._base import MeterError, MeterUnavailableError, PowerMeter, Reading


def _import_pynvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError as error:
        raise MeterUnavailableError(
            "nvml: the nvidia-ml-py package is not installed (pip install 'edgetran[meters]')"
        ) from error


def _init(pynvml: Any) -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise MeterUnavailableError(
            f"nvml: cannot initialise NVML ({error}); is an NVIDIA GPU present and its driver "
            "(libnvidia-ml.so.1) installed? `nvidia-smi` should list the GPU"
        ) from error


class NvmlMeter(PowerMeter):
    """One NVIDIA GPU.

    Energy comes from ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded; Volta and
    newer) when the GPU supports it, so a trace's energy is a counter difference. Power samples come
    from ``nvmlDeviceGetPowerUsage`` (mW); note that on recent drivers and GPUs (Ampere and later) it
    reports a ~1 s average. ``power_field="instant"`` reads the ``NVML_FI_DEV_POWER_INSTANT`` field
    instead where the driver provides it.
    """

    name = "nvml"
    default_interval_s = 0.02

    def __init__(self, index: int = 0, *, power_field: str = "usage", interval_s: float | None = None) -> None:
        super().__init__(interval_s=interval_s)
        if power_field not in ("usage", "instant"):
            raise ValueError(f"nvml: power_field must be 'usage' or 'instant', got {power_field!r}")
        self._nvml = _import_pynvml()
        _init(self._nvml)
        self._lock = threading.Lock()
        try:
            count = self._nvml.nvmlDeviceGetCount()
            if not 0 <= index < count:
                raise MeterUnavailableError(f"nvml: GPU index {index} out of range; {count} GPU(s) found")
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            self.gpu_name = _text(self._nvml.nvmlDeviceGetName(self._handle))
        except self._nvml.NVMLError as error:
            self._nvml.nvmlShutdown()
            raise MeterUnavailableError(f"nvml: cannot open GPU {index}: {error}") from error
        except MeterUnavailableError:
            self._nvml.nvmlShutdown()
            raise
        self.index = index
        self.power_field = power_field
        self.has_energy_counter = self._energy_mj() is not None
        try:
            self.read_power_w()
        except MeterError as error:
            self._nvml.nvmlShutdown()
            raise MeterUnavailableError(f"nvml: GPU {index} ({self.gpu_name}) reports no power: {error}") from error

    @classmethod
    def unavailable_reason(cls, **options: Any) -> str | None:
        try:
            pynvml = _import_pynvml()
            _init(pynvml)
        except MeterUnavailableError as error:
            return str(error)
        try:
            if pynvml.nvmlDeviceGetCount() == 0:
                return "nvml: the driver reports no GPU"
        except pynvml.NVMLError as error:
            return f"nvml: cannot count GPUs: {error}"
        finally:
            pynvml.nvmlShutdown()
        return None

    def _energy_mj(self) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except self._nvml.NVMLError:  # NotSupported before Volta
            return None

    def read_power_w(self) -> float:
        with self._lock:
            try:
                if self.power_field == "instant":
                    return self._instant_power_w()
                return self._nvml.nvmlDeviceGetPowerUsage(self._handle) * 1e-3
            except self._nvml.NVMLError as error:
                raise MeterError(f"nvml: GPU {self.index}: power read failed: {error}") from error

    def _instant_power_w(self) -> float:
        field_id = getattr(self._nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None:
            raise MeterError("nvml: this nvidia-ml-py has no NVML_FI_DEV_POWER_INSTANT; use power_field='usage'")
        (value,) = self._nvml.nvmlDeviceGetFieldValues(self._handle, [field_id])
        if getattr(value, "nvmlReturn", 0) != 0:
            raise MeterError(f"nvml: the driver does not provide instantaneous power (return code {value.nvmlReturn})")
        return float(value.value.uiVal) * 1e-3

    def read_energy_j(self) -> float | None:
        """The GPU's total-energy counter in joules (since the driver loaded), or None."""
        with self._lock:
            energy_mj = self._energy_mj()
        return None if energy_mj is None else energy_mj * 1e-3

    def _read(self) -> Reading:
        power_w = self.read_power_w()
        energy_j = self.read_energy_j() if self.has_energy_counter else None
        return Reading(time.monotonic(), power_w, energy_j)

    def close(self) -> None:
        super().close()
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None

    def __repr__(self) -> str:
        return f"NvmlMeter(index={self.index}, gpu={self.gpu_name!r}, energy_counter={self.has_energy_counter})"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
