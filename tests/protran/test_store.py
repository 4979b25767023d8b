"""The SQLite run store: runs, measurements, schema versioning, errors, ProTran dataset.json."""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flexibert import ArchSpec, embed, model_hash
from protran._protocol import MeasurementResult
from protran._store import (
    SCHEMA_VERSION,
    DatasetFormatError,
    RunLeasedError,
    RunStore,
    RunStoreError,
    load_rows,
)

TINY = {"l": 2, "o": [["sa_sdp_64", "sa_sdp_64"]] * 2, "h": [128, 128], "f": [[512], [512]]}
MINI = {"l": 4, "o": [["sa_sdp_64"] * 4] * 4, "h": [256] * 4, "f": [[1024]] * 4}
MIXED = {"l": 2, "o": [["sa_wma_64", "l_dft_64"], ["l_dct_32", "c_9_32", "c_5_32", "c_13_32"]],
         "h": [128, 128], "f": [[256, 256], [1024]]}


def result(model_dict=TINY, **overrides) -> MeasurementResult:
    spec = ArchSpec.from_model_dict(model_dict)
    fields = dict(
        arch_hash=model_hash(spec), model_dict=spec.to_model_dict(), runtime="onnxruntime", batch_size=1,
        seq_len=128, num_threads=1, status="ok", latency_s=0.0123, latency_ci_rel=0.01, latency_iqr_s=0.0004,
        repeats=40, versions={"onnxruntime": "1.31.1"},
    )
    fields.update(overrides)
    return MeasurementResult(**fields)


def protran_entry(model_dict, latency=1.5, energy=4.5, peak_power=3.0) -> tuple[str, dict]:
    spec = ArchSpec.from_model_dict(model_dict)
    return model_hash(spec), {
        "model_dict": spec.to_model_dict(),
        "model_type": "shallow_narrow",
        "embedding": str(embed(spec)),
        "performance": {"latency": latency, "energy": energy, "peak_power": peak_power},
    }


def write_dataset(path: Path, entries: list[tuple[str, dict]]) -> Path:
    path.write_text(json.dumps(dict(entries)))
    return path


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "runs.sqlite") as opened:
        yield opened


# -- runs and measurements ----------------------------------------------------------------------------


def test_new_store_is_versioned_and_in_wal_mode(store):
    assert store.schema_version == SCHEMA_VERSION
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_create_and_get_run(store):
    run_id = store.create_run("rpi4", "onnxruntime", batch_size=2, seq_len=64, num_threads=4, meter="ina219",
                              host={"cpu_model": "Cortex-A72"}, versions={"numpy": "2.0"}, config={"seed": 3})
    run = store.get_run(run_id)
    assert (run.device, run.runtime, run.batch_size, run.seq_len, run.num_threads, run.meter) == (
        "rpi4", "onnxruntime", 2, 64, 4, "ina219")
    assert run.host == {"cpu_model": "Cortex-A72"} and run.config == {"seed": 3} and run.status == "running"
    assert store.devices() == ["rpi4"]
    with pytest.raises(KeyError, match="run 99"):
        store.get_run(99)
    with pytest.raises(ValueError, match="batch_size"):
        store.create_run("rpi4", "onnxruntime", batch_size=0)


def test_find_resumable_run_matches_settings_and_skips_finished_runs(store):
    first = store.create_run("rpi4", "onnxruntime", 1, 128, 4, config={"pool": 64})
    assert store.find_resumable_run("rpi4", "onnxruntime", 1, 128, 4) == first
    assert store.find_resumable_run("rpi4", "onnxruntime", 1, 128, 4, config={"pool": 64}) == first
    assert store.find_resumable_run("rpi4", "onnxruntime", 1, 128, 4, config={"pool": 32}) is None
    assert store.find_resumable_run("rpi4", "torch", 1, 128, 4) is None
    assert store.find_resumable_run("rpi4", "onnxruntime", 8, 128, 4) is None
    store.set_run_status(first, "interrupted")
    assert store.find_resumable_run("rpi4", "onnxruntime", 1, 128, 4) == first
    store.set_run_status(first, "finished")
    assert store.find_resumable_run("rpi4", "onnxruntime", 1, 128, 4) is None


