"""Predict hardware costs of architectures from surrogates saved by ``protran profile``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from flexibert import ArchSpec, model_hash
from protran._profile import MANIFEST_SUFFIX


def find_manifests(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of saved surrogates")
    manifests = sorted(folder.glob(f"*{MANIFEST_SUFFIX}"))
    if not manifests:
        raise ValueError(f"{folder}: no saved surrogates (*{MANIFEST_SUFFIX}); run `protran profile --out {folder}` first")
    return manifests


def predict_specs(specs: Sequence[ArchSpec], folder: str | Path) -> list[dict[str, Any]]:
    """One row per (architecture, device): predicted mean and std of every measure saved for it."""
    from protran.surrogates import featurize, load_surrogate

    rows = []
    for manifest_path in find_manifests(folder):
        manifest = json.loads(manifest_path.read_text())
        features = featurize(list(specs), features=manifest["features"], batch_size=manifest["batch_size"],
                             seq_len=manifest["seq_len"])
        predicted = {}
        for measure, name in manifest["surrogates"].items():
            mean, std = load_surrogate(manifest_path.parent / name).predict(features, return_std=True)
            predicted[measure] = (mean, std)
        for i, spec in enumerate(specs):
            rows.append({
                "hash": model_hash(spec), "model_dict": spec.to_model_dict(), "device": manifest["device"],
                "runtime": manifest["runtime"],
                "predicted": {m: {"mean": float(mean[i]), "std": float(std[i])} for m, (mean, std) in predicted.items()},
            })
    return rows
