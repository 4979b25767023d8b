"""What every benchmark does last: stamp the run and write its results folder.

Not a benchmark itself. A benchmark builds its ``meta`` (with :func:`utc_now` as its date), its result
rows and its report, and :func:`write_results` writes ``results.json`` and ``README.md`` into the
results folder and prints the report.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any


def utc_now() -> str:
    """The date stamp of a results folder, e.g. ``2026-12-05 01:55 UTC``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_results(out: Path, meta: dict[str, Any], results: list[Any], report: str, *, indent: int = 1) -> None:
    """``out/results.json`` (``{"meta", "results"}``) and ``out/README.md`` (``report``), then the report
    on standard output."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=indent) + "\n")
    (out / "README.md").write_text(report)
    print(report)