def test_add_measurement_round_trips_every_field(store):
    run_id = store.create_run("host", "onnxruntime")
    given = result(MIXED, energy_j=0.25, peak_power_w=6.5, idle_power_w=2.0, mean_power_w=5.0, meter="fake",
                   time_capped=True, started_at="2024-01-01T00:00:00+00:00", finished_at="2024-01-01T00:01:00+00:00")
    store.add_measurement(run_id, given)
    (stored,) = store.measurements(run_id)
    assert stored.device == "host" and stored.run_id == run_id
    assert stored.arch_hash == given.arch_hash and stored.spec == given.spec
    assert stored.embedding == embed(given.spec)
    for name in ("latency_s", "latency_ci_rel", "latency_iqr_s", "repeats", "energy_j", "peak_power_w",
                 "idle_power_w", "mean_power_w", "meter", "time_capped", "started_at", "finished_at", "versions"):
        assert getattr(stored, name) == getattr(given, name), name


def test_missing_power_stays_none_never_zero(store):
    run_id = store.create_run("host", "onnxruntime")
    store.add_measurement(run_id, result())
    (stored,) = store.measurements(run_id)
    assert stored.energy_j is None and stored.peak_power_w is None and stored.idle_power_w is None
    raw = sqlite3.connect(store.path).execute("SELECT energy_j, peak_power_w FROM measurements").fetchone()
    assert raw == (None, None)


def test_bad_measurement_values_are_refused(store):
    run_id = store.create_run("host", "onnxruntime")
    with pytest.raises(ValueError, match="energy_j"):
        store.add_measurement(run_id, result(energy_j=math.nan))
    with pytest.raises(ValueError, match="latency_s"):
        store.add_measurement(run_id, result(latency_s=-1.0))
    with pytest.raises(ValueError, match="arch_hash"):
        store.add_measurement(run_id, result(arch_hash="0" * 32))
    with pytest.raises(KeyError):
        store.add_measurement(run_id + 1, result())
    assert store.measurements(status=None) == []


def test_status_filter_and_measured_hashes(store):
    run_id = store.create_run("host", "onnxruntime")
    store.add_measurement(run_id, result(TINY))
    store.add_measurement(run_id, result(MINI, status="unstable"))
    store.add_measurement(run_id, result(MIXED, status="timeout", latency_s=None, error="killed after 5 s"))
    assert [m.status for m in store.measurements(run_id)] == ["ok"]
    assert [m.status for m in store.measurements(run_id, status=None)] == ["ok", "unstable", "timeout"]
    assert len(store.measurements(run_id, status=("ok", "unstable"))) == 2
    hashes = {model_hash(ArchSpec.from_model_dict(d)) for d in (TINY, MINI, MIXED)}
    assert store.measured_hashes(run_id) == hashes
    assert store.measured_hashes(run_id, status="ok") == {model_hash(ArchSpec.from_model_dict(TINY))}
    with pytest.raises(ValueError, match="status"):
        store.measurements(status="done")


def test_every_measurement_is_committed_at_once(tmp_path):
    path = tmp_path / "runs.sqlite"
    writer = RunStore(path)
    run_id = writer.create_run("host", "onnxruntime")
    writer.add_measurement(run_id, result())
    # A second connection (another process, or the same file after a crash) sees it without a close.
    with RunStore(path, readonly=True) as reader:
        assert len(reader.measurements(run_id)) == 1
    writer.add_measurement(run_id, result(MINI))
    with RunStore(path) as other:
        assert len(other.measurements(run_id)) == 2
    writer.close()


def test_models_table(store):
    run_id = store.create_run("host", "onnxruntime")
    store.add_model("bdt-latency", "latency", "surrogates/latency.json", metrics={"mse": 0.004}, run_id=run_id)
    (record,) = store.models("latency")
    assert (record.name, record.path, record.metrics, record.run_id) == (
        "bdt-latency", "surrogates/latency.json", {"mse": 0.004}, run_id)
    assert store.models("energy") == []


# -- schema and storage errors --------------------------------------------------------------------------


def test_newer_schema_is_refused_clearly(tmp_path):
    path = tmp_path / "runs.sqlite"
    RunStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(RunStoreError, match=r"newer.*upgrade"):
        RunStore(path)


