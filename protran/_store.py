"""The run store: an embedded SQLite database of profiling runs and their measurements.

Every measurement is committed the moment it is added, so a crash or Ctrl-C loses nothing and an
interrupted run can be resumed. ProTran ``dataset.json`` files import into the store and export from
it. The database runs in WAL mode, so readers (a dashboard, ``protran pareto``) never block the
profiler that writes.

Tables: ``meta`` (schema version), ``runs`` (one profiling session: device, runtime, batch size,
sequence length, threads, meter, host, software versions, configuration, status), ``measurements``
(one row per attempt to measure an architecture, whatever its outcome), ``models`` (records of
fitted surrogates saved beside the store), ``accuracy`` (task scores and pre-training losses of
architectures, for accuracy surrogates and Pareto frontiers), ``leases`` (which process is writing
a run: see "Leases" below) and ``references`` (measurements of a run's fixed reference architecture,
for drift control: see ``protran._profile``; they are not measurement rows).

Schema versions: 1 had no ``accuracy`` table, 2 no ``accuracy.recipe`` column, 3 no ``leases`` table;
opening an older store for writing adds them (version 4), and one opened read-only reads as it is (a
version-1 store as one without accuracy rows, a version-2 one with no recipes, a version-3 one with
no leases). Version 4 had no ``measurements.conditions``, version 5 no ``references`` table, no
``measurements.latency_raw_s`` (the latency before drift correction; NULL where none was applied) and
no ``measurements.superseded_by``.

Re-measurements: a row whose confidence interval stayed wide may be measured again later in its run
(``add_measurement(..., replaces=ID)``). Both rows are kept; in the same transaction the worse of the
two (by status, then by relative CI width) is marked ``superseded_by`` the other, and readers see only
rows that are not superseded unless they ask (``include_superseded=True``). Nothing measured is lost,
and a run still has one current row per architecture.

Leases: two profilers writing one run measure the same architectures twice and overrun its sample
budget, so a run being written is leased to one process, identified by its pid, its host name and its
start time (which tells a process from a later one that reuses its pid). ``create_run`` leases the new
run to its creator; resuming a run takes its lease with ``take_lease``, which succeeds only when the
lease is free, held by this very process, or held by a process of this host that has exited, and
otherwise raises ``RunLeasedError`` naming the holder. A process on another host cannot be checked
from here, so its lease is taken only when asked to (``take_over=True``). ``release_lease`` ends a
run's lease as the run finishes or is interrupted; a process that dies leaves its lease behind, to be
found stale by the next one. Every measurement is written only while its process holds the run's lease,
checked in the same transaction, so a process whose lease was taken over stops writing. Imported runs
are never leased: nothing measures into them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flexibert import ArchSpec, EdgetranError, InvalidArchitectureError, embed, model_hash
from protran._files import is_run_store, read_hash_keyed_json
from protran._protocol import STATUSES, MeasurementResult

SCHEMA_VERSION = 6
RUN_STATUSES = ("running", "finished", "interrupted", "imported")

_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    device TEXT NOT NULL,
    runtime TEXT NOT NULL,
    batch_size INTEGER NOT NULL CHECK (batch_size > 0),
    seq_len INTEGER NOT NULL CHECK (seq_len > 0),
    num_threads INTEGER,
    meter TEXT,
    host TEXT NOT NULL DEFAULT '{}',
    versions TEXT NOT NULL DEFAULT '{}',
    config TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'finished', 'interrupted', 'imported'))
);
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    arch_hash TEXT NOT NULL,
    model_dict TEXT NOT NULL,
    embedding TEXT,
    runtime TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    seq_len INTEGER NOT NULL,
    num_threads INTEGER,
    status TEXT NOT NULL CHECK (status IN ('ok', 'unstable', 'failed', 'timeout', 'oom')),
    latency_s REAL,
    latency_ci_rel REAL,
    latency_iqr_s REAL,
    repeats INTEGER,
    energy_j REAL,
    peak_power_w REAL,
    idle_power_w REAL,
    mean_power_w REAL,
    meter TEXT,
    time_capped INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    started_at TEXT,
    finished_at TEXT,
    versions TEXT NOT NULL DEFAULT '{}',
    conditions TEXT NOT NULL DEFAULT '{}',
    latency_raw_s REAL,
    superseded_by INTEGER
);
CREATE INDEX measurements_by_run_hash ON measurements (run_id, arch_hash);
CREATE TABLE models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    name TEXT NOT NULL,
    measure TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}'
);
"""

