"""Argparse helpers shared by the four command-line tools: flexibert, protran, boshcode and gptran.

Every command behaves the same way where a user can tell:

- ``--help`` ends with an ``Example:`` block that works as written, and every subcommand has ``--json``
  for machine-readable output on stdout.
- An expected failure (a bad option, file or store, missing hardware or package, a full disk: any
  :class:`~flexibert.EdgetranError`, ``ValueError`` or ``OSError``) prints one line, ``<prog>: error:
  <problem and fix>``, with no usage block and no traceback, and exits with status 2. Anything else is
  a bug: one line that says so, status 1. ``--debug`` prints the traceback above that line (including
  the error it was raised from), for a bug report.
- Ctrl-C ends with status 130 and one line that says what was kept and the exact flag that continues
  (:func:`resumable`); a command with nothing to keep says to run it again.
- Progress goes to stderr through :class:`Progress`: a bar on a terminal, one plain line per step
  anywhere else (a log file, nohup, cron, a cluster scheduler, CI), so stdout holds only the result.

Heavy libraries (torch, onnx, openvino) are imported inside the handlers, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TextIO

from flexibert._errors import EdgetranError

# Exit statuses: 2 for every expected failure (argparse uses 2 for usage errors too), 1 for a bug (an
# error nobody anticipated) or a reader that went away, and 130 (128 + SIGINT) for Ctrl-C, as a shell
# reports a process that SIGINT ended.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# What Ctrl-C says where the command keeps nothing that a rerun could pick up.
NOTHING_KEPT = "nothing was kept; run the same command again"

Handler = Callable[[argparse.Namespace], int | None]


class CliError(Exception):
    """A user-facing error: printed as ``<prog>: error: <message>`` and ended with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(KeyboardInterrupt):
    """Ctrl-C inside :func:`resumable`, carrying the hint that tells the user how to continue."""

    def __init__(self, resume_hint: str) -> None:
        super().__init__(resume_hint)
        self.resume_hint = resume_hint


@contextmanager
def resumable(resume_hint: str) -> Iterator[None]:
    """Ctrl-C inside the block ends the command with status 130 and ``<prog>: interrupted; <hint>``.

    The hint names what was kept and the exact flag that continues, e.g. ``"every finished measurement is
    in runs/a.sqlite; run the same command with --resume to continue"``.
    """
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise Interrupted(resume_hint) from None


# -- parsers ----------------------------------------------------------------------------------------


