"""Small frontier inputs shared by the frontier and suggestion tests: a profile whose costs grow with
size, and accuracy scores that grow with depth and parameters."""

import csv
import json
import math

from flexibert import count_parameters, embed, model_hash


def write_profile(path, specs):
    """A ProTran dataset.json whose costs grow with size, like a real board's."""
    rows = {}
    for spec in specs:
        millions = count_parameters(spec) / 1e6
        latency = 2e-3 + 4e-4 * millions + 1e-3 * spec.num_layers
        rows[model_hash(spec)] = {
            "model_dict": spec.to_model_dict(), "model_type": "x", "embedding": str(embed(spec)),
            "performance": {"latency": latency, "energy": 4.0 * latency, "peak_power": 3.0 + math.log(millions)},
        }
    path.write_text(json.dumps(rows))
    return path


def write_accuracy(path, specs):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model_dict", "task", "score", "pretrain_loss"])
        for i, spec in enumerate(specs):
            score = 0.6 + 0.01 * spec.num_layers + 0.02 * math.log10(count_parameters(spec)) + 0.003 * (i % 3)
            writer.writerow([json.dumps(spec.to_model_dict()), "glue", f"{score:.4f}", "3.0"])
    return path
