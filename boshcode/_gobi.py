"""GOBI: gradient-based optimisation of the acquisition over the inputs of the surrogates.

From several starts at once, the continuous inputs (normalised embedding in [0, 1]^37 and a relaxed
device vector in [0, 1]^D) climb UCB = mu + k1 * sigma + k2 * xi with a second-order method:

- ``"adahessian"`` (default): Adam-like steps preconditioned by a Hutchinson estimate of the
  diagonal of the Hessian (E[v * (H v)] with Rademacher v, from one Hessian-vector product), as in
  AdaHessian;
- ``"lbfgs"``: L-BFGS-B (scipy) on the summed objective of all starts, with box bounds.

Each start stops when its input moves less than ``tol`` for ``stall_steps`` steps; inputs are clipped
to the box after every step (L-BFGS-B: kept in it by its bounds), and the slots past the point's
layer count are held at zero (L-BFGS-B: set to zero at the end). The caller projects the optima to
valid pairs (``CodesignProblem``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

GOBI_METHODS = ("adahessian", "lbfgs")


@dataclass(frozen=True)
class GobiSettings:
    method: str = "adahessian"
    max_steps: int = 15
    lr: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-4
    tol: float = 1e-5
    stall_steps: int = 6

    def __post_init__(self) -> None:
        if self.method not in GOBI_METHODS:
            raise ValueError(f"unknown GOBI method {self.method!r}; choose one of {GOBI_METHODS}")


def gobi(acquisition, arch: np.ndarray, device: np.ndarray, settings: GobiSettings | None = None,
         seed: int = 0, fixed_device: bool = False,
         unused: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximise ``acquisition(arch_tensor, device_tensor) -> values`` (one per row, differentiable)
    from every start row; returns the optimised (arch, device, value).

    ``fixed_device`` keeps the device inputs as given (hardware-aware NAS on one device).
    ``unused(arch) -> bool mask`` marks the architecture inputs that the current point does not use
    (the slots past its layer count); they are held at zero after every step, so the optimum stays
    a consistent architecture and only the rounding is left to the projection.
    """
    settings = settings or GobiSettings()
    if settings.method == "lbfgs":
        return _lbfgs(acquisition, arch, device, settings, fixed_device, unused)
    return _adahessian(acquisition, arch, device, settings, seed, fixed_device, unused)


def _zero_unused(z: torch.Tensor, n_arch: int, unused) -> torch.Tensor:
    if unused is None:
        return z
    mask = torch.as_tensor(unused(z[:, :n_arch].numpy()))
    z = z.clone()
    z[:, :n_arch][mask] = 0.0
    return z


def _adahessian(acquisition, arch, device, settings, seed, fixed_device, unused):
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    n_arch = arch.shape[1]
    z = _zero_unused(torch.tensor(np.hstack([arch, device]), dtype=torch.float32), n_arch, unused)
    movable = torch.ones(z.shape[1])
    if fixed_device:
        movable[n_arch:] = 0.0
    first = torch.zeros_like(z)
    second = torch.zeros_like(z)
    still = torch.zeros(len(z), dtype=torch.long)
    beta1, beta2 = settings.betas
    for step in range(1, settings.max_steps + 1):
        active = still < settings.stall_steps
        if not bool(active.any()):
            break
        z_var = z.clone().requires_grad_(True)
        loss = -acquisition(z_var[:, :n_arch], z_var[:, n_arch:]).sum()
        (grad,) = torch.autograd.grad(loss, z_var, create_graph=True)
        probe = torch.randint(0, 2, z.shape, generator=generator).float() * 2.0 - 1.0
        (hessian_probe,) = torch.autograd.grad(grad, z_var, grad_outputs=probe)
        diagonal = (hessian_probe * probe).abs().detach()
        grad = grad.detach()
        first = beta1 * first + (1 - beta1) * grad
        second = beta2 * second + (1 - beta2) * diagonal ** 2
        corrected = (first / (1 - beta1 ** step)) / (torch.sqrt(second / (1 - beta2 ** step)) + settings.eps)
        update = settings.lr * corrected * movable * active[:, None]
        new_z = _zero_unused(torch.clamp(z - update, 0.0, 1.0), n_arch, unused)
        moved = (new_z - z).abs().max(dim=1).values
        still = torch.where(moved < settings.tol, still + 1, torch.zeros_like(still))
        z = new_z.detach()
    with torch.no_grad():
        values = acquisition(z[:, :n_arch], z[:, n_arch:])
    z = z.numpy().astype(float)
    return z[:, :n_arch], z[:, n_arch:], values.numpy().astype(float)


def _lbfgs(acquisition, arch, device, settings, fixed_device, unused):
    from scipy.optimize import minimize

    n_rows, n_arch = arch.shape
    start = np.hstack([arch, device]).astype(float)
    shape = start.shape
    free = slice(None) if not fixed_device else slice(0, n_arch)
    fixed = torch.tensor(start[:, n_arch:], dtype=torch.float32)

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        values = torch.tensor(flat.reshape(n_rows, -1), dtype=torch.float32, requires_grad=True)
        arch_part = values[:, :n_arch]
        device_part = fixed if fixed_device else values[:, n_arch:]
        loss = -acquisition(arch_part, device_part).sum()
        (grad,) = torch.autograd.grad(loss, values)
        return float(loss.detach()), grad.numpy().astype(float).ravel()

    x0 = start[:, free].ravel() if fixed_device else start.ravel()
    result = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * x0.size,
                      options={"maxiter": settings.max_steps, "ftol": settings.tol})
    z = result.x.reshape(n_rows, -1)
    if fixed_device:
        z = np.hstack([z, start[:, n_arch:]])
    z = _zero_unused(torch.tensor(z.reshape(shape), dtype=torch.float32), n_arch, unused).numpy().astype(float)
    with torch.no_grad():
        values = acquisition(torch.tensor(z[:, :n_arch], dtype=torch.float32),
                             torch.tensor(z[:, n_arch:], dtype=torch.float32))
    return z[:, :n_arch], z[:, n_arch:], values.numpy().astype(float)
