"""The fleet on Ray: do two boards finish the same work in less wall time than one, what does Ray add
per measurement, and what happens when a board is killed halfway?

Everything runs on this machine: a Ray cluster of simulated boards (``ray.cluster_utils.Cluster``: a
head and one Ray node per board, each its own raylet) driven by the real command, ``protran profile
--executor ray ... --json``, in a subprocess. The boards are simulated
(``PROTRAN_FLEET_FAKE_BOARD=protran._fleet:simulated_board``): a measurement sleeps
``--measure-s`` seconds on its board and returns a latency that grows with the parameter count, so
the loop (seeds, fits, acquisition, store) is real and a board's time is time spent elsewhere, as on
a real fleet. Three experiments, each on a fresh cluster:

1. **Two boards against one**: one board measures ``2 N`` architectures; two boards measure ``N``
   each (the same number in all). Reported: wall times and their ratio.
2. **Overhead per measurement**: the wall time per measurement between the first and the last commit
   (start-up left out) of one Ray board whose simulated measurement sleeps 0.05 s, against the same
   loop run locally (``protran.Profiler`` with an in-process board that sleeps as long).
3. **A board killed halfway**: two boards; board b's Ray node is killed (its raylet and workers,
   SIGKILL) once half its budget is stored. Reported: what board a did (it should go on undisturbed),
   how board b's loop ended, and a ``--resume`` after b rejoins: every run full, no architecture
   twice, nothing stored before the kill lost.

Run it inside a network namespace of its own (Ray binds every interface; this keeps it on loopback)::

    unshare -n bash -c 'ip link set lo up; python benchmarks/fleet.py'

Outputs (``--out``, default ``benchmarks/results/fleet/``): ``results.json`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAKE = "protran._fleet:simulated_board"


def _env(measure_s: float) -> dict[str, str]:
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "PROTRAN_FLEET_FAKE_BOARD": FAKE,
            "PROTRAN_FLEET_SIM_SECONDS": str(measure_s), "RAY_USAGE_STATS_ENABLED": "0"}


class Fleet:
    """A local Ray cluster: a head with no board, and one node per board (``add_board``)."""

    def __init__(self, measure_s: float) -> None:
        from ray.cluster_utils import Cluster

        os.environ.update(_env(measure_s))  # the raylets, and so the boards' workers, inherit it
        self.env = _env(measure_s)
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        self.nodes: dict[str, object] = {}
        self.started, self.step_times = 0.0, []

    def add_board(self, name: str) -> None:
        self.nodes[name] = self.cluster.add_node(num_cpus=0, resources={f"board:{name}": 1})
        self.cluster.wait_for_nodes()

    def kill_board(self, name: str) -> None:
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)

    def profile(self, devices: list[str], out: Path, *extra: str, timeout: float = 900) -> tuple[dict, float, str]:
        argv = [sys.executable, "-m", "protran.cli", "profile", "--executor", "ray", "--ray-address",
                self.cluster.address, *[arg for device in devices for arg in ("--device", device)],
                "--reference-every", "0", "--target-mse", "1e-9", "--pool-size", "16", "--out", str(out), "--json",
                *extra]
        started = self.started = time.monotonic()
        child = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines, self.step_times = [], []
        assert child.stderr is not None and child.stdout is not None
        for line in child.stderr:  # one progress line per stored measurement, as it is committed
            lines.append(line)
            if line.startswith("profiling "):
                self.step_times.append(time.monotonic())
        out = child.stdout.read()
        code = child.wait(timeout)
        elapsed = time.monotonic() - started
        if code != 0:
            raise RuntimeError(f"protran profile failed ({code}): {''.join(lines)[-2000:]}")
        return json.loads(out)["devices"], elapsed, "".join(lines)

    def close(self) -> None:
        self.cluster.shutdown()


def _rows(store: Path) -> list[dict]:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(
            "SELECT m.id, m.run_id, m.arch_hash, m.status, m.error, m.superseded_by, r.device FROM measurements m "
            "JOIN runs r ON r.id = m.run_id ORDER BY m.id")]


def _duplicates(rows: list[dict]) -> int:
    counts = Counter((row["run_id"], row["arch_hash"]) for row in rows if row["superseded_by"] is None)
    return sum(count - 1 for count in counts.values())


def two_against_one(n: int, measure_s: float, seed_samples: int, work: Path) -> dict:
    fleet = Fleet(measure_s)
    try:
        fleet.add_board("a")
        fleet.add_board("b")
        budget = ["--seed-samples", str(seed_samples)]
        one, one_s, _ = fleet.profile(["a"], work / "one", *budget, "--max-samples", str(2 * n))
        two, two_s, _ = fleet.profile(["a", "b"], work / "two", *budget, "--max-samples", str(n))
        alone, alone_s, _ = fleet.profile(["a", "b"], work / "alone", *budget, "--max-samples", str(n),
                                          "--fleet-prior", "off")
    finally:
        fleet.close()
    return {"architectures": 2 * n, "measure_s": measure_s, "one_board_s": round(one_s, 2),
            "two_boards_s": round(two_s, 2), "ratio": round(two_s / one_s, 3),
            "two_boards_no_fleet_prior_s": round(alone_s, 2), "ratio_no_fleet_prior": round(alone_s / one_s, 3),
            "one_board": one, "two_boards": two, "two_boards_no_fleet_prior": alone}


def _per_step(times: list[float]) -> float:
    """Seconds per measurement between the first and the last commit (start-up left out)."""
    return (times[-1] - times[0]) / (len(times) - 1)


def _local_per_step(budget: int, measure_s: float, seed_samples: int, work: Path) -> float:
    """Seconds per measurement of the same loop run in this process, its board sleeping as the Ray one."""
    from flexibert import count_parameters, model_hash
    from protran import MeasurementResult, ProfileConfig, Profiler, RunStore

    def board(spec, **settings):
        time.sleep(measure_s)
        latency_s = 1e-9 * count_parameters(spec) + 1e-4
        return MeasurementResult(arch_hash=model_hash(spec), model_dict=spec.to_model_dict(),
                                 runtime=settings["runtime"], batch_size=settings["batch_size"],
                                 seq_len=settings["seq_len"], num_threads=settings["num_threads"], status="ok",
                                 latency_s=latency_s, latency_ci_rel=0.01, repeats=10)

    times: list[float] = []
    config = ProfileConfig(device="local", seed_samples=seed_samples, max_samples=budget, pool_size=16,
                           target_mse=1e-9, reference_every=0, meter="none")
    with RunStore(work / "local.sqlite") as store:
        Profiler(config, store, work / "local", measure_fn=board,
                 progress=lambda event: times.append(time.monotonic()) if event["event"] == "measured" else None).run()
    return _per_step(times)


def overhead(budget: int, measure_s: float, seed_samples: int, work: Path) -> dict:
    fleet = Fleet(measure_s)
    try:
        fleet.add_board("a")
        _, total_s, _ = fleet.profile(["a"], work / "ray", "--seed-samples", str(seed_samples), "--max-samples",
                                      str(budget))
        ray_step = _per_step(fleet.step_times)
        startup_s = fleet.step_times[0] - fleet.started
    finally:
        fleet.close()
    local_step = _local_per_step(budget, measure_s, seed_samples, work)
    return {"budget": budget, "measure_s": measure_s, "ray_run_s": round(total_s, 2),
            "ray_start_to_first_commit_s": round(startup_s, 2), "ray_per_measurement_s": round(ray_step, 4),
            "local_per_measurement_s": round(local_step, 4),
            "ray_overhead_per_measurement_s": round(ray_step - local_step, 4)}


def killed_halfway(n: int, measure_s: float, seed_samples: int, work: Path) -> dict:
    fleet = Fleet(measure_s)
    store = work / "killed" / "fleet.sqlite"
    result: dict = {"budget_per_board": n, "measure_s": measure_s}
    try:
        fleet.add_board("a")
        fleet.add_board("b")
        killed_at: list[float] = []

        def killer() -> None:
            while True:
                try:
                    stored_b = sum(row["device"] == "b" for row in _rows(store)) if store.exists() else 0
                except sqlite3.OperationalError:
                    stored_b = 0
                if stored_b >= n // 2:
                    fleet.kill_board("b")
                    killed_at.append(time.monotonic())
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=killer, daemon=True)
        started = time.monotonic()
        thread.start()
        first, first_s, stderr = fleet.profile(["a", "b"], work / "killed", "--seed-samples", str(seed_samples),
                                               "--max-samples", str(n), "--max-retries", "1", "--board-wait-s", "5")
        thread.join(5)
        before = {row["id"]: (row["device"], row["arch_hash"]) for row in _rows(store)}
        result.update(first_run=first, first_run_s=round(first_s, 2),
                      killed_after_s=round(killed_at[0] - started, 2) if killed_at else None,
                      board_b_stopped=[line for line in stderr.splitlines() if line.startswith("protran: b:")],
                      b_failed_rows=[row["error"] for row in _rows(store) if row["device"] == "b"
                                     and row["status"] == "failed"])
        fleet.add_board("b")  # the board rejoins
        resumed, resumed_s, _ = fleet.profile(["a", "b"], work / "killed", "--seed-samples", str(seed_samples),
                                              "--max-samples", str(n), "--resume")
        rows = _rows(store)
        after = {row["id"]: (row["device"], row["arch_hash"]) for row in rows}
        result.update(resumed_run=resumed, resumed_s=round(resumed_s, 2), duplicates=_duplicates(rows),
                      lost=sum(1 for key, value in before.items() if after.get(key) != value),
                      rows_per_board=dict(Counter(row["device"] for row in rows)))
    finally:
        fleet.close()
    return result


def _readme(results: dict) -> str:
    two, over, kill = results["two_against_one"], results["overhead"], results["killed_halfway"]
    half = two["architectures"] // 2
    return f"""# Fleet on Ray: two simulated boards against one, Ray's overhead, a board killed halfway

