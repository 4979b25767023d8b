"""The measured process: ``python -m protran._measure_worker`` reads one JSON request on stdin and
writes one JSON reply on stdout.

It builds the model, exports and compiles it for the runtime and warms it up, then times repeats
(see :func:`protran._protocol.time_repeats`). Only the reply goes to stdout: file descriptor 1 is
pointed at stderr first, so whatever the libraries print cannot corrupt it. On an error the reply is
``{"error": ..., "error_type": ..., "memory_error": ...}`` and the exit code is 1.

The worker dies with the process that started it. It runs in a session of its own (so that a timeout
can kill its whole group), so killing the profiler's group does not reach it; left running, it would
keep a CPU busy beside the resumed run's measurement. Two guards, set up by :func:`watch_parent`:

* On Linux the kernel kills it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) when its parent dies, whatever
  it is doing, even inside a long compile in C.
* Everywhere, and through a wrapper command that forks (``perf stat``, ``/usr/bin/time``), it polls a
  pipe from the parent, whose write end only the parent holds: the read end reaches end-of-file the
  moment the parent is gone. It checks after building the model, between warm-up runs and between
  timed repeats, and then kills its own process group (so anything it started goes too) and exits.

With ``"cpus"`` in the request the worker pins itself first of all (:func:`pin_to_cpus`), before it
imports a runtime, so the thread pools the runtime creates later inherit the affinity. Around the timed
window it reads the machine's conditions (``protran._protocol.ConditionsProbe``) and replies them as
``"conditions"``.

With ``"reference_model_dict"`` in the request the worker also builds the reference architecture,
warms both up, times the measured architecture by the same rule as without it, and then times the reference in
a window of its own, in this same process; its timings come back as ``"reference"`` (see "Drift
correction in the process" in ``protran._protocol``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Any

from flexibert import clitools

# Set by the parent (``protran._protocol._run_worker``): its pid, and the worker's end of the pipe.
PARENT_PID_VARIABLE = "PROTRAN_PARENT_PID"
PARENT_FD_VARIABLE = "PROTRAN_PARENT_FD"
EXIT_PARENT_GONE = 70
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ParentWatch:
    """Tells whether the process that started this worker is gone.

    ``parent_pid`` and ``fd`` come from the environment; without them (a worker started by hand) the
    parent is never reported gone. The pipe is the decisive test: the parent never writes to it and
    the worker cannot hold its write end (the parent's copy is close-on-exec), so reading gives
    end-of-file exactly when the parent has exited, even when a wrapper process stands between the
    two. The kernel closes a dying process's files before it re-parents its children, so the pipe
    says "gone" no later than ``os.getppid()`` changes. The pid test is kept as a second sign for a
    direct child: a stray copy of the write end (a plain ``fork()`` in the parent) cannot hide it.
    """

    def __init__(self, parent_pid: int | None, fd: int | None) -> None:
        self.parent_pid = parent_pid
        self.fd = fd
        if fd is not None:
            try:
                os.set_blocking(fd, False)
            except OSError:  # not an open descriptor here: no pipe to watch
                self.fd = None
        # Only a direct child can compare its parent's pid; behind a forking wrapper it differs anyway.
        self.direct_child = parent_pid is not None and os.getppid() == parent_pid

    @classmethod
    def from_environment(cls) -> ParentWatch:
        return cls(_int_variable(PARENT_PID_VARIABLE), _int_variable(PARENT_FD_VARIABLE))

    def parent_gone(self) -> bool:
        if self.direct_child and os.getppid() != self.parent_pid:
            return True
        if self.fd is None:
            return False
        try:
            return os.read(self.fd, 1) == b""
        except BlockingIOError:  # open and empty: the parent is alive
            return False
        except OSError:  # the descriptor is not ours after all: no way to tell
            return False

    def exit_if_parent_gone(self) -> None:
        """Called between warm-up runs and timed repeats: one non-blocking read, outside the timing."""
        if self.parent_gone():
            _die()


def watch_parent() -> ParentWatch:
    """Arm the death signal, exit at once if the parent is already gone, and return the watch.

    Arming comes first: the parent may die between this process's start and the ``prctl`` call, and
    then no signal ever comes (the kernel ties the signal to the parent at the time of the call), but
    the parent's pid no longer matches and the pipe is at end-of-file, so the check that follows
    catches exactly that case.
    """
    watch = ParentWatch.from_environment()
    if watch.parent_pid is not None:
        _arm_death_signal()
        watch.exit_if_parent_gone()
        if os.getppid() != watch.parent_pid and watch.fd is None:
            _die()  # a direct child whose parent has already died, and no pipe to say otherwise
    return watch


def _arm_death_signal() -> bool:
    """On Linux, have the kernel SIGKILL this process when its parent dies; False elsewhere.

    Linux sends the signal when the *thread* that forked this process exits, not the whole parent
    process. That is right here: the parent's thread that starts the worker (``_run_worker``) waits
    in ``communicate`` until the worker has ended, so it cannot exit while the worker runs.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):  # no prctl to call: the pipe alone guards
        return False


