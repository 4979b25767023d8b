"""Replay: run the active-learning loop on recorded measurements instead of a board.

The rows of a data set are the candidate pool and "measuring" a row reveals its recorded values.
After every fit the surrogates are scored on the rows the loop has not measured (or, with
``test_fraction > 0``, on a fixed held-out split the loop never queries), which shows how many
measurements a strategy needs before its predictions are good enough.

Conventions (the numbers of the returned ``curve`` and ``samples_to_target``):

- Errors are on *max-normalised* values: every measure is divided by its maximum over the whole
  data set, predictions included. ``holdout_mse`` is the mean squared error of those values,
  ``within_10pct`` the share of evaluated rows whose prediction lies within +-10% of the measured
  value, ``val_mse`` the learner's own validation estimate (see ``protran._active``).
- ``samples_to_target[m]`` is the first number of measured rows at which ``holdout_mse[m] <=
  target_mse``; ``"all"`` needs the three measures at once. None: not reached.
- Seed rows: with ``seed_samples=16`` the first 16 rows of the data set (every public ProTran file
  starts with the same 16 Latin-hypercube architectures); otherwise a seeded random choice, or with
  ``seed_choice="lhs"`` and fewer than 16 seeds the first ``seed_samples`` of those 16 rows.
- Held-out split (``test_fraction``): drawn with ``seed`` from the rows after the first 16, so it
  does not depend on ``seed_samples`` and strategies compared with the same seed share it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protran._active import ActiveLearner, TransferPrior, run_active_learning
from protran._store import load_rows
from protran.vocabulary import DEFAULT_FEATURES, DEFAULT_SURROGATE, MEASURE_NAMES, field_of

DEFAULT_ACQUISITION = "uncertainty"

REFERENCE_SEED_ROWS = 16


def measure_matrix(rows: Sequence[Any]) -> np.ndarray:
    """Measured values, one column per measure (NaN where a row lacks one), shape (rows, measures)."""
    values = [[getattr(row, field_of(m)) for m in MEASURE_NAMES] for row in rows]
    return np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float)


# -- replay ------------------------------------------------------------------------------------------


def _prior_groups(prior_rows) -> list[Sequence[Any]]:
    """One list of rows per prior device: a mapping name -> rows, a list of lists, or one flat list."""
    if prior_rows is None:
        return []
    if isinstance(prior_rows, Mapping):
        return [list(rows) for rows in prior_rows.values()]
    prior_rows = list(prior_rows)
    if prior_rows and hasattr(prior_rows[0], "spec"):
        return [prior_rows]
    return [list(rows) for rows in prior_rows]


SEED_CHOICES = ("random", "lhs")


def held_out_split(n_rows: int, seed_samples: int, test_fraction: float, seed: int,
                   seed_choice: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """(seed rows, held-out rows) of a replay, as indices into the data set (module docstring)."""
    if seed_choice not in SEED_CHOICES:
        raise ValueError(f"unknown seed_choice {seed_choice!r}; choose one of {SEED_CHOICES}")
    rng = np.random.default_rng(seed)
    later = np.arange(min(REFERENCE_SEED_ROWS, n_rows), n_rows)
    n_test = int(round(test_fraction * len(later)))
    test = np.sort(rng.choice(later, size=n_test, replace=False)) if n_test else np.empty(0, dtype=int)
    if seed_samples == REFERENCE_SEED_ROWS or (seed_choice == "lhs" and seed_samples < REFERENCE_SEED_ROWS):
        # The held-out rows come after the first 16, so these never collide with them.
        seeds = np.arange(min(seed_samples, REFERENCE_SEED_ROWS, n_rows))
    else:
        candidates = np.setdiff1d(np.arange(n_rows), test)
        seeds = rng.choice(candidates, size=min(seed_samples, len(candidates)), replace=False)
    return seeds, test


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _evaluate(learner: ActiveLearner, X: np.ndarray, Y: np.ndarray, maxima: np.ndarray) -> tuple[dict, dict]:
    """Held-out MSE (max-normalised) and share within 10% per measure; None where nothing to score."""
    mse: dict = {measure: None for measure in MEASURE_NAMES}
    within: dict = {measure: None for measure in MEASURE_NAMES}
    if len(X):
        predicted, _ = learner.predict(X)
    for j, measure in enumerate(learner.measures):
        rows = np.isfinite(Y[:, j]) if len(X) else np.zeros(0, dtype=bool)
        if not rows.any():
            continue
        truth, guess = Y[rows, j], predicted[rows, j]
        mse[measure] = float(np.mean(((guess - truth) / maxima[j]) ** 2))
        within[measure] = float(np.mean(np.abs(guess - truth) <= 0.1 * np.abs(truth)))
    return mse, within


def replay(
    dataset_rows: Sequence[Any],
    prior_rows=None,
    seed_samples: int = 16,
    target_mse: float = 0.005,
    seed: int = 0,
    surrogate: str = DEFAULT_SURROGATE,
    features: str = DEFAULT_FEATURES,
    acquisition: str = DEFAULT_ACQUISITION,
    max_samples: int | None = None,
    *,
    surrogate_params: Mapping[str, Any] | None = None,
    test_fraction: float = 0.0,
    validation: str = "auto",
    scale: str = "max",
    batch_size: int = 1,
    seq_len: int = 128,
    eval_every: int = 1,
    transfer: str = "columns",
    transfer_params: Mapping[str, Any] | None = None,
    seed_choice: str = "random",
) -> dict[str, Any]:
    """Replay active learning over ``dataset_rows`` (rows with ``spec``, ``latency_s``, ``energy_j``,
    ``peak_power_w``); return ``{"samples_to_target", "curve", ...}`` as described in the module doc.

    ``prior_rows``: other devices' rows (a mapping name -> rows, a list of row lists, or one list)
    used as a :class:`~protran._active.TransferPrior`. ``max_samples`` caps the measured rows
    (default: the whole pool). ``batch_size``/``seq_len`` describe the recorded workload for the
    analytic features. ``eval_every``: curve entries every that many samples after the seeds (and
    at the end) only; with random querying the surrogates are then fit only there, which makes long
    replays cheap. ``validation="none"`` skips the learner's own validation (``val_mse`` None).
    ``transfer``: how the prior is used, ``"columns"`` (extra input columns) or ``"residual"``
    (:class:`~protran._transfer.PriorResidual` models, ``transfer_params`` their options); ignored
    without ``prior_rows``. ``seed_choice``: ``"random"`` or ``"lhs"`` (module docstring).
    """
    from protran.surrogates import featurize, make_surrogate

    rows = list(dataset_rows)
    if len(rows) < 3:
        raise ValueError(f"replay needs at least 3 rows, got {len(rows)}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
    if int(eval_every) < 1:
        raise ValueError(f"eval_every must be a positive integer, got {eval_every}")
    if seed_samples < 2:
        raise ValueError(f"seed_samples must be at least 2 (a surrogate needs 2 rows), got {seed_samples}")
    params = dict(surrogate_params or {})

    def factory(measure: str):
        return make_surrogate(surrogate, seed=seed, **params)

    X = featurize([row.spec for row in rows], features=features, batch_size=batch_size, seq_len=seq_len)
    Y = measure_matrix(rows)
    # Measures a data set lacks (no power meter) are left out; their entries stay None.
    known = [j for j in range(len(MEASURE_NAMES)) if np.isfinite(Y[:, j]).sum() >= 2]
    if not known:
        raise ValueError("the data set has fewer than 2 values of every measure")
    measures = tuple(MEASURE_NAMES[j] for j in known)
    Y = Y[:, known]
    maxima = np.array([np.nanmax(Y[:, j]) for j in range(len(measures))])
    seeds, test = held_out_split(len(rows), seed_samples, test_fraction, seed, seed_choice=seed_choice)
    pool = [int(i) for i in np.setdiff1d(np.arange(len(rows)), test)]

    prior = None
    groups = _prior_groups(prior_rows)
    if groups:
        datasets = [
            (featurize([row.spec for row in group], features=features, batch_size=batch_size, seq_len=seq_len),
             measure_matrix(group)[:, known])
            for group in groups
        ]
        prior = TransferPrior(factory, measures).fit(datasets)
    learner = ActiveLearner(factory, measures=measures, acquisition=acquisition, validation=validation,
                            scale=scale, prior=prior, seed=seed, transfer=transfer,
                            transfer_params=transfer_params)

    curve = []
    measured_order: list[int] = []
    first = len(seeds)

    def on_grid(n: int) -> bool:
        return (n - first) % eval_every == 0

    steps = run_active_learning(
        learner,
        oracle=lambda index: Y[index],
        candidates=pool,
        featurize=lambda indices: X[list(indices)],
        seed_items=[int(i) for i in seeds],
        target_mse=target_mse,
        max_samples=max_samples,
        stop_on_convergence=False,
        fit_when=on_grid,
    )
    for step in steps:
        measured_order += step.new_items
        if not (on_grid(step.n_measured) or step.stop_reason):
            continue
        evaluate = test if len(test) else np.setdiff1d(pool, measured_order)
        holdout, within = _evaluate(step.learner, X[evaluate], Y[evaluate], maxima)
        curve.append({
            "n": step.n_measured,
            "holdout_mse": holdout,
            "val_mse": {m: _finite_or_none(step.val_mse.get(m)) for m in MEASURE_NAMES},
            "within_10pct": within,
        })

    return {
        "samples_to_target": samples_to_target(curve, target_mse),
        "curve": curve,
        "n_rows": len(rows),
        "n_test": int(len(test)),
        "measured": [rows[i].arch_hash for i in measured_order],
        "settings": {
            "seed_samples": int(len(seeds)), "target_mse": target_mse, "seed": seed, "surrogate": surrogate,
            "surrogate_params": params, "features": features, "acquisition": acquisition,
            "max_samples": max_samples, "test_fraction": test_fraction, "validation": validation,
            "scale": scale, "prior_devices": len(groups), "eval_every": eval_every,
        },
    }


def samples_to_target(curve: Sequence[Mapping[str, Any]], target_mse: float) -> dict[str, int | None]:
    """First ``n`` at which each measure's held-out MSE is ``<= target_mse``; ``"all"``: every measure
    the data set has (latency, energy and peak power, or fewer without a power meter) at once."""
    reached: dict[str, int | None] = {m: None for m in (*MEASURE_NAMES, "all")}
    for entry in curve:
        scored = [m for m in MEASURE_NAMES if entry["holdout_mse"][m] is not None]
        passed = [m for m in scored if entry["holdout_mse"][m] <= target_mse]
        for measure in passed:
            if reached[measure] is None:
                reached[measure] = entry["n"]
        if scored and len(passed) == len(scored) and reached["all"] is None:
            reached["all"] = entry["n"]
    return reached


def replay_files(
    dataset: str | Path,
    prior_paths: Sequence[str | Path] = (),
    *,
    surrogate: str | None = None,
    acquisition: str | None = None,
    features: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """:func:`replay` on files: a data set and any number of prior devices' data sets. With priors,
    ``seed_samples`` (None or absent) defaults to ``PRIOR_SEED_SAMPLES`` and the transfer to the
    stacked prior-residual model, as in ``protran profile --prior``.

    ``surrogate``/``acquisition``/``features`` default to the benchmarked best when None.
    """
    rows = load_rows(dataset)
    priors = {str(path): load_rows(path) for path in prior_paths or ()}
    if priors:
        # The transfer ``protran profile --prior`` uses: the prior-residual model with the board's
        # own cost model stacked, and PRIOR_SEED_SAMPLES seeds unless told otherwise.
        from protran._transfer import PRIOR_SEED_SAMPLES

        options.setdefault("transfer", "residual")
        options.setdefault("transfer_params", {"stack_own": True})
        if options.get("seed_samples") is None:
            options["seed_samples"] = PRIOR_SEED_SAMPLES
    elif options.get("seed_samples") is None:
        options.pop("seed_samples", None)
    return replay(
        rows,
        prior_rows=priors or None,
        surrogate=surrogate or DEFAULT_SURROGATE,
        acquisition=acquisition or DEFAULT_ACQUISITION,
        features=features or DEFAULT_FEATURES,
        **options,
    )