`{results['command']}` on {results['machine']}, {results.get('wall_s', '?')} s in all. A local Ray cluster (a head
and one Ray node per board) driven by `protran profile --executor ray --json`; simulated boards
(`PROTRAN_FLEET_FAKE_BOARD=protran._fleet:simulated_board`: a measurement sleeps on its board), so the
active-learning loop, scheduling, store and resume are real and the model export is not. Seeded (`--seed 0`
of the profiler); wall times vary with the machine's load.

## Two boards against one

| | architectures | measurement | wall time |
|---|---|---|---|
| one board (a) | {two['architectures']} | {two['measure_s']} s | {two['one_board_s']} s |
| two boards (a, b: {half} each) | {two['architectures']} | {two['measure_s']} s | {two['two_boards_s']} s |
| two boards, `--fleet-prior off` | {two['architectures']} | {two['measure_s']} s | \
{two['two_boards_no_fleet_prior_s']} s |

Ratio two/one: **{two['ratio']}** with each board's loop fitting the other board's rows as its transfer
prior (the default), **{two['ratio_no_fleet_prior']}** with `--fleet-prior off` (0.5 would be perfect; the
rest is the driver's start, the boards' probe and the loops' fits, which share the driver's one Python
process). A fit with the prior (bootstrapped ridge and trees, cross-validated) costs the driver about a
second, one without it about a tenth of that: against a simulated measurement of {two['measure_s']} s that
is a large share of a board's time (all the more on one core, where the two loops' fits queue); against a
real measurement of tens of seconds it is noise.

