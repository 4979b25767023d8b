"""Sampler benchmark: how diverse are the architectures each design-space sampler draws.

For random, Latin-hypercube (``lhs``), Sobol, Halton and Hammersly sampling (and ``lhs_split``, the
sampler of the profiler's seed set), with 16 and 256 architectures and several seeds, this reports
the pairwise Euclidean distances of the normalised 37-entry embeddings (every entry divided by its
upper bound; the EdgeTran paper's Fig. 4) and the count of shallow/deep x narrow/wide models
(Fig. 5). Each sampler runs twice: with the default head-count stratification (every layer's head
count uniform) and without it (the attention index drawn uniformly over its whole range, as the
reference sampler does).

Outputs (``--out``, default ``benchmarks/results/samplers/``): ``summary.csv`` (medians over seeds),
``samples.csv`` (every sample's statistics), ``results.json``, ``distances.png`` (box plots of the
pairwise distances, pooled over seeds), ``model_types.png`` and ``README.md``.

The same samples come from the command line, e.g. ``flexibert sample -n 16 --method sobol --seed 0``
(add ``--no-stratify-heads`` for the reference mapping).

Usage::

    python benchmarks/samplers.py --seed 0          # seeds 0..4, about 2 CPU minutes
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flexibert import MODEL_TYPES, DesignSpace, diversity_report, narrow_limit, sample_architectures

METHODS = ("random", "lhs", "sobol", "halton", "hammersly", "lhs_split")
SIZES = (16, 256)
VARIANTS = {"stratified": True, "reference": False}
N_SEEDS = 5


def draw(method: str, n: int, seed: int, stratify: bool, space: DesignSpace) -> dict:
    """One sample and its diversity statistics (distances kept for the box plots)."""
    started = time.process_time()
    specs = sample_architectures(n, method=method, seed=seed, space=space, stratify_heads=stratify)
    seconds = time.process_time() - started
    report = diversity_report(specs, space)
    layers_total = sum(report["heads"].values())
    narrow_heads = narrow_limit(space.attention_heads)
    wide_layer_share = sum(count for heads, count in report["heads"].items() if heads > narrow_heads) / layers_total
    return {
        "method": method, "n": n, "variant": "stratified" if stratify else "reference", "seed": seed,
        "min_distance": report["min"], "median_distance": report["median"], "mean_distance": report["mean"],
        "max_distance": report["max"], **report["model_types"],
        "layer_counts_covered": sum(count > 0 for count in report["layers"].values()),
        "share_layers_12_heads": report["heads"].get(12, 0) / layers_total,
        "share_layers_wide": wide_layer_share,
        "draw_cpu_s": seconds, "distances": report["distances"],
    }


def summarise(samples: list[dict]) -> list[dict]:
    """Median over seeds of every statistic, per method, size and variant."""
    keys = [k for k in samples[0] if k not in ("method", "n", "variant", "seed", "distances")]
    groups: dict[tuple, list[dict]] = {}
    for sample in samples:
        groups.setdefault((sample["method"], sample["n"], sample["variant"]), []).append(sample)
    rows = []
    for (method, n, variant), chosen in groups.items():
        row = {"method": method, "n": n, "variant": variant, "seeds": len(chosen)}
        row.update({key: float(np.median([s[key] for s in chosen])) for key in keys})
        rows.append(row)
    return rows


# -- plots ------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_distances(samples: list[dict], methods: list[str], sizes: list[int], path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.5), squeeze=False)
    for ax, n in zip(axes[0], sizes):
        data, labels, colours = [], [], []
        for method in methods:
            for variant, colour in (("stratified", "tab:blue"), ("reference", "tab:gray")):
                chosen = [s["distances"] for s in samples if s["method"] == method and s["n"] == n
                          and s["variant"] == variant]
                if chosen:
                    data.append(np.concatenate(chosen))
                    labels.append(method if variant == "stratified" else f"{method}\n(ref.)")
                    colours.append(colour)
        boxes = ax.boxplot(data, patch_artist=True, showfliers=False)
        for patch, colour in zip(boxes["boxes"], colours):
            patch.set_facecolor(colour)
            patch.set_alpha(0.5)
        ax.set_xticks(np.arange(1, len(labels) + 1), labels, fontsize=7, rotation=45, ha="right")
        ax.set_title(f"{n} architectures")
        ax.set_ylabel("pairwise distance (normalised embedding)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Pairwise distances within a sample, pooled over seeds (blue: stratified heads, gray: reference "
                 "mapping)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_model_types(summary: list[dict], methods: list[str], sizes: list[int], path: Path) -> None:
    plt = _pyplot()
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in summary)]
    fig, axes = plt.subplots(len(variants), len(sizes), figsize=(6.5 * len(sizes), 3.6 * len(variants)),
                             squeeze=False)
    width = 0.8 / len(MODEL_TYPES)
    for row, variant in enumerate(variants):
        for col, n in enumerate(sizes):
            ax = axes[row, col]
            x = np.arange(len(methods))
            for k, kind in enumerate(MODEL_TYPES):
                counts = [next((r[kind] for r in summary if r["method"] == m and r["n"] == n
                                and r["variant"] == variant), 0) for m in methods]
                ax.bar(x + (k - 1.5) * width, counts, width=width, label=kind.replace("_", "/"))
            ax.set_xticks(x, methods, fontsize=8)
            ax.set_title(f"{n} architectures, {variant} heads")
            ax.set_ylabel("models (median over seeds)")
            ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- output -------------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def table(summary: list[dict], variant: str) -> list[str]:
    head = ["method", "n", "min dist", "median dist", "max dist", *[k.replace("_", "/") for k in MODEL_TYPES],
            "layer counts covered (of 6)", "layers with 12 heads", "CPU s per draw"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = sorted((r for r in summary if r["variant"] == variant), key=lambda r: (r["n"], METHODS.index(r["method"])))
    for row in rows:
        cells = [row["method"], str(row["n"]), f"{row['min_distance']:.3f}", f"{row['median_distance']:.3f}",
                 f"{row['max_distance']:.3f}", *[f"{row[k]:g}" for k in MODEL_TYPES],
                 f"{row['layer_counts_covered']:g}", f"{row['share_layers_12_heads']:.0%}", f"{row['draw_cpu_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def notes(summary: list[dict], sizes: list[int]) -> list[str]:
    """Facts read off the summary (so they stay true when it changes)."""
    lines = []
    for n in sizes:
        rows = [r for r in summary if r["n"] == n and r["variant"] == "stratified" and r["method"] != "lhs_split"]
        if not rows:
            continue
        best_min = max(rows, key=lambda r: r["min_distance"])
        best_median = max(rows, key=lambda r: r["median_distance"])
        spread = max(r["median_distance"] for r in rows) - min(r["median_distance"] for r in rows)
        lines.append(f"- {n} architectures: largest minimum distance {best_min['method']} "
                     f"({best_min['min_distance']:.3f}), largest median distance {best_median['method']} "
                     f"({best_median['median_distance']:.3f}); the medians of the five samplers differ by "
                     f"{spread:.3f}.")
        narrow = {r["method"]: r["shallow_narrow"] + r["deep_narrow"] for r in rows}
        lines.append(f"- {n} architectures, narrow models (every layer at most 4 heads), median over seeds: "
                     + ", ".join(f"{m} {v:g}" for m, v in narrow.items()) + ".")
    ref = [r for r in summary if r["variant"] == "reference"]
    strat = [r for r in summary if r["variant"] == "stratified"]
    if ref and strat:
        lines.append(f"- Layers with 12 heads: {np.median([r['share_layers_12_heads'] for r in ref]):.0%} with the "
                     f"reference mapping against {np.median([r['share_layers_12_heads'] for r in strat]):.0%} "
                     "with stratified heads (median over every sampler and size).")
    return lines


def markdown(summary: list[dict], meta: dict) -> str:
    lines = [
        "# Sampler benchmark",
        "",
        f"Generated by `{meta['command']}` in {meta['seconds']:.0f} s wall time ({meta['cpu_seconds']:.0f} CPU s) "
        f"with {meta['python']}. Seeds {meta['seeds']}; values are medians over seeds. Distances are Euclidean "
        "between embeddings with every entry divided by its upper bound (0..1), so layer slots past a model's "
        "depth count as 0. Shallow: at most 6 layers; narrow: no layer with more than 4 heads.",
        "",
        "## Stratified head counts (the default)",
        "",
        *table(summary, "stratified"),
        "",
    ]
    if any(r["variant"] == "reference" for r in summary):
        lines += ["## Reference mapping (`--no-stratify-heads`)", "", *table(summary, "reference"), ""]
    lines += ["## Reading the numbers", "", *notes(summary, meta["sizes"]), "",
              "![pairwise distances](distances.png)", "", "![model types](model_types.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--n-seeds", type=int, default=N_SEEDS, help=f"seeds per sampler (default {N_SEEDS})")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "samplers")
    args = parser.parse_args(argv)
    started, cpu_started = time.perf_counter(), time.process_time()
    space = DesignSpace.default()
    seeds = list(range(args.seed, args.seed + args.n_seeds))
    samples = []
    for variant in args.variants:
        for method in args.methods:
            for n in args.sizes:
                for seed in seeds:
                    samples.append(draw(method, n, seed, VARIANTS[variant], space))
            print(f"{variant:>10} {method:>9}: {time.perf_counter() - started:6.1f} s", flush=True)
    summary = summarise(samples)
    meta = {"command": "python benchmarks/samplers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "seeds": seeds, "sizes": args.sizes, "methods": args.methods, "variants": args.variants,
            "python": f"Python {platform.python_version()}",
            "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "summary.csv", summary)
    write_csv(out / "samples.csv", [{k: v for k, v in s.items() if k != "distances"} for s in samples])
    (out / "results.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1))
    plot_distances(samples, args.methods, args.sizes, out / "distances.png")
    plot_model_types(summary, args.methods, args.sizes, out / "model_types.png")
    (out / "README.md").write_text(markdown(summary, meta))
    print(markdown(summary, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
