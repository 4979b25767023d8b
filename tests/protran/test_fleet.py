"""The fleet on Ray (``protran profile --executor ray``, ``protran fleet status``) on a real local cluster.

The module starts one Ray head on this machine with three simulated boards (``{"board:a": 1, "board:b":
1, "board:c": 1}``) inside a network namespace of its own, so that Ray (which binds every interface) talks over
loopback only; every driver the tests run enters the same namespace. The boards' measurements are the
simulated ones of ``tests/protran/fleet_boards.py`` (``PROTRAN_FLEET_FAKE_BOARD``): the scheduling,
retries, store and resume are real, the model export is not. Skipped, with the reason, where Ray is not
installed or the namespace or the cluster cannot be made (not root, no ``unshare``).

Trainings on the same cluster: the MLM proxy, GPTran's children and the autotune's trials as Ray tasks
give the local numbers. Other boards' rows as each loop's transfer prior are also tested without a
cluster (a loop whose measure function is local).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from protran.cli import main
from tests.protran.test_cli import TINY_SPACE

REPO = Path(__file__).resolve().parents[2]
PORT = 6379
SMALL = ["--seed-samples", "4", "--max-samples", "8", "--pool-size", "16", "--target-mse", "1e-9"]


class Cluster:
    def __init__(self, holder: subprocess.Popen, env: dict[str, str], folder: Path) -> None:
        self.holder, self.env, self.folder = holder, env, folder

    @property
    def enter(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n"]

    def command(self, *args: str) -> list[str]:
        return [*self.enter, sys.executable, "-m", "protran.cli", *args]

    def profile(self, *args: str) -> list[str]:
        return self.command("profile", "--executor", "ray", "--ray-address", f"127.0.0.1:{PORT}", *args)

    def env_for(self, board: str) -> dict[str, str]:
        return {**self.env, "PROTRAN_FLEET_FAKE_BOARD": f"tests.protran.fleet_boards:{board}"}

    def run(self, board: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.profile(*args), env=self.env_for(board), capture_output=True,
                              text=True, timeout=timeout)

    def calls(self, board: str) -> list[tuple[str, str, str]]:
        """``(board, arch_hash, outcome)`` of every call of the simulated board ``board`` (outcome ''
        where it returned, else 'killed' or 'raised')."""
        log = self.folder / "calls.log"
        found = []
        for line in log.read_text().splitlines() if log.exists() else []:
            what, name, arch = line.split()
            callable_name, _, outcome = what.partition(":")
            if callable_name == board:
                found.append((name, arch, outcome))
        return found


def _skip(reason: str) -> None:
    pytest.skip(f"no local Ray cluster for the fleet tests: {reason}")


@pytest.fixture(scope="module")
def cluster():
    try:
        import ray  # noqa: F401
    except ImportError:
        _skip("ray is not installed (pip install 'edgetran[ray]')")
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            _skip(f"`{tool}` is not available to make a private network namespace")
    ray_bin = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    folder = Path(tempfile.mkdtemp(prefix="pfleet", dir="/tmp"))  # short: Ray's socket paths must stay short
    holder = subprocess.Popen(["unshare", "-n", "sleep", "3600"], stderr=subprocess.PIPE)
    time.sleep(0.2)
    if holder.poll() is not None:
        _skip(f"unshare -n failed (it needs root): {holder.stderr.read().decode().strip() if holder.stderr else ''}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PROTRAN_TEST_FLEET_DIR": str(folder), "RAY_USAGE_STATS_ENABLED": "0"}
    made = Cluster(holder, env, folder)
    try:
        subprocess.run([*made.enter, "ip", "link", "set", "lo", "up"], check=True, capture_output=True, timeout=30)
        started = subprocess.run(
            [*made.enter, ray_bin, "start", "--head", "--port", str(PORT), "--num-cpus", "1", "--resources",
             json.dumps({"board:a": 1, "board:b": 1, "board:c": 1}), "--include-dashboard=false",
             "--disable-usage-stats", "--temp-dir", str(folder / "ray")],
            env=env, capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            _skip(f"ray start failed: {(started.stderr or started.stdout).strip().splitlines()[-1:]}")
        yield made
    finally:
        # not `ray stop`: it ends every Ray process of the machine, other users' clusters included
        _kill_namespace(holder.pid)
        holder.kill()
        holder.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _kill_namespace(holder: int) -> None:
    """SIGKILL every process in the holder's network namespace (this module's cluster), the holder aside."""
    try:
        ours = os.readlink(f"/proc/{holder}/ns/net")
    except OSError:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (holder, os.getpid()):
            continue
        try:
            if os.readlink(entry / "ns" / "net") == ours:
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            pass


def _rows(store: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT m.*, r.device FROM measurements m JOIN runs r ON r.id = m.run_id "
                            "ORDER BY m.id").fetchall()


def _runs(store: Path) -> dict[str, sqlite3.Row]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return {row["device"]: row for row in conn.execute("SELECT * FROM runs ORDER BY id")}


def _checked_json(out: str, store: Path, boards: tuple[str, ...] = ("a", "b")) -> dict:
    result = json.loads(out)
    assert set(result) == {"devices"} and set(result["devices"]) == set(boards)
    for entry in result["devices"].values():
        assert set(entry) == {"measured", "failed", "unstable", "run", "store"}
        assert entry["store"] == str(store)
    return result["devices"]


def _no_duplicates(rows) -> None:
    per_run = Counter((row["run_id"], row["arch_hash"]) for row in rows if row["superseded_by"] is None)
    assert max(per_run.values()) == 1, per_run.most_common(3)


def test_two_boards_fill_one_store_to_the_budget(cluster, tmp_path):
    store = tmp_path / "fleet.sqlite"
    done = cluster.run("steady", "--device", "a", "--device", "b", *SMALL, "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    devices = _checked_json(done.stdout, store)
    assert {name: (entry["measured"], entry["failed"]) for name, entry in devices.items()} == {"a": (8, 0),
                                                                                              "b": (8, 0)}
    rows, runs = _rows(store), _runs(store)
    assert {name: run["status"] for name, run in runs.items()} == {"a": "finished", "b": "finished"}
    assert devices["a"]["run"] == runs["a"]["id"] and devices["b"]["run"] == runs["b"]["id"]
    assert Counter(row["device"] for row in rows) == {"a": 8, "b": 8}
    _no_duplicates(rows)
    # each measurement ran on its own board, each architecture once per board (references aside)
    for row in rows:
        assert json.loads(row["conditions"])["fleet"] == {"board": row["device"], "attempt": 1}
    calls = Counter((board, arch) for board, arch, _ in cluster.calls("steady"))
    assert all(calls[(row["device"], row["arch_hash"])] == 1 for row in rows)
    # the reference architecture (drift control) is measured on the boards too, into references
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT COUNT(DISTINCT run_id) FROM \"references\"").fetchone()[0] == 2


def test_a_worker_killed_mid_measurement_is_retried_on_its_board(cluster, tmp_path):
    store = tmp_path / "fleet.sqlite"
    done = cluster.run("dies_once_on_a", "--device", "a", "--device", "b", *SMALL, "--reference-every", "0",
                       "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    devices = _checked_json(done.stdout, store)
    assert devices["a"]["measured"] == 8 and devices["a"]["failed"] == 0 and devices["b"]["measured"] == 8
    calls = cluster.calls("dies_once_on_a")
    killed = [arch for board, arch, outcome in calls if outcome == "killed"]
    assert len(killed) == 1
    rows = _rows(store)
    _no_duplicates(rows)
    again = [row for row in rows if row["device"] == "a" and row["arch_hash"] == killed[0]]
    assert len(again) == 1 and again[0]["status"] == "ok"
    assert json.loads(again[0]["conditions"])["fleet"] == {"board": "a", "attempt": 2}


def test_lost_measurements_are_retried_then_stored_failed_and_errors_are_not_retried(cluster, tmp_path):
    # board b loses every measurement (its worker dies), on board c the measurement raises, a is fine
    store = tmp_path / "fleet.sqlite"
    done = cluster.run("b_dies_c_raises", "--device", "a", "--device", "b", "--device", "c", "--seed-samples", "2",
                       "--max-samples", "3", "--pool-size", "16", "--target-mse", "1e-9", "--reference-every", "0",
                       "--max-retries", "1", "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    devices = _checked_json(done.stdout, store, ("a", "b", "c"))
    assert [(devices[name]["measured"], devices[name]["failed"]) for name in "abc"] == [(3, 0), (0, 2), (0, 2)]
    rows = _rows(store)
    assert all(row["status"] == "failed" for row in rows if row["device"] != "a")
    lost = [row["error"] for row in rows if row["device"] == "b"]
    assert all("lost on board 'b' 2 times (retried 1)" in error for error in lost), lost
    raised = [row["error"] for row in rows if row["device"] == "c"]
    assert all("RuntimeError: the runtime refused this model" in error for error in raised), raised
    calls = Counter((board, arch) for board, arch, _ in cluster.calls("b_dies_c_raises") if board != "a")
    assert sorted(calls.values()) == [1, 1, 2, 2]  # b: one try and one retry each; c: never retried


def _wait_for_rows(store: Path, count: int, driver: subprocess.Popen, timeout: float = 90,
                   until=lambda rows: True) -> None:
    """Until the store holds ``count`` rows and ``until(rows)`` holds (the driver still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()
        if store.exists():
            try:
                rows = _rows(store)
                if len(rows) >= count and until(rows):
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} rows, or not the rows awaited, after {timeout} s")


