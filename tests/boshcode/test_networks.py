"""The surrogates: NPN moment propagation against sampling, teacher and student, the training split."""

import math

import numpy as np
import torch
from torch.nn import functional as F

import boshcode._networks as networks
from boshcode._networks import (
    NPNLinear,
    NPNRegressor,
    Student,
    SurrogateSet,
    Teacher,
    TrainSettings,
    npn_relu,
    npn_sigmoid,
)

N_ARCH, N_DEVICE = 6, 3
SHORT = TrainSettings(min_steps=5, max_steps=20, first_min_steps=20, first_max_steps=60, patience=3)


def _inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    arch = torch.rand(n, N_ARCH, generator=generator)
    device = F.one_hot(torch.randint(0, N_DEVICE, (n,), generator=generator), N_DEVICE).float()
    return arch, device


def _noisy(layer: NPNLinear, log_variance: float) -> NPNLinear:
    """Make the weight variances large enough to matter (softplus^-1 of exp(log_variance))."""
    with torch.no_grad():
        rho = math.log(math.expm1(math.exp(log_variance)))
        layer.weight_rho.fill_(rho)
        layer.bias_rho.fill_(rho)
    return layer


def _sampled_forward(layer: NPNLinear, x: torch.Tensor, draws: int, generator: torch.Generator) -> torch.Tensor:
    """Outputs of ``draws`` forward passes, each with its own weights drawn from the layer's Gaussians;
    ``x`` is one input (rows x features) for every pass, or one per pass (draws x rows x features)."""
    weight_std = torch.sqrt(F.softplus(layer.weight_rho)) * layer.mask
    bias_std = torch.sqrt(F.softplus(layer.bias_rho))
    weights = layer.weight_mean * layer.mask + weight_std * torch.randn((draws, *weight_std.shape), generator=generator)
    biases = layer.bias_mean + bias_std * torch.randn((draws, *bias_std.shape), generator=generator)
    if x.dim() == 2:
        x = x.expand(draws, *x.shape)
    return torch.einsum("dni,dio->dno", x, weights) + biases[:, None, :]


# -- natural-parameter network -------------------------------------------------------------------------


def test_npn_linear_and_relu_match_monte_carlo():
    generator = torch.Generator().manual_seed(1)
    layer = _noisy(NPNLinear(4, 5, generator), -3.0)
    x = torch.rand(7, 4, generator=generator)
    with torch.no_grad():
        mean, variance = layer(x, None)
        samples = _sampled_forward(layer, x, 40_000, generator)
        torch.testing.assert_close(mean, samples.mean(0), atol=0.01, rtol=0.0)
        torch.testing.assert_close(variance, samples.var(0), atol=0.01, rtol=0.05)
        relu_mean, relu_variance = npn_relu(mean, variance)
        torch.testing.assert_close(relu_mean, samples.relu().mean(0), atol=0.01, rtol=0.0)
        torch.testing.assert_close(relu_variance, samples.relu().var(0), atol=0.01, rtol=0.05)


def test_npn_sigmoid_matches_monte_carlo_and_is_exact_without_variance():
    generator = torch.Generator().manual_seed(2)
    mean = torch.linspace(-3, 3, 13)
    # The probit mean is close at any spread; the delta-method variance is close for the spreads the
    # network sees (its pre-activations are nearly deterministic) and within a factor of 2 at std 2.
    for std, variance_atol in ((0.1, 1e-4), (0.3, 1e-3), (1.0, 0.01), (2.0, 0.02)):
        variance = torch.full_like(mean, std ** 2)
        samples = torch.sigmoid(mean + std * torch.randn((50_000, 13), generator=generator))
        out_mean, out_variance = npn_sigmoid(mean, variance)
        torch.testing.assert_close(out_mean, samples.mean(0), atol=0.02, rtol=0.0)
        torch.testing.assert_close(out_variance, samples.var(0), atol=variance_atol, rtol=0.0)
    out_mean, out_variance = npn_sigmoid(mean, torch.zeros_like(mean))
    torch.testing.assert_close(out_mean, torch.sigmoid(mean))
    assert float(out_variance.max()) < 1e-5


