"""The measurement protocol: one architecture, one runtime, one process, timed until the median is known.

Protocol (``measure_architecture``):

1. The parent starts the power meter (when one is given) and records idle power for ``idle_s``
   seconds *before* the worker exists, so idle power is the board at rest.
2. A fresh worker process (``python -m protran._measure_worker``, JSON on stdin/stdout) builds the
   model, exports and compiles it for the runtime and warms it up, all outside the timed window. It
   dies with the parent: a profiler killed mid-measurement leaves no worker behind to disturb the
   resumed run (see ``protran._measure_worker``).
3. The worker times repeats of one inference each (``time.perf_counter_ns``) until the relative
   half-width of the 95% confidence interval of the median batch latency is at most
   ``target_rel_ci``, or the time cap is reached. The interval is distribution-free: it comes from
   order statistics, ``[x_(j), x_(n+1-j)]`` with ``j`` the largest rank such that
   ``2 * P(Binomial(n, 1/2) <= j - 1) <= 1 - confidence``; so it needs no assumption about the shape
   of the timing distribution, which on a shared machine is skewed and heavy-tailed.
4. The worker reports the timed window as ``time.monotonic()`` stamps (a system-wide clock on Linux,
   shared by parent and child), and the parent integrates the meter's power trace over exactly that
   window: energy per sequence = integral / (repeats * batch size). The meter runs in the parent so
   that sampling it is not part of the measured process.

Outcomes: 'ok' (interval reached), 'unstable' (spread still above target at the cap: stored and
flagged, never silently ok), 'failed' (the worker raised or crashed; the error and stderr tail are
kept), 'timeout' (killed after ``timeout_s``) and 'oom' (MemoryError, an allocator failure, or a
SIGKILL that was not ours, which on Linux is the out-of-memory killer). Without a meter the energy
and power fields are None: not available, never 0.

Processes (``processes``): a process's interval describes its own timed window, not where the next
process will land. On this project's busy two-core machine five fresh processes of one architecture,
each with an interval of 1.2-1.5 %, spread by 5-15 % (``benchmarks/process_spread.py``): where the
allocator and the loader place a process's memory, and what the host does meanwhile, moves the whole
window. With ``processes=N`` the architecture is measured in N fresh processes in turn and the result
is their median (``combine_processes``); while they disagree by more than twice ``target_rel_ci``, one
more process is measured, up to 2N - 1 (with 2, a third decides). The row's interval becomes the
wider of its processes' and half their range, so the spread across processes is in the row and in its
weight in a fit.

Drift correction in the process (``reference``): a host whose speed moves within minutes moves a
row's window and a reference measured in another process apart, and a fresh process lands somewhere
of its own besides. With ``reference`` the worker also builds the reference architecture and, right
after the row's timed window, times it in a window of its own in the same process (the row's window,
energy included, follows the same rule as without one; the reference's model is built and warmed
beside it in the same memory). The reading lands in ``conditions["reference"]``; the
profiler corrects the row by it (``drift_correction="in-process"``, see ``protran._profile``). It costs
the reference's build and one short window per process, not a process of its own per reading. On this
project's machine, over ten fresh processes each, a median-size architecture's latency over the
reference in the same process spread 4.9 % and the smallest one's 10.6 %, against 5.6 % and 11.1 % over
a reference read in a process of its own just before, and 12.9-14.7 % raw
(``benchmarks/process_spread.py --in-process``). With several processes, each process's row is put
over its own reference, and the processes are compared, and combined, by those ratios.

Conditions (``MeasurementResult.conditions``, stored with the row): with ``cpus`` the worker pins
itself, and every thread it starts, to those CPUs before the runtime exists; it records the affinity in
effect, the CPU governor and frequencies of those CPUs before and after the timed window (from
``/sys/devices/system/cpu/cpu<N>/cpufreq``; None where Linux does not expose them), the load average
and the CPU busy share over the window from ``/proc/stat``. What other processes used is the busy
share of all CPUs less the worker's own CPU time; above ``UNDER_LOAD_CPUS`` (a quarter of a CPU on
average) the row is flagged ``under_load``. The flag never changes the status. A governor other than
'performance', or a minimum frequency below the maximum, means the clock scales with load: reported
once per process as a ``FrequencyScalingWarning``. The worker also records the graph the runtime
compiled (``graph_node_count`` and ``graph_op_groups``, see ``protran.compiled_graph_stats``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from flexibert import ArchSpec, as_spec, model_hash
from protran._measure_worker import PARENT_FD_VARIABLE, PARENT_PID_VARIABLE
from protran.vocabulary import STATUSES, USABLE_STATUSES

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
# What running out of memory looks like in a worker's error or stderr, matched in lower case. Each
# entry is specific to memory exhaustion, so an unrelated failure that mentions memory stays 'failed'.
_OOM_MARKERS = (
    "memoryerror",                # Python's MemoryError, numpy's _ArrayMemoryError, torch's OutOfMemoryError
    "out of memory",              # CUDA, cuBLAS, OpenCL and most C libraries
    "can't allocate memory",      # PyTorch's DefaultCPUAllocator (c10)
    "cannot allocate memory",     # strerror(ENOMEM): "[Errno 12] Cannot allocate memory"
    "failed to allocate memory",  # ONNX Runtime's arena
    "bad_alloc",                  # a C++ std::bad_alloc (OpenVINO, ONNX Runtime) as libstdc++ names it
    "bad allocation",             # the same exception's message under MSVC
    "enomem",
)
_STDERR_TAIL_CHARS = 4000
# Other processes using more than this many CPUs on average over the timed window (all CPUs, the worker's
# own CPU time taken out) flag a measurement as taken under load. /proc/stat counts in ticks of 10 ms per
# CPU, so over a window of a second or more the error is a few hundredths of a CPU on a small board.
UNDER_LOAD_CPUS = 0.25
_CPUFREQ_FILES = {"governor": "scaling_governor", "cur": "scaling_cur_freq", "min": "scaling_min_freq",
                  "max": "scaling_max_freq"}


class FrequencyScalingWarning(UserWarning):
    """The measured CPUs change their clock with load (a governor other than 'performance', or min < max)."""


@dataclass(frozen=True)
class MeasurementResult:
    """The outcome of measuring one architecture. Units live in the field names.

    ``latency_s`` is the median batch latency divided by the batch size (seconds per sequence);
    ``latency_ci_rel`` the relative half-width of the confidence interval of that median;
    ``latency_iqr_s`` the interquartile range per sequence. ``energy_j`` is joules per sequence over the
    timed window (not idle-subtracted; ``idle_power_w`` is kept to do so). Power fields are None when
    no meter was used. ``batch_latencies_s`` and the timed window (``time.monotonic`` stamps, to relate
    it to a power trace of the same machine) are kept for inspection; the run store does not keep them.
    ``conditions`` describes the machine during the window (affinity, governor, frequencies, load; see
    the module docstring); the store keeps it. Empty where the worker reported none.
    """

    arch_hash: str
    model_dict: dict[str, Any]
    runtime: str
    batch_size: int
    seq_len: int
    num_threads: int | None
    status: str
    latency_s: float | None = None
    latency_ci_rel: float | None = None
    latency_iqr_s: float | None = None
    repeats: int = 0
    time_capped: bool = False
    energy_j: float | None = None
    peak_power_w: float | None = None
    idle_power_w: float | None = None
    mean_power_w: float | None = None
    meter: str | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    batch_latencies_s: tuple[float, ...] = ()
    window_start_s: float | None = None
    window_end_s: float | None = None
    conditions: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def spec(self) -> ArchSpec:
        return ArchSpec.from_model_dict(self.model_dict, space=False)


# -- the stopping rule (pure functions) --------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def median_ci_rank(n: int, confidence: float = 0.95) -> int:
    """The 1-based rank ``j`` such that ``[x_(j), x_(n+1-j)]`` covers the median with at least
    ``confidence``; 0 when ``n`` is too small for any such interval (n < 6 at 95%)."""
    if n < 1:
        return 0
    tail = (1.0 - confidence) / 2.0
    # Terms further than 10 sqrt(n) below n/2 are below exp(-200): skip them so a call costs O(sqrt n).
    start = max(0, int(n / 2 - 10 * math.sqrt(n)))
    log_norm = math.lgamma(n + 1) - n * math.log(2.0)
    cdf, rank = 0.0, 0
    for k in range(start, n // 2 + 1):
        cdf += math.exp(log_norm - math.lgamma(k + 1) - math.lgamma(n - k + 1))
        if cdf > tail:
            break
        rank = k + 1
    return rank


def median_confidence_interval(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, median, high): a distribution-free confidence interval for the median from order
    statistics; (-inf, median, inf) when there are too few samples."""
    values = sorted(float(v) for v in samples)
    if not values:
        raise ValueError("no samples")
    n = len(values)
    median = (values[(n - 1) // 2] + values[n // 2]) / 2.0
    rank = median_ci_rank(n, confidence)
    if rank == 0:
        return -math.inf, median, math.inf
    return values[rank - 1], median, values[n - rank]


def relative_ci_half_width(samples: Sequence[float], confidence: float = 0.95) -> float:
    """Half the length of the median's confidence interval, relative to the median (inf if unknown)."""
    low, median, high = median_confidence_interval(samples, confidence)
    if not math.isfinite(low) or median <= 0:
        return math.inf
    return (high - low) / 2.0 / median


def has_converged(
    samples: Sequence[float], target_rel_ci: float, min_repeats: int = 10, confidence: float = 0.95
) -> bool:
    """The stopping rule: at least ``min_repeats`` samples and a relative CI half-width <= target."""
    return len(samples) >= min_repeats and relative_ci_half_width(samples, confidence) <= target_rel_ci


def interquartile_range(samples: Sequence[float]) -> float:
    values = sorted(float(v) for v in samples)
    return _quantile(values, 0.75) - _quantile(values, 0.25)


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass(frozen=True)
class TimingResult:
    """Per-repeat batch latencies and the timed window on the ``time.monotonic()`` clock."""

    batch_latencies_s: tuple[float, ...]
    window_start_s: float
    window_end_s: float
    converged: bool
    time_capped: bool


def time_repeats(
    run: Callable[[], Any],
    *,
    min_repeats: int = 10,
    max_repeats: int = 10_000,
    target_rel_ci: float = 0.02,
    time_cap_s: float = 60.0,
    min_window_s: float = 0.0,
    confidence: float = 0.95,
    clock_ns: Callable[[], int] = time.perf_counter_ns,
    monotonic: Callable[[], float] = time.monotonic,
    between_repeats: Callable[[], Any] | None = None,
) -> TimingResult:
    """Time ``run()`` repeatedly until the stopping rule holds, ``max_repeats`` or the time cap.

    The window also lasts at least ``min_window_s`` so that a power meter gets enough samples. The
    rule is checked after every repeat up to 100, then every ~2% more repeats, so that checking stays
    cheap next to very fast inferences. ``between_repeats`` is called after every repeat, outside the
    timed part (the worker checks there that its parent is still alive; it may raise or exit).
    """
    samples: list[float] = []
    window_start = monotonic()
    next_check = min_repeats
    converged = capped = False
    while len(samples) < max_repeats:
        start = clock_ns()
        run()
        samples.append((clock_ns() - start) * 1e-9)
        if between_repeats is not None:
            between_repeats()
        elapsed = monotonic() - window_start
        if len(samples) >= next_check and elapsed >= min_window_s:
            if has_converged(samples, target_rel_ci, min_repeats, confidence):
                converged = True
                break
            next_check = len(samples) + max(1, len(samples) // 50) if len(samples) >= 100 else len(samples) + 1
        if elapsed >= time_cap_s:
            capped = True
            break
    window_end = monotonic()
    if not converged:  # the last repeats may have fallen between two checks
        converged = has_converged(samples, target_rel_ci, min_repeats, confidence)
    return TimingResult(tuple(samples), window_start, window_end, converged, capped)


# -- host and software description -------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo ('model name' on x86, 'Model'/'Hardware' on ARM boards)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine()


def host_info() -> dict[str, Any]:
    """What the measurement ran on: CPU model, architecture, OS, logical CPUs, memory."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "logical_cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_total_bytes"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return info


def software_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape a measurement (read without importing them)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, distribution in (
        ("protran", "edgetran"), ("numpy", "numpy"), ("torch", "torch"),
        ("onnxruntime", "onnxruntime"), ("openvino", "openvino"),
    ):
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# -- measurement conditions: pinning, frequency scaling, load ----------------------------------------------


def check_cpus(cpus: Sequence[int] | None, num_threads: int | None = None) -> tuple[int, ...] | None:
    """``cpus`` as a sorted tuple, checked against the CPUs this process may run on; None stays None.

    Raises ValueError (one line) for an empty list, a CPU that does not exist or is not available to this
    process, more runtime threads than CPUs (they would take turns on the pinned CPUs and time that), or
    an OS without ``sched_setaffinity``.
    """
    if cpus is None:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("pinning to CPUs is not available on this OS (no sched_setaffinity); leave out cpus")
    chosen = tuple(cpus)
    if not chosen:
        raise ValueError("cpus must name at least one CPU")
    for cpu in chosen:
        if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu < 0:
            raise ValueError(f"cpus must be non-negative CPU indices, got {cpu!r}")
    available = os.sched_getaffinity(0)
    missing = sorted(set(chosen) - available)
    if missing:
        raise ValueError(f"CPU {', '.join(map(str, missing))} is not available to this process; "
                         f"choose among {cpu_list_text(available)}")
    unique = tuple(sorted(set(chosen)))
    if num_threads is not None and num_threads > len(unique):
        raise ValueError(f"{num_threads} threads need at least as many pinned CPUs; cpus gives {len(unique)} "
                         f"({cpu_list_text(unique)})")
    return unique


def cpu_list_text(cpus: Sequence[int] | set[int]) -> str:
    """``0-3,6`` for {0, 1, 2, 3, 6}."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def read_cpufreq(cpus: Sequence[int], sysfs_root: str | Path = "/sys") -> dict[str, dict[str, Any]]:
    """``{"<cpu>": {"governor": str, "cur": kHz, "min": kHz, "max": kHz}}``; None where a file is absent
    or unreadable (no cpufreq driver, a container): not available, never guessed."""
    base = Path(sysfs_root) / "devices" / "system" / "cpu"
    readings: dict[str, dict[str, Any]] = {}
    for cpu in cpus:
        values: dict[str, Any] = {}
        for key, name in _CPUFREQ_FILES.items():
            try:
                text = (base / f"cpu{cpu}" / "cpufreq" / name).read_text().strip()
                values[key] = text if key == "governor" else int(text)
            except (OSError, ValueError):
                values[key] = None
        readings[str(cpu)] = values
    return readings


def frequency_scaling(readings: dict[str, dict[str, Any]]) -> bool | None:
    """True where a CPU's governor is not 'performance' or its minimum frequency is below its maximum;
    False where what could be read says fixed; None where nothing could be read."""
    known = False
    for values in readings.values():
        if values.get("governor") is not None:
            known = True
            if values["governor"] != "performance":
                return True
        if values.get("min") is not None and values.get("max") is not None:
            known = True
            if values["min"] != values["max"]:
                return True
    return False if known else None


def parse_proc_stat(text: str) -> dict[str, tuple[int, int]]:
    """``{"all": (busy, total), "0": (busy, total), ...}`` in clock ticks from the text of /proc/stat.

    Busy is user + nice + system + irq + softirq + steal; total adds idle and iowait (guest time is
    already inside user and nice)."""
    counters: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *fields = line.split()
        try:
            user, nice, system, idle, iowait, irq, softirq, steal = ([int(v) for v in fields[:8]] + [0] * 8)[:8]
        except ValueError:
            continue
        busy = user + nice + system + irq + softirq + steal
        counters["all" if name == "cpu" else name[3:]] = (busy, busy + idle + iowait)
    return counters


def read_proc_stat(proc_root: str | Path = "/proc") -> dict[str, tuple[int, int]] | None:
    try:
        return parse_proc_stat((Path(proc_root) / "stat").read_text())
    except OSError:
        return None


def cpu_load(before: dict[str, tuple[int, int]] | None, after: dict[str, tuple[int, int]] | None,
             cpus: Sequence[int] | None, worker_cpu_s: float, elapsed_s: float) -> dict[str, Any]:
    """Busy CPUs (sum of the busy shares) over a window from two /proc/stat readings, over all CPUs and
    over ``cpus``; the worker's own CPUs (its CPU time over the window) and what others used, each
    clipped at 0. Every value is None where /proc/stat could not be read."""
    worker = worker_cpu_s / elapsed_s if elapsed_s > 0 else None
    load: dict[str, Any] = {"worker_cpus": _rounded(worker), "busy_cpus_all": None, "busy_cpus_pinned": None,
                            "other_cpus_all": None, "other_cpus_pinned": None}
    if not before or not after:
        return load

    def busy(names: Sequence[str]) -> float | None:
        shares = []
        for name in names:
            if name not in before or name not in after:
                return None
            d_busy, d_total = after[name][0] - before[name][0], after[name][1] - before[name][1]
            shares.append(min(1.0, max(0.0, d_busy / d_total)) if d_total > 0 else 0.0)
        return sum(shares)

    per_cpu = [name for name in after if name != "all"]
    for suffix, names in (("all", per_cpu), ("pinned", [str(c) for c in cpus] if cpus is not None else per_cpu)):
        total = busy(names) if names else None
        load[f"busy_cpus_{suffix}"] = _rounded(total)
        if total is not None and worker is not None:
            load[f"other_cpus_{suffix}"] = _rounded(max(0.0, total - worker))
    return load


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if value is not None and math.isfinite(value) else None


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 3) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


class ConditionsProbe:
    """Readings of the machine around the timed window, taken by the worker: ``start()`` just before the
    first timed repeat, ``stop()`` just after the last, which returns the ``conditions`` object."""

    def __init__(self, cpus: Sequence[int] | None, pinned: bool, *, sysfs_root: str | Path = "/sys",
                 proc_root: str | Path = "/proc", threshold_cpus: float = UNDER_LOAD_CPUS,
                 cpu_time: Callable[[], float] = time.process_time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cpus = list(cpus) if cpus is not None else None
        self.pinned = pinned
        self.sysfs_root, self.proc_root = sysfs_root, proc_root
        self.threshold_cpus = threshold_cpus
        self._cpu_time, self._monotonic = cpu_time, monotonic
        self._before: dict[str, Any] = {}

    def start(self) -> None:
        # the slow reads first, the counters last: as close to the window as possible
        self._before = {"cpufreq": read_cpufreq(self.cpus or [], self.sysfs_root), "loadavg": _loadavg()}
        self._before.update(stat=read_proc_stat(self.proc_root), cpu_s=self._cpu_time(), at=self._monotonic())

    def stop(self) -> dict[str, Any]:
        at, cpu_s, stat = self._monotonic(), self._cpu_time(), read_proc_stat(self.proc_root)
        after_freq, loadavg = read_cpufreq(self.cpus or [], self.sysfs_root), _loadavg()
        before = self._before
        load = cpu_load(before["stat"], stat, self.cpus, cpu_s - before["cpu_s"], at - before["at"])
        load.update(window_s=_rounded(at - before["at"]), loadavg_before=before["loadavg"], loadavg_after=loadavg,
                    threshold_cpus=self.threshold_cpus)
        other = load["other_cpus_all"]
        freqs = (before["cpufreq"], after_freq)
        scaling = [frequency_scaling(f) for f in freqs]
        return {
            "cpus": self.cpus,
            "pinned": self.pinned,
            "governor": {when: {cpu: v["governor"] for cpu, v in f.items()}
                         for when, f in zip(("before", "after"), freqs)},
            "freq_khz": {when: {cpu: {k: v[k] for k in ("cur", "min", "max")} for cpu, v in f.items()}
                         for when, f in zip(("before", "after"), freqs)},
            "frequency_scaling": True if True in scaling else (False if False in scaling else None),
            "load": load,
            "under_load": None if other is None else other > self.threshold_cpus,
        }


_frequency_warning_given = False


def _warn_frequency_scaling(conditions: dict[str, Any]) -> None:
    """Once per process: the measured CPUs scale their clock, so latency depends on what ran before."""
    global _frequency_warning_given
    if _frequency_warning_given or conditions.get("frequency_scaling") is not True:
        return
    _frequency_warning_given = True
    governors = sorted({g for g in (conditions.get("governor") or {}).get("before", {}).values() if g})
    shown = f"governor {', '.join(governors)}" if governors else "minimum frequency below maximum"
    warnings.warn(
        f"frequency scaling is active on the measured CPUs ({shown}): latency follows the clock, which "
        "follows the load; for steadier measurements set the 'performance' governor (e.g. `cpupower "
        "frequency-set -g performance`) or fix the minimum frequency at the maximum",
        FrequencyScalingWarning, stacklevel=3,
    )


# -- the parent side ---------------------------------------------------------------------------------------


def default_worker_command() -> list[str]:
    return [sys.executable, "-m", "protran._measure_worker"]


def measure_architecture(
    spec: ArchSpec | dict,
    runtime: str = "onnxruntime",
    batch_size: int = 1,
    seq_len: int = 128,
    num_threads: int = 1,
    meter: Any = None,
    *,
    warmup: int = 5,
    min_repeats: int = 10,
    max_repeats: int = 10_000,
    target_rel_ci: float = 0.02,
    confidence: float = 0.95,
    time_cap_s: float = 60.0,
    timeout_s: float = 600.0,
    idle_s: float = 2.0,
    min_window_s: float | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
    runtime_options: dict[str, Any] | None = None,
    workdir: str | Path | None = None,
    worker_command: Sequence[str] | None = None,
    cpus: Sequence[int] | None = None,
    processes: int = 1,
    reference: ArchSpec | dict | None = None,
) -> MeasurementResult:
    """Measure one architecture in a fresh worker process, or in ``processes`` of them (see the module
    docstring for the protocol).

    Parameters
    ----------
    spec:
        The architecture (ArchSpec or reference model_dict). Weights are random (``seed``): latency and
        energy do not depend on their values.
    runtime:
        One of :data:`~protran.RUNTIME_NAMES` ('onnxruntime', a precision variant such as
        'onnxruntime-int8', ...); the variant lands in ``result.versions["runtime_variant"]``.
        ``runtime_options`` go to ``get_runtime`` (for example
        ``{"device": "cuda"}`` or ``{"precision": "f32"}``).
    meter:
        A ``PowerMeter`` (e.g. ``protran.meters.detect_meter()``), which the protocol starts and stops in
        this process; None for no power data (energy and power are then None, never 0).
    time_cap_s:
        Longest timed window; a measurement that has not reached ``target_rel_ci`` by then is 'unstable'.
    timeout_s:
        Wall-clock limit for the whole worker (build, export, compile, warm-up and timing); 'timeout'.
    min_window_s:
        Shortest timed window (default with a meter: 1 s or 20 sampling intervals, whichever is longer,
        so the energy integral rests on enough samples; 0 without).
    vocab_size:
        Vocabulary of the built model (default: the model's own); a smaller one makes tests fast and does
        not change the encoder.
    worker_command:
        The command that runs the worker (default ``python -m protran._measure_worker``); prefix it to
        pin the measured process, e.g. ``["taskset", "-c", "3", *default_worker_command()]``.
    cpus:
        CPU indices the worker pins itself (and its runtime's threads) to before it builds anything;
        None (default) pins nothing. ``num_threads`` must not exceed their number. The affinity in
        effect, governor, frequencies and load over the timed window land in ``result.conditions``.
    processes:
        Fresh worker processes to measure in, one after the other (default 1); the result is their
        median (see "Processes" in the module docstring), and each one's median, interval and status
        land in ``result.conditions["processes"]``. With 2, a third is measured when the two disagree
        by more than twice ``target_rel_ci``; with N, up to 2N - 1 processes, one more while they
        disagree so.
    reference:
        An architecture (usually ``protran.reference_spec``) to time in the same worker process right
        after the measured one (see "Drift correction in the process" in the module docstring); its
        reading lands in ``result.conditions["reference"]`` (``arch_hash``, ``status``, ``latency_s``,
        ``latency_ci_rel``, ``repeats``). None (default): none.

    Examples
    --------
    >>> result = measure_architecture(spec, "onnxruntime", batch_size=1, seq_len=128)  # doctest: +SKIP
    >>> result.status, result.latency_s, result.energy_j                                # doctest: +SKIP
    ('ok', 0.0123, None)
    """
    spec = as_spec(spec)
    _validate_settings(batch_size, seq_len, num_threads, warmup, min_repeats, max_repeats, target_rel_ci,
                       confidence, time_cap_s, timeout_s, idle_s)
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive integer, got {processes!r}")
    pinned = check_cpus(cpus, num_threads)
    if min_window_s is None:
        # Enough of the meter's samples for the integral to mean something.
        min_window_s = max(1.0, 20 * getattr(meter, "interval_s", 0.05)) if meter is not None else 0.0
    if min_window_s > time_cap_s:
        raise ValueError(f"min_window_s ({min_window_s}) must not exceed time_cap_s ({time_cap_s})")
    request = {
        "model_dict": spec.to_model_dict(), "runtime": runtime, "batch_size": batch_size, "seq_len": seq_len,
        "num_threads": num_threads, "warmup": warmup, "min_repeats": min_repeats, "max_repeats": max_repeats,
        "target_rel_ci": target_rel_ci, "confidence": confidence, "time_cap_s": time_cap_s,
        "min_window_s": min_window_s, "vocab_size": vocab_size, "seed": seed,
        "runtime_options": dict(runtime_options or {}), "cpus": list(pinned) if pinned is not None else None,
        "reference_model_dict": as_spec(reference).to_model_dict() if reference is not None else None,
    }
    base = {
        "arch_hash": model_hash(spec), "model_dict": spec.to_model_dict(), "runtime": runtime,
        "batch_size": batch_size, "seq_len": seq_len, "num_threads": num_threads,
        "meter": _meter_name(meter), "started_at": _now(), "host": host_info(),
    }
    command = list(worker_command) if worker_command is not None else default_worker_command()
    once = functools.partial(_measure_once, command, request, base, timeout_s=timeout_s, num_threads=num_threads,
                             meter=meter, idle_s=idle_s, workdir=workdir, pinned=pinned, batch_size=batch_size)
    results = [once()]
    while results[-1].status in USABLE_STATUSES and len(results) < _process_count(results, processes, target_rel_ci):
        results.append(once())
    return combine_processes(results) if processes > 1 else results[0]


def _process_count(results: Sequence[MeasurementResult], processes: int, target_rel_ci: float) -> int:
    """How many processes to measure in, given those measured: ``processes``, and one more, up to
    ``2 * processes - 1``, while they disagree by more than twice ``target_rel_ci`` (more than their
    intervals allow, so one of them landed elsewhere: the next ones decide where the median lies)."""
    if processes > 1 and len(results) < 2 * processes - 1 and _process_spread(results) > 2 * target_rel_ci:
        return len(results) + 1
    return processes


def _process_values(results: Sequence[MeasurementResult]) -> list[float]:
    """What the processes are compared and combined by: each one's latency, or, where every process
    read the reference beside it, its latency over that reading (the host's speed in that process
    divided out)."""
    readings = [reference_latency(r) for r in results]
    if all(readings):
        return [float(r.latency_s or 0.0) / float(reading or 1.0) for r, reading in zip(results, readings)]
    return [float(r.latency_s) for r in results if r.latency_s]


def reference_latency(result: Any) -> float | None:
    """The reference latency read in the same process as a measurement (a result or a stored row), or
    None where there is no successful one."""
    reading = (result.conditions or {}).get("reference") or {}
    latency = reading.get("latency_s")
    return float(latency) if reading.get("status") in USABLE_STATUSES and latency else None


def _process_spread(results: Sequence[MeasurementResult]) -> float:
    """The range of the processes' values (``_process_values``) over their median."""
    values = [v for v in _process_values(results) if v > 0]
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / statistics.median(values)


def combine_processes(results: Sequence[MeasurementResult]) -> MeasurementResult:
    """One measurement from the same architecture measured in several fresh processes.

    A failure in any process is the result (it would be the next one's too, and an error is never
    averaged away). Otherwise the latency and its interquartile range are the median of the processes',
    and the relative interval is the wider of the widest process's and half the range across them: the
    row's interval then says how far another process could land, and a row whose processes disagree
    weighs less in a fit. Energy and mean and idle power are the processes' medians and peak power
    their largest; 'unstable' if any process was. The conditions are the first process's, with one
    entry per process under ``"processes"``.
    """
    if not results:
        raise ValueError("combine_processes needs at least one result")
    failed = [r for r in results if r.status not in USABLE_STATUSES]
    if failed:
        return failed[0]
    first = results[0]

    def median(name: str) -> float | None:
        values = [getattr(r, name) for r in results if getattr(r, name) is not None]
        return float(statistics.median(values)) if values else None

    latency = median("latency_s")
    ci_rels = [r.latency_ci_rel for r in results if r.latency_ci_rel is not None]
    ci_rel = max([*ci_rels, _process_spread(results) / 2]) if ci_rels else None
    peaks = [r.peak_power_w for r in results if r.peak_power_w is not None]
    per_process = [{"latency_s": r.latency_s, "latency_ci_rel": r.latency_ci_rel, "repeats": r.repeats,
                    "status": r.status, "started_at": r.started_at,
                    **({"reference_latency_s": reference_latency(r)} if "reference" in r.conditions else {})}
                   for r in results]
    errors = "; ".join(r.error for r in results if r.error) or None
    conditions = {**first.conditions, "processes": per_process}
    if latency and all(reference_latency(r) for r in results):
        # the reading that puts the row at the median of its processes' ratios to their references
        readings = [r.conditions["reference"] for r in results]
        conditions["reference"] = {
            "arch_hash": readings[0].get("arch_hash"),
            "status": "unstable" if any(x.get("status") == "unstable" for x in readings) else "ok",
            "latency_s": latency / statistics.median(_process_values(results)),
            "latency_ci_rel": max(float(x.get("latency_ci_rel") or 0.0) for x in readings),
            "repeats": sum(int(x.get("repeats") or 0) for x in readings)}
    elif "reference" in first.conditions:
        conditions["reference"] = {**first.conditions["reference"], "status": "failed",
                                   "error": "not every process read the reference"}
    return dataclasses.replace(
        first, status="unstable" if any(r.status == "unstable" for r in results) else "ok",
        latency_s=latency, latency_ci_rel=ci_rel, latency_iqr_s=median("latency_iqr_s"),
        repeats=sum(r.repeats for r in results), time_capped=any(r.time_capped for r in results),
        energy_j=median("energy_j"), mean_power_w=median("mean_power_w"), idle_power_w=median("idle_power_w"),
        peak_power_w=max(peaks) if peaks else None, error=errors, finished_at=results[-1].finished_at,
        batch_latencies_s=tuple(v for r in results for v in r.batch_latencies_s),
        window_end_s=results[-1].window_end_s, conditions=conditions,
    )


def _measure_once(command: list[str], request: dict[str, Any], base: dict[str, Any], *, timeout_s: float,
                  num_threads: int, meter: Any, idle_s: float, workdir: str | Path | None,
                  pinned: tuple[int, ...] | None, batch_size: int) -> MeasurementResult:
    """One worker process's measurement (steps 1-4 of the protocol)."""
    base = {**base, "started_at": _now()}
    with tempfile.TemporaryDirectory(prefix="protran-measure-") as scratch:
        request["workdir"] = str(workdir if workdir is not None else scratch)
        trace, idle_window, meter_error = None, None, None
        if meter is None:
            outcome = _run_worker(command, request, timeout_s, _worker_env(num_threads))
        else:
            meter.start()
            try:
                idle_start = time.monotonic()
                time.sleep(idle_s)
                idle_window = (idle_start, time.monotonic())
                outcome = _run_worker(command, request, timeout_s, _worker_env(num_threads))
            finally:
                try:
                    trace = meter.stop()
                except Exception as error:  # keep the latency; report the power as not available
                    meter_error = f"power not available: the meter failed ({error})"
    versions = {**software_versions(), **(outcome.reply or {}).get("versions", {})}
    fields = _timing_fields(outcome, batch_size) if outcome.status in USABLE_STATUSES else {}
    problems = [outcome.error, meter_error]
    if trace is not None:
        power, power_error = _power_fields(trace, idle_window, outcome, batch_size)
        fields.update(power)
        problems.append(power_error)
    error = "; ".join(p for p in problems if p) or None
    conditions = _reply_conditions(outcome.reply, pinned)
    if request.get("reference_model_dict") is not None and outcome.status in USABLE_STATUSES:
        conditions["reference"] = _reference_reading(outcome.reply, request, batch_size)
    _warn_frequency_scaling(conditions)
    return MeasurementResult(
        **base, **fields, status=outcome.status, error=error, versions=versions, finished_at=_now(),
        conditions=conditions,
    )


def _reference_reading(reply: dict[str, Any], request: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """The reference's reading in the worker's process (``conditions["reference"]``): its median
    latency per sequence, interval and repeats, or status 'failed' with the reason where the reply
    has no usable timings of it (the row itself stays as measured)."""
    reading: dict[str, Any] = {"arch_hash": model_hash(as_spec(request["reference_model_dict"]))}
    timing = reply.get("reference")
    samples = timing.get("batch_latencies_s") if isinstance(timing, dict) else None
    if not isinstance(samples, list) or not samples or not all(
            isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in samples):
        return {**reading, "status": "failed", "error": "the worker returned no reference timings"}
    return {**reading, "status": "ok" if timing.get("converged", True) else "unstable",
            **_window_latency([float(v) for v in samples], reply.get("confidence", 0.95), batch_size)}


def _reply_conditions(reply: dict[str, Any] | None, pinned: tuple[int, ...] | None) -> dict[str, Any]:
    """The worker's ``conditions`` (none from a worker that failed or does not report them), with the
    CPUs asked for where they were."""
    conditions = dict(reply["conditions"]) if reply and isinstance(reply.get("conditions"), dict) else {}
    if pinned is not None:
        conditions["cpus_requested"] = list(pinned)
    return conditions


def _validate_settings(batch_size, seq_len, num_threads, warmup, min_repeats, max_repeats, target_rel_ci,
                       confidence, time_cap_s, timeout_s, idle_s) -> None:
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("num_threads", num_threads),
                        ("min_repeats", min_repeats), ("max_repeats", max_repeats)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    if min_repeats > max_repeats:
        raise ValueError(f"min_repeats ({min_repeats}) must not exceed max_repeats ({max_repeats})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if median_ci_rank(max_repeats, confidence) == 0:
        raise ValueError(
            f"max_repeats ({max_repeats}) is too small for a {confidence:.0%} confidence interval of the median"
        )
    if not target_rel_ci > 0:
        raise ValueError(f"target_rel_ci must be positive, got {target_rel_ci!r}")
    for name, value in (("time_cap_s", time_cap_s), ("timeout_s", timeout_s)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    if idle_s < 0:
        raise ValueError(f"idle_s must be non-negative, got {idle_s!r}")


def _meter_name(meter: Any) -> str | None:
    if meter is None:
        return None
    return getattr(meter, "name", None) or type(meter).__name__


def _worker_env(num_threads: int) -> dict[str, str]:
    """The worker's environment: thread pools pinned to ``num_threads``, and protran importable."""
    env = dict(os.environ)
    for variable in _THREAD_VARIABLES:
        env[variable] = str(num_threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*_import_roots(), env.get("PYTHONPATH")) if p)
    return env


def _import_roots() -> list[str]:
    """Folders the worker must add to its path to import protran and flexibert from where this
    process did: none for an installed package (every interpreter of the environment sees its
    site-packages, and putting that ahead of the standard library could shadow it), the checkout's
    root when the packages run from a source tree."""
    import site

    import flexibert

    installed = {os.path.realpath(path) for path in (*site.getsitepackages(), site.getusersitepackages())}
    roots = dict.fromkeys(str(Path(module).resolve().parents[1]) for module in (__file__, flexibert.__file__))
    return [root for root in roots if os.path.realpath(root) not in installed]


@dataclass(frozen=True)
class _WorkerOutcome:
    status: str
    reply: dict[str, Any] | None = None
    error: str | None = None


def _tail(text: bytes) -> str:
    decoded = text.decode("utf-8", errors="replace").strip()
    return decoded[-_STDERR_TAIL_CHARS:]


def _run_worker(command: list[str], request: dict, timeout_s: float, env: dict[str, str]) -> _WorkerOutcome:
    """Run the worker, enforce the timeout and classify how it ended.

    The worker dies with this process (see ``protran._measure_worker``): on Linux by a death signal
    the kernel sends when the *thread* that started it exits. That is this thread, which stays here,
    waiting in ``communicate``, until the worker has ended, so the signal can only come when this
    process dies. The pipe whose write end this thread holds (``lifeline``) is the guard elsewhere.
    """
    process, lifeline = _start_worker(command, env)
    try:
        stdout, stderr = process.communicate(json.dumps(request).encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        stdout, stderr = process.communicate()
        detail = _tail(stderr)
        return _WorkerOutcome("timeout", error=f"worker killed after the {timeout_s:g} s timeout"
                              + (f"; stderr tail:\n{detail}" if detail else ""))
    except BaseException:  # Ctrl-C in the parent: never leave a worker running
        _kill_group(process)
        raise
    finally:
        os.close(lifeline)
    return _classify(process.returncode, _parse_reply(stdout), _tail(stderr))


def _start_worker(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """Start the worker in a session of its own, and return it with the write end of its lifeline.

    The worker gets the pipe's read end and this process's pid. ``os.pipe`` makes both ends
    close-on-exec, so no other program this process starts inherits the write end and keeps the pipe
    open after this process has died; only ``pass_fds`` hands the read end to the worker.
    """
    read_end, write_end = os.pipe()
    env = {**env, PARENT_PID_VARIABLE: str(os.getpid()), PARENT_FD_VARIABLE: str(read_end)}
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            pass_fds=(read_end,),
            start_new_session=True,  # its own process group, so a timeout kills any children too
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return process, write_end


def _classify(returncode: int, reply: dict[str, Any] | None, stderr_tail: str) -> _WorkerOutcome:
    """The outcome of a worker that ended by itself (not at the timeout)."""
    if returncode == 0 and reply is not None and "error" not in reply:
        problem = _reply_problem(reply)
        if problem is None:
            return _WorkerOutcome(reply["status"], reply=reply)
        reply = {"error": f"the worker's reply is malformed: {problem}"}
    message = (reply or {}).get("error") or _exit_description(returncode)
    if stderr_tail:
        message += f"; stderr tail:\n{stderr_tail}"
    if _out_of_memory(reply, message):
        return _WorkerOutcome("oom", reply=reply, error=message)
    if returncode == -signal.SIGKILL:
        # Not ours (the timeout returned earlier), and a worker killed because this process died has
        # nobody left to record it: on Linux this is the out-of-memory killer.
        return _WorkerOutcome("oom", reply=reply, error=f"{message} (most likely by the out-of-memory killer)")
    return _WorkerOutcome("failed", reply=reply, error=message)


def _out_of_memory(reply: dict[str, Any] | None, message: str) -> bool:
    """Whether a failed worker ran out of memory: it said so (a MemoryError), or its error or stderr
    carries an allocator's message (``_OOM_MARKERS``, in any case)."""
    if (reply or {}).get("memory_error") is True or (reply or {}).get("error_type") == "MemoryError":
        return True
    text = message.lower()
    return any(marker in text for marker in _OOM_MARKERS)


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"worker was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"worker was killed by signal {-returncode}"
    return f"worker exited with code {returncode}"


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _parse_reply(stdout: bytes) -> dict[str, Any] | None:
    """The worker's JSON reply: the last non-empty line of its stdout."""
    lines = [line for line in stdout.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return reply if isinstance(reply, dict) else None


def _reply_problem(reply: dict[str, Any]) -> str | None:
    if reply.get("status") not in USABLE_STATUSES:
        return f"status {reply.get('status')!r}"
    samples = reply.get("batch_latencies_s")
    if not isinstance(samples, list) or not samples:
        return "no batch latencies"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in samples):
        return "batch latencies are not finite non-negative numbers"
    for key in ("window_start_s", "window_end_s"):
        if not isinstance(reply.get(key), (int, float)):
            return f"no {key}"
    if reply["window_end_s"] < reply["window_start_s"]:
        return "the timed window ends before it starts"
    return None


def _window_latency(samples: Sequence[float], confidence: float, batch_size: int) -> dict[str, Any]:
    """One timed window's latency per sequence (its median batch latency over the batch size), the
    relative half-width of that median's interval and the number of repeats."""
    _, median, _ = median_confidence_interval(list(samples), confidence)
    return {"latency_s": median / batch_size,
            "latency_ci_rel": _finite_or_none(relative_ci_half_width(list(samples), confidence)),
            "repeats": len(samples)}


def _timing_fields(outcome: _WorkerOutcome, batch_size: int) -> dict[str, Any]:
    samples = [float(v) for v in outcome.reply["batch_latencies_s"]]
    return {
        **_window_latency(samples, outcome.reply.get("confidence", 0.95), batch_size),
        "latency_iqr_s": interquartile_range(samples) / batch_size,
        "time_capped": bool(outcome.reply.get("time_capped", False)),
        "batch_latencies_s": tuple(samples),
        "window_start_s": float(outcome.reply["window_start_s"]),
        "window_end_s": float(outcome.reply["window_end_s"]),
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _power_fields(trace: Any, idle_window: tuple[float, float] | None, outcome: _WorkerOutcome,
                  batch_size: int) -> tuple[dict[str, float | None], str | None]:
    """Idle power before the run; energy per sequence, peak and mean power over the timed window."""
    fields: dict[str, float | None] = {}
    problems = []
    if idle_window is not None and idle_window[1] > idle_window[0]:
        try:
            fields["idle_power_w"] = _checked_power("idle power", trace.mean_power_w(*idle_window))
        except Exception as error:  # a meter that missed the window: report, never invent
            problems.append(f"idle power not available: {error}")
    if outcome.status in USABLE_STATUSES:
        start, end = float(outcome.reply["window_start_s"]), float(outcome.reply["window_end_s"])
        sequences = len(outcome.reply["batch_latencies_s"]) * batch_size
        try:
            fields["energy_j"] = _checked_power("energy", trace.energy_j(start, end)) / sequences
            fields["peak_power_w"] = _checked_power("peak power", trace.peak_power_w(start, end))
            fields["mean_power_w"] = _checked_power("mean power", trace.mean_power_w(start, end))
        except Exception as error:
            for name in ("energy_j", "peak_power_w", "mean_power_w"):
                fields[name] = None
            problems.append(f"power over the timed window not available: {error}")
    return fields, "; ".join(problems) or None


def _checked_power(what: str, value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"the meter gave {what} = {value!r}")
    return number