# Added in schema version 2.
_ACCURACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS accuracy (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    arch_hash TEXT NOT NULL,
    model_dict TEXT NOT NULL,
    embedding TEXT,
    task TEXT NOT NULL,
    score REAL,
    pretrain_loss REAL,
    pretrain_steps INTEGER,
    source TEXT,
    created_at TEXT NOT NULL,
    recipe TEXT,
    CHECK (score IS NOT NULL OR pretrain_loss IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS accuracy_by_hash_task ON accuracy (arch_hash, task);
"""

# Added in schema version 4. One row per leased run; a free run has none. ``process_start`` is the
# holder's start time in clock ticks after boot (Linux), NULL where the system does not say.
_LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    run_id INTEGER PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    process_start INTEGER,
    taken_at TEXT NOT NULL,
    renewed_at TEXT NOT NULL
);
"""

# Added in schema version 6: the run's reference architecture, measured now and then to follow the
# machine's drift (``protran._profile``). ``references`` is an SQL keyword, hence the quotes.
_REFERENCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS "references" (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    arch_hash TEXT NOT NULL,
    measured_at TEXT NOT NULL,
    latency_s REAL,
    latency_ci_rel REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'unstable', 'failed', 'timeout', 'oom')),
    conditions TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS references_by_run ON "references" (run_id);
"""

_MEASUREMENT_COLUMNS = (
    "run_id", "arch_hash", "model_dict", "embedding", "runtime", "batch_size", "seq_len", "num_threads",
    "status", "latency_s", "latency_ci_rel", "latency_iqr_s", "repeats", "energy_j", "peak_power_w",
    "idle_power_w", "mean_power_w", "meter", "time_capped", "error", "started_at", "finished_at", "versions",
    "conditions", "latency_raw_s",
)


class RunStoreError(EdgetranError, RuntimeError):
    """The run store cannot be opened, read or written; the message names the file."""


class UnknownRunError(RunStoreError, KeyError):
    """No run of that id in the store. Also a ``KeyError``, as a missing key of a mapping."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetFormatError(EdgetranError, ValueError):
    """A ProTran ``dataset.json`` is malformed; the message names the file, the row key and the field."""


class RunLeasedError(RunStoreError):
    """Another process holds the run's lease (or this one no longer does); the message names the
    holder and what to do. ``lease`` is the lease in the way, None where the run has none."""

    def __init__(self, message: str, lease: Lease | None = None) -> None:
        super().__init__(message)
        self.lease = lease


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Run:
    """One profiling session: where, with what, and how it was configured."""

    id: int
    created_at: str
    device: str
    runtime: str
    batch_size: int
    seq_len: int
    num_threads: int | None
    meter: str | None
    host: dict[str, Any]
    versions: dict[str, Any]
    config: dict[str, Any]
    status: str


@dataclass(frozen=True)
class Lease:
    """Which process is writing a run: its pid and host, its start time (clock ticks after boot, None
    where the system does not say) and when it took the lease and last renewed it (by measuring)."""

    run_id: int
    pid: int
    host: str
    process_start: int | None
    taken_at: str
    renewed_at: str

    def describe(self) -> str:
        """``pid 4242 on host 'rpi4' since <taken_at>, last renewed <renewed_at>``."""
        return f"pid {self.pid} on host {self.host!r} since {self.taken_at}, last renewed {self.renewed_at}"


@dataclass(frozen=True)
class Measurement:
    """One stored attempt to measure an architecture. Units live in the field names; ``energy_j``,
    ``peak_power_w``, ``idle_power_w`` and ``mean_power_w`` are None where no meter was available."""

    id: int
    run_id: int
    device: str
    arch_hash: str
    model_dict: dict[str, Any]
    embedding: list[int] | None
    runtime: str
    batch_size: int
    seq_len: int
    num_threads: int | None
    status: str
    latency_s: float | None
    latency_ci_rel: float | None
    latency_iqr_s: float | None
    repeats: int | None
    energy_j: float | None
    peak_power_w: float | None
    idle_power_w: float | None
    mean_power_w: float | None
    meter: str | None
    time_capped: bool
    error: str | None
    started_at: str | None
    finished_at: str | None
    versions: dict[str, Any] = field(default_factory=dict)
    # The machine during the timed window (pinned CPUs, governor, frequencies, load, under_load): see
    # protran._protocol. Empty for rows from before schema version 5, imports and workers that report none.
    conditions: dict[str, Any] = field(default_factory=dict)
    # The latency as measured, before the profiler's drift correction (``latency_s`` holds the corrected
    # value, and ``conditions["drift_factor"]`` the factor); None where no correction was applied.
    latency_raw_s: float | None = None
    # The id of the re-measurement of the same architecture that replaced this row (see "Re-measurements"
    # in the module docstring); None for a current row.
    superseded_by: int | None = None

    @property
    def spec(self) -> ArchSpec:
        return ArchSpec.from_model_dict(self.model_dict, space=False)


@dataclass(frozen=True)
class Reference:
    """One measurement of a run's reference architecture (drift control): not a measurement row."""

    id: int
    run_id: int
    measured_at: str
    latency_s: float | None
    latency_ci_rel: float | None
    status: str
    conditions: dict[str, Any] = field(default_factory=dict)
    arch_hash: str = ""


@dataclass(frozen=True)
class ModelRecord:
    """A fitted surrogate saved beside the store: what it predicts, where it lives, how well it fits."""

    id: int
    run_id: int | None
    name: str
    measure: str
    path: str
    created_at: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class AccuracyRecord:
    """What is known about an architecture's accuracy on one task.

    ``score`` is the task score as given (higher is better; None where only pre-training finished),
    ``pretrain_loss`` the final masked-language-model loss and ``pretrain_steps`` how many steps it
    reached. ``source`` names where the record came from (a file, or a benchmark such as
    ``nasbench_bert``) and ``recipe`` how the score was obtained (JSON text: pre-training and
    fine-tuning settings, the upstream run id), so that two trainings of one architecture stay two
    observations.
    """

    spec: ArchSpec
    arch_hash: str
    task: str
    score: float | None
    pretrain_loss: float | None = None
    pretrain_steps: int | None = None
    source: str | None = None
    recipe: str | None = None


@dataclass(frozen=True)
class ProfileRow:
    """One measured architecture on one device, as every reader of profiles returns it (a run store,
    a ProTran ``dataset.json``) and replay, frontiers and co-design use it. The value fields are the
    row fields of ``protran.vocabulary.MEASURES``; ``device`` is empty where the source names none."""

    spec: ArchSpec
    arch_hash: str
    latency_s: float
    energy_j: float | None
    peak_power_w: float | None
    device: str = ""


class RunStore:
    """A SQLite file of runs and measurements.

    Parameters
    ----------
    path:
        The database file; created (with its directories) when absent.
    readonly:
        Open without write access (for reading a store another process writes, or a shipped file).

    Examples
    --------
    >>> store = RunStore("rpi4.sqlite")                                  # doctest: +SKIP
    >>> run_id = store.find_resumable_run("rpi4", "onnxruntime", 1, 128, 4) or store.create_run(
    ...     "rpi4", "onnxruntime", batch_size=1, seq_len=128, num_threads=4)  # doctest: +SKIP
    >>> store.add_measurement(run_id, measure_architecture(spec))       # doctest: +SKIP
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        if readonly and not self.path.is_file():
            raise RunStoreError(f"run store {self.path} does not exist")
        if not readonly:
            self._guard_foreign_file()
        creating = not readonly and not self.path.exists()
        with self._errors("open"):
            if readonly:
                self._conn = self._connect_readonly()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                             check_same_thread=False)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA foreign_keys = ON")
        try:
            # The schema is checked before WAL mode is switched on: that switch rewrites the file's
            # header, which must not happen to a SQLite file that turns out not to be a run store.
            self._check_schema()
            if not readonly:
                with self._errors("open"):
                    self._conn.execute("PRAGMA journal_mode = WAL")
                    self._conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            self._conn.close()
            if creating:  # a store this call began to create (a full disk, say) is not left half-made
                remove_database_files(self.path)
            raise

    # -- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    def _connect_readonly(self) -> sqlite3.Connection:
        """A connection that reads the store and creates or changes no file.

        SQLite's read-only mode still creates ``-wal`` and ``-shm`` files beside a database in WAL
        mode, and cannot remove them afterwards. A WAL store without a ``-wal`` file has no writer (a
        writer keeps that file while it is connected), so it is read as immutable and nothing is
        created. With a ``-wal`` file a profiler may be writing: read through it, to see its rows.
        """
        uri = self.path.resolve().as_uri()
        if self._in_wal_mode() and not self.path.with_name(self.path.name + "-wal").exists():
            return self._connect_uri(f"{uri}?mode=ro&immutable=1")
        conn = self._connect_uri(f"{uri}?mode=ro")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            # A WAL database in a read-only directory cannot create its shared-memory file; read the
            # file as immutable instead (nothing can be writing to it there anyway).
            conn.close()
            return self._connect_uri(f"{uri}?mode=ro&immutable=1")

    @staticmethod
    def _connect_uri(uri: str) -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)

    def _in_wal_mode(self) -> bool:
        """Whether the file's header marks WAL mode (bytes 18 and 19, the write and read versions, are 2)."""
        with open(self.path, "rb") as handle:
            header = handle.read(20)
        return header[18:20] == b"\x02\x02"

    def _guard_foreign_file(self) -> None:
        """Refuse to turn an unrelated non-empty file (a JSON dataset, say) into a database."""
        if self.path.is_file() and self.path.stat().st_size > 0 and not is_run_store(self.path):
            raise RunStoreError(f"{self.path} exists and is not a SQLite run store")

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn sqlite errors (disk full, read-only file, locked, corrupt) into RunStoreError.

        Also serialises use of the connection, which may be shared between threads.
        """
        try:
            with self._lock:
                yield
        except sqlite3.Error as error:
            hint = ""
            if isinstance(error, sqlite3.OperationalError) and any(
                    sign in str(error) for sign in ("disk is full", "disk I/O error")):
                hint = ("; is the disk full? Free some space and run again: every write is one transaction, "
                        "so what the store already held is intact")
            raise RunStoreError(f"cannot {action} run store {self.path}: {error}{hint}") from error

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        """One all-or-nothing write: committed on success, rolled back on any error."""
        with self._lock, self._errors(action):
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:  # sqlite may already have rolled back (disk full)
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _check_schema(self) -> None:
        with self._errors("read"):
            tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" not in tables:
                if tables:
                    raise RunStoreError(f"{self.path} is a SQLite database but not a run store (no 'meta' table)")
                if self.readonly:
                    raise RunStoreError(f"run store {self.path} is empty")
                self._create_schema()
                return
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise RunStoreError(f"run store {self.path} has no schema_version")
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise RunStoreError(
                f"run store {self.path} has schema version {version}, newer than the {SCHEMA_VERSION} this "
                "version of protran understands; upgrade edgetran to read it"
            )
        self._check_columns(version)
        if version < SCHEMA_VERSION and not self.readonly:
            self._migrate(version)

    def _check_columns(self, version: int) -> None:
        """Refuse a store whose tables' columns are not the ones this schema writes (a damaged schema
        text): reading it would fail later, row by row, with a message that names no file. An older
        version may lack the columns added since; a current one has exactly this schema's."""
        expected = _expected_columns()
        with self._errors("read"):
            tables = [row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                if table not in expected:
                    continue
                columns = {row[1] for row in self._conn.execute(f'PRAGMA table_info("{table}")')}
                needed = expected[table] if version == SCHEMA_VERSION else _CORE_COLUMNS.get(table, set())
                if not needed <= columns <= expected[table]:
                    raise RunStoreError(f"run store {self.path} is damaged (the {table!r} table's columns are not "
                                        "the ones protran wrote); restore it from a copy or import its data again")

    def _migrate(self, version: int) -> None:
        """Bring an older store up to date in one transaction; its existing rows are untouched."""
        with self._transaction("upgrade") as conn:
            if version < 2:
                _execute_script(conn, _ACCURACY_SCHEMA)
            elif version < 3:
                conn.execute("ALTER TABLE accuracy ADD COLUMN recipe TEXT")
            if version < 4:
                _execute_script(conn, _LEASE_SCHEMA)  # the old runs start free: the old code leased nothing
            columns = {row[1] for row in conn.execute("PRAGMA table_info(measurements)")}
            if version < 5 and "conditions" not in columns:  # the old rows recorded no conditions
                conn.execute("ALTER TABLE measurements ADD COLUMN conditions TEXT NOT NULL DEFAULT '{}'")
            if version < 6:  # the old rows were never drift-corrected: their raw latency stays NULL
                _execute_script(conn, _REFERENCE_SCHEMA)
                if "latency_raw_s" not in columns:
                    conn.execute("ALTER TABLE measurements ADD COLUMN latency_raw_s REAL")
                if "superseded_by" not in columns:  # the old rows were never re-measured
                    conn.execute("ALTER TABLE measurements ADD COLUMN superseded_by INTEGER")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _create_schema(self) -> None:
        with self._transaction("initialise") as conn:
            _execute_script(conn, _SCHEMA + _ACCURACY_SCHEMA + _LEASE_SCHEMA + _REFERENCE_SCHEMA)
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("INSERT INTO meta (key, value) VALUES ('created_at', ?)", (_now(),))

    @property
    def schema_version(self) -> int:
        with self._errors("read"):
            return int(self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    # -- runs ---------------------------------------------------------------------------------------

    def create_run(
        self,
        device: str,
        runtime: str,
        batch_size: int = 1,
        seq_len: int = 128,
        num_threads: int | None = None,
        meter: str | None = None,
        host: dict | None = None,
        versions: dict | None = None,
        config: dict | None = None,
        status: str = "running",
    ) -> int:
        """Start a run and return its id; a 'running' run is leased to this process from the start."""
        _check_positive_int("batch_size", batch_size)
        _check_positive_int("seq_len", seq_len)
        if not device:
            raise ValueError("device must be a non-empty name")
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {RUN_STATUSES}")
        with self._transaction("write") as conn:
            cursor = conn.execute(
                "INSERT INTO runs (created_at, device, runtime, batch_size, seq_len, num_threads, meter, host,"
                " versions, config, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_now(), device, runtime, batch_size, seq_len, num_threads, meter,
                 _dumps(host or {}), _dumps(versions or {}), _dumps(config or {}), status),
            )
            run_id = int(cursor.lastrowid)
            if status == "running":
                _write_lease(conn, run_id, _Process.current())
            return run_id

    def get_run(self, run_id: int) -> Run:
        with self._errors("read"):
            row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            known = ", ".join(str(run.id) for run in self.runs()) or "none"
            raise UnknownRunError(f"run {run_id} is not in run store {self.path} (its runs: {known})")
        return _run_from_row(row)

    def runs(self) -> list[Run]:
        with self._errors("read"):
            return [_run_from_row(row) for row in self._conn.execute("SELECT * FROM runs ORDER BY id")]

    def set_run_status(self, run_id: int, status: str) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {RUN_STATUSES}")
        self.get_run(run_id)
        with self._transaction("write") as conn:
            conn.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))

    def find_resumable_run(
        self,
        device: str,
        runtime: str,
        batch_size: int = 1,
        seq_len: int = 128,
        num_threads: int | None = None,
        config: dict | None = None,
    ) -> int | None:
        """The newest unfinished ('running' or 'interrupted') run with these settings, or None.

        When ``config`` is given it must equal the stored configuration too, so a run is never resumed
        with different profiling settings. Leases are not looked at: a run another process is writing
        is still found, so that resuming it fails on ``take_lease`` naming that process, rather than
        quietly starting a second run beside it.
        """
        with self._errors("read"):
            rows = self._conn.execute(
                "SELECT * FROM runs WHERE device = ? AND runtime = ? AND batch_size = ? AND seq_len = ?"
                " AND num_threads IS ? AND status IN ('running', 'interrupted') ORDER BY id DESC",
                (device, runtime, batch_size, seq_len, num_threads),
            ).fetchall()
        for row in rows:
            if config is None or json.loads(row["config"]) == json.loads(_dumps(config)):
                return int(row["id"])
        return None

    # -- leases -------------------------------------------------------------------------------------

    def lease(self, run_id: int) -> Lease | None:
        """The run's lease, or None where it is free (or the store predates leases)."""
        if not self._has_table("leases"):
            return None  # a version-3 store opened read-only
        with self._errors("read"):
            return _read_lease(self._conn, run_id)

    def take_lease(self, run_id: int, *, take_over: bool = False) -> Lease:
        """Lease an unfinished run to this process and mark it 'running', to resume it.

        In one transaction, so of two processes resuming one run exactly one gets it. The lease is
        taken when it is free, held by this very process, or held by a process of this host that has
        exited (its pid is gone, a zombie, or now another process: a different start time). A live
        holder raises RunLeasedError, and so does a holder this host cannot check (another host's
        process) unless ``take_over`` is true: only the user can know that one has gone.
        """
        me = _Process.current()
        with self._transaction("write") as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise UnknownRunError(f"run {run_id} is not in run store {self.path}")
            if row["status"] not in ("running", "interrupted"):
                raise RunStoreError(f"run {run_id} in run store {self.path} is {row['status']}: only a running or "
                                    "interrupted run can be resumed")
            held = _read_lease(conn, run_id)
            if held is not None:
                self._check_may_take(held, me, take_over)
            conn.execute("UPDATE runs SET status = 'running' WHERE id = ?", (run_id,))
            return _write_lease(conn, run_id, me, taken_at=held.taken_at if held and me.holds(held) else None)

    def release_lease(self, run_id: int, status: str) -> None:
        """End this process's lease on a run and set its status ('finished' or 'interrupted'), together.

        A free run just gets its status. A run another process has taken over raises RunLeasedError and
        is left as it is: its status is that process's to set.
        """
        if status not in ("finished", "interrupted"):
            raise ValueError(f"a released run is 'finished' or 'interrupted', not {status!r}")
        me = _Process.current()
        with self._transaction("write") as conn:
            held = _read_lease(conn, run_id)
            if held is not None and not me.holds(held):
                raise self._lost_lease(run_id, held, me)
            conn.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
            if conn.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id)).rowcount == 0:
                raise UnknownRunError(f"run {run_id} is not in run store {self.path}")

    def _check_may_take(self, held: Lease, me: _Process, take_over: bool) -> None:
        """Raise RunLeasedError unless ``me`` may take the lease ``held`` (see ``take_lease``)."""
        state = me.judge(held)
        where = f"run {held.run_id} in run store {self.path} is held by {held.describe()}"
        if state == "alive":
            raise RunLeasedError(f"{where}, which is still running; wait for it to finish or stop it", held)
        if state == "unknown" and not take_over:
            raise RunLeasedError(
                f"{where}, which this host ({me.host!r}) cannot check; wait for it to finish, stop it, or, if that "
                "process is gone, take the run over (take_over=True; protran profile --take-over)", held)

    def _lost_lease(self, run_id: int, held: Lease | None, me: _Process) -> RunLeasedError:
        if held is None:
            return RunLeasedError(f"run {run_id} in run store {self.path} is not leased to this process (pid "
                                  f"{me.pid} on host {me.host!r}); resume it (take_lease) before measuring into it")
        return RunLeasedError(f"run {run_id} in run store {self.path} is now held by {held.describe()}; this "
                              f"process (pid {me.pid} on host {me.host!r}) lost its lease and stops writing", held)

    def devices(self) -> list[str]:
        """Names of the devices with at least one run, sorted."""
        with self._errors("read"):
            return [row[0] for row in self._conn.execute("SELECT DISTINCT device FROM runs ORDER BY device")]

    # -- measurements -------------------------------------------------------------------------------

    def add_measurement(self, run_id: int, result: MeasurementResult, latency_raw_s: float | None = None,
                        replaces: int | None = None, keep: str = "better") -> int:
        """Store one measurement attempt (any status) and commit it at once. Returns its id.

        ``latency_raw_s`` is the latency as measured where ``result.latency_s`` holds a drift-corrected
        value (see ``protran._profile``); None where no correction was applied. ``replaces`` is the id of
        a current row of the same run and architecture that this one measures again: the worse of the two
        becomes superseded (see "Re-measurements" in the module docstring). ``keep="faster"`` (a recheck
        of a row measured slow) keeps the one with the lower latency current where both are usable.

        Only the process holding the run's lease writes to it: the lease is checked, and renewed, in the
        same transaction, and RunLeasedError is raised where another process has taken it over (or the
        run is not leased at all).
        """
        if keep not in _KEEP_RULES:
            raise ValueError(f"keep must be one of {', '.join(_KEEP_RULES)}, got {keep!r}")
        self.get_run(run_id)
        row = _measurement_row(run_id, result)
        row["latency_raw_s"] = _optional_number("latency_raw_s", latency_raw_s)
        with self._leased_write(run_id) as conn:
            old = self._replaced_row(conn, run_id, result.arch_hash, replaces) if replaces is not None else None
            new_id = _insert_measurement(conn, row)
            if old is not None:
                worse, better = (old["id"], new_id) if _KEEP_RULES[keep](row, old) else (new_id, old["id"])
                conn.execute("UPDATE measurements SET superseded_by = ? WHERE id = ?", (better, worse))
            return new_id

    def set_drift_factors(self, run_id: int, factors: Mapping[int, float]) -> int:
        """Give rows of a run new drift corrections (``protran correct``): for each measurement id,
        ``latency_s = latency_raw_s * factor`` with the interquartile range rescaled alike and the factor
        in its conditions; rows without a raw latency (never corrected) are refused. One transaction,
        refused while another process holds the run's lease (it is being measured); the holder itself
        may (drift control's ``bracket`` rule corrects rows once the next reference exists). Returns
        rows changed."""
        self.get_run(run_id)
        with self._transaction("write") as conn:
            held = _read_lease(conn, run_id)
            if held is not None and not _Process.current().holds(held):
                raise RunStoreError(f"run {run_id} is being measured by process {held.pid} on {held.host}; "
                                    "correct it once that run has stopped")
            for measurement_id, factor in factors.items():
                row = conn.execute("SELECT run_id, latency_raw_s, latency_iqr_s, conditions FROM measurements "
                                   "WHERE id = ?", (measurement_id,)).fetchone()
                if row is None or row["run_id"] != run_id or row["latency_raw_s"] is None:
                    raise ValueError(f"measurement {measurement_id} is not a drift-corrected row of run {run_id}")
                conditions = json.loads(row["conditions"] or "{}")
                old = float(conditions.get("drift_factor", 1.0))
                iqr = row["latency_iqr_s"] / old * factor if row["latency_iqr_s"] is not None else None
                conn.execute("UPDATE measurements SET latency_s = ?, latency_iqr_s = ?, conditions = ? WHERE id = ?",
                             (row["latency_raw_s"] * factor, iqr, _dumps({**conditions, "drift_factor": factor}),
                              measurement_id))
            return len(factors)

    @staticmethod
    def _replaced_row(conn: sqlite3.Connection, run_id: int, arch_hash: str, replaces: int) -> sqlite3.Row:
        old = conn.execute("SELECT * FROM measurements WHERE id = ?", (replaces,)).fetchone()
        if old is None or old["run_id"] != run_id or old["arch_hash"] != arch_hash:
            raise ValueError(f"measurement {replaces} is not a row of run {run_id} for architecture {arch_hash}")
        if old["superseded_by"] is not None:
            raise ValueError(f"measurement {replaces} was already superseded by {old['superseded_by']}")
        return old

    @contextmanager
    def _leased_write(self, run_id: int) -> Iterator[sqlite3.Connection]:
        """A write transaction that goes ahead only while this process holds the run's lease (renewed)."""
        me = _Process.current()
        with self._transaction("write") as conn:
            held = _read_lease(conn, run_id)
            if held is None or not me.holds(held):
                raise self._lost_lease(run_id, held, me)
            conn.execute("UPDATE leases SET renewed_at = ? WHERE run_id = ?", (_now(), run_id))
            yield conn

    def add_reference(self, run_id: int, result: MeasurementResult) -> int:
        """Store one measurement of the run's reference architecture (drift control) and return its id.

        Not a measurement row: it never counts toward a sample budget nor enters a fit. Written only
        while this process holds the run's lease, as ``add_measurement``.
        """
        self.get_run(run_id)
        if result.status not in STATUSES:
            raise ValueError(f"status {result.status!r} is not one of {STATUSES}")
        if result.status == "ok" and result.latency_s is None:
            raise ValueError("a reference measurement with status 'ok' needs latency_s")
        values = (run_id, result.arch_hash, result.finished_at or _now(),
                  _optional_number("latency_s", result.latency_s),
                  _optional_number("latency_ci_rel", result.latency_ci_rel), result.status,
                  _dumps(result.conditions or {}))
        with self._leased_write(run_id) as conn:
            cursor = conn.execute(
                'INSERT INTO "references" (run_id, arch_hash, measured_at, latency_s, latency_ci_rel, status,'
                " conditions) VALUES (?, ?, ?, ?, ?, ?, ?)", values)
            return int(cursor.lastrowid)

    def references(self, run_id: int, *, comparable: bool = False) -> list[Reference]:
        """The run's reference measurements (every outcome) in the order they were taken; none for a
        store from before schema version 6 opened read-only.

        ``comparable=True`` returns, instead, those of every run that measures what this run measures
        (same device, runtime, batch size, sequence length and threads), oldest first: one board's
        drift across runs, which is what makes a retest run comparable with the run it repeats.
        """
        if not self._has_table("references"):
            return []
        run = self.get_run(run_id)
        if comparable:
            query = ('SELECT f.* FROM "references" f JOIN runs r ON r.id = f.run_id WHERE r.device = ? AND '
                     "r.runtime = ? AND r.batch_size = ? AND r.seq_len = ? AND r.num_threads IS ? ORDER BY f.id")
            params: tuple[Any, ...] = (run.device, run.runtime, run.batch_size, run.seq_len, run.num_threads)
        else:
            query, params = 'SELECT * FROM "references" WHERE run_id = ? ORDER BY id', (run_id,)
        with self._errors("read"):
            rows = self._conn.execute(query, params).fetchall()
        return [Reference(id=row["id"], run_id=row["run_id"], measured_at=row["measured_at"],
                          latency_s=row["latency_s"], latency_ci_rel=row["latency_ci_rel"], status=row["status"],
                          conditions=json.loads(row["conditions"]), arch_hash=row["arch_hash"])
                for row in rows]

    def measurements(
        self, run_id: int | None = None, status: str | Sequence[str] | None = "ok", device: str | None = None,
        include_superseded: bool = False,
    ) -> list[Measurement]:
        """Stored measurements in insertion order; ``status=None`` returns every attempt, and
        ``include_superseded`` the rows a re-measurement replaced too."""
        clauses, params = [], []
        if not include_superseded and self._has_column("measurements", "superseded_by"):
            clauses.append("m.superseded_by IS NULL")
        if run_id is not None:
            clauses.append("m.run_id = ?")
            params.append(run_id)
        if status is not None:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            for value in statuses:
                if value not in STATUSES:
                    raise ValueError(f"status {value!r} is not one of {STATUSES}")
            clauses.append(f"m.status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if device is not None:
            clauses.append("r.device = ?")
            params.append(device)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = (
            "SELECT m.*, r.device AS device FROM measurements m JOIN runs r ON r.id = m.run_id "
            f"{where} ORDER BY m.id"
        )
        with self._errors("read"):
            return [_measurement_from_row(row) for row in self._conn.execute(query, params)]

    def measured_hashes(self, run_id: int, status: str | Sequence[str] | None = None) -> set[str]:
        """Hashes of the architectures already attempted in a run (every outcome unless ``status``)."""
        return {m.arch_hash for m in self.measurements(run_id, status=status)}

    # -- surrogate records --------------------------------------------------------------------------

    def add_model(
        self, name: str, measure: str, path: str | Path, metrics: dict | None = None, run_id: int | None = None
    ) -> int:
        """Record a fitted surrogate saved at ``path``."""
        with self._transaction("write") as conn:
            cursor = conn.execute(
                "INSERT INTO models (run_id, name, measure, path, created_at, metrics) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, name, measure, str(path), _now(), _dumps(metrics or {})),
            )
            return int(cursor.lastrowid)

    def models(self, measure: str | None = None) -> list[ModelRecord]:
        query, params = "SELECT * FROM models", ()
        if measure is not None:
            query, params = query + " WHERE measure = ?", (measure,)
        with self._errors("read"):
            rows = self._conn.execute(query + " ORDER BY id", params).fetchall()
        return [
            ModelRecord(row["id"], row["run_id"], row["name"], row["measure"], row["path"], row["created_at"],
                        json.loads(row["metrics"]))
            for row in rows
        ]

    # -- accuracy -------------------------------------------------------------------------------------

    def _has_accuracy_table(self) -> bool:
        return self._has_table("accuracy")

    def _has_column(self, table: str, column: str) -> bool:
        with self._errors("read"):
            return any(row[1] == column for row in self._conn.execute(f"PRAGMA table_info({table})"))

    def _has_table(self, name: str) -> bool:
        """Whether the store has the table (an older one opened read-only may lack it)."""
        with self._errors("read"):
            row = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
        return row is not None

    def add_accuracy(self, records: Sequence[AccuracyRecord]) -> int:
        """Store accuracy records in one transaction and return how many were new.

        A record equal in every field (architecture, task, score, loss, steps, source, recipe) to a
        stored one is skipped, so importing the same file twice changes nothing. Several different scores of one
        architecture and task (repeated fine-tuning runs, say) are all kept.
        """
        rows = [_accuracy_row(record) for record in records]
        added = 0
        with self._transaction("write") as conn:
            for row in rows:
                duplicate = conn.execute(
                    "SELECT 1 FROM accuracy WHERE arch_hash = ? AND task = ? AND score IS ? AND pretrain_loss IS ?"
                    " AND pretrain_steps IS ? AND source IS ? AND recipe IS ?",
                    (row["arch_hash"], row["task"], row["score"], row["pretrain_loss"], row["pretrain_steps"],
                     row["source"], row["recipe"]),
                ).fetchone()
                if duplicate is None:
                    conn.execute(
                        "INSERT INTO accuracy (arch_hash, model_dict, embedding, task, score, pretrain_loss,"
                        " pretrain_steps, source, created_at, recipe) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (row["arch_hash"], row["model_dict"], row["embedding"], row["task"], row["score"],
                         row["pretrain_loss"], row["pretrain_steps"], row["source"], _now(), row["recipe"]),
                    )
                    added += 1
        return added

    def accuracy(self, task: str | None = None) -> list[AccuracyRecord]:
        """Stored accuracy records in insertion order, optionally of one task."""
        if not self._has_accuracy_table():
            return []  # a version-1 store opened read-only
        query, params = "SELECT * FROM accuracy", ()
        if task is not None:
            query, params = query + " WHERE task = ?", (task,)
        with self._errors("read"):
            rows = self._conn.execute(query + " ORDER BY id", params).fetchall()
        return [
            AccuracyRecord(
                spec=ArchSpec.from_model_dict(json.loads(row["model_dict"]), space=False),
                arch_hash=row["arch_hash"], task=row["task"], score=row["score"],
                pretrain_loss=row["pretrain_loss"], pretrain_steps=row["pretrain_steps"], source=row["source"],
                # a version-2 store opened read-only has no recipe; sqlite3.Row's `in` looks at values
                recipe=row["recipe"] if "recipe" in row.keys() else None,  # noqa: SIM118
            )
            for row in rows
        ]

    def accuracy_tasks(self) -> list[str]:
        """Names of the tasks with at least one accuracy record, sorted."""
        if not self._has_accuracy_table():
            return []
        with self._errors("read"):
            return [row[0] for row in self._conn.execute("SELECT DISTINCT task FROM accuracy ORDER BY task")]

    # -- ProTran dataset.json -----------------------------------------------------------------------

    def import_protran_json(
        self,
        path: str | Path,
        device: str | None = None,
        batch_size: int | None = None,
        seq_len: int = 128,
        runtime: str = "reference",
    ) -> int:
        """Import a ProTran ``dataset.json`` as one new run (status 'imported') and return its id.

        The device defaults to the file stem (``cpu_rpi_b1_r1``) and the batch size to the ``_b<N>_``
        part of it (1 when absent); the reference padded every sequence to 128 tokens. The whole file
        is validated first and written in one transaction, so a bad file imports nothing.
        """
        path = Path(path)
        rows = read_protran_json(path)
        stem_batch = batch_from_stem(path.stem)
        batch_size = batch_size if batch_size is not None else stem_batch or 1
        config = {"source": path.name, "format": "protran-dataset-json"}
        runs_match = re.search(r"_r(\d+)(?:_|$)", path.stem)
        if runs_match:
            config["reference_runs"] = int(runs_match.group(1))
        with self._transaction("import into") as conn:
            cursor = conn.execute(
                "INSERT INTO runs (created_at, device, runtime, batch_size, seq_len, num_threads, meter, host,"
                " versions, config, status) VALUES (?, ?, ?, ?, ?, NULL, NULL, '{}', '{}', ?, 'imported')",
                (_now(), device or path.stem, runtime, batch_size, seq_len, _dumps(config)),
            )
            run_id = int(cursor.lastrowid)
            for key, spec, embedding, perf in rows:
                row = dict.fromkeys(_MEASUREMENT_COLUMNS)
                row.update(
                    run_id=run_id, arch_hash=key, model_dict=json.dumps(spec.to_model_dict()),
                    embedding=_dumps(embedding), runtime=runtime, batch_size=batch_size, seq_len=seq_len,
                    status="ok", latency_s=perf["latency"], energy_j=perf["energy"],
                    peak_power_w=perf["peak_power"], time_capped=0, versions="{}", conditions="{}",
                )
                _insert_measurement(conn, row)
        return run_id

    def export_protran_json(self, path: str | Path, run_id: int | None = None) -> int:
        """Write the 'ok' measurements of a run as a ProTran ``dataset.json``; returns the row count.

        ``run_id`` may be omitted when the store holds a single run. Energy and peak power are null
        where no meter was available. An architecture measured more than once keeps its latest row.
        """
        if run_id is None:
            run_ids = [run.id for run in self.runs()]
            if len(run_ids) != 1:
                raise ValueError(
                    f"run store {self.path} holds {len(run_ids)} runs {run_ids}; pass run_id to choose one"
                )
            run_id = run_ids[0]
        self.get_run(run_id)
        latest: dict[str, Measurement] = {}
        for measurement in self.measurements(run_id, status="ok"):
            latest.pop(measurement.arch_hash, None)
            latest[measurement.arch_hash] = measurement
        dataset = {key: _protran_entry(m) for key, m in latest.items()}
        path = Path(path)
        if path.is_dir() or not path.name:
            raise ValueError(f"{path} is a folder; give the name of the dataset.json file to write")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(dataset, allow_nan=False)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(text)
            tmp.replace(path)  # never leave a half-written dataset behind...
        except BaseException:
            tmp.unlink(missing_ok=True)  # ...nor the temporary file beside it (a full disk, Ctrl-C)
            raise
        return len(dataset)


