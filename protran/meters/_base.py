"""The power-meter contract: a meter reads power now, or samples it in the background into a trace."""

from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from flexibert import EdgetranError


class MeterError(EdgetranError, RuntimeError):
    """A power meter failed while reading; the message names the meter and the cause."""


class MeterUnavailableError(MeterError):
    """The requested power meter does not exist or cannot be read on this machine; the message says
    what is missing and how to provide it."""


class Reading(NamedTuple):
    """One observation of a meter, at ``t_s`` (``time.monotonic`` seconds).

    ``power_w`` is None when the observation only carries an energy counter; ``energy_j`` is the
    cumulative counter value (joules since an arbitrary origin) where the meter has one; ``overflow``
    is True when the sensor flagged the sample as out of range (None when it cannot tell).
    """

    t_s: float
    power_w: float | None = None
    energy_j: float | None = None
    overflow: bool | None = None


def _as_array(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"PowerTrace.{name} holds non-finite values")
    return array


def _check_increasing(timestamps_s: np.ndarray, name: str) -> None:
    if timestamps_s.size > 1 and np.any(np.diff(timestamps_s) < 0):
        raise ValueError(f"PowerTrace.{name} must be non-decreasing")


@dataclass(frozen=True, eq=False)
class PowerTrace:
    """Power samples over time, and, where the meter has one, readings of an energy counter.

    ``timestamps_s`` are ``time.monotonic`` seconds of the process that recorded the trace (a
    remote meter maps them onto the local clock). When ``counter_energy_j`` is present (RAPL, NVML
    total energy), energy over a window is the counter difference, which is exact at the counter
    readings; otherwise it is the trapezoid integral of the power samples.
    """

    timestamps_s: np.ndarray
    power_w: np.ndarray
    meter: str = ""
    counter_timestamps_s: np.ndarray | None = None
    counter_energy_j: np.ndarray | None = None
    overflow: np.ndarray | None = None

    def __post_init__(self) -> None:
        timestamps_s = _as_array(self.timestamps_s, "timestamps_s")
        power_w = _as_array(self.power_w, "power_w")
        if timestamps_s.shape != power_w.shape:
            raise ValueError(f"PowerTrace: {timestamps_s.size} timestamps but {power_w.size} power values")
        _check_increasing(timestamps_s, "timestamps_s")
        object.__setattr__(self, "timestamps_s", timestamps_s)
        object.__setattr__(self, "power_w", power_w)
        if (self.counter_timestamps_s is None) != (self.counter_energy_j is None):
            raise ValueError("PowerTrace: counter_timestamps_s and counter_energy_j go together")
        if self.counter_timestamps_s is not None:
            counter_t = _as_array(self.counter_timestamps_s, "counter_timestamps_s")
            counter_e = _as_array(self.counter_energy_j, "counter_energy_j")
            if counter_t.shape != counter_e.shape:
                raise ValueError("PowerTrace: counter timestamps and energies differ in length")
            _check_increasing(counter_t, "counter_timestamps_s")
            object.__setattr__(self, "counter_timestamps_s", counter_t)
            object.__setattr__(self, "counter_energy_j", counter_e)
        if self.overflow is not None:
            overflow = np.asarray(self.overflow, dtype=bool).reshape(-1)
            if overflow.shape != power_w.shape:
                raise ValueError("PowerTrace: overflow flags must match the power samples")
            object.__setattr__(self, "overflow", overflow)

    # -- description --------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.power_w.size)

    @property
    def has_energy_counter(self) -> bool:
        return self.counter_energy_j is not None and self.counter_energy_j.size >= 2

    @property
    def start_s(self) -> float:
        """First instant the trace covers (power samples or counter readings)."""
        return min(self._spans())[0]

    @property
    def end_s(self) -> float:
        """Last instant the trace covers."""
        return max(end for _, end in self._spans())

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def sample_rate_hz(self) -> float:
        """Mean rate of the power samples (NaN with fewer than two)."""
        if self.power_w.size < 2 or self.timestamps_s[-1] == self.timestamps_s[0]:
            return float("nan")
        return (self.power_w.size - 1) / float(self.timestamps_s[-1] - self.timestamps_s[0])

    @property
    def overflow_count(self) -> int:
        """Samples the sensor flagged as out of range (0 when it cannot tell)."""
        return 0 if self.overflow is None else int(self.overflow.sum())

    def _spans(self) -> list[tuple[float, float]]:
        spans = []
        if self.timestamps_s.size:
            spans.append((float(self.timestamps_s[0]), float(self.timestamps_s[-1])))
        if self.counter_timestamps_s is not None and self.counter_timestamps_s.size:
            spans.append((float(self.counter_timestamps_s[0]), float(self.counter_timestamps_s[-1])))
        if not spans:
            raise ValueError(f"power trace{self._label()} holds no samples")
        return spans

    def _label(self) -> str:
        return f" of meter '{self.meter}'" if self.meter else ""

    # -- measures over a window ---------------------------------------------------------------

    def _window(self, t0_s: float | None, t1_s: float | None, first: float, last: float) -> tuple[float, float]:
        t0 = first if t0_s is None else float(t0_s)
        t1 = last if t1_s is None else float(t1_s)
        if t1 < t0:
            raise ValueError(f"window end {t1} s precedes its start {t0} s")
        if t0 < first or t1 > last:
            raise ValueError(
                f"window [{t0:.6f}, {t1:.6f}] s is not covered by the samples{self._label()} "
                f"[{first:.6f}, {last:.6f}] s: start the meter before and stop it after the window"
            )
        return t0, t1

    def energy_j(self, t0_s: float | None = None, t1_s: float | None = None) -> float:
        """Energy over [t0_s, t1_s] (the whole trace by default).

        With an energy counter: counter difference, linearly interpolated between readings.
        Otherwise: trapezoid integral of power, with the window edges interpolated.
        """
        if self.has_energy_counter:
            t, e = self.counter_timestamps_s, self.counter_energy_j
            t0, t1 = self._window(t0_s, t1_s, float(t[0]), float(t[-1]))
            return float(np.interp(t1, t, e) - np.interp(t0, t, e))
        t, p = self.timestamps_s, self.power_w
        if t.size == 0:
            raise ValueError(f"power trace{self._label()} holds no samples")
        t0, t1 = self._window(t0_s, t1_s, float(t[0]), float(t[-1]))
        inside = (t > t0) & (t < t1)
        tt = np.concatenate(([t0], t[inside], [t1]))
        pp = np.concatenate(([np.interp(t0, t, p)], p[inside], [np.interp(t1, t, p)]))
        return float(np.sum((pp[1:] + pp[:-1]) * 0.5 * np.diff(tt)))

    def mean_power_w(self, t0_s: float | None = None, t1_s: float | None = None) -> float:
        """Energy over the window divided by its length."""
        first, last = self.start_s, self.end_s
        t0 = first if t0_s is None else float(t0_s)
        t1 = last if t1_s is None else float(t1_s)
        if t1 <= t0:
            raise ValueError(f"mean power needs a window of positive length, got [{t0}, {t1}] s")
        return self.energy_j(t0, t1) / (t1 - t0)

    def peak_power_w(self, t0_s: float | None = None, t1_s: float | None = None) -> float:
        """Largest power sample inside [t0_s, t1_s].

        When no sample falls inside (a window shorter than the sampling period), the two samples
        that bracket the window are used: they are the only observations of it.
        """
        t, p = self.timestamps_s, self.power_w
        if t.size == 0:
            raise ValueError(f"power trace{self._label()} holds no power samples")
        t0, t1 = self._window(t0_s, t1_s, float(t[0]), float(t[-1]))
        inside = (t >= t0) & (t <= t1)
        if inside.any():
            return float(p[inside].max())
        before = np.searchsorted(t, t0, side="right") - 1
        return float(max(p[before], p[before + 1]))

    # -- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        data: dict[str, Any] = {
            "meter": self.meter,
            "timestamps_s": self.timestamps_s.tolist(),
            "power_w": self.power_w.tolist(),
        }
        if self.counter_timestamps_s is not None:
            data["counter_timestamps_s"] = self.counter_timestamps_s.tolist()
            data["counter_energy_j"] = self.counter_energy_j.tolist()
        if self.overflow is not None:
            data["overflow"] = self.overflow.tolist()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PowerTrace:
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ValueError(f"PowerTrace: unknown field(s) {unknown}")
        return cls(**data)

    @classmethod
    def from_readings(cls, readings: list[Reading], meter: str = "") -> PowerTrace:
        """Build a trace from readings in time order (power samples and counter readings apart)."""
        powered = [r for r in readings if r.power_w is not None]
        counted = [r for r in readings if r.energy_j is not None]
        overflow = None
        if any(r.overflow is not None for r in powered):
            overflow = [bool(r.overflow) for r in powered]
        return cls(
            timestamps_s=np.array([r.t_s for r in powered], dtype=float),
            power_w=np.array([r.power_w for r in powered], dtype=float),
            meter=meter,
            counter_timestamps_s=np.array([r.t_s for r in counted]) if counted else None,
            counter_energy_j=np.array([r.energy_j for r in counted]) if counted else None,
            overflow=overflow,
        )


