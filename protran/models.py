"""Fitted models: what every prediction of edgetran goes through.

A device's *profile* is its measured rows and the workload (batch size, sequence length) they were
measured with (:class:`DeviceProfile`, read by :func:`load_profiles` from run stores and ProTran
``dataset.json`` files). A profile is one *target*: a device under one runtime. The same machine
profiled under several runtimes (``onnxruntime`` and ``onnxruntime-int8``, say) gives one target per
runtime, labelled ``device[runtime]`` (:func:`target_label`); a device profiled under one runtime keeps
its plain name. Every ``device`` below is such a label.

:func:`fit_models` fits, for one or many devices, one hardware surrogate per (device, measure) and,
when accuracy data is given, one accuracy surrogate; the result, :class:`FittedModels`, predicts the
mean and standard deviation of accuracy and every modelled measure.
It is the one prediction path behind ``protran predict``, ``protran pareto`` and boshcode's oracle.

- Hardware models: the benchmarked default surrogate and features (``protran.vocabulary``), fitted
  in the profile's units (seconds or joules per sequence, watts) on a log target; deterministic for
  a seed.
- Accuracy model: ``protran.AccuracyModel``, learnt from every source of accuracy records at once
  and predicting on the scale of one source and task, with a std that grows away from the scored
  architectures and a flag for extrapolated ones.
- Saved models: :meth:`FittedModels.save` writes one manifest per device (``<device>.surrogates.json``:
  workload, runtime, feature set, surrogate file per measure) beside the surrogates, as
  ``protran profile`` does; :func:`load_models` reads such a folder back (no pickle anywhere).

Two ways to ask, one computation: :meth:`FittedModels.predict_arrays` scores many architectures of one
device at once (searches), :meth:`FittedModels.predict` reports rows one architecture at a time, so a
reported value never depends on what else was asked with it.

:class:`Constraints` bound what the models predict (latency, energy, peak power) and exact properties
(parameters, layers); frontier search and co-design share it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexibert import ArchSpec, model_hash
from protran._files import FileKind, file_kind
from protran.vocabulary import DEFAULT_FEATURES, DEFAULT_SURROGATE, MEASURE_NAMES, MEASURES, field_of, name_of

# Fewer measured values than this and a measure gets no model (and no frontier) on that device.
MIN_ROWS_PER_MEASURE = 4
# Beside saved surrogates, one manifest per device says how to featurise architectures for them.
MANIFEST_SUFFIX = ".surrogates.json"
# The workload of ProTran dataset.json files, whose names carry the batch size (``_b<N>_``) only.
PROTRAN_SEQ_LEN = 128


# -- profiles -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceProfile:
    """The measured rows of one device and the workload they were measured with."""

    device: str
    rows: tuple[Any, ...]
    batch_size: int
    seq_len: int
    source: str
    runtime: str | None = None

    def values(self, measure: str) -> tuple[list[ArchSpec], np.ndarray]:
        """Architectures and positive measured values of one measure (rows without it left out)."""
        name = field_of(measure)
        kept = [row for row in self.rows if getattr(row, name) is not None and getattr(row, name) > 0]
        return [row.spec for row in kept], np.array([getattr(row, name) for row in kept], dtype=float)

    @property
    def measures(self) -> list[str]:
        """Measures (short names) with enough measured rows to be modelled."""
        return [m for m in MEASURE_NAMES if self.values(m)[1].size >= MIN_ROWS_PER_MEASURE]


def target_label(device: str, runtime: str | None) -> str:
    """The label of a device's profile under ``runtime`` where the device has profiles under several
    runtimes: ``device[runtime]`` (the plain name where the runtime is unknown)."""
    return device if runtime is None else f"{device}[{runtime}]"


def target_parts(label: str) -> tuple[str, str | None]:
    """(device, runtime) of a target label; the runtime is None for a plain device name."""
    if label.endswith("]") and "[" in label:
        device, _, runtime = label[:-1].rpartition("[")
        if device and runtime:
            return device, runtime
    return label, None


def load_profiles(paths: Sequence[str | Path]) -> list[DeviceProfile]:
    """One profile per target from ProTran ``dataset.json`` files (device = file stem, batch size from
    its ``_b<N>_`` part, 128-token sequences, runtime unknown) and run stores (one per device and
    runtime of the store). A device with profiles under several runtimes gets one target per runtime,
    labelled ``device[runtime]``; two profiles of one target are refused."""
    profiles: list[DeviceProfile] = []
    for path in map(Path, paths):
        kind = file_kind(path)
        if kind is FileKind.RUN_STORE:
            profiles += _store_profiles(path)
        elif kind is FileKind.PROTRAN_JSON:
            profiles.append(_json_profile(path))
        else:
            raise ValueError(f"{path}: not a hardware profile ({kind.value}); give a run store or a ProTran "
                             "dataset.json")
    if not profiles:
        raise ValueError("no profiles given")
    profiles = _label_targets(profiles)
    seen: dict[str, str] = {}
    for profile in profiles:
        if profile.device in seen:
            raise ValueError(f"device '{profile.device}' appears in both {seen[profile.device]} and {profile.source}; "
                             "give each (device, runtime) one profile")
        seen[profile.device] = profile.source
    return profiles


def _label_targets(profiles: list[DeviceProfile]) -> list[DeviceProfile]:
    """Profiles of one device under different runtimes become separate targets, ``device[runtime]``
    (rather than being merged, or refused as one device given twice); other labels are kept."""
    runtimes: dict[str, set[str | None]] = {}
    for profile in profiles:
        runtimes.setdefault(profile.device, set()).add(profile.runtime)
    return [dataclasses.replace(profile, device=target_label(profile.device, profile.runtime))
            if len(runtimes[profile.device]) > 1 else profile for profile in profiles]


def _json_profile(path: Path) -> DeviceProfile:
    from protran._store import batch_from_stem, load_rows

    rows = load_rows(path)
    if not rows:
        raise ValueError(f"{path}: the profile holds no measured rows")
    return DeviceProfile(path.stem, tuple(rows), batch_from_stem(path.stem) or 1, PROTRAN_SEQ_LEN, str(path))


def _store_profiles(path: Path) -> list[DeviceProfile]:
    from protran._store import RunStore, load_rows

    rows = load_rows(path)
    with RunStore(path, readonly=True) as store:
        runs = store.runs()
    profiles = []
    for device in sorted({row.device for row in rows}):
        device_runs = [run for run in runs if run.device == device]
        runtimes = sorted({run.runtime for run in device_runs})
        if len(runtimes) == 1:
            groups = [(runtimes[0], device_runs, tuple(row for row in rows if row.device == device))]
        else:  # one target per runtime: each runtime's runs and their rows
            groups = [(runtime, [run for run in device_runs if run.runtime == runtime],
                       tuple(row for run in device_runs if run.runtime == runtime
                             for row in load_rows(path, run_id=run.id))) for runtime in runtimes]
        for runtime, group_runs, group_rows in groups:
            if not group_rows:
                continue
            workloads = {(run.batch_size, run.seq_len) for run in group_runs}
            if len(workloads) > 1:
                raise ValueError(
                    f"{path}: device '{device}' was measured with several (batch size, sequence length) settings "
                    f"{sorted(workloads)}; export one run per device (`protran export --run`) and pass those files"
                )
            (batch_size, seq_len), = workloads
            profiles.append(DeviceProfile(device, group_rows, batch_size, seq_len, str(path), runtime))
    if not profiles:
        raise ValueError(f"{path}: the run store holds no successful measurements")
    return profiles


# -- hardware models ----------------------------------------------------------------------------------


def hardware_features(specs: Sequence[ArchSpec], batch_size: int, seq_len: int,
                      features: str = DEFAULT_FEATURES, runtime: str | None = None) -> np.ndarray:
    """The inputs of a hardware model: ``features`` of each architecture for the workload (and, for a
    compiled-graph feature set, the runtime), shape ``(len(specs), n_features)``."""
    from protran.surrogates import featurize

    return featurize(list(specs), features=features, batch_size=batch_size, seq_len=seq_len, runtime=runtime)


def fit_hardware_model(specs: Sequence[ArchSpec], values: np.ndarray, *, batch_size: int, seq_len: int,
                       surrogate: str = DEFAULT_SURROGATE, features: str = DEFAULT_FEATURES, seed: int = 0,
                       sample_weight: np.ndarray | None = None, runtime: str | None = None) -> Any:
    """One hardware surrogate fitted on measured ``values`` (real units, log target); ``sample_weight``
    (one per row, None = equal) is passed to the surrogate's ``fit``; ``runtime`` is needed by the
    compiled-graph feature sets only."""
    from protran.surrogates import make_surrogate

    model = make_surrogate(surrogate, seed=seed, log_target=True, features=features)
    return model.fit(hardware_features(specs, batch_size, seq_len, features, runtime),
                     np.asarray(values, dtype=float), sample_weight=sample_weight)


@dataclass(frozen=True)
class Workload:
    """How a device's hardware models featurise an architecture: the workload and the feature set."""

    batch_size: int
    seq_len: int
    features: str = DEFAULT_FEATURES
    runtime: str | None = None