## Ray's overhead per measurement

Wall time per measurement between the first and the last commit of {over['budget']} measurements (each
simulated measurement sleeps {over['measure_s']} s; the loop's fits and acquisition are included in both):
one Ray board {over['ray_per_measurement_s']} s, the same loop run locally (`protran.Profiler` with an
in-process board) {over['local_per_measurement_s']} s. Ray adds **{over['ray_overhead_per_measurement_s']} s**
per measurement (task submission, scheduling on the board's resource, result transfer, the board-presence
check and status updates), against seconds to minutes per real measurement. Starting (connecting to the
cluster, probing the board, the board's first Ray worker) took {over['ray_start_to_first_commit_s']} s
before the first commit.

## Board b killed halfway

Budget {kill['budget_per_board']} per board, {kill['measure_s']} s per measurement; board b's Ray node killed
(SIGKILL of its raylet and workers) {kill['killed_after_s']} s in, when half of b's budget was stored,
with `--max-retries 1 --board-wait-s 5`.

- First run ({kill['first_run_s']} s): `{json.dumps(kill['first_run'])}`
- Board b's loop: {'; '.join(kill['board_b_stopped']) or 'no stop line'}
- b's failed rows: {json.dumps(kill['b_failed_rows'])}
- After b rejoined, `--resume` ({kill['resumed_s']} s): `{json.dumps(kill['resumed_run'])}`;
  rows per board {json.dumps(kill['rows_per_board'])}, duplicates {kill['duplicates']}, rows lost {kill['lost']}.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="architectures per board with two boards (default 10)")
    parser.add_argument("--measure-s", type=float, default=1.0, help="simulated seconds per measurement")
    parser.add_argument("--seed-samples", type=int, default=4)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fleet"))
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bfleet", dir="/tmp") as folder:
        work = Path(folder)
        results = {
            "command": " ".join(["python benchmarks/fleet.py", *(argv if argv is not None else sys.argv[1:])]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))})",
            "two_against_one": two_against_one(args.n, args.measure_s, args.seed_samples, work),
            "overhead": overhead(2 * args.n, 0.05, args.seed_samples, work),
            "killed_halfway": killed_halfway(args.n, args.measure_s, args.seed_samples, work),
        }
    results["wall_s"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "README.md").write_text(_readme(results))
    print(json.dumps({key: results[key] for key in ("two_against_one", "overhead")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
