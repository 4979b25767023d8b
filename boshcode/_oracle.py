"""What a co-design search queries to EVALUATE an (architecture, device) pair.

An oracle knows the devices, the bounds of every measure (which normalise P), and predicts (or
measures) accuracy, latency, energy and peak power with a standard deviation. :class:`SurrogateOracle`
answers from the ProTran hardware surrogates (one per device and measure) and the accuracy model,
fitted by ``protran.models.fit_models``; :class:`MeasuringOracle` measures one device for real instead;
``boshcode._external`` drives a user's own evaluation (a process speaking JSON lines, or a Python
object).

Bounds (the same for every method compared on one oracle): for latency, energy and peak power, the
smallest and largest value measured on *any* device of the profiles (the union of all measured rows);
for accuracy, the smallest and largest score in the accuracy data. Predictions beyond them count as
the bound (P clips each normalised measure to [0, 1]).

Each device of an oracle is a co-design *target*: a device under one runtime (its profile's label,
``device[runtime]`` where the device was profiled under several, see ``protran.models.target_label``);
``runtime(device)`` names the runtime (None where unknown). :class:`SurrogateOracle` charges the
accuracy of targets whose runtime drifts from float32 (``boshcode._drift``); an external oracle's
accuracy is taken as given.

An oracle that cannot answer at all (a crashed or hung process, an answer that is no answer) raises
:class:`OracleError`; the search stops and what it has evaluated so far can be saved and resumed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from boshcode._objective import HARDWARE_TERMS, Bounds, Weights
from flexibert import ArchSpec, EdgetranError
from protran.vocabulary import MEASURE_FIELDS, USABLE_STATUSES, field_of, name_of

#: The measures an oracle predicts, in the units of their names (``protran.vocabulary`` row fields).
MEASURES = ("accuracy", *MEASURE_FIELDS)

#: {measure: {"mean": array, "std": array}} (None for a measure the device cannot give).
Prediction = dict[str, "dict[str, np.ndarray] | None"]


#: A device profiled on fewer rows than this is flagged: its hardware predictions are extrapolations.
FEW_ROWS = 30


class OracleError(EdgetranError, RuntimeError):
    """The oracle could not answer (crashed, hung, or answered something that is no answer)."""


class Oracle(Protocol):
    """The contract of an oracle: ``devices``, ``bounds`` and ``predict(specs, device)``.

    Optional: ``measures(device)`` (the hardware measures it gives for a device; default all),
    ``runtime(device)`` (the runtime the target runs under; None where unknown),
    ``extrapolated(spec)`` (accuracy outside the scored architectures), ``n_rows(device)`` (how many
    measured rows a device's predictions rest on) and ``close()``.
    """

    @property
    def devices(self) -> list[str]: ...

    @property
    def bounds(self) -> Bounds: ...

    def predict(self, specs: Sequence[ArchSpec], device: str) -> Prediction: ...


def usable_devices(oracle: Oracle, weights: Weights) -> list[str]:
    """The devices that can give every measure P needs; warns about the ones left out.

    A device without a power meter has no energy or peak-power model: it is excluded when beta or
    gamma is positive (rather than scoring it on fewer terms, which would make P incomparable).
    """
    oracle.bounds.check(weights)
    needed = weights.needed_measures()
    kept, dropped = [], {}
    for device in oracle.devices:
        missing = [m for m in needed if m not in device_measures(oracle, device)]
        if missing:
            dropped[device] = missing
        else:
            kept.append(device)
    listed = "; ".join(f"{d} (no {', '.join(m)})" for d, m in dropped.items())
    if not kept:
        raise ValueError(f"no device can give every measure with a positive weight: {listed}; set the weights of "
                         "the missing measures to 0 or add profiles measured with a power meter")
    if dropped:
        warnings.warn(f"left out of the search, since P needs measures they lack: {listed}", stacklevel=2)
    return kept


def device_measures(oracle: Oracle, device: str) -> list[str]:
    """Measures (latency_s, energy_j, peak_power_w) the oracle gives for ``device``."""
    getter = getattr(oracle, "measures", None)
    if getter is not None:
        return list(getter(device))
    return list(HARDWARE_TERMS)


def device_runtime(oracle: Oracle, device: str) -> str | None:
    """The runtime ``device`` (a target) runs under, None where the oracle does not say."""
    getter = getattr(oracle, "runtime", None)
    return None if getter is None else getter(device)


class SurrogateOracle:
    """Answers from fitted ProTran surrogates (``protran.models.FittedModels``).

    ``drift_charges`` (``{runtime: factor}``, ``boshcode._drift``) multiplies the predicted accuracy and
    its std of every target under a listed runtime; the bounds stay those of the scored accuracy.
    """

    def __init__(self, models: Any, drift_charges: dict[str, float] | None = None) -> None:
        self.models = models
        self.drift_charges = dict(drift_charges or {})
        self._bounds = _union_bounds(models)

    @classmethod
    def from_files(cls, profiles: Sequence[str | Path], accuracy: str | Path | Sequence[str | Path], seed: int = 0,
                   task: str | None = None, accuracy_source: str | None = None,
                   drift_charges: dict[str, float] | None = None) -> SurrogateOracle:
        """Fit the surrogates on ProTran ``dataset.json`` files or run stores and one or more accuracy
        files (learnt from together; accuracy on ``accuracy_source``'s scale)."""
        from protran import load_accuracy_files
        from protran.models import fit_models, load_profiles

        loaded = load_profiles(list(profiles))
        records = load_accuracy_files(accuracy)
        return cls(fit_models(loaded, records, task=task, seed=seed, accuracy_source=accuracy_source), drift_charges)

    def runtime(self, device: str) -> str | None:
        """The runtime the target's profile was measured with (None where unknown)."""
        workload = self.models.workloads.get(device)
        return None if workload is None else workload.runtime

    def charge(self, device: str) -> float:
        """What the target's predicted accuracy is multiplied by: its runtime's drift charge, else 1."""
        runtime = self.runtime(device)
        return 1.0 if runtime is None else self.drift_charges.get(runtime, 1.0)

    def extrapolated(self, spec: ArchSpec) -> bool:
        """True when the accuracy of ``spec`` is an extrapolation (outside the scored architectures)."""
        return bool(self.models.accuracy_model.extrapolated([spec])[0])

    @property
    def devices(self) -> list[str]:
        return list(self.models.devices)

    @property
    def bounds(self) -> Bounds:
        return self._bounds

    def measures(self, device: str) -> list[str]:
        return [field_of(name) for name in self.models.measures(device)]

    def n_rows(self, device: str) -> int:
        """Measured rows of ``device`` (the most of any of its measures)."""
        profile = self.models.profiles[device]
        return max(len(profile.values(name)[1]) for name in profile.measures)

    def workload(self, device: str) -> tuple[int, int]:
        """(batch size, sequence length) the device was profiled with."""
        workload = self.models.workloads[device]
        return workload.batch_size, workload.seq_len

    def predict(self, specs: Sequence[ArchSpec], device: str) -> Prediction:
        if self.models.accuracy_model is None:
            raise ValueError("the surrogates were fitted without accuracy data; co-design needs an accuracy model")
        predicted = self.models.predict_arrays(specs, device)
        factor = self.charge(device)
        accuracy = predicted["accuracy"]
        if factor != 1.0 and accuracy is not None:
            predicted["accuracy"] = {**accuracy, "mean": accuracy["mean"] * factor, "std": accuracy["std"] * factor}
        return predicted


def _union_bounds(models: Any) -> Bounds:
    pairs: dict[str, tuple[float, float] | None] = {}
    for name in MEASURE_FIELDS:
        measured = [profile.values(name_of(name))[1] for profile in models.profiles.values()]
        measured = [v[np.isfinite(v) & (v > 0)] for v in measured]
        measured = [v for v in measured if v.size]
        pairs[name] = ((float(min(v.min() for v in measured)), float(max(v.max() for v in measured)))
                       if measured else None)
    scores = np.asarray(models.accuracy_scores, dtype=float)
    return Bounds(accuracy=(float(scores.min()), float(scores.max())), **pairs)


class MeasuringOracle:
    """Measures ``device`` for real on this machine (``protran.measure_architecture``) and asks
    ``base`` for accuracy and for every other device.

    ``device`` must be one of the base oracle's profiles, so that its bounds and workload are known.
    A failed measurement gives NaN, which the search scores as :data:`boshcode._objective.P_MIN`.
    """

    def __init__(self, base: SurrogateOracle, device: str, runtime: str = "onnxruntime", meter: Any = None,
                 num_threads: int = 1, time_cap_s: float = 10.0, **measure_options: Any) -> None:
        if device not in base.devices:
            raise ValueError(f"cannot measure '{device}': it has no profile (known: {base.devices}); "
                             "profile it first with `protran profile`")
        self.base = base
        self.device = device
        self.runtime = runtime
        self.meter = meter
        self.num_threads = num_threads
        self.measure_options = {"time_cap_s": time_cap_s, **measure_options}

    @property
    def devices(self) -> list[str]:
        return self.base.devices

    @property
    def bounds(self) -> Bounds:
        return self.base.bounds

    def n_rows(self, device: str) -> int:
        return self.base.n_rows(device)

    def runtime(self, device: str) -> str | None:
        return self.base.runtime(device)

    @property
    def drift_charges(self) -> dict[str, float]:
        return self.base.drift_charges

    def measures(self, device: str) -> list[str]:
        if device != self.device:
            return self.base.measures(device)
        return list(HARDWARE_TERMS) if self.meter is not None else ["latency_s"]

    def workload(self, device: str) -> tuple[int, int]:
        return self.base.workload(device)

    def extrapolated(self, spec: ArchSpec) -> bool:
        return self.base.extrapolated(spec)

    def predict(self, specs: Sequence[ArchSpec], device: str) -> Prediction:
        if device != self.device:
            return self.base.predict(specs, device)
        from protran import measure_architecture

        result = self.base.predict(specs, device)
        batch_size, seq_len = self.workload(device)
        columns: dict[str, list[float]] = {name: [] for name in HARDWARE_TERMS}
        spread: list[float] = []
        for spec in specs:
            measured = measure_architecture(spec, runtime=self.runtime, batch_size=batch_size, seq_len=seq_len,
                                            num_threads=self.num_threads, meter=self.meter, **self.measure_options)
            ok = measured.status in USABLE_STATUSES
            for name in HARDWARE_TERMS:
                value = getattr(measured, name) if ok else None
                columns[name].append(np.nan if value is None else float(value))
            rel = measured.latency_ci_rel if ok and measured.latency_ci_rel is not None else 0.0
            spread.append(rel * (measured.latency_s or 0.0))
        for name, values in columns.items():
            if name == "latency_s" or self.meter is not None:
                std = np.array(spread) if name == "latency_s" else np.zeros(len(values))
                result[name] = {"mean": np.array(values), "std": std}
            else:
                result[name] = None
        return result
