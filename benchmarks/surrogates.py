"""Surrogate benchmark: which regressor, on which features, predicts hardware cost best from few rows.

Three parts, each written under ``--out`` (default ``benchmarks/results/surrogates/``):

1. Regressor comparison on the four public ProTran boards (the EdgeTran paper's Fig. 7 and Table II).
   For every board and seed a fixed random 25 % of the rows is held out; the training sets are the
   first n rows of the shuffled rest (n = 16, 32, 48, 64, 96, 128, 160, as far as a board allows), so
   they are nested. Every regressor (LR, GPR, SVR, DT, AdaBoost trees, GBDT and the MLP ensemble of
   ``protran.surrogates``) is fit on the 37-entry embedding and on embedding + analytic features
   ("both"); the project's default, the additive cost model, on the cost features. Scores on the
   held-out rows: MSE of values divided by the board maximum, Kendall tau, the share of predictions
   within +-10 % of the measurement, and the calibration of the predicted std (share of held-out rows
   inside mean +- 1 std and mean +- 1.96 std: 68 % and 95 % for a calibrated Gaussian). Medians
   over seeds.
2. Our own profiles (run stores ``datasets/profiles/*.sqlite``, or ``--profiles``): the training set
   is the first n rows of the active-learning profile run, in the order the profiler measured them
   (16 Latin-hypercube seeds, then uncertainty-chosen rows); the test set is the run with
   ``purpose: holdout`` (random architectures the loop never chose). Also the test-retest spread of
   latency (run with ``purpose: retest``, the seed architectures measured again) and the worst
   held-out errors of the default surrogate.
3. Predicted against measured (Fig. 8): the default surrogate fit on a training split, plotted
   against the measurements of the held-out rows, per board and measure.

Models are fit the way ``protran profile`` fits them: on targets divided by their training maximum,
with each surrogate's own target transform (log for ``additive``, identity for the others). To fit the
time budget some ensembles are smaller than their library defaults (see ``REGRESSORS``).

Outputs: ``records.csv`` (every fit), ``curves_median.csv`` (medians over seeds),
``own_profiles.csv``, ``own_worst_errors.csv``, ``results.json``, ``learning_curves_<measure>.png``,
``calibration.png``, ``own_profiles.png``, ``predicted_vs_measured.png`` and ``README.md``.

Usage::

    python benchmarks/surrogates.py --seed 0                       # seeds 0..4, about 6 CPU minutes
    python benchmarks/surrogates.py --seed 0 --profiles /path/to/*.sqlite
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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The public boards, measures, checkpoints and held-out share are the replay benchmark's.
from benchmarks.replay_public import BOARDS, CHECKPOINTS, TEST_FRACTION
from protran import vocabulary
from protran.vocabulary import MEASURE_NAMES


def measure_unit(name: str) -> str:
    """The unit of a measure as the plots print it: latency and energy are per sequence."""
    unit = vocabulary.measure(name).unit
    return unit if vocabulary.measure(name).field == "peak_power_w" else f"{unit}/seq"

TRAIN_SIZES = (16, 32, 48, 64, 96, 128, 160)
OWN_SIZES = (16, 32, 48, 64, 80)
N_SEEDS = 5
WITHIN = 0.10
Z_95 = 1.959963984540054

DEFAULT = ("additive", "costs")
# Library defaults except where a smaller ensemble keeps the benchmark inside its time budget:
# AdaBoost 50 trees (the reference profiler: 500), GBDT 4 bagged members of 100 trees (8 x 200),
# MLP 3 members, at most 300 epochs, patience 50 (5, 1000, 100).
REGRESSORS = {
    "lr": {},
    "gpr": {},
    "svr": {},
    "dt": {},
    "adaboost": {"n_estimators": 50},
    "gbdt": {"n_members": 4, "n_estimators": 100},
    "mlp": {"n_members": 3, "max_epochs": 300, "patience": 50},
}
FEATURE_SETS = ("embedding", "both")
METRICS = ("mse", "kendall_tau", "within_10pct", "coverage_68", "coverage_95")


def default_data_dir() -> Path:
    return Path(os.environ.get("EDGETRAN_DATA", REPO.parent / "shared" / "data")) / "protran"


#: This machine's full profiles (64 rows, 32 held-out, a retest): the shorter int8 profiles beside them
#: (24 rows, 8 held-out, no retest) are for co-design, not for this comparison.
OWN_PROFILES = ("epyc-cpu-onnxruntime.sqlite", "epyc-cpu-openvino.sqlite")


def default_profiles() -> list[Path]:
    folder = REPO / "datasets" / "profiles"
    return [folder / name for name in OWN_PROFILES if (folder / name).is_file()]


# -- data ------------------------------------------------------------------------------------------


@dataclass
class Board:
    """Measured architectures of one device: specs and a (rows x measures) target matrix."""

    name: str
    specs: list
    targets: np.ndarray
    batch_size: int = 1
    seq_len: int = 128
    features: dict = field(default_factory=dict)

    def X(self, feature_set: str) -> np.ndarray:
        """Feature matrix of every row (computed once per feature set)."""
        from protran.surrogates import featurize

        if feature_set not in self.features:
            self.features[feature_set] = featurize(self.specs, features=feature_set,
                                                   batch_size=self.batch_size, seq_len=self.seq_len)
        return self.features[feature_set]

    def measures(self) -> list[str]:
        return [m for j, m in enumerate(MEASURE_NAMES) if np.isfinite(self.targets[:, j]).all()]


def load_public_board(name: str, data_dir: Path) -> Board:
    """A public ProTran file; its values are per sequence, so features describe one sequence of 128."""
    from protran import load_rows, measure_matrix

    rows = load_rows(data_dir / BOARDS[name])
    return Board(name, [row.spec for row in rows], measure_matrix(rows))


@dataclass
class OwnProfile:
    """The runs of one run store: the profile run in measuring order, the holdout run, the retest run."""

    path: Path
    device: str
    train: Board
    holdout: Board | None
    train_rows: list
    holdout_rows: list
    retest_rows: list


def _latency_board(name: str, rows: list, batch_size: int, seq_len: int) -> Board:
    targets = np.full((len(rows), len(MEASURE_NAMES)), np.nan)
    targets[:, 0] = [row.latency_s for row in rows]
    for j, attr in ((1, "energy_j"), (2, "peak_power_w")):
        values = [getattr(row, attr) for row in rows]
        if rows and all(v is not None for v in values):
            targets[:, j] = values
    return Board(name, [row.spec for row in rows], targets, batch_size, seq_len)


def load_own_profile(path: Path) -> OwnProfile | None:
    """Runs of a store by purpose; None when it holds no profile run with measured rows."""
    from protran import RunStore

    usable = ("ok", "unstable")
    with RunStore(path, readonly=True) as store:
        runs = store.runs()
        by_purpose: dict[str, object] = {}
        for run in runs:
            by_purpose.setdefault(run.config.get("purpose", "profile"), run)
        profile = by_purpose.get("profile")
        if profile is None:
            return None
        train_rows = store.measurements(run_id=profile.id, status=usable)
        holdout_run, retest_run = by_purpose.get("holdout"), by_purpose.get("retest")
        holdout_rows = store.measurements(run_id=holdout_run.id, status=usable) if holdout_run else []
        retest_rows = store.measurements(run_id=retest_run.id, status=usable) if retest_run else []
    if len(train_rows) < 2:
        return None
    device = profile.device
    train = _latency_board(device, train_rows, profile.batch_size, profile.seq_len)
    holdout = _latency_board(device, holdout_rows, profile.batch_size, profile.seq_len) if holdout_rows else None
    return OwnProfile(Path(path), device, train, holdout, train_rows, holdout_rows, retest_rows)


# -- fitting and scoring -----------------------------------------------------------------------------


def configs(regressors: list[str], feature_sets: list[str]) -> list[tuple[str, str]]:
    """(regressor, feature set) pairs: every regressor on every feature set, then the default."""
    pairs = [(name, features) for features in feature_sets for name in regressors]
    return [pair for pair in pairs if pair != DEFAULT] + [DEFAULT]


def config_label(config: tuple[str, str]) -> str:
    return f"{config[0]}/{config[1]}"


def fit_predict(config: tuple[str, str], X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std on ``X_test`` (original units) of a surrogate fit on targets / training maximum."""
    from protran.surrogates import make_surrogate

    name, features = config
    scale = float(np.max(y_train))
    model = make_surrogate(name, seed=seed, features=features, **REGRESSORS.get(name, {}))
    model.fit(X_train, y_train / scale)
    mean, std = model.predict(X_test, return_std=True)
    return mean * scale, std * scale


