"""The three surrogates of the search, as in BOSHCODE (Algorithm 1 of the EdgeTran paper).

Inputs are an architecture (its embedding divided by the upper bounds, so in [0, 1]) and a device
encoding (one-hot, relaxed to [0, 1] during GOBI). Each network has one branch per input
(``Linear(in, 32)``, activation, ``Linear(32, 32)``, activation) whose outputs are concatenated to 64.

- :class:`NPNRegressor` (f): a natural-parameter network that propagates the mean and variance of
  Gaussian activations through every layer; it outputs the predicted performance and its
  *aleatoric* variance, and is trained by the Gaussian negative log-likelihood.
- :class:`Teacher` (g): a dropout network whose spread over Monte-Carlo dropout passes is the
  *epistemic* uncertainty.
- :class:`Student` (h): a deterministic network that learns the teacher's spread, so the epistemic
  term is smooth and cheap to differentiate during GOBI.

Every random choice (initial weights, dropout masks, mini-batches) comes from a seed; the global
torch RNG is never touched.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

BRANCH_UNITS = 32
_VARIANCE_FLOOR = 1e-6
# Smallest cost / max the hardware goodness -log(cost / max) is computed for.
_COST_FLOOR = 1e-6
_SIGMOID_ZETA2 = math.pi / 8.0


def _generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


# -- natural-parameter layers ------------------------------------------------------------------------


def arch_only_mask(in_arch: int, in_total: int, out_arch: int, out_total: int) -> torch.Tensor:
    """A 0/1 mask (in x out) whose first ``out_arch`` outputs read only the first ``in_arch`` inputs
    (those computed from the architecture alone); the other outputs read every input."""
    mask = torch.ones(in_total, out_total)
    mask[in_arch:, :out_arch] = 0.0
    return mask


def branch_mask(arch_features: int, device_features: int, out_per_branch: int) -> torch.Tensor:
    """A block-diagonal 0/1 mask that turns one Linear layer into two independent branches
    (architecture inputs -> first half of the outputs, device inputs -> second half). One fused
    layer does the work of two with half the operator calls, which is what small networks pay for."""
    mask = torch.zeros(arch_features + device_features, 2 * out_per_branch)
    mask[:arch_features, :out_per_branch] = 1.0
    mask[arch_features:, out_per_branch:] = 1.0
    return mask


class NPNLinear(nn.Module):
    """A linear layer with Gaussian weights: maps (mean, variance) of its input to those of its output.

    Weight variances are ``softplus(rho)``, started near ``softplus(-10)`` so the network begins
    almost deterministic and learns how much noise each weight carries. ``mask`` (0/1, the shape of
    the weights) removes connections, e.g. to keep branches apart.
    """

    def __init__(self, in_features: int, out_features: int, generator: torch.Generator,
                 mask: torch.Tensor | None = None) -> None:
        super().__init__()
        fan_in = in_features if mask is None else int(mask.sum(dim=0).max())
        bound = 1.0 / math.sqrt(fan_in)
        self.weight_mean = nn.Parameter(
            torch.empty(in_features, out_features).uniform_(-bound, bound, generator=generator)
        )
        self.bias_mean = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound, generator=generator))
        self.weight_rho = nn.Parameter(torch.full((in_features, out_features), -10.0))
        self.bias_rho = nn.Parameter(torch.full((out_features,), -10.0))
        self.register_buffer("mask", torch.ones(in_features, out_features) if mask is None else mask.clone())

    def forward(self, mean: torch.Tensor, variance: torch.Tensor | None,
                frozen_means: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``frozen_means``: treat the weight and bias means as constants (no gradient reaches them)."""
        weight_mean = self.weight_mean * self.mask
        bias_mean = self.bias_mean
        if frozen_means:
            weight_mean, bias_mean = weight_mean.detach(), bias_mean.detach()
        weight_var = F.softplus(self.weight_rho) * self.mask
        out_mean = mean @ weight_mean + bias_mean
        out_var = (mean ** 2) @ weight_var + F.softplus(self.bias_rho)
        if variance is not None:  # None: a deterministic input
            out_var = out_var + variance @ (weight_mean ** 2 + weight_var)
        return out_mean, out_var