# -- ProTran format helpers -----------------------------------------------------------------------------


def batch_from_stem(stem: str) -> int | None:
    """The batch size a ProTran file name carries (``cpu_rpi_b1_r1`` -> 1), or None."""
    match = re.search(r"_b(\d+)(?:_|$)", stem)
    return int(match.group(1)) if match else None


def _model_type(spec: ArchSpec) -> str:
    """The reference label: shallow (<= 6 layers) or deep, narrow (<= 4 heads per layer) or wide.

    This rule reproduces the ``model_type`` of every row of the public ProTran datasets.
    """
    depth = "shallow" if spec.num_layers <= 6 else "deep"
    width = "narrow" if max(spec.head_counts) <= 4 else "wide"
    return f"{depth}_{width}"


def _protran_entry(measurement: Measurement) -> dict[str, Any]:
    spec = ArchSpec.from_model_dict(measurement.model_dict, space=False)
    embedding = measurement.embedding if measurement.embedding is not None else embed(spec)
    return {
        "model_dict": spec.to_model_dict(),
        "model_type": _model_type(spec),
        "embedding": str(list(embedding)),
        "performance": {
            "latency": measurement.latency_s,
            "energy": measurement.energy_j,
            "peak_power": measurement.peak_power_w,
        },
    }


def read_protran_json(path: str | Path) -> list[tuple[str, ArchSpec, list[int], dict[str, float | None]]]:
    """Parse and validate a ProTran ``dataset.json``: rows of (hash, spec, embedding, performance).

    Raises DatasetFormatError naming the file, row key and field for: text that is not JSON, a top
    level that is not an object, missing fields (the embedding may be left out), a model_dict outside
    the design space, a key that is not the model hash, an embedding that does not match, and
    latency/energy/peak power that are not finite non-negative numbers (energy and peak power may be
    null: not measured).
    """
    path = Path(path)
    data = read_hash_keyed_json(path, DatasetFormatError)
    if not data:
        raise DatasetFormatError(f"{path}: holds no rows; a dataset.json maps each model hash to "
                                 '{"model_dict": ..., "performance": ...}')
    return [_parse_entry(path, key, value) for key, value in data.items()]