def fit_default_model(X_train: np.ndarray, y_train: np.ndarray, seed: int):
    """The default surrogate fit as :func:`fit_predict` fits it (targets / training maximum)."""
    from protran.surrogates import make_surrogate

    model = make_surrogate(DEFAULT[0], seed=seed, features=DEFAULT[1], **REGRESSORS.get(DEFAULT[0], {}))
    return model.fit(X_train, y_train / float(np.max(y_train)))


def kendall_tau(predicted: np.ndarray, measured: np.ndarray) -> float:
    """Kendall's tau-b; 0 when the predictions are all equal (they rank nothing)."""
    from scipy.stats import kendalltau

    if not np.all(np.isfinite(predicted)):
        return math.nan
    if np.ptp(predicted) == 0:
        return 0.0
    return float(kendalltau(predicted, measured).statistic)


def score(predicted: np.ndarray, std: np.ndarray, measured: np.ndarray, scale: float) -> dict[str, float]:
    """Held-out metrics of one fit; ``scale`` normalises the MSE (the board maximum of the measure)."""
    error = predicted - measured
    finite = bool(np.all(np.isfinite(predicted)))
    return {
        "mse": float(np.mean((error / scale) ** 2)) if finite else math.inf,
        "kendall_tau": kendall_tau(predicted, measured),
        "within_10pct": float(np.mean(np.abs(error) <= WITHIN * np.abs(measured))),
        "coverage_68": float(np.mean(np.abs(error) <= std)),
        "coverage_95": float(np.mean(np.abs(error) <= Z_95 * std)),
    }


def evaluate(config, board: Board, measure: str, train: np.ndarray, test: np.ndarray, seed: int,
             scale: float) -> tuple[dict, np.ndarray, np.ndarray]:
    """Fit on ``train`` rows, score on ``test`` rows; the metrics, predictions and stds."""
    j = MEASURE_NAMES.index(measure)
    X = board.X(config[1])
    y = board.targets[:, j]
    started = time.process_time()
    try:
        mean, std = fit_predict(config, X[train], y[train], X[test], seed)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as error:
        print(f"  {config_label(config)} on {board.name} {measure} n={len(train)}: failed ({error})", flush=True)
        mean = std = np.full(len(test), np.nan)
    seconds = time.process_time() - started
    metrics = score(mean, std, y[test], scale)
    return {**metrics, "fit_cpu_s": seconds}, mean, std


# -- part 1: public boards ------------------------------------------------------------------------------


