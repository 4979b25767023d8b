"""Small argparse helpers shared by the command-line tools of this project.

Every command has a ``--help`` whose epilog shows a working example, a ``--json`` flag for
machine-readable output, and exits with status 2 and a one-line message (no traceback) on bad input.
Heavy libraries (torch, onnx, openvino) are imported inside the handlers, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

# Exit statuses: 2 for bad input (argparse uses 2 for usage errors too), 1 for a failed operation.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int | None]


class CliError(Exception):
    """A user-facing error: printed as ``<prog>: error: <message>`` and ended with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _with_example(description: str, example: str | None) -> dict[str, Any]:
    epilog = None
    if example:
        lines = [line.strip() for line in example.strip().splitlines()]
        epilog = "Example:\n" + "\n".join(f"  {line}" for line in lines)
    return {"description": description, "epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}


def make_parser(prog: str, description: str, example: str | None = None) -> argparse.ArgumentParser:
    """A top-level parser whose ``--help`` ends with an ``Example:`` block."""
    return argparse.ArgumentParser(prog=prog, **_with_example(description, example))


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
    """A subcommand with ``--json``, an ``Example:`` epilog, and ``handler(args) -> exit status``."""
    sub = subparsers.add_parser(name, help=summary, **_with_example(description or summary, example))
    add_json_flag(sub)
    sub.set_defaults(handler=handler)
    return sub


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


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


def error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, run the chosen handler, and turn bad input into a message and exit status 2."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help and usage errors
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        status = args.handler(args)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except CliError as problem:
        error(parser.prog, str(problem))
        return problem.exit_code
    except (ValueError, OSError) as problem:
        # InvalidArchitectureError is a ValueError; its message names the layer and field at fault.
        error(parser.prog, _describe(problem))
        return EXIT_USAGE
    except KeyboardInterrupt:
        error(parser.prog, "interrupted")
        return 130
    return EXIT_OK if status is None else int(status)


def _describe(problem: Exception) -> str:
    if isinstance(problem, OSError) and problem.filename is not None:
        reason = problem.strerror or str(problem)
        return f"{problem.filename}: {reason}"
    return str(problem)
