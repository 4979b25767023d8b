"""The words every part of edgetran shares: measures, runtimes, meters, statuses, the default surrogate.

A *measure* is one hardware cost of an architecture on a device. It has one short name, used on the
command line, in frontiers and in replay curves (``latency``), and one row field, used wherever a value
is stored or reported with its unit (``latency_s`` in a run store, a ProTran export, a prediction or a
co-design result). :data:`MEASURES` is the one table of them; every module, CLI and benchmark takes
names, fields, units and the need for a power meter from it, so adding a measure touches this file.

Nothing here imports torch, ONNX Runtime or OpenVINO: command-line parsers build their choice lists
from this module and ``--help`` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """One hardware measure: its short ``name``, the row ``field`` that holds it, its ``unit``, the
    axis label of a plot, and whether it needs a power meter (latency needs only a clock)."""

    name: str
    field: str
    unit: str
    label: str
    needs_meter: bool


#: Every measure, in the order frontiers, replays and tables list them.
MEASURES: tuple[Measure, ...] = (
    Measure("latency", "latency_s", "s", "latency", needs_meter=False),
    Measure("energy", "energy_j", "J", "energy", needs_meter=True),
    Measure("peak_power", "peak_power_w", "W", "peak power", needs_meter=True),
)
MEASURE_NAMES: tuple[str, ...] = tuple(m.name for m in MEASURES)
MEASURE_FIELDS: tuple[str, ...] = tuple(m.field for m in MEASURES)
_BY_KEY = {**{m.name: m for m in MEASURES}, **{m.field: m for m in MEASURES}}


def measure(key: str) -> Measure:
    """The measure named ``key``, by short name (``latency``) or row field (``latency_s``)."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise ValueError(f"unknown measure {key!r}; choose one of {', '.join(MEASURE_NAMES)}") from None


def field_of(name: str) -> str:
    """The row field of a measure (``latency`` -> ``latency_s``); a field is returned as it is."""
    return measure(name).field


def name_of(field: str) -> str:
    """The short name of a measure (``latency_s`` -> ``latency``); a name is returned as it is."""
    return measure(field).name


#: The f32 inference runtimes.
BASE_RUNTIME_NAMES: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
#: Reduced-precision variants of them, each a runtime of its own name: name -> (base runtime, precision).
PRECISION_VARIANTS: dict[str, tuple[str, str]] = {
    "onnxruntime-int8": ("onnxruntime", "int8"),
    "openvino-int8": ("openvino", "int8"),
    "openvino-bf16": ("openvino", "bf16"),
    "torch-f16": ("torch", "f16"),
}
#: Inference runtimes an architecture can be measured with: the f32 runtimes, then their variants.
RUNTIME_NAMES: tuple[str, ...] = (*BASE_RUNTIME_NAMES, *PRECISION_VARIANTS)
#: Inference precisions OpenVINO is asked for (its ``INFERENCE_PRECISION_HINT``).
OPENVINO_PRECISIONS: tuple[str, ...] = ("f32", "bf16", "f16")
#: Power meters by name, in the order ``auto`` tries them (INA219 is never probed: it must be named;
#: nor is Zeus, an optional package whose windows duplicate NVML and RAPL: ``--meter zeus``).
METERS: tuple[str, ...] = (
    "nvml", "rapl", "ina3221", "hwmon", "tegrastats", "powermetrics", "nvidia-smi", "ina219", "zeus")
AUTO_ORDER: tuple[str, ...] = ("nvml", "rapl", "ina3221", "hwmon", "tegrastats", "powermetrics")
#: What ``--meter`` accepts.
METER_NAMES: tuple[str, ...] = ("auto", "none", *METERS, "remote:HOST:PORT")
#: How drift control corrects a row's latency (``--drift-correction``; see :mod:`protran._profile`): by
#: the latest reference before it, by the geometric mean of the references just before and after it, or
#: by the reference read in the row's own measuring process.
DRIFT_CORRECTIONS = ("latest", "bracket", "in-process")
#: How the profiler picks the next architecture to measure.
ACQUISITIONS: tuple[str, ...] = ("uncertainty", "random")
#: Metrics that rank architectures with no training and no labels, higher predicting more accurate
#: (:mod:`protran._training_free`): the size measures (FLOPs of one 128-token sequence, parameters,
#: parameters without the embeddings); the literature's metrics of a freshly initialised model (head
#: confidence, head importance, synaptic diversity, synaptic saliency, NASWOT's activation distance,
#: the Jacobian covariance score); and ``combined``, a shipped linear combination of all of them.
TRAINING_FREE_SIZE_METRICS: tuple[str, ...] = ("flops", "params", "params_no_embeddings")
TRAINING_FREE_MODEL_METRICS: tuple[str, ...] = (
    "head_confidence", "head_importance", "synaptic_diversity", "synaptic_saliency", "activation_distance",
    "jacobian_cov",
)
COMBINED_TRAINING_FREE_METRIC = "combined"
TRAINING_FREE_METRICS: tuple[str, ...] = (
    *TRAINING_FREE_SIZE_METRICS, *TRAINING_FREE_MODEL_METRICS, COMBINED_TRAINING_FREE_METRIC)
#: What ``protran proxy --training-free`` scores by: the best Kendall tau with the GLUE average of the
#: 250 shipped NAS-Bench-BERT records (``benchmarks/training_free.py``; ``combined`` counted
#: cross-validated: 0.626, against 0.511 for FLOPs, the best single metric).
DEFAULT_TRAINING_FREE_METRIC = "combined"
#: What a measurement can end as; only the first two carry values a surrogate may learn from.
STATUSES: tuple[str, ...] = ("ok", "unstable", "failed", "timeout", "oom")
USABLE_STATUSES: tuple[str, ...] = ("ok", "unstable")

#: The hardware surrogate and feature set of every fitted model, chosen by ``benchmarks/surrogates.py``
#: and ``benchmarks/replay_public.py``: a robust additive cost model on cost features.
DEFAULT_SURROGATE = "additive"
DEFAULT_FEATURES = "costs"
#: Feature sets that describe what a runtime compiles (``protran.compiled_graph_stats``): they need the
#: profile's runtime and compile each new architecture once (seconds; cached on disk).
COMPILED_FEATURE_SETS: tuple[str, ...] = ("costs+graph",)