def test_foreign_files_are_refused(tmp_path):
    text_file = tmp_path / "dataset.json"
    text_file.write_text("{}")
    with pytest.raises(RunStoreError, match="not a SQLite run store"):
        RunStore(text_file)
    assert text_file.read_text() == "{}"
    other_db = tmp_path / "other.db"
    with sqlite3.connect(other_db) as conn:
        conn.execute("CREATE TABLE things (x)")
    with pytest.raises(RunStoreError, match="not a run store"):
        RunStore(other_db)
    with pytest.raises(RunStoreError, match="does not exist"):
        RunStore(tmp_path / "absent.sqlite", readonly=True)


def test_write_to_read_only_store_raises_and_keeps_data(tmp_path):
    path = tmp_path / "runs.sqlite"
    with RunStore(path) as store:
        run_id = store.create_run("host", "onnxruntime")
        store.add_measurement(run_id, result())
    with RunStore(path, readonly=True) as readonly, pytest.raises(RunStoreError, match=str(path.name)):
        readonly.add_measurement(run_id, result(MINI))
    with RunStore(path) as store:
        assert [m.arch_hash for m in store.measurements(run_id)] == [result().arch_hash]


class _DiskFullConnection:
    """Stands in for a connection on a full disk: inserts fail the way sqlite reports it."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith("INSERT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_disk_full_raises_run_store_error_and_keeps_data(tmp_path):
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    run_id = store.create_run("host", "onnxruntime")
    store.add_measurement(run_id, result())
    store._conn = _DiskFullConnection(store._conn)
    with pytest.raises(RunStoreError, match=r"runs\.sqlite.*disk is full"):
        store.add_measurement(run_id, result(MINI))
    store._conn = store._conn._conn
    assert not store._conn.in_transaction
    store.close()
    with RunStore(path) as reopened:
        assert len(reopened.measurements(status=None)) == 1


# -- ProTran dataset.json ---------------------------------------------------------------------------------


def test_import_synthetic_dataset_names_device_and_batch_from_stem(store, tmp_path):
    path = write_dataset(tmp_path / "cpu_board_b4_r2.json", [protran_entry(TINY), protran_entry(MINI, 2.0, 5.0, 4.0)])
    run_id = store.import_protran_json(path)
    run = store.get_run(run_id)
    assert (run.device, run.batch_size, run.seq_len, run.status) == ("cpu_board_b4_r2", 4, 128, "imported")
    assert run.config["reference_runs"] == 2
    rows = store.measurements(run_id)
    assert [(m.latency_s, m.energy_j, m.peak_power_w) for m in rows] == [(1.5, 4.5, 3.0), (2.0, 5.0, 4.0)]
    assert store.get_run(store.import_protran_json(path, device="pi")).device == "pi"
    plain = write_dataset(tmp_path / "plain.json", [protran_entry(TINY)])
    assert store.get_run(store.import_protran_json(plain)).batch_size == 1


def _bad(entry_fn):
    key, entry = protran_entry(TINY)
    return entry_fn(key, entry)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda key, e: {key: {k: v for k, v in e.items() if k != "performance"}}, "field 'performance' is missing"),
        (lambda key, e: {key: {**e, "model_dict": {**e["model_dict"], "h": [128, 100]}}}, "field 'model_dict'"),
        (lambda key, e: {"0" * 32: e}, "not the hash"),
        (lambda key, e: {key: {**e, "embedding": "[1, 2, 3]"}}, "field 'embedding'"),
        (lambda key, e: {key: {**e, "performance": {**e["performance"], "latency": float("nan")}}},
         "performance.latency"),
        (lambda key, e: {key: {**e, "performance": {**e["performance"], "energy": -1.0}}}, "performance.energy"),
        (lambda key, e: {key: {**e, "performance": {**e["performance"], "peak_power": "4 W"}}},
         "performance.peak_power"),
        (lambda key, e: {key: {**e, "performance": {"energy": 1.0, "peak_power": 1.0}}},
         "performance.latency' is missing"),
        (lambda key, e: {key: {**e, "performance": {**e["performance"], "latency": None}}}, "performance.latency"),
        (lambda key, e: {key: [1, 2]}, "expected an object"),
    ],
)
def test_invalid_dataset_rows_name_key_and_field_and_import_nothing(store, tmp_path, mutate, message):
    good_key, good = protran_entry(MINI)
    data = {good_key: good, **_bad(mutate)}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))  # json writes NaN as the bare token NaN, which Python parses
    with pytest.raises(DatasetFormatError, match="bad.json") as error:
        store.import_protran_json(path)
    assert message in str(error.value)
    assert store.runs() == [] and store.measurements(status=None) == []


def test_error_names_the_row_key(store, tmp_path):
    key, entry = protran_entry(TINY)
    entry["performance"]["energy"] = float("inf")
    path = write_dataset(tmp_path / "bad.json", [protran_entry(MINI), (key, entry)])
    with pytest.raises(DatasetFormatError, match=f"row '{key}'.*performance.energy"):
        store.import_protran_json(path)


@pytest.mark.parametrize("text, message", [("{not json", "not a JSON file"), ("[1, 2]", "expected a JSON object")])
def test_non_dataset_files_are_refused(store, tmp_path, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(DatasetFormatError, match=message):
        store.import_protran_json(path)
    assert store.runs() == []


def test_export_without_meter_writes_null_energy_and_round_trips(store, tmp_path):
    run_id = store.create_run("host", "onnxruntime")
    store.add_measurement(run_id, result(TINY))
    store.add_measurement(run_id, result(MINI, energy_j=0.5, peak_power_w=7.0))
    store.add_measurement(run_id, result(MIXED, status="unstable"))  # flagged rows are not exported
    out = tmp_path / "export" / "dataset.json"
    assert store.export_protran_json(out, run_id) == 2
    data = json.loads(out.read_text())
    tiny_key = model_hash(ArchSpec.from_model_dict(TINY))
    assert data[tiny_key]["performance"] == {"latency": 0.0123, "energy": None, "peak_power": None}
    assert data[tiny_key]["model_type"] == "shallow_narrow"
    assert json.loads(data[tiny_key]["embedding"]) == embed(ArchSpec.from_model_dict(TINY))
    imported = store.import_protran_json(out, device="again")
    again = tmp_path / "again.json"
    store.export_protran_json(again, imported)
    assert json.loads(again.read_text()) == data
    assert store.measurements(imported)[0].energy_j is None


def test_export_keeps_latest_measurement_and_needs_run_id_with_several_runs(store, tmp_path):
    run_id = store.create_run("host", "onnxruntime")
    store.add_measurement(run_id, result(TINY, latency_s=1.0))
    store.add_measurement(run_id, result(TINY, latency_s=2.0))
    out = tmp_path / "d.json"
    assert store.export_protran_json(out) == 1
    assert next(iter(json.loads(out.read_text()).values()))["performance"]["latency"] == 2.0
    store.create_run("other", "torch")
    with pytest.raises(ValueError, match="pass run_id"):
        store.export_protran_json(out)


def test_load_rows_reads_json_and_run_store(store, tmp_path):
    path = write_dataset(tmp_path / "gpu_x_b8_r1.json", [protran_entry(TINY), protran_entry(MINI, energy=None)])
    rows = load_rows(path)
    assert [r.device for r in rows] == ["gpu_x_b8_r1"] * 2
    assert rows[0].spec == ArchSpec.from_model_dict(TINY) and rows[1].energy_j is None
    run_id = store.create_run("host", "onnxruntime")
    store.add_measurement(run_id, result(TINY, latency_s=1.0))
    store.add_measurement(run_id, result(TINY, latency_s=3.0))
    store.add_measurement(run_id, result(MINI, status="failed", latency_s=None))
    store.import_protran_json(path)
    from_store = load_rows(store.path)
    assert sorted((r.device, r.latency_s) for r in from_store) == [
        ("gpu_x_b8_r1", 1.5), ("gpu_x_b8_r1", 1.5), ("host", 3.0)]
    assert [r.latency_s for r in load_rows(store.path, device="host")] == [3.0]
    with pytest.raises(FileNotFoundError):
        load_rows(tmp_path / "absent.json")


# -- the public measurement data ---------------------------------------------------------------------------


def test_public_datasets_import_and_export_unchanged(shared_data, tmp_path):
    files = sorted((shared_data / "protran").glob("*.json"))
    assert files, "no ProTran datasets in the shared data"
    with RunStore(tmp_path / "all.sqlite") as store:
        for path in files:
            original = json.loads(path.read_text())
            run_id = store.import_protran_json(path)
            run = store.get_run(run_id)
            assert run.device == path.stem
            assert f"_b{run.batch_size}_" in path.stem
            assert len(store.measurements(run_id)) == len(original)
            out = tmp_path / path.name
            store.export_protran_json(out, run_id)
            assert json.loads(out.read_text()) == original
        assert store.devices() == sorted(p.stem for p in files)
    rpi = load_rows(shared_data / "protran" / "cpu_rpi_b1_r1.json")
    assert len(rpi) == 81 and rpi[0].arch_hash == "f36d5c40c770e4f787c78b43a2a09d78"
    assert rpi[0].latency_s == pytest.approx(85.87468075752258)


# -- leases: one process writes a run ---------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to tell processes apart")


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, read here independently of the store's own reader."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def lease_to(path: Path, run_id: int, pid: int, host: str | None = None, start: int | None = None) -> None:
    """Write the run's lease as another process would have taken it."""
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT OR REPLACE INTO leases (run_id, pid, host, process_start, taken_at, renewed_at)"
                     " VALUES (?, ?, ?, ?, '2024-01-01T00:00:00.000+00:00', '2024-01-01T00:00:00.000+00:00')",
                     (run_id, pid, host or socket.gethostname(), start))
    conn.close()


