"""Oracles outside boshcode: a process that speaks JSON lines, or a Python object named ``module:factory``.

The search only needs an oracle to EVALUATE (architecture, device) pairs; with :class:`CommandOracle`
that evaluation can be anything a program does — fine-tune the model and time it on a board, look it
up in a table, ask a cluster — written in any language.

The protocol (JSON lines; one JSON value per line, UTF-8, every line ended by ``\\n``)
------------------------------------------------------------------------------------------------

1. The searcher starts the command once (a string is split like a shell would, but no shell runs it)
   and reads the oracle's **first line on stdout**, its header::

       {"devices": ["rpi", "a100"],
        "bounds": {"accuracy": [min, max], "latency_s": [min, max], "energy_j": [min, max],
                   "peak_power_w": [min, max]}}

   ``devices`` are the names the oracle evaluates on (distinct, non-empty strings). ``bounds`` are the
   smallest and largest value of each measure the oracle can give, over every device: they normalise
   P and are the same for every method compared (:class:`boshcode._objective.Bounds`). A measure's
   bounds may be ``null``: the oracle cannot give it, and P can only be searched with its weight 0.
   Accuracy is in whatever scale the bounds use; latency in seconds, energy in joules and peak power
   in watts per sequence, as in ProTran's profiles.

2. For each evaluation the searcher writes one line on the oracle's **stdin**::

       {"device": "rpi", "model_dict": {"l": 2, "o": [[...], [...]], "h": [256, 768], "f": [[...], [...]]}}

   (``model_dict`` is ``flexibert.ArchSpec.to_model_dict()``; ``ArchSpec.from_model_dict`` reads it
   back) and waits for one line on its **stdout**::

       {"accuracy": a, "latency_s": l, "energy_j": e, "peak_power_w": p}

   ``accuracy`` and every measure whose bounds are not null must be there; every number must be
   finite, and the costs (latency, energy, peak power) non-negative. A hardware measure may be ``null``
   when the oracle could not measure it for this pair (the pair then counts as failed wherever P
   needs that measure); a measure whose bounds are ``null`` may be left out (its values are ignored:
   without bounds they cannot enter P); other keys are ignored, in the header too (room for an oracle's
   own notes). If the pair cannot be evaluated at all, answer::

       {"error": "why"}

   The pair then scores P_MIN (the search learns to avoid it) and a warning names it. An oracle that
   answers errors to :data:`MAX_CONSECUTIVE_ERRORS` evaluations in a row is broken, not unlucky: the
   search stops with :class:`~boshcode._oracle.OracleError`.

3. When the search is over the searcher closes the oracle's stdin: the oracle should then exit. One
   that is still running :data:`CLOSE_GRACE_S` seconds later is terminated (then killed).

Everything else the oracle prints goes to **stderr** (logs, progress bars): stdout carries the
protocol alone, so a stray ``print`` there is an error. Flush stdout after every line (Python:
``print(..., flush=True)``; the searcher also sets ``PYTHONUNBUFFERED=1`` for it). Its stderr is read
in the background and its last lines are quoted when it crashes (``echo_stderr=True`` also shows it
as it runs).

Failures stop the search with an :class:`~boshcode._oracle.OracleError` naming the problem and the
fix: a command that cannot start, a process that exits (its exit code and last stderr lines), no
header within ``startup_timeout_s`` (default :data:`DEFAULT_STARTUP_TIMEOUT_S`, ten minutes, for an
oracle that loads data or models first), no answer within ``timeout_s`` (default
:data:`DEFAULT_TIMEOUT_S`, an hour, for an evaluation that trains a model; the oracle is then
killed), a line that is no JSON object, a missing or non-numeric field, an invalid header. The
search can then be resumed from what it saved.

A minimal oracle (accuracy and latency from a formula; save as ``my_oracle.py`` and search with
``CommandOracle("python my_oracle.py")``)::

    import json
    import sys

    header = {"devices": ["cpu"],
              "bounds": {"accuracy": [0.6, 0.9], "latency_s": [0.001, 1.0], "energy_j": None, "peak_power_w": None}}
    print(json.dumps(header), flush=True)
    for line in sys.stdin:  # one evaluation per line; the loop ends when the search closes stdin
        request = json.loads(line)
        model = request["model_dict"]
        try:
            size = sum(h * len(f) for h, f in zip(model["h"], model["f"])) / 1000
            answer = {"accuracy": 0.6 + 0.3 * size / (size + 5), "latency_s": size / 100,
                      "energy_j": None, "peak_power_w": None}
        except Exception as error:  # this pair failed; the search goes on
            answer = {"error": str(error)}
        print(json.dumps(answer), flush=True)

Python objects
--------------

:func:`load_oracle_object` loads ``module:factory`` (the current directory first on the import path,
like ``python -m``): the attribute is called with no arguments if it is callable (a class or a
function) and must give an object with ``devices``, ``bounds`` (a :class:`Bounds` or a dict like the
header's) and ``predict(specs, device)`` returning ``{measure: {"mean": array, "std": array} |
None}`` (see :class:`boshcode._oracle.Oracle`). It comes back wrapped in :class:`ObjectOracle`, which
checks the shape of every prediction.
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import json
import math
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from boshcode._objective import HARDWARE_TERMS, Bounds
from boshcode._oracle import MEASURES, OracleError, Prediction
from flexibert import ArchSpec, model_hash

#: How long one evaluation may take (seconds) before the oracle counts as hung: an hour, since an
#: evaluation may fine-tune a model.
DEFAULT_TIMEOUT_S = 3600.0
#: How long the oracle may take to print its header (seconds): it may load data or models first.
DEFAULT_STARTUP_TIMEOUT_S = 600.0
#: This many error answers in a row mean a broken oracle rather than unlucky pairs: the search stops.
MAX_CONSECUTIVE_ERRORS = 5
#: How long :meth:`CommandOracle.close` waits for the oracle to exit after closing its stdin.
CLOSE_GRACE_S = 5.0
#: How much of the oracle's stderr is kept (its tail, quoted when it crashes) and how many lines are quoted.
STDERR_TAIL_BYTES = 16384
STDERR_TAIL_LINES = 5

_HEADER_FORM = '{"devices": [...], "bounds": {"accuracy": [min, max], "latency_s": [min, max] | null, ...}}'
_ANSWER_FORM = '{"accuracy": a, "latency_s": l, "energy_j": e | null, "peak_power_w": p | null} or {"error": "why"}'
_QUOTED_CHARS = 200  # how much of an offending line a message quotes


class _Malformed(ValueError):
    """A line that breaks the protocol (the message says how)."""


# -- the process and its streams ------------------------------------------------------------------------------------


def _argv(command: str | Sequence[str]) -> list[str]:
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    if not argv:
        raise ValueError("the oracle command is empty; give a program and its arguments, e.g. 'python my_oracle.py'")
    return argv


def _start(argv: list[str]) -> subprocess.Popen:
    shown = shlex.join(argv)
    # A Python oracle that forgets to flush would otherwise hold its answers back until it exits.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except FileNotFoundError:
        raise OracleError(f"cannot start the oracle '{shown}': {argv[0]} not found; give the path of an executable "
                          "or run a script with its interpreter ('python my_oracle.py')") from None
    except PermissionError:
        raise OracleError(f"cannot start the oracle '{shown}': {argv[0]} is not executable; make it executable "
                          f"(chmod +x {shlex.quote(argv[0])}) or run it with its interpreter") from None
    except OSError as error:  # e.g. a script without a #! line (exec format error)
        raise OracleError(f"cannot start the oracle '{shown}': {error.strerror or error}; check that it is a "
                          "program (a script needs a #! line, or run it with its interpreter)") from None


def _pump_lines(stream: IO[bytes], lines: queue.Queue) -> None:
    """Move stdout lines to ``lines`` (None at the end), so the searcher can wait for one with a timeout."""
    try:
        for line in iter(stream.readline, b""):
            lines.put(line)
    except (OSError, ValueError):  # the pipe was closed under us: same as the end
        pass
    finally:
        lines.put(None)
        with contextlib.suppress(OSError):
            stream.close()  # this thread is its only reader


class _StderrTail:
    """The last bytes the oracle wrote on stderr. Read by a daemon thread, so an oracle that logs a
    lot never blocks on a full pipe (nobody else reads it), and bounded, so it never grows."""

    def __init__(self, stream: IO[bytes], echo: bool) -> None:
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(stream, echo), name="oracle-stderr", daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes], echo: bool) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read1(4096):  # type: ignore[attr-defined]
                with self._lock:
                    self._tail += chunk
                    del self._tail[:-STDERR_TAIL_BYTES]
                if echo:
                    sys.stderr.write(decoder.decode(chunk))
                    sys.stderr.flush()
        with contextlib.suppress(OSError):
            stream.close()  # this thread is its only reader

    def lines(self, wait_s: float = 1.0) -> list[str]:
        """Its last non-empty lines (waiting up to ``wait_s`` for the rest of a dead process's output)."""
        self._thread.join(wait_s)
        with self._lock:
            text = self._tail.decode("utf-8", errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return [_clip(line) for line in lines[-STDERR_TAIL_LINES:]]


def _shutdown(process: subprocess.Popen, grace_s: float) -> None:
    """End the oracle: EOF on its stdin (a well-behaved oracle exits), then SIGTERM, then SIGKILL."""
    with contextlib.suppress(OSError, ValueError):
        process.stdin.close()  # type: ignore[union-attr]
    for step in (None, process.terminate, process.kill):
        if step is not None:
            with contextlib.suppress(OSError):
                step()
        try:
            process.wait(timeout=grace_s if step is None else 1.0)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait()  # reap it: killed, it cannot linger


def _clip(text: str) -> str:
    return text if len(text) <= _QUOTED_CHARS else text[:_QUOTED_CHARS] + "..."


def _silence_message(awaited: str, timeout_s: float) -> str:
    if awaited == "header":
        return (f"the oracle printed no header within {timeout_s:g} s (startup_timeout_s) and was stopped; its first "
                f"line on stdout must be {_HEADER_FORM}, flushed (raise startup_timeout_s if it loads for longer)")
    return (f"the oracle gave no {awaited} within {timeout_s:g} s (timeout_s) and was stopped; it must write one "
            "line on stdout per request and flush it (raise timeout_s if one evaluation takes longer)")


def _pair(spec: ArchSpec, device: str) -> str:
    """How messages name a pair: the model hash (as ``CodesignProblem.describe`` reports it) and the device."""
    return f"model {model_hash(spec)} ({spec.num_layers} layers) on {device}"


# -- the protocol's lines -------------------------------------------------------------------------------------------


def _json_object(line: str, what: str, form: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        raise _Malformed(f"{what} is not JSON: {_clip(line)!r}; it must be {form} on one line of stdout "
                         "(print logs to stderr, not stdout)") from None
    if not isinstance(data, dict):
        raise _Malformed(f"{what} is a JSON {type(data).__name__}, not an object: {_clip(line)!r}; it must be {form}")
    return data


def _parse_header(line: str) -> tuple[list[str], Bounds]:
    data = _json_object(line, "the oracle's header (its first line)", _HEADER_FORM)
    missing = [key for key in ("devices", "bounds") if key not in data]
    if missing:
        raise _Malformed(f"the oracle's header lacks {', '.join(missing)}: {_clip(line)!r}; it must be {_HEADER_FORM}")
    devices = data["devices"]
    if (not isinstance(devices, list) or not devices
            or not all(isinstance(d, str) and d for d in devices) or len(set(devices)) != len(devices)):
        raise _Malformed(f"the oracle's header gives devices {_clip(repr(devices))}; they must be a non-empty list "
                         "of distinct, non-empty names")
    try:
        bounds = Bounds.from_json(data["bounds"])
    except ValueError as error:
        raise _Malformed(f"the oracle's header has invalid bounds: {error}") from None
    return devices, bounds


def _number(data: dict[str, Any], name: str, line: str) -> float:
    """The finite number ``data[name]`` (NaN for null)."""
    value = data[name]
    if value is None and name != "accuracy":
        return math.nan
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not _finite(value):
        allowed = "a finite number" if name == "accuracy" else "a finite number or null"
        raise _Malformed(f"the oracle's answer gives {name} = {_clip(json.dumps(value))}, not {allowed}: "
                         f"{_clip(line)!r}; answer {{\"error\": \"why\"}} for a pair it cannot evaluate")
    if name != "accuracy" and value < 0:
        raise _Malformed(f"the oracle's answer gives a negative {name} ({value:g}): {_clip(line)!r}; "
                         "costs are non-negative")
    return float(value)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float
        return False


def _parse_answer(line: str, measures: list[str]) -> dict[str, float] | str:
    """The answer's values of ``measures`` (NaN for null), or the message of an error answer."""
    data = _json_object(line, "the oracle's answer", _ANSWER_FORM)
    if data.get("error") is not None:  # {"error": null} beside the values is no error
        return str(data["error"])
    missing = [name for name in measures if name not in data]
    if missing:
        raise _Malformed(f"the oracle's answer lacks {', '.join(missing)}: {_clip(line)!r}; it must be {_ANSWER_FORM}")
    return {name: _number(data, name, line) for name in measures}


# -- the oracle -----------------------------------------------------------------------------------------------------


class CommandOracle:
    """An oracle answered by a process speaking the JSON-lines protocol of this module's docstring.

    ``command``: a program and its arguments (a string is split with :func:`shlex.split`; no shell).
    ``timeout_s``: the longest one evaluation may take before the oracle counts as hung and is killed
    (default :data:`DEFAULT_TIMEOUT_S`, an hour). ``startup_timeout_s``: the longest it may take to print
    its header (default :data:`DEFAULT_STARTUP_TIMEOUT_S`, ten minutes). ``echo_stderr``: also copy its
    stderr to ours as it comes (its tail is kept for error messages either way).

    The process starts here and lives until :meth:`close` (or the end of a ``with`` block, or of the
    Python process: it is never left running behind). Values are taken as exact (std 0).
    """

    def __init__(self, command: str | Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                 startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S, *, echo_stderr: bool = False) -> None:
        for name, value in (("timeout_s", timeout_s), ("startup_timeout_s", startup_timeout_s)):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.argv = _argv(command)
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        #: Evaluations asked of the process so far.
        self.n_calls = 0
        self._errors_in_row = 0
        self._failure: str | None = None
        self._process = _start(self.argv)
        # The finalizer holds the process, not self: it runs at close(), on garbage collection or at exit.
        self._finalizer = weakref.finalize(self, _shutdown, self._process, CLOSE_GRACE_S)
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=_pump_lines, args=(self._process.stdout, self._lines), name="oracle-stdout",
                         daemon=True).start()
        self._stderr = _StderrTail(self._process.stderr, echo_stderr)  # type: ignore[arg-type]
        line = self._read_line(self.startup_timeout_s, "header", "before printing its header")
        try:
            self._devices, self._bounds = _parse_header(line)
        except _Malformed as error:
            raise self._fail(str(error)) from None

    # -- the Oracle protocol ------------------------------------------------------------------------------------------

    @property
    def devices(self) -> list[str]:
        return list(self._devices)

    @property
    def bounds(self) -> Bounds:
        return self._bounds

    def measures(self, device: str) -> list[str]:
        """The hardware measures the oracle gives (those whose bounds in its header are not null)."""
        return [name for name in HARDWARE_TERMS if getattr(self._bounds, name) is not None]

    def predict(self, specs: Sequence[ArchSpec], device: str) -> Prediction:
        """Ask the process for each pair in turn; NaN rows for pairs it answered an error to."""
        if self._failure is not None:
            raise OracleError(f"the oracle has stopped: {self._failure}")
        if device not in self._devices:
            raise OracleError(f"device {device!r} is not one of the oracle's devices {self._devices} (its header "
                              "lists them); search over those, or add it to the header")
        rows = []
        for spec in specs:  # a loop, not a comprehension: the warnings' stacklevel counts frames
            rows.append(self._evaluate(spec, device))
        prediction: Prediction = {}
        for name in MEASURES:
            if getattr(self._bounds, name) is None:  # the oracle cannot give it (no bounds: P cannot use it)
                prediction[name] = None
                continue
            mean = np.array([row[name] for row in rows], dtype=float).reshape(len(rows))
            prediction[name] = {"mean": mean, "std": np.zeros_like(mean)}
        return prediction

    # -- life cycle ---------------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Close the oracle's stdin and wait up to ``grace_s`` for it to exit, then terminate (and kill) it.
        Safe to call again."""
        if self._finalizer.detach() is not None:
            _shutdown(self._process, grace_s)

    def __enter__(self) -> CommandOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one evaluation -----------------------------------------------------------------------------------------------

    def _evaluate(self, spec: ArchSpec, device: str) -> dict[str, float]:
        pair = _pair(spec, device)
        self._check_no_stray_line()
        request = json.dumps({"device": device, "model_dict": spec.to_model_dict()}) + "\n"
        try:
            self._process.stdin.write(request.encode("utf-8"))  # type: ignore[union-attr]
            self._process.stdin.flush()  # type: ignore[union-attr]
        except (OSError, ValueError):  # a broken pipe: it has exited
            raise self._fail(self._exit_message(f"before reading the request for {pair}")) from None
        self.n_calls += 1
        line = self._read_line(self.timeout_s, f"answer to the evaluation of {pair}", f"while evaluating {pair}")
        try:
            answer = _parse_answer(line, ["accuracy", *self.measures(device)])
        except _Malformed as error:
            raise self._fail(f"{error} (evaluating {pair})") from None
        if isinstance(answer, str):
            return self._error_answer(answer, pair)
        self._errors_in_row = 0
        return answer

    def _error_answer(self, message: str, pair: str) -> dict[str, float]:
        self._errors_in_row += 1
        if self._errors_in_row >= MAX_CONSECUTIVE_ERRORS:
            self._errors_in_row = 0  # a caller that goes on gets MAX_CONSECUTIVE_ERRORS more tries
            raise OracleError(f"the oracle answered errors to {MAX_CONSECUTIVE_ERRORS} evaluations in a row; the "
                              f"last: {_clip(message)} ({pair}); fix its evaluation (its stderr may say more)")
        warnings.warn(f"the oracle could not evaluate {pair}: {_clip(message)}; the pair scores P_MIN", stacklevel=4)
        return {name: math.nan for name in MEASURES}

    def _check_no_stray_line(self) -> None:
        """A line waiting before a request answers nothing: the oracle writes more than the protocol on stdout."""
        try:
            line = self._lines.get_nowait()
        except queue.Empty:
            return
        if line is None:
            raise self._fail(self._exit_message("between evaluations"))
        text = line.decode("utf-8", errors="replace").strip()
        raise self._fail(f"the oracle wrote a line on stdout that answers no request: {_clip(text)!r}; it must write "
                         "exactly one line per request there (print logs to stderr)")

    def _read_line(self, timeout_s: float, awaited: str, during: str) -> str:
        """The next non-blank stdout line within ``timeout_s``; OracleError (and the process killed) otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise self._fail(_silence_message(awaited, timeout_s)) from None
            if line is None:
                raise self._fail(self._exit_message(during))
            text = line.decode("utf-8", errors="replace").strip()
            if text:
                return text

    def _exit_message(self, during: str) -> str:
        try:  # stdout is closed: the process has exited or is about to
            code = self._process.wait(timeout=CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:
            return f"the oracle closed its stdout {during} but did not exit; keep stdout open until stdin closes"
        how = f"exited with code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(-code).name}"
        lines = self._stderr.lines()
        said = f"the last lines of its stderr: {' | '.join(lines)}" if lines else "it wrote nothing on stderr"
        return (f"the oracle {how} {during}; {said}; fix it (run '{shlex.join(self.argv)}' by hand to see the "
                "error) and resume the search")

    def _fail(self, message: str) -> OracleError:
        """Stop the process (its stream is out of step or dead: nothing it says next can be trusted) and
        remember why, so that later calls say so."""
        self._failure = message
        self.close(grace_s=0.0)
        return OracleError(message)


# -- Python objects -------------------------------------------------------------------------------------------------


_PROTOCOL = ("devices", "bounds", "predict")
_PROTOCOL_FORM = ("an oracle has devices (a list of names), bounds (a Bounds or {\"accuracy\": [min, max], ...}) "
                  "and predict(specs, device)")


class ObjectOracle:
    """A Python oracle object, checked: its devices and bounds once (``bounds`` may be a dict, read with
    :meth:`Bounds.from_json`), the shape of every prediction. Any other attribute (``measures``,
    ``extrapolated``, ``close``...) is the object's own."""

    def __init__(self, target: Any, name: str | None = None) -> None:
        self.name = name or type(target).__name__
        missing = [attr for attr in _PROTOCOL if not _has(target, attr)]
        if missing or not callable(target.predict):
            lacks = ", ".join(missing) if missing else "a callable predict"
            raise ValueError(f"{self.name} gives an object of type {type(target).__name__}, which is no oracle: it "
                             f"lacks {lacks}; "
                             f"{_PROTOCOL_FORM}")
        self._target = target
        self._devices = _checked_devices(target.devices, self.name)
        self._bounds = _checked_bounds(target.bounds, self.name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or "_target" not in self.__dict__:
            raise AttributeError(attr)
        return getattr(self._target, attr)

    @property
    def target(self) -> Any:
        return self._target

    @property
    def devices(self) -> list[str]:
        return list(self._devices)

    @property
    def bounds(self) -> Bounds:
        return self._bounds

    def measures(self, device: str) -> list[str]:
        """The object's own ``measures(device)``, else the measures it has bounds for."""
        getter = getattr(self._target, "measures", None)
        if getter is not None:
            return list(getter(device))
        return [m for m in HARDWARE_TERMS if getattr(self._bounds, m) is not None]

    def predict(self, specs: Sequence[ArchSpec], device: str) -> Prediction:
        result = self._target.predict(specs, device)
        if not isinstance(result, dict):
            raise OracleError(f"{self.name}.predict returned a {type(result).__name__}; it must return "
                              "{measure: {'mean': array, 'std': array} | None}")
        return {m: _checked_measure(result.get(m), m, len(specs), self.name) for m in MEASURES}

    def close(self) -> None:
        closer = getattr(self._target, "close", None)
        if closer is not None:
            closer()

    def __enter__(self) -> ObjectOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _has(target: Any, attr: str) -> bool:
    try:
        getattr(target, attr)
    except Exception:  # a property that raises counts as missing; the message says which
        return False
    return True


def _checked_devices(devices: Any, name: str) -> list[str]:
    if isinstance(devices, str) or not isinstance(devices, Sequence):
        raise ValueError(f"{name} gives devices {_clip(repr(devices))}; they must be a list of names")
    devices = list(devices)
    if not devices or not all(isinstance(d, str) and d for d in devices) or len(set(devices)) != len(devices):
        raise ValueError(f"{name} gives devices {_clip(repr(devices))}; they must be a non-empty list of distinct, "
                         "non-empty names")
    return devices


def _checked_bounds(bounds: Any, name: str) -> Bounds:
    if isinstance(bounds, Bounds):
        return bounds
    if isinstance(bounds, dict):
        try:
            return Bounds.from_json(bounds)
        except ValueError as error:
            raise ValueError(f"{name} gives invalid bounds: {error}") from None
    raise ValueError(f"{name} gives bounds of type {type(bounds).__name__}; give a boshcode Bounds or "
                     "{\"accuracy\": [min, max], \"latency_s\": [min, max] | None, ...}")


def _checked_measure(entry: Any, measure: str, n: int, name: str) -> dict[str, np.ndarray] | None:
    if entry is None:
        if measure == "accuracy":
            raise OracleError(f"{name}.predict gave no accuracy; every prediction needs "
                              "'accuracy': {'mean': array, 'std': array}")
        return None
    if not isinstance(entry, dict) or "mean" not in entry:
        raise OracleError(f"{name}.predict gave {measure} as a {type(entry).__name__}; give "
                          "{'mean': array, 'std': array} (std may be left out: 0) or None")
    mean = np.asarray(entry["mean"], dtype=float).reshape(-1)
    std = np.asarray(entry.get("std", np.zeros(n)), dtype=float).reshape(-1)
    if mean.shape != (n,) or std.shape != (n,):
        raise OracleError(f"{name}.predict gave {mean.size} means and {std.size} stds of {measure} for {n} "
                          "architectures; give one of each per architecture")
    return {"mean": mean, "std": std}


def load_oracle_object(target: str) -> ObjectOracle:
    """The oracle named by ``module:factory`` (``factory`` may be a dotted path: ``module:Class.make``).

    The module is imported with the current directory first on the import path (like ``python -m``;
    it stays there, so the module can import its neighbours later). A callable is called with no
    arguments; the result (or a non-callable attribute itself) must have ``devices``, ``bounds`` and
    ``predict``. Any failure raises ValueError with one line saying what and how to fix it.
    """
    module_name, attribute = _split_target(target)
    module = _import(module_name)
    found = _attribute(module, module_name, attribute)
    is_instance = not isinstance(found, type) and all(_has(found, attr) for attr in _PROTOCOL)
    if callable(found) and not is_instance:
        try:
            found = found()
        except Exception as error:
            raise ValueError(f"the oracle factory {target} raised {type(error).__name__}: {_clip(str(error))}") \
                from error
    return ObjectOracle(found, name=target)


def _split_target(target: str) -> tuple[str, str]:
    module_name, colon, attribute = str(target).partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"an oracle object is named 'module:factory' (e.g. 'my_oracle:make'), got {target!r}")
    if module_name.endswith(".py"):
        raise ValueError(f"give the module name without .py: '{module_name[:-3]}:{attribute}', not {target!r}")
    parts = module_name.split(".") + attribute.split(".")
    if not all(part.isidentifier() for part in parts):
        raise ValueError(f"an oracle object is named 'module:factory' with Python names (dots allowed), "
                         f"got {target!r}")
    return module_name, attribute


def _import(module_name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a module written a moment ago must be found
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise ValueError(f"no module named {module_name!r} in the current directory ({cwd}) or on the import "
                             "path; run from the directory that holds it, or install it") from None
        raise ValueError(f"importing the oracle module {module_name!r} failed: {error} (a module it imports is "
                         "missing; install it)") from error
    except Exception as error:
        raise ValueError(f"importing the oracle module {module_name!r} failed: {type(error).__name__}: "
                         f"{_clip(str(error))}") from error


def _attribute(module: Any, module_name: str, attribute: str) -> Any:
    found = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r} (no {part!r}); name a factory "
                             "or an oracle object defined in it") from None
    return found