Listener = Callable[[Reading], None]


class PowerMeter(ABC):
    """A source of power readings.

    ``read_power_w()`` reads once. ``start()`` samples in a background thread at the meter's
    natural rate until ``stop()``, which returns the :class:`PowerTrace`; the trace holds a sample
    taken at or before ``start()`` returned and one taken after ``stop()`` was called, so a window
    between the two calls is covered. As a context manager the meter samples inside the block and
    leaves the trace in ``last_trace``. ``close()`` releases the device.
    """

    name: ClassVar[str] = "meter"
    #: Seconds between polls of the background sampler (0 = as fast as the sensor converts).
    default_interval_s: ClassVar[float] = 0.01

    def __init__(self, *, interval_s: float | None = None) -> None:
        interval_s = self.default_interval_s if interval_s is None else float(interval_s)
        if not interval_s >= 0:
            raise ValueError(f"{self.name}: interval_s must be >= 0, got {interval_s}")
        self.interval_s = interval_s
        self.last_trace: PowerTrace | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._first_reading = threading.Event()
        self._readings: list[Reading] = []
        self._keep_readings = True
        self._n_readings = 0
        self._listener: Listener | None = None
        self._error: BaseException | None = None

    # -- detection ----------------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls, **options: Any) -> str | None:
        """Why this meter cannot be used here, or None when it looks usable."""
        return None

    @classmethod
    def is_available(cls, **options: Any) -> bool:
        return cls.unavailable_reason(**options) is None

    # -- reading ------------------------------------------------------------------------------

    @abstractmethod
    def read_power_w(self) -> float:
        """Power now, in watts."""

    def _read(self) -> Reading:
        """One reading for the background sampler; meters with a counter override this."""
        power_w = self.read_power_w()
        return Reading(time.monotonic(), power_w)

    # -- background sampling ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, listener: Listener | None = None, *, first_reading_timeout_s: float | None = None,
              keep_readings: bool = True) -> None:
        """Start sampling; returns once the first reading is in.

        ``listener``, if given, is called from the sampling thread with every reading as it
        arrives (used to stream readings live). ``keep_readings=False`` keeps none for the trace
        :meth:`stop` returns (then empty): a meter server streams for as long as it has clients, so
        keeping them would grow without bound.
        """
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already sampling; call stop() first")
        self._readings = []
        self._keep_readings = keep_readings
        self._n_readings = 0
        self._error = None
        self._listener = listener
        self._stop_event.clear()
        self._first_reading.clear()
        self._thread = threading.Thread(target=self._thread_main, name=f"power-meter-{self.name}", daemon=True)
        self._thread.start()
        timeout_s = self._first_reading_timeout_s() if first_reading_timeout_s is None else first_reading_timeout_s
        if not self._first_reading.wait(timeout_s):
            self._stop_event.set()
            self._abort_sampling()
            self._thread.join(timeout=5.0)
            self._thread = None
            if self._error is not None:
                raise self._error
            raise MeterError(f"{self.name}: no reading within {timeout_s:.1f} s of starting")
        if self._error is not None and not self._n_readings:
            self._thread.join(timeout=5.0)
            self._thread = None
            raise self._error

    def stop(self) -> PowerTrace:
        """Stop sampling and return the trace."""
        if self._thread is None:
            raise RuntimeError(f"{self.name}: not sampling; call start() first")
        self._stop_event.set()
        self._thread.join(timeout=self._stop_grace_s())
        if self._thread.is_alive():
            self._abort_sampling()
            self._thread.join(timeout=5.0)
        thread, self._thread = self._thread, None
        if thread.is_alive():
            raise MeterError(f"{self.name}: the sampling thread did not stop")
        if self._error is not None:
            raise self._error
        self.last_trace = PowerTrace.from_readings(self._readings, meter=self.name)
        return self.last_trace

    def close(self) -> None:
        """Release the device; stops sampling first if needed."""
        if self._thread is not None:
            with contextlib.suppress(MeterError):
                self.stop()

    def __enter__(self) -> PowerMeter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _emit(self, reading: Reading) -> None:
        self._n_readings += 1
        if self._keep_readings:
            self._readings.append(reading)
        if self._listener is not None:
            self._listener(reading)
        self._first_reading.set()

    def _thread_main(self) -> None:
        try:
            self._sampling_loop(self._stop_event, self._emit)
        except BaseException as error:  # reported to the caller of start()/stop()
            self._error = error
            self._first_reading.set()

    def _sampling_loop(self, stop: threading.Event, emit: Listener) -> None:
        """Poll ``_read()`` every ``interval_s`` until ``stop`` is set, then read once more."""
        next_s = time.monotonic()
        while True:
            emit(self._read())
            if stop.is_set():
                return
            next_s += self.interval_s
            delay_s = next_s - time.monotonic()
            if delay_s < 0:  # fell behind: keep the period rather than bursting to catch up
                next_s = time.monotonic()
                delay_s = 0.0
            if delay_s > 0:
                stop.wait(delay_s)

    def _first_reading_timeout_s(self) -> float:
        return 5.0 + 5 * self.interval_s

    def _stop_grace_s(self) -> float:
        """How long stop() waits for the sampler's last reading before aborting it."""
        return 5.0 + 2 * self.interval_s

    # An optional hook: only meters whose sampler can block (tool, remote) override it.
    def _abort_sampling(self) -> None:  # noqa: B027
        """Unblock a sampler that waits on a device or a pipe (tool and remote meters)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(interval_s={self.interval_s})"
