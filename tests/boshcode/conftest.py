"""A small analytic oracle, so the searches can be tested in seconds and without data files."""

from __future__ import annotations

import numpy as np
import pytest

from boshcode._objective import Bounds
from flexibert import embed


class FakeOracle:
    """Accuracy grows with width and depth; latency, energy and power grow with size, scaled per device.

    ``no_meter`` devices give latency only (energy and peak power None), like a board without a power
    meter.
    """

    SPEED = {"fast": 1.0, "slow": 4.0, "tiny": 0.5}

    def __init__(self, devices=("fast", "slow"), no_meter=()) -> None:
        self._devices = list(devices)
        self.no_meter = set(no_meter)
        self.calls = 0

    @property
    def devices(self) -> list[str]:
        return self._devices

    @property
    def bounds(self) -> Bounds:
        return Bounds(accuracy=(0.6, 0.9), latency_s=(0.05, 40.0), energy_j=(0.1, 400.0), peak_power_w=(1.0, 20.0))

    def measures(self, device: str) -> list[str]:
        return ["latency_s"] if device in self.no_meter else ["latency_s", "energy_j", "peak_power_w"]

    def predict(self, specs, device):
        self.calls += len(specs)
        size = np.array([sum(layer.hidden_size * (1 + len(layer.ff_dims)) for layer in spec.layers) / 1e3
                         for spec in specs])
        heads = np.array([np.mean([layer.n_heads for layer in spec.layers]) for spec in specs])
        accuracy = 0.6 + 0.25 * np.tanh(size / 6.0) + 0.004 * heads
        latency = self.SPEED[device] * size
        power = np.full(len(specs), 10.0 / self.SPEED[device]) + 0.1 * size
        result = {
            "accuracy": {"mean": accuracy, "std": np.full(len(specs), 0.01)},
            "latency_s": {"mean": latency, "std": 0.1 * latency},
        }
        if device in self.no_meter:
            result["energy_j"] = result["peak_power_w"] = None
        else:
            result["energy_j"] = {"mean": latency * power, "std": 0.1 * latency * power}
            result["peak_power_w"] = {"mean": power, "std": 0.05 * power}
        return result


@pytest.fixture
def oracle() -> FakeOracle:
    return FakeOracle()


def embedding_of(spec) -> np.ndarray:
    return np.array(embed(spec), dtype=np.int64)