def test_a_new_run_is_leased_to_its_creator_until_it_ends(store, tmp_path):
    run_id = store.create_run("host", "onnxruntime")
    lease = store.lease(run_id)
    assert (lease.pid, lease.host) == (os.getpid(), socket.gethostname())
    if Path("/proc/self/stat").exists():
        assert lease.process_start == start_time(os.getpid())
    store.add_measurement(run_id, result())
    renewed = store.lease(run_id)
    assert renewed.taken_at == lease.taken_at and renewed.renewed_at >= lease.renewed_at
    assert store.take_lease(run_id).taken_at == lease.taken_at  # held by this very process: kept
    store.release_lease(run_id, "interrupted")
    assert store.lease(run_id) is None and store.get_run(run_id).status == "interrupted"
    with pytest.raises(RunLeasedError, match=r"not leased to this process.*take_lease"):
        store.add_measurement(run_id, result(MINI))  # nobody writes a run they have not resumed
    assert store.take_lease(run_id).pid == os.getpid() and store.get_run(run_id).status == "running"
    store.add_measurement(run_id, result(MINI))
    store.release_lease(run_id, "finished")
    with pytest.raises(RunStoreError, match="is finished: only a running or interrupted run can be resumed"):
        store.take_lease(run_id)
    imported = store.import_protran_json(write_dataset(tmp_path / "cpu_b1.json", [protran_entry(TINY)]))
    assert store.lease(imported) is None and len(store.measurements(imported)) == 1  # imported runs: no lease


