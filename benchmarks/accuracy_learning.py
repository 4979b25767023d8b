"""Accuracy learning curves: how well the accuracy model ranks unseen NAS-Bench-BERT architectures
from 0, 8, 16, ... labelled ones, what helps when labels are few, and how honest its std is.

Data: the 250 runs of ``datasets/accuracy/nasbench_bert_250.json``, 246 distinct architectures (4
trained twice), each scored on eight GLUE tasks and their average (``glue``), 0-100.

Splits are by architecture (both runs of a repeated architecture on the same side). ``5-fold``: the 246
architectures are cut into 5 folds, shuffled with the seed of a *repeat*; each fold is held out in turn
(about 49 architectures) and the other 4/5 (about 197) form the labelled *pool*; the training set of
size n is the first n architectures of the pool, shuffled once per split, so the training sets of one
split are nested and every n is tested on the same held-out architectures. n = ``all`` is the whole
pool. ``10-fold`` (n = ``all`` only) trains on 9/10 of the architectures, the closest to training on
all 250 runs and scoring unseen ones. The GLUE average gets ``--glue-repeats`` repeats of the 5-fold
cut (the goals are read on it), every task ``--repeats``; the first repeats are the same cuts for
every task.

Scores on each held-out fold, averaged over splits (± the standard error): Kendall tau and Spearman
rho of predicted against true scores (the mean of the runs of an architecture), nDCG@10 with the true
scores as gains, the *top-10 hit* (the truly best held-out architecture is among the 10 predicted
best; ties in the prediction broken pessimistically) and the *top-10 share* (the share of the true
10 best found among the 10 predicted best). For n = all the out-of-fold predictions of all 246
architectures are also ranked together (*pooled* tau).

Models (each fitted on the n labelled architectures; seeds fixed):

- ``accuracy_model``: :class:`protran.AccuracyModel`, the default: extremely randomised trees plus an
  RBF SVR on :data:`protran.STRUCTURE_FEATURE_NAMES`. Its std is scored on the GLUE average only
  (the other tasks use the same class with the std's calibration skipped, which leaves the mean
  unchanged and halves the time);
- ``accuracy_model+tf``: the same two learners (``protran.MeanModel``, the same row weights) on the structure
  features plus the six model metrics of the training-free proxies (log values, as the combination
  uses them);
- ``xgboost_embedding``: a plain xgboost regressor (library defaults, one thread) on the old feature
  set, embedding + analytic features (:func:`protran.accuracy_features`): the reference baseline;
- ``xgboost_structure``: the same regressor on the structure features (does the learner or the
  features make the difference?);
- ``gbdt_ensemble_embedding`` (GLUE average only): the previous accuracy surrogate,
  :func:`protran.make_accuracy_surrogate` (16 bagged depth-2 xgboost members), on the old features;
- ``tf_ridge``: the recipe of the training-free ``combined`` metric (ridge on the nine standardised
  log metrics, penalty by leave-one-out) refitted on the n labelled architectures;
- ``extra_trees_alone`` and ``svr_alone`` (GLUE average only): the two halves of the accuracy
  model's mean, each on its own (as fitted inside it), to see whether their average ranks better.

n = 0 (no labels of the task) is the training-free proxies: ``flops`` and ``activation_distance``
have no fitted weights at all; ``combined_refit`` is the combination refitted on the GLUE average of
the split's pool only (the labels of ~197 *other* architectures, none of the held-out ones);
``combined_shipped`` is the shipped combination, whose weights were fitted on all 246 architectures,
the held-out ones included, so its figure is optimistic and given for reference only. The metric
values are read from ``benchmarks/results/training_free/metric_values.json`` (written by
``benchmarks/training_free.py``), never recomputed.

Calibration (GLUE average): the share of held-out scores inside ±1 σ and ±1.96 σ of the
``accuracy_model``'s std, pooled over splits, per n. Nothing here is far from the scored
architectures, so for extrapolation the model fitted on all 250 runs reports its std and
``extrapolated`` flag for a few large FlexiBERT 2.0 architectures (12 × 768, 8 × 512, ...) and for
random architectures of the whole space, against its median std on held-out scored ones.

The goals are reported as met or not with the measured figure: GLUE-average tau >= 0.78
with all data (10-fold), >= 0.72 with 32 labelled, >= 0.55 training-free only, and 90-98 % of unseen
scores inside ±1.96 σ.

Outputs (``--out``, default ``benchmarks/results/accuracy_learning/``): ``results.json``,
``README.md`` and ``learning_curves.png``.

Usage::

    python benchmarks/accuracy_learning.py            # about 10 minutes on 2 cores
    python benchmarks/accuracy_learning.py --quick    # glue and cola, one repeat, n = 8, 32, all
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import json
import math
import multiprocessing
import platform
import resource
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flexibert import ArchSpec, model_hash, sample_architectures
from protran import (
    AccuracyModel,
    MeanModel,
    TrainingFreeCombination,
    accuracy_features,
    host_info,
    load_accuracy,
    load_training_free_combination,
    make_accuracy_surrogate,
    metric_features,
    noise_weights,
    ranking_metrics,
    software_versions,
    structure_features,
    training_free_metrics,
)
from protran.vocabulary import TRAINING_FREE_MODEL_METRICS, TRAINING_FREE_SIZE_METRICS

SHIPPED = REPO / "datasets" / "accuracy" / "nasbench_bert_250.json"
OUT = REPO / "benchmarks" / "results" / "accuracy_learning"
METRIC_CACHE = REPO / "benchmarks" / "results" / "training_free" / "metric_values.json"
#: The metric-cache settings this benchmark reads (those of ``benchmarks/training_free.py`` at seed 0).
METRIC_CACHE_VERSION = 1

TASKS = ("glue", "cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst", "sts")
SIZES = (8, 16, 32, 64, 128)
FOLDS, FOLDS_ALL = 5, 10
REPEATS, GLUE_REPEATS = 2, 4
TOP = 10
Z_95 = 1.959963984540054
QUICK = {"tasks": ("glue", "cola"), "sizes": (8, 32), "repeats": 1, "glue_repeats": 1}

ALL_METRICS = (*TRAINING_FREE_SIZE_METRICS, *TRAINING_FREE_MODEL_METRICS)
MODELS = {
    "accuracy_model": "AccuracyModel (default): extra trees + RBF SVR on the structure features",
    "accuracy_model+tf": "the AccuracyModel's learners on structure features + the six model metrics",
    "xgboost_embedding": "plain xgboost (library defaults) on embedding + analytic features: the reference baseline",
    "xgboost_structure": "plain xgboost (library defaults) on the structure features",
    "gbdt_ensemble_embedding": "make_accuracy_surrogate (16 bagged depth-2 xgboost) on embedding + analytic",
    "tf_ridge": "the `combined` recipe (ridge on the nine training-free metrics) refitted on the n labelled",
    "extra_trees_alone": "the AccuracyModel's extremely randomised trees without the SVR",
    "svr_alone": "the AccuracyModel's RBF SVR without the trees",
}
GLUE_ONLY_MODELS = ("gbdt_ensemble_embedding", "extra_trees_alone", "svr_alone")
PROXIES = {
    "flops": "FLOPs of a 128-token sequence (no labels)",
    "activation_distance": "NASWOT activation distance (no labels)",
    "combined_refit": "the combination refitted on the GLUE average of the split's pool only",
    "combined_shipped": "the shipped combination (fitted on all 246, held-out ones included: optimistic)",
}
SCORES = ("kendall", "spearman", "ndcg_at_10", "top10_hit", "top10_share")
#: Large FlexiBERT 2.0 architectures, far beyond the scored ones (at most 4 layers, 256 wide), and two
#: small ones like them.
LARGE = {
    "12 x 768 (BERT-base-like)": {"l": 12, "o": [["sa_sdp_64"] * 12] * 12, "h": [768] * 12, "f": [[3072]] * 12},
    "8 x 512": {"l": 8, "o": [["sa_sdp_64"] * 8] * 8, "h": [512] * 8, "f": [[2048]] * 8},
    "12 x 256": {"l": 12, "o": [["sa_sdp_64"] * 4] * 12, "h": [256] * 12, "f": [[1024]] * 12},
    "6 x 512": {"l": 6, "o": [["sa_sdp_64"] * 8] * 6, "h": [512] * 6, "f": [[2048]] * 6},
    "4 x 256 (BERT-mini-like)": {"l": 4, "o": [["sa_sdp_64"] * 4] * 4, "h": [256] * 4, "f": [[1024]] * 4},
    "2 x 128 (BERT-tiny-like)": {"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128] * 2, "f": [[512]] * 2},
}
RANDOM_SPACE_SAMPLE = 300


# -- data -----------------------------------------------------------------------------------------------------


@dataclass
class Data:
    """The distinct architectures (first appearance), their records and mean score per task, and every
    feature matrix the models read, row i being architecture i."""

    specs: list[ArchSpec]
    records: dict[str, list[list]]  # task -> per architecture, its records
    scores: dict[str, np.ndarray]  # task -> per architecture, the mean score
    structure: np.ndarray
    embedding: np.ndarray
    metric_values: dict[str, np.ndarray]  # the nine training-free metrics, raw
    model_metric_features: np.ndarray  # the six model metrics through metric_features
    seed: int = 0
    repeated: int = 0


def load_data(path: Path, cache_path: Path, tasks: Sequence[str], seed: int) -> Data:
    records = load_accuracy(path)
    index: dict[str, int] = {}
    specs: list[ArchSpec] = []
    for record in records:
        if record.arch_hash not in index:
            index[record.arch_hash] = len(specs)
            specs.append(record.spec)
    by_task: dict[str, list[list]] = {task: [[] for _ in specs] for task in tasks}
    for record in records:
        if record.task in by_task and record.score is not None:
            by_task[record.task][index[record.arch_hash]].append(record)
    missing = [task for task in tasks if not all(by_task[task])]
    if missing:
        raise SystemExit(f"{path}: some architectures have no score for {', '.join(missing)}")
    scores = {task: np.array([np.mean([r.score for r in rows]) for rows in by_task[task]]) for task in tasks}
    values = dict(training_free_metrics(specs, TRAINING_FREE_SIZE_METRICS))
    values.update(cached_model_metrics(specs, cache_path))
    model_features = np.column_stack([metric_features(name, values[name]) for name in TRAINING_FREE_MODEL_METRICS])
    repeated = sum(len(rows) > 1 for rows in by_task[tasks[0]])
    return Data(specs, by_task, scores, structure_features(specs), accuracy_features(specs), values, model_features,
                seed, repeated)


def cached_model_metrics(specs: list[ArchSpec], path: Path) -> dict[str, np.ndarray]:
    """The six model metrics of every architecture from ``benchmarks/training_free.py``'s cache."""
    if not path.is_file():
        raise SystemExit(f"training-free metric values not found: {path}; run `python benchmarks/training_free.py`")
    cache = json.loads(path.read_text())
    settings = cache.get("settings", {})
    if settings.get("version") != METRIC_CACHE_VERSION or settings.get("seed") != 0:
        raise SystemExit(f"{path} holds metric values of other settings ({settings}); rerun "
                         "`python benchmarks/training_free.py`")
    known = cache["architectures"]
    absent = [model_hash(spec) for spec in specs if model_hash(spec) not in known]
    if absent:
        raise SystemExit(f"{path} lacks {len(absent)} architecture(s); run `python benchmarks/training_free.py`")
    rows = [known[model_hash(spec)]["values"] for spec in specs]
    return {name: np.array([row[name] for row in rows], dtype=float) for name in TRAINING_FREE_MODEL_METRICS}


