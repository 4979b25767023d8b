"""The precision benchmark's report: targets judged from the measured rows, as measured."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "precision.py"


@pytest.fixture(scope="module")
def precision():
    spec = importlib.util.spec_from_file_location("benchmark_precision", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _row(runtime: str, width: int, ratio: float) -> dict:
    return {"mix": "attention", "layers": 2, "width": width, "runtime": runtime, "latency_s": ratio * 0.01,
            "ratio_to_f32": ratio, "graph_node_count": 10}


def test_targets_are_judged_on_the_wide_models_and_the_loss(precision):
    rows = [_row("onnxruntime-int8", 768, 0.5), _row("onnxruntime-int8", 768, 0.7),
            _row("onnxruntime-int8", 128, 2.0), _row("openvino-int8", 768, 0.4)]
    drift = {"onnxruntime-int8": {"mlm_loss_increase_rel": 0.001},
             "openvino-int8": {"mlm_loss_increase_rel": 0.05}}
    targets = precision.targets(rows, drift)
    assert targets["onnxruntime-int8"]["worst_ratio_width_768"] == 0.7  # the narrow model does not count
    assert targets["onnxruntime-int8"]["latency_target_met"] is False
    assert targets["onnxruntime-int8"]["loss_target_met"] is True
    assert targets["openvino-int8"]["latency_target_met"] is True
    assert targets["openvino-int8"]["loss_target_met"] is False
    nothing = precision.targets([], {"openvino-int8": {"available": False, "reason": "x"}})["openvino-int8"]
    assert nothing["latency_target_met"] is None and nothing["loss_target_met"] is None


def test_quick_settings_are_a_subset_of_the_grid(precision):
    quick, full = precision.settings(True), precision.settings(False)
    assert set(quick["widths"]) <= set(full["widths"]) and precision.WIDE in quick["widths"]
    assert quick["train_steps"] < full["train_steps"]