@needs_proc
def test_a_live_holder_keeps_its_run_even_against_take_over(store, other_process):
    run_id = store.create_run("host", "onnxruntime")
    store.release_lease(run_id, "interrupted")
    lease_to(store.path, run_id, other_process.pid, start=start_time(other_process.pid))
    # still found, so that resuming names the holder rather than quietly starting a second run
    assert store.find_resumable_run("host", "onnxruntime") == run_id
    for take_over in (False, True):
        with pytest.raises(RunLeasedError) as refused:
            store.take_lease(run_id, take_over=take_over)
        message = str(refused.value)
        assert f"pid {other_process.pid} on host {socket.gethostname()!r} since 2024-01-01" in message
        assert "still running; wait for it to finish or stop it" in message and "\n" not in message
        assert refused.value.lease.pid == other_process.pid
    assert store.lease(run_id).pid == other_process.pid and store.get_run(run_id).status == "interrupted"


@needs_proc
def test_a_stale_lease_on_this_host_is_taken_over(store, other_process):
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie.kill()
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)  # killed, not yet reaped: gone, though its pid answers
    stale = {
        "exited": (exited.pid, None),
        "pid reused by another process": (other_process.pid, start_time(other_process.pid) + 1),
        "zombie": (zombie.pid, start_time(zombie.pid)),
    }
    for why, (pid, start) in stale.items():
        run_id = store.create_run("host", "onnxruntime")
        lease_to(store.path, run_id, pid, start=start)
        taken = store.take_lease(run_id)
        assert (taken.pid, taken.taken_at > "2024") == (os.getpid(), True), why
        store.add_measurement(run_id, result())
    zombie.wait()