# -- splits -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """One held-out fold: ``test`` architectures, and the labelled pool in the order it is used."""

    scheme: str  # "5-fold" or "10-fold"
    repeat: int
    fold: int
    pool: np.ndarray
    test: np.ndarray


def make_splits(n_architectures: int, folds: int, repeats: int, seed: int, scheme: str) -> list[Split]:
    from sklearn.model_selection import KFold

    splits = []
    for repeat in range(repeats):
        cut = KFold(folds, shuffle=True, random_state=seed + repeat).split(np.arange(n_architectures))
        for fold, (pool, test) in enumerate(cut):
            order = np.random.default_rng([seed, repeat, fold]).permutation(pool)
            splits.append(Split(scheme, repeat, fold, order, np.sort(test)))
    return splits


# -- models -----------------------------------------------------------------------------------------------------


def plain_xgboost(seed: int):
    import xgboost

    return xgboost.XGBRegressor(random_state=seed, n_jobs=1)


def scores_of(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Kendall, Spearman, nDCG@10, top-10 hit and top-10 share of one held-out fold."""
    metrics = ranking_metrics(y_true, y_pred, ks=(TOP,))
    predicted_top = np.lexsort((y_true, -y_pred))[:TOP]  # ties in the prediction: worst true score first
    true_top = np.argsort(-y_true, kind="stable")[:TOP]
    share = len(set(predicted_top.tolist()) & set(true_top.tolist())) / min(TOP, len(y_true))
    return {"kendall": metrics["kendall"], "spearman": metrics["spearman"], "ndcg_at_10": metrics[f"ndcg_at_{TOP}"],
            "top10_hit": metrics[f"best_of_{TOP}"], "top10_share": share}


def row_weights(model: AccuracyModel, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The weights the accuracy model gives its rows (one source: the noise of repeats)."""
    noise_std = model.target_.noise_std
    return noise_weights(y, (noise_std**2 / counts) if noise_std else np.zeros_like(y))


_DATA: Data | None = None


def _init_worker(data: Data) -> None:
    global _DATA
    _DATA = data
    warnings.filterwarnings("ignore")


def run_job(job: tuple[str, Split, tuple, bool]) -> dict:
    """Every model at every n of one task and split: score rows, calibration rows (with ``calibrate``) and
    the out-of-fold predictions at n = all."""
    task, split, sizes, calibrate = job
    data = _DATA
    assert data is not None
    seed = data.seed
    test, y_test = split.test, data.scores[task][split.test]
    base = {"task": task, "scheme": split.scheme, "repeat": split.repeat, "fold": split.fold}
    rows, calibration, oof = [], [], []

    def add(n_label: str, n_train: int, model: str, predicted: np.ndarray, seconds: float) -> None:
        rows.append({**base, "n": n_label, "n_train": n_train, "model": model, "seconds": seconds,
                     **scores_of(y_test, predicted)})
        if n_label == "all":
            oof.append({**base, "model": model, "test": test.tolist(), "predicted": predicted.tolist()})

    # n = 0: the training-free proxies
    values = data.metric_values
    pool = split.pool
    refit = TrainingFreeCombination.fit({m: values[m][pool] for m in ALL_METRICS}, data.scores["glue"][pool],
                                        ALL_METRICS)
    proxies = {"flops": values["flops"][test], "activation_distance": values["activation_distance"][test],
               "combined_refit": refit.score({m: values[m][test] for m in ALL_METRICS}),
               "combined_shipped": load_training_free_combination().score({m: values[m][test] for m in ALL_METRICS})}
    for name, predicted in proxies.items():
        add("0", 0, name, np.asarray(predicted, dtype=float), 0.0)

    labels = [(str(n), n) for n in sizes if n < len(pool)] + [("all", len(pool))]
    augmented = np.hstack([data.structure, data.model_metric_features])
    for n_label, n in labels:
        train = pool[:n]
        y = data.scores[task][train]
        counts = np.array([len(data.records[task][i]) for i in train], dtype=float)
        records = [record for i in train for record in data.records[task][i]]

        started = time.process_time()
        model = AccuracyModel(task, seed=seed).fit(records)
        if calibrate:
            mean, std = model.predict_features(data.structure[test], return_std=True)
        else:
            mean = model.predict_features(data.structure[test])
        add(n_label, n, "accuracy_model", mean, time.process_time() - started)
        if calibrate:
            z = np.abs(y_test - mean) / np.maximum(std, 1e-12)
            calibration.append({**base, "n": n_label, "n_train": n, "count": len(test),
                                "inside_1": int((z <= 1).sum()), "inside_196": int((z <= Z_95).sum()),
                                "std": std.tolist(), "abs_error": np.abs(y_test - mean).tolist(),
                                "std_factor": model.std_factor_})

        started = time.process_time()
        learner = MeanModel(seed, svr_weight=model.mean_.svr_weight).fit(augmented[train], y,
                                                                         row_weights(model, y, counts))
        add(n_label, n, "accuracy_model+tf", learner.predict(augmented[test]), time.process_time() - started)

        for name, X in (("xgboost_embedding", data.embedding), ("xgboost_structure", data.structure)):
            started = time.process_time()
            predicted = plain_xgboost(seed).fit(X[train], y).predict(X[test]).astype(float)
            add(n_label, n, name, predicted, time.process_time() - started)

        if task == "glue":
            started = time.process_time()
            halves = MeanModel(seed).fit(data.structure[train], y, row_weights(model, y, counts))
            seconds = time.process_time() - started
            for name, predicted in zip(("extra_trees_alone", "svr_alone"), halves.parts(data.structure[test])):
                add(n_label, n, name, predicted, seconds)

            started = time.process_time()
            predicted = make_accuracy_surrogate(seed).fit(data.embedding[train], y).predict(data.embedding[test])
            add(n_label, n, "gbdt_ensemble_embedding", np.asarray(predicted, dtype=float),
                time.process_time() - started)

        started = time.process_time()
        ridge = TrainingFreeCombination.fit({m: values[m][train] for m in ALL_METRICS}, y, ALL_METRICS)
        add(n_label, n, "tf_ridge", ridge.score({m: values[m][test] for m in ALL_METRICS}),
            time.process_time() - started)
    return {"rows": rows, "calibration": calibration, "oof": oof}


def run_jobs(data: Data, jobs: list[tuple], workers: int) -> list[dict]:
    if workers <= 1:
        _init_worker(data)
        return [run_job(job) for job in jobs]
    # the GLUE average's jobs (with the std) are the longest: start them first
    order = sorted(range(len(jobs)), key=lambda i: (not jobs[i][3], i))
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(data,)) as pool:
        futures = {i: pool.submit(run_job, jobs[i]) for i in order}
        return [futures[i].result() for i in range(len(jobs))]


