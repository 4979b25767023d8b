"""A deep ensemble of small PyTorch MLPs (mean and spread over independently seeded members)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from protran.surrogates._base import Standardizer, Surrogate


def _build_network(n_inputs: int, hidden: tuple[int, ...], generator=None):
    import torch
    from torch import nn

    def linear(n_in: int, n_out: int) -> nn.Linear:
        # skip_init: no draw from the global RNG; weights come from `generator` or a saved state.
        return torch.nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=torch.float64)

    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden:
        layers += [linear(width, size), nn.ReLU()]
        width = size
    layers.append(linear(width, 1))
    network = nn.Sequential(*layers)
    if generator is not None:
        # PyTorch's default initialisation, drawn from the local generator.
        with torch.no_grad():
            for layer in network:
                if isinstance(layer, nn.Linear):
                    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                    bound = 1.0 / math.sqrt(layer.in_features)
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return network


class MLPEnsembleSurrogate(Surrogate):
    """``n_members`` MLPs (ReLU, float64) on standardised features and targets.

    Each member has its own seed, initialisation and held-out split (``validation_fraction`` of the
    rows, at least one, when there are 5 rows or more); it trains full-batch with Adam and keeps the
    weights of its best held-out loss (early stopping after ``patience`` epochs without
    improvement). Mean and std are taken over the members. Weights are saved as plain arrays.
    ``sample_weight`` turns both losses into weighted means of the squared errors
    (``sum w_i r_i^2 / sum w_i`` over the member's training or held-out rows).
    """

    name = "mlp"

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] | list[int] = (64, 64),
        n_members: int = 5,
        max_epochs: int = 1000,
        learning_rate: float = 1e-2,
        weight_decay: float = 1e-4,
        patience: int = 100,
        validation_fraction: float = 0.2,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if int(n_members) < 2:
            raise ValueError(f"n_members must be at least 2 to give a spread, got {n_members}")
        self.hidden = tuple(int(size) for size in hidden)
        self.n_members = int(n_members)
        self.max_epochs = int(max_epochs)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.patience = int(patience)
        self.validation_fraction = float(validation_fraction)

    def _hyper_params(self) -> dict[str, Any]:
        return {
            "hidden": list(self.hidden),
            "n_members": self.n_members,
            "max_epochs": self.max_epochs,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "patience": self.patience,
            "validation_fraction": self.validation_fraction,
        }

    def _train_member(self, index: int, Z, t, weights=None):
        import torch

        generator = torch.Generator().manual_seed(self.seed * 1009 + index)
        network = _build_network(Z.shape[1], self.hidden, generator)
        order = torch.randperm(Z.shape[0], generator=generator)
        n_val = max(1, round(self.validation_fraction * Z.shape[0])) if Z.shape[0] >= 5 else 0
        val_rows, train_rows = order[:n_val], order[n_val:]
        if n_val == 0:
            val_rows = train_rows
        optimiser = torch.optim.Adam(network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        if weights is None:
            train_weight = val_weight = None
        else:
            train_weight = weights[train_rows] / weights[train_rows].sum().clamp_min(1e-300)
            val_weight = weights[val_rows] / weights[val_rows].sum().clamp_min(1e-300)

        def loss_of(rows, row_weight):
            squared = (network(Z[rows]).squeeze(1) - t[rows]) ** 2
            return torch.mean(squared) if row_weight is None else torch.sum(row_weight * squared)

        best_loss, best_state, stale = math.inf, None, 0
        for _ in range(self.max_epochs):
            network.train()
            optimiser.zero_grad()
            loss = loss_of(train_rows, train_weight)
            loss.backward()
            optimiser.step()
            network.eval()
            with torch.no_grad():
                val_loss = float(loss_of(val_rows, val_weight))
            if val_loss < best_loss - 1e-9:
                best_loss, stale = val_loss, 0
                best_state = {key: value.detach().clone() for key, value in network.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        network.load_state_dict(best_state)
        network.eval()
        return network

    def _fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> None:
        import torch

        self.scaler_ = Standardizer().fit(X)
        self.y_mean_ = float(y.mean())
        self.y_std_ = float(y.std()) or 1.0
        Z = torch.from_numpy(self.scaler_.transform(X))
        t = torch.from_numpy((y - self.y_mean_) / self.y_std_)
        weights = None if sample_weight is None else torch.from_numpy(np.asarray(sample_weight, dtype=np.float64))
        self.networks_ = [self._train_member(index, Z, t, weights) for index in range(self.n_members)]

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        Z = torch.from_numpy(self.scaler_.transform(X))
        with torch.no_grad():
            each = np.stack([network(Z).squeeze(1).numpy() for network in self.networks_])
        return each.mean(axis=0) * self.y_std_ + self.y_mean_, each.std(axis=0, ddof=1) * self.y_std_

    def _state(self, directory: Path) -> dict[str, np.ndarray]:
        arrays = {**self.scaler_.state(), "y_mean": np.asarray(self.y_mean_), "y_std": np.asarray(self.y_std_)}
        for index, network in enumerate(self.networks_):
            for key, value in network.state_dict().items():
                arrays[f"member{index}.{key}"] = value.detach().cpu().numpy()
        return arrays

    def _set_state(self, arrays: dict[str, np.ndarray], directory: Path) -> None:
        import torch

        self.scaler_ = Standardizer.from_state(arrays)
        self.y_mean_ = float(arrays["y_mean"])
        self.y_std_ = float(arrays["y_std"])
        n_inputs = len(self.scaler_.mean)
        self.networks_ = []
        for index in range(self.n_members):
            prefix = f"member{index}."
            state = {
                key[len(prefix):]: torch.from_numpy(value) for key, value in arrays.items() if key.startswith(prefix)
            }
            network = _build_network(n_inputs, self.hidden)
            network.load_state_dict(state)
            network.eval()
            self.networks_.append(network)