def test_another_hosts_lease_is_taken_only_when_asked(store):
    run_id = store.create_run("host", "onnxruntime")
    lease_to(store.path, run_id, os.getpid(), host="far-away-board", start=1)
    with pytest.raises(RunLeasedError, match=r"held by pid \d+ on host 'far-away-board' since .*cannot check; wait "
                       r"for it to finish, stop it, or, if that process is gone, take the run over "
                       r"\(take_over=True; protran profile --take-over\)"):
        store.take_lease(run_id)
    assert store.take_lease(run_id, take_over=True).host == socket.gethostname()
    store.add_measurement(run_id, result())


@needs_proc
def test_a_process_that_lost_its_lease_cannot_measure_or_finish_the_run(store, other_process):
    run_id = store.create_run("host", "onnxruntime")
    store.add_measurement(run_id, result())
    lease_to(store.path, run_id, other_process.pid, start=start_time(other_process.pid))  # taken over meanwhile
    lost = rf"now held by pid {other_process.pid} .* lost its lease and stops writing"
    with pytest.raises(RunLeasedError, match=lost):
        store.add_measurement(run_id, result(MINI))
    with pytest.raises(RunLeasedError, match="lost its lease"):
        store.release_lease(run_id, "finished")
    assert len(store.measurements(run_id, status=None)) == 1
    assert store.get_run(run_id).status == "running" and store.lease(run_id).pid == other_process.pid


def test_a_version_3_store_reads_without_leases_and_upgrades_with_its_runs_free(tmp_path):
    path = tmp_path / "v3.sqlite"
    with RunStore(path) as store:
        run_id = store.create_run("old-board", "onnxruntime")
        store.add_measurement(run_id, result())
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE leases")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.close()
    with RunStore(path, readonly=True) as reader:
        assert reader.schema_version == 3 and reader.lease(run_id) is None
        assert len(reader.measurements(run_id)) == 1
    with RunStore(path) as writer:
        assert writer.schema_version == SCHEMA_VERSION == 6
        assert writer.lease(run_id) is None  # the old code leased nothing: every run starts free
        assert writer.find_resumable_run("old-board", "onnxruntime") == run_id
        assert writer.take_lease(run_id).pid == os.getpid()
        writer.add_measurement(run_id, result(MINI))
        assert len(writer.measurements(run_id)) == 2


_RACER = """
import sys
from protran._store import RunLeasedError, RunStore

store = RunStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # all start together
try:
    print("took", store.take_lease(int(sys.argv[2])).pid, flush=True)
except RunLeasedError as error:
    print("refused", error, flush=True)
sys.stdin.readline()  # stay alive, holding what was taken, until the test lets go
"""


@needs_proc
def test_processes_racing_to_resume_one_run_get_it_exactly_once(store, tmp_path):
    run_id = store.create_run("host", "onnxruntime")
    store.release_lease(run_id, "interrupted")
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(store.path), str(run_id)], cwd=REPO,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        assert [racer.stdout.readline() for racer in racers] == ["ready\n"] * 3
        for racer in racers:
            racer.stdin.write("go\n")
            racer.stdin.flush()
        outcomes = [racer.stdout.readline().split() for racer in racers]
        winners = [racer.pid for racer, outcome in zip(racers, outcomes) if outcome[0] == "took"]
        assert len(winners) == 1, outcomes
        assert [outcome[:3] for outcome in outcomes if outcome[0] == "refused"] == [["refused", "run", str(run_id)]] * 2
        assert all(f"pid {winners[0]} " in " ".join(outcome) for outcome in outcomes if outcome[0] == "refused")
        assert store.lease(run_id).pid == winners[0]
    finally:
        for racer in racers:
            racer.communicate("", timeout=30)
    assert store.take_lease(run_id).pid == os.getpid()  # the winner exited: its lease is stale


# -- references (drift control) ------------------------------------------------------------------------


