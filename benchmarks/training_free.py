"""Training-free accuracy proxies: how well does each rank the 250 shipped NAS-Bench-BERT architectures.

For every metric of ``protran proxy --training-free`` (FLOPs of one 128-token sequence, parameters,
parameters without the embeddings) this reports Kendall tau and Spearman rho with the GLUE average
and with each GLUE task, over the 250 records of ``datasets/accuracy/nasbench_bert_250.json`` (the
mean of the two runs for an architecture trained twice). No labels are used to compute a score, so
nothing is fitted and there is nothing to cross-validate; the default metric is the one with the best
Kendall tau with the GLUE average. When ``../shared/data`` is beside the repository, the parameter
counts are also compared with the upstream ones (``BERT_results_activation_250.csv``) by rank: they
count the same models in a different implementation, so their order should agree.

Outputs (``--out``, default ``benchmarks/results/training_free/``): ``results.json`` and ``README.md``.

Usage::

    python benchmarks/training_free.py            # a few seconds
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protran import load_accuracy, training_free_scores
from protran.vocabulary import TRAINING_FREE_METRICS

SHIPPED = REPO / "datasets" / "accuracy" / "nasbench_bert_250.json"
UPSTREAM = Path(os.environ.get("EDGETRAN_DATA", REPO.parent / "shared" / "data")) / "nasbench_bert" / "upstream"
OUT = REPO / "benchmarks" / "results" / "training_free"


def scored_architectures(path: Path) -> tuple[list, dict[str, np.ndarray], list[int]]:
    """Distinct architectures (first appearance), each task's mean score per architecture, and the
    upstream id of each architecture's first run."""
    records = load_accuracy(path)
    specs, ids, scores = {}, {}, {}
    for record in records:
        specs.setdefault(record.arch_hash, record.spec)
        ids.setdefault(record.arch_hash, json.loads(record.recipe)["upstream_id"])
        scores.setdefault(record.task, {}).setdefault(record.arch_hash, []).append(record.score)
    order = list(specs)
    by_task = {task: np.array([np.mean(values[h]) for h in order]) for task, values in scores.items()}
    return [specs[h] for h in order], by_task, [ids[h] for h in order]


def correlations(values: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return {"kendall_tau": float(kendalltau(values, target)[0]), "spearman": float(spearmanr(values, target)[0])}


def upstream_parameter_agreement(ids: list[int], params: np.ndarray) -> dict[str, float] | None:
    path = UPSTREAM / "BERT_results_activation_250.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        upstream = {int(row["ID"]): float(row["Number of Parameters"]) for row in csv.DictReader(handle)}
    kept = [i for i, run_id in enumerate(ids) if run_id in upstream]
    return correlations(params[kept], np.array([upstream[ids[i]] for i in kept]))


def run(data: Path) -> dict:
    started = time.perf_counter()
    specs, by_task, ids = scored_architectures(data)
    rows = training_free_scores(specs)
    metrics = {}
    for metric in TRAINING_FREE_METRICS:
        values = np.array([row[metric] for row in rows], dtype=float)
        metrics[metric] = {task: correlations(values, target) for task, target in sorted(by_task.items())}
    params = np.array([row["params"] for row in rows], dtype=float)
    best = max(TRAINING_FREE_METRICS, key=lambda m: metrics[m]["glue"]["kendall_tau"])
    return {
        "data": str(data.relative_to(REPO)) if data.is_relative_to(REPO) else str(data),
        "architectures": len(specs), "metrics": metrics, "best_by_kendall_glue": best,
        "upstream_parameter_agreement": upstream_parameter_agreement(ids, params),
        "seconds": time.perf_counter() - started, "machine": platform.processor() or platform.machine(),
    }


def write_readme(result: dict, out: Path) -> None:
    lines = [
        "# Training-free proxies on the 250 shipped NAS-Bench-BERT architectures",
        "",
        f"`python benchmarks/training_free.py` ({result['seconds']:.1f} s; {result['architectures']} distinct "
        "architectures; scores use no labels). Kendall tau / Spearman rho with each GLUE task and the average:",
        "",
        "| metric | " + " | ".join(sorted(result["metrics"][TRAINING_FREE_METRICS[0]])) + " |",
        "|---|" + "---|" * len(result["metrics"][TRAINING_FREE_METRICS[0]]),
    ]
    for metric, tasks in result["metrics"].items():
        cells = [f"{v['kendall_tau']:.3f} / {v['spearman']:.3f}" for _, v in sorted(tasks.items())]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines += ["", f"Default of `protran proxy --training-free`: `{result['best_by_kendall_glue']}` (best Kendall tau "
              "with the GLUE average)."]
    agreement = result["upstream_parameter_agreement"]
    if agreement is not None:
        lines += ["", f"Our parameter counts against the upstream ones, by rank: Kendall tau "
                      f"{agreement['kendall_tau']:.3f}, Spearman {agreement['spearman']:.3f}."]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHIPPED, help="a NAS-Bench-BERT JSON (default: the shipped 250)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    result = run(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    write_readme(result, args.out)
    glue = result["metrics"][result["best_by_kendall_glue"]]["glue"]
    print(f"{result['best_by_kendall_glue']}: Kendall {glue['kendall_tau']:.3f}, Spearman {glue['spearman']:.3f} "
          f"with the GLUE average; report in {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