# -- aggregation ---------------------------------------------------------------------------------------------


def summarise(rows: list[dict]) -> list[dict]:
    """Mean, standard deviation and standard error of every score over the splits of each (task, scheme,
    n, model)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["scheme"], row["n"], row["model"]), []).append(row)
    out = []
    for (task, scheme, n, model), group in groups.items():
        entry = {"task": task, "scheme": scheme, "n": n, "model": model, "splits": len(group),
                 "n_train": float(np.mean([r["n_train"] for r in group])),
                 "fit_cpu_seconds": float(np.mean([r["seconds"] for r in group]))}
        for score in SCORES:
            values = np.array([r[score] for r in group], dtype=float)
            values = values[np.isfinite(values)]
            entry[score] = float(values.mean()) if values.size else float("nan")
            entry[f"{score}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
            entry[f"{score}_se"] = entry[f"{score}_std"] / math.sqrt(values.size) if values.size > 1 else 0.0
        out.append(entry)
    return out


def pooled_out_of_fold(oof: list[dict], scores: dict[str, np.ndarray]) -> list[dict]:
    """Kendall tau and Spearman rho of the out-of-fold predictions of all architectures at n = all, per
    (task, scheme, model), averaged over repeats."""
    from scipy.stats import kendalltau, spearmanr

    groups: dict[tuple, dict[int, list[dict]]] = {}
    for row in oof:
        groups.setdefault((row["task"], row["scheme"], row["model"]), {}).setdefault(row["repeat"], []).append(row)
    out = []
    for (task, scheme, model), repeats in groups.items():
        taus, rhos = [], []
        for parts in repeats.values():
            index = np.concatenate([p["test"] for p in parts]).astype(int)
            predicted = np.concatenate([p["predicted"] for p in parts])
            taus.append(float(kendalltau(predicted, scores[task][index])[0]))
            rhos.append(float(spearmanr(predicted, scores[task][index])[0]))
        out.append({"task": task, "scheme": scheme, "model": model, "repeats": len(taus),
                    "kendall": float(np.mean(taus)), "spearman": float(np.mean(rhos))})
    return out


def summarise_calibration(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["scheme"], row["n"]), []).append(row)
    out = []
    for (scheme, n), group in groups.items():
        count = sum(r["count"] for r in group)
        std = np.concatenate([r["std"] for r in group])
        error = np.concatenate([r["abs_error"] for r in group])
        out.append({"scheme": scheme, "n": n, "held_out": count, "splits": len(group),
                    "inside_1_std": sum(r["inside_1"] for r in group) / count,
                    "inside_1.96_std": sum(r["inside_196"] for r in group) / count,
                    "median_std": float(np.median(std)), "median_abs_error": float(np.median(error)),
                    "rmse": float(np.sqrt(np.mean(error**2))),
                    "std_factor_median": float(np.median([r["std_factor"] for r in group]))})
    return out


# -- extrapolation ---------------------------------------------------------------------------------------------


def extrapolation(data: Data, seed: int) -> dict:
    """The model fitted on every run of the GLUE average: mean, std and flag of the large architectures,
    and of random architectures of the whole FlexiBERT 2.0 space, against the scored ones."""
    records = [record for rows in data.records["glue"] for record in rows]
    model = AccuracyModel("glue", seed=seed).fit(records)
    _, scored_std = model.predict_features(data.structure, return_std=True)
    specs = [ArchSpec.from_model_dict(d) for d in LARGE.values()]
    F = structure_features(specs)
    mean, std = model.predict_features(F, return_std=True)
    flags = model.extrapolated_features(F)
    space = sample_architectures(RANDOM_SPACE_SAMPLE, method="random", seed=seed)
    F_space = structure_features(space)
    _, space_std = model.predict_features(F_space, return_std=True)
    space_flags = model.extrapolated_features(F_space)
    glue = data.scores["glue"]
    return {
        "std_factor": model.std_factor_,
        "scored_glue_range": [float(glue.min()), float(glue.max())], "scored_glue_std": float(glue.std()),
        "scored_in_sample_median_std": float(np.median(scored_std)),
        "architectures": [{"name": name, "layers": spec.num_layers, "hidden": spec.hidden_sizes[0],
                           "mean": float(m), "std": float(s), "extrapolated": bool(e)}
                          for name, spec, m, s, e in zip(LARGE, specs, mean, std, flags)],
        "random_space": {"architectures": len(space), "extrapolated_share": float(space_flags.mean()),
                         "median_std": float(np.median(space_std)),
                         "median_std_extrapolated": float(np.median(space_std[space_flags])) if space_flags.any()
                         else None,
                         "median_std_in_range": float(np.median(space_std[~space_flags])) if (~space_flags).any()
                         else None},
    }


# -- goals ------------------------------------------------------------------------------------------------------


def find(summary: list[dict], task: str, scheme: str, n: str, model: str) -> dict | None:
    return next((r for r in summary if (r["task"], r["scheme"], r["n"], r["model"]) == (task, scheme, n, model)),
                None)


def goals(summary: list[dict], calibration: list[dict], pooled: list[dict]) -> list[dict]:
    def tau(scheme: str, n: str, model: str) -> float | None:
        row = find(summary, "glue", scheme, n, model)
        return row["kendall"] if row else None

    def coverage(scheme: str, n: str) -> float | None:
        row = next((r for r in calibration if (r["scheme"], r["n"]) == (scheme, n)), None)
        return row["inside_1.96_std"] if row else None

    all_tau = tau("10-fold", "all", "accuracy_model")
    tau32 = tau("5-fold", "32", "accuracy_model")
    flops, refit = tau("5-fold", "0", "flops"), tau("5-fold", "0", "combined_refit")
    cover = coverage("10-fold", "all")
    out = [
        {"goal": "GLUE-average Kendall tau >= 0.78 with all data, unseen architectures (10-fold)",
         "measured": all_tau, "met": all_tau is not None and all_tau >= 0.78,
         "also": {"10-fold, out-of-fold predictions of all 246 ranked together": next(
             (r["kendall"] for r in pooled if (r["task"], r["scheme"], r["model"]) ==
              ("glue", f"{FOLDS_ALL}-fold", "accuracy_model")), None),
                  "5-fold (4/5 of the data)": tau("5-fold", "all", "accuracy_model")}},
        {"goal": "GLUE-average Kendall tau >= 0.72 with 32 labelled architectures", "measured": tau32,
         "met": tau32 is not None and tau32 >= 0.72,
         "also": {name: tau("5-fold", "32", name) for name in MODELS if name != "accuracy_model"}},
        {"goal": "GLUE-average Kendall tau >= 0.55 training-free only (no labels of the ranked architectures; "
                 "combined_refit: the combination's weights fitted on the other folds)", "measured": refit,
         "met": refit is not None and refit >= 0.55,
         "also": {"flops (no fitted weights at all)": flops,
                  "activation_distance": tau("5-fold", "0", "activation_distance"),
                  "combined_shipped (optimistic)": tau("5-fold", "0", "combined_shipped")}},
        {"goal": "90-98 % of unseen GLUE-average scores inside ±1.96 σ (all data, 10-fold)", "measured": cover,
         "met": cover is not None and 0.90 <= cover <= 0.98,
         "also": {"5-fold": coverage("5-fold", "all")}},
    ]
    return out


# -- report ------------------------------------------------------------------------------------------------------


def _f(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _n_labels(summary: list[dict]) -> list[str]:
    labels = {r["n"] for r in summary if r["scheme"] == "5-fold"}
    return sorted(labels, key=lambda n: math.inf if n == "all" else int(n))


def _cell(row: dict | None, score: str = "kendall") -> str:
    if row is None:
        return "–"
    return f"{_f(row[score])} ± {_f(row[score + '_se'])}" if row["splits"] > 1 else _f(row[score])


def _best_model(summary: list[dict], task: str, n: str) -> tuple[str, float] | None:
    rows = [r for r in summary if (r["task"], r["scheme"], r["n"]) == (task, "5-fold", n)
            and r["model"] != "combined_shipped" and math.isfinite(r["kendall"])]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["kendall"])
    return best["model"], best["kendall"]


def write_readme(result: dict, out: Path) -> None:
    summary, meta = result["summary"], result["meta"]
    tasks, labels = meta["tasks"], _n_labels(summary)
    calibration = result["calibration"]
    n_all = find(summary, "glue", "5-fold", "all", "accuracy_model")
    n_all_10 = find(summary, "glue", "10-fold", "all", "accuracy_model")
    lines = [
        "# Accuracy learning curves on NAS-Bench-BERT",
        "",
        f"Generated by `{meta['command']}` in {meta['seconds']:.0f} s wall time ({meta['cpu_seconds']:.0f} CPU s, "
        f"{meta['workers']} process(es)) on {meta['host'].get('cpu_model') or meta['host'].get('machine')} with "
        f"Python {meta['software']['python']}.",
        "",
        f"{meta['architectures']} distinct architectures ({meta['runs']} runs, {meta['repeated_architectures']} "
        f"trained twice) of `datasets/accuracy/nasbench_bert_250.json`. Split by architecture: "
        f"{FOLDS}-fold cuts ({meta['glue_repeats']} repeat(s) for the GLUE average, {meta['repeats']} for each "
        f"task), each fold of ~{meta['architectures'] // FOLDS} architectures held out in turn; the training set of "
        f"size n is the first n of the other 4/5 (the pool, ~{int(n_all['n_train']) if n_all else '–'}), so every n "
        f"is scored on the same held-out folds; n = all is the whole pool. The {FOLDS_ALL}-fold rows "
        + (f"train on 9/10 (~{int(n_all_10['n_train'])} architectures) and score folds of "
           f"~{round(meta['architectures'] / FOLDS_ALL)}." if n_all_10 else "were not run.")
        + " Scores are means over splits ± standard error. Top-10 hit: the "
        "truly best held-out architecture is among the 10 predicted best; top-10 share: the share of the true "
        "10 best among the 10 predicted best (both over ~49 held-out architectures in 5-fold, ~25 in 10-fold).",
        "",
        "## Goals",
        "",
        "| goal | measured | met | also |",
        "|---|---|---|---|",
    ]
    for goal in result["goals"]:
        also = "; ".join(f"{k}: {_f(v)}" for k, v in goal["also"].items())
        lines.append(f"| {goal['goal']} | {_f(goal['measured'])} | {'yes' if goal['met'] else '**no**'} | {also} |")
    lines += ["", "## GLUE average: Kendall τ against the number of labelled architectures", "",
              "n = 0 rows are the training-free proxies (no labels of the held-out or the labelled architectures; "
              "`combined_refit` uses the GLUE scores of the pool, i.e. of other architectures, "
              "`combined_shipped` was fitted on all 246 and is optimistic).", ""]
    glue_models = [m for m in (*PROXIES, *MODELS) if any(r["model"] == m and r["task"] == "glue" for r in summary)]
    lines += ["| model | " + " | ".join(f"n = {n}" for n in labels) + f" | all, {FOLDS_ALL}-fold | "
              f"all, {FOLDS_ALL}-fold pooled |",
              "|---|" + "---|" * (len(labels) + 2)]
    pooled = {(r["task"], r["scheme"], r["model"]): r for r in result["pooled_out_of_fold"]}
    for model in glue_models:
        cells = [_cell(find(summary, "glue", "5-fold", n, model)) for n in labels]
        ten = find(summary, "glue", "10-fold", "all", model)
        pool_row = pooled.get(("glue", "10-fold", model))
        cells += [_cell(ten), _f(pool_row["kendall"]) if pool_row else "–"]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "### The accuracy model on the GLUE average, every score", "",
              "| n | Kendall τ | Spearman ρ | nDCG@10 | top-10 hit | top-10 share | fit CPU s |",
              "|---|---|---|---|---|---|---|"]
    for scheme, n in [("5-fold", n) for n in labels] + [(f"{FOLDS_ALL}-fold", "all")]:
        row = find(summary, "glue", scheme, n, "accuracy_model")
        if row:
            label = n if scheme == "5-fold" else f"all ({FOLDS_ALL}-fold)"
            lines.append(f"| {label} | " + " | ".join(_cell(row, s) for s in SCORES)
                         + f" | {_f(row['fit_cpu_seconds'], 2)} |")
    lines += ["", "Training-free at n = 0 on the same folds (top-10 hit / share): "
              + "; ".join(f"{p} {_f(r['top10_hit'], 2)} / {_f(r['top10_share'], 2)}"
                          for p in PROXIES if (r := find(summary, "glue", "5-fold", "0", p))) + "."]

    lines += ["", "## Per task: Kendall τ with all data", "",
              f"Rows: models; n = all of the 5-fold cut (4/5 of the data) / of the {FOLDS_ALL}-fold cut (9/10).", "",
              "| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for model in (*PROXIES, *MODELS):
        cells = []
        for task in tasks:
            five = find(summary, task, "5-fold", "0" if model in PROXIES else "all", model)
            ten = find(summary, task, f"{FOLDS_ALL}-fold", "0" if model in PROXIES else "all", model)
            cells.append(f"{_f(five['kendall']) if five else '–'} / {_f(ten['kendall']) if ten else '–'}")
        if any(c != "– / –" for c in cells):
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "## Per task: the accuracy model's learning curve (Kendall τ)", "",
              "| task | " + " | ".join(f"n = {n}" for n in labels) + f" | all, {FOLDS_ALL}-fold |",
              "|---|" + "---|" * (len(labels) + 1)]
    for task in tasks:
        cells = [_f(r["kendall"]) if (r := find(summary, task, "5-fold", n,
                                                "combined_refit" if n == "0" else "accuracy_model")) else "–"
                 for n in labels]
        ten = find(summary, task, f"{FOLDS_ALL}-fold", "all", "accuracy_model")
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {_f(ten['kendall']) if ten else '–'} |")
    lines.append("")
    lines.append("(n = 0: `combined_refit`.)")

    lines += ["", "## What helps at small n", "",
              "Best model by mean Kendall τ per task and n (5-fold; `combined_shipped` left out), and its τ:", "",
              "| task | " + " | ".join(f"n = {n}" for n in labels) + " |", "|---|" + "---|" * len(labels)]
    for task in tasks:
        cells = []
        for n in labels:
            best = _best_model(summary, task, n)
            cells.append(f"{best[0]} {_f(best[1])}" if best else "–")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += ["", "Difference in Kendall τ to `accuracy_model`, averaged over the tasks (positive: better than "
              "the default):", "", "| model | " + " | ".join(f"n = {n}" for n in labels if n != "0") + " |",
              "|---|" + "---|" * (len(labels) - 1)]
    for model in MODELS:
        if model == "accuracy_model":
            continue
        cells = []
        for n in labels:
            if n == "0":
                continue
            deltas = [a["kendall"] - b["kendall"] for task in tasks
                      if (a := find(summary, task, "5-fold", n, model)) and (b := find(summary, task, "5-fold", n,
                                                                                         "accuracy_model"))]
            cells.append(f"{np.mean(deltas):+.3f}" if deltas else "–")
        label = f"{model} (glue only)" if model in GLUE_ONLY_MODELS else model
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *result["findings"]]

    lines += ["", "## Calibration of the accuracy model's std (GLUE average)", "",
              "Share of held-out scores inside ±1 σ and ±1.96 σ, pooled over splits (a calibrated Gaussian: "
              "68.3 % and 95 %).", "",
              "| n | held-out scores | inside ±1 σ | inside ±1.96 σ | median σ | median abs. error | RMSE | "
              "std factor (median) |",
              "|---|---|---|---|---|---|---|---|"]
    for row in sorted(calibration, key=lambda r: (r["scheme"] != "5-fold",
                                                  math.inf if r["n"] == "all" else int(r["n"]))):
        label = row["n"] if row["scheme"] == "5-fold" else f"all ({row['scheme']})"
        lines.append(f"| {label} | {row['held_out']} | {row['inside_1_std']:.1%} | {row['inside_1.96_std']:.1%} | "
                     f"{_f(row['median_std'], 2)} | {_f(row['median_abs_error'], 2)} | {_f(row['rmse'], 2)} | "
                     f"{_f(row['std_factor_median'], 2)} |")
    ext = result["extrapolation"]
    ten_cal = next((r for r in calibration if r["scheme"] == f"{FOLDS_ALL}-fold"), None)
    lines += ["", "### Far from the scored architectures", "",
              "Every NAS-Bench-BERT architecture has 2 or 4 layers of width ≤ 256, so no held-out score tests the "
              f"std far away. The model fitted on all {meta['runs']} runs of the GLUE average (std factor "
              f"{_f(ext['std_factor'], 2)}) gives these (GLUE points; the scored ones range "
              f"{ext['scored_glue_range'][0]:.1f}–{ext['scored_glue_range'][1]:.1f}, standard deviation "
              f"{ext['scored_glue_std']:.2f}; its median std is {_f(ext['scored_in_sample_median_std'], 2)} on the "
              f"scored architectures themselves and {_f(ten_cal['median_std'] if ten_cal else None, 2)} on held-out "
              f"ones, {FOLDS_ALL}-fold):", "",
              "| architecture | predicted GLUE | std | std / held-out median | extrapolated |", "|---|---|---|---|---|"]
    held_median = ten_cal["median_std"] if ten_cal else ext["scored_in_sample_median_std"]
    for row in ext["architectures"]:
        lines.append(f"| {row['name']} | {row['mean']:.1f} | {row['std']:.2f} | {row['std'] / held_median:.1f}× | "
                     f"{'yes' if row['extrapolated'] else 'no'} |")
    space = ext["random_space"]
    lines += ["", f"Random FlexiBERT 2.0 architectures ({space['architectures']}): {space['extrapolated_share']:.0%} "
              f"flagged extrapolated; median std {_f(space['median_std'], 2)} "
              f"(flagged {_f(space['median_std_extrapolated'], 2)}, in range {_f(space['median_std_in_range'], 2)})."]
    lines += ["", "## Models", ""] + [f"- `{name}`: {text}" for name, text in {**PROXIES, **MODELS}.items()]
    lines += ["", "Learning curves: [learning_curves.png](learning_curves.png). Everything above, with standard "
              "deviations over splits, is in `results.json`.", ""]
    (out / "README.md").write_text("\n".join(lines))


def findings(summary: list[dict], tasks: Sequence[str]) -> list[str]:
    """Plain statements of which model leads where, read off the summary."""
    lines = []
    labels = [n for n in _n_labels(summary) if n != "0"]
    for model in ("accuracy_model+tf", "tf_ridge", "xgboost_embedding"):
        wins = []
        for n in labels:
            better = [task for task in tasks
                      if (a := find(summary, task, "5-fold", n, model)) and (b := find(summary, task, "5-fold", n,
                                                                                         "accuracy_model"))
                      and a["kendall"] > b["kendall"]]
            wins.append(f"n = {n}: {len(better)}/{len(tasks)}")
        lines.append(f"- `{model}` ranks better than `accuracy_model` on " + ", ".join(wins) + " tasks.")
    for proxy in ("flops", "combined_refit"):
        glue0 = find(summary, "glue", "5-fold", "0", proxy)
        if not glue0:
            continue
        for model in ("accuracy_model", "gbdt_ensemble_embedding"):
            overtaken = next((n for n in labels if (r := find(summary, "glue", "5-fold", n, model))
                              and r["kendall"] > glue0["kendall"]), None)
            lines.append(f"- On the GLUE average the training-free `{proxy}` (τ {_f(glue0['kendall'])}) is "
                         + (f"overtaken by `{model}` from n = {overtaken} labelled architectures."
                            if overtaken else f"not overtaken by `{model}` at any n tested."))
    return lines


# -- plot ----------------------------------------------------------------------------------------------------------


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, calibration = result["summary"], result["calibration"]
    labels = [n for n in _n_labels(summary) if n != "0"]
    xs = np.arange(1, len(labels) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    ax = axes[0]
    for model in MODELS:
        if model in ("extra_trees_alone", "svr_alone"):
            continue  # in the tables
        rows = [find(summary, "glue", "5-fold", n, model) for n in labels]
        if any(rows):
            means = np.array([r["kendall"] if r else np.nan for r in rows])
            errors = np.array([r["kendall_se"] if r else 0 for r in rows])
            width = 2.6 if model == "accuracy_model" else 1.3
            ax.errorbar(xs, means, yerr=errors, marker="o", linewidth=width, capsize=2, label=model)
    for proxy, style in (("flops", ":"), ("combined_refit", "--")):
        row = find(summary, "glue", "5-fold", "0", proxy)
        if row:
            ax.axhline(row["kendall"], color="gray", linestyle=style, label=f"n = 0: {proxy}")
    for level in (0.78, 0.72, 0.55):
        ax.axhline(level, color="red", linewidth=0.6, alpha=0.5)
    ax.set_xticks(xs, labels)
    ax.set_xlabel("labelled architectures n (5-fold; red: goals 0.78 / 0.72 / 0.55)")
    ax.set_ylabel("Kendall τ on held-out architectures")
    ax.set_title("GLUE average")
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    for task in result["meta"]["tasks"]:
        rows = [find(summary, task, "5-fold", n, "accuracy_model") for n in labels]
        ax.plot(xs, [r["kendall"] if r else np.nan for r in rows], marker=".",
                linewidth=2.6 if task == "glue" else 1.2, label=task)
    ax.set_xticks(xs, labels)
    ax.set_xlabel("labelled architectures n")
    ax.set_ylabel("Kendall τ")
    ax.set_title("accuracy_model per task")
    ax.legend(fontsize=7, ncol=3)
    ax = axes[2]
    rows = [next((r for r in calibration if (r["scheme"], r["n"]) == ("5-fold", n)), None) for n in labels]
    ax.plot(xs, [r["inside_1_std"] if r else np.nan for r in rows], marker="o", label="inside ±1 σ")
    ax.plot(xs, [r["inside_1.96_std"] if r else np.nan for r in rows], marker="o", label="inside ±1.96 σ")
    ax.axhline(0.683, color="tab:blue", linestyle=":", linewidth=0.8)
    ax.axhspan(0.90, 0.98, color="tab:orange", alpha=0.12, label="goal 90-98 %")
    ax.set_xticks(xs, labels)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("labelled architectures n")
    ax.set_ylabel("share of held-out GLUE scores")
    ax.set_title("calibration of the std (GLUE average)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHIPPED, help="a NAS-Bench-BERT JSON (default: the shipped 250)")
    parser.add_argument("--metric-cache", type=Path, default=METRIC_CACHE,
                        help="training-free metric values (default: benchmarks/results/training_free/"
                             "metric_values.json)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0, help="folds, training orders and models (default 0)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None, help="default: all nine")
    parser.add_argument("--sizes", nargs="+", type=int, default=None,
                        help=f"labelled architectures besides 0 and all (default {' '.join(map(str, SIZES))})")
    parser.add_argument("--repeats", type=int, default=None, help=f"5-fold repeats per task (default {REPEATS})")
    parser.add_argument("--glue-repeats", type=int, default=None,
                        help=f"5-fold repeats of the GLUE average (default {GLUE_REPEATS})")
    parser.add_argument("--no-ten-fold", action="store_true", help=f"skip the {FOLDS_ALL}-fold rows")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: glue and cola, one repeat, n = 8, 32 and all (a minute or two)")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else {"tasks": TASKS, "sizes": SIZES, "repeats": REPEATS,
                                       "glue_repeats": GLUE_REPEATS}
    tasks = tuple(args.tasks or preset["tasks"])
    tasks = ("glue", *[t for t in tasks if t != "glue"])  # the goals and the n = 0 refit read the GLUE average
    sizes = tuple(sorted(set(args.sizes or preset["sizes"])))
    repeats = args.repeats or preset["repeats"]
    glue_repeats = args.glue_repeats or preset["glue_repeats"]
    warnings.filterwarnings("ignore")
    started, cpu_started = time.perf_counter(), _cpu_seconds()

    data = load_data(args.data, args.metric_cache, tasks, args.seed)
    n_arch = len(data.specs)
    five = make_splits(n_arch, FOLDS, max(repeats, glue_repeats), args.seed, "5-fold")
    ten = [] if args.no_ten_fold else make_splits(n_arch, FOLDS_ALL, 1, args.seed, f"{FOLDS_ALL}-fold")
    jobs = []
    for task in tasks:
        wanted = glue_repeats if task == "glue" else repeats
        jobs += [(task, split, sizes, task == "glue") for split in five if split.repeat < wanted]
        jobs += [(task, split, (), task == "glue") for split in ten]
    print(f"{n_arch} architectures, {len(jobs)} splits over {len(tasks)} task(s), {args.workers} process(es)",
          flush=True)
    parts = run_jobs(data, jobs, args.workers)
    rows = [row for part in parts for row in part["rows"]]
    calibration_rows = [row for part in parts for row in part["calibration"]]
    summary = summarise(rows)
    calibration = summarise_calibration(calibration_rows)
    result = {
        "summary": summary,
        "pooled_out_of_fold": pooled_out_of_fold([row for part in parts for row in part["oof"]], data.scores),
        "calibration": calibration,
        "extrapolation": extrapolation(data, args.seed),
    }
    result["goals"] = goals(summary, calibration, result["pooled_out_of_fold"])
    result["findings"] = findings(summary, tasks)
    result["meta"] = {
        "command": " ".join(["python benchmarks/accuracy_learning.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "seed": args.seed, "tasks": list(tasks), "sizes": list(sizes), "folds": FOLDS, "folds_all": FOLDS_ALL,
        "ten_fold": not args.no_ten_fold, "repeats": repeats, "glue_repeats": glue_repeats, "top": TOP,
        "architectures": n_arch, "runs": sum(len(r) for r in data.records["glue"]),
        "repeated_architectures": data.repeated, "workers": args.workers, "models": MODELS, "proxies": PROXIES,
        "metric_cache": str(args.metric_cache.relative_to(REPO)) if args.metric_cache.is_relative_to(REPO)
        else str(args.metric_cache),
        "host": host_info(), "software": {**software_versions(), "platform": platform.platform()},
        "seconds": time.perf_counter() - started, "cpu_seconds": _cpu_seconds() - cpu_started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    write_readme(result, args.out)
    plot(result, args.out / "learning_curves.png")
    for goal in result["goals"]:
        print(f"{'met' if goal['met'] else 'NOT met'}: {goal['goal']}: {_f(goal['measured'])}", flush=True)
    print(f"done in {result['meta']['seconds']:.0f} s; wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
