"""The drift charge: what a lower-precision runtime costs in accuracy, held against its targets.

A co-design target is a device under one runtime. A runtime that computes in lower precision than
float32 (``onnxruntime-int8``, ``openvino-bf16``) drifts from the float32 model it runs: ``protran
drift`` measures that drift on held-out text and writes it as JSON::

    {"model": {"checkpoint": "...", "arch_hash": "..."}, "sequences": N,
     "runtimes": {"onnxruntime-int8": {"base_runtime": "onnxruntime", "precision": "int8",
                                       "calibration": "...", "hidden_cosine": 0.998,
                                       "mlm_loss_f32": 5.12, "mlm_loss": 5.16,
                                       "mlm_loss_increase_rel": 0.0078},
                  "openvino-bf16": {"available": false, "reason": "..."}}}

The accuracy model predicts the float32 model's downstream score, whatever runtime runs it. A target
whose runtime has drift data gets that prediction charged: ``accuracy * (1 - max(0,
mlm_loss_increase_rel))``, and its std scaled by the same factor. It is a first-order guess: a relative
rise in masked-language-model loss costs a proportional share of the downstream score. A drop in loss
is no gain (it is noise, not a better model), and the factor never goes below 0. Runtimes without
drift data (the float32 ones) are not charged; an entry marked ``"available": false`` charges nothing.

Only the shape of the file is relied on, never the code that wrote it; :func:`load_runtime_drift`
checks the whole file before a search starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexibert import EdgetranError

#: The numbers every available runtime's entry holds.
DRIFT_NUMBERS = ("hidden_cosine", "mlm_loss_f32", "mlm_loss", "mlm_loss_increase_rel")
#: The names every available runtime's entry holds (``calibration`` may be null: bf16 needs none).
DRIFT_NAMES = ("base_runtime", "precision")


class DriftFileError(EdgetranError, ValueError):
    """A runtime-drift file that cannot be read or does not have the shape ``protran drift`` writes."""


@dataclass(frozen=True)
class RuntimeDrift:
    """How far one runtime's outputs drift from its float32 base runtime."""

    runtime: str
    base_runtime: str
    precision: str
    mlm_loss_increase_rel: float

    @property
    def charge_factor(self) -> float:
        """What the runtime's predicted accuracy (and its std) is multiplied by (module docstring)."""
        return max(0.0, 1.0 - max(0.0, self.mlm_loss_increase_rel))


def load_runtime_drift(path: str | Path) -> dict[str, RuntimeDrift]:
    """The drift of every runtime the file has data for (entries marked unavailable left out), keyed
    by runtime name. :class:`DriftFileError`, one line, for a file that is not such a JSON."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as problem:
        raise DriftFileError(f"--runtime-drift {path}: cannot read it ({problem.strerror or problem}); give the "
                             "JSON `protran drift` writes") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as problem:
        raise DriftFileError(f"--runtime-drift {path}: not JSON ({problem}); give the JSON `protran drift` "
                             "writes") from None
    try:
        return _drift_of(data)
    except ValueError as problem:
        raise DriftFileError(f"--runtime-drift {path}: {problem}; give the JSON `protran drift` writes") from None


def drift_charges(drift: dict[str, RuntimeDrift]) -> dict[str, float]:
    """``{runtime: charge factor}``, as the co-design result reports it."""
    return {runtime: entry.charge_factor for runtime, entry in drift.items()}


def _drift_of(data: Any) -> dict[str, RuntimeDrift]:
    if not isinstance(data, dict):
        raise ValueError("the file must hold a JSON object")
    model = data.get("model")
    if not isinstance(model, dict) or not all(isinstance(model.get(key), str) for key in ("checkpoint", "arch_hash")):
        raise ValueError('"model" must be an object with "checkpoint" and "arch_hash" strings')
    sequences = data.get("sequences")
    if isinstance(sequences, bool) or not isinstance(sequences, int) or sequences < 1:
        raise ValueError(f'"sequences" must be a positive whole number, got {sequences!r}')
    runtimes = data.get("runtimes")
    if not isinstance(runtimes, dict):
        raise ValueError('"runtimes" must be an object of runtime name: drift')
    drift = {}
    for runtime, entry in runtimes.items():
        if not isinstance(entry, dict):
            raise ValueError(f'runtime "{runtime}": its entry must be an object')
        available = entry.get("available", True)
        if not isinstance(available, bool):
            raise ValueError(f'runtime "{runtime}": "available" must be true or false')
        if not available:
            if not isinstance(entry.get("reason"), str):
                raise ValueError(f'runtime "{runtime}": an unavailable runtime needs a "reason" string')
            continue
        drift[runtime] = _entry(runtime, entry)
    return drift


def _entry(runtime: str, entry: dict[str, Any]) -> RuntimeDrift:
    for key in DRIFT_NAMES:
        if not isinstance(entry.get(key), str):
            raise ValueError(f'runtime "{runtime}": "{key}" must be a string')
    if "calibration" not in entry or not isinstance(entry["calibration"], (str, type(None))):
        raise ValueError(f'runtime "{runtime}": "calibration" must be a string or null')
    for key in DRIFT_NUMBERS:
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f'runtime "{runtime}": "{key}" must be a finite number, got {value!r}')
    return RuntimeDrift(runtime, entry["base_runtime"], entry["precision"], float(entry["mlm_loss_increase_rel"]))
