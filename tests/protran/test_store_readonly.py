"""Reading a run store changes nothing on disk: no ``-wal`` or ``-shm`` file appears beside it and its
bytes stay the same, whether it is a committed profile or a store a profiler wrote in WAL mode."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from protran._store import RunStore, load_rows
from tests.protran.test_store import MINI, result

PROFILES = sorted((Path(__file__).resolve().parents[2] / "datasets" / "profiles").glob("*.sqlite"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _side_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name and p.name.startswith(path.name))


def _in_wal_mode(path: Path) -> bool:
    """From the header (bytes 18 and 19 are 2 in WAL mode), so that asking opens nothing."""
    return path.read_bytes()[18:20] == b"\x02\x02"


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_committed_profiles_are_not_in_wal_mode(profile):
    assert not _in_wal_mode(profile)
    with closing(sqlite3.connect(f"{profile.resolve().as_uri()}?mode=ro&immutable=1", uri=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_reading_a_committed_profile_leaves_it_untouched(profile, tmp_path):
    copy = Path(shutil.copy(profile, tmp_path / profile.name))
    before = _digest(copy)
    rows = load_rows(copy)
    with RunStore(copy, readonly=True) as store:
        measurements = store.measurements()
    assert rows and measurements
    assert _side_files(copy) == []
    assert _digest(copy) == before


def test_reading_a_wal_store_creates_no_side_files(tmp_path):
    path = tmp_path / "board.sqlite"
    with RunStore(path) as store:
        run_id = store.create_run("board", "onnxruntime")
        store.add_measurement(run_id, result())
    assert _in_wal_mode(path)
    assert _side_files(path) == []  # the writer's last close removed them
    before = _digest(path)
    assert [row.arch_hash for row in load_rows(path)] == [result().arch_hash]
    with RunStore(path, readonly=True) as store:
        assert len(store.measurements()) == 1
    assert _side_files(path) == []
    assert _digest(path) == before


def test_a_reader_sees_rows_a_connected_writer_has_not_checkpointed(tmp_path):
    path = tmp_path / "board.sqlite"
    with RunStore(path) as writer:
        run_id = writer.create_run("board", "onnxruntime")
        writer.add_measurement(run_id, result())
        writer.add_measurement(run_id, result(MINI))  # in the -wal file, not yet in the main file
        assert path.with_name(path.name + "-wal").exists()
        assert len(load_rows(path)) == 2
