"""A search's state on disk, so that a search stopped by a failing oracle or Ctrl-C resumes where it was.

Every oracle call is expensive (a training, a measurement on a board), so what was evaluated is never
thrown away: the state file holds the problem (weights, normalisation, devices, bounds, constraints)
and every evaluation, and is rewritten atomically (a temporary file, then a rename) after each batch
of evaluations. ``--resume FILE`` reads it back: the evaluations are taken as known (asking for them
again costs nothing), they start the search in place of the initial sample, and the budget counts
them. A state is resumed only into the same problem; anything else is refused with the difference.

The file is JSON (no pickle), read with checks on every field, so an edited or foreign file gives one
clear line instead of a traceback.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from boshcode._problem import CodesignProblem, Evaluation

STATE_FORMAT = "boshcode-search-state"
STATE_VERSION = 1


def state_header(problem: CodesignProblem, method: str) -> dict[str, Any]:
    """What identifies a search: a state resumes only into a search with the same header."""
    return {
        "format": STATE_FORMAT, "version": STATE_VERSION, "method": method,
        "weights": problem.weights.as_dict(), "normalise": problem.normalise, "devices": list(problem.devices or []),
        "bounds": problem.bounds.to_json(), "constraints": problem.constraints.measure_limits(),
        # the accuracy each evaluation was scored with depends on it
        "drift_charge": getattr(problem.oracle, "drift_charges", None) or None,
    }


def _evaluation_json(e: Evaluation, devices: Sequence[str]) -> dict[str, Any]:
    return {"embedding": list(e.embedding), "device": devices[e.device], "performance": e.performance,
            "performance_std": e.performance_std, "terms": list(e.terms), "means": e.means, "stds": e.stds,
            "feasible": e.feasible}


def save_state(path: str | Path, header: dict[str, Any], evaluations: Sequence[Evaluation]) -> Path:
    """Write the state atomically: a reader (or a crash) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    devices = header["devices"]
    data = {**header, "evaluations": [_evaluation_json(e, devices) for e in evaluations]}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_state(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, raw evaluations) of a state file; ValueError naming the problem for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as problem:
        raise ValueError(f"{path}: not a search state ({problem}); give the file a failed search saved") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a boshcode search state (no \"format\": \"{STATE_FORMAT}\")")
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: search state version {data.get('version')!r}; this boshcode reads {STATE_VERSION}")
    evaluations = data.pop("evaluations", None)
    if not isinstance(evaluations, list):
        raise ValueError(f"{path}: the search state has no list of evaluations")
    return data, evaluations


def check_resumable(path: str | Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume a state into a different search, naming the first difference."""
    for key in ("method", "weights", "normalise", "devices", "bounds", "constraints", "drift_charge"):
        if _canonical(saved.get(key)) != _canonical(current.get(key)):
            raise ValueError(f"{path}: the saved search has {key} {saved.get(key)!r}, this one {current.get(key)!r}; "
                             f"resume with the same options (or start afresh without --resume)")


def _canonical(value: Any) -> Any:
    # JSON turns tuples into lists and may round floats: compare what was written with what would be.
    return json.loads(json.dumps(value))


def evaluations_from_state(path: str | Path, raw: list[dict[str, Any]], problem: CodesignProblem) -> list[Evaluation]:
    """The saved evaluations as :class:`Evaluation` of ``problem`` (checked row by row)."""
    devices = list(problem.devices or [])
    upper = problem.upper
    out = []
    for i, row in enumerate(raw):
        where = f"{path}: evaluation {i + 1}"
        try:
            embedding = tuple(int(v) for v in row["embedding"])
            device = devices.index(row["device"])
            performance = float(row["performance"])
            spread = float(row.get("performance_std", 0.0))
            terms = tuple(float(v) for v in row["terms"])
            means = {str(k): None if v is None else float(v) for k, v in row["means"].items()}
            stds = {str(k): None if v is None else float(v) for k, v in row["stds"].items()}
            feasible = bool(row["feasible"])
        except (KeyError, TypeError, ValueError, AttributeError) as problem_:
            raise ValueError(f"{where} is malformed ({problem_!r}); the state file was edited or is damaged") from None
        if len(embedding) != len(upper) or np.any(np.array(embedding) < 0) or np.any(np.array(embedding) > upper):
            raise ValueError(f"{where}: the embedding is not one of this design space")
        if not (math.isfinite(performance) and math.isfinite(spread)):
            raise ValueError(f"{where}: its performance is not a finite number")
        out.append(Evaluation(embedding, device, performance, terms, means, stds, feasible, spread))
    return out


def resume(path: str | Path, problem: CodesignProblem, method: str) -> list[Evaluation]:
    """Read a state, check it belongs to this search, and make its evaluations known to ``problem``."""
    saved, raw = load_state(path)
    check_resumable(path, saved, state_header(problem, method))
    evaluations = evaluations_from_state(path, raw, problem)
    problem.preload(evaluations)
    return evaluations


def initial_with(problem: CodesignProblem, done: Sequence[Evaluation], n_initial: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs a resumed search starts from: everything already evaluated, topped up with the seeded
    initial sample when fewer than ``n_initial`` were."""
    X = [np.array(e.embedding, dtype=np.int64) for e in done]
    d = [e.device for e in done]
    if len(done) < n_initial:
        seen = {(x.tobytes(), int(k)) for x, k in zip(X, d)}
        fresh_X, fresh_d = problem.initial_pairs(n_initial, seed)
        for x, k in zip(fresh_X, fresh_d):
            if len(X) >= n_initial:
                break
            if (x.tobytes(), int(k)) not in seen:
                X.append(x)
                d.append(int(k))
    return np.array(X, dtype=np.int64).reshape(len(X), problem.arch_dim), np.array(d, dtype=np.int64)