# -- the fitted models --------------------------------------------------------------------------------


@dataclass
class FittedModels:
    """The fitted accuracy model and one hardware model per (device, measure).

    ``hardware[device][measure]`` is a surrogate (measure by short name); ``workloads[device]`` says how
    to featurise for it; ``profiles`` holds the measured rows where the models were fitted here (empty
    for models loaded from a folder).
    """

    accuracy_model: Any | None
    accuracy_specs: list[ArchSpec]
    accuracy_scores: np.ndarray
    hardware: dict[str, dict[str, Any]]
    profiles: dict[str, DeviceProfile]
    task: str
    seed: int
    workloads: dict[str, Workload] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for device, profile in self.profiles.items():
            self.workloads.setdefault(device, Workload(profile.batch_size, profile.seq_len, runtime=profile.runtime))

    @property
    def devices(self) -> list[str]:
        return list(self.hardware)

    def measures(self, device: str) -> list[str]:
        """Modelled measures of ``device`` (short names, in :data:`protran.vocabulary.MEASURES` order)."""
        return list(self._device_models(device))

    def _device_models(self, device: str) -> dict[str, Any]:
        if device not in self.hardware:
            raise KeyError(f"no profile for device '{device}'; known: {self.devices}")
        return self.hardware[device]

    def hardware_features(self, specs: Sequence[ArchSpec], device: str) -> np.ndarray:
        workload = self.workloads[device]
        return hardware_features(specs, workload.batch_size, workload.seq_len, workload.features, workload.runtime)

    def accuracy_features(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        from protran._accuracy_model import structure_features

        return structure_features(specs)

    def _accuracy(self, specs: Sequence[ArchSpec]) -> dict[str, np.ndarray]:
        model = self.accuracy_model
        if model is None:
            raise ValueError("no accuracy model: fit the models with accuracy data")
        features = self.accuracy_features(specs)
        mean, std = model.predict_features(features, return_std=True)
        return {"mean": np.asarray(mean, float), "std": np.asarray(std, float),
                "extrapolated": model.extrapolated_features(features)}

    def outside_profiled(self, specs: Sequence[ArchSpec], device: str) -> np.ndarray | None:
        """True, shape ``(len(specs),)``, for architectures whose size (depth, parameters, FLOPs) lies
        outside the range of the ones measured on ``device``: their hardware costs are extrapolated.
        None for models loaded from a folder, which keep no measured rows."""
        from protran._accuracy_model import SIZE_FEATURE_NAMES, STRUCTURE_FEATURE_NAMES, structure_features

        profile = self.profiles.get(device)
        if profile is None or not profile.rows:
            return None
        columns = [STRUCTURE_FEATURE_NAMES.index(name) for name in SIZE_FEATURE_NAMES]
        measured = structure_features([row.spec for row in profile.rows])[:, columns]
        asked = structure_features(list(specs))[:, columns]
        tolerance = 1e-9 * np.maximum(1.0, np.abs(measured.max(axis=0)))
        return ((asked < measured.min(axis=0) - tolerance) | (asked > measured.max(axis=0) + tolerance)).any(axis=1)

    def accuracy_bounds(self) -> tuple[float, float]:
        if self.accuracy_model is None:
            raise ValueError("no accuracy model: fit the models with accuracy data")
        return float(self.accuracy_scores.min()), float(self.accuracy_scores.max())

    def measure_bounds(self, device: str, measure: str) -> tuple[float, float]:
        """Smallest and largest measured value of ``measure`` on ``device``."""
        values = self.profiles[device].values(measure)[1]
        return float(values.min()), float(values.max())

    def predict_arrays(self, specs: Sequence[ArchSpec], device: str) -> dict[str, dict[str, np.ndarray] | None]:
        """Mean and std, shape ``(len(specs),)``, of accuracy and every measure for many architectures of
        one device at once: ``{"accuracy" | field: {"mean", "std"} | None}``, None for a measure the
        device has no model of (and for accuracy without an accuracy model); accuracy also holds
        ``"extrapolated"`` (bool), true outside the range of the scored architectures."""
        specs = list(specs)
        models = self._device_models(device)
        result: dict[str, dict[str, np.ndarray] | None] = {"accuracy": None}
        if self.accuracy_model is not None:
            result["accuracy"] = self._accuracy(specs)
        features = self.hardware_features(specs, device)
        for m in MEASURES:
            model = models.get(m.name)
            if model is None:
                result[m.field] = None
                continue
            mean, std = model.predict(features, return_std=True)
            result[m.field] = {"mean": np.asarray(mean, float), "std": np.asarray(std, float)}
        return result

    def predict(self, specs: Sequence[ArchSpec], device: str | None = None) -> list[dict[str, Any]]:
        """Predicted mean and std of accuracy and every modelled measure.

        One row per (architecture, device) (every device unless ``device`` is given), each
        ``{"hash", "model_dict", "device", "predicted": {"accuracy": {"mean", "std", "extrapolated"},
        "latency_s": {...}, "energy_j": {...}, "peak_power_w": {...}}}`` (plus ``"runtime"`` where it
        is known). Every value depends on its own architecture only, never on what else is predicted
        with it: hardware models are asked one architecture at a time (a matrix product over several
        rows may round differently), the tree ensemble predicts each row on its own anyway (tested).
        """
        specs = list(specs)
        devices = [device] if device is not None else self.devices
        if not specs:
            return []
        accuracy = self._accuracy(specs) if self.accuracy_model is not None else None
        cache = self.__dict__.setdefault("_hardware_predictions", {})  # frontiers of a device share points
        rows = []
        for i, spec in enumerate(specs):
            arch_hash, model_dict = _hash(spec), spec.to_model_dict()
            for name in devices:
                if (spec, name) not in cache:
                    features = self.hardware_features([spec], name)
                    cache[spec, name] = {field_of(measure): _one(model, features)
                                         for measure, model in self._device_models(name).items()}
                predicted = {} if accuracy is None else {"accuracy": {
                    "mean": float(accuracy["mean"][i]), "std": float(accuracy["std"][i]),
                    "extrapolated": bool(accuracy["extrapolated"][i])}}
                predicted.update(copy.deepcopy(cache[spec, name]))
                row: dict[str, Any] = {"hash": arch_hash, "model_dict": model_dict, "device": name}
                if self.workloads[name].runtime is not None:
                    row["runtime"] = self.workloads[name].runtime
                rows.append({**row, "predicted": predicted})
        return rows

    def save(self, folder: str | Path, surrogate: str = DEFAULT_SURROGATE,
             extra: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, str]]:
        """Save every device's hardware models under ``folder`` with one manifest per device; returns
        ``{device: {field: path}}``. ``extra[device]`` adds entries to that device's manifest."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        saved: dict[str, dict[str, str]] = {}
        for device, models in self.hardware.items():
            saved[device] = {}
            for measure, model in models.items():
                path = folder / f"{device}_{field_of(measure)}"
                model.save(path)
                saved[device][field_of(measure)] = str(path)
            workload = self.workloads[device]
            manifest = {"device": device, "runtime": workload.runtime, "batch_size": workload.batch_size,
                        "seq_len": workload.seq_len, **(extra or {}).get(device, {}),
                        "features": workload.features, "surrogate": surrogate,
                        "surrogates": {f: Path(p).name for f, p in saved[device].items()}}
            (folder / f"{device}{MANIFEST_SUFFIX}").write_text(json.dumps(manifest, indent=2))
        return saved


def _one(model: Any, features: np.ndarray) -> dict[str, float]:
    mean, std = model.predict(features, return_std=True)
    return {"mean": float(mean[0]), "std": float(std[0])}


@functools.lru_cache(maxsize=1 << 16)
def _hash(spec: ArchSpec) -> str:
    # Frontiers of one device share many architectures; the hash takes milliseconds.
    return model_hash(spec)


def fit_models(profiles: Sequence[DeviceProfile], accuracy: Sequence[Any] | None, task: str | None = None,
               seed: int = 0, accuracy_source: str | None = None,
               surrogate: str = DEFAULT_SURROGATE) -> FittedModels:
    """Fit the multi-source accuracy model on the scored architectures of ``task`` (skipped when
    ``accuracy`` is None; predictions on the scale of ``accuracy_source``, default the source with
    the most scored architectures) and one hardware model per device and measure (the ``surrogate``
    of :data:`~protran.surrogates.SURROGATE_NAMES`, default ``additive``); the same inputs and seed
    always give the same models."""
    from protran._accuracy import DEFAULT_TASK
    from protran._accuracy_model import fit_accuracy_model

    task = task or DEFAULT_TASK
    accuracy_model, scores = None, np.zeros(0)
    specs: list[ArchSpec] = []
    if accuracy is not None:
        accuracy_model = fit_accuracy_model(accuracy, task, accuracy_source, seed)
        specs, scores = accuracy_model.target_specs_, accuracy_model.target_scores_
    hardware: dict[str, dict[str, Any]] = {}
    for profile in profiles:
        hardware[profile.device] = {}
        for measure in profile.measures:
            measured_specs, values = profile.values(measure)
            hardware[profile.device][measure] = fit_hardware_model(
                measured_specs, values, batch_size=profile.batch_size, seq_len=profile.seq_len, seed=seed,
                surrogate=surrogate)
    return FittedModels(accuracy_model, specs, scores, hardware, {p.device: p for p in profiles}, task, seed)


def find_manifests(folder: str | Path) -> list[Path]:
    """The device manifests of a folder of saved models, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of saved surrogates")
    manifests = sorted(folder.glob(f"*{MANIFEST_SUFFIX}"))
    if not manifests:
        raise ValueError(
            f"{folder}: no saved surrogates (*{MANIFEST_SUFFIX}); run `protran profile --out {folder}` first"
        )
    return manifests


