"""Predicted Pareto frontiers of accuracy against latency, energy or peak power, per device.

For every device with a hardware profile (a ProTran ``dataset.json`` or a run store), the frontier is
the set of architectures of the whole design space that no other architecture beats on both
predicted accuracy (higher is better) and the predicted measure (lower is better).

Search (:func:`search_frontiers`): NSGA-II over the 37-integer embedding, seeded, with Deb's
constraint domination and pymoo's non-dominated sorting and crowding distance, in a numpy loop
(pymoo's own algorithm objects cost more per individual than the surrogates do). A device's measures
are searched together: one population per measure, all sharing every evaluation. Variation swaps
whole layers between parents and applies small semantic moves (one head's operation, the head
count, one feed-forward width or depth, a layer's width, two layers more or fewer); every candidate
is repaired into a valid architecture (indices clipped, slots past the layer count zeroed). The
start holds the device's measured architectures, the scored ones, a seeded random sample, and the
frontiers of predicted accuracy against parameters, FLOPs and activation memory together with the
most accurate architecture found (searched once and shared by every device: every hardware cost
grows with model size, and the costly end of every frontier is the most accurate architecture).
The frontier is taken from every architecture evaluated, not only the last population.

Models (fitted by :func:`fit_models`, deterministic for a seed):

- accuracy: :func:`protran._accuracy.make_accuracy_surrogate` on the scored architectures of one task;
- hardware: the benchmarked default surrogate and features of ``protran._replay`` (a robust additive
  cost model on cost features), one per device and measure, fitted on the measured rows in the
  profile's units (seconds or joules per sequence, watts).

Reported values are predictions for one architecture at a time (:meth:`FrontierModels.predict`), so
``protran predict`` given the same inputs reproduces them exactly; the search itself scores whole
populations at once.

Hypervolume: objectives are normalised per device and measure with bounds fixed by the data, never
by the search: accuracy as ``(a_max - a) / (a_max - a_min)`` over the scores the accuracy model was
fitted on, the measure as ``(log v - log v_min) / (log v_max - log v_min)`` over the device's measured
values. The reference point is ``(1.1, 1.1)`` in those units (:data:`REFERENCE_POINT`); points beyond
it add nothing. The same rule holds for every device, measure and search length.

Constraints (:class:`Constraints`) bound predicted means (latency, energy, peak power) and exact
properties (parameters, layers); they enter NSGA-II as inequality constraints, and every frontier
point satisfies them.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from flexibert import ArchSpec, DesignSpace, InvalidArchitectureError, decode, embed, model_hash
from protran._accuracy import DEFAULT_TASK, accuracy_features, accuracy_training_set, make_accuracy_surrogate
from protran._store import AccuracyRecord, ProfileRow, RunStore, _batch_from_stem, load_rows

MEASURES = ("latency", "energy", "peak_power")
MEASURE_FIELDS = {"latency": "latency_s", "energy": "energy_j", "peak_power": "peak_power_w"}
MEASURE_UNITS = {"latency": "s", "energy": "J", "peak_power": "W"}
REFERENCE_POINT = (1.1, 1.1)
# Fewer measured values than this and a measure gets no model (and no frontier) on that device.
MIN_ROWS_PER_MEASURE = 4
_SQLITE_MAGIC = b"SQLite format 3\x00"

ProgressCallback = Callable[[dict[str, Any]], None]


# -- profiles -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceProfile:
    """The measured rows of one device and the workload they were measured with."""

    device: str
    rows: tuple[ProfileRow, ...]
    batch_size: int
    seq_len: int
    source: str

    def values(self, measure: str) -> tuple[list[ArchSpec], np.ndarray]:
        """Architectures and positive measured values of one measure (rows without it left out)."""
        name = MEASURE_FIELDS[measure]
        kept = [row for row in self.rows if getattr(row, name) is not None and getattr(row, name) > 0]
        return [row.spec for row in kept], np.array([getattr(row, name) for row in kept], dtype=float)

    @property
    def measures(self) -> list[str]:
        """Measures with enough measured rows to be modelled."""
        return [m for m in MEASURES if self.values(m)[1].size >= MIN_ROWS_PER_MEASURE]


def load_profiles(paths: Sequence[str | Path]) -> list[DeviceProfile]:
    """One profile per device from ProTran ``dataset.json`` files (device = file stem, batch size from
    its ``_b<N>_`` part, 128-token sequences) and run stores (one per device of the store)."""
    profiles: list[DeviceProfile] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"no such profile file: {path}")
        with open(path, "rb") as handle:
            is_store = handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
        profiles += _store_profiles(path) if is_store else [_json_profile(path)]
    seen: dict[str, str] = {}
    for profile in profiles:
        if profile.device in seen:
            raise ValueError(f"device '{profile.device}' appears in both {seen[profile.device]} and {profile.source}; "
                             "give each device one profile")
        seen[profile.device] = profile.source
    if not profiles:
        raise ValueError("no profiles given")
    return profiles


def _json_profile(path: Path) -> DeviceProfile:
    rows = load_rows(path)
    if not rows:
        raise ValueError(f"{path}: the profile holds no measured rows")
    return DeviceProfile(path.stem, tuple(rows), _batch_from_stem(path.stem) or 1, 128, str(path))


def _store_profiles(path: Path) -> list[DeviceProfile]:
    rows = load_rows(path)
    with RunStore(path, readonly=True) as store:
        runs = store.runs()
    profiles = []
    for device in sorted({row.device for row in rows}):
        workloads = {(run.batch_size, run.seq_len) for run in runs if run.device == device}
        if len(workloads) > 1:
            raise ValueError(
                f"{path}: device '{device}' was measured with several (batch size, sequence length) settings "
                f"{sorted(workloads)}; export one run per device (`protran export --run`) and pass those files"
            )
        (batch_size, seq_len), = workloads
        device_rows = tuple(row for row in rows if row.device == device)
        profiles.append(DeviceProfile(device, device_rows, batch_size, seq_len, str(path)))
    if not profiles:
        raise ValueError(f"{path}: the run store holds no successful measurements")
    return profiles


# -- models -------------------------------------------------------------------------------------------


@dataclass
class FrontierModels:
    """The fitted accuracy model and one hardware model per (device, measure)."""

    accuracy_model: Any | None
    accuracy_specs: list[ArchSpec]
    accuracy_scores: np.ndarray
    hardware: dict[str, dict[str, Any]]
    profiles: dict[str, DeviceProfile]
    task: str
    seed: int

    @property
    def devices(self) -> list[str]:
        return list(self.profiles)

    def measures(self, device: str) -> list[str]:
        return list(self._device_models(device))

    def _device_models(self, device: str) -> dict[str, Any]:
        if device not in self.hardware:
            raise KeyError(f"no profile for device '{device}'; known: {self.devices}")
        return self.hardware[device]

    def hardware_features(self, specs: Sequence[ArchSpec], device: str) -> np.ndarray:
        from protran._replay import DEFAULT_FEATURES
        from protran.surrogates import featurize

        profile = self.profiles[device]
        return featurize(list(specs), features=DEFAULT_FEATURES, batch_size=profile.batch_size,
                         seq_len=profile.seq_len)

    def accuracy_bounds(self) -> tuple[float, float]:
        if self.accuracy_model is None:
            raise ValueError("no accuracy model: fit the models with accuracy data")
        return float(self.accuracy_scores.min()), float(self.accuracy_scores.max())

    def measure_bounds(self, device: str, measure: str) -> tuple[float, float]:
        values = self.profiles[device].values(measure)[1]
        return float(values.min()), float(values.max())

    def predict(self, specs: Sequence[ArchSpec], device: str | None = None) -> list[dict[str, Any]]:
        """Predicted mean and std of accuracy and every modelled measure.

        One row per (architecture, device) (every device unless ``device`` is given), each
        ``{"hash", "model_dict", "device", "predicted": {"accuracy": {"mean", "std"},
        "latency_s": {...}, "energy_j": {...}, "peak_power_w": {...}}}``. Every value depends on its
        own architecture only, never on what else is predicted with it: hardware models are asked
        one architecture at a time (a matrix product over several rows may round differently), the
        tree ensemble predicts each row on its own anyway (tested).
        """
        specs = list(specs)
        devices = [device] if device is not None else self.devices
        if not specs:
            return []
        if self.accuracy_model is not None:
            mean, std = self.accuracy_model.predict(accuracy_features(specs), return_std=True)
        cache = self.__dict__.setdefault("_hardware_predictions", {})  # frontiers of a device share points
        rows = []
        for i, spec in enumerate(specs):
            arch_hash, model_dict = _hash(spec), spec.to_model_dict()
            for name in devices:
                if (spec, name) not in cache:
                    features = self.hardware_features([spec], name)
                    cache[spec, name] = {MEASURE_FIELDS[measure]: self._one(model, features)
                                         for measure, model in self._device_models(name).items()}
                predicted = {} if self.accuracy_model is None else {
                    "accuracy": {"mean": float(mean[i]), "std": float(std[i])}}
                predicted.update(copy.deepcopy(cache[spec, name]))
                rows.append({"hash": arch_hash, "model_dict": model_dict, "device": name, "predicted": predicted})
        return rows

    @staticmethod
    def _one(model: Any, features: np.ndarray) -> dict[str, float]:
        mean, std = model.predict(features, return_std=True)
        return {"mean": float(mean[0]), "std": float(std[0])}


def fit_models(profiles: Sequence[DeviceProfile], accuracy: Sequence[AccuracyRecord] | None, task: str = DEFAULT_TASK,
               seed: int = 0) -> FrontierModels:
    """Fit the accuracy model on the scored architectures of ``task`` (skipped when ``accuracy`` is
    None) and one hardware model per device and measure; the same inputs and seed always give the
    same models."""
    from protran._replay import DEFAULT_FEATURES, DEFAULT_SURROGATE
    from protran.surrogates import featurize, make_surrogate

    accuracy_model, specs, scores = None, [], np.zeros(0)
    if accuracy is not None:
        specs, scores = accuracy_training_set(accuracy, task)
        if len(specs) < 3:
            tasks = sorted({record.task for record in accuracy if record.score is not None})
            raise ValueError(f"the accuracy data holds {len(specs)} scored architecture(s) for task '{task}' (tasks "
                             f"with scores: {', '.join(tasks) or 'none'}); an accuracy model needs at least 3")
        if np.ptp(scores) == 0:
            raise ValueError(f"every scored architecture of task '{task}' has the same score; nothing to rank")
        accuracy_model = make_accuracy_surrogate(seed).fit(accuracy_features(specs), scores)
    hardware: dict[str, dict[str, Any]] = {}
    for profile in profiles:
        hardware[profile.device] = {}
        for measure in profile.measures:
            measured_specs, values = profile.values(measure)
            features = featurize(measured_specs, features=DEFAULT_FEATURES, batch_size=profile.batch_size,
                                 seq_len=profile.seq_len)
            model = make_surrogate(DEFAULT_SURROGATE, seed=seed, log_target=True, features=DEFAULT_FEATURES)
            hardware[profile.device][measure] = model.fit(features, values)
    return FrontierModels(accuracy_model, specs, scores, hardware, {p.device: p for p in profiles}, task, seed)


# -- constraints --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constraints:
    """Upper bounds a frontier point must meet; None means unbounded. Measures are predicted means."""

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
        limits = {"latency": self.max_latency_s, "energy": self.max_energy_j, "peak_power": self.max_peak_power_w}
        return {measure: float(limit) for measure, limit in limits.items() if limit is not None}

    def violations(self, params: np.ndarray, layers: np.ndarray, measures: dict[str, np.ndarray]) -> np.ndarray:
        """Constraint values, one column per active bound; <= 0 where met (relative excess otherwise)."""
        columns = [measures[m] / limit - 1.0 for m, limit in self.measure_limits().items()]
        if self.max_params is not None:
            columns.append(params / float(self.max_params) - 1.0)
        if self.max_layers is not None:
            columns.append(layers / float(self.max_layers) - 1.0)
        return np.column_stack(columns) if columns else np.empty((len(params), 0))

    def check_measures(self, available: Sequence[str], device: str) -> None:
        missing = [m for m in self.measure_limits() if m not in available]
        if missing:
            raise ValueError(f"device '{device}' has no {', '.join(missing)} measurements to apply the "
                             f"--max-{missing[0].replace('_', '-')} constraint to")


# -- frontier -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontierPoint:
    """One architecture on a frontier with its predicted accuracy and measure (mean and std)."""

    spec: ArchSpec
    arch_hash: str
    accuracy: float
    accuracy_std: float
    value: float
    value_std: float

    def to_dict(self) -> dict[str, Any]:
        return {"model_dict": self.spec.to_model_dict(), "hash": self.arch_hash, "accuracy": self.accuracy,
                "accuracy_std": self.accuracy_std, "value": self.value, "value_std": self.value_std}


@dataclass(frozen=True)
class Frontier:
    """The predicted Pareto frontier of one device and measure, cheapest point first."""

    device: str
    measure: str
    hypervolume: float
    points: tuple[FrontierPoint, ...]
    evaluations: int = 0
    search_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "measure": self.measure, "hypervolume": self.hypervolume,
                "points": [point.to_dict() for point in self.points]}


def non_dominated(accuracy: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of the points that no other point beats (higher accuracy, lower value), one per
    distinct (accuracy, value) pair, sorted by increasing value."""
    accuracy, value = np.asarray(accuracy, dtype=float), np.asarray(value, dtype=float)
    order = np.lexsort((-accuracy, value))  # by value, then best accuracy first
    ordered = accuracy[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(ordered)[:-1]])
    return order[ordered > best_before].astype(np.int64)


