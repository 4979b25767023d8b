"""Compiler-aware features: do the compiled graph's node counts predict latency better than the analytic costs?

The default hardware surrogate (additive cost model) sees the architecture as written: parameters,
FLOPs, activation bytes, layers, heads, widths (the ``costs`` features). The runtime runs its own
optimised graph, where fused attention, LayerNorm and GELU kernels replace chains of small ops.
``costs+graph`` appends that graph's node count and its nodes by op group
(``protran.compiled_graph_stats``). This benchmark compares the two feature sets on this machine's
committed profiles (``datasets/profiles/*.sqlite``), the way ``benchmarks/surrogates.py`` scores
them: the training set is the first n rows of the profile run in measuring order, the test set the
held-out run (32 random architectures the profiler never chose), latency only.

Configurations: the default surrogate (``additive``) and the GBDT ensemble on ``costs`` and on
``costs+graph``; an ablation, ``costs+nodes``, appends the total node count only (a benchmark-only
column subset, no feature set of its own). The ensemble's seeds are ``--seed`` .. ``--seed + 4``
(additive is deterministic: one fit). Scores on the held-out rows: the share within ±10 % of the
measurement, the mean absolute percentage error (MAPE), Kendall tau.

Cost of the features: the seconds to compile one architecture the cache has not seen (recorded in the
cache when the entry was made: export plus compilation, one thread, on a shared machine, so noisy),
a cached read, and the analytic ``costs`` of one architecture.

Graphs are read from (and compiled into) the graph cache, ``--cache-dir`` or the default
(``protran.graph_cache_dir()``); a cold cache compiles every profiled architecture once per runtime
(a median 25–34 s each on this shared 2-core machine: about 45 minutes per profile).

Outputs under ``--out`` (default ``benchmarks/results/compiler_features/``): ``records.csv`` (every
fit), ``results.json`` and ``README.md``.

Usage::

    python benchmarks/compiler_features.py --seed 0
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import csv
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.surrogates import (  # noqa: E402
    OWN_SIZES,
    REGRESSORS,
    WITHIN,
    OwnProfile,
    default_profiles,
    kendall_tau,
    load_own_profile,
)

N_SEEDS = 5
REGRESSOR_NAMES = ("additive", "gbdt")
# Benchmark names of the compared inputs: the two feature sets and the node-count-only ablation.
VARIANTS = ("costs", "costs+graph", "costs+nodes")


# -- data -----------------------------------------------------------------------------------------------


def truncated(profile: OwnProfile, n: int) -> OwnProfile:
    """The profile with its first ``n`` training rows only (each new architecture costs a compilation)."""
    from dataclasses import replace

    train = profile.train
    head = replace(train, specs=train.specs[:n], targets=train.targets[:n], features={})
    return replace(profile, train=head, train_rows=profile.train_rows[:n])


def profile_runtime(path: Path) -> str:
    from protran import RunStore

    with RunStore(path, readonly=True) as store:
        runtimes = {run.runtime for run in store.runs()}
    if len(runtimes) != 1:
        raise SystemExit(f"{path}: the benchmark needs one runtime per store, found {sorted(runtimes)}")
    return runtimes.pop()


def feature_matrices(profile: OwnProfile, runtime: str, cache_dir: Path | None) -> dict[str, np.ndarray]:
    """Rows: the profile run in measuring order, then the held-out run; one matrix per variant."""
    from protran import cache_graph_stats_from_store
    from protran.surrogates import COST_FEATURE_NAMES, featurize

    cache_graph_stats_from_store(profile.path, cache_dir=cache_dir)  # graphs the rows recorded, if any
    assert profile.holdout is not None
    specs = profile.train.specs + profile.holdout.specs
    workload = {"batch_size": profile.train.batch_size, "seq_len": profile.train.seq_len}
    costs = featurize(specs, features="costs", **workload)
    started = time.perf_counter()
    graph = _featurize_graph(specs, runtime, workload, cache_dir)
    print(f"  {profile.device}: graph features of {len(specs)} rows in {time.perf_counter() - started:.0f} s",
          flush=True)
    nodes = graph[:, len(COST_FEATURE_NAMES)]
    return {"costs": costs, "costs+graph": graph, "costs+nodes": np.column_stack([costs, nodes])}


def _featurize_graph(specs: list, runtime: str, workload: dict, cache_dir: Path | None) -> np.ndarray:
    """``featurize(specs, "costs+graph", runtime=...)``, reading the graphs from ``cache_dir``."""
    from protran import compiled_graph_stats
    from protran.surrogates import featurize

    graph = [compiled_graph_stats(spec, runtime, cache_dir=cache_dir, **workload).features() for spec in specs]
    return np.hstack([featurize(specs, features="costs", **workload), np.array(graph, dtype=float)])


# -- fitting and scoring -----------------------------------------------------------------------------------


def fit_predict(regressor: str, variant: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
                seed: int) -> np.ndarray:
    """Held-out means (seconds) of a surrogate fit on targets / training maximum, as benchmarks/surrogates.py."""
    from protran.surrogates import make_surrogate

    scale = float(np.max(y_train))
    model = make_surrogate(regressor, seed=seed, features=variant, **REGRESSORS.get(regressor, {}))
    model.fit(X_train, y_train / scale)
    return np.asarray(model.predict(X_test), dtype=float) * scale


def score(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    relative = np.abs(predicted - measured) / np.abs(measured)
    return {"within_10pct": float(np.mean(relative <= WITHIN)), "mape": float(np.mean(relative)),
            "kendall_tau": kendall_tau(predicted, measured)}


def run_profile(profile: OwnProfile, matrices: dict[str, np.ndarray], seeds: list[int],
                sizes: tuple[int, ...] = OWN_SIZES) -> list[dict]:
    assert profile.holdout is not None
    n_train = len(profile.train.specs)
    y = np.concatenate([profile.train.targets[:, 0], profile.holdout.targets[:, 0]])
    test = np.arange(n_train, len(y))
    records = []
    for n in [size for size in sizes if size <= n_train] or [n_train]:
        for regressor in REGRESSOR_NAMES:
            for seed in (seeds[:1] if regressor == "additive" else seeds):
                for variant in VARIANTS:
                    X = matrices[variant]
                    predicted = fit_predict(regressor, variant, X[:n], y[:n], X[test], seed)
                    records.append({"device": profile.device, "regressor": regressor, "features": variant,
                                    "seed": seed, "n_train": n, "n_test": len(test), **score(predicted, y[test])})
    return records


def medians(records: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["device"], record["regressor"], record["features"], record["n_train"]),
                          []).append(record)
    return [{"device": d, "regressor": r, "features": f, "n_train": n, "seeds": len(chosen),
             **{m: float(np.median([c[m] for c in chosen])) for m in ("within_10pct", "mape", "kendall_tau")}}
            for (d, r, f, n), chosen in groups.items()]


# -- what the features cost ----------------------------------------------------------------------------------


def featurisation_costs(profiles: list[tuple[OwnProfile, str]], cache_dir: Path | None) -> dict:
    """Seconds per architecture: compiling a new one (from the cache entries), a cached read, analytic costs."""
    from protran import compiled_graph_stats
    from protran.surrogates import featurize

    result: dict[str, dict] = {}
    for profile, runtime in profiles:
        assert profile.holdout is not None
        specs = profile.train.specs + profile.holdout.specs
        b, s = profile.train.batch_size, profile.train.seq_len
        stats = [compiled_graph_stats(spec, runtime, b, s, cache_dir=cache_dir) for spec in specs]
        compile_s = np.array([entry.compile_s for entry in stats if entry.compile_s > 0])
        cached_s = []
        for spec in specs[:32]:
            started = time.perf_counter()
            compiled_graph_stats(spec, runtime, b, s, cache_dir=cache_dir)
            cached_s.append(time.perf_counter() - started)
        costs_s = []
        for spec in specs[:32]:
            started = time.perf_counter()
            featurize([spec], features="costs", batch_size=b, seq_len=s)
            costs_s.append(time.perf_counter() - started)
        nodes = np.array([entry.node_count for entry in stats], dtype=float)
        latency = np.concatenate([profile.train.targets[:, 0], profile.holdout.targets[:, 0]])
        result[profile.device] = {
            "runtime": runtime,
            "versions": stats[0].versions,
            "compiled_architectures": int(compile_s.size),
            "compile_s_median": float(np.median(compile_s)) if compile_s.size else None,
            "compile_s_p90": float(np.percentile(compile_s, 90)) if compile_s.size else None,
            "cached_read_s_median": float(np.median(cached_s)),
            "costs_s_median": float(np.median(costs_s)),
            "node_count_median": float(np.median(nodes)),
            "node_count_range": [int(nodes.min()), int(nodes.max())],
            "kendall_tau_nodes_vs_latency": kendall_tau(nodes, latency),
            "op_groups_median": {group: float(np.median([e.op_groups.get(group, 0) for e in stats]))
                                 for group in stats[0].op_groups},
        }
    return result


# -- report --------------------------------------------------------------------------------------------------


def _f(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [
        "# Compiler-aware features",
        "",
        f"Generated by `{report['command']}` in {report['wall_s']:.0f} s wall time with Python "
        f"{report['python']} (graph cache {'warm' if report['cache_warm'] else 'partly cold'} at the start).",
        "",
        "Training set: the first n rows of each profile run in measuring order; test set: its held-out run "
        f"(random architectures). Latency. ±10 %: share of held-out predictions within 10 %; MAPE: mean absolute "
        f"percentage error; tau: Kendall tau-b. GBDT: median over seeds {report['seeds']}; additive is "
        "deterministic (one fit). `costs+nodes` is an ablation: the cost features and the total node count only.",
        "",
    ]
    for device in report["devices"]:
        lines += [f"## {device}", "", "| regressor | features | " + " | ".join(
            f"±10 % @{n} | MAPE @{n} | tau @{n}" for n in report["sizes"][device]) + " |",
                  "|---|---|" + "---|---|---|" * len(report["sizes"][device])]
        for regressor in REGRESSOR_NAMES:
            for variant in VARIANTS:
                cells = []
                for n in report["sizes"][device]:
                    row = next(r for r in report["medians"] if (r["device"], r["regressor"], r["features"],
                                                                r["n_train"]) == (device, regressor, variant, n))
                    cells += [_f(row["within_10pct"], 2), f"{100 * row['mape']:.1f} %", _f(row["kendall_tau"], 2)]
                lines.append(f"| {regressor} | {variant} | " + " | ".join(cells) + " |")
        cost = report["costs"][device]
        lines += ["", f"Runtime `{cost['runtime']}` ({cost['versions']}): compiled graphs of "
                  f"{cost['node_count_range'][0]}–{cost['node_count_range'][1]} nodes (median "
                  f"{cost['node_count_median']:.0f}; Kendall tau of node count against latency "
                  f"{_f(cost['kendall_tau_nodes_vs_latency'], 2)}); median nodes by group: "
                  + ", ".join(f"{g} {v:.0f}" for g, v in cost["op_groups_median"].items()) + ".", ""]
    lines += ["## What the features cost per new architecture", "",
              "| profile | compile (median) | compile (p90) | compiled here | cached read (median) | costs (median) |",
              "|---|---|---|---|---|---|"]
    for device, cost in report["costs"].items():
        lines.append(f"| {device} | {_f(cost['compile_s_median'], 1)} s | {_f(cost['compile_s_p90'], 1)} s | "
                     f"{cost['compiled_architectures']} | {1000 * cost['cached_read_s_median']:.1f} ms | "
                     f"{1000 * cost['costs_s_median']:.2f} ms |")
    lines += ["", "Compile times are export plus compilation with one thread on a shared 2-core machine "
              "(other work ran beside it), recorded when each cache entry was made; they are noisy.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first GBDT seed (seeds seed..seed+4)")
    parser.add_argument("--profiles", nargs="+", type=Path,
                        help="run stores (default: the f32 stores in datasets/profiles)")
    parser.add_argument("--cache-dir", type=Path, help="graph cache folder (default protran.graph_cache_dir())")
    parser.add_argument("--max-train", type=int, default=max(OWN_SIZES),
                        help=f"use at most this many profile rows (default {max(OWN_SIZES)}: all sizes)")
    parser.add_argument("--quick", action="store_true", help="one seed, training sizes 16 and 64 (a smoke test)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "compiler_features")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    seeds = list(range(args.seed, args.seed + (1 if args.quick else N_SEEDS)))
    sizes = tuple(n for n in ((16, 64) if args.quick else OWN_SIZES) if n <= args.max_train)
    from protran import graph_cache_dir

    cache_dir = args.cache_dir
    cache_file = (cache_dir or graph_cache_dir()) / "graphs.sqlite"
    loaded: list[tuple[OwnProfile, str]] = []
    for path in args.profiles or default_profiles():
        profile = load_own_profile(path)
        if profile is None or profile.holdout is None:
            print(f"{path}: no profile and held-out runs; skipped", flush=True)
            continue
        profile = truncated(profile, args.max_train)
        loaded.append((profile, profile_runtime(path)))
    if not loaded:
        raise SystemExit("no run store with a profile and a held-out run")
    cache_warm = cache_file.is_file()
    records: list[dict] = []
    for profile, runtime in loaded:
        matrices = feature_matrices(profile, runtime, cache_dir)
        records += run_profile(profile, matrices, seeds, sizes)
    report = {
        "command": f"python benchmarks/compiler_features.py --seed {args.seed}" + (" --quick" if args.quick else "")
        + (f" --max-train {args.max_train}" if args.max_train != max(OWN_SIZES) else ""),
        "python": platform.python_version(),
        "seeds": seeds,
        "cache_warm": cache_warm,
        "devices": [profile.device for profile, _ in loaded],
        "sizes": {profile.device: sorted({r["n_train"] for r in records if r["device"] == profile.device})
                  for profile, _ in loaded},
        "medians": medians(records),
        "costs": featurisation_costs(loaded, cache_dir),
    }
    report["wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "records.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    (args.out / "README.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
