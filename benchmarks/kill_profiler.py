"""Kill the profiler: does a ``protran profile`` killed with SIGKILL leave a measuring worker behind,
or lose or duplicate a measurement once it is resumed?

The benchmark runs a real ``protran profile`` on a tiny design space (two-layer, 128-wide models at
sequence length 16: about five seconds per measurement, most of it the worker's start) into a fresh
run store, in a process group of its own, and kills that group with SIGKILL at seeded moments: some
at a random time after the start (while the profiler imports, fits surrogates or waits on a worker),
some shortly after a measuring worker has appeared. After each kill it lists the measuring workers
still running (``protran._measure_worker`` in ``/proc/*/cmdline``, marked as this benchmark's by an
environment variable they inherit) and counts as orphans those alive after ``--grace-s`` seconds;
it then resumes with ``--resume``. The last resume runs to the end. The store is then checked:

* lost rows: a measurement whose commit the profiler reported (its progress line, printed after the
  commit) that is not in the store, or a gap in the measurement ids (a row removed after its commit);
* duplicates: an architecture measured twice within one run; more than one run;
* ``PRAGMA integrity_check``.

A resume the store refuses (for instance a run lease still held by the killed process) stops the
benchmark and is reported, never worked around.

Outputs (``--out``, default ``benchmarks/results/kill_profiler/``): ``results.json`` (every kill and
the checks) and ``README.md``.

Usage::

    python benchmarks/kill_profiler.py --seed 0            # 20 kills, about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAG_VARIABLE = "KILL_PROFILER_TAG"
WORKER_MODULE = b"protran._measure_worker"
TINY_SPACE = """\
encoder_layers: [2]
hidden_size: [128]
attention_heads: [2, 4]
operation_types: [sa_sdp, l_dft, c_5]
feed_forward_depth: [1]
feed_forward_dims: [256, 512]
"""
# "profiling 3/24  elapsed 0:00:15  ETA 0:01:40  659c306a ok, latency 0.27 ms, 3 ok"
COMMITTED = re.compile(r"^profiling \d+/\d+ .*\b([0-9a-f]{8}) (ok|unstable|failed|timeout|oom),", re.MULTILINE)


# -- processes -------------------------------------------------------------------------------------------


def our_workers(tag: str) -> list[int]:
    """Pids of running (not zombie) measuring workers that carry this benchmark's tag."""
    marker = f"{TAG_VARIABLE}={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if WORKER_MODULE not in (entry / "cmdline").read_bytes():
                continue
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if _state(entry) in ("Z", "X"):
                continue
        except OSError:  # exited meanwhile, or not ours to read
            continue
        pids.append(int(entry.name))
    return pids


def _state(entry: Path) -> str:
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_for_workers_to_go(tag: str, grace_s: float) -> tuple[list[int], float]:
    """Poll until no worker of ours runs or ``grace_s`` passes: (those still running, seconds waited)."""
    started = time.monotonic()
    while (left := our_workers(tag)) and time.monotonic() - started < grace_s:
        time.sleep(0.02)
    return left, time.monotonic() - started