def normalised_objectives(accuracy: np.ndarray, value: np.ndarray, accuracy_bounds: tuple[float, float],
                          value_bounds: tuple[float, float]) -> np.ndarray:
    """Both objectives to minimise, in the units of the hypervolume (module docstring)."""
    a_min, a_max = accuracy_bounds
    v_min, v_max = value_bounds
    log_span = math.log(v_max) - math.log(v_min) if v_max > v_min else 1.0
    return np.column_stack([
        (a_max - np.asarray(accuracy, dtype=float)) / (a_max - a_min),
        (np.log(np.asarray(value, dtype=float)) - math.log(v_min)) / log_span,
    ])


def hypervolume(accuracy: np.ndarray, value: np.ndarray, accuracy_bounds: tuple[float, float],
                value_bounds: tuple[float, float]) -> float:
    """Hypervolume of the points in normalised units against :data:`REFERENCE_POINT` (pymoo)."""
    from pymoo.indicators.hv import HV

    if len(accuracy) == 0:
        return 0.0
    objectives = normalised_objectives(accuracy, value, accuracy_bounds, value_bounds)
    return float(HV(ref_point=np.array(REFERENCE_POINT))(objectives))


# -- search -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSettings:
    """NSGA-II settings: population, generations, seed, and how many random architectures join the start."""

    pop_size: int = 300
    n_generations: int = 40
    seed: int = 0
    n_initial_samples: int = 64

    def __post_init__(self) -> None:
        for name in ("pop_size", "n_generations", "n_initial_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")