def test_whole_npn_matches_monte_carlo_over_its_weights():
    model = NPNRegressor(N_ARCH, N_DEVICE, seed=3, n_outputs=2)
    for layer in (model.branch_in, model.branch_out, model.hidden, model.out):
        _noisy(layer, -2.0)
    arch, device = _inputs(5)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        mean, variance = model(arch, device)
        draws = 20_000
        h = _sampled_forward(model.branch_in, torch.cat([arch, device], dim=1), draws, generator).relu()
        h = torch.sigmoid(_sampled_forward(model.branch_out, h, draws, generator))
        h = _sampled_forward(model.hidden, h, draws, generator).relu()
        out = torch.sigmoid(_sampled_forward(model.out, h, draws, generator))
    torch.testing.assert_close(mean, out.mean(0), atol=0.02, rtol=0.0)
    # Moment matching drops the correlations between units: the spread is right to within a factor.
    ratio = variance.sqrt() / out.std(0)
    assert float(ratio.min()) > 0.6 and float(ratio.max()) < 1.6, ratio


def test_arch_only_outputs_ignore_the_device():
    arch, device = _inputs(8)
    other = torch.roll(device, 1, dims=1)
    npn = NPNRegressor(N_ARCH, N_DEVICE, seed=5, n_outputs=3, n_arch_only=1)
    teacher = Teacher(N_ARCH, N_DEVICE, seed=5, n_outputs=3, n_arch_only=1).eval()
    with torch.no_grad():
        for outputs in ((npn(arch, device)[0], npn(arch, other)[0]), (teacher(arch, device), teacher(arch, other))):
            torch.testing.assert_close(outputs[0][:, 0], outputs[1][:, 0])
            assert not torch.allclose(outputs[0][:, 1:], outputs[1][:, 1:])


def test_frozen_means_train_only_the_variances():
    model = NPNRegressor(N_ARCH, N_DEVICE, seed=6)
    arch, device = _inputs(4)
    _, variance = model(arch, device, frozen_means=True)
    variance.sum().backward()
    assert model.out.weight_mean.grad is None and model.branch_in.bias_mean.grad is None
    assert model.out.weight_rho.grad is not None and float(model.out.weight_rho.grad.abs().sum()) > 0


# -- teacher and student -------------------------------------------------------------------------------


def test_teacher_and_student_shapes_and_ranges():
    arch, device = _inputs(9)
    teacher = Teacher(N_ARCH, N_DEVICE, seed=7, n_outputs=4)
    student = Student(N_ARCH, N_DEVICE, seed=8)
    out = teacher(arch, device)
    assert out.shape == (9, 4) and bool(((out > 0) & (out < 1)).all())
    draws = teacher.mc_draws(arch, device, passes=6)
    assert draws.shape == (6, 9, 4)
    assert float(draws.std(0).mean()) > 0  # dropout is on for Monte-Carlo passes
    teacher.eval()
    torch.testing.assert_close(teacher(arch, device), teacher(arch, device))  # and off otherwise
    spread = student(arch, device)
    assert spread.shape == (9, 1) and bool((spread >= 0).all())


def test_networks_are_seeded_and_leave_the_global_rng_alone():
    state = torch.get_rng_state()
    first = [p.detach().clone() for p in Teacher(N_ARCH, N_DEVICE, seed=9).parameters()]
    second = [p.detach().clone() for p in Teacher(N_ARCH, N_DEVICE, seed=9).parameters()]
    SurrogateSet(N_ARCH, N_DEVICE, np.array([0.5, 0.5]), seed=9)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    third = list(Teacher(N_ARCH, N_DEVICE, seed=10).parameters())
    assert not torch.equal(first[0], third[0])


# -- the surrogate set ---------------------------------------------------------------------------------


def _terms(arch: np.ndarray, device: np.ndarray) -> np.ndarray:
    """Two smooth terms in [0, 1]: one from the architecture alone, one that also depends on the device."""
    accuracy = 0.6 + 0.3 * arch[:, :3].mean(axis=1)
    cost = 0.9 - 0.5 * arch[:, 3:].mean(axis=1) * (1 + device.argmax(axis=1)) / N_DEVICE
    return np.column_stack([accuracy, cost])