def split_rows(n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed random held-out rows and the shuffled rest (training sets are its prefixes)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = int(round(TEST_FRACTION * n_rows))
    return np.sort(order[:n_test]), order[n_test:]


def run_public(boards: list[Board], pairs: list, seeds: list[int], measures: list[str]) -> list[dict]:
    records = []
    for board in boards:
        started = time.perf_counter()
        for seed in seeds:
            test, pool = split_rows(len(board.specs), seed)
            for n in [size for size in TRAIN_SIZES if size <= len(pool)]:
                train = pool[:n]
                for measure in [m for m in measures if m in board.measures()]:
                    scale = float(np.max(board.targets[:, MEASURE_NAMES.index(measure)]))
                    for config in pairs:
                        metrics, _, _ = evaluate(config, board, measure, train, test, seed, scale)
                        records.append({"board": board.name, "measure": measure, "regressor": config[0],
                                        "features": config[1], "seed": seed, "n_train": n,
                                        "n_test": len(test), **metrics})
        print(f"{board.name}: {time.perf_counter() - started:.1f} s", flush=True)
    return records


def median_curves(records: list[dict]) -> list[dict]:
    """Median over seeds of every metric, per board, measure, configuration and training size."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        key = (record["board"], record["measure"], record["regressor"], record["features"], record["n_train"])
        groups.setdefault(key, []).append(record)
    curves = []
    for (board, measure, regressor, features, n), chosen in groups.items():
        row = {"board": board, "measure": measure, "regressor": regressor, "features": features,
               "n_train": n, "seeds": len(chosen)}
        for metric in (*METRICS, "fit_cpu_s"):
            values = np.array([r[metric] for r in chosen], dtype=float)
            values = values[~np.isnan(values)]
            row[metric] = float(np.median(values)) if values.size else math.nan
        curves.append(row)
    return curves


def lookup(curves: list[dict], board: str, measure: str, config, n: int) -> tuple[float | None, int | None]:
    """A median-curve row at the largest training size <= n: (row, its n)."""
    rows = [row for row in curves if row["board"] == board and row["measure"] == measure
            and (row["regressor"], row["features"]) == tuple(config) and row["n_train"] <= n]
    if not rows:
        return None, None
    best = max(rows, key=lambda row: row["n_train"])
    return best, best["n_train"]


def geometric_mean(values: list[float]) -> float:
    values = [max(v, 1e-12) for v in values]
    return float(math.exp(np.mean(np.log(values))))


def overall_table(curves: list[dict], pairs: list, boards: list[str], measure: str) -> list[dict]:
    """Per configuration, across boards: geometric-mean MSE, mean tau and within-10 % at each checkpoint,
    and the mean rank of its MSE among the configurations (1 = best)."""
    table = []
    for config in pairs:
        row = {"config": config_label(config)}
        for n in CHECKPOINTS:
            found = [lookup(curves, board, measure, config, n)[0] for board in boards]
            found = [f for f in found if f is not None]
            if len(found) != len(boards):
                continue
            row[f"mse@{n}"] = geometric_mean([f["mse"] for f in found])
            row[f"tau@{n}"] = float(np.mean([f["kendall_tau"] for f in found]))
            row[f"within@{n}"] = float(np.mean([f["within_10pct"] for f in found]))
        table.append(row)
    for n in CHECKPOINTS:
        ranks = []
        for board in boards:
            mses = [lookup(curves, board, measure, config, n)[0] for config in pairs]
            values = np.array([m["mse"] if m else math.inf for m in mses])
            ranks.append(np.argsort(np.argsort(values)) + 1)
        mean_rank = np.mean(ranks, axis=0)
        for row, rank in zip(table, mean_rank):
            row[f"rank@{n}"] = float(rank)
    return table


def calibration_table(curves: list[dict], pairs: list, boards: list[str], measure: str, n: int) -> list[dict]:
    table = []
    for config in pairs:
        row = {"config": config_label(config)}
        for board in boards:
            found, used = lookup(curves, board, measure, config, n)
            if found:
                row[board] = (found["coverage_68"], found["coverage_95"], used)
        table.append(row)
    return table


def pooled_coverage(records: list[dict], config, measure: str) -> tuple[float, float]:
    """Coverage over every fit of a configuration (all boards, seeds and sizes): mean shares."""
    chosen = [r for r in records if (r["regressor"], r["features"]) == tuple(config) and r["measure"] == measure]
    if not chosen:
        return math.nan, math.nan
    return float(np.mean([r["coverage_68"] for r in chosen])), float(np.mean([r["coverage_95"] for r in chosen]))


# -- part 2: own profiles ---------------------------------------------------------------------------------


def run_own(profile: OwnProfile, pairs: list, seed: int) -> list[dict]:
    """Learning curve on the profiler's own measuring order, scored on the holdout run (latency)."""
    if profile.holdout is None:
        return []
    merged = merge_boards(profile.train, profile.holdout)
    n_train = len(profile.train.specs)
    test = np.arange(n_train, n_train + len(profile.holdout.specs))
    scale = float(np.max(merged.targets[:, 0]))
    records = []
    sizes = [n for n in OWN_SIZES if n <= n_train] or [n_train]
    for n in sizes:
        for config in pairs:
            metrics, _, _ = evaluate(config, merged, "latency", np.arange(n), test, seed, scale)
            records.append({"device": profile.device, "regressor": config[0], "features": config[1],
                            "seed": seed, "n_train": n, "n_test": len(test), **metrics})
    return records


def merge_boards(first: Board, second: Board) -> Board:
    return Board(first.name, first.specs + second.specs, np.vstack([first.targets, second.targets]),
                 first.batch_size, first.seq_len)


def retest_spread(profile: OwnProfile) -> dict | None:
    """|l2 - l1| / l1 over the architectures measured in the profile run and again in the retest run."""
    first = {row.arch_hash: row.latency_s for row in profile.train_rows}
    pairs = [(first[row.arch_hash], row.latency_s) for row in profile.retest_rows if row.arch_hash in first]
    if not pairs:
        return None
    spread = np.array([abs(l2 - l1) / l1 for l1, l2 in pairs])
    ratio = np.array([l2 / l1 for l1, l2 in pairs])
    return {"n": len(pairs), "median": float(np.median(spread)), "max": float(np.max(spread)),
            "median_ratio_l2_over_l1": float(np.median(ratio))}


def worst_errors(profile: OwnProfile, seed: int, n: int, top: int = 8) -> list[dict]:
    """Held-out rows of the default surrogate fit on the first ``n`` profile rows, largest error first."""
    merged = merge_boards(profile.train, profile.holdout)
    n_train = len(profile.train.specs)
    test = np.arange(n_train, len(merged.specs))
    X = merged.X(DEFAULT[1])
    y = merged.targets[:, 0]
    mean, std = fit_predict(DEFAULT, X[:n], y[:n], X[test], seed)
    rows = []
    for k, index in enumerate(test):
        measurement = profile.holdout_rows[index - n_train]
        spec = measurement.spec
        rows.append({
            "device": profile.device, "arch_hash": measurement.arch_hash,
            "layers": spec.num_layers, "hidden_sizes": "-".join(map(str, spec.hidden_sizes)),
            "heads": "-".join(map(str, spec.head_counts)),
            "status": measurement.status, "latency_ci_rel": measurement.latency_ci_rel,
            "measured_s": float(y[index]), "predicted_s": float(mean[k]), "std_s": float(std[k]),
            "relative_error": float((mean[k] - y[index]) / y[index]),
        })
    rows.sort(key=lambda row: -abs(row["relative_error"]))
    for rank, row in enumerate(rows):
        row["rank"] = rank + 1
    return rows if top is None else rows[:top]


def unstable_diagnostics(profile: OwnProfile, seed: int, n: int) -> dict:
    """Share within +-10 % of the default surrogate (first ``n`` profile rows) on the holdout rows by
    their status, and again when the unstable rows among the first ``n`` are left out of training."""
    X_train, y_train = profile.train.X(DEFAULT[1])[:n], profile.train.targets[:n, 0]
    X_test, y_test = profile.holdout.X(DEFAULT[1]), profile.holdout.targets[:, 0]
    stable_train = np.array([row.status == "ok" for row in profile.train_rows[:n]])
    stable_test = np.array([row.status == "ok" for row in profile.holdout_rows])

    def within(predicted: np.ndarray, rows: np.ndarray) -> float | None:
        if not rows.any():
            return None
        return float(np.mean(np.abs(predicted[rows] - y_test[rows]) <= WITHIN * y_test[rows]))

    predicted, _ = fit_predict(DEFAULT, X_train, y_train, X_test, seed)
    result = {"n_train": n, "holdout_ok_rows": int(stable_test.sum()),
              "holdout_unstable_rows": int((~stable_test).sum()),
              "within_10pct_holdout_ok": within(predicted, stable_test),
              "within_10pct_holdout_unstable": within(predicted, ~stable_test),
              "train_unstable_rows": int((~stable_train).sum())}
    error = predicted / y_test - 1.0
    result["holdout_median_signed_error"] = float(np.median(error))
    result["holdout_share_over_predicted"] = float(np.mean(error > 0))
    seeds = min(16, n)
    result["median_latency_s"] = {"seed_rows": float(np.median(y_train[:seeds])),
                                  "chosen_rows": float(np.median(y_train[seeds:])) if n > seeds else None,
                                  "holdout_rows": float(np.median(y_test))}
    model = fit_default_model(X_train, y_train, seed)
    out_of_bag = model.out_of_sample_predictions() * float(np.max(y_train))
    usable = np.isfinite(out_of_bag)
    result["within_10pct_out_of_bag_profile_rows"] = float(
        np.mean(np.abs(out_of_bag[usable] - y_train[usable]) <= WITHIN * y_train[usable]))
    if stable_train.sum() >= 2 and (~stable_train).any():
        stable_only, _ = fit_predict(DEFAULT, X_train[stable_train], y_train[stable_train], X_test, seed)
        result["within_10pct_trained_on_ok_rows_only"] = within(stable_only, np.ones(len(y_test), dtype=bool))
    return result


def profile_facts(profile: OwnProfile) -> dict:
    def statuses(rows):
        return {s: sum(r.status == s for r in rows) for s in ("ok", "unstable")}

    ci = [r.latency_ci_rel for r in profile.train_rows + profile.holdout_rows if r.latency_ci_rel is not None]
    path = Path(profile.path).resolve()
    shown = os.path.relpath(path, REPO) if path.is_relative_to(REPO) else path.name
    return {"path": shown, "device": profile.device, "profile_rows": len(profile.train_rows),
            "holdout_rows": len(profile.holdout_rows), "retest_rows": len(profile.retest_rows),
            "profile_statuses": statuses(profile.train_rows), "holdout_statuses": statuses(profile.holdout_rows),
            "latency_ci_rel_median": float(np.median(ci)) if ci else None,
            "latency_ci_rel_max": float(np.max(ci)) if ci else None}


# -- part 3: predicted against measured ---------------------------------------------------------------------


def scatter_sets(boards: list[Board], profiles: list[OwnProfile], seed: int) -> list[dict]:
    """Held-out predictions of the default surrogate: per public board its training split of ``seed``,
    per own profile every profile row (scored on the holdout run)."""
    sets = []
    for board in boards:
        test, pool = split_rows(len(board.specs), seed)
        for measure in board.measures():
            j = MEASURE_NAMES.index(measure)
            X, y = board.X(DEFAULT[1]), board.targets[:, j]
            mean, std = fit_predict(DEFAULT, X[pool], y[pool], X[test], seed)
            sets.append({"board": board.name, "measure": measure, "n_train": len(pool),
                         "measured": y[test].tolist(), "predicted": mean.tolist(), "std": std.tolist()})
    for profile in profiles:
        if profile.holdout is None:
            continue
        X_train, X_test = profile.train.X(DEFAULT[1]), profile.holdout.X(DEFAULT[1])
        y_train, y_test = profile.train.targets[:, 0], profile.holdout.targets[:, 0]
        mean, std = fit_predict(DEFAULT, X_train, y_train, X_test, seed)
        sets.append({"board": profile.device, "measure": "latency", "n_train": len(y_train),
                     "measured": y_test.tolist(), "predicted": mean.tolist(), "std": std.tolist()})
    return sets


# -- plots ------------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLOURS = {"lr": "tab:blue", "gpr": "tab:orange", "svr": "tab:green", "dt": "tab:red", "adaboost": "tab:purple",
           "gbdt": "tab:brown", "mlp": "tab:pink", "additive": "black"}
