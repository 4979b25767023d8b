"""Fixtures for the power-meter tests: recorded tool output, fake sysfs trees and fake tools."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def recorded(shared_data: Path) -> Path:
    path = shared_data / "recorded"
    if not path.is_dir():
        pytest.skip(f"recorded tool output not found at {path}")
    return path


@pytest.fixture
def sysfs_source(recorded: Path):
    """Files of one source of a recorded sysfs JSON: ``sysfs_source("rapl_powercap_layouts", id)``."""

    def load(document: str, source_id: str | None = None) -> dict[str, object]:
        folder = "ina219" if document.startswith("raspberry") else "sysfs"
        data = json.loads((recorded / folder / f"{document}.json").read_text())
        if source_id is None:
            return data
        (source,) = [s for s in data["sources"] if s["id"] == source_id]
        return source

    return load


@pytest.fixture
def fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install an executable ``name`` on PATH that writes ``records`` forever (like a sampling tool),
    ``period_s`` apart, each followed by ``delimiter``; extra ``prelude`` Python runs first."""

    def install(
        name: str,
        records: list[bytes],
        delimiter: bytes = b"\n",
        period_s: float = 0.02,
        prelude: str = "",
        repeat: bool = True,
    ) -> Path:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        data = bin_dir / f"{name}.records.json"
        data.write_text(json.dumps([r.decode("latin-1") for r in records]))
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable}\n"
            + textwrap.dedent(
                f"""
                import json, sys, time
                PRELUDE
                records = [r.encode("latin-1") for r in json.load(open({str(data)!r}))]
                out = sys.stdout.buffer
                while True:
                    for record in records:
                        out.write(record + {delimiter!r})
                        out.flush()
                        time.sleep({period_s})
                    if not {repeat}:
                        break
                """
            ).replace("PRELUDE", prelude)
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        return script

    return install