def test_held_out_rows_never_move_and_are_never_trained_on(monkeypatch):
    calls = []
    original = networks.fit_network

    def recording(model, loss_of, inputs, target, train_rows, valid_rows, *args, **kwargs):
        calls.append((len(target), set(train_rows.tolist()), set(valid_rows.tolist())))
        return original(model, loss_of, inputs, target, train_rows, valid_rows, *args, **kwargs)

    monkeypatch.setattr(networks, "fit_network", recording)
    surrogates = SurrogateSet(N_ARCH, N_DEVICE, np.array([0.5, 0.5]), seed=11, settings=SHORT)
    rng = np.random.default_rng(11)
    arch = rng.random((60, N_ARCH))
    device = np.eye(N_DEVICE)[rng.integers(0, N_DEVICE, 60)]
    for n in (20, 40, 60):
        surrogates.fit(arch[:n], device[:n], _terms(arch[:n], device[:n]), np.ones(n, dtype=bool))
    assert len(calls) == 9  # f, g and h at each of the three fits
    held = None
    previous_n = None  # set together with held; read only once held is set
    for n, train, valid in calls:
        assert not train & valid and train | valid == set(range(n))
        if held is not None:
            assert {row for row in valid if row < previous_n} == held
        held, previous_n = {row for row in valid}, n
    assert 0 < len(held) < 30


def test_surrogates_learn_the_terms_and_report_p_units():
    rng = np.random.default_rng(12)
    arch = rng.random((120, N_ARCH))
    device = np.eye(N_DEVICE)[rng.integers(0, N_DEVICE, 120)]
    terms = _terms(arch, device)
    weights = np.array([0.6, 0.4])
    surrogates = SurrogateSet(N_ARCH, N_DEVICE, weights, seed=12, n_arch_only=1)
    surrogates.fit(arch[:100], device[:100], terms[:100], np.ones(100, dtype=bool))
    predicted = surrogates.predict_numpy(arch[100:], device[100:])
    assert predicted.shape == (20, 3) and np.all(predicted[:, 1:] >= 0)
    truth = terms[100:] @ weights
    assert np.corrcoef(predicted[:, 0], truth)[0, 1] > 0.8
    assert np.sqrt(np.mean((predicted[:, 0] - truth) ** 2)) < 0.03
    ucb = surrogates.acquisition_numpy(arch[100:], device[100:], k1=0.5, k2=0.5)
    np.testing.assert_allclose(ucb, predicted[:, 0] + 0.5 * predicted[:, 1] + 0.5 * predicted[:, 2], atol=1e-5)


def test_invalid_rows_are_learnt_as_the_worst_value():
    rng = np.random.default_rng(13)
    arch = rng.random((80, N_ARCH))
    device = np.eye(N_DEVICE)[rng.integers(0, N_DEVICE, 80)]
    terms = _terms(arch, device)
    valid = arch[:, 0] < 0.7  # a region of invalid inputs
    surrogates = SurrogateSet(N_ARCH, N_DEVICE, np.array([0.5, 0.5]), seed=13)
    surrogates.fit(arch, device, np.where(valid[:, None], terms, 0.0), valid)
    mean = surrogates.predict_numpy(arch, device)[:, 0]
    assert mean[~valid].mean() < mean[valid].min() + 0.1 * np.ptp(terms @ [0.5, 0.5])
    assert np.median(mean[~valid]) < np.median(mean[valid]) - 0.1


def test_the_student_learns_the_teachers_spread_whatever_the_scale_of_p():
    # P spreads of about 0.01 once left the student at zero, and the acquisition without its epistemic term.
    rng = np.random.default_rng(14)
    arch = rng.random((60, N_ARCH))
    device = np.eye(N_DEVICE)[rng.integers(0, N_DEVICE, 60)]
    terms = 0.5 + 0.02 * _terms(arch, device)  # terms that vary little: small spreads of P
    surrogates = SurrogateSet(N_ARCH, N_DEVICE, np.array([0.6, 0.4]), seed=14, n_arch_only=1)
    surrogates.fit(arch, device, terms, np.ones(60, dtype=bool))
    a, d = torch.as_tensor(arch, dtype=torch.float32), torch.as_tensor(device, dtype=torch.float32)
    draws, _ = surrogates.performance(surrogates.teacher.mc_draws(a, d, 10))
    teacher_spread = float(draws.std(dim=0).median())
    epistemic = surrogates.predict_numpy(arch, device)[:, 1]
    assert teacher_spread > 0
    assert 0.3 * teacher_spread < float(np.median(epistemic)) < 3.0 * teacher_spread