def npn_relu(mean: torch.Tensor, variance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ReLU(x) for x ~ N(mean, variance) (exact Gaussian moments)."""
    std = torch.sqrt(variance + _VARIANCE_FLOOR)
    ratio = mean / std
    cdf = 0.5 * (1.0 + torch.erf(ratio / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * ratio ** 2) / math.sqrt(2.0 * math.pi)
    out_mean = mean * cdf + std * pdf
    second = (mean ** 2 + variance) * cdf + mean * std * pdf
    return out_mean, torch.clamp(second - out_mean ** 2, min=_VARIANCE_FLOOR)


def npn_sigmoid(mean: torch.Tensor, variance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of sigmoid(x) for x ~ N(mean, variance).

    The mean is the probit approximation sigmoid(mean * kappa), kappa = (1 + pi * variance / 8) ** -0.5.
    The variance is the delta method at that point, (p (1 - p))^2 * variance * kappa^2: exact as the
    input variance goes to zero and bounded by 2 / pi. (The two-sigmoid approximation often used
    instead leaves about 0.01 of spurious variance at zero input variance, which would swamp the
    aleatoric term on a [0, 1] target.)
    """
    kappa = torch.rsqrt(1.0 + _SIGMOID_ZETA2 * variance)
    out_mean = torch.sigmoid(mean * kappa)
    slope = out_mean * (1.0 - out_mean)
    return out_mean, slope ** 2 * variance * kappa ** 2 + _VARIANCE_FLOOR


def _head_masks(n_arch_only: int, n_outputs: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Masks (in x out) of the 64 -> 32 and 32 -> outputs layers that make the first ``n_arch_only``
    outputs depend on the architecture alone: they read half of the 32 hidden units, which read only
    the architecture branch. None, None when every output may depend on the device."""
    if n_arch_only <= 0:
        return None, None
    return (arch_only_mask(BRANCH_UNITS, 2 * BRANCH_UNITS, BRANCH_UNITS // 2, BRANCH_UNITS),
            arch_only_mask(BRANCH_UNITS // 2, BRANCH_UNITS, n_arch_only, n_outputs))


class NPNRegressor(nn.Module):
    """f: (architecture, device) -> (mean, aleatoric variance) of the performance, both in (0, 1).

    Branches Linear-ReLU-Linear-Sigmoid (32 units each, fused block-diagonally), then 64 -> 32 ReLU
    -> outputs Sigmoid, all with Gaussian moment propagation. The first ``n_arch_only`` outputs
    (accuracy) are wired to the architecture branch alone, so they cannot depend on the device.
    """

    def __init__(self, arch_features: int, device_features: int, seed: int = 0, n_outputs: int = 1,
                 n_arch_only: int = 0) -> None:
        super().__init__()
        generator = _generator(seed)
        hidden_mask, out_mask = _head_masks(n_arch_only, n_outputs)
        self.branch_in = NPNLinear(arch_features + device_features, 2 * BRANCH_UNITS, generator,
                                   branch_mask(arch_features, device_features, BRANCH_UNITS))
        self.branch_out = NPNLinear(2 * BRANCH_UNITS, 2 * BRANCH_UNITS, generator,
                                    branch_mask(BRANCH_UNITS, BRANCH_UNITS, BRANCH_UNITS))
        self.hidden = NPNLinear(2 * BRANCH_UNITS, BRANCH_UNITS, generator, hidden_mask)
        self.out = NPNLinear(BRANCH_UNITS, n_outputs, generator, out_mask)

    def forward(self, arch: torch.Tensor, device: torch.Tensor,
                frozen_means: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of each output; ``frozen_means``: no gradient reaches the weight means
        (used to train the variances alone, see :func:`npn_loss`)."""
        mean, variance = npn_relu(*self.branch_in(torch.cat([arch, device], dim=1), None, frozen_means))
        mean, variance = npn_sigmoid(*self.branch_out(mean, variance, frozen_means))
        mean, variance = npn_relu(*self.hidden(mean, variance, frozen_means))
        mean, variance = npn_sigmoid(*self.out(mean, variance, frozen_means))
        return mean, variance


def npn_loss(mean: torch.Tensor, variance: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of the mean plus the Gaussian negative log-likelihood of the variance around the
    (detached) mean, summed over outputs and averaged over rows.

    Pass the ``variance`` of a forward pass with frozen weight means (``NPNRegressor(...,
    frozen_means=True)``): the likelihood then trains only the weight variances and the mean is a
    plain least-squares fit. Training both by the likelihood lets the network explain its errors as
    noise rather than fit the mean, which on a few dozen rows ruins the ranking of the best points
    (the "faithful" heteroscedastic regression of Stirn et al., AISTATS 2023).
    """
    variance = variance + _VARIANCE_FLOOR
    squared_error = (mean - target) ** 2
    nll = 0.5 * (squared_error.detach() / variance + torch.log(variance))
    return torch.mean(torch.sum(squared_error + nll, dim=1))


# -- teacher and student -----------------------------------------------------------------------------


class SeededDropout(nn.Module):
    """Dropout whose masks come from its own generator; on in training and when ``mc`` is set."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p = p
        self.generator = generator
        self.mc = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training or self.mc) or self.p == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= self.p
        return x * keep / (1.0 - self.p)


class MaskedLinear(nn.Linear):
    """A Linear layer with some connections removed by a fixed 0/1 mask (shape out x in)."""

    def __init__(self, mask: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.clone())
        bound = 1.0 / math.sqrt(int(mask.sum(dim=1).max()))
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)
            self.bias.uniform_(-bound, bound, generator=generator)

    def reset_parameters(self) -> None:
        # nn.Linear would draw from the global RNG; __init__ draws from the network's own generator.
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def _branches(arch_features: int, device_features: int, generator: torch.Generator) -> nn.Sequential:
    """The two input branches (Linear(in, 32), Softplus, Linear(32, 32), Softplus), fused: the output
    is their concatenation (64 units)."""
    return nn.Sequential(
        MaskedLinear(branch_mask(arch_features, device_features, BRANCH_UNITS).T, generator), nn.Softplus(),
        MaskedLinear(branch_mask(BRANCH_UNITS, BRANCH_UNITS, BRANCH_UNITS).T, generator), nn.Softplus(),
    )


def _ones_if_none(mask: torch.Tensor | None, in_features: int, out_features: int) -> torch.Tensor:
    return torch.ones(in_features, out_features) if mask is None else mask


class Teacher(nn.Module):
    """g: a dropout network (p = 0.3) trained on the performance; MC-dropout spread = epistemic.
    Its first ``n_arch_only`` outputs depend on the architecture alone, as in :class:`NPNRegressor`."""

    def __init__(self, arch_features: int, device_features: int, seed: int = 0, dropout: float = 0.3,
                 n_outputs: int = 1, n_arch_only: int = 0) -> None:
        super().__init__()
        generator = _generator(seed)
        self.branches = _branches(arch_features, device_features, generator)
        wide = 2 * BRANCH_UNITS
        first = arch_only_mask(BRANCH_UNITS, wide, BRANCH_UNITS if n_arch_only > 0 else 0, wide)
        hidden_mask, out_mask = _head_masks(n_arch_only, n_outputs)
        self.head = nn.Sequential(
            MaskedLinear(first.T, generator), nn.Softplus(), SeededDropout(dropout, generator),
            MaskedLinear(_ones_if_none(hidden_mask, wide, BRANCH_UNITS).T, generator), nn.Softplus(),
            SeededDropout(dropout, generator),
            MaskedLinear(_ones_if_none(out_mask, BRANCH_UNITS, n_outputs).T, generator), nn.Sigmoid(),
        )

    def forward(self, arch: torch.Tensor, device: torch.Tensor) -> torch.Tensor:
        return self.head(self.branches(torch.cat([arch, device], dim=1)))

    @torch.no_grad()
    def mc_draws(self, arch: torch.Tensor, device: torch.Tensor, passes: int = 10) -> torch.Tensor:
        """Outputs of ``passes`` forward passes with dropout on: (passes, rows, outputs)."""
        was_training = self.training
        self.eval()
        dropouts = [m for m in self.modules() if isinstance(m, SeededDropout)]
        for module in dropouts:
            module.mc = True
        try:
            return torch.stack([self(arch, device) for _ in range(passes)])
        finally:
            for module in dropouts:
                module.mc = False
            self.train(was_training)


class Student(nn.Module):
    """h: learns the teacher's MC-dropout spread (non-negative output, Softplus)."""

    def __init__(self, arch_features: int, device_features: int, seed: int = 0) -> None:
        super().__init__()
        generator = _generator(seed)
        self.branches = _branches(arch_features, device_features, generator)
        self.head = nn.Sequential(MaskedLinear(torch.ones(BRANCH_UNITS, 2 * BRANCH_UNITS), generator), nn.Softplus(),
                                  MaskedLinear(torch.ones(1, BRANCH_UNITS), generator), nn.Softplus())

    def forward(self, arch: torch.Tensor, device: torch.Tensor) -> torch.Tensor:
        return self.head(self.branches(torch.cat([arch, device], dim=1)))


# -- training ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """Mini-batch training with early stopping on a fixed held-out split.

    Lengths are in optimiser steps (a step is one mini-batch), since with a few dozen rows an
    epoch is one or two steps: a fit takes at least ``min_steps`` and at most ``max_steps``, and
    stops once the held-out loss has not improved for ``patience`` epochs. The first fit starts
    from random weights and gets the ``first_`` lengths; later fits start from the previous weights.

    Later fits are warm-started and need fewer steps than the first, but not a few dozen: refits of
    10-60 steps (patience 4) left the networks short of what the rows could teach and the search found
    worse pairs (benchmarks/codesign_oracle.py). Training is most of a search's time (each step of these
    small networks costs about as much as the operator calls it makes); ``--parts timing`` there runs the
    default seven-board search with these lengths and with older ones (50-200 steps, patience 10,
    batches of 64, 8 GOBI starts) and compares time and the best P found.
    """

    min_steps: int = 30
    max_steps: int = 200
    first_min_steps: int = 100
    first_max_steps: int = 300
    patience: int = 8
    batch_size: int = 128
    lr_npn: float = 1e-2
    lr_teacher: float = 1e-2
    lr_student: float = 1e-2
    mc_passes: int = 10


class _AdamW:
    """AdamW (decoupled weight decay), written out: ``torch.optim`` imports torch's compiler stack on
    first use, which costs seconds on a small machine, for what is a few lines of arithmetic here."""

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-4) -> None:
        self.params, self.lr, self.betas, self.eps, self.weight_decay = params, lr, betas, eps, weight_decay
        self.first = [torch.zeros_like(p) for p in params]
        self.second = [torch.zeros_like(p) for p in params]
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        scale = self.lr * math.sqrt(1 - beta2 ** self.steps) / (1 - beta1 ** self.steps)
        for p, m, v in zip(self.params, self.first, self.second):
            if p.grad is None:
                continue
            p.mul_(1 - self.lr * self.weight_decay)
            m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            p.addcdiv_(m, v.sqrt().add_(self.eps), value=-scale)


def fit_network(model: nn.Module, loss_of, inputs: tuple[torch.Tensor, ...], target: torch.Tensor,
                train_rows: np.ndarray, valid_rows: np.ndarray, rng: np.random.Generator,
                lr: float, settings: TrainSettings, first: bool = True) -> dict[str, float]:
    """Train ``model`` in place with AdamW on mini-batches of ``train_rows`` (see
    :class:`TrainSettings` for the lengths); keeps the weights of the epoch with the lowest loss on
    ``valid_rows`` (never trained on) among those after the minimum length.
    ``loss_of(model, *inputs_of_rows, target_of_rows)`` returns a scalar."""
    min_steps = settings.first_min_steps if first else settings.min_steps
    max_steps = max(min_steps, settings.first_max_steps if first else settings.max_steps)
    optimiser = _AdamW(list(model.parameters()), lr=lr)
    check_rows = valid_rows if valid_rows.size else train_rows

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(loss_of(model, *(x[check_rows] for x in inputs), target[check_rows]))
        model.train()
        return value

    best, best_state, stale, steps = math.inf, None, 0, 0
    model.train()
    while steps < max_steps:
        order = rng.permutation(train_rows)
        for start in range(0, order.size, settings.batch_size):
            batch = torch.as_tensor(order[start:start + settings.batch_size])
            optimiser.zero_grad()
            loss_of(model, *(x[batch] for x in inputs), target[batch]).backward()
            optimiser.step()
            steps += 1
        if steps < min_steps:
            continue
        current = held_out_loss()
        if current < best - 1e-7:
            best, best_state, stale = current, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"steps": float(steps), "valid_loss": best}


def _npn_loss_of(model: NPNRegressor, arch, device, target) -> torch.Tensor:
    mean, _ = model(arch, device)
    _, variance = model(arch, device, frozen_means=True)
    return npn_loss(mean, variance, target)


def _mse_loss_of(model: nn.Module, arch, device, target) -> torch.Tensor:
    # Summed over outputs, averaged over rows.
    return torch.mean(torch.sum((model(arch, device) - target) ** 2, dim=1))


class SurrogateSet:
    """f, g and h over the terms of P, with a fixed train/held-out split that grows with the data.

    The networks predict each normalised term of P (accuracy / max, 1 - energy / max, ...; one
    output per term with a positive weight) rather than P alone: each evaluation then teaches them
    four numbers instead of one, and the strong, smooth dependence of the hardware terms on the
    architecture and device is learnt separately from the weak one of accuracy. P is their weighted
    sum, so its mean, aleatoric and epistemic spreads follow:

    - mean and aleatoric spread: from the NPN's mean and variance of every term (terms independent);
    - epistemic: the spread of P over Monte-Carlo dropout passes of the teacher, learnt by the student.

    Each output learns a "goodness" g of its term, scaled linearly so that the valid values seen so
    far span [0.1, 0.9] (P_MIN rows, invalid or constraint-violating, get 0: worse than anything
    valid). For accuracy g is the term itself; for a hardware term (``log_terms``) it is
    ``-log(value / max) = -log(1 - term)``. Costs differ by orders of magnitude between devices (a
    board's energy per sequence is hundreds of times a GPU's), and on a linear scale the differences
    between architectures on the best device would be a sliver of the output range; on a log scale
    every device's differences are resolved alike. Everything :meth:`predict` returns is in units of P.
    """

    def __init__(self, arch_features: int, device_features: int, term_weights: np.ndarray, seed: int = 0,
                 settings: TrainSettings | None = None, holdout: float = 0.2, n_arch_only: int = 0,
                 log_terms: np.ndarray | None = None) -> None:
        self.settings = settings or TrainSettings()
        self.term_weights = np.asarray(term_weights, dtype=float)
        n_terms = self.term_weights.size
        self.log_terms = np.zeros(n_terms, dtype=bool) if log_terms is None else np.asarray(log_terms, dtype=bool)
        if self.log_terms.shape != (n_terms,):
            raise ValueError(f"log_terms needs one flag per term ({n_terms}), got {self.log_terms.shape}")
        self.npn = NPNRegressor(arch_features, device_features, seed, n_outputs=n_terms, n_arch_only=n_arch_only)
        self.teacher = Teacher(arch_features, device_features, seed + 1, n_outputs=n_terms, n_arch_only=n_arch_only)
        self.student = Student(arch_features, device_features, seed + 2)
        self.holdout = holdout
        self._rng = np.random.default_rng(seed)
        self._held_out: list[bool] = []
        self.low = np.zeros(n_terms)
        self.span = np.ones(n_terms)
        self._set_units()
        self.last_fit: dict[str, dict[str, float]] = {}
        self.n_fits = 0
        self.spread_unit = 1.0

    def _set_units(self) -> None:
        # goodness = low_g + unit_g * output, in torch for differentiation.
        self._unit = torch.as_tensor(self.span / 0.8, dtype=torch.float32)
        self._low = torch.as_tensor(self.low - 0.1 * self.span / 0.8, dtype=torch.float32)
        self._weights = torch.as_tensor(self.term_weights, dtype=torch.float32)
        self._log = torch.as_tensor(self.log_terms)

    def goodness(self, terms: np.ndarray) -> np.ndarray:
        """What the outputs learn: the term, or -log(1 - term) for the hardware terms."""
        terms = np.asarray(terms, dtype=float)
        costs = -np.log(np.clip(1.0 - terms, _COST_FLOOR, None))
        return np.where(self.log_terms, costs, terms)

    def scale(self, terms: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Terms in network units: 0.1 (worst valid seen) .. 0.9 (best valid seen); P_MIN rows 0."""
        scaled = 0.1 + 0.8 * (self.goodness(terms) - self.low) / self.span
        return np.where(np.asarray(valid)[:, None], scaled, 0.0)

    def performance(
        self, mean: torch.Tensor, variance: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of P from the outputs' means (and variances: Gaussian, independent)."""
        g_mean = self._low + self._unit * mean
        g_var = torch.zeros_like(mean) if variance is None else variance * self._unit ** 2
        # term = 1 - exp(-g) for the hardware terms (log-normal moments), term = g for accuracy.
        cost_mean = torch.exp(-g_mean + 0.5 * g_var)
        term_mean = torch.where(self._log, 1.0 - cost_mean, g_mean)
        term_var = torch.where(self._log, torch.expm1(g_var) * cost_mean ** 2, g_var)
        return term_mean @ self._weights, term_var @ self._weights ** 2

    def _split(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        # Each row is assigned once, when first seen; it never moves between the two sets.
        while len(self._held_out) < n_rows:
            self._held_out.append(bool(self._rng.random() < self.holdout))
        held = np.array(self._held_out[:n_rows])
        return np.flatnonzero(~held), np.flatnonzero(held)

    def fit(self, arch: np.ndarray, device: np.ndarray, terms: np.ndarray, valid: np.ndarray) -> None:
        """Train all three networks on the rows so far (``terms``: one column per term; ``valid``:
        False for P_MIN rows, whose terms are ignored)."""
        terms = np.asarray(terms, dtype=float).reshape(len(arch), -1)
        valid = np.asarray(valid, dtype=bool)
        if valid.any():
            goodness = self.goodness(terms[valid])
            self.low = goodness.min(axis=0)
            self.span = np.maximum(goodness.max(axis=0) - self.low, 1e-9)
            self._set_units()
        a = torch.as_tensor(arch, dtype=torch.float32)
        d = torch.as_tensor(device, dtype=torch.float32)
        target = torch.as_tensor(self.scale(terms, valid), dtype=torch.float32)
        train_rows, valid_rows = self._split(len(arch))
        s = self.settings
        first = self.n_fits == 0
        self.last_fit["npn"] = fit_network(self.npn, _npn_loss_of, (a, d), target, train_rows, valid_rows,
                                           self._rng, s.lr_npn, s, first)
        self.last_fit["teacher"] = fit_network(self.teacher, _mse_loss_of, (a, d), target, train_rows, valid_rows,
                                               self._rng, s.lr_teacher, s, first)
        draws, _ = self.performance(self.teacher.mc_draws(a, d, s.mc_passes))  # P per pass
        # The student learns the spread over its mean on these rows, so its target is of order 1 whatever
        # the scale of P: spreads of 0.01 against an output of order 1 left a squared error so small that
        # the student settled at zero, and with it the epistemic term of the acquisition.
        spread = draws.std(dim=0)
        self.spread_unit = max(float(spread.mean()), 1e-9)
        spread = (spread / self.spread_unit)[:, None]
        self.last_fit["student"] = fit_network(self.student, _mse_loss_of, (a, d), spread, train_rows, valid_rows,
                                               self._rng, s.lr_student, s, first)
        self.n_fits += 1

    def predict(self, arch: torch.Tensor, device: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, epistemic std, aleatoric std) of P, differentiable in the inputs."""
        p_mean, p_var = self.performance(*self.npn(arch, device))
        epistemic = self.student(arch, device)[:, 0] * self.spread_unit
        return p_mean, epistemic, torch.sqrt(p_var)

    def acquisition(self, arch: torch.Tensor, device: torch.Tensor, k1: float, k2: float) -> torch.Tensor:
        """UCB = mu + k1 * sigma (epistemic) + k2 * xi (aleatoric), in units of P."""
        mean, epistemic, aleatoric = self.predict(arch, device)
        return mean + k1 * epistemic + k2 * aleatoric

    def _batched(self, fn, arch: np.ndarray, device: np.ndarray, chunk: int = 4096) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(arch), chunk):
                out.append(fn(torch.as_tensor(arch[start:start + chunk], dtype=torch.float32),
                              torch.as_tensor(device[start:start + chunk], dtype=torch.float32)).numpy())
        return np.concatenate(out).astype(float) if out else np.empty(0)

    def acquisition_numpy(self, arch: np.ndarray, device: np.ndarray, k1: float, k2: float) -> np.ndarray:
        return self._batched(lambda a, d: self.acquisition(a, d, k1, k2), arch, device)

    def uncertainty_numpy(self, arch: np.ndarray, device: np.ndarray, k1: float, k2: float) -> np.ndarray:
        """k1 * epistemic + k2 * aleatoric std of P, for uncertainty sampling."""
        def spread(a, d):
            _, epistemic, aleatoric = self.predict(a, d)
            return k1 * epistemic + k2 * aleatoric
        return self._batched(spread, arch, device)

    def predict_numpy(self, arch: np.ndarray, device: np.ndarray) -> np.ndarray:
        """(n, 3): mean, epistemic and aleatoric std of P."""
        return self._batched(lambda a, d: torch.stack(self.predict(a, d), dim=1), arch, device)
