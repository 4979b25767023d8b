"""GOBI: second-order ascent of the acquisition from several starts, inside the box."""

import numpy as np
import pytest
import torch

from boshcode._gobi import GobiSettings, gobi
from boshcode._networks import SurrogateSet, TrainSettings

N_ARCH, N_DEVICE = 5, 3
METHODS = ("adahessian", "lbfgs")
TARGET = torch.tensor([0.2, 0.9, 0.5, 1.3, -0.4])  # the last two lie outside the box


def _bowl(arch: torch.Tensor, device: torch.Tensor) -> torch.Tensor:
    """Highest at TARGET (clipped to the box) and on device 1; curvature differs per input."""
    scales = torch.tensor([1.0, 4.0, 0.5, 2.0, 1.0])
    return -((arch - TARGET) ** 2 * scales).sum(dim=1) + device[:, 1] - 0.5 * device[:, 0]


def _starts(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, N_ARCH)), np.eye(N_DEVICE)[rng.integers(0, N_DEVICE, n)]


@pytest.mark.parametrize("method", METHODS)
def test_gobi_climbs_from_every_start_and_stays_in_the_box(method):
    arch, device = _starts(6)
    settings = GobiSettings(method=method, max_steps=200, lr=0.1)
    z_arch, z_device, values = gobi(_bowl, arch, device, settings, seed=1)
    before = _bowl(torch.tensor(arch), torch.tensor(device)).numpy()
    assert np.all(values > before)
    assert np.all((z_arch >= 0) & (z_arch <= 1)) and np.all((z_device >= 0) & (z_device <= 1))
    np.testing.assert_allclose(z_arch, np.tile(TARGET.clamp(0, 1).numpy(), (6, 1)), atol=0.05)
    assert np.all(np.argmax(z_device, axis=1) == 1)
    np.testing.assert_allclose(values, _bowl(torch.tensor(z_arch, dtype=torch.float32),
                                             torch.tensor(z_device, dtype=torch.float32)).numpy(), rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_fixed_device_is_left_alone(method):
    arch, device = _starts(4, seed=2)
    z_arch, z_device, _ = gobi(_bowl, arch, device, GobiSettings(method=method), fixed_device=True)
    np.testing.assert_array_equal(z_device, device)
    assert not np.allclose(z_arch, arch)


@pytest.mark.parametrize("method", METHODS)
def test_unused_inputs_are_held_at_zero(method):
    arch, device = _starts(4, seed=3)

    def unused(a: np.ndarray) -> np.ndarray:  # inputs 3 and 4 unused while input 0 is below 0.5
        mask = np.zeros(a.shape, dtype=bool)
        mask[:, 3:] = (a[:, 0] < 0.5)[:, None]
        return mask

    z_arch, _, _ = gobi(_bowl, arch, device, GobiSettings(method=method), unused=unused)
    assert np.all(z_arch[:, 0] < 0.5)  # the bowl pulls input 0 to 0.2
    assert np.all(z_arch[:, 3:] == 0)


def test_gobi_raises_the_surrogates_ucb():
    rng = np.random.default_rng(4)
    arch = rng.random((60, N_ARCH))
    device = np.eye(N_DEVICE)[rng.integers(0, N_DEVICE, 60)]
    terms = np.column_stack([0.5 + 0.4 * arch[:, 0] - 0.2 * arch[:, 1], 0.8 - 0.3 * arch[:, 2] * device[:, 2]])
    surrogates = SurrogateSet(N_ARCH, N_DEVICE, np.array([0.7, 0.3]), seed=4,
                              settings=TrainSettings(first_min_steps=100, first_max_steps=200))
    surrogates.fit(arch, device, terms, np.ones(60, dtype=bool))

    def ucb(a, d):
        return surrogates.acquisition(a, d, 0.5, 0.5)

    starts, start_devices = arch[:8], device[:8]
    before = surrogates.acquisition_numpy(starts, start_devices, 0.5, 0.5)
    for method in METHODS:
        _, _, values = gobi(ucb, starts, start_devices, GobiSettings(method=method), seed=5)
        assert np.mean(values > before) >= 0.75 and values.mean() > before.mean(), method


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown GOBI method 'sgd'"):
        GobiSettings(method="sgd")