def _retried(rows) -> bool:
    return any(json.loads(row["conditions"]).get("fleet", {}).get("attempt", 1) > 1 for row in rows)


def test_worker_then_driver_killed_mid_run_resumes_without_losing_or_repeating(cluster, tmp_path):
    store = tmp_path / "fleet.sqlite"
    args = ["--device", "a", "--device", "b", "--seed-samples", "4", "--max-samples", "14", "--pool-size", "16",
            "--target-mse", "1e-9", "--reference-every", "0", "--out", str(tmp_path), "--json"]
    driver = subprocess.Popen(cluster.profile(*args), env=cluster.env_for("slow"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # until board b's retry of the measurement its killed worker lost is stored (however slow the
        # worker's restart), so that the driver is killed after the worker
        _wait_for_rows(store, 4, driver, until=_retried)
        # the status view sees the running profile and both boards (the driver's updates reach the status
        # actor asynchronously: a few polls)
        for _ in range(5):
            shown = subprocess.run(cluster.command("fleet", "status", "--ray-address", f"127.0.0.1:{PORT}",
                                                   "--json"), env=cluster.env, capture_output=True, text=True,
                                   timeout=60)
            assert shown.returncode == 0, shown.stderr
            status = json.loads(shown.stdout)
            used = [row for row in status["boards"] if row["board"] in ("a", "b")]
            if all(row["done"] for row in used):
                break
        assert {row["board"] for row in status["boards"] if row["alive"]} == {"a", "b", "c"}
        assert status["profile"] is not None and status["profile"]["store"] == str(store)
        assert all(row["run"] is not None and row["max_samples"] == 14 for row in used), json.dumps(status)
        assert [row["state"] for row in status["boards"] if row["board"] == "c"] == ["idle"]  # not in this profile
        before = _rows(store)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.communicate()
    kept = {row["id"]: (row["device"], row["arch_hash"]) for row in _rows(store)}
    assert len(kept) >= len(before) >= 3
    assert "running" in {run["status"] for run in _runs(store).values()}  # the driver was killed mid-run
    runs_before = {name: run["id"] for name, run in _runs(store).items()}

    done = subprocess.run(cluster.profile(*args, "--resume"), env=cluster.env_for("slow"),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    devices = _checked_json(done.stdout, store)
    assert {name: entry["run"] for name, entry in devices.items()} == runs_before  # resumed, not new runs
    assert devices["a"]["measured"] == 14 and devices["b"]["measured"] == 14
    rows = _rows(store)
    _no_duplicates(rows)
    assert Counter(row["device"] for row in rows) == {"a": 14, "b": 14}
    # board b's worker was killed once (before the driver was): its architecture is stored once, retried
    killed = [arch for board, arch, outcome in cluster.calls("slow") if outcome == "killed"]
    assert len(killed) == 1
    assert [json.loads(row["conditions"])["fleet"] for row in rows if row["device"] == "b" and
            row["arch_hash"] == killed[0]] == [{"board": "b", "attempt": 2}]
    assert {row["id"]: (row["device"], row["arch_hash"]) for row in rows if row["id"] in kept} == kept  # nothing lost
    assert {run["status"] for run in _runs(store).values()} == {"finished"}
    # resuming a fleet whose runs all finished re-attaches to them: nothing measured again, no new run
    again = subprocess.run(cluster.profile(*args, "--resume"), env=cluster.env_for("slow"), capture_output=True,
                           text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert _checked_json(again.stdout, store) == devices and len(_rows(store)) == len(rows)
    # no profile is running any more: the status view lists the boards and says so
    shown = subprocess.run(cluster.command("fleet", "status", "--ray-address", f"127.0.0.1:{PORT}"),
                           env=cluster.env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "no profile is running" in shown.stdout, shown.stderr


def test_a_board_joining_later_starts_from_the_other_boards_rows(cluster, tmp_path):
    # board a profiled first; then a and b with --resume: a's run is finished, b's loop fits with a's rows
    common = [*SMALL, "--reference-every", "0", "--out", str(tmp_path)]
    first = cluster.run("steady", "--device", "a", *common, "--json")
    assert first.returncode == 0, first.stderr
    done = cluster.run("steady", "--device", "a", "--device", "b", *common, "--resume")
    assert done.returncode == 0, done.stderr
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines() if line[:2] in ("a:", "b:")}
    assert "stopped: finished_before" in lines["a"] and "prior" not in lines["a"], done.stdout
    assert "8 measured" in lines["b"] and "prior: 1 other board(s), 8 rows" in lines["b"], done.stdout
    rows = _rows(tmp_path / "fleet.sqlite")
    assert Counter(row["device"] for row in rows) == {"a": 8, "b": 8}
    _no_duplicates(rows)


def test_local_executor_refuses_fleet_options(capsys, tmp_path):
    assert main(["profile", "--device", "a", "--device", "b", "--out", str(tmp_path)]) == 2
    assert "--executor ray" in capsys.readouterr().err
    assert main(["profile", "--device", "a", "--ray-address", "127.0.0.1:6379", "--out", str(tmp_path)]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err
    assert main(["profile", "--device", "a", "--fleet-prior", "off", "--out", str(tmp_path)]) == 2
    assert "--fleet-prior needs --executor ray" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing created


def test_missing_ray_is_one_line_naming_the_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["profile", "--executor", "ray", "--device", "a", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'edgetran[ray]'" in err, err
    assert not any(tmp_path.iterdir())


def test_a_real_measurement_runs_the_protocol_on_the_board(cluster, tmp_path):
    # no simulated board: the task runs measure_architecture on board a (its own worker process there)
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    store = tmp_path / "fleet.sqlite"
    done = subprocess.run(cluster.profile("--device", "a", "--seed-samples", "1", "--max-samples", "1",
                                          "--seq-len", "16", "--vocab-size", "500", "--time-cap-s", "2",
                                          "--target-rel-ci", "0.2", "--meter", "none", "--reference-every", "0",
                                          "--space", str(space), "--out", str(tmp_path), "--json"),
                          env=cluster.env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    devices = json.loads(done.stdout)["devices"]
    assert devices == {"a": {"measured": 1, "failed": 0, "unstable": 0, "run": 1, "store": str(store)}}
    (row,) = _rows(store)
    assert row["status"] == "ok" and row["latency_s"] > 0 and row["repeats"] >= 10
    conditions = json.loads(row["conditions"])
    assert conditions["fleet"] == {"board": "a", "attempt": 1} and "simulated" not in conditions


def test_the_proxy_on_ray_gives_the_local_numbers(cluster, tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("The quick brown fox jumps over the lazy dog. " * 200)
    (corpus / "validation.txt").write_text("A lazy dog sleeps while the quick fox runs away. " * 40)
    archs = tmp_path / "archs.jsonl"
    archs.write_text("\n".join(json.dumps(d) for d in (
        {"l": 2, "o": [["sa_sdp_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[256]] * 2},
        {"l": 2, "o": [["l_dft_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[512]] * 2},
    )) + "\n")
    common = ["proxy", str(archs), "--steps", "2", "--batch-size", "2", "--seq-len", "16", "--seed", "3",
              "--corpus", str(corpus), "--json"]
    assert main([*common, "--store", str(tmp_path / "local.sqlite")]) == 0
    local = json.loads(capsys.readouterr().out)
    done = subprocess.run(cluster.command(*common, "--store", str(tmp_path / "ray.sqlite"), "--executor", "ray",
                                          "--ray-address", f"127.0.0.1:{PORT}", "--num-cpus", "0.5"),
                          env=cluster.env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    on_ray = json.loads(done.stdout)
    assert [(row["hash"], row["proxy_loss"], row["steps"]) for row in on_ray] == \
        [(row["hash"], row["proxy_loss"], row["steps"]) for row in local]
    with sqlite3.connect(tmp_path / "ray.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM accuracy WHERE task = 'mlm_proxy'").fetchone()[0] == 2


def test_gptran_children_on_ray_give_the_local_numbers(cluster, tmp_path, capsys):
    # each expansion's children at once, one Ray task each (two at a time on the cluster's one CPU)
    from gptran.cli import main as gptran_main

    shipped = REPO / "datasets" / "corpus"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, size in (("train.txt", 20_000), ("validation.txt", 3_000)):
        text = (shipped / name).read_text(encoding="utf-8")[:size]
        (corpus / name).write_text(text[: text.rfind("\n")] + "\n", encoding="utf-8")
    shutil.copy(shipped / "tokenizer.json", corpus / "tokenizer.json")
    root = tmp_path / "tiny.json"
    root.write_text(json.dumps({"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}))
    common = ["run", "--model-dict", str(root), "--corpus", str(corpus), "--steps-per-child", "3", "--max-nodes",
              "6", "--num-samples", "2", "--seq-len", "32", "--batch-size", "4", "--eval-blocks", "4", "--seed", "0",
              "--json"]
    assert gptran_main([*common, "--out", str(tmp_path / "local")]) == 0
    local = json.loads(capsys.readouterr().out)
    done = subprocess.run([*cluster.enter, sys.executable, "-m", "gptran.cli", *common, "--out", str(tmp_path / "ray"),
                           "--executor", "ray", "--ray-address", f"127.0.0.1:{PORT}", "--num-cpus", "0.5"],
                          env=cluster.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    on_ray = json.loads(done.stdout)
    assert on_ray == local and len(local["nodes"]) == 6
    assert "training 2 children of node 0 at once (nodes 1, 2)" in done.stderr, done.stderr


TUNING = """\
import json, sys
import torch
from flexibert import FinetuneConfig, GlueExamples, GlueTaskData, load_glue_task, ray_executor, tune_finetuning

torch.set_num_threads(1)
data = load_glue_task()
head = lambda examples, n: GlueExamples(examples.task, examples.text_a[:n], None, examples.labels[:n], examples.source)
task = GlueTaskData(data.task, head(data.train, 64), head(data.validation, 32))
tiny = {"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}
config = FinetuneConfig(epochs=1, max_seq_len=32, device="cpu")
executor = ray_executor(sys.argv[1], num_cpus=0.5) if len(sys.argv) > 1 else None
try:
    result = tune_finetuning(tiny, task, n_trials=3, seed=0, config=config, parallel=2, executor=executor)
finally:
    if executor is not None:
        executor.close()
print(json.dumps(result.trials))
"""


def test_autotune_trials_on_ray_give_the_local_numbers(cluster, tmp_path):
    # one round of two trials at once, one Ray task each, then a round of one
    script = tmp_path / "tune.py"
    script.write_text(TUNING)
    local = subprocess.run([sys.executable, str(script)], env=cluster.env, capture_output=True, text=True,
                           timeout=300)
    assert local.returncode == 0, local.stderr
    done = subprocess.run([*cluster.enter, sys.executable, str(script), f"127.0.0.1:{PORT}"], env=cluster.env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trials = json.loads(done.stdout.splitlines()[-1])
    assert trials == json.loads(local.stdout.splitlines()[-1]) and len(trials) == 3


# -- other boards' rows as each loop's transfer prior (no cluster: the loop's measure function is local) ------

SIM = {"runtime": "onnxruntime", "batch_size": 1, "seq_len": 128, "num_threads": 1}


def test_other_boards_rows_become_a_loops_prior_once_enough_arrived(tmp_path, monkeypatch):
    from flexibert import sample_architectures
    from protran._fleet import LivePrior, simulated_board
    from protran._profile import ProfileConfig
    from protran._store import RunStore

    monkeypatch.setenv("PROTRAN_FLEET_SIM_SECONDS", "0")
    specs = sample_architectures(24, method="random", seed=1)
    with RunStore(tmp_path / "fleet.sqlite") as store:
        a, b, c = (store.create_run(name, "onnxruntime") for name in "abc")
        live = LivePrior(ProfileConfig(device="b"), [a, c])
        seen = []
        for spec in specs[:17]:
            store.add_measurement(a, simulated_board(spec, board="a", **SIM))
            prior, devices = live.current(store)
            seen.append((prior is not None, devices, live.rows))
        # none below 8 rows of board a; from 8 on, refit only after 8 more rows (the same prior between)
        assert seen[:7] == [(False, 0, 0)] * 7
        assert seen[7:15] == [(True, 1, 8)] * 8 and seen[15:] == [(True, 1, 16)] * 2
        assert live.fits == 2
        # a failed row is no row of the prior; the loop's own run is never in it
        failed = simulated_board(specs[17], board="a", **SIM)
        store.add_measurement(a, dataclasses.replace(failed, status="failed", latency_s=None, error="lost"))
        for spec in specs[:8]:
            store.add_measurement(b, simulated_board(spec, board="b", **SIM))
        assert live.current(store)[1] == 1 and live.rows == 16 and live.fits == 2
        # a second board joins once it has 8 rows: refit at once
        for spec in specs[:8]:
            store.add_measurement(c, simulated_board(spec, board="c", **SIM))
        prior, devices = live.current(store)
        assert devices == 2 and live.boards == 2 and live.rows == 25 and live.fits == 3
        # the prior predicts board a's (and c's) costs: larger models, larger predicted latency
        from flexibert import count_parameters
        from protran.surrogates import featurize

        config = ProfileConfig(device="b")
        X = featurize(specs, features=config.features, batch_size=1, seq_len=128)
        predicted = prior.columns(X, "latency_s")[:, 0]
        sizes = [count_parameters(spec) for spec in specs]
        assert predicted[sizes.index(max(sizes))] > predicted[sizes.index(min(sizes))]


def test_a_fleet_loop_fits_with_the_other_boards_rows_as_they_arrive(tmp_path, monkeypatch):
    from flexibert import sample_architectures
    from protran._fleet import LivePrior, _FleetProfiler, simulated_board
    from protran._profile import ProfileConfig
    from protran._store import RunStore

    monkeypatch.setenv("PROTRAN_FLEET_SIM_SECONDS", "0")
    config = ProfileConfig(device="b", seed_samples=3, max_samples=9, pool_size=16, target_mse=1e-12,
                           reference_every=0)
    path = tmp_path / "fleet.sqlite"
    others = sample_architectures(40, method="random", seed=100)
    with RunStore(path) as store, RunStore(path) as other:
        a = other.create_run("a", "onnxruntime")
        fits = []

        def measure(spec, **settings):  # board a's loop, elsewhere, commits two rows per row of board b
            for _ in range(2):
                done = len(other.measurements(run_id=a, status=None))
                other.add_measurement(a, simulated_board(others[done], board="a", **SIM))
            settings.pop("meter", None)
            return simulated_board(spec, board="b", **settings)

        profiler = _FleetProfiler(config, store, tmp_path, measure_fn=measure)
        profiler.live = LivePrior(config, [a])
        profiler.on_prior = lambda live: fits.append((live.boards, live.rows))
        summary = profiler.run()
    assert summary.prior_devices == 1 and summary.measured_ok >= 8
    # no prior at the first fit (6 rows of a); from 8 rows of a on, a refit after every 8 more
    assert fits[:2] == [(1, 8), (1, 16)]
    assert all(later - earlier >= 8 for (_, earlier), (_, later) in zip(fits, fits[1:]))
