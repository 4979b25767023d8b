"""``protran profile``: measure a board unattended until its surrogates are good enough.

The loop: measure 16 Latin-hypercube seed architectures (half with 2 or 4 heads per layer, half with
8 or 12, as the reference seeds), then repeatedly fit one surrogate per
measure, draw a fresh pool of candidate architectures, measure the one the acquisition prefers
(highest predicted uncertainty by default), and stop when the cross-validated MSE of every
max-normalised measure stays at or below the target for ``patience`` consecutive checks, or when
the sample or time budget runs out. Each measurement is committed to the run store before the next
starts, so an interrupted run resumes where it stopped (``resume=True``) without losing anything.

A run is written by one process at a time: it holds the run's lease in the store (see
``protran._store``), and resuming a run another live process holds raises ``RunLeasedError`` instead
of measuring its architectures a second time. ``take_over=True`` takes a lease from a process of
another host, which cannot be checked from here, once the user knows that process is gone.

Drift control: on a busy or thermally throttled machine latency drifts over a run of hours. A fixed
reference architecture of the design space (``reference_spec``: the median-size one of a seeded sample)
is measured at the start of every session (a new run or a resumed one) and after every
``reference_every`` measurements; its measurements go to the store's ``references`` table, never to the
measurement rows (no budget, no fit, no second row of an architecture). The baseline is the median of
the first three successful reference latencies of the runs that measure what this run measures (same
device, runtime, batch, sequence length and threads; usually the profile run's first three): a shared
baseline is what makes a held-out or retest run, hours later, comparable with the profile run, and a
median of three is what keeps one noisy reading from becoming everyone's baseline. A row is corrected
by ``baseline / latest`` (the run's latest successful reference before it) only when that reference is
more than ``drift_threshold`` away from the baseline; within it, a change of the reference cannot be
told from the reference's own noise, and correcting by it would add that noise to every row (on this
project's busy two-core machine it doubled the test-retest spread, 1.7 % to 3.6 %). The correction is
causal and piecewise constant because a row is committed before the next reference exists; ``protran
correct`` recomputes a finished run's factors from its stored references and raw latencies (after a
change of threshold, say). ``drift_correction="bracket"`` is for a reference read around every row
(``reference_every=1``) on a host whose speed wanders within minutes: once the reference after a row
exists, the row is corrected by the geometric mean of the readings just before and just after it (the
host's speed while it ran, read from both sides; a row with no reading after it keeps the latest rule),
to a baseline that is the median of *every* reading of the first comparable run (``bracket_baseline``)
rather than of its first three: the rule recomputes the whole run at each reading anyway, and the first
minutes of a session are not the machine's usual speed (this project's machine read the reference at
108.5 ms over its first three readings and at 95-101 ms for the hour after, so predictions made at the
first readings' speed missed a model served later by 18 %).
``drift_correction="in-process"`` reads the reference in the row's own measuring process, timed right
after the row (``protran._protocol``, "Drift correction in the process"): no reference is measured on
its own (``reference_every`` is not used) and each row's reading is stored as the run's reference
then (one per row). A row is corrected by ``baseline / its own reading``, to the bracket rule's
baseline (the median of every reading of the first comparable run), and the run is recomputed as that
baseline moves. A reading in the same seconds as the row, at every row: on this project's machine a
session whose host slowed by about 15 % between profile and retest repeated within 1.2 % / 2.5 %
(median / max) this way, where the same readings taken as readings between rows gave 1.2 % / 6.0 %
(``bracket``) and 3.3 % / 9.5 % (``latest``; ``benchmarks/drift_rules.py``).
With references 8 rows apart the two readings are minutes from the row and the latest rule does better
(measured on this project's machine: see the README). The raw latency is kept (``latency_raw_s``) and
the factor goes into the row's conditions (``drift_factor``); the interquartile range is scaled with
the latency, energy and power are left as measured (the meter's reading, not a timing that the
machine's speed scales). A failed reference measurement leaves the factor as it was; rows measured
before the run's first successful reference are not corrected. The run's drift, the largest
``|reference / baseline - 1|`` over its references, is reported (``ProfileSummary.reference_drift``)
and, above ``drift_threshold``, warned about once per session (``ReferenceDriftWarning``).

Wide rows: a row whose confidence interval stayed wider than ``target_rel_ci`` within its time cap
(``unstable``) is measured once more at the end of the run (``remeasure``), when a burst of load has
usually passed; the store keeps both rows and makes the better one current.

Rechecks: a burst of load on the host can also stretch a whole timed window evenly, leaving a narrow
interval around a wrong value (this project's machine once measured one architecture 44 % slow with a
0.8 % interval, while the reference before and after it did not move). At the end of a profile run
(``recheck``), each row's out-of-fold prediction by the other rows is compared with it, and a row
measured slower than predicted by more than ``RECHECK_SIGMAS`` robust standard deviations of those
errors (and by at least ``RECHECK_FLOOR``) is measured once more; of the two rows the faster stays
current, as load only ever slows a window down. Only a profile run's rows are rechecked: the rows of a
held-out or retest run (``measure_listed``) are what a model or the protocol is tested on, and a test
set chosen by its disagreement with the model would no longer test it.

Transfer: with other boards' measurements as a prior (``prior_paths``), each measure's surrogate is a
``protran._transfer.PriorResidual`` (a ridge on the other boards' predicted log-costs plus a small
tree residual), fewer seeds suffice, and the loop stops by ``prior_converged``. Predictability: every
fit also gives each measure's cross-validated R^2 (from the same out-of-fold errors as the MSE); a
measure other than latency that stays below ``PREDICTABLE_R2`` (peak power on boards where the supply,
not the model, decides it) is reported and neither drives the queries nor holds up the stopping rule.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexibert import (
    DEFAULT_MAX_POSITIONS,
    ArchSpec,
    DesignSpace,
    count_parameters,
    model_hash,
    sample_architectures,
)
from protran._protocol import reference_latency
from protran._store import Measurement, Reference, RunStore, RunStoreError
from protran.vocabulary import (
    ACQUISITIONS,
    COMPILED_FEATURE_SETS,
    DEFAULT_FEATURES,
    DEFAULT_SURROGATE,
    DRIFT_CORRECTIONS,
    MEASURE_FIELDS,
    RUNTIME_NAMES,
    USABLE_STATUSES,
    name_of,
)

# Fewer training rows per fold than this give no meaningful validation error.
_MIN_TRAINING_ROWS = 3
# The reference architecture is the median-size one of this many random architectures drawn with this
# fixed seed: the same for every run of a design space, whatever the run's own seed.
_REFERENCE_SAMPLE, _REFERENCE_SEED = 9, 20_240_601
# Rechecks (see the module docstring): a profile row measured slower than the other rows predict by
# more than RECHECK_SIGMAS robust standard deviations of the out-of-fold errors, and by at least
# RECHECK_FLOOR, is measured again at the end of the run; at most RECHECK_SHARE of the rows.
RECHECK_SIGMAS, RECHECK_FLOOR, RECHECK_SHARE = 3.0, 0.08, 0.1


class ReferenceDriftWarning(UserWarning):
    """The reference architecture's latency drifted beyond ``ProfileConfig.drift_threshold`` in a run."""