STYLES = {"embedding": ":", "both": "-", "analytic": "-.", "costs": "--"}


def _line_style(config) -> dict:
    name, features = config
    style = {"color": COLOURS.get(name, "gray"), "linestyle": STYLES.get(features, "-"), "linewidth": 1.3}
    if tuple(config) == DEFAULT:
        style.update(linestyle="-", linewidth=2.6)
    return style


PANELS = (("mse", "held-out MSE (max-normalised)"), ("kendall_tau", "Kendall tau"),
          ("within_10pct", "share within ±10 %"))


def _plot_configs(ax, records: list[dict], pairs: list, metric: str) -> None:
    """One line per (regressor, features) pair: ``metric`` against the training size."""
    for config in pairs:
        points = sorted((r["n_train"], r[metric]) for r in records
                        if (r["regressor"], r["features"]) == tuple(config))
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=".", label=config_label(config), **_line_style(config))


def plot_learning_curves(curves: list[dict], pairs: list, boards: list[str], measure: str, path: Path) -> None:
    plt = _pyplot()
    panels = PANELS
    fig, axes = plt.subplots(len(panels), len(boards), figsize=(4.3 * len(boards), 9.5), sharex="col", squeeze=False)
    for col, board in enumerate(boards):
        on_board = [r for r in curves if r["board"] == board and r["measure"] == measure]
        for row, (metric, label) in enumerate(panels):
            ax = axes[row, col]
            _plot_configs(ax, on_board, pairs, metric)
            if metric == "mse":
                ax.set_yscale("log")
                ax.set_title(board)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(label)
            if row == len(panels) - 1:
                ax.set_xlabel("training rows")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=8, fontsize=8)
    fig.suptitle(f"{measure}: median over seeds of held-out scores (dotted: embedding, solid: both, "
                 "thick black: default additive/costs)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(records: list[dict], pairs: list, measure: str, path: Path) -> None:
    plt = _pyplot()
    labels = [config_label(c) for c in pairs]
    coverage = np.array([pooled_coverage(records, c, measure) for c in pairs])
    x = np.arange(len(pairs))
    fig, ax = plt.subplots(figsize=(max(8, 0.65 * len(pairs)), 4.2))
    ax.bar(x - 0.2, coverage[:, 0], width=0.4, label="inside mean ± 1 std")
    ax.bar(x + 0.2, coverage[:, 1], width=0.4, label="inside mean ± 1.96 std")
    ax.axhline(0.68, color="tab:blue", linestyle="--", linewidth=1)
    ax.axhline(0.95, color="tab:orange", linestyle="--", linewidth=1)
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of held-out rows")
    ax.set_title(f"{measure}: calibration of the predicted std (all public boards, seeds and sizes)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_own(own_records: list[dict], pairs: list, path: Path) -> None:
    plt = _pyplot()
    devices = sorted({r["device"] for r in own_records})
    panels = PANELS
    fig, axes = plt.subplots(len(panels), len(devices), figsize=(max(9.0, 5.5 * len(devices)), 10), squeeze=False)
    for col, device in enumerate(devices):
        on_device = [r for r in own_records if r["device"] == device]
        for row, (metric, label) in enumerate(panels):
            ax = axes[row, col]
            _plot_configs(ax, on_device, pairs, metric)
            if metric == "mse":
                ax.set_yscale("log")
                ax.set_title(device)
            if metric == "within_10pct":
                ax.axhline(0.95, color="gray", linestyle="--", linewidth=1)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel(label)
            if row == len(panels) - 1:
                ax.set_xlabel("first n rows of the profile run")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5 if len(devices) == 1 else 8, fontsize=8)
    fig.suptitle("Own profiles (latency): first n rows in measuring order, scored on the holdout run")
    fig.tight_layout(rect=(0, 0.09, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_predicted_vs_measured(sets: list[dict], path: Path) -> None:
    plt = _pyplot()
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    boards = list(dict.fromkeys(s["board"] for s in sets))
    measures = [m for m in MEASURE_NAMES if any(s["measure"] == m for s in sets)]
    fig, axes = plt.subplots(len(measures), len(boards), figsize=(3.4 * len(boards), 3.4 * len(measures)),
                             squeeze=False)
    for col, board in enumerate(boards):
        for row, measure in enumerate(measures):
            ax = axes[row, col]
            found = [s for s in sets if s["board"] == board and s["measure"] == measure]
            if not found:
                ax.axis("off")
                continue
            chosen = found[0]
            measured, predicted = np.array(chosen["measured"]), np.array(chosen["predicted"])
            low, high = float(min(measured.min(), predicted.min())), float(max(measured.max(), predicted.max()))
            line = np.array([low * 0.9, high * 1.1])
            ax.plot(line, line, color="black", linewidth=1)
            ax.fill_between(line, line * (1 - WITHIN), line * (1 + WITHIN), color="gray", alpha=0.2)
            ax.errorbar(measured, predicted, yerr=np.array(chosen["std"]), fmt="o", markersize=3,
                        elinewidth=0.6, alpha=0.8)
            if high / max(low, 1e-12) > 3:
                ax.set_xscale("log")
                ax.set_yscale("log")
                for axis in (ax.xaxis, ax.yaxis):
                    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                    axis.set_major_formatter(FormatStrFormatter("%g"))
                    axis.set_minor_formatter(NullFormatter())
            ax.set_xlim(line)
            ax.set_ylim(line)
            ax.tick_params(labelsize=7)
            within = float(np.mean(np.abs(predicted - measured) <= WITHIN * measured))
            ax.set_title(f"{board} {measure}\n{within:.0%} within ±10 %, {chosen['n_train']} train rows", fontsize=9)
            ax.set_xlabel(f"measured ({measure_unit(measure)})", fontsize=8)
            ax.set_ylabel("predicted", fontsize=8)
    fig.suptitle("Default surrogate (additive on cost features): held-out rows, ± 1 std; band: ±10 %")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- output ------------------------------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _f(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _mse(value) -> str:
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return _f(value)
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def board_table(curves: list[dict], pairs: list, board: str, measure: str) -> list[str]:
    sizes = [lookup(curves, board, measure, pairs[0], n)[1] for n in CHECKPOINTS]
    head = ["config"] + [f"MSE @{n}" for n in sizes] + [f"tau @{n}" for n in sizes] + [f"±10 % @{n}" for n in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for config in pairs:
        found = [lookup(curves, board, measure, config, n)[0] for n in CHECKPOINTS]
        cells = [_mse(f["mse"] if f else None) for f in found]
        cells += [_f(f["kendall_tau"] if f else None, 2) for f in found]
        cells += [_f(f["within_10pct"] if f else None, 2) for f in found]
        label = f"**{config_label(config)}**" if tuple(config) == DEFAULT else config_label(config)
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def overall_lines(table: list[dict]) -> list[str]:
    head = ["config"] + [f"geo-mean MSE @{n}" for n in CHECKPOINTS] + [f"mean rank @{n}" for n in CHECKPOINTS] \
        + [f"mean tau @{n}" for n in CHECKPOINTS] + [f"mean ±10 % @{n}" for n in CHECKPOINTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        label = f"**{row['config']}**" if row["config"] == config_label(DEFAULT) else row["config"]
        cells = [_mse(row.get(f"mse@{n}")) for n in CHECKPOINTS] + [_f(row.get(f"rank@{n}"), 1) for n in CHECKPOINTS]
        cells += [_f(row.get(f"tau@{n}"), 2) for n in CHECKPOINTS]
        cells += [_f(row.get(f"within@{n}"), 2) for n in CHECKPOINTS]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def calibration_lines(table: list[dict], records: list[dict], pairs: list, boards: list[str],
                      measure: str) -> list[str]:
    head = ["config"] + [f"{b} 68 / 95" for b in boards] + ["all fits 68 / 95"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, config in zip(table, pairs):
        cells = []
        for board in boards:
            value = row.get(board)
            cells.append("–" if value is None else f"{value[0]:.2f} / {value[1]:.2f}")
        pooled = pooled_coverage(records, config, measure)
        cells.append(f"{pooled[0]:.2f} / {pooled[1]:.2f}")
        lines.append("| " + " | ".join([row["config"], *cells]) + " |")
    return lines


def own_lines(own_records: list[dict], pairs: list, device: str) -> list[str]:
    sizes = sorted({r["n_train"] for r in own_records if r["device"] == device})
    head = ["config"] + [f"±10 % @{n}" for n in sizes] + [f"MSE @{n}" for n in sizes] + [f"tau @{n}" for n in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for config in pairs:
        chosen = {r["n_train"]: r for r in own_records
                  if r["device"] == device and (r["regressor"], r["features"]) == tuple(config)}
        cells = [_f(chosen[n]["within_10pct"], 2) if n in chosen else "–" for n in sizes]
        cells += [_mse(chosen[n]["mse"]) if n in chosen else "–" for n in sizes]
        cells += [_f(chosen[n]["kendall_tau"], 2) if n in chosen else "–" for n in sizes]
        label = f"**{config_label(config)}**" if tuple(config) == DEFAULT else config_label(config)
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def own_headline(own_records: list[dict], device: str) -> dict:
    chosen = {r["n_train"]: r for r in own_records
              if r["device"] == device and (r["regressor"], r["features"]) == DEFAULT}
    return {f"within_10pct@{n}": chosen[n]["within_10pct"] for n in (32, 64) if n in chosen}


def timing_lines(curves: list[dict], pairs: list) -> list[str]:
    lines = ["| config | median CPU s per fit (all boards and sizes) |", "|---|---|"]
    for config in pairs:
        values = [r["fit_cpu_s"] for r in curves if (r["regressor"], r["features"]) == tuple(config)]
        lines.append(f"| {config_label(config)} | {_f(float(np.median(values)) if values else None, 3)} |")
    return lines


def markdown(report: dict) -> str:
    meta, pairs, boards = report["meta"], report["pairs"], report["boards"]
    curves, records = report["curves"], report["records"]
    lines = [
        "# Surrogate benchmark",
        "",
        f"Generated by `{meta['command']}` in {meta['seconds']:.0f} s wall time ({meta['cpu_seconds']:.0f} CPU s, "
        f"one process) with {meta['python']}.",
        "",
        f"Public boards ({', '.join(boards)}): seeds {meta['seeds']}, a fixed random {TEST_FRACTION:.0%} of "
        "each board held out per seed, nested training sets (the first n of the shuffled rest). Values are "
        "medians over seeds. MSE is of values divided by the board maximum; ±10 %: share of held-out "
        "predictions within 10 % of the measurement; tau: Kendall tau-b of predictions against measurements "
        "(0 where a model predicts one value for all). Every model is fit on targets divided by their training "
        "maximum with its own target transform (log for additive, identity otherwise). Ensembles smaller than "
        f"their defaults: {json.dumps({k: v for k, v in REGRESSORS.items() if v})}. Columns read '@n' at the "
        "largest training size <= the checkpoint a board allows (cpu_rpi: 61 training rows, so 48 for @64).",
        "",
    ]
    for measure in meta["measures"]:
        lines += [f"## Regressor comparison: {measure}", "",
                  f"Across the {len(boards)} public boards (geometric mean of the per-board median MSE; mean rank of "
                  "the MSE among the configurations, 1 = best; mean tau and share within ±10 %):", ""]
        lines += overall_lines(report["overall"][measure])
        lines.append("")
        if measure == meta["measures"][0]:
            for board in boards:
                lines += [f"### {board}", ""] + board_table(curves, pairs, board, measure) + [""]
        lines += [f"![learning curves](learning_curves_{measure}.png)", ""]
    measure = meta["measures"][0]
    lines += [f"## Calibration of the predicted std ({measure})", "",
              "Share of held-out rows inside mean ± 1 std (68 % for a calibrated Gaussian) and mean ± 1.96 std "
              "(95 %), median over seeds at 64 training rows (cpu_rpi: 48); last column: mean over every "
              "fit of the public boards (all sizes and seeds).", ""]
    lines += calibration_lines(report["calibration"], records, pairs, boards, measure)
    lines += ["", "![calibration](calibration.png)", ""]
    lines += ["## Our own profiles", ""]
    if not report["own"]["profiles"]:
        lines += [report["own"]["message"], ""]
    for facts in report["own"]["profiles"]:
        device = facts["device"]
        lines += [f"### {device}", "",
                  f"`{facts['path']}`: {facts['profile_rows']} profile rows {facts['profile_statuses']}, "
                  f"{facts['holdout_rows']} holdout rows {facts['holdout_statuses']}, {facts['retest_rows']} "
                  f"retest rows; latency confidence interval (relative half-width) median "
                  f"{_f(facts['latency_ci_rel_median'])}, max {_f(facts['latency_ci_rel_max'])}.", ""]
        retest = facts.get("retest")
        if retest:
            lines += [f"Test-retest spread of latency over {retest['n']} repeated architectures: |l2 − l1| / l1 "
                      f"median {retest['median']:.3f}, max {retest['max']:.3f} (median l2 / l1 "
                      f"{retest['median_ratio_l2_over_l1']:.3f}).", ""]
        headline = facts.get("headline") or {}
        if headline:
            lines += ["Default surrogate, share of held-out predictions within ±10 %: " + ", ".join(
                f"after {key.split('@')[1]} measurements **{value:.2f}**" for key, value in headline.items())
                + " (goal: ≥ 0.95 after 64).", ""]
        if any(r["device"] == device for r in report["own"]["records"]):
            lines += own_lines(report["own"]["records"], pairs, device) + [""]
        else:
            lines += ["No holdout run yet: no learning curve.", ""]
        by_status = facts.get("by_status")
        if by_status:
            line = (f"By measurement status (default surrogate, first {by_status['n_train']} rows, of which "
                    f"{by_status['train_unstable_rows']} unstable): within ±10 % on the "
                    f"{by_status['holdout_ok_rows']} holdout rows measured 'ok' "
                    f"{_f(by_status['within_10pct_holdout_ok'], 2)}, on the {by_status['holdout_unstable_rows']} "
                    f"'unstable' ones {_f(by_status['within_10pct_holdout_unstable'], 2)}")
            if "within_10pct_trained_on_ok_rows_only" in by_status:
                line += (f"; trained on the 'ok' rows only: {_f(by_status['within_10pct_trained_on_ok_rows_only'], 2)} "
                         "on every holdout row")
            lines += [line + ".", ""]
            latency = by_status["median_latency_s"]
            lines += [f"Where the misses come from: median signed error on the holdout "
                      f"{by_status['holdout_median_signed_error']:+.1%} "
                      f"({by_status['holdout_share_over_predicted']:.0%} of the rows over-predicted); median latency "
                      f"of the 16 seed rows {latency['seed_rows']:.3f} s, of the rows the loop chose after them "
                      f"{_f(latency['chosen_rows'])} s, of the holdout rows {latency['holdout_rows']:.3f} s; "
                      f"out-of-bag share within ±10 % on the {by_status['n_train']} training rows themselves "
                      f"{by_status['within_10pct_out_of_bag_profile_rows']:.2f}.", ""]
        worst = [w for w in report["own"]["worst"] if w["device"] == device]
        if worst:
            lines += [f"Largest held-out errors of the default surrogate fit on the first {worst[0]['n_train']} rows:",
                      "", "| layers | hidden sizes | heads | status | CI | measured s | predicted s | error |",
                      "|---|---|---|---|---|---|---|---|"]
            for w in worst:
                lines.append(f"| {w['layers']} | {w['hidden_sizes']} | {w['heads']} | {w['status']} | "
                             f"{_f(w['latency_ci_rel'])} | {w['measured_s']:.4f} | {w['predicted_s']:.4f} | "
                             f"{w['relative_error']:+.1%} |")
            lines.append("")
    if report["own"]["records"]:
        lines += ["![own profiles](own_profiles.png)", ""]
    lines += ["## Predicted against measured", "",
              "The default surrogate fit on the training split (public boards: the 75 % of seed "
              f"{meta['seeds'][0]}; own profiles: every profile row) against the held-out measurements:", "",
              "![predicted vs measured](predicted_vs_measured.png)", "",
              "| board | measure | training rows | held-out rows | within ±10 % | Kendall tau |",
              "|---|---|---|---|---|---|"]
    for s in report["scatter"]:
        measured, predicted = np.array(s["measured"]), np.array(s["predicted"])
        within = float(np.mean(np.abs(predicted - measured) <= WITHIN * measured))
        lines.append(f"| {s['board']} | {s['measure']} | {s['n_train']} | {len(measured)} | {within:.2f} | "
                     f"{kendall_tau(predicted, measured):.2f} |")
    lines += ["", "## Cost of fitting", ""] + timing_lines(curves, pairs) + [""]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--n-seeds", type=int, default=N_SEEDS, help=f"seeds per board (default {N_SEEDS})")
    parser.add_argument("--boards", nargs="+", default=list(BOARDS), choices=list(BOARDS))
    parser.add_argument("--measures", nargs="+", default=["latency", "energy"], choices=list(MEASURE_NAMES),
                        help="measures of the public regressor comparison (default latency energy)")
    parser.add_argument("--regressors", nargs="+", default=list(REGRESSORS), choices=list(REGRESSORS))
    parser.add_argument("--feature-sets", nargs="+", default=list(FEATURE_SETS),
                        choices=["embedding", "analytic", "both", "costs"])
    parser.add_argument("--profiles", nargs="*", type=Path, default=None,
                        help="own run stores (default: the f32 stores in datasets/profiles)")
    parser.add_argument("--data", type=Path, default=default_data_dir(), help="folder of the public ProTran files")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "surrogates")
    args = parser.parse_args(argv)
    missing = [BOARDS[b] for b in args.boards if not (args.data / BOARDS[b]).is_file()]
    if missing:
        parser.error(f"public data not found in {args.data}: missing {missing} (set --data or EDGETRAN_DATA)")
    warnings.filterwarnings("ignore")
    started, cpu_started = time.perf_counter(), time.process_time()
    seeds = list(range(args.seed, args.seed + args.n_seeds))
    pairs = configs(args.regressors, args.feature_sets)
    boards = [load_public_board(name, args.data) for name in args.boards]

    records = run_public(boards, pairs, seeds, args.measures)
    curves = median_curves(records)

    profile_paths = default_profiles() if args.profiles is None else list(args.profiles)
    profiles = [p for p in (load_own_profile(path) for path in profile_paths) if p is not None]
    own_records, own_facts, worst = [], [], []
    for profile in profiles:
        part = run_own(profile, pairs, args.seed)
        own_records += part
        facts = profile_facts(profile)
        facts["retest"] = retest_spread(profile)
        facts["headline"] = own_headline(part, profile.device)
        if profile.holdout is not None:
            sizes = sorted({r["n_train"] for r in part})
            n = max([size for size in sizes if size <= 64] or sizes)
            worst += [{**row, "n_train": n} for row in worst_errors(profile, args.seed, n, top=None)]
            facts["by_status"] = unstable_diagnostics(profile, args.seed, n)
        own_facts.append(facts)
        print(f"{profile.device}: {facts['profile_rows']} profile rows, {facts['holdout_rows']} holdout rows",
              flush=True)
    message = ("No own profile found (looked for "
               + (", ".join(map(str, profile_paths)) if profile_paths else "datasets/profiles/*.sqlite")
               + "): this part is skipped.")
    if not profiles:
        print(message, flush=True)

    scatter = scatter_sets(boards, profiles, args.seed)
    board_names = [b.name for b in boards]
    report = {
        "meta": {"command": "python benchmarks/surrogates.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "seeds": seeds, "measures": args.measures, "regressor_params": REGRESSORS,
                 "test_fraction": TEST_FRACTION, "train_sizes": TRAIN_SIZES, "own_sizes": OWN_SIZES,
                 "python": f"Python {platform.python_version()}",
                 "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started},
        "pairs": pairs, "boards": board_names, "records": records, "curves": curves,
        "overall": {m: overall_table(curves, pairs, board_names, m) for m in args.measures},
        "calibration": calibration_table(curves, pairs, board_names, args.measures[0], 64),
        "own": {"profiles": own_facts, "records": own_records, "message": message,
                "worst": [w for w in worst if w["rank"] <= 8]},
        "scatter": scatter,
    }
    write_outputs(report, args.out, worst)
    print(f"done in {report['meta']['seconds']:.0f} s; wrote {args.out}", flush=True)
    return 0


def write_outputs(report: dict, out: Path, worst: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pairs, boards = report["pairs"], report["boards"]
    write_csv(out / "records.csv", report["records"])
    write_csv(out / "curves_median.csv", report["curves"])
    write_csv(out / "own_profiles.csv", report["own"]["records"])
    write_csv(out / "own_errors.csv", worst)
    for stale in ("own_profiles.png",):
        if not report["own"]["records"] and (out / stale).exists():
            (out / stale).unlink()
    payload = {key: report[key] for key in ("meta", "boards", "overall", "scatter")}
    payload["configs"] = [config_label(c) for c in pairs]
    payload["default"] = config_label(DEFAULT)
    payload["calibration_at_64"] = [
        {"config": row["config"], **{b: {"coverage_68": v[0], "coverage_95": v[1], "n_train": v[2]}
                                     for b, v in row.items() if b != "config"}}
        for row in report["calibration"]]
    payload["own_profiles"] = {"profiles": report["own"]["profiles"], "worst_errors": report["own"]["worst"],
                               "message": None if report["own"]["profiles"] else report["own"]["message"]}
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    for measure in report["meta"]["measures"]:
        plot_learning_curves(report["curves"], pairs, boards, measure, out / f"learning_curves_{measure}.png")
    plot_calibration(report["records"], pairs, report["meta"]["measures"][0], out / "calibration.png")
    if report["own"]["records"]:
        plot_own(report["own"]["records"], pairs, out / "own_profiles.png")
    plot_predicted_vs_measured(report["scatter"], out / "predicted_vs_measured.png")
    (out / "README.md").write_text(markdown(report))


if __name__ == "__main__":
    raise SystemExit(main())