def _with_example(description: str, example: str | None) -> dict[str, Any]:
    epilog = None
    if example:
        lines = [line.strip() for line in example.strip().splitlines()]
        epilog = "Example:\n" + "\n".join(f"  {line}" for line in lines)
    return {"description": description, "epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, like every other error of the tools.

    argparse prints the whole usage block above the error, which for ``protran profile`` is fifteen
    lines that bury the one that matters; the line names the command's ``--help`` instead.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def make_parser(prog: str, description: str, example: str | None = None) -> argparse.ArgumentParser:
    """A top-level parser with ``--debug`` whose ``--help`` ends with an ``Example:`` block."""
    parser = _Parser(prog=prog, **_with_example(description, example))
    add_debug_flag(parser)
    return parser


def add_subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    return subparsers


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    summary: str,
    example: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand with ``--json``, ``--debug``, an ``Example:`` epilog, and ``handler(args) -> exit status``."""
    sub = subparsers.add_parser(name, help=summary, **_with_example(description or summary, example))
    add_json_flag(sub)
    # SUPPRESS: a subcommand without --debug must not reset the top-level `prog --debug COMMAND`.
    add_debug_flag(sub, default=argparse.SUPPRESS)
    sub.set_defaults(handler=handler)
    return sub


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def add_debug_flag(parser: argparse.ArgumentParser, default: Any = False) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on an error, also print the traceback")


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} must be at least {least}")
    return value


def _finite_float(text: str, accept: Callable[[float], bool], needs: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not accept(value) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be {needs}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _finite_float(text, lambda value: value > 0, "a positive number")


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _finite_float(text, lambda value: value >= 0, "a finite number >= 0")


def comma_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """argparse type: a comma-separated list whose items must be in ``choices``."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if not items or unknown:
            raise argparse.ArgumentTypeError(
                f"'{text}': choose one or more of {', '.join(choices)} (comma-separated)"
            )
        return list(dict.fromkeys(items))

    return parse


def cpu_list(text: str) -> tuple[int, ...]:
    """argparse type: CPU indices like ``0,2-3`` -> (0, 2, 3); whether they exist is checked on use."""
    cpus: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            cpus.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CPU indices like 0,1 or 0-3, got {text!r}") from None
    if not cpus or min(cpus) < 0:
        raise argparse.ArgumentTypeError(f"no CPU (or a negative one) in {text!r}")
    return tuple(cpus)


def pin_process(cpus: Iterable[int]) -> None:
    """Pin this process, and every thread it already has, to ``cpus`` (Linux; the caller checks that the
    OS has ``sched_setaffinity`` and that the CPUs are available).

    Linux applies ``sched_setaffinity`` to one thread, and a new thread inherits its creator's mask; so
    this runs before a runtime starts its thread pools, and also pins the threads already there
    (``/proc/self/task``) in case an import started one.
    """
    mask = set(cpus)
    os.sched_setaffinity(0, mask)
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = []
    for tid in threads:
        try:
            os.sched_setaffinity(tid, mask)
        except OSError:  # a thread that has just ended
            continue


def one_of(names: Sequence[str]) -> str:
    """``a, b or c``: a choice list for help text, taken from the constant that defines it."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


# -- output -------------------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def to_json(data: Any) -> str:
    """Indented JSON; a list of records gets one compact record per line, so long lists stay short."""
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        rows = ",\n".join(f"  {json.dumps(row, default=_json_default)}" for row in data)
        return f"[\n{rows}\n]"
    return json.dumps(data, indent=2, default=_json_default)


def print_json(data: Any, stream: TextIO | None = None) -> None:
    print(to_json(data), file=stream or sys.stdout)


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str], stream: TextIO | None = None) -> None:
    """Left-aligned columns separated by two spaces."""
    cells = [[str(cell) for cell in header]] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=stream or sys.stdout)


def one_line(message: str) -> str:
    """``message`` on one printable line: runs of whitespace become one space (a YAML parser's error
    spans three lines; a stderr tail many) and other control characters, which may come from the
    user's own input, are escaped (``\\x1e``), so a log or a script sees exactly one line per failure."""
    text = " ".join(message.split())
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def error(prog: str, message: str) -> None:
    """``<prog>: error: <message>`` on stderr, on one line (:func:`one_line`)."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)


# -- progress -----------------------------------------------------------------------------------------


class Progress:
    """How far a command is through ``total`` steps, on stderr.

    On a terminal it is a tqdm bar. Anywhere else each step prints one line, ``<label> i/N  elapsed
    H:MM:SS  ETA H:MM:SS  <detail>``: tqdm hides itself there (``disable=None``), which left a run under
    nohup, cron, a scheduler or CI silent for hours, while a log with one line per step shows how far
    the run got and when it will end. ``total`` may be a ceiling (a sample budget): the ETA is then the
    longest the run can still take.
    """

    def __init__(self, total: int, label: str, unit: str = "step", stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self._started_s = time.monotonic()
        self._done_before = 0  # steps finished by an earlier process: they took no time in this one
        self._bar = _terminal_bar(total, label, unit, self.stream) if _is_terminal(self.stream) else None

    def resume_from(self, done: int) -> None:
        """``done`` steps were finished before this process started (a resumed run)."""
        self.done = self._done_before = done
        if self._bar is not None:
            # tqdm's rate and ETA count from `initial`, so earlier steps do not look instantaneous
            self._bar.n = self._bar.initial = self._bar.last_print_n = done
            self._bar.refresh()

    def step(self, detail: str = "", done: int | None = None, keep: bool = False) -> None:
        """A step finished; ``done`` is the count so far where a step is not exactly one more. ``keep``:
        on a terminal, also print ``detail`` as a line above the bar (a step worth a line of history)."""
        self.done = self.done + 1 if done is None else done
        if self._bar is None:
            print(self.line(detail), file=self.stream, flush=True)
            return
        if keep:
            self._bar.write(detail, file=self.stream)
        self._bar.n = self.done
        self._bar.set_postfix_str("" if keep else detail, refresh=True)

    def note(self, detail: str) -> None:
        """New detail between steps: shown on the bar; a log gets it with the next step."""
        if self._bar is not None:
            self._bar.set_postfix_str(detail, refresh=True)

    def write(self, line: str) -> None:
        """A line of its own (an event worth keeping), printed above the bar on a terminal."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def elapsed_s(self) -> float:
        return time.monotonic() - self._started_s

    def eta_s(self) -> float | None:
        """Seconds left at this process's pace so far; None before its first step."""
        left = max(self.total - self.done, 0)
        if left == 0:
            return 0.0
        finished_here = self.done - self._done_before
        return self.elapsed_s() / finished_here * left if finished_here > 0 else None

    def line(self, detail: str = "") -> str:
        eta_s = self.eta_s()
        eta = "?" if eta_s is None else _clock(eta_s)
        counts = f"{self.label} {self.done}/{self.total}  elapsed {_clock(self.elapsed_s())}  ETA {eta}"
        return f"{counts}  {detail}".rstrip()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _terminal_bar(total: int, label: str, unit: str, stream: TextIO):
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit=unit, file=stream, dynamic_ncols=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


# -- running a command ----------------------------------------------------------------------------------


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, run the chosen handler, and turn expected failures into one line and an exit status."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help and usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    debug = getattr(args, "debug", False)
    try:
        with warnings.catch_warnings():  # restores the caller's warning display afterwards
            warnings.showwarning = _warning_printer(parser.prog)
            status = args.handler(args)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt as interrupt:
        _print_traceback(debug)
        print(f"{parser.prog}: interrupted; {getattr(interrupt, 'resume_hint', NOTHING_KEPT)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CliError as problem:
        _print_traceback(debug)
        error(parser.prog, str(problem))
        return problem.exit_code
    except (EdgetranError, ValueError, OSError) as problem:
        # The message names the problem and the fix: a bad option, file or store (InvalidArchitectureError
        # names the layer and field at fault), a missing package (the pip command), a full disk.
        _print_traceback(debug)
        error(parser.prog, _describe(problem))
        return EXIT_USAGE
    except RecursionError:
        _print_traceback(debug)
        error(parser.prog, "an input is nested too deeply to read (more than about a thousand levels); "
                           "no edgetran file nests deeper than a few")
        return EXIT_USAGE
    except MemoryError:
        _print_traceback(debug)
        error(parser.prog, "out of memory; give a smaller input, or run where more memory is free")
        return EXIT_USAGE
    except Exception as problem:  # a bug: still one line, and the way to a useful report
        _print_traceback(debug)
        error(parser.prog, f"internal error ({type(problem).__name__}: {problem}); this is a bug: run the "
                           "same command with --debug and report the traceback")
        return EXIT_FAILURE
    return EXIT_OK if status is None else int(status)


def _warning_printer(prog: str) -> Callable[..., None]:
    """Python's warnings (frequency scaling while measuring, say) as ``<prog>: warning: <message>``:
    one line, like the tools' errors, instead of a file name, a line number and a line of source."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        print(f"{prog}: warning: {one_line(str(message))}", file=file or sys.stderr)

    return show


def _print_traceback(debug: bool) -> None:
    """With ``--debug``, the traceback of the error being handled, and of the one it was raised from,
    which ``raise ... from None`` hides from users."""
    if not debug:
        return
    problem = sys.exc_info()[1]
    if problem is not None:
        problem.__suppress_context__ = False
        traceback.print_exception(problem, file=sys.stderr)


def _describe(problem: Exception) -> str:
    if isinstance(problem, OSError) and problem.errno in _DISK_FULL:
        where = f"{problem.filename}: " if problem.filename is not None else ""
        return (f"{where}no space left on the disk (or over the file-size limit); free some space and run "
                "the same command again: what was already stored is unchanged")
    if isinstance(problem, OSError) and problem.filename is not None:
        reason = problem.strerror or str(problem)
        return f"{problem.filename}: {reason}"
    return str(problem) or type(problem).__name__


# ENOSPC (no space left), EDQUOT (quota) and EFBIG (over RLIMIT_FSIZE): to the user, a full disk.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
