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
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
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


@dataclass(frozen=True)
class MeasurementResult:
    """The outcome of measuring one architecture. Units live in the field names.

    ``latency_s`` is the median batch latency divided by the batch size (seconds per sequence);
    ``latency_ci_rel`` the relative half-width of the confidence interval of that median;
    ``latency_iqr_s`` the interquartile range per sequence. ``energy_j`` is joules per sequence over the
    timed window (not idle-subtracted; ``idle_power_w`` is kept to do so). Power fields are None when
    no meter was used. ``batch_latencies_s`` and the timed window (``time.monotonic`` stamps, to relate
    it to a power trace of the same machine) are kept for inspection; the run store does not keep them.
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
) -> MeasurementResult:
    """Measure one architecture in a fresh worker process (see the module docstring for the protocol).

    Parameters
    ----------
    spec:
        The architecture (ArchSpec or reference model_dict). Weights are random (``seed``): latency and
        energy do not depend on their values.
    runtime:
        'torch', 'onnxruntime' or 'openvino'; ``runtime_options`` go to ``get_runtime`` (for example
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

    Examples
    --------
    >>> result = measure_architecture(spec, "onnxruntime", batch_size=1, seq_len=128)  # doctest: +SKIP
    >>> result.status, result.latency_s, result.energy_j                                # doctest: +SKIP
    ('ok', 0.0123, None)
    """
    spec = as_spec(spec)
    _validate_settings(batch_size, seq_len, num_threads, warmup, min_repeats, max_repeats, target_rel_ci,
                       confidence, time_cap_s, timeout_s, idle_s)
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
        "runtime_options": dict(runtime_options or {}),
    }
    base = {
        "arch_hash": model_hash(spec), "model_dict": spec.to_model_dict(), "runtime": runtime,
        "batch_size": batch_size, "seq_len": seq_len, "num_threads": num_threads,
        "meter": _meter_name(meter), "started_at": _now(), "host": host_info(),
    }
    command = list(worker_command) if worker_command is not None else default_worker_command()
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
    return MeasurementResult(
        **base, **fields, status=outcome.status, error=error, versions=versions, finished_at=_now()
    )


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


def _timing_fields(outcome: _WorkerOutcome, batch_size: int) -> dict[str, Any]:
    samples = [float(v) for v in outcome.reply["batch_latencies_s"]]
    _, median, _ = median_confidence_interval(samples, outcome.reply.get("confidence", 0.95))
    return {
        "latency_s": median / batch_size,
        "latency_ci_rel": _finite_or_none(relative_ci_half_width(samples, outcome.reply.get("confidence", 0.95))),
        "latency_iqr_s": interquartile_range(samples) / batch_size,
        "repeats": len(samples),
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