def test_references_have_their_own_table_and_need_the_lease(store):
    run_id = store.create_run("board", "onnxruntime")
    store.add_measurement(run_id, result(latency_s=0.011), latency_raw_s=0.010)
    reference_id = store.add_reference(run_id, result(MINI, latency_s=0.02, conditions={"under_load": False}))
    store.add_reference(run_id, result(MINI, status="failed", latency_s=None, latency_ci_rel=None))
    (row,) = store.measurements(run_id, status=None)  # a reference is no measurement row
    assert row.latency_s == 0.011 and row.latency_raw_s == 0.010
    first, failed = store.references(run_id)
    assert (first.id, first.run_id, first.latency_s, first.latency_ci_rel, first.status) == (
        reference_id, run_id, 0.02, 0.01, "ok")
    assert first.conditions == {"under_load": False} and first.measured_at
    assert failed.status == "failed" and failed.latency_s is None
    store.release_lease(run_id, "interrupted")
    with pytest.raises(RunLeasedError, match="not leased to this process"):
        store.add_reference(run_id, result(MINI))
    assert len(store.references(run_id)) == 2


def test_a_version_5_store_upgrades_with_references_and_raw_latency(tmp_path):
    path = tmp_path / "v5.sqlite"
    with RunStore(path) as store:
        run_id = store.create_run("old-board", "onnxruntime")
        store.add_measurement(run_id, result())
    with sqlite3.connect(path) as conn:
        conn.execute('DROP TABLE "references"')
        conn.execute("ALTER TABLE measurements DROP COLUMN latency_raw_s")
        conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    conn.close()
    with RunStore(path, readonly=True) as reader:
        assert reader.schema_version == 5 and reader.references(run_id) == []
        assert reader.measurements(run_id)[0].latency_raw_s is None
    with RunStore(path) as writer:
        assert writer.schema_version == SCHEMA_VERSION == 6
        assert writer.measurements(run_id)[0].latency_raw_s is None  # the old rows were never corrected
        writer.add_reference(run_id, result(MINI))
        writer.add_measurement(run_id, result(MIXED), latency_raw_s=0.01)
        assert len(writer.references(run_id)) == 1
        assert [m.latency_raw_s for m in writer.measurements(run_id)] == [None, 0.01]


def test_a_re_measurement_supersedes_the_worse_row_and_keeps_both(tmp_path):
    with RunStore(tmp_path / "runs.sqlite") as store:
        run_id = store.create_run(device="d", runtime="onnxruntime")
        wide = store.add_measurement(run_id, result(TINY, status="unstable", latency_ci_rel=0.06))
        with pytest.raises(ValueError, match="not a row of run"):
            store.add_measurement(run_id, result(MINI), replaces=wide)
        narrow = store.add_measurement(run_id, result(TINY, latency_ci_rel=0.01), replaces=wide)
        with pytest.raises(ValueError, match="already superseded"):
            store.add_measurement(run_id, result(TINY), replaces=wide)
        failed = store.add_measurement(run_id, result(TINY, status="failed", latency_s=None), replaces=narrow)
        current = store.measurements(run_id=run_id, status=None)
        every = {row.id: row for row in store.measurements(run_id=run_id, status=None, include_superseded=True)}
    assert [row.id for row in current] == [narrow]
    assert every[wide].superseded_by == narrow and every[failed].superseded_by == narrow
    assert every[narrow].superseded_by is None


def test_a_recheck_keeps_the_faster_row_where_both_are_usable(tmp_path):
    with RunStore(tmp_path / "runs.sqlite") as store:
        run_id = store.create_run(device="d", runtime="onnxruntime")
        slow = store.add_measurement(run_id, result(TINY, latency_s=0.015, latency_ci_rel=0.005))
        with pytest.raises(ValueError, match="keep must be one of better, faster"):
            store.add_measurement(run_id, result(TINY), replaces=slow, keep="newest")
        # wider CI, but faster: under keep="better" the slow row would stay current
        fast = store.add_measurement(run_id, result(TINY, latency_s=0.010, latency_ci_rel=0.015), replaces=slow,
                                     keep="faster")
        slower = store.add_measurement(run_id, result(TINY, latency_s=0.012, latency_ci_rel=0.001), replaces=fast,
                                       keep="faster")
        failed = store.add_measurement(run_id, result(TINY, status="failed", latency_s=None), replaces=fast,
                                       keep="faster")
        current = store.measurements(run_id=run_id, status=None)
        every = {row.id: row for row in store.measurements(run_id=run_id, status=None, include_superseded=True)}
    assert [row.id for row in current] == [fast]
    assert {every[i].superseded_by for i in (slow, slower, failed)} == {fast}
