"""Zeus (``pip install 'edgetran[zeus]'``): GPU, CPU and SoC energy through Zeus's measurement windows.

Zeus (https://ml.energy/zeus) reads energy counters (NVML on NVIDIA GPUs, RAPL on Intel and AMD
CPUs, Apple silicon, Jetson rails) and reports the energy of a *window* between
``ZeusMonitor.begin_window`` and ``end_window``; it does not give a power time series. This meter
makes one by polling back-to-back windows, each ``interval_s`` long (0.1 s by default):

* every window ``[a, b]`` becomes two readings, at its begin ``a`` and at its end ``b``, both with
  the window's mean power (its energy over its length), so the power trace is a step function whose
  integral over each window is exactly the energy Zeus measured;
* every reading also carries a cumulative energy counter (joules since ``start()``): it grows by the
  window's energy inside a window and, across the short gap between one window's end and the next
  one's begin (one counter read), by the gap's length times the mean of the two windows' powers.

So a trace's energy over a span of whole windows is Zeus's own energy, and over a part of a window
it is the window's share in proportion to time. Peak power is only as fine as the window: it is the
largest *window mean*, not an instantaneous peak; a shorter ``interval_s`` resolves more, down to
the counters' update period (about 10-100 ms for NVML; windows shorter than that read zero energy
on a GPU unless ``approx_instant_energy=True``). Energy is the sum over everything the monitor
measures: every selected GPU, every CPU package and its DRAM zone, and an SoC's total (Jetson's
total rail; Apple silicon's CPU, GPU, Neural Engine and DRAM), not Zeus's ``total_energy`` (which
counts GPUs only). Choose what is measured with ``gpu_indices`` and ``cpu_indices`` (``[]`` to
leave a kind out).

The windows are read with ``sync_execution=False``: the meter runs in its own thread, and
synchronising CUDA from there would stall on the measured work; the measurement protocol already
synchronises the workload it times. Zeus is never picked by ``--meter auto``; name it:
``--meter zeus``.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from flexibert.lazy import MissingDependencyError, optional_dependency
from protran.meters._base import Listener, MeterError, MeterUnavailableError, PowerMeter, Reading

_keys = itertools.count()


def _import_zeus_monitor() -> Any:
    """The ``zeus.monitor`` module; :class:`MeterUnavailableError` with the install line if absent."""
    try:
        with optional_dependency("the zeus power meter"):
            return importlib.import_module("zeus.monitor")
    except MissingDependencyError as error:
        raise MeterUnavailableError(f"zeus: {error}") from error
    except ImportError as error:  # zeus is there but one of its own imports fails
        raise MeterUnavailableError(f"zeus: cannot import zeus.monitor: {error}") from error


def _indices(values: Sequence[int | str] | None, what: str) -> list[int] | None:
    """Indices as ints (a command line gives ``gpu_indices=0,1`` as strings)."""
    if values is None:
        return None
    try:
        return [value if isinstance(value, int) else int(str(value), 0) for value in values]
    except ValueError:
        raise ValueError(f"zeus: {what} must be integers, got {list(values)!r}") from None


def _open_monitor(zeus_monitor: Any, gpu_indices: list[int] | None, cpu_indices: list[int] | None,
                  approx_instant_energy: bool) -> Any:
    try:
        monitor = zeus_monitor.ZeusMonitor(
            gpu_indices=gpu_indices, cpu_indices=cpu_indices, approx_instant_energy=approx_instant_energy)
    except Exception as error:  # Zeus raises RuntimeError, ValueError and its own errors
        raise MeterUnavailableError(f"zeus: cannot start a ZeusMonitor: {error}") from error
    if not _measures_something(monitor):
        raise MeterUnavailableError(
            "zeus: Zeus finds no GPU (NVML/AMD SMI), CPU (RAPL, readable energy_uj files) or SoC "
            "(Apple silicon, Jetson) to measure here")
    return monitor


def _measures_something(monitor: Any) -> bool:
    return bool(getattr(monitor, "gpu_indices", None) or getattr(monitor, "cpu_indices", None)
                or getattr(monitor, "soc_is_present", False))


def _soc_energy_j(soc: Any) -> float:
    """An SoC measurement's total in joules (Zeus reports SoC fields in mJ), without double counting."""
    total = getattr(soc, "total_energy_mj", None)  # Jetson: the board's input rail
    if total is not None:
        return float(total) * 1e-3
    # Jetson without a total rail: CPU + GPU rails; Apple silicon: CPU total, GPU, ANE and DRAM
    # (the per-core and per-cluster fields are parts of cpu_total_mj).
    fields = ("cpu_energy_mj", "gpu_energy_mj", "cpu_total_mj", "gpu_mj", "ane_mj", "dram_mj")
    return sum(float(value) for value in (getattr(soc, name, None) for name in fields) if value is not None) * 1e-3


def measurement_energy_j(measurement: Any) -> float:
    """Everything a Zeus ``Measurement`` measured, in joules: GPUs, CPU packages, DRAM and the SoC."""
    energy_j = sum(float(v) for v in (measurement.gpu_energy or {}).values())
    for part in (getattr(measurement, "cpu_energy", None), getattr(measurement, "dram_energy", None)):
        if part:
            energy_j += sum(float(v) for v in part.values())
    soc = getattr(measurement, "soc_energy", None)
    if soc is not None:
        energy_j += _soc_energy_j(soc)
    return energy_j


