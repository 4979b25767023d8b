"""Co-design over (architecture, device, runtime) on this machine, and the winner served.

The targets are this machine's committed profiles (``datasets/profiles/epyc-cpu-*.sqlite``): ONNX
Runtime and OpenVINO in f32 and, where they have been profiled, their int8 variants
(``benchmarks/profile_local.sh`` with ``PROFILE_RUNTIMES``). For each seed, ``boshcode codesign``
(through its command line and JSON contract; the shipped NAS-Bench-BERT accuracy records; weights 0.5
accuracy and 0.5 latency: these profiles have no energy or power) searches every target twice: without
a drift charge, and with ``--runtime-drift`` of the file given by ``--drift`` (the trained model's
drift under each variant, written by ``benchmarks/precision.py``; default
``benchmarks/results/precision/drift.json``). So the table shows which runtime the search picks and
whether the measured drift moves it.

Each charged pick is then served with ``flexibert serve MODEL --runtime R --bench N --json`` under
the profiles' conditions (one thread pinned to CPU 1; ``--load``: the synthetic load on CPU 0, as
profiled), and its served p50 latency is set against the latency the search predicted for it, with
the relative error and whether it is within 15 %. Before a target's first pick is served, its
profile's reference architecture is measured in the same sitting (``serve_winner.host_speed_factor``):
the error against the prediction scaled by the host's speed is reported beside the plain one. The
served models have random weights: their latency is real, their predictions are not.

    python benchmarks/codesign_runtimes.py --seed 0 [--seeds 3] [--requests 200] [--load] [--drift FILE]

Results: ``benchmarks/results/codesign_runtimes/`` (``results.json``, ``README.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_winner import (  # noqa: E402  (the script beside it)
    PROFILE_CPUS,
    host_speed_factor,
    profile_runs,
    serve_bench,
    start_load,
    stop_load,
)

OUT = REPO / "benchmarks" / "results" / "codesign_runtimes"
PROFILES = REPO / "datasets" / "profiles"
ACCURACY = REPO / "datasets" / "accuracy" / "nasbench_bert_250.json"
DRIFT = REPO / "benchmarks" / "results" / "precision" / "drift.json"
WEIGHTS = ("--alpha", "0.5", "--beta", "0", "--gamma", "0", "--epsilon", "0.5")
TOLERANCE = 0.15


def codesign(seed: int, budget: int, drift: Path | None) -> dict:
    """``boshcode codesign --json`` over every committed profile of this machine."""
    profiles = sorted(str(path.relative_to(REPO)) for path in PROFILES.glob("epyc-cpu-*.sqlite"))
    command = [sys.executable, "-m", "boshcode.cli", "codesign", "--profile", *profiles, "--accuracy",
               str(ACCURACY.relative_to(REPO)), *WEIGHTS, "--seed", str(seed), "--budget", str(budget), "--json"]
    if drift is not None:
        command += ["--runtime-drift", str(drift)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if done.returncode != 0:
        raise SystemExit(f"boshcode codesign failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


def shown(path: Path) -> str:
    """A path as the results name it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def pick_row(result: dict, seed: int, drift: bool) -> dict:
    return {"seed": seed, "drift_charge": result["drift_charge"], "charged": drift, "device": result["device"],
            "runtime": result["runtime"], "hash": result["hash"], "model_dict": result["model_dict"],
            "performance": result["performance"], "performance_std": result["performance_std"],
            "predicted_latency_s": result["predicted"]["latency_s"],
            "predicted_latency_std_s": result["predicted_std"]["latency_s"],
            "predicted_accuracy": result["predicted"]["accuracy"], "extrapolation": result["extrapolation"],
            "search_s": result["search_s"], "targets": result["targets"]}