def _parse_entry(path: Path, key: str, value: Any) -> tuple[str, ArchSpec, list[int], dict[str, float | None]]:
    where = f"{path}: row '{key}'"
    if not isinstance(value, dict):
        raise DatasetFormatError(f"{where}: expected an object, got {type(value).__name__}")
    for name in ("model_dict", "performance"):  # the embedding follows from the model_dict; checked if given
        if name not in value:
            raise DatasetFormatError(f"{where}: field '{name}' is missing")
    try:
        spec = ArchSpec.from_model_dict(value["model_dict"])
    except InvalidArchitectureError as error:
        raise DatasetFormatError(f"{where}, field 'model_dict': {error}") from None
    expected_hash = model_hash(spec)
    if key != expected_hash:
        raise DatasetFormatError(
            f"{where}: the key is not the hash of its model_dict (expected '{expected_hash}')"
        )
    embedding = embed(spec)
    given = value.get("embedding", embedding)
    try:
        given = json.loads(given) if isinstance(given, str) else given
    except json.JSONDecodeError:
        given = None
    if given != embedding:
        raise DatasetFormatError(
            f"{where}, field 'embedding': {value['embedding']!r} does not match the model_dict ({embedding})"
        )
    perf = value["performance"]
    if not isinstance(perf, dict):
        raise DatasetFormatError(f"{where}, field 'performance': expected an object")
    numbers: dict[str, float | None] = {}
    for name, optional in (("latency", False), ("energy", True), ("peak_power", True)):
        if name not in perf:
            raise DatasetFormatError(f"{where}, field 'performance.{name}' is missing")
        number = perf[name]
        if number is None and optional:
            numbers[name] = None
            continue
        if (
            not isinstance(number, (int, float)) or isinstance(number, bool)
            or not math.isfinite(number) or number < 0
        ):
            raise DatasetFormatError(
                f"{where}, field 'performance.{name}': {number!r} is not a finite non-negative number"
            )
        numbers[name] = float(number)
    return key, spec, embedding, numbers