def _die() -> None:
    """Exit now, taking along any process this worker started.

    The worker leads its own process group (the parent starts it in a new session) and whatever it
    starts joins that group, so killing the group ends them all. The runtimes start no processes
    today; if one did, the death signal alone would leave them behind, but this check kills them.
    Behind a wrapper the worker does not lead the group and only exits itself.
    """
    if hasattr(os, "killpg") and os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(EXIT_PARENT_GONE)


def _int_variable(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def pin_to_cpus(cpus: list[int] | None) -> list[int] | None:
    """Pin this process to ``cpus`` (None: leave it as it is) and return the affinity in effect, or None
    where the OS cannot tell (no ``sched_getaffinity``).

    It runs before any runtime starts a thread (``flexibert.clitools.pin_process``).
    """
    if cpus is not None:
        if not hasattr(os, "sched_setaffinity"):
            raise OSError("pinning to CPUs is not available on this OS (no sched_setaffinity)")
        clitools.pin_process(cpus)
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def measure(request: dict[str, Any], watch: ParentWatch | None = None) -> dict[str, Any]:
    """Build, prepare, warm up and time one architecture as the request says; between the steps,
    exit if the parent is gone (``watch``)."""
    cpus = request.get("cpus")
    affinity = pin_to_cpus(cpus)  # first: before a runtime's import or its thread pools exist
    if cpus is not None and request["num_threads"] > len(affinity or cpus):
        raise ValueError(f"{request['num_threads']} threads on {len(affinity or cpus)} pinned CPUs")
    from flexibert import ArchSpec
    from protran._graphs import session_graph_record
    from protran._protocol import ConditionsProbe, time_repeats
    from protran._runtimes import get_runtime

    runtime = get_runtime(request["runtime"], **request.get("runtime_options", {}))
    check = watch.exit_if_parent_gone if watch is not None else _nothing

    def prepared(model_dict: dict[str, Any], workdir: str):
        session = runtime.prepare(
            ArchSpec.from_model_dict(model_dict, space=False), request["batch_size"], request["seq_len"],
            request["num_threads"], workdir, model_seed=request.get("seed", 0), vocab_size=request.get("vocab_size"),
        )
        check()
        return session

    def timed(session, min_window_s: float):
        return time_repeats(session.run, between_repeats=check, min_repeats=request["min_repeats"],
                            max_repeats=request["max_repeats"], target_rel_ci=request["target_rel_ci"],
                            time_cap_s=request["time_cap_s"], min_window_s=min_window_s,
                            confidence=request["confidence"])

    session = prepared(request["model_dict"], request["workdir"])
    reference = None
    if request.get("reference_model_dict") is not None:
        # its own directory: an exported file of one model must not meet the other's
        reference_dir = os.path.join(request["workdir"], "reference")
        os.makedirs(reference_dir, exist_ok=True)
        reference = prepared(request["reference_model_dict"], reference_dir)
    for _ in range(request["warmup"]):
        for warming in (session, reference):
            if warming is not None:
                check()
                warming.run()
    probe = ConditionsProbe(affinity, pinned=cpus is not None)
    probe.start()
    timing = timed(session, request["min_window_s"])
    conditions = probe.stop()
    # The compiled graph, stored with the row, spares the compiled-graph features a second compilation.
    conditions.update(session_graph_record(session))
    extra: dict[str, Any] = {}
    if reference is not None:
        # after the row's window, so the row's window follows the same rule as without a reference
        reference_timing = timed(reference, 0.0)
        extra["reference"] = {"batch_latencies_s": list(reference_timing.batch_latencies_s),
                              "converged": reference_timing.converged,
                              "window_start_s": reference_timing.window_start_s,
                              "window_end_s": reference_timing.window_end_s}
    return {
        **extra,
        "status": "ok" if timing.converged else "unstable",
        "batch_latencies_s": list(timing.batch_latencies_s),
        "window_start_s": timing.window_start_s,
        "window_end_s": timing.window_end_s,
        "time_capped": timing.time_capped,
        "confidence": request["confidence"],
        # The variant says what the row measured: the precision and how it was quantised and calibrated.
        "versions": {**{name: str(version) for name, version in runtime.versions().items()},
                     "runtime_variant": session.variant.as_dict()},
        "conditions": conditions,
    }


def _nothing() -> None:
    pass


def main() -> int:
    watch = watch_parent()  # first of all: the parent may already be gone
    reply_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    code = 0
    try:
        reply = measure(json.loads(sys.stdin.read()), watch)
    except BaseException as error:  # report every failure to the parent, which classifies it
        traceback.print_exc()
        # numpy's out-of-memory error subclasses MemoryError under another name (_ArrayMemoryError).
        reply = {"error": f"{type(error).__name__}: {error}", "error_type": type(error).__name__,
                 "memory_error": isinstance(error, MemoryError)}
        code = 1
    reply_stream.write(json.dumps(reply) + "\n")
    reply_stream.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