class _AnalyticTable:
    """The feature sets of ``protran.surrogates.featurize`` for many embeddings at once.

    ``featurize`` walks every head of every layer in Python, about a millisecond per architecture; a
    search scores thousands. Every per-layer term splits into a part that depends on the layer's
    width and attention multiset and a part that depends on its width and feed-forward stack, so both
    are tabulated once per design space and workload (heads through flexibert's own per-head
    formulas) and an architecture's features become array lookups and sums. Integers are summed
    exactly, so the features equal ``featurize``'s bit for bit (tested).
    """

    def __init__(self, space: DesignSpace, batch_size: int, seq_len: int) -> None:
        self.space = space
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.hidden = np.array(space.hidden_size, dtype=np.int64)
        ops = space.operation_types
        self.counts = np.array([[heads.count(op) for op in ops] for heads in space.attention_ops], dtype=np.int64)
        self.n_heads = self.counts.sum(axis=1)
        self.kernels = np.array([int(op[2:]) if op.startswith("c_") else 0 for op in ops], dtype=np.int64)
        self._tabulate_attention()
        self._tabulate_feed_forward()

    def _tabulate_attention(self) -> None:
        from flexibert import LayerSpec
        from flexibert._features import _group_elements, _head_macs, _head_parameters

        ops, B, S = self.space.operation_types, self.batch_size, self.seq_len
        tokens = B * S
        shape = (len(self.hidden), len(self.counts))
        self.att_params, self.att_macs, self.att_peak = (np.zeros(shape, dtype=np.int64) for _ in range(3))
        is_sa = np.array([op.startswith("sa_") for op in ops])
        for hi, h in enumerate(self.space.hidden_size):
            for n in self.space.attention_heads:
                d = h // n
                rows = self.n_heads == n
                if not rows.any():
                    continue
                counts = self.counts[rows]
                per_head_params = np.array([_head_parameters(op, h, d) for op in ops], dtype=np.int64)
                per_head_macs = np.array([_head_macs(op, h, d, B, S) for op in ops], dtype=np.int64)
                # attention heads, their output projection (n·d·h + h) and the two LayerNorms (4·h)
                self.att_params[hi, rows] = counts @ per_head_params + n * d * h + h + 4 * h
                self.att_macs[hi, rows] = counts @ per_head_macs + tokens * n * d * h
                layer = LayerSpec(h, (ops[0],) * n, (self.space.feed_forward_dims[0],))  # carries h and d
                group_peak = np.zeros(int(rows.sum()), dtype=np.int64)
                groups = [(np.flatnonzero(is_sa), "sa_sdp")] + [
                    (np.array([k]), op) for k, op in enumerate(ops) if not is_sa[k]
                ]
                for columns, op in groups:  # self-attention heads form one group, other types one each
                    in_group = counts[:, columns].sum(axis=1)
                    by_count = np.array([_group_elements(op, c, layer, B, S) if c else 0 for c in range(n + 1)],
                                        dtype=np.int64)
                    group_peak = np.maximum(group_peak, by_count[in_group])
                self.att_peak[hi, rows] = 2 * tokens * n * d + group_peak

    def _tabulate_feed_forward(self) -> None:
        tokens = self.batch_size * self.seq_len
        stacks = self.space.feed_forward_ops
        shape = (len(self.hidden), len(stacks))
        self.ff_params, self.ff_macs, self.ff_peak = (np.zeros(shape, dtype=np.int64) for _ in range(3))
        for hi, h in enumerate(self.space.hidden_size):
            for fi, stack in enumerate(stacks):
                widths = (h, *stack, h)
                links = list(zip(widths[:-1], widths[1:]))
                self.ff_params[hi, fi] = sum(a * b + b for a, b in links)
                self.ff_macs[hi, fi] = sum(tokens * a * b for a, b in links)
                # input + output of a Linear, plus the GELU output for all but the last Linear
                widest = max(a + b + (b if i < len(links) - 1 else 0) for i, (a, b) in enumerate(links))
                self.ff_peak[hi, fi] = tokens * h + tokens * widest
        self.ff_width = np.array([sum(stack) for stack in stacks], dtype=np.int64)
        self.ff_depth = np.array([len(stack) for stack in stacks], dtype=np.int64)

    def columns(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Every analytic quantity of the architectures whose valid embeddings are the rows of ``X``."""
        from flexibert._spec import DEFAULT_MAX_POSITIONS, DEFAULT_VOCAB_SIZE

        X = np.asarray(X, dtype=np.int64)
        B, S = self.batch_size, self.seq_len
        tokens = B * S
        layers = np.array(self.space.encoder_layers, dtype=np.int64)[X[:, 0]]
        used = np.arange(self.space.max_layers)[None, :] < layers[:, None]
        h_idx, f_idx, a_idx = X[:, 1::3], X[:, 2::3], X[:, 3::3]
        hidden = np.where(used, self.hidden[h_idx], 0)

        def layer_sum(table: np.ndarray) -> np.ndarray:
            return np.where(used, table, 0).sum(axis=1)

        h0 = hidden[:, 0]
        a, b = hidden[:, :-1], hidden[:, 1:]
        projected = used[:, 1:] & (a != b)
        layer_peak = hidden * tokens + np.maximum(self.att_peak[h_idx, a_idx], self.ff_peak[h_idx, f_idx])
        stages = np.column_stack([
            2 * tokens * h0 + S * h0,
            np.where(used, layer_peak, 0).max(axis=1),
            np.where(projected, tokens * (a + b), 0).max(axis=1),
        ])
        counts = np.where(used[:, :, None], self.counts[a_idx], 0).sum(axis=1)  # (rows, op types)
        ops = self.space.operation_types
        conv = self.kernels > 0
        return {
            "params": (DEFAULT_VOCAB_SIZE + DEFAULT_MAX_POSITIONS + 2) * h0
            + layer_sum(self.att_params[h_idx, a_idx] + self.ff_params[h_idx, f_idx])
            + np.where(projected, a * b + b, 0).sum(axis=1),
            "flops": 2 * (layer_sum(self.att_macs[h_idx, a_idx] + self.ff_macs[h_idx, f_idx])
                          + np.where(projected, tokens * a * b, 0).sum(axis=1)),
            "activation_bytes": 4 * stages.max(axis=1),
            "num_layers": layers,
            "hidden_sum": hidden.sum(axis=1),
            "max_hidden_size": hidden.max(axis=1),
            "total_heads": counts.sum(axis=1),
            **{f"heads_{op}": counts[:, k] for k, op in enumerate(ops) if not conv[k]},
            "heads_conv": counts[:, conv].sum(axis=1),
            "kernel_sum": counts @ self.kernels,
            "total_ff_width": layer_sum(self.ff_width[f_idx]),
            "ff_depth_sum": layer_sum(self.ff_depth[f_idx]),
        }

    def featurize(self, X: np.ndarray, features: str, columns: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The ``features`` matrix of ``protran.surrogates.featurize`` for the embeddings ``X``
        (``columns``: this table's :meth:`columns` of ``X``, when already computed)."""
        c = self.columns(X) if columns is None else columns
        if features == "costs":
            return np.column_stack([
                c["params"] / 1e6, c["flops"] / 1e9, c["activation_bytes"] / 1e6, c["num_layers"],
                c["total_heads"], c["hidden_sum"],
            ]).astype(float)
        blocks = []
        if features in ("embedding", "both"):
            blocks.append(np.asarray(X, dtype=float))
        if features in ("analytic", "both"):
            layers = c["num_layers"]
            zero = np.zeros(len(layers), dtype=np.int64)
            mean_kernel = np.where(c["heads_conv"] > 0, c["kernel_sum"] / np.maximum(c["heads_conv"], 1), 0.0)
            blocks.append(np.column_stack([
                _log10(c["params"]), _log10(c["flops"]), _log10(c["activation_bytes"]), layers,
                c["hidden_sum"] / layers, c["max_hidden_size"], c["total_heads"],
                *(c.get(f"heads_{op}", zero) for op in ("sa_sdp", "sa_wma", "l_dft", "l_dct")),
                c["heads_conv"], mean_kernel, c["total_ff_width"], c["ff_depth_sum"] / layers,
            ]).astype(float))
        if not blocks:
            raise ValueError(f"unknown feature set {features!r}")
        return np.hstack(blocks)


def _log10(values: np.ndarray) -> np.ndarray:
    # math.log10, as the analytic features use; numpy's may differ in the last bit.
    return np.array([math.log10(value) for value in values.tolist()], dtype=float)


@functools.lru_cache(maxsize=16)
def _analytic_table(space: DesignSpace, batch_size: int, seq_len: int) -> _AnalyticTable:
    return _AnalyticTable(space, batch_size, seq_len)


class _Evaluator:
    """Scores valid embeddings on one device: predicted accuracy, parameters, layers and measures."""

    def __init__(self, models: FrontierModels, device: str, space: DesignSpace) -> None:
        from protran._accuracy import ACCURACY_BATCH_SIZE, ACCURACY_SEQ_LEN

        profile = models.profiles[device]
        self.accuracy_table = _analytic_table(space, ACCURACY_BATCH_SIZE, ACCURACY_SEQ_LEN)
        self.device_table = _analytic_table(space, profile.batch_size, profile.seq_len)
        self.models = models
        self.device = device
        self.space = space
        self.measures = models.measures(device)

    def evaluate(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(accuracy, params, layers, {measure: mean}) for each row of ``X``."""
        from protran._accuracy import ACCURACY_FEATURES
        from protran._replay import DEFAULT_FEATURES

        X = np.asarray(X, dtype=np.int64)
        columns = self.accuracy_table.columns(X)
        accuracy = self.models.accuracy_model.predict(self.accuracy_table.featurize(X, ACCURACY_FEATURES, columns))
        features = self.device_table.featurize(X, DEFAULT_FEATURES)
        measures = {m: self.models.hardware[self.device][m].predict(features) for m in self.measures}
        return accuracy, columns["params"], columns["num_layers"], measures


def _initial_embeddings(models: FrontierModels, device: str, space: DesignSpace,
                        settings: SearchSettings) -> np.ndarray:
    """Start from what is known (measured and scored architectures), a seeded random sample, and
    the device-independent frontier of predicted accuracy against parameters."""
    rows = []
    for spec in [row.spec for row in models.profiles[device].rows] + list(models.accuracy_specs):
        try:
            rows.append(embed(spec, space))
        except InvalidArchitectureError:
            continue  # measured outside this design space
    rows = np.array(rows, dtype=np.int64).reshape(len(rows), space.embedding_length)
    sample = _random_embeddings(space, settings.n_initial_samples, settings.seed)
    return np.unique(np.vstack([rows, sample, _size_frontier(models, space, settings)]), axis=0)


@functools.lru_cache(maxsize=8)
def _random_embeddings(space: DesignSpace, n: int, seed: int) -> np.ndarray:
    from flexibert import sample_architectures

    specs = sample_architectures(n, method="random", seed=seed, space=space)
    return np.array([embed(spec, space) for spec in specs], dtype=np.int64)


_SIZE_MEASURES = ("params", "flops", "activation_bytes")


def _size_frontier(models: FrontierModels, space: DesignSpace, settings: SearchSettings) -> np.ndarray:
    """Embeddings on the frontiers of predicted accuracy against log parameters, log FLOPs and log
    activation memory (of one 128-token sequence), the most accurate one included.

    Every hardware cost grows with these sizes, so their frontiers, searched once per models and
    settings (one population each, sharing evaluations) and shared by every device and measure,
    start each device's search close to its own frontiers.
    """
    from protran._accuracy import ACCURACY_BATCH_SIZE, ACCURACY_FEATURES, ACCURACY_SEQ_LEN

    cache = models.__dict__.setdefault("_size_frontiers", {})
    key = (space, settings)
    if key in cache:
        return cache[key]
    table = _analytic_table(space, ACCURACY_BATCH_SIZE, ACCURACY_SEQ_LEN)
    archive: list[tuple[np.ndarray, np.ndarray]] = []

    def evaluate(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        columns = table.columns(X)
        accuracy = models.accuracy_model.predict(table.featurize(X, ACCURACY_FEATURES, columns))
        sizes = np.column_stack([np.log(columns[name].astype(float)) for name in _SIZE_MEASURES])
        archive.append((X, np.column_stack([accuracy, sizes])))
        # one population per size, and one that seeks accuracy alone: the frontiers' costly end
        # holds the most accurate architecture, which every device shares
        sizes = np.column_stack([sizes, np.zeros(len(X))])
        F = np.stack([np.column_stack([-accuracy, sizes[:, j]]) for j in range(sizes.shape[1])], axis=1)
        return F, np.zeros(len(X))

    _nsga2(evaluate, _random_embeddings(space, settings.pop_size, settings.seed), space, settings,
           len(_SIZE_MEASURES) + 1)
    X = np.concatenate([x for x, _ in archive])
    values = np.concatenate([v for _, v in archive])
    fronts = [non_dominated(values[:, 0], values[:, j]) for j in range(1, values.shape[1])]
    cache[key] = np.unique(X[np.concatenate(fronts)], axis=0)
    return cache[key]


def _embedding_limits(space: DesignSpace) -> tuple[np.ndarray, np.ndarray]:
    from flexibert import embedding_bounds

    bounds = np.array(embedding_bounds(space), dtype=np.int64)
    return bounds[:, 0], bounds[:, 1]


def repair_embeddings(X: np.ndarray, space: DesignSpace | None = None) -> np.ndarray:
    """Turn any real matrix into valid embeddings: round, clip to the bounds, zero unused layer slots."""
    space = space or DesignSpace.default()
    low, high = _embedding_limits(space)
    X = np.clip(np.rint(np.asarray(X, dtype=float)), low, high).astype(np.int64)
    depths = np.array(space.encoder_layers)[X[:, 0]]
    X[np.arange(X.shape[1])[None, :] >= 1 + 3 * depths[:, None]] = 0
    return X


def _step(index: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One position up or down an ordered list of ``size`` choices; at either end, the only way."""
    step = rng.choice([-1, 1], size=len(index))
    step = np.where(index + step < 0, 1, np.where(index + step >= size, -1, step))
    return index + step if size > 1 else index


class _Moves:
    """Small semantic changes of architectures, applied to many embeddings at once.

    A move changes one thing a designer would change: one head's operation, the number of heads,
    one feed-forward width, the feed-forward depth, a layer's width, or the number of layers (new
    layers copy the last one). Plain index steps would be poor moves: neighbouring attention indices
    differ in their last head only, and a random attention index is a 12-head layer 85% of the time.
    Multisets of heads and feed-forward stacks are looked up by a numeric key, so every move is a
    few array operations on the whole population.
    """

    def __init__(self, space: DesignSpace) -> None:
        self.space = space
        self.depths = np.array(space.encoder_layers, dtype=np.int64)
        self.n_hidden = len(space.hidden_size)
        # attention multisets as head counts per operation type
        self.head_counts = np.array(space.attention_heads, dtype=np.int64)
        self.type_counts = np.array([[heads.count(op) for op in space.operation_types]
                                     for heads in space.attention_ops], dtype=np.int64)
        self._count_base = int(self.head_counts.max()) + 1
        self.att_keys, self.att_order = self._lookup(self._att_key(self.type_counts))
        # feed-forward stacks as width indices, padded with -1
        self.n_widths = len(space.feed_forward_dims)
        self.ff_depths = np.array(space.feed_forward_depth, dtype=np.int64)
        width_index = {w: i for i, w in enumerate(space.feed_forward_dims)}
        self.ff_widths = np.full((len(space.feed_forward_ops), max(space.feed_forward_depth)), -1, dtype=np.int64)
        for i, stack in enumerate(space.feed_forward_ops):
            self.ff_widths[i, :len(stack)] = [width_index[w] for w in stack]
        self.ff_keys, self.ff_order = self._lookup(self._ff_key(self.ff_widths))

    @staticmethod
    def _lookup(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(keys)
        return keys[order], order

    def _att_key(self, counts: np.ndarray) -> np.ndarray:
        return counts @ (self._count_base ** np.arange(counts.shape[1], dtype=np.int64))

    def _ff_key(self, widths: np.ndarray) -> np.ndarray:
        return (widths + 1) @ ((self.n_widths + 1) ** np.arange(widths.shape[1], dtype=np.int64))

    def _att_index(self, counts: np.ndarray) -> np.ndarray:
        return self.att_order[np.searchsorted(self.att_keys, self._att_key(counts))]

    def _ff_index(self, widths: np.ndarray) -> np.ndarray:
        return self.ff_order[np.searchsorted(self.ff_keys, self._ff_key(widths))]

    # -- single moves on a vector of gene values -----------------------------------------------

    def _pick_head(self, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One head per row, uniformly: the index of its operation type."""
        cumulative = np.cumsum(counts, axis=1)
        draw = rng.random(len(counts)) * cumulative[:, -1]
        return np.minimum((cumulative <= draw[:, None]).sum(axis=1), counts.shape[1] - 1)

    def swap_head(self, att: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        counts = self.type_counts[att].copy()
        rows = np.arange(len(att))
        old = self._pick_head(counts, rng)
        new = (old + rng.integers(1, counts.shape[1], size=len(att))) % counts.shape[1]
        counts[rows, old] -= 1
        counts[rows, new] += 1
        return self._att_index(counts)

    def resize_heads(self, att: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        counts = self.type_counts[att].copy()
        rows = np.arange(len(att))
        current = np.searchsorted(self.head_counts, counts.sum(axis=1))
        target = self.head_counts[_step(current, len(self.head_counts), rng)]
        while True:
            total = counts.sum(axis=1)
            change = np.sign(target - total)
            if not change.any():
                return self._att_index(counts)
            # remove a random head, or add a copy of a random head
            counts[rows, self._pick_head(counts, rng)] += change

    def step_width(self, ff: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        widths = self.ff_widths[ff].copy()
        rows = np.arange(len(ff))
        depth = (widths >= 0).sum(axis=1)
        position = (rng.random(len(ff)) * depth).astype(np.int64)
        widths[rows, position] = _step(widths[rows, position], self.n_widths, rng)
        return self._ff_index(widths)

    def resize_stack(self, ff: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        widths = self.ff_widths[ff].copy()
        rows = np.arange(len(ff))
        depth = (widths >= 0).sum(axis=1)
        target = self.ff_depths[_step(np.searchsorted(self.ff_depths, depth), len(self.ff_depths), rng)]
        last = widths[rows, depth - 1]
        for position in range(widths.shape[1]):
            grow = (position >= depth) & (position < target)
            widths[grow, position] = last[grow]
            widths[position >= target, position] = -1
        return self._ff_index(widths)

    def change_depth(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Two layers more (copies of the last layer) or fewer."""
        X = X.copy()
        rows = np.arange(len(X))
        layers = self.depths[X[:, 0]]
        target_index = _step(X[:, 0], len(self.depths), rng)
        target = self.depths[target_index]
        last = np.stack([X[rows, 3 * layers - 2 + k] for k in range(3)], axis=1)
        for slot in range(self.space.max_layers):
            grow = (slot >= layers) & (slot < target)
            X[grow, 1 + 3 * slot: 4 + 3 * slot] = last[grow]
            X[slot >= target, 1 + 3 * slot: 4 + 3 * slot] = 0
        X[:, 0] = target_index
        return X

    def mutate(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random move per row, on the depth or on a gene of a used layer slot."""
        X = np.asarray(X, dtype=np.int64).copy()
        layers = self.depths[X[:, 0]]
        gene = (rng.random(len(X)) * (1 + 3 * layers)).astype(np.int64)
        kind = np.where(gene == 0, 0, (gene - 1) % 3 + 1)  # 0 depth, 1 hidden, 2 feed-forward, 3 attention
        rows = np.flatnonzero(kind == 0)
        if len(rows):
            X[rows] = self.change_depth(X[rows], rng)
        rows = np.flatnonzero(kind == 1)
        X[rows, gene[rows]] = _step(X[rows, gene[rows]], self.n_hidden, rng)
        for kind_value, moves in ((2, (self.step_width, self.resize_stack)), (3, (self.swap_head, self.resize_heads))):
            rows = np.flatnonzero(kind == kind_value)
            which = rng.random(len(rows)) < 0.5
            for chosen, move in ((which, moves[0]), (~which, moves[1])):
                selected = rows[chosen]
                if len(selected):
                    X[selected, gene[selected]] = move(X[selected, gene[selected]], rng)
        return X


def _layer_crossover(first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform crossover of whole layers: each child takes every (width, feed-forward, attention)
    triple, and the depth, from one parent or the other."""
    swap = np.empty(first.shape, dtype=bool)
    swap[:, 0] = rng.random(len(first)) < 0.5
    swap[:, 1:] = np.repeat(rng.random((len(first), (first.shape[1] - 1) // 3)) < 0.5, 3, axis=1)
    return np.where(swap, second, first), np.where(swap, first, second)


def _survivors(F: np.ndarray, violation: np.ndarray, n_survive: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NSGA-II survival with Deb's constraint domination: feasible points by non-dominated front and
    crowding distance (pymoo's sorting and crowding), then infeasible ones by total violation.

    Returns the survivors' indices and every point's rank and crowding distance.
    """
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rank = np.full(len(F), np.iinfo(np.int64).max, dtype=np.int64)
    crowding = np.zeros(len(F))
    chosen: list[np.ndarray] = []
    feasible = np.flatnonzero(violation <= 0)
    level = 0
    if len(feasible):
        for front in NonDominatedSorting().do(F[feasible], n_stop_if_ranked=n_survive):
            members = feasible[front]
            distance = calc_crowding_distance(F[members])
            rank[members], crowding[members] = level, distance
            level += 1
            room = n_survive - sum(len(c) for c in chosen)
            if len(members) > room:
                chosen.append(members[np.argsort(-distance, kind="stable")[:room]])
                break
            chosen.append(members)
    room = n_survive - sum(len(c) for c in chosen)
    if room > 0:
        infeasible = np.flatnonzero(violation > 0)
        infeasible = infeasible[np.argsort(violation[infeasible], kind="stable")][:room]
        rank[infeasible] = level + np.arange(len(infeasible))
        chosen.append(infeasible)
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64), rank, crowding


def _binary_tournament(rank: np.ndarray, crowding: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` winners of random pairs: lower rank wins, then larger crowding distance, then a coin."""
    a, b = rng.integers(len(rank), size=(2, n))
    a_wins = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (
        (crowding[a] > crowding[b]) | ((crowding[a] == crowding[b]) & (rng.random(n) < 0.5))))
    return np.where(a_wins, a, b)


def _nsga2(
    evaluate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    initial: np.ndarray,
    space: DesignSpace,
    settings: SearchSettings,
    n_populations: int = 1,
    on_generation: Callable[[int, int], None] | None = None,
) -> None:
    """NSGA-II over embeddings, with ``n_populations`` populations that share every evaluation.

    ``evaluate(X) -> (F, violation)``: ``F[i, p]`` holds the two objectives (both minimised) of row
    ``i`` for population ``p``. Every generation each population breeds its children, all children
    are evaluated at once, and each population picks its survivors from its members and *all*
    children: populations chasing related objectives (latency and energy, say) hand each other
    good architectures. Every architecture is evaluated once (children equal to an evaluated one
    are moved again or dropped).
    """
    rng = np.random.default_rng(settings.seed)
    moves = _Moves(space)
    seen: set[bytes] = set()

    def fresh(X: np.ndarray) -> np.ndarray:
        X = np.unique(repair_embeddings(X, space), axis=0)
        keep = [i for i, row in enumerate(X) if row.tobytes() not in seen]
        seen.update(X[i].tobytes() for i in keep)
        return X[keep]

    pool_X = fresh(initial)
    pool_F, pool_violation = evaluate(pool_X)
    members = [np.zeros(0, dtype=np.int64) for _ in range(n_populations)]
    new = np.arange(len(pool_X))
    for generation in range(settings.n_generations):
        offspring = []
        for p in range(n_populations):
            candidates = np.concatenate([members[p], new])
            survivors, rank, crowding = _survivors(pool_F[candidates, p], pool_violation[candidates], settings.pop_size)
            members[p] = candidates[survivors]
            parents = members[p][_binary_tournament(rank[survivors], crowding[survivors],
                                                    2 * ((settings.pop_size + 1) // 2), rng)].reshape(2, -1)
            offspring.append(np.vstack(_layer_crossover(pool_X[parents[0]], pool_X[parents[1]], rng)))
        children = _mutate(moves, np.vstack(offspring), rng)
        for _ in range(3):  # children equal to an evaluated architecture get another move
            repeated = np.array([row.tobytes() in seen for row in children], dtype=bool)
            if not repeated.any():
                break
            children[repeated] = moves.mutate(children[repeated], rng)
        children = fresh(children)
        new = np.arange(len(pool_X), len(pool_X) + len(children))
        if len(children):
            child_F, child_violation = evaluate(children)
            pool_X = np.vstack([pool_X, children])
            pool_F = np.concatenate([pool_F, child_F])
            pool_violation = np.concatenate([pool_violation, child_violation])
        if on_generation is not None:
            on_generation(generation + 1, len(seen))


def _mutate(moves: _Moves, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One or more moves per row (geometric: half the rows get one, a quarter two, ...)."""
    X = np.asarray(X, dtype=np.int64).copy()
    count = rng.geometric(0.5, size=len(X))
    for round_ in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > round_)
        X[rows] = moves.mutate(X[rows], rng)
    return X


def search_frontiers(
    models: FrontierModels,
    device: str,
    constraints: Constraints | None = None,
    settings: SearchSettings | None = None,
    progress: ProgressCallback | None = None,
    space: DesignSpace | None = None,
) -> list[Frontier]:
    """The predicted frontiers of accuracy against every modelled measure of ``device``.

    One NSGA-II population per measure; the populations share every evaluation (latency and energy
    frontiers hold many of the same architectures). A device's frontiers are always searched
    together, so each one is the same whichever measures a caller keeps. ``progress`` is called
    after every generation with ``{"device", "generation", "n_generations", "evaluations"}``.
    """
    import time

    started = time.perf_counter()
    constraints = constraints or Constraints()
    settings = settings or SearchSettings()
    space = space or DesignSpace.default()
    measures = models.measures(device)
    if not measures:
        raise ValueError(f"device '{device}' has no measure with at least {MIN_ROWS_PER_MEASURE} measured rows")
    constraints.check_measures(measures, device)
    if constraints.max_layers is not None and constraints.max_layers < min(space.encoder_layers):
        raise ValueError(f"--max-layers {constraints.max_layers}: the design space has no model with fewer than "
                         f"{min(space.encoder_layers)} layers")

    evaluator = _Evaluator(models, device, space)
    accuracy_bounds = models.accuracy_bounds()
    value_bounds = {m: models.measure_bounds(device, m) for m in measures}
    archive: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (X, [accuracy, *measures], feasible)

    def evaluate(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        accuracy, params, layers, values = evaluator.evaluate(X)
        violation = np.maximum(constraints.violations(params, layers, values), 0.0).sum(axis=1)
        archive.append((X, np.column_stack([accuracy] + [values[m] for m in measures]), violation <= 0))
        F = np.stack([normalised_objectives(accuracy, values[m], accuracy_bounds, value_bounds[m]) for m in measures],
                     axis=1)
        return F, violation

    def on_generation(generation: int, evaluations: int) -> None:
        if progress is not None:
            progress({"device": device, "generation": generation, "n_generations": settings.n_generations,
                      "evaluations": evaluations})

    _nsga2(evaluate, _initial_embeddings(models, device, space, settings), space, settings, len(measures),
           on_generation)
    X, values, feasible = _archive_arrays(archive)
    frontiers = []
    for j, measure in enumerate(measures):
        points = _frontier_points(models, device, measure, constraints, X[feasible],
                                  values[feasible][:, [0, j + 1]], space)
        if not points:
            raise ValueError(f"no architecture found on '{device}' that meets the constraints "
                             f"({_describe(constraints)}) after {len(X)} candidates; relax them")
        volume = hypervolume(np.array([p.accuracy for p in points]), np.array([p.value for p in points]),
                             accuracy_bounds, value_bounds[measure])
        frontiers.append(Frontier(device, measure, volume, tuple(points), evaluations=len(X),
                                  search_s=time.perf_counter() - started))
    return frontiers


def search_frontier(
    models: FrontierModels,
    device: str,
    measure: str,
    constraints: Constraints | None = None,
    settings: SearchSettings | None = None,
    progress: ProgressCallback | None = None,
    space: DesignSpace | None = None,
) -> Frontier:
    """The frontier of one measure: :func:`search_frontiers` of the device, that measure's entry."""
    available = models.measures(device)
    if measure not in available:
        raise ValueError(f"device '{device}' has no {measure} model (measured: {', '.join(available) or 'none'})")
    frontiers = search_frontiers(models, device, constraints, settings, progress, space)
    return frontiers[available.index(measure)]


def _archive_arrays(archive: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.concatenate([x for x, _, _ in archive])
    values = np.concatenate([v for _, v, _ in archive])
    feasible = np.concatenate([f for _, _, f in archive])
    X, first = np.unique(X, axis=0, return_index=True)
    return X, values[first], feasible[first]


def _frontier_points(models: FrontierModels, device: str, measure: str, constraints: Constraints, X: np.ndarray,
                     values: np.ndarray, space: DesignSpace) -> list[FrontierPoint]:
    """Non-dominated points among the feasible evaluated architectures, with their reported values
    recomputed one architecture at a time (constraints and the filter applied again to those)."""
    candidates = non_dominated(values[:, 0], values[:, 1])
    specs = [_decode(X[i].tobytes(), space) for i in candidates]
    rows = models.predict(specs, device)
    field_name = MEASURE_FIELDS[measure]
    accuracy = np.array([row["predicted"]["accuracy"]["mean"] for row in rows])
    predicted = {m: np.array([row["predicted"][MEASURE_FIELDS[m]]["mean"] for row in rows])
                 for m in models.measures(device)}
    params = np.array([_parameters(spec) for spec in specs], dtype=np.int64).reshape(len(specs))
    layers = np.array([spec.num_layers for spec in specs], dtype=np.int64).reshape(len(specs))
    feasible = np.all(constraints.violations(params, layers, predicted) <= 0, axis=1)
    kept = np.flatnonzero(feasible)[non_dominated(accuracy[feasible], predicted[measure][feasible])]
    return [
        FrontierPoint(specs[i], rows[i]["hash"], float(accuracy[i]), rows[i]["predicted"]["accuracy"]["std"],
                      rows[i]["predicted"][field_name]["mean"], rows[i]["predicted"][field_name]["std"])
        for i in kept
    ]


def _describe(constraints: Constraints) -> str:
    parts = [f"{name} <= {value:g}" for name, value in vars(constraints).items() if value is not None]
    return ", ".join(parts) or "none"


@functools.lru_cache(maxsize=1 << 16)
def _decode(key: bytes, space: DesignSpace) -> ArchSpec:
    return decode(np.frombuffer(key, dtype=np.int64), space)


@functools.lru_cache(maxsize=1 << 16)
def _hash(spec: ArchSpec) -> str:
    # Frontiers of one device share many architectures; the hash takes milliseconds.
    return model_hash(spec)


def _parameters(spec: ArchSpec) -> int:
    from flexibert._features import count_parameters

    return count_parameters(spec)


# -- plot -----------------------------------------------------------------------------------------------


_ERROR_BARS = 12


def plot_frontiers(frontiers: Sequence[Frontier], path: str | Path) -> Path:
    """One panel per measure, one frontier per device (accuracy against the measure on a log axis),
    with the predicted standard deviations as error bars on a dozen points of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [m for m in MEASURES if any(f.measure == m for f in frontiers)]
    if not measures:
        raise ValueError("no frontier to plot")
    figure, axes = plt.subplots(1, len(measures), figsize=(5.2 * len(measures), 4.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    devices = list(dict.fromkeys(f.device for f in frontiers))
    for axis, measure in zip(axes[0], measures):
        for frontier in (f for f in frontiers if f.measure == measure and f.points):
            colour = colours(devices.index(frontier.device) % 10)
            value = np.array([p.value for p in frontier.points])
            accuracy = np.array([p.accuracy for p in frontier.points])
            # error bars (one std) on a dozen points spread along the frontier, so the lines stay readable
            shown = np.unique(np.linspace(0, len(value) - 1, min(len(value), _ERROR_BARS)).round().astype(int))
            axis.errorbar(value[shown], accuracy[shown], xerr=[frontier.points[i].value_std for i in shown],
                          yerr=[frontier.points[i].accuracy_std for i in shown], fmt="none", ecolor=colour,
                          alpha=0.35, linewidth=0.8, capsize=2)
            axis.step(value, accuracy, where="post", color=colour, linewidth=1.5,
                      label=f"{frontier.device} (HV {frontier.hypervolume:.3f})")
            axis.plot(value, accuracy, "o", color=colour, markersize=2.5)
        axis.set_xscale("log")
        axis.set_xlabel(f"predicted {measure.replace('_', ' ')} ({MEASURE_UNITS[measure]})")
        axis.set_ylabel("predicted accuracy")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    figure.suptitle("Predicted Pareto frontiers")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