def load_rows(path: str | Path, run_id: int | None = None, device: str | None = None) -> list[ProfileRow]:
    """Measured rows from a ProTran ``dataset.json`` or a run-store SQLite file.

    For a JSON file the device is the file stem; for a run store every 'ok' measurement is returned
    with its run's device (filtered by ``run_id`` / ``device`` when given), keeping the latest row when
    an architecture was measured more than once in a run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such profile file: {path}")
    if not is_run_store(path):
        name = device or path.stem
        return [
            ProfileRow(spec, key, perf["latency"], perf["energy"], perf["peak_power"], name)
            for key, spec, _, perf in read_protran_json(path)
        ]
    with RunStore(path, readonly=True) as store:
        latest: dict[tuple[int, str], Measurement] = {}
        for m in store.measurements(run_id=run_id, status="ok", device=device):
            latest.pop((m.run_id, m.arch_hash), None)
            latest[(m.run_id, m.arch_hash)] = m
    return [
        ProfileRow(m.spec, m.arch_hash, m.latency_s, m.energy_j, m.peak_power_w, m.device)
        for m in latest.values()
    ]


# -- leases: which process writes a run -------------------------------------------------------------------


@dataclass(frozen=True)
class _Process:
    """A process as a lease names it: pid, host name and start time (None where unknown)."""

    pid: int
    host: str
    start: int | None

    @classmethod
    def current(cls) -> _Process:
        # Read afresh each time: a forked child is another process, with its own pid.
        pid = os.getpid()
        stat = _proc_stat(pid)
        return cls(pid, socket.gethostname(), stat[1] if stat else None)

    def holds(self, lease: Lease) -> bool:
        return (lease.pid, lease.host, lease.process_start) == (self.pid, self.host, self.start)

    def judge(self, lease: Lease) -> str:
        """Whether the holder of ``lease`` is this process ('self'), still running ('alive'), has
        exited ('gone'), or cannot be checked from here ('unknown': another host, or no way to probe)."""
        if self.holds(lease):
            return "self"
        if lease.host != self.host:
            return "unknown"
        return _judge_local(lease)


def _judge_local(lease: Lease) -> str:
    """'alive', 'gone' or 'unknown' for a holder on this host, from its pid and start time."""
    if os.name != "posix":
        return "unknown"  # os.kill(pid, 0) would send Ctrl-C on Windows, not probe
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass  # alive, but another user's
    except (OverflowError, OSError):
        return "unknown"
    stat = _proc_stat(lease.pid)
    if stat is None:
        return "alive"  # no /proc: the pid is taken, and nothing tells whether by the holder
    state, start = stat
    if state == "Z":
        return "gone"  # exited, not yet reaped by its parent
    # Another start time is another process that reuses the pid.
    return "gone" if lease.process_start is not None and start != lease.process_start else "alive"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time (fields 3 and 22 of ``/proc/<pid>/stat``), or None
    where there is no such file (not Linux, or no such process)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) sits in parentheses and may hold spaces and parentheses itself.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _read_lease(conn: sqlite3.Connection, run_id: int) -> Lease | None:
    row = conn.execute("SELECT * FROM leases WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    return Lease(run_id=row["run_id"], pid=row["pid"], host=row["host"], process_start=row["process_start"],
                 taken_at=row["taken_at"], renewed_at=row["renewed_at"])


def _write_lease(conn: sqlite3.Connection, run_id: int, holder: _Process, taken_at: str | None = None) -> Lease:
    """Lease the run to ``holder``, inside the caller's transaction (replacing any lease it had)."""
    now = _now()
    lease = Lease(run_id, holder.pid, holder.host, holder.start, taken_at or now, now)
    conn.execute(
        "INSERT OR REPLACE INTO leases (run_id, pid, host, process_start, taken_at, renewed_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (lease.run_id, lease.pid, lease.host, lease.process_start, lease.taken_at, lease.renewed_at),
    )
    return lease