def load_models(folder: str | Path) -> FittedModels:
    """The hardware models saved in ``folder`` (by ``protran profile`` or :meth:`FittedModels.save`)."""
    from protran.surrogates import load_surrogate

    hardware: dict[str, dict[str, Any]] = {}
    workloads: dict[str, Workload] = {}
    for path in find_manifests(folder):
        try:
            manifest = json.loads(path.read_text())
            device = manifest["device"]
            workloads[device] = Workload(int(manifest["batch_size"]), int(manifest["seq_len"]),
                                         manifest["features"], manifest.get("runtime"))
            files = manifest["surrogates"]
            if not isinstance(files, dict) or not all(isinstance(name, str) for name in files.values()):
                raise ValueError("'surrogates' must map each measure to a folder name")
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, RecursionError) as error:
            raise ValueError(f"{path}: not a surrogate manifest ({error})") from None
        except KeyError as missing:
            raise ValueError(f"{path}: the manifest lacks {missing}; save the models again with "
                             "`protran profile --out`") from None
        hardware[device] = {name_of(f): load_surrogate(path.parent / name) for f, name in files.items()}
    return FittedModels(None, [], np.zeros(0), hardware, {}, "", 0, workloads)


# -- constraints --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constraints:
    """Upper bounds a result must meet; None means unbounded. Measures are predicted means.

    Frontier search applies every bound; co-design applies the measure bounds (a pair that breaks one
    scores its lowest value).
    """

    max_latency_s: float | None = None
    max_energy_j: float | None = None
    max_peak_power_w: float | None = None
    max_params: int | None = None
    max_layers: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_latency_s", "max_energy_j", "max_peak_power_w", "max_params", "max_layers"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"constraint {name} must be a positive number, got {value!r}")

    def measure_limits(self) -> dict[str, float]:
        """Bounds on measures, keyed by short name (``latency``)."""
        return {m.name: float(getattr(self, f"max_{m.field}")) for m in MEASURES
                if getattr(self, f"max_{m.field}") is not None}

    def limits(self) -> dict[str, float]:
        """Bounds on measures, keyed by row field (``latency_s``)."""
        return {field_of(name): limit for name, limit in self.measure_limits().items()}

    def violations(self, params: np.ndarray, layers: np.ndarray, measures: dict[str, np.ndarray]) -> np.ndarray:
        """Constraint values, one column per active bound; <= 0 where met (relative excess otherwise).
        ``measures`` is keyed by short name."""
        columns = [measures[m] / limit - 1.0 for m, limit in self.measure_limits().items()]
        if self.max_params is not None:
            columns.append(params / float(self.max_params) - 1.0)
        if self.max_layers is not None:
            columns.append(layers / float(self.max_layers) - 1.0)
        return np.column_stack(columns) if columns else np.empty((len(params), 0))

    def violated(self, means: dict[str, np.ndarray | None]) -> np.ndarray:
        """Which rows break a measure bound; ``means`` is keyed by row field and holds ``accuracy``."""
        accuracy = means["accuracy"]
        if accuracy is None:
            raise ValueError("the means hold no accuracy; every prediction of a pair has one")
        broken = np.zeros(len(accuracy), dtype=np.bool_)
        for measure, limit in self.limits().items():
            values = means.get(measure)
            if values is None:
                raise ValueError(f"a constraint bounds {measure}, which this device does not give")
            broken |= ~(np.asarray(values) <= limit)
        return broken

    def check_measures(self, available: Sequence[str], device: str) -> None:
        """Every bounded measure must be among ``available`` (short names) on ``device``."""
        missing = [m for m in self.measure_limits() if m not in available]
        if missing:
            unit = field_of(missing[0]).replace("_", "-")
            raise ValueError(f"device '{device}' has no {', '.join(missing)} measurements to apply the "
                             f"--max-{unit} constraint to")

    def describe(self) -> str:
        parts = [f"{name} <= {value:g}" for name, value in vars(self).items() if value is not None]
        return ", ".join(parts) or "none"
