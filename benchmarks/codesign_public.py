"""BOSHCODE against its baselines and ablations on the public boards (the paper's Fig. 15 and table).

One oracle is fitted on the hardware profiles and the accuracy data (seed 0); every method then
searches it with the same budget, the same weights of P (0.5, 0.2, 0.2, 0.1 by default, the paper's)
and, for each seed, the same initial sample:

- ``boshcode``: co-design over every usable device;
- ``hw_nas``: BOSHCODE on one fixed device, the one co-design picked most often over the seeds;
- ``nas``: vanilla NAS, accuracy alone, then the best device for the most accurate architecture;
- ``no_aleatoric``: BOSHCODE with UCB = mu + k1 * sigma (k2 = 0);
- ``random``, ``gbrt``, ``gpr``, ``rf``: random search and Bayesian optimisation on scikit-learn.

Five seeds, ``--seed`` .. ``--seed + 4``. Writes ``results.json`` (every run: best P, its pair, wall
time, the P of every evaluation), ``README.md`` (median / min / max best P and median wall time per
method) and ``convergence.png`` (best P so far against evaluations, median and inter-quartile band)
to ``benchmarks/results/codesign_public/``, after timing the ``boshcode codesign`` command once end
to end with the default budget.

Profiles default to the four public boards in ``../shared/data/protran`` plus every run store in
``datasets/profiles/*.sqlite``; ``--profile`` replaces that list. Devices that lack a measure P needs
(no power meter: no energy or peak power) are left out of the search and listed in the results.

Usage::

    taskset -c 0 python benchmarks/codesign_public.py --seed 0
    taskset -c 0 python benchmarks/codesign_public.py --seed 0 --profile ../shared/data/protran/cpu_rpi_b1_r1.json \\
        --profile datasets/profiles/epyc-cpu-onnxruntime.sqlite
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from boshcode import (
    BaselineSettings,
    SearchSettings,
    SurrogateOracle,
    Weights,
    codesign,
    make_problem,
    run_baseline,
)
from boshcode.cli import ORACLE_SEED
from flexibert import count_parameters

OUT = REPO / "benchmarks" / "results" / "codesign_public"
N_SEEDS = 5
PAPER_WEIGHTS = (0.5, 0.2, 0.2, 0.1)
ABLATIONS = ("boshcode", "hw_nas", "nas", "no_aleatoric")
BASELINES = ("random", "gbrt", "gpr", "rf")
LABELS = {
    "boshcode": "BOSHCODE (co-design)",
    "hw_nas": "HW-NAS (BOSHCODE, one device)",
    "nas": "vanilla NAS (accuracy, then device)",
    "no_aleatoric": "BOSHCODE without aleatoric term",
    "random": "random search",
    "gbrt": "GBRT-BO",
    "gpr": "GP-BO (L-BFGS)",
    "rf": "random-forest BO",
}


def data_dir() -> Path:
    return Path(os.environ.get("EDGETRAN_DATA", REPO.parent / "shared" / "data"))


def default_profiles() -> list[Path]:
    public = sorted((data_dir() / "protran").glob("*.json"))
    if not public:
        raise SystemExit(f"no public profiles in {data_dir() / 'protran'} (set EDGETRAN_DATA or pass --profile)")
    return public + sorted((REPO / "datasets" / "profiles").glob("*.sqlite"))


def shown(path: Path) -> str:
    """A path as a user beside this checkout would type it (relative to the repository root)."""
    return os.path.relpath(Path(path).resolve(), REPO)


def machine() -> dict:
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "affinity": affinity,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "platform": platform.platform()}


# -- one run -------------------------------------------------------------------------------------------


def chosen_so_far(result) -> list[float]:
    """P of the pair the method would return after each evaluation.

    The highest P seen for every method but vanilla NAS, which returns the most accurate
    architecture (whatever its P) and only at the end the best device for it.
    """
    history = np.array(result.history)
    if not result.method.endswith("-nas"):
        return np.maximum.accumulate(history).tolist()
    accuracy = [e.means["accuracy"] for e in result.evaluations]
    curve, best = [], 0
    for i, kind in enumerate(result.kinds):
        if kind != "device-selection" and accuracy[i] > accuracy[best]:
            best = i
        curve.append(float(history[best]))
    curve[-1] = result.best.performance
    return curve


def describe_run(name: str, seed: int, result, problem, wall_s: float) -> dict:
    best = problem.describe(result.best)
    spec = problem.spec(result.best.embedding)
    return {
        "method": name, "seed": seed, "best_performance": result.best.performance, "wall_s": wall_s,
        "device": best["device"], "hash": best["hash"], "model_dict": best["model_dict"],
        "layers": spec.num_layers, "hidden_sizes": list(spec.hidden_sizes),
        "params_millions": count_parameters(spec) / 1e6, "predicted": best["predicted"],
        "predicted_std": best["predicted_std"], "evaluations": len(result.evaluations),
        "invalid_rows_learnt": result.n_invalid_rows, "kinds": dict(Counter(result.kinds)),
        "history": result.history, "chosen_so_far": chosen_so_far(result),
    }


def run_one(name: str, oracle, weights: Weights, seed: int, budget: int, device: str | None = None) -> dict:
    started = time.perf_counter()
    if name in ABLATIONS:
        mode = "codesign" if name == "boshcode" else name
        result, problem = codesign(oracle, weights, mode=mode, device=device,
                                   settings=SearchSettings(budget=budget, seed=seed))
    else:
        problem = make_problem(oracle, weights)
        result = run_baseline(name, problem, BaselineSettings(budget=budget, seed=seed))
    run = describe_run(name, seed, result, problem, time.perf_counter() - started)
    print(f"  {name:<13} seed {seed}: best P {run['best_performance']:.4f} on {run['device']} "
          f"({run['layers']} layers, {run['params_millions']:.0f} M parameters) in {run['wall_s']:.1f} s", flush=True)
    return run


# -- the command line, once ----------------------------------------------------------------------------


def time_cli(profiles: list[Path], accuracy: Path, weights: tuple[float, ...], seed: int) -> dict:
    command = [sys.executable, "-m", "boshcode.cli", "codesign"]
    for profile in profiles:
        command += ["--profile", str(profile)]
    command += ["--accuracy", str(accuracy), "--alpha", str(weights[0]), "--beta", str(weights[1]),
                "--gamma", str(weights[2]), "--epsilon", str(weights[3]), "--seed", str(seed), "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the boshcode command failed:\n{done.stderr}")
    out = json.loads(done.stdout)
    typed = ["boshcode", *(shown(Path(arg)) if Path(arg).exists() else arg for arg in command[3:])]
    return {"command": shlex.join(typed), "wall_s": wall_s, "elapsed_s_reported": out["elapsed_s"],
            "search_s": out["search_s"], "performance": out["performance"], "device": out["device"],
            "hash": out["hash"], "evaluations": len(out["history"]), "stderr": done.stderr.strip()}


# -- summaries -----------------------------------------------------------------------------------------


def summarise(runs: list[dict]) -> dict:
    best = np.array([run["best_performance"] for run in runs])
    median_run = sorted(runs, key=lambda run: run["best_performance"])[len(runs) // 2]
    return {
        "median_best_performance": float(np.median(best)), "min_best_performance": float(best.min()),
        "max_best_performance": float(best.max()), "mean_best_performance": float(best.mean()),
        "median_wall_s": float(np.median([run["wall_s"] for run in runs])),
        "devices": dict(Counter(run["device"] for run in runs)),
        "median_run": {key: median_run[key] for key in ("seed", "device", "layers", "hidden_sizes",
                                                          "params_millions", "hash", "predicted")},
    }


def plot_convergence(results: dict, path: Path, budget: int, n_initial: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    x = np.arange(1, budget + 1)
    lowest = []
    for i, (name, runs) in enumerate(results.items()):
        curves = np.array([run["chosen_so_far"] for run in runs])
        q25, q50, q75 = np.percentile(curves, [25, 50, 75], axis=0)
        style = "-" if name in ("boshcode", *BASELINES) else "--"
        color = f"C{i}"
        ax.plot(x, q50, style, color=color, lw=2.2 if name == "boshcode" else 1.4, label=LABELS[name])
        ax.fill_between(x, q25, q75, color=color, alpha=0.12, lw=0)
        lowest.append(q25[n_initial - 1])
    ax.set_ylim(min(lowest) - 0.002, None)
    ax.axvline(n_initial, color="grey", lw=0.8, ls=":")
    ax.text(n_initial, 0.02, " end of the shared initial sample", color="grey", fontsize=8,
            transform=ax.get_xaxis_transform())
    ax.set_xlim(1, budget)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best performance P so far")
    ax.set_title(f"Co-design on the public boards: median and inter-quartile range over {N_SEEDS} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_readme(report: dict, path: Path) -> None:
    lines = [
        "# Co-design on the public boards: BOSHCODE, its ablations and baselines",
        "",
        f"Generated by `{report['command']}` in {report['total_wall_s']:.0f} s wall time on one core "
        f"(seeds {report['seeds']}, budget {report['budget']} evaluations including the "
        f"{report['n_initial']}-pair initial sample that every method shares, weights alpha, beta, gamma, epsilon = "
        f"{', '.join(f'{w:g}' for w in report['weights'])}). Oracle: ProTran surrogates fitted on "
        f"{', '.join(report['devices_profiled'])} and the accuracy surrogate ({report['oracle_fit_s']:.1f} s).",
        "",
        "Normalisation bounds (identical for every method): " + ", ".join(
            f"{name} {pair}" for name, pair in report["bounds"].items() if pair is not None) + ".",
        "",
    ]
    if report["devices_left_out"]:
        lines += [f"Left out of the search (P needs measures they lack): {report['devices_left_out']}.", ""]
    lines += [
        "| method | median best P | min | max | median wall s | devices chosen | median run's pair |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, summary in report["summary"].items():
        run = summary["median_run"]
        devices = ", ".join(f"{device} x{count}" for device, count in summary["devices"].items())
        pair = (f"{run['layers']} layers, h {run['hidden_sizes']}, {run['params_millions']:.0f} M params "
                f"on {run['device']}")
        lines.append(f"| {LABELS[name]} | {summary['median_best_performance']:.4f} | "
                     f"{summary['min_best_performance']:.4f} | {summary['max_best_performance']:.4f} | "
                     f"{summary['median_wall_s']:.1f} | {devices} | {pair} |")
    cli = report["cli"]
    lines += [
        "",
        f"HW-NAS searched `{report['hw_nas_device']}`, the device co-design picked most often. Vanilla NAS "
        "reports the pair it returns (its most accurate architecture on its best device), not the highest P it "
        "happened to evaluate.",
        "",
        "![convergence](convergence.png)",
        "",
    ]
    if cli is not None:
        lines += [
            f"The command, end to end with the default budget (oracle fitting included): "
            f"**{cli['wall_s']:.1f} s** wall time; best P {cli['performance']:.4f} on {cli['device']} "
            f"({cli['evaluations']} evaluations).",
            "",
            "```",
            cli["command"],
            "```",
            "",
        ]
    lines += [f"Machine: {report['machine']['platform']}, Python {report['machine']['python']}, "
              f"CPU affinity {report['machine']['affinity']}.", ""]
    path.write_text("\n".join(lines))


# -- main ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="first of the five seeds (default 0)")
    parser.add_argument("--budget", type=int, default=SearchSettings().budget,
                        help="evaluations per run (default: the command's default)")
    parser.add_argument("--profile", action="append", type=Path,
                        help="a hardware profile (repeat; default: the public boards and datasets/profiles/*.sqlite)")
    parser.add_argument("--accuracy", type=Path, help="accuracy data (default: the public glue_pretrain_16.json)")
    parser.add_argument("--weights", type=float, nargs=4, default=PAPER_WEIGHTS, metavar=("A", "B", "G", "E"))
    parser.add_argument("--methods", nargs="+", choices=(*ABLATIONS, *BASELINES), default=(*ABLATIONS, *BASELINES))
    parser.add_argument("--skip-cli", action="store_true", help="do not time the command")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    profiles = args.profile or default_profiles()
    accuracy = args.accuracy or data_dir() / "flexibert" / "glue_pretrain_16.json"
    weights = Weights(*args.weights)
    seeds = list(range(args.seed, args.seed + N_SEEDS))
    command = "python benchmarks/codesign_public.py " + shlex.join(argv if argv is not None else sys.argv[1:])

    fit_started = time.perf_counter()
    oracle = SurrogateOracle.from_files(profiles, accuracy, seed=ORACLE_SEED)
    oracle_fit_s = time.perf_counter() - fit_started
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usable = make_problem(oracle, weights).devices
    left_out = "; ".join(str(w.message).split(": ", 1)[-1] for w in caught)
    print(f"oracle fitted in {oracle_fit_s:.1f} s on {oracle.devices}; searching {usable}", flush=True)
    if left_out:
        print(f"left out: {left_out}", flush=True)

    results: dict[str, list[dict]] = {}
    order = [name for name in (*ABLATIONS, *BASELINES) if name in args.methods]
    if "hw_nas" in order and "boshcode" not in order:
        order.insert(0, "boshcode")  # HW-NAS searches the device co-design picks
    hw_nas_device = None
    for name in order:
        if name == "hw_nas":
            hw_nas_device = Counter(run["device"] for run in results["boshcode"]).most_common(1)[0][0]
        print(f"{name}:", flush=True)
        results[name] = [run_one(name, oracle, weights, seed, args.budget, hw_nas_device if name == "hw_nas" else None)
                         for seed in seeds]

    cli = None
    if not args.skip_cli:
        cli = time_cli(profiles, accuracy, args.weights, args.seed)
        print(f"boshcode codesign (default budget) took {cli['wall_s']:.1f} s end to end", flush=True)

    report = {
        "command": command, "seeds": seeds, "budget": args.budget, "n_initial": SearchSettings().n_initial,
        "weights": list(args.weights), "profiles": [shown(p) for p in profiles],
        "devices_profiled": oracle.devices, "devices_searched": usable, "devices_left_out": left_out,
        "bounds": oracle.bounds.to_json(), "oracle_fit_s": oracle_fit_s, "hw_nas_device": hw_nas_device,
        "summary": {name: summarise(runs) for name, runs in results.items()},
        "cli": cli, "machine": machine(), "runs": results,
    }
    report["total_wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_convergence(results, args.out / "convergence.png", args.budget, SearchSettings().n_initial)
    write_readme(report, args.out / "README.md")
    print(f"wrote {args.out} in {report['total_wall_s']:.0f} s")
    for name, summary in report["summary"].items():
        print(f"  {name:<13} median best P {summary['median_best_performance']:.4f} "
              f"(min {summary['min_best_performance']:.4f}, max {summary['max_best_performance']:.4f}), "
              f"median {summary['median_wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