def serve(rows: list[dict], args: argparse.Namespace) -> None:
    """Serve each charged pick once (a pick found by several seeds is served once) and add the figures."""
    served: dict[tuple[str, str], dict] = {}
    speeds: dict[str, dict] = {}
    load = start_load() if args.load else None
    try:
        with tempfile.TemporaryDirectory(prefix="edgetran-codesign-runtimes-") as workdir:
            for row in (r for r in rows if r["charged"]):
                if row["device"] not in speeds:
                    # the host's speed now against the profile's (see serve_winner), under the same load
                    path = PROFILES / f"{row['device']}.sqlite"
                    print(f"measuring the reference architecture of {row['device']}", file=sys.stderr, flush=True)
                    speeds[row["device"]] = host_speed_factor(profile_runs(path)[0], path, args)
                key = (row["hash"], row["runtime"])
                if key not in served:
                    print(f"serving {row['hash']} in {row['runtime']}", file=sys.stderr, flush=True)
                    served[key] = serve_bench(row["model_dict"], args, Path(workdir), runtime=row["runtime"])
                    served[key]["model"] = "(temporary model_dict file)"  # the folder is gone after the run
                report, speed = served[key], speeds[row["device"]]
                p50 = report["latency_s"]["p50"]
                error = p50 / row["predicted_latency_s"] - 1.0
                scaled = None if speed["factor"] is None else p50 / (row["predicted_latency_s"] * speed["factor"]) - 1.0
                row.update({"served": report, "served_p50_s": p50, "relative_error": error,
                            "within_tolerance": abs(error) <= TOLERANCE, "host_speed": speed,
                            "relative_error_speed_scaled": scaled})
    finally:
        stop_load(load)


def readme(rows: list[dict], meta: dict) -> str:
    lines = ["# Co-design over (architecture, device, runtime), and the winner served", "",
             f"`{meta['command']}` on {meta['date']}; targets: "
             + ", ".join(f"`{t['device']}` ({t['runtime']})" for t in rows[0]["targets"]) + ".", "",
             "Weights 0.5 accuracy, 0.5 latency; budget " f"{meta['budget']}; drift file `{meta['drift_file']}` "
             f"(charges: {json.dumps(meta['drift_charge'])}). Served under one thread on CPU {meta['cpus']}"
             f"{', synthetic load on CPU 0' if meta['load'] else ', no synthetic load'}, "
             f"{meta['requests']} requests.", "",
             "| seed | drift charge | target | runtime | architecture | P ± std | predicted latency (ms) | "
             "served p50 (ms) | error | within 15 % | error, speed-scaled |", "|---" * 11 + "|"]
    for row in rows:
        served = row.get("served_p50_s")
        lines.append(
            f"| {row['seed']} | {'on' if row['charged'] else 'off'} | {row['device']} | {row['runtime']} | "
            f"{row['hash']} | {row['performance']:.4f} ± {row['performance_std']:.4f} | "
            f"{1000 * row['predicted_latency_s']:.1f} | "
            + (f"{1000 * served:.1f} | {row['relative_error']:+.1%} | {'yes' if row['within_tolerance'] else 'no'} | "
               f"{_percent(row.get('relative_error_speed_scaled'))} |" if served is not None else "| | | |"))
    charged = [row for row in rows if row["charged"]]
    within = sum(row["within_tolerance"] for row in charged)
    lines += ["", f"Charged picks served within 15 % of their predicted latency: {within} of {len(charged)}.", ""]
    speeds = {row["device"]: row["host_speed"] for row in charged if row.get("host_speed")}
    if speeds:
        lines += ["Host speed in this sitting (each target's reference architecture measured just before serving, "
                  "over its profile run's baseline; the speed-scaled error compares the served p50 with the "
                  "prediction times that factor): "
                  + "; ".join(f"`{device}` {_ms(s['reference_s'])} against {_ms(s['baseline_s'])}"
                              for device, s in speeds.items()) + ".", ""]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1%}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{1000 * value:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="first search seed (and the serving seed)")
    parser.add_argument("--seeds", type=int, default=3, help="searches per setting (seeds seed..seed+N-1)")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpus", default=PROFILE_CPUS)
    parser.add_argument("--load", action="store_true", help="the synthetic load on CPU 0 while serving")
    parser.add_argument("--drift", type=Path, default=DRIFT,
                        help="drift file of benchmarks/precision.py (default: the full grid's)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.drift = args.drift.resolve()  # the searches run from the repository root
    if not args.drift.is_file():
        raise SystemExit(f"{args.drift} is missing: run python benchmarks/precision.py --seed 0 first")
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        for drift in (False, True):
            print(f"co-design seed {seed}, drift charge {'on' if drift else 'off'}", file=sys.stderr, flush=True)
            rows.append(pick_row(codesign(seed, args.budget, args.drift if drift else None), seed, drift))
    serve(rows, args)
    meta = {"command": "python benchmarks/codesign_runtimes.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "budget": args.budget,
            "drift_file": shown(args.drift), "drift_charge": next(r["drift_charge"] for r in rows
                                                                             if r["charged"]),
            "cpus": args.cpus, "load": args.load, "requests": args.requests, "python": platform.python_version()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "picks": rows}, indent=1) + "\n")
    (args.out / "README.md").write_text(readme(rows, meta))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