@dataclass(frozen=True)
class ProfileConfig:
    """What to measure and when to stop. Defaults follow the reference profiler where it made sense."""

    device: str
    runtime: str = "onnxruntime"
    batch_size: int = 1
    seq_len: int = 128
    num_threads: int = 1
    meter: str = "auto"
    seed: int = 0
    seed_samples: int = 16
    pool_size: int = 64
    target_mse: float = 0.005
    patience: int = 3
    max_samples: int = 96
    max_hours: float = 4.0
    # The additive cost model on cost features beat every other surrogate in benchmarks/replay_public.py.
    surrogate: str = DEFAULT_SURROGATE
    features: str = DEFAULT_FEATURES
    acquisition: str = "uncertainty"
    target_rel_ci: float = 0.02
    time_cap_s: float = 30.0
    timeout_s: float = 600.0
    cv_folds: int = 5
    vocab_size: int | None = None
    space_path: str | None = None
    # CPUs the measured process is pinned to (None: no pinning). Recorded with every measurement (its
    # conditions), not in run_settings(): a run may be resumed pinned elsewhere.
    cpus: tuple[int, ...] | None = None
    # Drift control (see the module docstring): measure the reference architecture after every
    # ``reference_every`` measurements (0: never, no correction); beyond ``drift_threshold`` (relative)
    # from the baseline, correct the rows and warn. Not in run_settings(): a run may be resumed with others.
    reference_every: int = 8
    drift_threshold: float = 0.05
    # How a row is corrected (DRIFT_CORRECTIONS): by the latest reference before it, or, once the next
    # reference exists, by the geometric mean of the references just before and just after it.
    drift_correction: str = "latest"
    # Measure every row whose CI stayed wider than target_rel_ci (``unstable``) once more at the end of
    # the run; the better of the two rows is the current one (see protran._store, "Re-measurements").
    remeasure: bool = True
    # Fresh worker processes per measurement, rows and references alike (protran._protocol, "Processes"):
    # the median of their latencies is the row's. Not in run_settings(): a run may be resumed with others.
    processes: int = 1
    # Measure once more, at the end of a profile run, the rows that the other rows say were measured
    # slow (a window stretched by load); the faster of the two rows is the current one.
    recheck: bool = True
    # Other boards' measurements (run stores or ProTran data sets) as a transfer prior: the surrogates
    # become protran._transfer.PriorResidual models and the loop stops by prior_converged. With a
    # prior, fewer seeds suffice (the CLI's default drops to PRIOR_SEED_SAMPLES).
    prior_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.device or "/" in self.device:
            raise ValueError(f"device name {self.device!r} must be a non-empty name without '/'")
        for name in ("batch_size", "seq_len", "num_threads", "seed_samples", "pool_size", "max_samples",
                     "patience", "cv_folds", "processes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.reference_every, bool) or not isinstance(self.reference_every, int) \
                or self.reference_every < 0:
            raise ValueError(f"reference_every must be a non-negative integer (0: off), got {self.reference_every!r}")
        if not self.drift_threshold >= 0 or not math.isfinite(self.drift_threshold):
            raise ValueError(f"drift_threshold must be a non-negative finite number, got {self.drift_threshold}")
        if self.drift_correction not in DRIFT_CORRECTIONS:
            raise ValueError(f"drift_correction must be one of {', '.join(DRIFT_CORRECTIONS)}, "
                             f"got {self.drift_correction!r}")
        if self.max_samples < self.seed_samples:
            raise ValueError(f"max_samples ({self.max_samples}) must be at least seed_samples ({self.seed_samples})")
        if not 0 < self.target_mse < 1:
            raise ValueError(f"target_mse must lie in (0, 1), got {self.target_mse}")
        if not 0 < self.target_rel_ci < 1:
            raise ValueError(f"target_rel_ci must lie in (0, 1), got {self.target_rel_ci}")
        for name in ("max_hours", "time_cap_s", "timeout_s"):
            value = getattr(self, name)
            # `not value > 0` also refuses NaN; an infinite timeout would overflow the worker's timer
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if self.seq_len > DEFAULT_MAX_POSITIONS:
            raise ValueError(f"seq_len {self.seq_len} exceeds the models' {DEFAULT_MAX_POSITIONS} positions")
        if self.acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition must be 'uncertainty' or 'random', got {self.acquisition!r}")
        if self.runtime not in RUNTIME_NAMES:
            raise ValueError(f"unknown runtime {self.runtime!r}; choose one of {', '.join(RUNTIME_NAMES)}")
        _check_surrogate_choice(self.surrogate, self.features)
        object.__setattr__(self, "prior_paths", tuple(str(path) for path in self.prior_paths))
        for path in self.prior_paths:
            if not Path(path).is_file():
                raise ValueError(f"prior {path} is not a file; give other boards' run stores or ProTran data sets")
        from protran._protocol import check_cpus

        # an unknown CPU fails here, before any run; the checked tuple is sorted and free of repeats
        object.__setattr__(self, "cpus", check_cpus(self.cpus, self.num_threads))
        self.design_space()  # a bad --space file fails here, before any run is created

    def design_space(self) -> DesignSpace:
        """The space sampled from: the file at ``space_path``, else FlexiBERT 2.0."""
        return DesignSpace.from_yaml(self.space_path) if self.space_path else DesignSpace.default()

    def run_settings(self) -> dict[str, Any]:
        """Settings that must match for a run to be resumed."""
        keep = ("seed", "seed_samples", "surrogate", "features", "acquisition", "space_path")
        settings: dict[str, Any] = {name: getattr(self, name) for name in keep}
        if self.prior_paths:  # only then, so that runs from before priors existed still resume
            settings["prior"] = [Path(path).name for path in self.prior_paths]
        return settings


@dataclass
class ProfileSummary:
    run_id: int
    device: str
    runtime: str
    meter: str | None
    measured_ok: int
    failed: int
    unstable: int
    converged: bool
    stop_reason: str
    cv_mse: dict[str, float | None]
    measures: list[str]
    surrogate_paths: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    # The largest relative drift of the reference architecture's latency over the run (None: no
    # successful reference measurement, e.g. drift control off) and whether it exceeded drift_threshold.
    reference_drift: float | None = None
    drift_exceeded: bool = False
    # Cross-validated R^2 of each measure from the architecture at the last fit (None: too few rows),
    # and the measures below PREDICTABLE_R2 that the loop stopped chasing (Profiler.not_predictable).
    predictability_r2: dict[str, float | None] = field(default_factory=dict)
    not_predictable: list[str] = field(default_factory=list)
    prior_devices: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- pieces of the loop (pure, tested on their own) ---------------------------------------------------


def available_measures(rows: Sequence[Measurement]) -> list[str]:
    """Latency always; energy and peak power only when every row has them (a meter was present)."""
    measures = [MEASURE_FIELDS[0]]
    for name in MEASURE_FIELDS[1:]:
        if rows and all(getattr(row, name) is not None for row in rows):
            measures.append(name)
    return measures


def normalised_targets(rows: Sequence[Measurement], measure: str) -> tuple[np.ndarray, float]:
    """Values divided by their maximum over the measured rows, and that maximum."""
    values = np.array([getattr(row, measure) for row in rows], dtype=float)
    scale = float(values.max())
    if not scale > 0:
        raise ValueError(f"cannot normalise {measure}: its largest measured value is {scale}")
    return values / scale, scale


def row_weights(rows: Sequence[Measurement], floor: float) -> np.ndarray | None:
    """Inverse-variance fit weights ``1 / max(ci_rel, floor)^2`` from each row's ``latency_ci_rel``,
    normalised to mean 1; None when every row weighs the same (the unweighted fit).

    ``floor`` is the protocol's target relative CI, so every converged row weighs the same (a
    narrower CI than asked for is luck, not a better measurement). A row without a CI (imported
    rows: ``latency_ci_rel`` None) is taken as converged: it weighs what a converged row does.
    Only latency has a CI; energy and peak power are fitted with the same row weights, as they come
    from the same timed window.
    """
    ci = np.array([floor if row.latency_ci_rel is None else row.latency_ci_rel for row in rows], dtype=float)
    ci = np.where(np.isfinite(ci), ci, floor)
    weights = 1.0 / np.maximum(ci, floor) ** 2
    if weights.size == 0 or np.all(weights == weights[0]):
        return None
    return weights / weights.mean()


def cross_validated_mse(make_model: Callable[[], Any], features: np.ndarray, targets: np.ndarray,
                        folds: int, seed: int, sample_weight: np.ndarray | None = None) -> float:
    """K-fold MSE of a fresh model on every fold (K capped by the number of rows).

    ``sample_weight`` (None: equal) weights the training folds' fits only; the validation MSE stays
    unweighted, so the stopping rule (``target_mse``) keeps its meaning across weighted and
    unweighted runs.
    """
    errors = out_of_fold_errors(make_model, features, targets, folds, seed, sample_weight)
    return math.inf if errors is None else float(np.mean(errors**2))


def out_of_fold_errors(make_model: Callable[[], Any], features: np.ndarray, targets: np.ndarray,
                       folds: int, seed: int, sample_weight: np.ndarray | None = None) -> np.ndarray | None:
    """Each row's prediction error (prediction - target) by a fresh model fitted on the other folds;
    None where the rows are too few for K folds with enough training rows each."""
    n = len(targets)
    folds = min(folds, n)
    if folds < 2 or n - math.ceil(n / folds) < _MIN_TRAINING_ROWS:
        return None
    order = np.random.default_rng(seed).permutation(n)
    errors = np.empty(n)
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        if sample_weight is None:
            model = make_model().fit(features[train], targets[train])
        else:
            model = make_model().fit(features[train], targets[train], sample_weight=sample_weight[train])
        errors[fold] = model.predict(features[fold]) - targets[fold]
    return errors


def disagreeing_rows(rel_errors: np.ndarray, *, sigmas: float, floor: float, limit: int) -> list[int]:
    """Indices of the rows whose out-of-fold relative error (prediction / measured - 1) says they were
    measured slow: below ``-max(sigmas * robust_std, floor)``, worst first, at most ``limit``.

    Only slow rows: load on a shared machine stretches a timed window and never shortens it, so a row
    far below its prediction is as likely the model's error as the measurement's. The robust std is
    1.4826 x the median absolute deviation of the errors (the rows being looked for do not inflate it).
    """
    if limit <= 0 or rel_errors.size == 0:
        return []
    spread = 1.4826 * float(np.median(np.abs(rel_errors - np.median(rel_errors))))
    bound = max(sigmas * spread, floor)
    slow = [int(i) for i in np.argsort(rel_errors) if rel_errors[i] < -bound]
    return slow[:limit]


def choose_next(
    pool: Sequence[ArchSpec], models: dict[str, Any], pool_features: np.ndarray, acquisition: str,
    rng: np.random.Generator,
) -> ArchSpec:
    """The pool candidate with the largest summed normalised predictive std (or a random one)."""
    if acquisition == "random":
        return pool[int(rng.integers(len(pool)))]
    score = np.zeros(len(pool))
    for model in models.values():
        _, std = model.predict(pool_features, return_std=True)
        score += np.asarray(std, dtype=float)
    return pool[int(np.argmax(score))]


def remeasured_hashes(store: RunStore, run_id: int) -> set[str]:
    """Architectures of a run already measured again (a row of theirs is superseded): a re-measurement
    or recheck measures each architecture once more at most."""
    return {row.arch_hash for row in store.measurements(run_id=run_id, status=None, include_superseded=True)
            if row.superseded_by is not None}


def reference_spec(space: DesignSpace) -> ArchSpec:
    """The fixed reference architecture of a design space: the median by parameter count (ties by hash)
    of a sample drawn with a fixed seed, so every run and session of one space measures the same one."""
    sample = sample_architectures(_REFERENCE_SAMPLE, method="random", seed=_REFERENCE_SEED, space=space)
    ordered = sorted(sample, key=lambda spec: (count_parameters(spec), model_hash(spec)))
    return ordered[len(ordered) // 2]


# References that make the baseline (their median): one reading of the reference is as noisy as any
# row (its CI is the protocol's 2 %), and on a busy machine consecutive readings differ by several
# per cent with no change in the other rows' speed.
BASELINE_REFERENCES = 3


def reference_baseline(latencies: Sequence[float]) -> float | None:
    """The baseline of a board's drift: the median of its first ``BASELINE_REFERENCES`` successful
    reference latencies (oldest first); None for none."""
    return float(np.median(latencies[:BASELINE_REFERENCES])) if latencies else None


def bracket_baseline(comparable: Sequence[Reference]) -> float | None:
    """The baseline of the ``bracket`` rule: the median of every successful reading of the first run
    among ``comparable`` (a board's references across runs, oldest first; usually the profile run's),
    so a held-out or retest run is put at the profile run's usual speed; None for none."""
    usable = [ref for ref in comparable if ref.status == "ok" and ref.latency_s]
    if not usable:
        return None
    first = usable[0].run_id
    return float(np.median([ref.latency_s for ref in usable if ref.run_id == first]))


def drift_baseline(references: Sequence[Reference], drift_correction: str) -> float | None:
    """The baseline a rule corrects rows to, from a board's references (oldest first):
    :func:`bracket_baseline` for ``bracket`` and ``in-process``, :func:`reference_baseline` of the
    successful readings for ``latest``; None for none."""
    if drift_correction in ("bracket", "in-process"):
        return bracket_baseline(references)
    return reference_baseline([float(ref.latency_s) for ref in references if ref.status == "ok" and ref.latency_s])


def drift_factor(baseline_s: float, latest_s: float, threshold: float) -> float:
    """The correction of a row: ``baseline / latest`` when the latest reference is more than
    ``threshold`` (relative) away from the baseline, else 1. Within the threshold a change of the
    reference is indistinguishable from its own noise and correcting by it would add that noise to
    every row (measured on this project's machine: the test-retest spread doubled)."""
    return baseline_s / latest_s if abs(latest_s / baseline_s - 1.0) > threshold else 1.0


def drift_of(baseline_s: float | None, latencies: Sequence[float]) -> float | None:
    """The largest ``|reference / baseline - 1|`` over a run's reference latencies; None for none."""
    if baseline_s is None or not latencies:
        return None
    return max(abs(value / baseline_s - 1.0) for value in latencies)


def _check_surrogate_choice(surrogate: str, features: str) -> None:
    from protran.surrogates import FEATURE_SETS, SURROGATE_NAMES

    if surrogate not in SURROGATE_NAMES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {', '.join(SURROGATE_NAMES)}")
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; choose one of {', '.join(FEATURE_SETS)}")


# -- transfer prior ---------------------------------------------------------------------------------


def load_prior(config: ProfileConfig) -> tuple[Any, int]:
    """The other boards of ``config.prior_paths`` as a fitted ``TransferPrior`` (one group of rows per
    device: a run store may hold several) and how many boards it has; (None, 0) without a prior.

    Each board's surrogates are fit on its own max-normalised measures with this run's features and
    workload, so only the shape of its costs carries over, not its scale."""
    if not config.prior_paths:
        return None, 0
    prior, boards = fit_prior(config, prior_rows(config).values())
    if prior is None:
        raise ValueError(f"the prior ({', '.join(config.prior_paths)}) has no board with 2 or more measured rows")
    return prior, boards


def prior_rows(config: ProfileConfig) -> dict[str, list[Any]]:
    """The rows of ``config.prior_paths``, one group per file and device (``PATH:DEVICE``)."""
    from protran._store import load_rows

    groups: dict[str, list[Any]] = {}
    for path in config.prior_paths:
        for row in load_rows(path):
            groups.setdefault(f"{path}:{row.device}", []).append(row)
    return groups


def fit_prior(config: ProfileConfig, boards: Iterable[Sequence[Any]]) -> tuple[Any, int]:
    """A ``TransferPrior`` fit on each group of rows (one board each: run-store measurements or
    ProTran rows) and how many boards it has; groups of fewer than 2 rows are left out, and (None, 0)
    is returned where none is left."""
    from protran._active import TransferPrior
    from protran.surrogates import featurize, make_surrogate

    datasets = []
    for rows in boards:
        if len(rows) < 2:
            continue
        X = featurize([row.spec for row in rows], features=config.features, batch_size=config.batch_size,
                      seq_len=config.seq_len, runtime=config.runtime)
        Y = np.array([[np.nan if getattr(row, m) is None else float(getattr(row, m)) for m in MEASURE_FIELDS]
                      for row in rows], dtype=float)
        datasets.append((X, Y))
    if not datasets:
        return None, 0
    prior = TransferPrior(lambda measure: make_surrogate(config.surrogate, seed=config.seed), MEASURE_FIELDS)
    return prior.fit(datasets), len(datasets)


# -- drift control ----------------------------------------------------------------------------------


class DriftControl:
    """The reference architecture of one run (see the module docstring): measured at ``start()`` and
    after every ``reference_every`` measurements (``tick()``), and the factor that corrects a row.

    The baseline is the first successful reference of any run that measures what this run measures
    (``RunStore.references(comparable=True)``), so a held-out or retest run is corrected to the same
    machine state as the profile run it is compared with; the factor is that baseline over this run's
    latest successful reference.
    """

    def __init__(self, config: ProfileConfig, store: RunStore, run_id: int, space: DesignSpace,
                 measure_fn: Callable[..., Any], meter: Any) -> None:
        self.config, self.store, self.run_id, self.meter = config, store, run_id, meter
        self._spec = reference_spec(space)
        self._hash = model_hash(self._spec)
        self._measure_fn = measure_fn
        self._since = 0
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.config.reference_every > 0 or self.in_process

    @property
    def in_process(self) -> bool:
        """Each row reads the reference in its own process (no reference measured on its own)."""
        return self.config.drift_correction == "in-process"

    def _references(self, comparable: bool) -> list[Reference]:
        return [ref for ref in self.store.references(self.run_id, comparable=comparable)
                if ref.status == "ok" and ref.arch_hash == self._hash and ref.latency_s is not None
                and ref.latency_s > 0]

    def _latencies(self, comparable: bool) -> list[float]:
        return [float(ref.latency_s or 0.0) for ref in self._references(comparable)]

    def _baseline(self) -> float | None:
        """The rule's baseline (see the module docstring and :func:`drift_baseline`)."""
        return drift_baseline(self._references(comparable=True), self.config.drift_correction)

    def start(self) -> None:
        """Every session starts from a fresh reading of the machine (in its own process, unless every
        row reads the reference in its own)."""
        if self.enabled and not self.in_process:
            self.measure()

    def tick(self) -> None:
        """One measurement was stored: measure the reference when it is due; under ``in-process``,
        recompute the run's corrections to the baseline the new reading moved."""
        self._since += 1
        if self.in_process:
            correct_run(self.store, self.run_id, self.config.drift_threshold, "in-process")
        elif self.enabled and self._since >= self.config.reference_every:
            self.measure()

    def measure_settings(self) -> dict[str, Any]:
        """The keyword arguments of a row's measure call: the run's settings and, under ``in-process``,
        the reference to time in the row's process."""
        return {**_measure_settings(self.config, self.meter), **({"reference": self._spec} if self.in_process else {})}

    def measure(self) -> None:
        self._record(self._measure_fn(self._spec, **_measure_settings(self.config, self.meter)))
        self._since = 0
        if self.config.drift_correction == "bracket":
            # the rows since the previous reading now have a reading on both sides
            correct_run(self.store, self.run_id, self.config.drift_threshold, "bracket")

    def _record(self, reference: Any) -> None:
        """Store one reading of the reference and warn, once per session, when the run drifted."""
        c = self.config
        self.store.add_reference(self.run_id, reference)
        drift = self.drift()
        if drift is not None and drift > c.drift_threshold and not self._warned:
            self._warned = True
            warnings.warn(f"run {self.run_id}: the reference architecture's latency drifted by {drift:.1%} "
                          f"(threshold {c.drift_threshold:.1%}); latencies are corrected for it, but the machine is "
                          "busy or throttling", ReferenceDriftWarning, stacklevel=3)

    def drift(self) -> float | None:
        """The largest ``|reference / baseline - 1|`` over this run's references (None: none yet)."""
        return drift_of(self._baseline(), self._latencies(comparable=False))

    def correct(self, result: Any) -> tuple[Any, float | None]:
        """The result with its latency (and IQR) scaled by :func:`drift_factor` (1 within the
        threshold), and its raw latency; unchanged, with None, where there is nothing to correct or
        nothing to correct by."""
        if self.in_process:
            reading = reference_latency(result)
            if reading is None or result.latency_s is None:
                return result, None
            taken = result.conditions["reference"]
            self._record(dataclasses.replace(
                result, arch_hash=self._hash, latency_s=reading, status=taken["status"],
                latency_ci_rel=taken.get("latency_ci_rel"),
                conditions={"in_process": True, "row_arch_hash": result.arch_hash}))
            own = [reading]
        else:
            own = self._latencies(comparable=False) if self.enabled else []
        if not own or result.latency_s is None:
            return result, None
        baseline = self._baseline()
        assert baseline is not None  # this run's own references are comparable with it
        return scale_latency(result, drift_factor(baseline, own[-1], self.config.drift_threshold)), result.latency_s


def scale_latency(result: Any, factor: float) -> Any:
    """A measurement (result or stored row) with its latency and IQR scaled by a drift factor, the
    factor recorded in its conditions; energy and power stay as the meter read them."""
    iqr = result.latency_iqr_s * factor if result.latency_iqr_s is not None else None
    return dataclasses.replace(result, latency_s=result.latency_s * factor, latency_iqr_s=iqr,
                               conditions={**(result.conditions or {}), "drift_factor": factor})


def bracket_reading(before_s: float, after_s: float | None) -> float:
    """The reference latency a row is corrected by under the ``bracket`` rule: the geometric mean of
    the readings just before and just after it (``before_s`` alone where none follows it yet)."""
    return before_s if after_s is None else math.sqrt(before_s * after_s)


def correct_run(store: RunStore, run_id: int, drift_threshold: float,
                drift_correction: str = "latest") -> dict[str, Any]:
    """Recompute the drift corrections of a run from its stored references and raw latencies, as the
    run would have applied them with ``drift_threshold`` and ``drift_correction`` (``latest``: the last
    reference taken before a row started, to the median of the board's first three; ``bracket``: that
    one and the first taken after the row finished, see :func:`bracket_reading`, to
    :func:`bracket_baseline`; ``in-process``: the reading in the row's own process, to
    :func:`bracket_baseline`). Returns ``{"run_id", "rows", "changed", "reference_drift"}``; a run
    without references is left as it is (``rows`` 0). A run being measured is refused by the store
    unless this process holds it."""
    from datetime import datetime

    if drift_correction not in DRIFT_CORRECTIONS:
        raise ValueError(f"drift_correction must be one of {', '.join(DRIFT_CORRECTIONS)}, got {drift_correction!r}")

    def when(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp)

    own = [ref for ref in store.references(run_id) if ref.status == "ok" and ref.latency_s]
    hashes = {ref.arch_hash for ref in own}
    comparable = [ref for ref in store.references(run_id, comparable=True)
                  if ref.status == "ok" and ref.latency_s and ref.arch_hash in hashes]
    rows = [row for row in store.measurements(run_id=run_id, status=None, include_superseded=True)
            if row.latency_raw_s is not None and row.started_at]
    bracket = drift_correction == "bracket"
    # over every reading: the bracket rule's one baseline, the latest rule's once every reading is taken
    whole_run = drift_baseline(comparable, drift_correction)
    factors: dict[int, float] = {}
    for row in rows:
        if drift_correction == "in-process":
            reading = reference_latency(row)
            if reading is not None and whole_run is not None:
                factors[row.id] = drift_factor(whole_run, reading, drift_threshold)
            continue
        started = when(str(row.started_at))
        before = [ref.latency_s for ref in own if when(ref.measured_at) <= started]
        baseline = (whole_run if bracket else
                    reference_baseline([ref.latency_s for ref in comparable if when(ref.measured_at) <= started]))
        if not before or baseline is None:
            continue
        reading = before[-1]
        if bracket:
            finished = when(str(row.finished_at or row.started_at))
            after = [ref.latency_s for ref in own if when(ref.measured_at) >= finished]
            reading = bracket_reading(reading, after[0] if after else None)
        factors[row.id] = drift_factor(baseline, reading, drift_threshold)
    changed = sum(1 for row in rows if row.id in factors
                  and abs(factors[row.id] - float(row.conditions.get("drift_factor", 1.0))) > 1e-12)
    if factors:
        store.set_drift_factors(run_id, factors)
    return {"run_id": run_id, "rows": len(factors), "changed": changed,
            "reference_drift": drift_of(whole_run, [ref.latency_s for ref in own])}


# -- the loop ---------------------------------------------------------------------------------------


class Profiler:
    """Runs one profiling session against a run store. See :func:`profile` for the one-call form."""

    def __init__(self, config: ProfileConfig, store: RunStore, out_dir: str | Path, *, resume: bool = False,
                 meter: Any = None, measure_fn: Callable[..., Any] | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None, take_over: bool = False,
                 prior: tuple[Any, int] | None = None) -> None:
        self.config = config
        self.space = config.design_space()
        self.store = store
        self.out_dir = Path(out_dir)
        self.meter = meter
        self._measure_fn = measure_fn or _default_measure
        self._progress = progress or (lambda event: None)
        self._rng = np.random.default_rng(config.seed)
        self._started = time.monotonic()
        # a bad prior fails before any run exists; ``prior`` is load_prior(config) where already loaded
        self._prior, self._prior_devices = prior if prior is not None else load_prior(config)
        self.run_id = self._open_run(resume, take_over)
        self._passes = 0
        self.cv_mse: dict[str, float] = {}
        self.r2: dict[str, float | None] = {}
        self._worst_history: list[float] = []
        self._drift = DriftControl(config, store, self.run_id, self.space, self._measure_fn, meter)

    def _open_run(self, resume: bool, take_over: bool) -> int:
        return _open_run(self.store, self.config, self.config.run_settings(), getattr(self.meter, "name", None),
                         resume=resume, take_over=take_over)

    # -- state derived from the store (so resuming needs no other state) --

    def _attempts(self) -> list[Measurement]:
        return self.store.measurements(run_id=self.run_id, status=None)

    def _ok_rows(self) -> list[Measurement]:
        # An unstable row missed the confidence target within its time cap, but its median is still the
        # best estimate there is: it is flagged in the store and counted, and it is used for fitting.
        return self.store.measurements(run_id=self.run_id, status=USABLE_STATUSES)

    # -- steps --

    def _measure(self, spec: ArchSpec, reason: str, replaces: int | None = None, keep: str = "better") -> None:
        self._progress({"event": "measuring", "hash": model_hash(spec), "reason": reason, "spec": spec})
        result, raw = self._drift.correct(self._measure_fn(spec, **self._drift.measure_settings()))
        self.store.add_measurement(self.run_id, result, latency_raw_s=raw, replaces=replaces, keep=keep)
        self._progress({"event": "measured", "result": result, "n_ok": len(self._ok_rows()),
                        "n_attempts": len(self._attempts()), "cv_mse": dict(self.cv_mse)})
        self._drift.tick()

    def _budget_left(self) -> str | None:
        if len(self._attempts()) >= self.config.max_samples:
            return "max_samples"
        if time.monotonic() - self._started >= self.config.max_hours * 3600:
            return "max_hours"
        return None

    def _features(self, rows: list[Measurement]) -> np.ndarray:
        from protran.surrogates import featurize

        c = self.config
        if c.features in COMPILED_FEATURE_SETS:  # measured rows recorded their graphs: no second compile
            from protran._graphs import cache_graph_stats_from_rows

            cache_graph_stats_from_rows(rows)
        return featurize([row.spec for row in rows], features=c.features, batch_size=c.batch_size,
                         seq_len=c.seq_len, runtime=c.runtime)

    def _fit(self, rows: list[Measurement]) -> dict[str, Any]:
        c = self.config
        features = self._features(rows)
        models, self.cv_mse, self.r2 = {}, {}, {}
        # Noisy rows (wide latency CI) count less; energy and peak power share the latency rows'
        # weights (same timed window). None: all rows alike, the plain unweighted fit.
        weights = row_weights(rows, c.target_rel_ci)
        for measure in available_measures(rows):
            targets, _ = normalised_targets(rows, measure)
            make = self._model_factory(measure)
            self.cv_mse[measure] = cross_validated_mse(make, features, targets, c.cv_folds, c.seed, weights)
            # R^2 from the same out-of-fold errors: how much of the measure the architecture explains
            variance = float(np.var(targets))
            self.r2[measure] = 1.0 - self.cv_mse[measure] / variance \
                if math.isfinite(self.cv_mse[measure]) and variance > 0 else None
            models[measure] = make().fit(features, targets, sample_weight=weights)
        return models

    def _model_factory(self, measure: str) -> Callable[[], Any]:
        c = self.config
        if self._prior is not None and self._prior.n_columns(measure):
            from protran._transfer import PriorResidual
            from protran.surrogates import make_surrogate

            prior = self._prior
            # The board's own cost model, cross-fitted, is one more ridge column: boards the
            # architecture features already explain lean on it (the replay benchmark's stacked variant).
            return lambda: PriorResidual(prior, measure, seed=c.seed,
                                         own_model=lambda: make_surrogate(c.surrogate, seed=c.seed))
        from protran.surrogates import make_surrogate

        return lambda: make_surrogate(c.surrogate, seed=c.seed)

    def not_predictable(self, n_rows: int) -> list[str]:
        """Measures other than latency whose cross-validated R^2 stayed below ``PREDICTABLE_R2`` once
        enough rows are measured to tell (peak power on several boards follows the supply and the
        sensor more than the architecture): the loop neither queries for them nor waits for them."""
        from protran._transfer import PREDICTABLE_R2, PRIOR_MIN_ROWS

        if n_rows < PRIOR_MIN_ROWS:
            return []
        return [measure for measure, r2 in self.r2.items()
                if measure != "latency_s" and r2 is not None and r2 < PREDICTABLE_R2]

    def _converged(self, n_rows: int) -> bool:
        """The stopping rule on the measures worth predicting: without a prior, every one's CV MSE at
        or below the target for ``patience`` consecutive fits; with one, ``prior_converged``."""
        c = self.config
        skipped = self.not_predictable(n_rows)
        worst = max((mse for measure, mse in self.cv_mse.items() if measure not in skipped), default=math.inf)
        self._worst_history.append(worst)
        if self._prior is not None:
            from protran._transfer import prior_converged

            return prior_converged(self._worst_history, n_rows, c.target_mse, patience=c.patience)
        self._passes = self._passes + 1 if worst <= c.target_mse else 0
        return self._passes >= c.patience

    def _next_candidate(self, models: dict[str, Any], iteration: int) -> ArchSpec:
        from protran.surrogates import featurize

        c = self.config
        measured = {row.arch_hash for row in self._attempts()}
        pool = [spec for spec in sample_architectures(c.pool_size, method="random", seed=c.seed * 100_003 + iteration,
                                                    space=self.space)
                if model_hash(spec) not in measured]
        features = featurize(pool, features=c.features, batch_size=c.batch_size, seq_len=c.seq_len,
                             runtime=c.runtime)
        return choose_next(pool, models, features, c.acquisition, self._rng)

    def run(self) -> ProfileSummary:
        c = self.config
        stop_reason = None
        with _marks_interrupted(self.store, self.run_id):
            attempts = self._attempts()
            self._progress({"event": "started", "n_attempts": len(attempts)})
            self._drift.start()
            measured = {row.arch_hash for row in attempts}
            for spec in sample_architectures(c.seed_samples, method="lhs_split", seed=c.seed, space=self.space):
                if model_hash(spec) not in measured:
                    if (stop_reason := self._budget_left()) is not None:
                        break
                    self._measure(spec, "seed")
            iteration = len(self._attempts())
            while stop_reason is None:
                rows = self._ok_rows()
                if len(rows) < 2:
                    stop_reason = "too_few_successful_measurements"
                    break
                models = self._fit(rows)
                converged = self._converged(len(rows))
                self._progress({"event": "fitted", "cv_mse": dict(self.cv_mse), "passes": self._passes,
                                "n_ok": len(rows)})
                if converged:
                    stop_reason = "converged"
                    break
                if (stop_reason := self._budget_left()) is not None:
                    break
                chased = {m: model for m, model in models.items() if m not in self.not_predictable(len(rows))}
                self._measure(self._next_candidate(chased, iteration), "uncertainty")
                iteration += 1
            if c.remeasure and stop_reason != "max_hours":
                self._remeasure_wide()
            if c.recheck and stop_reason != "max_hours":
                self._recheck_slow()
        return self._finish(stop_reason)

    def _remeasure_wide(self) -> None:
        """Measure once more, at the end of the run, every row whose CI stayed wider than the target
        (``unstable``) and that was not measured again yet: a burst of load rarely lasts that long."""
        again = remeasured_hashes(self.store, self.run_id)
        for row in self.store.measurements(run_id=self.run_id, status="unstable"):
            if row.arch_hash in again:
                continue
            if time.monotonic() - self._started >= self.config.max_hours * 3600:
                break
            self._measure(row.spec, "remeasure", replaces=row.id)

    def _recheck_slow(self) -> None:
        """Measure once more the rows that their out-of-fold predictions say were measured slow
        (:func:`disagreeing_rows`), once each; the faster row stays current."""
        c = self.config
        again = remeasured_hashes(self.store, self.run_id)
        rows = self._ok_rows()
        latency = MEASURE_FIELDS[0]
        targets, _ = normalised_targets(rows, latency)
        errors = out_of_fold_errors(self._model_factory(latency), self._features(rows), targets, c.cv_folds,
                                    c.seed, row_weights(rows, c.target_rel_ci))
        if errors is None:
            return
        slow = disagreeing_rows(errors / targets, sigmas=RECHECK_SIGMAS, floor=RECHECK_FLOOR,
                                limit=max(1, int(RECHECK_SHARE * len(rows))))
        for index in slow:
            if rows[index].arch_hash in again:
                continue
            if time.monotonic() - self._started >= c.max_hours * 3600:
                break
            self._measure(rows[index].spec, "recheck", replaces=rows[index].id, keep="faster")

    def _finish(self, stop_reason: str) -> ProfileSummary:
        rows = self._ok_rows()
        attempts = self._attempts()
        paths: dict[str, str] = {}
        measures = available_measures(rows)
        drift = self._drift.drift()
        with _marks_interrupted(self.store, self.run_id):  # a failed save leaves the run free to resume
            if len(rows) >= 2:
                paths = self.save_surrogates(rows)
        self.store.release_lease(self.run_id, "finished")
        return ProfileSummary(
            run_id=self.run_id, device=self.config.device, runtime=self.config.runtime,
            meter=getattr(self.meter, "name", None), measured_ok=sum(row.status == "ok" for row in rows),
            failed=sum(a.status in ("failed", "timeout", "oom") for a in attempts),
            unstable=sum(a.status == "unstable" for a in attempts), converged=stop_reason == "converged",
            stop_reason=stop_reason, cv_mse=_finite(self.cv_mse), measures=measures, surrogate_paths=paths,
            elapsed_s=time.monotonic() - self._started, reference_drift=drift,
            drift_exceeded=drift is not None and drift > self.config.drift_threshold,
            predictability_r2=_finite(self.r2), not_predictable=self.not_predictable(len(rows)),
            prior_devices=self._prior_devices,
        )

    def save_surrogates(self, rows: list[Measurement]) -> dict[str, str]:
        """Fit on every successful row in real units and save one surrogate per measure, with the
        device's manifest (``protran.models``)."""
        from protran.models import FittedModels, Workload, fit_hardware_model

        c = self.config
        specs = [row.spec for row in rows]
        hardware = {name_of(measure): fit_hardware_model(
            specs, np.array([getattr(row, measure) for row in rows], dtype=float), batch_size=c.batch_size,
            seq_len=c.seq_len, surrogate=c.surrogate, features=c.features, seed=c.seed,
            # same weights for every measure (see _fit)
            sample_weight=row_weights(rows, c.target_rel_ci), runtime=c.runtime)
            for measure in available_measures(rows)}
        models = FittedModels(None, [], np.zeros(0), {c.device: hardware}, {}, "", c.seed,
                              {c.device: Workload(c.batch_size, c.seq_len, c.features, c.runtime)})
        extra = {"num_threads": c.num_threads, "rows": len(rows)}
        paths = models.save(self.out_dir, surrogate=c.surrogate, extra={c.device: extra})[c.device]
        for measure, path in paths.items():
            metrics = {"cv_mse_normalised": _finite(self.cv_mse).get(measure), "rows": len(rows),
                       "features": c.features, "batch_size": c.batch_size, "seq_len": c.seq_len}
            self.store.add_model(name=c.surrogate, run_id=self.run_id, measure=measure, path=path, metrics=metrics)
        return paths


def _finite(values: dict[str, float | None]) -> dict[str, float | None]:
    """Infinite errors (too few rows to validate) become None, which JSON can hold."""
    return {key: (value if value is not None and math.isfinite(value) else None) for key, value in values.items()}


def _open_run(store: RunStore, c: ProfileConfig, settings: dict[str, Any], meter_name: str | None, *,
              resume: bool, take_over: bool) -> int:
    """The run to write, leased to this process: with ``resume``, the newest unfinished run of these
    settings, whose lease is taken (RunLeasedError where another process holds it); otherwise, or where
    there is none, a new run."""
    if resume:
        run_id = store.find_resumable_run(c.device, c.runtime, c.batch_size, c.seq_len, c.num_threads,
                                          config=settings)
        if run_id is not None:
            store.take_lease(run_id, take_over=take_over)
            return run_id
    from protran._protocol import host_info, software_versions
    from protran._runtimes import get_runtime

    # The run says how its runtime computes (precision, quantisation, calibration), as every row does.
    versions = {**software_versions(), "runtime_variant": get_runtime(c.runtime).variant.as_dict()}
    return store.create_run(c.device, c.runtime, batch_size=c.batch_size, seq_len=c.seq_len,
                            num_threads=c.num_threads, meter=meter_name, host=host_info(),
                            versions=versions, config=settings)


@contextmanager
def _marks_interrupted(store: RunStore, run_id: int) -> Iterator[None]:
    """Ctrl-C (or any error) marks the run interrupted and frees its lease, so that ``resume`` finds it
    and may take it, in this process or another; every finished measurement is already committed, so
    nothing measured is lost."""
    try:
        yield
    except BaseException:
        # Where the store itself fails (a full disk), or another process has taken the run over (its
        # status and lease are that process's now), the run stays as it is: the original error is what
        # the user needs to see, and a lease left behind is found stale once this process exits.
        with suppress(RunStoreError):
            store.release_lease(run_id, "interrupted")
        raise


def _optional_settings(c: ProfileConfig) -> dict[str, Any]:
    """``cpus`` and ``processes`` for the measure call, only where pinning or more than one process was
    asked for (a measure function that does neither need not accept them)."""
    return {**({"cpus": list(c.cpus)} if c.cpus is not None else {}),
            **({"processes": c.processes} if c.processes > 1 else {})}


def _measure_settings(c: ProfileConfig, meter: Any) -> dict[str, Any]:
    """The keyword arguments of one call of the measure function under ``c``."""
    return dict(runtime=c.runtime, batch_size=c.batch_size, seq_len=c.seq_len, num_threads=c.num_threads,
                meter=meter, target_rel_ci=c.target_rel_ci, time_cap_s=c.time_cap_s, timeout_s=c.timeout_s,
                vocab_size=c.vocab_size, **_optional_settings(c))


def _default_measure(spec: ArchSpec, **settings: Any):
    from protran._protocol import measure_architecture

    return measure_architecture(spec, **settings)


@dataclass
class ListedSummary:
    """What :func:`measure_listed` did: one run that measured a given list of architectures."""

    run_id: int
    device: str
    runtime: str
    purpose: str
    requested: int
    measured_ok: int
    unstable: int
    failed: int
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_listed(config: ProfileConfig, specs: Sequence[ArchSpec], store: RunStore, *, purpose: str = "listed",
                   resume: bool = False, meter: Any = None,
                   progress: Callable[[dict[str, Any]], None] | None = None,
                   measure_fn: Callable[..., Any] | None = None, take_over: bool = False) -> ListedSummary:
    """Measure exactly ``specs``, in order, as one run of the store (no surrogates, no acquisition).

    This is how a held-out test set or a test-retest repeat is measured: the run's configuration records
    ``purpose`` and the list of hashes, so ``resume`` continues only a run of the same list, and only
    where no other process is measuring it (``take_over`` as for :class:`Profiler`).
    """
    if not specs:
        raise ValueError("measure_listed needs at least one architecture")
    started = time.monotonic()
    c = config
    hashes = [model_hash(spec) for spec in specs]
    settings = {"purpose": purpose, "architectures": hashes}
    run_id = _open_run(store, c, settings, getattr(meter, "name", None), resume=resume, take_over=take_over)
    measure = measure_fn or _default_measure
    report = progress or (lambda event: None)
    drift = DriftControl(c, store, run_id, c.design_space(), measure, meter)

    def measure_one(spec: ArchSpec, arch_hash: str, reason: str, replaces: int | None = None) -> None:
        report({"event": "measuring", "hash": arch_hash, "reason": reason, "spec": spec})
        result, raw = drift.correct(measure(spec, **drift.measure_settings()))
        store.add_measurement(run_id, result, latency_raw_s=raw, replaces=replaces)
        attempts = store.measurements(run_id=run_id, status=None)
        report({"event": "measured", "result": result, "n_attempts": len(attempts),
                "n_ok": sum(a.status in USABLE_STATUSES for a in attempts), "cv_mse": {}})
        drift.tick()

    with _marks_interrupted(store, run_id):
        report({"event": "started", "n_attempts": len(store.measurements(run_id=run_id, status=None))})
        drift.start()
        for spec, arch_hash in zip(specs, hashes):
            if arch_hash not in store.measured_hashes(run_id):
                measure_one(spec, arch_hash, purpose)
        if c.remeasure:
            again = remeasured_hashes(store, run_id)
            for row in store.measurements(run_id=run_id, status="unstable"):
                if row.arch_hash not in again:
                    measure_one(row.spec, row.arch_hash, "remeasure", replaces=row.id)
    store.release_lease(run_id, "finished")
    attempts = store.measurements(run_id=run_id, status=None)
    return ListedSummary(
        run_id=run_id, device=c.device, runtime=c.runtime, purpose=purpose, requested=len(specs),
        measured_ok=sum(a.status == "ok" for a in attempts), unstable=sum(a.status == "unstable" for a in attempts),
        failed=sum(a.status in ("failed", "timeout", "oom") for a in attempts), elapsed_s=time.monotonic() - started,
    )


def profile(config: ProfileConfig, store_path: str | Path, out_dir: str | Path, *, resume: bool = False,
            meter: Any = None, progress: Callable[[dict[str, Any]], None] | None = None,
            take_over: bool = False, prior: tuple[Any, int] | None = None) -> ProfileSummary:
    """Profile this machine as ``config.device`` into the run store at ``store_path``.

    ``resume`` continues the newest unfinished run of these settings unless another live process holds
    it (RunLeasedError); ``take_over`` takes it from a process of another host the user knows is gone.
    """
    with RunStore(store_path) as store:
        return Profiler(config, store, out_dir, resume=resume, meter=meter, progress=progress,
                        take_over=take_over, prior=prior).run()