class ZeusMeter(PowerMeter):
    """Energy of GPUs, CPUs and SoCs as Zeus measures it, as a trace of back-to-back windows.

    See the module documentation for how windows map onto readings. ``gpu_indices`` and
    ``cpu_indices`` go to ``ZeusMonitor`` (None: all it finds; ``[]``: none of that kind);
    ``approx_instant_energy`` lets Zeus estimate a GPU window shorter than the counter's update
    period from instant power. ``start()`` returns after the first window closes (``interval_s``).
    """

    name = "zeus"
    default_interval_s = 0.1

    def __init__(self, gpu_indices: list[int] | None = None, cpu_indices: list[int] | None = None, *,
                 approx_instant_energy: bool = False, interval_s: float | None = None) -> None:
        super().__init__(interval_s=interval_s)
        if self.interval_s <= 0:
            raise ValueError("zeus: interval_s must be > 0 (it is the length of each Zeus window)")
        zeus_monitor = _import_zeus_monitor()
        self._monitor = _open_monitor(zeus_monitor, _indices(gpu_indices, "gpu_indices"),
                                      _indices(cpu_indices, "cpu_indices"), approx_instant_energy)
        self.gpu_indices = list(getattr(self._monitor, "gpu_indices", []) or [])
        self.cpu_indices = list(getattr(self._monitor, "cpu_indices", []) or [])
        self.soc_present = bool(getattr(self._monitor, "soc_is_present", False))
        self._lock = threading.Lock()
        self._key_prefix = f"edgetran-meter-{os.getpid()}-{next(_keys)}"

    @classmethod
    def unavailable_reason(cls, **options: Any) -> str | None:
        try:
            zeus_monitor = _import_zeus_monitor()
            _open_monitor(zeus_monitor, _indices(options.get("gpu_indices"), "gpu_indices"),
                          _indices(options.get("cpu_indices"), "cpu_indices"),
                          bool(options.get("approx_instant_energy", False)))
        except (MeterUnavailableError, ValueError) as error:
            return str(error)
        return None

    # -- Zeus calls, each turned into a MeterError on failure ----------------------------------

    def _begin(self, key: str) -> float:
        """Open window ``key``; returns the monotonic instant its counters were read (call midpoint)."""
        with self._lock:
            before = time.monotonic()
            try:
                self._monitor.begin_window(key, sync_execution=False)
            except Exception as error:
                raise MeterError(f"zeus: cannot begin a measurement window: {error}") from error
            return (before + time.monotonic()) / 2

    def _end(self, key: str) -> tuple[float, float, float]:
        """Close window ``key``: (monotonic instant of the counter read, energy J, Zeus's duration s)."""
        with self._lock:
            before = time.monotonic()
            try:
                measurement = self._monitor.end_window(key, sync_execution=False)
                energy_j = measurement_energy_j(measurement)
                duration_s = float(measurement.time)
            except Exception as error:
                raise MeterError(f"zeus: measurement window failed: {error}") from error
            return (before + time.monotonic()) / 2, energy_j, duration_s

    def _cancel(self, key: str) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._monitor.end_window(key, sync_execution=False, cancel=True)

    # -- reading ------------------------------------------------------------------------------

    def read_power_w(self) -> float:
        """Mean power over one window of ``interval_s`` (Zeus has no instantaneous reading)."""
        key = f"{self._key_prefix}-read-{next(_keys)}"
        begin_s = self._begin(key)
        try:
            time.sleep(self.interval_s)
            end_s, energy_j, duration_s = self._end(key)
        except BaseException:
            self._cancel(key)
            raise
        return _mean_power_w(energy_j, duration_s, end_s - begin_s)

    def _sampling_loop(self, stop: threading.Event, emit: Listener) -> None:
        key = f"{self._key_prefix}-trace"
        begin_s = self._begin(key)
        open_window = True
        energy_j = 0.0  # the counter at begin_s
        previous: tuple[float, float] | None = None  # (end instant, mean power) of the last window
        try:
            while True:
                stop.wait(self.interval_s)
                last = stop.is_set()
                end_s, window_j, duration_s = self._end(key)
                open_window = False
                power_w = _mean_power_w(window_j, duration_s, end_s - begin_s)
                if previous is not None:  # the gap between windows, at the mean of their powers
                    energy_j += max(begin_s - previous[0], 0.0) * (previous[1] + power_w) / 2
                emit(Reading(begin_s, power_w, energy_j))
                energy_j += window_j
                emit(Reading(end_s, power_w, energy_j))
                if last:
                    return
                previous = (end_s, power_w)
                begin_s = self._begin(key)
                open_window = True
        finally:
            if open_window:
                self._cancel(key)

    def _first_reading_timeout_s(self) -> float:
        return 10.0 + 5 * self.interval_s

    def __repr__(self) -> str:
        return (f"ZeusMeter(gpu_indices={self.gpu_indices}, cpu_indices={self.cpu_indices}, "
                f"soc={self.soc_present}, interval_s={self.interval_s})")


def _mean_power_w(energy_j: float, zeus_duration_s: float, clock_duration_s: float) -> float:
    """A window's mean power: its energy over its length between the readings' instants, so that the
    power steps integrate to the counter exactly (Zeus's own ``time`` differs by call overheads)."""
    for duration_s in (clock_duration_s, zeus_duration_s):
        if duration_s > 0:
            return energy_j / duration_s
    raise MeterError("zeus: a measurement window of zero length; use a longer interval_s")