# -- row conversion ---------------------------------------------------------------------------------------


def remove_database_files(path: Path) -> None:
    """Remove a SQLite file and the journal files beside it (a store that failed to be created)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


# The columns a table had from its first schema version: every readable store has them.
_CORE_COLUMNS = {
    "runs": {"id", "device", "runtime", "batch_size", "seq_len", "num_threads", "config", "status"},
    "measurements": {"id", "run_id", "arch_hash", "model_dict", "status", "latency_s"},
}


@functools.lru_cache(maxsize=1)
def _expected_columns() -> dict[str, set[str]]:
    """Every table's columns in the current schema, read from a scratch in-memory database."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA + _ACCURACY_SCHEMA + _LEASE_SCHEMA + _REFERENCE_SCHEMA)
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {table: {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')} for table in tables}
    finally:
        conn.close()


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the caller's transaction (``executescript`` would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _accuracy_row(record: AccuracyRecord) -> dict[str, Any]:
    if model_hash(record.spec) != record.arch_hash:
        raise ValueError(f"accuracy record: arch_hash {record.arch_hash!r} is not the hash of its architecture")
    if not isinstance(record.task, str) or not record.task:
        raise ValueError(f"accuracy record {record.arch_hash}: task must be a non-empty name, got {record.task!r}")
    score = _optional_finite("score", record.score, record.arch_hash)
    loss = _optional_finite("pretrain_loss", record.pretrain_loss, record.arch_hash)
    if score is None and loss is None:
        raise ValueError(f"accuracy record {record.arch_hash}: needs a score, a pretrain_loss or both")
    try:
        embedding = _dumps(embed(record.spec))
    except InvalidArchitectureError:
        embedding = None  # outside the default design space
    steps = record.pretrain_steps
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        raise ValueError(f"accuracy record {record.arch_hash}: pretrain_steps {steps!r} must be a non-negative int")
    return {
        "arch_hash": record.arch_hash, "model_dict": json.dumps(record.spec.to_model_dict()), "embedding": embedding,
        "task": record.task, "score": score, "pretrain_loss": loss, "pretrain_steps": steps, "source": record.source,
        "recipe": record.recipe,
    }


def _optional_finite(name: str, value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"accuracy record {where}: {name} {value!r} must be a finite number or None")
    return float(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _optional_number(name: str, value: Any) -> float | None:
    """Measurements are finite and non-negative or absent (None); never NaN standing in for 'missing'."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"measurement field {name} = {value!r} must be a finite non-negative number or None")
    return number


def _measurement_row(run_id: int, result: MeasurementResult) -> dict[str, Any]:
    if result.status not in STATUSES:
        raise ValueError(f"status {result.status!r} is not one of {STATUSES}")
    spec = ArchSpec.from_model_dict(result.model_dict, space=False)
    if model_hash(spec) != result.arch_hash:
        raise ValueError(f"arch_hash {result.arch_hash!r} is not the hash of the measured model_dict")
    if result.status == "ok" and result.latency_s is None:
        raise ValueError("a measurement with status 'ok' needs latency_s")
    try:
        embedding = _dumps(embed(spec))
    except InvalidArchitectureError:
        embedding = None  # outside the default design space: no reference embedding
    row = {
        "run_id": run_id, "arch_hash": result.arch_hash, "model_dict": json.dumps(spec.to_model_dict()),
        "embedding": embedding, "runtime": result.runtime, "batch_size": result.batch_size,
        "seq_len": result.seq_len, "num_threads": result.num_threads, "status": result.status,
        "repeats": result.repeats, "meter": result.meter, "time_capped": int(bool(result.time_capped)),
        "error": result.error, "started_at": result.started_at, "finished_at": result.finished_at,
        "versions": _dumps(result.versions or {}), "conditions": _dumps(result.conditions or {}),
    }
    for name in ("latency_s", "latency_ci_rel", "latency_iqr_s", "energy_j", "peak_power_w", "idle_power_w",
                 "mean_power_w"):
        row[name] = _optional_number(name, getattr(result, name))
    return row


def _insert_measurement(conn: sqlite3.Connection, row: dict[str, Any]) -> int:
    cursor = conn.execute(
        f"INSERT INTO measurements ({', '.join(_MEASUREMENT_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(_MEASUREMENT_COLUMNS))})",
        [row[name] for name in _MEASUREMENT_COLUMNS],
    )
    return int(cursor.lastrowid)


def _run_from_row(row: sqlite3.Row) -> Run:
    return Run(
        id=row["id"], created_at=row["created_at"], device=row["device"], runtime=row["runtime"],
        batch_size=row["batch_size"], seq_len=row["seq_len"], num_threads=row["num_threads"], meter=row["meter"],
        host=json.loads(row["host"]), versions=json.loads(row["versions"]), config=json.loads(row["config"]),
        status=row["status"],
    )


def _measurement_from_row(row: sqlite3.Row) -> Measurement:
    return Measurement(
        id=row["id"], run_id=row["run_id"], device=row["device"], arch_hash=row["arch_hash"],
        model_dict=json.loads(row["model_dict"]),
        embedding=json.loads(row["embedding"]) if row["embedding"] is not None else None,
        runtime=row["runtime"], batch_size=row["batch_size"], seq_len=row["seq_len"],
        num_threads=row["num_threads"], status=row["status"], latency_s=row["latency_s"],
        latency_ci_rel=row["latency_ci_rel"], latency_iqr_s=row["latency_iqr_s"], repeats=row["repeats"],
        energy_j=row["energy_j"], peak_power_w=row["peak_power_w"], idle_power_w=row["idle_power_w"],
        mean_power_w=row["mean_power_w"], meter=row["meter"], time_capped=bool(row["time_capped"]),
        error=row["error"], started_at=row["started_at"], finished_at=row["finished_at"],
        versions=json.loads(row["versions"]),
        # A store older than version 5, read without upgrading it, has no conditions column. (`in row`
        # would search the row's values, not its column names.)
        conditions=json.loads(row["conditions"]) if "conditions" in row.keys() else {},  # noqa: SIM118
        latency_raw_s=row["latency_raw_s"] if "latency_raw_s" in row.keys() else None,  # noqa: SIM118
        superseded_by=row["superseded_by"] if "superseded_by" in row.keys() else None,  # noqa: SIM118
    )


# A re-measurement replaces its row where it is at least as good: a usable status first, then the
# narrower relative confidence interval (None, e.g. a failed attempt, counts as infinitely wide).
_STATUS_RANK = {"ok": 2, "unstable": 1}


def _quality(row: Any) -> tuple[int, float]:
    ci = row["latency_ci_rel"]
    return _STATUS_RANK.get(row["status"], 0), -(ci if ci is not None else math.inf)


def _new_is_faster(new: Any, old: Any) -> bool:
    """A recheck's rule: where both rows are usable the faster stays current (load only slows a
    window down); otherwise the usual quality order decides."""
    if _STATUS_RANK.get(new["status"], 0) and _STATUS_RANK.get(old["status"], 0):
        return bool(new["latency_s"] <= old["latency_s"])
    return _quality(new) >= _quality(old)


# add_measurement(keep=...): whether the new row replaces the old one
_KEEP_RULES: dict[str, Callable[[Any, Any], bool]] = {
    "better": lambda new, old: _quality(new) >= _quality(old),
    "faster": _new_is_faster,
}
