"""Accuracy surrogates, the MLM-loss proxy and predicted Pareto frontiers on the public data.

Parts (``--part``, default all):

- ``accuracy``: leave-some-out ranking tests of accuracy models on the 13 scored architectures of
  ``flexibert/glue_pretrain_16.json`` (hold out 4, train on 9, every split up to ``--splits``, the
  same splits for every model): MSE next to nDCG@k, best-of-k hit rate and regret@k. Models: ours
  (bagged, calibrated xgboost on embedding + analytic features), the reference ``glue.pkl`` recipe
  (scikit-learn GBR, 50 trees, lr 0.01, depth 3, embedding only), LambdaMART, Bayesian ridge on the
  analytic features, the training mean (chance), and the reference's own 1M-step pre-training loss
  used as a ranking. Also the calibration of ours: the share of held-out scores inside mean ± 1 and
  2 std.
- ``proxy``: the MLM loss after a short fixed pre-training budget on the shipped corpus, for the 16
  reference architectures; its rank correlation with their GLUE score and with their reference
  pre-training loss, and the same leave-some-out ranking tests (the proxy needs no training).
- ``pareto``: frontiers for every board and measure with the default search, wall time per device,
  the JSON of ``protran pareto`` and the plot (the paper's Fig. 14), then every frontier again with a
  10x longer search (10x generations) and the relative hypervolume difference.

Usage::

    python benchmarks/pareto_public.py                    # everything, writes benchmarks/results/pareto_public/
    python benchmarks/pareto_public.py --part pareto      # one part
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

from protran import (
    LambdaMARTRanker,
    accuracy_features,
    accuracy_training_set,
    leave_some_out,
    leave_some_out_splits,
    load_accuracy,
    make_accuracy_surrogate,
)

BOARDS = ("cpu_rpi_b1_r1", "cpu_jetson-nano_b1_r1", "cpu_m1-pro_b32_r1", "gpu_a100_b128_r3")
OUT = REPO / "benchmarks" / "results" / "pareto_public"
N_TEST = 4
KS = (1, 2, 3)


def data_dir() -> Path:
    return Path(os.environ.get("EDGETRAN_DATA", REPO.parent / "shared" / "data"))


def accuracy_file() -> Path:
    return data_dir() / "flexibert" / "glue_pretrain_16.json"


def write_json(name: str, data) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average": load,
            "platform": platform.platform()}


# -- accuracy ------------------------------------------------------------------------------------------


class _ReferenceGBR:
    """The reference glue.pkl recipe: GradientBoostingRegressor on the 37-entry embedding."""

    def fit(self, X, y):
        from sklearn.ensemble import GradientBoostingRegressor

        self.model = GradientBoostingRegressor(n_estimators=50, learning_rate=0.01, max_depth=3,
                                               random_state=0).fit(X[:, :37], y)
        return self

    def predict(self, X):
        return self.model.predict(X[:, :37])


class _TrainingMean:
    def fit(self, X, y):
        self.value = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.value)


class _AnalyticRidge:
    def fit(self, X, y):
        from protran.surrogates import make_surrogate

        self.model = make_surrogate("lr").fit(X[:, 37:], y)
        return self

    def predict(self, X):
        return self.model.predict(X[:, 37:])


def run_accuracy(n_splits: int) -> dict:
    records = load_accuracy(accuracy_file())
    specs, scores = accuracy_training_set(records)
    X = accuracy_features(specs)
    splits = leave_some_out_splits(len(scores), N_TEST, n_splits, seed=0)
    models = {
        "ours_gbdt_ensemble": (lambda: make_accuracy_surrogate(0), True),
        "reference_gbr_embedding": (_ReferenceGBR, True),
        "lambdamart": (lambda: LambdaMARTRanker(seed=0), False),
        "bayesian_ridge_analytic": (_AnalyticRidge, True),
        "training_mean": (_TrainingMean, True),
    }
    results = {}
    for name, (make, regression) in models.items():
        started = time.perf_counter()

        def predict_fold(train, test, make=make):
            return make().fit(X[train], scores[train]).predict(X[test])

        results[name] = leave_some_out(predict_fold, scores, splits, KS, regression=regression)
        results[name]["seconds"] = time.perf_counter() - started
        print(f"accuracy {name}: {_short(results[name])}", flush=True)
    losses = np.array([_loss_of(records, spec) for spec in specs])
    results["reference_pretrain_loss_as_ranking"] = leave_some_out(
        lambda train, test: -losses[test], scores, splits, KS, regression=False)
    results["ours_gbdt_ensemble"]["calibration"] = _calibration(X, scores, splits)
    return {"n_architectures": len(scores), "n_test": N_TEST, "splits": len(splits), "ks": list(KS),
            "score_range": [float(scores.min()), float(scores.max())],
            "note": "GLUE scores as stored (the reference multiplied them by 1.5); chance best_of_1 = 1/n_test",
            "models": results}


def _loss_of(records, spec) -> float:
    from flexibert import model_hash

    key = model_hash(spec)
    return next(r.pretrain_loss for r in records if r.arch_hash == key and r.pretrain_loss is not None)


def _calibration(X, scores, splits) -> dict:
    inside1, inside2, z = [], [], []
    for train, test in splits:
        mean, std = make_accuracy_surrogate(0).fit(X[train], scores[train]).predict(X[test], return_std=True)
        error = np.abs(scores[test] - mean) / np.maximum(std, 1e-12)
        inside1 += list(error <= 1)
        inside2 += list(error <= 2)
        z += list(error)
    return {"within_1_std": float(np.mean(inside1)), "within_2_std": float(np.mean(inside2)),
            "median_abs_z": float(np.median(z)), "gaussian_expectation": {"within_1_std": 0.683, "within_2_std": 0.954,
                                                                          "median_abs_z": 0.674}}


def _short(metrics: dict) -> str:
    keys = ("mse", "best_of_1", "best_of_2", "ndcg_at_3", "spearman")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)


# -- proxy -----------------------------------------------------------------------------------------------


def run_proxy(n_splits: int, steps: int, seq_len: int) -> dict:
    import torch

    from protran import ProxyConfig, measure_proxies, rank_correlation

    torch.set_num_threads(1)
    records = load_accuracy(accuracy_file())
    config = ProxyConfig(steps=steps, batch_size=8, seq_len=seq_len, lr=5e-4, warmup_steps=max(1, steps // 10))
    specs = [record.spec for record in records]

    def progress(done, total, result):
        print(f"proxy {done}/{total}: {result.arch_hash[:8]} loss {result.eval_loss:.4f} ({result.elapsed_s:.0f} s)",
              flush=True)

    results = measure_proxies(specs, config, progress=progress)
    write_proxy_csv(results, specs, config)
    loss = np.array([r.eval_loss for r in results])
    scored = np.array([r.score is not None for r in records])
    glue = np.array([r.score if r.score is not None else np.nan for r in records])
    reference_loss = np.array([r.pretrain_loss for r in records])
    converged = reference_loss < 7.0  # the reference runs that did not diverge
    splits = leave_some_out_splits(int(scored.sum()), N_TEST, n_splits, seed=0)
    return {
        "config": {**config.__dict__, "corpus": "datasets/corpus (shipped)"},
        "architectures": [{"hash": r.arch_hash, "layers": spec.num_layers, "proxy_loss": r.eval_loss,
                           "train_loss": r.train_loss, "seconds": r.elapsed_s, "glue": g if not np.isnan(g) else None,
                           "reference_pretrain_loss": float(rl)}
                          for r, spec, g, rl in zip(results, specs, glue, reference_loss)],
        "correlation_with_glue": rank_correlation(loss[scored], glue[scored]),
        # lower loss is better on both sides: correlate -proxy with -reference loss
        "correlation_with_reference_pretrain_loss": rank_correlation(loss, -reference_loss),
        "correlation_with_reference_pretrain_loss_converged_only": rank_correlation(loss[converged],
                                                                                    -reference_loss[converged]),
        "leave_some_out_vs_glue": leave_some_out(lambda train, test: -loss[scored][test], glue[scored], splits, KS,
                                                 regression=False),
        "total_seconds": float(sum(r.elapsed_s for r in results)),
    }


PROXY_CSV = REPO / "datasets" / "accuracy" / "mlm_proxy_lhs16.csv"


def write_proxy_csv(results, specs, config) -> Path:
    """The proxy of the 16 seed architectures as an accuracy CSV that ships with the repository, so
    that Pareto frontiers and co-design run on a fresh clone without GLUE data."""
    import math

    PROXY_CSV.parent.mkdir(parents=True, exist_ok=True)
    with open(PROXY_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model_dict", "hash", "task", "score", "pretrain_loss", "pretrain_steps"])
        for result, spec in zip(results, specs):
            writer.writerow([json.dumps(spec.to_model_dict()), result.arch_hash, "mlm_proxy",
                             f"{math.exp(-result.eval_loss):.9g}", f"{result.eval_loss:.9g}", result.steps])
    return PROXY_CSV


# -- pareto ----------------------------------------------------------------------------------------------


def run_pareto(longer: int) -> dict:
    from protran import (
        REFERENCE_POINT,
        SearchSettings,
        fit_models,
        load_profiles,
        plot_frontiers,
        search_frontiers,
    )

    paths = [data_dir() / "protran" / f"{board}.json" for board in BOARDS]
    command = _time_command(paths)
    records = load_accuracy(accuracy_file())
    models = fit_models(load_profiles(paths), records, seed=0)
    settings = SearchSettings()
    long_settings = SearchSettings(pop_size=settings.pop_size, n_generations=longer * settings.n_generations,
                                   seed=settings.seed)
    frontiers, rows, devices = [], [], {}
    for device in models.devices:
        wall, cpu = time.perf_counter(), time.process_time()
        short = search_frontiers(models, device, settings=settings)
        devices[device] = {"search_wall_s": time.perf_counter() - wall, "search_cpu_s": time.process_time() - cpu,
                           "evaluations": short[0].evaluations}
        wall, cpu = time.perf_counter(), time.process_time()
        long = search_frontiers(models, device, settings=long_settings)
        devices[device].update(long_search_wall_s=time.perf_counter() - wall,
                               long_search_cpu_s=time.process_time() - cpu, long_evaluations=long[0].evaluations)
        frontiers += short
        for a, b in zip(short, long):
            gap = (b.hypervolume - a.hypervolume) / b.hypervolume
            rows.append({"device": device, "measure": a.measure, "points": len(a.points), "hypervolume": a.hypervolume,
                         "long_points": len(b.points), "long_hypervolume": b.hypervolume, "relative_gap": gap})
            print(f"pareto {device} {a.measure}: {len(a.points)} points, HV {a.hypervolume:.4f}; {longer}x: "
                  f"{len(b.points)} points, HV {b.hypervolume:.4f}; gap {100 * gap:.2f} %", flush=True)
        print(f"pareto {device}: {devices[device]}", flush=True)
    plot = plot_frontiers(frontiers, OUT / "frontiers.png")
    write_json("frontiers.json", {"frontiers": [frontier.to_dict() for frontier in frontiers]})
    return {"settings": settings.__dict__, "longer_settings": long_settings.__dict__, "command": command,
            "devices": devices, "reference_point": list(REFERENCE_POINT),
            "normalisation": "accuracy (a_max - a) / (a_max - a_min) over the accuracy model's training scores; "
                             "measure (log v - log v_min) / (log v_max - log v_min) over the device's measured values",
            "max_relative_gap": max(r["relative_gap"] for r in rows),
            "mean_relative_gap": float(np.mean([r["relative_gap"] for r in rows])), "frontiers": rows,
            "plot": plot.name}


def _time_command(paths) -> dict:
    """Wall and CPU time of the whole command a user runs: every board, every measure, JSON and plot."""
    import resource
    import subprocess

    command = [sys.executable, "-m", "protran.cli", "pareto", "--profile", *map(str, paths),
               "--accuracy", str(accuracy_file()), "--json", "--plot", str(OUT / "frontiers_cli.png")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    frontiers = json.loads(output)["frontiers"]
    print(f"command: {len(frontiers)} frontiers for {len(paths)} boards in {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(load average before {load[0]:.1f})", flush=True)
    shown = [os.path.relpath(arg, REPO) if os.path.isabs(arg) else arg for arg in command[3:]]
    return {"argv": ["protran", *shown], "boards": len(paths), "frontiers": len(frontiers), "wall_s": wall,
            "cpu_s": cpu, "wall_s_per_board": wall / len(paths), "cpu_s_per_board": cpu / len(paths),
            "load_average_before": load[0]}


def _load(name: str) -> dict | None:
    path = OUT / name
    return json.loads(path.read_text()) if path.is_file() else None


def write_report() -> Path:
    """README.md of the results folder, from whichever parts have been run."""
    lines = ["# Accuracy surrogates, the MLM-loss proxy and predicted Pareto frontiers (public data)", "",
             "Regenerated by `python benchmarks/pareto_public.py` (parts: `--part accuracy|proxy|pareto`).", ""]
    accuracy = _load("accuracy.json")
    if accuracy:
        lines += [f"## Accuracy models: leave-{accuracy['n_test']}-out over {accuracy['n_architectures']} scored "
                  f"architectures ({accuracy['splits']} splits)", "",
                  "Higher is better except MSE and regret; best_of_k: the truly best held-out architecture is among "
                  f"the k predicted best (chance for k = 1: {1 / accuracy['n_test']:.2f}).", "",
                  "| model | MSE | best_of_1 | best_of_2 | nDCG@3 | regret@1 | Spearman | Kendall |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, m in accuracy["models"].items():
            mse = f"{m['mse']:.4f}" if "mse" in m else "-"
            lines.append(f"| {name} | {mse} | {m['best_of_1']:.2f} | {m['best_of_2']:.2f} | {m['ndcg_at_3']:.3f} | "
                         f"{m['regret_at_1']:.4f} | {m['spearman']:.2f} | {m['kendall']:.2f} |")
        calibration = accuracy["models"]["ours_gbdt_ensemble"].get("calibration")
        if calibration:
            lines += ["", f"Calibration of ours: {100 * calibration['within_1_std']:.0f} % of held-out scores "
                          f"inside ±1 std, {100 * calibration['within_2_std']:.0f} % inside ±2 std "
                          "(Gaussian: 68 %, 95 %).", ""]
    proxy = _load("proxy.json")
    if proxy:
        c = proxy["config"]
        glue, ref = proxy["correlation_with_glue"], proxy["correlation_with_reference_pretrain_loss"]
        conv = proxy["correlation_with_reference_pretrain_loss_converged_only"]
        lines += ["## The MLM-loss proxy", "",
                  f"{c['steps']} steps of {c['batch_size']} blocks of {c['seq_len']} tokens (lr {c['lr']}) "
                  f"on the shipped corpus, {proxy['total_seconds'] / 60:.0f} CPU minutes for "
                  f"{len(proxy['architectures'])} architectures.", "",
                  "| compared with | n | Spearman (p) | Kendall (p) |", "|---|---|---|---|"]
        for label, r in (("GLUE score", glue), ("reference 1M-step pre-training loss", ref),
                         ("the same, runs that did not diverge", conv)):
            lines.append(f"| {label} | {r['n']} | {r['spearman']:.2f} ({r['spearman_p']:.2f}) | "
                         f"{r['kendall']:.2f} ({r['kendall_p']:.2f}) |")
        lines.append("")
    pareto = _load("pareto.json")
    if pareto:
        command = pareto["command"]
        lines += ["## Frontiers", "",
                  f"`{' '.join(command['argv'])}`: {command['frontiers']} frontiers for {command['boards']} boards in "
                  f"{command['wall_s']:.1f} s wall ({command['wall_s_per_board']:.1f} s per board; "
                  f"{command['cpu_s_per_board']:.1f} CPU s per board).", "",
                  f"Default search: population {pareto['settings']['pop_size']}, {pareto['settings']['n_generations']} "
                  f"generations; compared with {pareto['longer_settings']['n_generations']} generations (10x). "
                  f"Hypervolume ({pareto['normalisation']}; reference point {pareto['reference_point']}):", "",
                  "| device | measure | points | hypervolume | 10x points | 10x hypervolume | gap |",
                  "|---|---|---|---|---|---|---|"]
        for row in pareto["frontiers"]:
            lines.append(f"| {row['device']} | {row['measure']} | {row['points']} | {row['hypervolume']:.4f} | "
                         f"{row['long_points']} | {row['long_hypervolume']:.4f} | {100 * row['relative_gap']:.2f} % |")
        lines += ["", f"Largest gap {100 * pareto['max_relative_gap']:.2f} %, "
                      f"mean {100 * pareto['mean_relative_gap']:.2f} %.",
                  "", "![frontiers](frontiers.png)", ""]
    path = OUT / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("accuracy", "proxy", "pareto"), action="append")
    parser.add_argument("--splits", type=int, default=200, help="leave-some-out splits (default 200)")
    parser.add_argument("--proxy-steps", type=int, default=60, help="pre-training steps of the proxy (default 60)")
    parser.add_argument("--proxy-seq-len", type=int, default=32, help="tokens per block of the proxy (default 32)")
    parser.add_argument("--longer", type=int, default=10, help="length of the comparison search (default 10x)")
    args = parser.parse_args(argv)
    if not accuracy_file().is_file():
        print(f"public data not found at {data_dir()}; set EDGETRAN_DATA", file=sys.stderr)
        return 2
    parts = args.part or ["accuracy", "proxy", "pareto"]
    for part in parts:
        started = time.perf_counter()
        if part == "accuracy":
            result = run_accuracy(args.splits)
        elif part == "proxy":
            result = run_proxy(args.splits, args.proxy_steps, args.proxy_seq_len)
        else:
            result = run_pareto(args.longer)
        result["machine"] = machine()
        result["wall_s"] = time.perf_counter() - started
        print(f"wrote {write_json(f'{part}.json', result)}", flush=True)
    print(f"wrote {write_report()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
