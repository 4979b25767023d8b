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
measurement rows (no budget, no fit, no second row of an architecture). Each measurement row is
corrected by ``baseline / latest``: the first successful reference latency of any run that measures
what this run measures (same device, runtime, batch, sequence length and threads; usually the profile
run itself) over this run's latest successful one before the row. A shared baseline is what makes a
held-out or retest run, hours later, comparable with the profile run. The correction is causal and
piecewise constant because a row is committed before the next reference exists and rows are never
rewritten (an interrupted run loses nothing and readers never see a row change). The raw latency is
kept (``latency_raw_s``) and the factor goes into the row's conditions (``drift_factor``); the
interquartile range is scaled with the latency, energy and power are left as measured (the meter's
reading, not a timing that the machine's speed scales). A failed reference measurement leaves the
factor as it was; rows measured before the run's first successful reference are not corrected. The
run's drift, the largest ``|reference / baseline - 1|`` over its references, is reported
(``ProfileSummary.reference_drift``) and, above ``drift_threshold``, warned about once per session
(``ReferenceDriftWarning``).

Wide rows: a row whose confidence interval stayed wider than ``target_rel_ci`` within its time cap
(``unstable``) is measured once more at the end of the run (``remeasure``), when a burst of load has
usually passed; the store keeps both rows and makes the better one current.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
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
from protran._store import Measurement, RunStore, RunStoreError
from protran.vocabulary import (
    ACQUISITIONS,
    DEFAULT_FEATURES,
    DEFAULT_SURROGATE,
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
    # ``reference_every`` measurements (0: never, no correction), and warn when its latency drifted by
    # more than ``drift_threshold`` (relative). Not in run_settings(): a run may be resumed with others.
    reference_every: int = 8
    drift_threshold: float = 0.05
    # Measure every row whose CI stayed wider than target_rel_ci (``unstable``) once more at the end of
    # the run; the better of the two rows is the current one (see protran._store, "Re-measurements").
    remeasure: bool = True

    def __post_init__(self) -> None:
        if not self.device or "/" in self.device:
            raise ValueError(f"device name {self.device!r} must be a non-empty name without '/'")
        for name in ("batch_size", "seq_len", "num_threads", "seed_samples", "pool_size", "max_samples",
                     "patience", "cv_folds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.reference_every, bool) or not isinstance(self.reference_every, int) \
                or self.reference_every < 0:
            raise ValueError(f"reference_every must be a non-negative integer (0: off), got {self.reference_every!r}")
        if not self.drift_threshold > 0 or not math.isfinite(self.drift_threshold):
            raise ValueError(f"drift_threshold must be a positive finite number, got {self.drift_threshold}")
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
        return {name: getattr(self, name) for name in keep}


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
    n = len(targets)
    folds = min(folds, n)
    if folds < 2 or n - math.ceil(n / folds) < _MIN_TRAINING_ROWS:
        return math.inf
    order = np.random.default_rng(seed).permutation(n)
    errors = np.empty(n)
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        if sample_weight is None:
            model = make_model().fit(features[train], targets[train])
        else:
            model = make_model().fit(features[train], targets[train], sample_weight=sample_weight[train])
        errors[fold] = model.predict(features[fold]) - targets[fold]
    return float(np.mean(errors**2))


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


def reference_spec(space: DesignSpace) -> ArchSpec:
    """The fixed reference architecture of a design space: the median by parameter count (ties by hash)
    of a sample drawn with a fixed seed, so every run and session of one space measures the same one."""
    sample = sample_architectures(_REFERENCE_SAMPLE, method="random", seed=_REFERENCE_SEED, space=space)
    ordered = sorted(sample, key=lambda spec: (count_parameters(spec), model_hash(spec)))
    return ordered[len(ordered) // 2]


def drift_of(latencies: Sequence[float]) -> float | None:
    """The largest ``|latest / first - 1|`` over successive reference latencies; None for none."""
    if not latencies:
        return None
    first = latencies[0]
    return max(abs(value / first - 1.0) for value in latencies)


def _check_surrogate_choice(surrogate: str, features: str) -> None:
    from protran.surrogates import FEATURE_SETS, SURROGATE_NAMES

    if surrogate not in SURROGATE_NAMES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {', '.join(SURROGATE_NAMES)}")
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; choose one of {', '.join(FEATURE_SETS)}")


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
        return self.config.reference_every > 0

    def _latencies(self, comparable: bool) -> list[float]:
        return [ref.latency_s for ref in self.store.references(self.run_id, comparable=comparable)
                if ref.status == "ok" and ref.arch_hash == self._hash and ref.latency_s is not None
                and ref.latency_s > 0]

    def start(self) -> None:
        """Every session starts from a fresh reading of the machine."""
        if self.enabled:
            self.measure()

    def tick(self) -> None:
        """One measurement was stored: measure the reference when it is due."""
        self._since += 1
        if self.enabled and self._since >= self.config.reference_every:
            self.measure()

    def measure(self) -> None:
        c = self.config
        self.store.add_reference(self.run_id, self._measure_fn(self._spec, **_measure_settings(c, self.meter)))
        self._since = 0
        drift = self.drift()
        if drift is not None and drift > c.drift_threshold and not self._warned:
            self._warned = True
            warnings.warn(f"run {self.run_id}: the reference architecture's latency drifted by {drift:.1%} "
                          f"(threshold {c.drift_threshold:.1%}); latencies are corrected for it, but the machine is "
                          "busy or throttling", ReferenceDriftWarning, stacklevel=3)

    def drift(self) -> float | None:
        """The largest ``|reference / baseline - 1|`` over this run's references (None: none yet)."""
        baseline = self._latencies(comparable=True)
        own = self._latencies(comparable=False)
        return drift_of(baseline[:1] + own) if own else None

    def correct(self, result: Any) -> tuple[Any, float | None]:
        """The result with its latency (and IQR) scaled by ``baseline / latest``, and its raw latency;
        unchanged, with None, where there is nothing to correct or nothing to correct by."""
        own = self._latencies(comparable=False) if self.enabled else []
        if not own or result.latency_s is None:
            return result, None
        factor = self._latencies(comparable=True)[0] / own[-1]
        iqr = result.latency_iqr_s * factor if result.latency_iqr_s is not None else None
        corrected = dataclasses.replace(result, latency_s=result.latency_s * factor, latency_iqr_s=iqr,
                                        conditions={**(result.conditions or {}), "drift_factor": factor})
        return corrected, result.latency_s


# -- the loop ---------------------------------------------------------------------------------------


class Profiler:
    """Runs one profiling session against a run store. See :func:`profile` for the one-call form."""

    def __init__(self, config: ProfileConfig, store: RunStore, out_dir: str | Path, *, resume: bool = False,
                 meter: Any = None, measure_fn: Callable[..., Any] | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None, take_over: bool = False) -> None:
        self.config = config
        self.space = config.design_space()
        self.store = store
        self.out_dir = Path(out_dir)
        self.meter = meter
        self._measure_fn = measure_fn or _default_measure
        self._progress = progress or (lambda event: None)
        self._rng = np.random.default_rng(config.seed)
        self._started = time.monotonic()
        self.run_id = self._open_run(resume, take_over)
        self._passes = 0
        self.cv_mse: dict[str, float] = {}
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

    def _measure(self, spec: ArchSpec, reason: str, replaces: int | None = None) -> None:
        c = self.config
        self._progress({"event": "measuring", "hash": model_hash(spec), "reason": reason, "spec": spec})
        result, raw = self._drift.correct(self._measure_fn(spec, **_measure_settings(c, self.meter)))
        self.store.add_measurement(self.run_id, result, latency_raw_s=raw, replaces=replaces)
        self._progress({"event": "measured", "result": result, "n_ok": len(self._ok_rows()),
                        "n_attempts": len(self._attempts()), "cv_mse": dict(self.cv_mse)})
        self._drift.tick()

    def _budget_left(self) -> str | None:
        if len(self._attempts()) >= self.config.max_samples:
            return "max_samples"
        if time.monotonic() - self._started >= self.config.max_hours * 3600:
            return "max_hours"
        return None

    def _fit(self, rows: list[Measurement]) -> dict[str, Any]:
        from protran.surrogates import featurize, make_surrogate

        c = self.config
        features = featurize([row.spec for row in rows], features=c.features, batch_size=c.batch_size,
                             seq_len=c.seq_len)
        models, self.cv_mse = {}, {}
        # Noisy rows (wide latency CI) count less; energy and peak power share the latency rows'
        # weights (same timed window). None: all rows alike, the plain unweighted fit.
        weights = row_weights(rows, c.target_rel_ci)
        for measure in available_measures(rows):
            targets, _ = normalised_targets(rows, measure)

            def make():
                return make_surrogate(c.surrogate, seed=c.seed)
            self.cv_mse[measure] = cross_validated_mse(make, features, targets, c.cv_folds, c.seed, weights)
            models[measure] = make().fit(features, targets, sample_weight=weights)
        return models

    def _next_candidate(self, models: dict[str, Any], iteration: int) -> ArchSpec:
        from protran.surrogates import featurize

        c = self.config
        measured = {row.arch_hash for row in self._attempts()}
        pool = [spec for spec in sample_architectures(c.pool_size, method="random", seed=c.seed * 100_003 + iteration,
                                                    space=self.space)
                if model_hash(spec) not in measured]
        features = featurize(pool, features=c.features, batch_size=c.batch_size, seq_len=c.seq_len)
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
                self._passes = self._passes + 1 if max(self.cv_mse.values()) <= c.target_mse else 0
                self._progress({"event": "fitted", "cv_mse": dict(self.cv_mse), "passes": self._passes,
                                "n_ok": len(rows)})
                if self._passes >= c.patience:
                    stop_reason = "converged"
                    break
                if (stop_reason := self._budget_left()) is not None:
                    break
                self._measure(self._next_candidate(models, iteration), "uncertainty")
                iteration += 1
            if c.remeasure and stop_reason != "max_hours":
                self._remeasure_wide()
        return self._finish(stop_reason)

    def _remeasure_wide(self) -> None:
        """Measure once more, at the end of the run, every row whose CI stayed wider than the target
        (``unstable``) and that was not measured again yet: a burst of load rarely lasts that long."""
        again = {row.arch_hash for row in self.store.measurements(run_id=self.run_id, status=None,
                                                                  include_superseded=True)
                 if row.superseded_by is not None}
        for row in self.store.measurements(run_id=self.run_id, status="unstable"):
            if row.arch_hash in again:
                continue
            if time.monotonic() - self._started >= self.config.max_hours * 3600:
                break
            self._measure(row.spec, "remeasure", replaces=row.id)

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
            sample_weight=row_weights(rows, c.target_rel_ci))  # same weights for every measure (see _fit)
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


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    """Infinite errors (too few rows to validate) become None, which JSON can hold."""
    return {key: (value if math.isfinite(value) else None) for key, value in values.items()}


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

    return store.create_run(c.device, c.runtime, batch_size=c.batch_size, seq_len=c.seq_len,
                            num_threads=c.num_threads, meter=meter_name, host=host_info(),
                            versions=software_versions(), config=settings)


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


def _pinning(c: ProfileConfig) -> dict[str, Any]:
    """``cpus`` for the measure call, only where pinning was asked for (a measure function that does not
    pin need not accept it)."""
    return {"cpus": list(c.cpus)} if c.cpus is not None else {}


def _measure_settings(c: ProfileConfig, meter: Any) -> dict[str, Any]:
    """The keyword arguments of one call of the measure function under ``c``."""
    return dict(runtime=c.runtime, batch_size=c.batch_size, seq_len=c.seq_len, num_threads=c.num_threads,
                meter=meter, target_rel_ci=c.target_rel_ci, time_cap_s=c.time_cap_s, timeout_s=c.timeout_s,
                vocab_size=c.vocab_size, **_pinning(c))


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
        result, raw = drift.correct(measure(spec, **_measure_settings(c, meter)))
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
            again = {row.arch_hash for row in store.measurements(run_id=run_id, status=None, include_superseded=True)
                     if row.superseded_by is not None}
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
            take_over: bool = False) -> ProfileSummary:
    """Profile this machine as ``config.device`` into the run store at ``store_path``.

    ``resume`` continues the newest unfinished run of these settings unless another live process holds
    it (RunLeasedError); ``take_over`` takes it from a process of another host the user knows is gone.
    """
    with RunStore(store_path) as store:
        return Profiler(config, store, out_dir, resume=resume, meter=meter, progress=progress,
                        take_over=take_over).run()