def kill_pids(pids: list[int]) -> None:
    """SIGKILL orphans of this benchmark (by pid), so that they do not disturb the next measurement."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_profiler(args: argparse.Namespace, work: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``protran profile --resume`` in a new session (its own process group), output to ``log``."""
    command = [
        sys.executable, "-m", "protran.cli", "profile", "--device", "killed", "--space", str(work / "tiny.yaml"),
        "--seed", str(args.seed), "--seed-samples", str(args.seed_samples), "--max-samples", str(args.max_samples),
        "--patience", "1000", "--seq-len", "16", "--vocab-size", "500", "--time-cap-s", "2",
        "--target-rel-ci", "0.2", "--meter", "none", "--out", str(work / "runs"), "--resume",
    ]
    with open(log, "w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)


# -- one kill --------------------------------------------------------------------------------------------------


def choose_moment(rng: random.Random, max_delay_s: float) -> dict:
    """Half the kills at a random time after the start, half shortly after a worker has appeared."""
    if rng.random() < 0.5:
        return {"mode": "after_start", "delay_s": rng.uniform(0.5, max_delay_s)}
    return {"mode": "after_worker_start", "delay_s": rng.uniform(0.0, 2.5)}


def wait_for_moment(profiler: subprocess.Popen, moment: dict, tag: str) -> bool:
    """Sleep until the kill; False when the profiler ended by itself first."""
    if moment["mode"] == "after_worker_start":
        while not our_workers(tag):
            if profiler.poll() is not None:
                return False
            time.sleep(0.02)
    deadline = time.monotonic() + moment["delay_s"]
    while time.monotonic() < deadline:
        if profiler.poll() is not None:
            return False
        time.sleep(0.01)
    return profiler.poll() is None


def kill_once(args: argparse.Namespace, index: int, rng: random.Random, work: Path, env: dict[str, str],
              tag: str) -> dict:
    """Start the profiler, SIGKILL its process group at a seeded moment, and look for orphaned workers."""
    moment = choose_moment(rng, args.max_delay_s)
    log = work / f"launch-{index:02d}.log"
    started = time.monotonic()
    profiler = start_profiler(args, work, env, log)
    record = {"index": index, **moment, "killed": False}
    if not wait_for_moment(profiler, moment, tag):
        profiler.wait()
        return {**record, "returncode": profiler.returncode, "seconds": time.monotonic() - started,
                "log_tail": log.read_text()[-2000:]}
    workers = our_workers(tag)
    os.killpg(profiler.pid, signal.SIGKILL)
    killed_at_s = time.monotonic() - started
    profiler.wait()
    orphans, waited = wait_for_workers_to_go(tag, args.grace_s)
    kill_pids(orphans)
    return {**record, "killed": True, "at_s": killed_at_s, "workers_at_kill": len(workers),
            "workers_gone_after_s": waited if workers and not orphans else None, "orphans": len(orphans)}


# -- the store ---------------------------------------------------------------------------------------------------


def reported_commits(work: Path, pattern: str = "launch-*.log") -> list[str]:
    """Hash prefixes of every measurement the profiler reported as committed, over the launches' logs."""
    logs = sorted(work.glob(pattern))
    return [match.group(1) for log in logs for match in COMMITTED.finditer(log.read_text())]


def check_store(path: Path, reported: list[str]) -> dict:
    """Lost rows, duplicates and SQLite's own integrity check of the store after every kill."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        ids = [row[0] for row in conn.execute("SELECT id FROM measurements ORDER BY id")]
        rows = conn.execute("SELECT run_id, arch_hash, status FROM measurements ORDER BY id").fetchall()
        runs = conn.execute("SELECT id, status FROM runs ORDER BY id").fetchall()
    hashes = [arch_hash for _, arch_hash, _ in rows]
    per_run = {(run_id, arch_hash) for run_id, arch_hash, _ in rows}
    missing_reports = sorted({prefix for prefix in reported if not any(h.startswith(prefix) for h in hashes)})
    statuses: dict[str, int] = {}
    for _, _, status in rows:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "rows": len(rows), "statuses": statuses, "runs": [{"id": i, "status": s} for i, s in runs],
        "integrity_check": integrity, "ids_are_1_to_n": ids == list(range(1, len(ids) + 1)),
        "id_gaps": (ids[-1] - len(ids)) if ids else 0,  # ids missing from 1..max: rows removed after commit
        "reported_commits": len(reported), "lost": len(missing_reports), "lost_hashes": missing_reports,
        "duplicated": len(rows) - len(per_run),
    }


# -- the report ---------------------------------------------------------------------------------------------------


def summarise(kills: list[dict], store: dict, final: dict, seconds: float) -> dict:
    done = [k for k in kills if k["killed"]]
    gone = [k["workers_gone_after_s"] for k in done if k["workers_gone_after_s"] is not None]
    return {
        "kills": len(done), "kills_with_worker_running": sum(k["workers_at_kill"] > 0 for k in done),
        "orphans": sum(k["orphans"] for k in done) + final.get("orphans", 0),
        "slowest_worker_exit_s": max(gone) if gone else None,
        "rows": store["rows"], "lost": store["lost"] + store["id_gaps"],
        "duplicated": store["duplicated"], "runs": len(store["runs"]), "integrity_check": store["integrity_check"],
        "final_returncode": final.get("returncode"), "refused": final.get("refused"), "wall_s": seconds,
    }


def markdown(summary: dict, store: dict, meta: dict) -> str:
    s = summary
    table = [
        ("kills (SIGKILL to the profiler's process group)", s["kills"]),
        ("... of which while a measuring worker ran", s["kills_with_worker_running"]),
        (f"orphaned workers (alive {meta['grace_s']:g} s after a kill)", s["orphans"]),
        ("slowest worker exit after a kill", f"{s['slowest_worker_exit_s']:.2f} s" if s["slowest_worker_exit_s"]
         is not None else "n/a"),
        ("rows in the store", f"{s['rows']} ({', '.join(f'{k} {v}' for k, v in store['statuses'].items())})"),
        ("reported commits (before the last resume)",
         f"{store['reported_commits']} ({store['commits_before_last_resume']})"),
        ("lost rows", s["lost"]),
        ("duplicated rows (same architecture twice in a run)", s["duplicated"]),
        ("runs in the store", s["runs"]),
        ("PRAGMA integrity_check", s["integrity_check"]),
        ("final resume", "refused: " + s["refused"] if s["refused"] else f"exit code {s['final_returncode']}"),
        ("wall time", f"{s['wall_s']:.0f} s"),
    ]
    lines = [
        "# Killing the profiler",
        "",
        f"Generated by `{meta['command']}` in {meta['seconds']:.0f} s wall time with {meta['python']} on "
        f"{meta['cpus']} logical CPUs. A real `protran profile` ({meta['max_samples']} measurements of a tiny design "
        "space, about five seconds each) killed with SIGKILL at seeded moments and resumed with `--resume` each "
        f"time; the last resume runs to the end. Each kill falls either 0.5-{meta['max_delay_s']:g} s after the "
        "profiler's start or 0-2.5 s after a measuring worker has appeared (seeded, half each). A worker's exit "
        "is timed from the moment the killed profiler has been reaped. See the docstring of "
        "`benchmarks/kill_profiler.py` for the checks.",
        "",
        "| figure | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in table],
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments and the profiler (default 0)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs before the last resume (default 20)")
    parser.add_argument("--seed-samples", type=int, default=8)
    parser.add_argument("--max-samples", type=int, default=24)
    parser.add_argument("--max-delay-s", type=float, default=10.0,
                        help="latest kill after a start, for kills at a random time (default 10)")
    parser.add_argument("--grace-s", type=float, default=2.0,
                        help="a worker still running this long after a kill is an orphan (default 2)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "kill_profiler")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict]:
    """The kills, then the last resume (its record has 'refused' when the store would not resume)."""
    (work / "tiny.yaml").write_text(TINY_SPACE)
    tag = f"{os.getpid()}-{args.seed}"
    env = {**os.environ, TAG_VARIABLE: tag,
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    rng = random.Random(args.seed)
    kills: list[dict] = []
    for index in range(args.kills):
        record = kill_once(args, index, rng, work, env, tag)
        kills.append(record)
        print(json.dumps({k: v for k, v in record.items() if k != "log_tail"}), flush=True)
        if not record["killed"]:  # ended by itself: finished, or refused to resume
            return kills, _ended(record)
    log = work / "launch-final.log"
    profiler = start_profiler(args, work, env, log)
    profiler.wait()
    orphans, _ = wait_for_workers_to_go(tag, args.grace_s)
    kill_pids(orphans)
    return kills, _ended({"returncode": profiler.returncode, "log_tail": log.read_text()[-2000:],
                          "orphans": len(orphans)})


def _ended(record: dict) -> dict:
    refused = None
    if record["returncode"] != 0:
        refused = record["log_tail"].strip().splitlines()[-1] if record["log_tail"].strip() else "no output"
    return {"returncode": record["returncode"], "refused": refused, "orphans": record.get("orphans", 0)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path("/proc/self/cmdline").exists():
        raise SystemExit("kill_profiler.py lists processes through /proc: run it on Linux")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kill-profiler-") as scratch:
        work = Path(scratch)
        kills, final = run(args, work)
        store = check_store(work / "runs" / "killed.sqlite", reported_commits(work))
        store["commits_before_last_resume"] = len(reported_commits(work, "launch-[0-9]*.log"))
    seconds = time.perf_counter() - started
    summary = summarise(kills, store, final, seconds)
    meta = {"command": "python benchmarks/kill_profiler.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "python": f"Python {platform.python_version()}", "cpus": os.cpu_count(), "seconds": seconds,
            "seed": args.seed, "max_samples": args.max_samples, "seed_samples": args.seed_samples,
            "max_delay_s": args.max_delay_s, "grace_s": args.grace_s}
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"meta": meta, "summary": summary, "store": store, "final": final, "kills": kills}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "README.md").write_text(markdown(summary, store, meta))
    print(markdown(summary, store, meta))
    return 0 if summary["orphans"] == 0 and summary["lost"] == 0 and summary["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
