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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexibert import DEFAULT_MAX_POSITIONS, ArchSpec, DesignSpace, model_hash, sample_architectures
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

    def __post_init__(self) -> None:
        if not self.device or "/" in self.device:
            raise ValueError(f"device name {self.device!r} must be a non-empty name without '/'")
        for name in ("batch_size", "seq_len", "num_threads", "seed_samples", "pool_size", "max_samples",
                     "patience", "cv_folds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
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


def cross_validated_mse(make_model: Callable[[], Any], features: np.ndarray, targets: np.ndarray,
                        folds: int, seed: int) -> float:
    """K-fold MSE of a fresh model on every fold (K capped by the number of rows)."""
    n = len(targets)
    folds = min(folds, n)
    if folds < 2 or n - math.ceil(n / folds) < _MIN_TRAINING_ROWS:
        return math.inf
    order = np.random.default_rng(seed).permutation(n)
    errors = np.empty(n)
    for fold in np.array_split(order, folds):
        train = np.setdiff1d(order, fold)
        model = make_model().fit(features[train], targets[train])
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


def _check_surrogate_choice(surrogate: str, features: str) -> None:
    from protran.surrogates import FEATURE_SETS, SURROGATE_NAMES

    if surrogate not in SURROGATE_NAMES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {', '.join(SURROGATE_NAMES)}")
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; choose one of {', '.join(FEATURE_SETS)}")


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

    def _measure(self, spec: ArchSpec, reason: str) -> None:
        c = self.config
        self._progress({"event": "measuring", "hash": model_hash(spec), "reason": reason, "spec": spec})
        result = self._measure_fn(spec, runtime=c.runtime, batch_size=c.batch_size, seq_len=c.seq_len,
                                  num_threads=c.num_threads, meter=self.meter, target_rel_ci=c.target_rel_ci,
                                  time_cap_s=c.time_cap_s, timeout_s=c.timeout_s,
                                  vocab_size=c.vocab_size, **_pinning(c))
        self.store.add_measurement(self.run_id, result)
        self._progress({"event": "measured", "result": result, "n_ok": len(self._ok_rows()),
                        "n_attempts": len(self._attempts()), "cv_mse": dict(self.cv_mse)})

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
        for measure in available_measures(rows):
            targets, _ = normalised_targets(rows, measure)

            def make():
                return make_surrogate(c.surrogate, seed=c.seed)
            self.cv_mse[measure] = cross_validated_mse(make, features, targets, c.cv_folds, c.seed)
            models[measure] = make().fit(features, targets)
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
        return self._finish(stop_reason)

    def _finish(self, stop_reason: str) -> ProfileSummary:
        rows = self._ok_rows()
        attempts = self._attempts()
        paths: dict[str, str] = {}
        measures = available_measures(rows)
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
            elapsed_s=time.monotonic() - self._started,
        )

    def save_surrogates(self, rows: list[Measurement]) -> dict[str, str]:
        """Fit on every successful row in real units and save one surrogate per measure, with the
        device's manifest (``protran.models``)."""
        from protran.models import FittedModels, Workload, fit_hardware_model

        c = self.config
        specs = [row.spec for row in rows]
        hardware = {name_of(measure): fit_hardware_model(
            specs, np.array([getattr(row, measure) for row in rows], dtype=float), batch_size=c.batch_size,
            seq_len=c.seq_len, surrogate=c.surrogate, features=c.features, seed=c.seed)
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
    with _marks_interrupted(store, run_id):
        report({"event": "started", "n_attempts": len(store.measurements(run_id=run_id, status=None))})
        for spec, arch_hash in zip(specs, hashes):
            if arch_hash in store.measured_hashes(run_id):
                continue
            report({"event": "measuring", "hash": arch_hash, "reason": purpose, "spec": spec})
            result = measure(spec, runtime=c.runtime, batch_size=c.batch_size, seq_len=c.seq_len,
                             num_threads=c.num_threads, meter=meter, target_rel_ci=c.target_rel_ci,
                             time_cap_s=c.time_cap_s, timeout_s=c.timeout_s, vocab_size=c.vocab_size,
                             **_pinning(c))
            store.add_measurement(run_id, result)
            attempts = store.measurements(run_id=run_id, status=None)
            report({"event": "measured", "result": result, "n_attempts": len(attempts),
                    "n_ok": sum(a.status in USABLE_STATUSES for a in attempts), "cv_mse": {}})
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
