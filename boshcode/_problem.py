"""The co-design problem every method searches: (architecture, device) pairs, how they are encoded
for the surrogates, drawn at random, repaired into valid pairs, and EVALUATEd on an oracle.

Encoding: the 37-integer embedding divided by each entry's upper bound (in [0, 1]) and a one-hot
device vector. Projection maps any real point back to the *nearest valid* pair of the design space:
the point is scaled back to embedding units and repaired as every search repairs embeddings
(``flexibert.embeddings.repair_embeddings``: each entry rounded and clipped to its bounds, the layer
count read from the first entry and every slot past it zeroed, so the result always decodes), and
the device is the arg-max.

BOSHCODE's networks read an architecture by its structure features by default (``arch_inputs``), and
the baselines by its normalised embedding (``encode``); ``ARCH_INPUTS`` lists the choices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from boshcode._objective import (
    DEFAULT_NORMALISATION,
    P_MIN,
    Bounds,
    Weights,
    check_normalisation,
    normalised_terms,
    term_names,
    term_stds,
    term_weights,
)
from boshcode._oracle import MEASURES, Oracle, device_runtime, usable_devices
from flexibert import ArchSpec, DesignSpace, decode, embed, embedding_bounds
from flexibert.embeddings import repair_embeddings
from protran import structure_features_of_embeddings
from protran.models import Constraints

#: Random architectures whose structure features set the features' [0, 1] scale (seeded, per space).
_SCALE_SAMPLE = 4096
#: What a search's networks may read of an architecture (``CodesignProblem.arch_inputs``).
ARCH_INPUTS = ("structure", "embedding", "both")


def check_arch_inputs(inputs: str) -> None:
    if inputs not in ARCH_INPUTS:
        raise ValueError(f"unknown architecture inputs {inputs!r}; choose one of {ARCH_INPUTS}")


@dataclass
class Evaluation:
    """One EVALUATE call: the pair, its P and the std of P, the terms of P (``term_names`` order) and
    the oracle's means and stds of every measure. ``feasible`` is False for a pair that broke a
    constraint or whose evaluation failed (its P is then P_MIN, its std 0)."""

    embedding: tuple[int, ...]
    device: int
    performance: float
    terms: tuple[float, ...]
    means: dict[str, float | None]
    stds: dict[str, float | None]
    feasible: bool = True
    performance_std: float = 0.0

    def lower_bound(self, risk: float) -> float:
        """P - risk * std of P: what the pair is worth when its uncertainty is held against it."""
        return self.performance - risk * self.performance_std


@dataclass
class CodesignProblem:
    """An oracle, the weights of P, the devices searched over and the design space.

    Each device is a target, a device under one runtime (``device_runtime``); ``runtimes`` keeps only
    the targets under those runtimes (None: every target).
    """

    oracle: Oracle
    weights: Weights
    devices: list[str] | None = None
    space: DesignSpace | None = None
    constraints: Constraints = field(default_factory=Constraints)
    normalise: str = DEFAULT_NORMALISATION
    runtimes: Sequence[str] | None = None

    def __post_init__(self) -> None:
        check_normalisation(self.normalise)
        self.space = self.space or DesignSpace.default()
        if self.constraints.max_params is not None or self.constraints.max_layers is not None:
            raise ValueError("co-design bounds predicted latency, energy and peak power only; "
                             "drop max_params and max_layers")
        if self.devices is None:
            self.devices = usable_devices(self.oracle, self.weights)
        unknown = [d for d in self.devices if d not in self.oracle.devices]
        if unknown:
            raise ValueError(f"unknown device(s) {unknown}; the profiles hold {self.oracle.devices}")
        if self.runtimes is not None:
            self.devices = self._under_runtimes(self.devices, self.runtimes)
        if not self.devices:
            raise ValueError("no device to search over")
        self.oracle.bounds.check(self.weights)
        bounds = np.array(embedding_bounds(self.space), dtype=np.int64)
        self.upper = bounds[:, 1]
        self._scale = np.where(self.upper > 0, self.upper, 1).astype(float)
        self._depths = np.array(self.space.encoder_layers, dtype=np.int64)
        self._head_blocks = _head_blocks(self.space)
        self._cache: dict[tuple[bytes, int], Evaluation] = {}
        # The order pairs were first asked for (the cache fills device by device).
        self._asked: dict[tuple[bytes, int], int] = {}
        self.n_oracle_calls = 0
        self._scale_of_features: tuple[np.ndarray, np.ndarray] | None = None
        #: Called with every batch of new evaluations (e.g. to save the search state as it grows).
        self.on_evaluated: Callable[[list[Evaluation]], None] | None = None

    def _under_runtimes(self, devices: list[str], runtimes: Sequence[str]) -> list[str]:
        kept = [d for d in devices if device_runtime(self.oracle, d) in runtimes]
        if not kept:
            targets = ", ".join(f"{d} ({device_runtime(self.oracle, d) or 'runtime unknown'})" for d in devices)
            raise ValueError(f"no target runs under {', '.join(runtimes)}; the targets are {targets}: "
                             "choose --runtimes among theirs")
        return kept

    def runtime(self, device: int) -> str | None:
        """The runtime of the ``device``-th target (None where the oracle does not say)."""
        return device_runtime(self.oracle, self.devices[device])

    # -- sizes and encoding -------------------------------------------------------------------------

    @property
    def arch_dim(self) -> int:
        return len(self.upper)

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def bounds(self) -> Bounds:
        return self.oracle.bounds

    @property
    def n_terms(self) -> int:
        return len(term_names(self.weights))

    def encode_arch(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=float) / self._scale

    def encode_device(self, device: np.ndarray) -> np.ndarray:
        return np.eye(self.n_devices)[np.asarray(device, dtype=np.int64)]

    def encode(self, X: np.ndarray, device: np.ndarray, inputs: str = "embedding") -> np.ndarray:
        """[architecture inputs (``arch_inputs``; default the normalised embedding), one-hot device], one row
        per pair."""
        return np.hstack([self.arch_inputs(X, inputs), self.encode_device(device)])

    def structure_inputs(self, X: np.ndarray) -> np.ndarray:
        """The structure features of valid embeddings ``X`` (n, arch_dim)
        (``protran.structure_features_of_embeddings``: depth, log parameters and FLOPs, and per position
        and on average the width, head count, operation shares and feed-forward stack), each scaled to
        [0, 1] over the design space.

        An attention or feed-forward entry of the embedding is an index into a long list of head mixes
        or stacks, and neighbouring indices need not be similar models; a network that reads only the
        indices must learn each one's effect from the rows it has seen. The features say what an index
        means, so what is learnt about one architecture carries over to others that share its make-up.
        """
        low, span = self._feature_scale()
        features = structure_features_of_embeddings(np.asarray(X, dtype=np.int64), self.space)
        return np.clip((features - low) / span, 0.0, 1.0)

    def arch_inputs(self, X: np.ndarray, inputs: str = "structure") -> np.ndarray:
        """What a search's networks read of valid embeddings ``X``: one of :data:`ARCH_INPUTS` (the
        normalised embedding, the structure features, or both side by side), (n, n_arch_inputs)."""
        check_arch_inputs(inputs)
        parts = []
        if inputs != "structure":
            parts.append(self.encode_arch(X))
        if inputs != "embedding":
            parts.append(self.structure_inputs(X))
        return np.hstack(parts)

    def n_arch_inputs(self, inputs: str = "structure") -> int:
        check_arch_inputs(inputs)
        return (self.arch_dim if inputs != "structure" else 0) + (
            self._feature_scale()[0].size if inputs != "embedding" else 0)

    def _feature_scale(self) -> tuple[np.ndarray, np.ndarray]:
        # Over a fixed sample of the space, so every problem on one space scales alike.
        if self._scale_of_features is None:
            sample = structure_features_of_embeddings(
                self.random_embeddings(_SCALE_SAMPLE, np.random.default_rng(0)), self.space)
            low = sample.min(axis=0)
            self._scale_of_features = (low, np.maximum(sample.max(axis=0) - low, 1e-9))
        return self._scale_of_features

    # -- valid pairs ----------------------------------------------------------------------------------

    def project_arch(self, Z: np.ndarray) -> np.ndarray:
        """The nearest valid embeddings (n, arch_dim) int64 to normalised points ``Z`` (n, arch_dim):
        scaled back to embedding units, then rounded, clipped and unused slots zeroed."""
        return repair_embeddings(np.asarray(Z, dtype=float) * self._scale, self.space)

    def unused_slots(self, Z: np.ndarray) -> np.ndarray:
        """True for the entries of normalised points ``Z`` past each point's (rounded) layer count."""
        used = 1 + 3 * self._depths[self.project_arch(Z)[:, 0]]
        return np.arange(Z.shape[1])[None, :] >= used[:, None]

    def is_consistent(self, Z: np.ndarray) -> np.ndarray:
        """True where rounding ``Z`` already gives a valid embedding (nothing to repair)."""
        # an entry out of bounds or in an unused slot is moved by the projection, so differs from it
        rounded = np.rint(np.asarray(Z, dtype=float) * self._scale)
        return np.all(rounded == self.project_arch(Z), axis=1)

    def random_embeddings(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniformly drawn valid embeddings (each layer's head count first, then its op mix)."""
        d = self.arch_dim
        X = np.zeros((n, d), dtype=np.int64)
        X[:, 0] = rng.integers(0, self.upper[0] + 1, n)
        X[:, 1::3] = rng.integers(0, self.upper[1] + 1, (n, (d - 1) // 3))
        X[:, 2::3] = rng.integers(0, self.upper[2] + 1, (n, (d - 1) // 3))
        starts, sizes = self._head_blocks
        block = rng.integers(0, len(sizes), (n, (d - 1) // 3))
        X[:, 3::3] = starts[block] + np.floor(rng.random(block.shape) * sizes[block]).astype(np.int64)
        return repair_embeddings(X, self.space)  # every entry is in bounds: this zeroes unused slots

    def random_pairs(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.random_embeddings(n, rng), rng.integers(0, self.n_devices, n)

    def mutate(self, X: np.ndarray, rng: np.random.Generator, n_changes: int = 1) -> np.ndarray:
        """Neighbours of valid embeddings: each changes ``n_changes`` genes (the layer count, or one
        used layer's width, feed-forward stack or attention mix) to a random valid value. A deeper
        model copies its last layer into the new slots."""
        X = np.array(X, dtype=np.int64)
        rows = np.arange(len(X))
        for _ in range(n_changes):
            fresh = self.random_embeddings(len(X), rng)
            depth_before = self._depths[X[:, 0]]
            gene = np.floor(rng.random(len(X)) * (1 + 3 * depth_before)).astype(np.int64)
            X[rows, gene] = fresh[rows, gene]
            for row in np.flatnonzero(self._depths[X[:, 0]] > depth_before):
                last = 3 * (depth_before[row] - 1) + 1
                for slot in range(depth_before[row], self._depths[X[row, 0]]):
                    X[row, 3 * slot + 1: 3 * slot + 4] = X[row, last: last + 3]
            X = repair_embeddings(X, self.space)
        return X

    def initial_pairs(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A seeded Latin-hypercube sample of architectures, each on a device drawn in turn from a
        seeded permutation (so the devices appear equally often)."""
        from flexibert import sample_architectures

        rng = np.random.default_rng(seed)
        specs = sample_architectures(n, method="lhs", seed=int(rng.integers(2**31)), space=self.space)
        X = np.array([embed(spec, self.space) for spec in specs], dtype=np.int64)
        order = np.concatenate([rng.permutation(self.n_devices) for _ in range(-(-n // self.n_devices))])
        return X, order[:n]

    def spec(self, embedding: Sequence[int]) -> ArchSpec:
        return decode(list(embedding), self.space)

    # -- EVALUATE -------------------------------------------------------------------------------------

    def evaluate(self, X: np.ndarray, device: np.ndarray) -> list[Evaluation]:
        """EVALUATE valid pairs on the oracle (each distinct pair is asked once; answers are kept)."""
        X = np.asarray(X, dtype=np.int64)
        device = np.asarray(device, dtype=np.int64)
        keys = [(row.tobytes(), int(d)) for row, d in zip(X, device)]
        pending: dict[tuple[bytes, int], int] = {}
        for i, key in enumerate(keys):
            if key not in self._cache:
                pending.setdefault(key, i)
                self._asked.setdefault(key, len(self._asked))
        for d in sorted({key[1] for key in pending}):
            rows = [i for key, i in pending.items() if key[1] == d]
            self._evaluate_device(X[rows], d, [keys[i] for i in rows])
        return [self._cache[key] for key in keys]

    def _evaluate_device(self, X: np.ndarray, device: int, keys: list[tuple[bytes, int]]) -> None:
        specs = [self.spec(row) for row in X]
        predicted = self.oracle.predict(specs, self.devices[device])
        self.n_oracle_calls += len(specs)
        means = {m: (None if predicted.get(m) is None else np.asarray(predicted[m]["mean"], float)) for m in MEASURES}
        stds = {m: (None if predicted.get(m) is None else np.asarray(predicted[m]["std"], float)) for m in MEASURES}
        needed = ["accuracy", *self.weights.needed_measures()]
        finite = np.all([np.isfinite(means[m]) for m in needed], axis=0)
        safe = {m: (None if v is None else np.where(np.isfinite(v), v, 0.0)) for m, v in means.items()}
        terms = normalised_terms(safe, self.weights, self.bounds, self.normalise)
        term_spread = term_stds(safe, stds, self.weights, self.bounds, self.normalise)
        spreads = term_spread ** 2 @ term_weights(self.weights) ** 2
        scores = terms @ term_weights(self.weights)
        feasible = finite & ~self.constraints.violated(safe)
        scores = np.where(feasible, scores, P_MIN)
        spreads = np.where(feasible, np.sqrt(spreads), 0.0)
        new = []
        for i, key in enumerate(keys):
            self._cache[key] = Evaluation(
                embedding=tuple(int(v) for v in X[i]), device=device, performance=float(scores[i]),
                terms=tuple(float(t) for t in terms[i]),
                means={m: None if v is None else float(v[i]) for m, v in means.items()},
                stds={m: None if v is None else float(v[i]) for m, v in stds.items()},
                feasible=bool(feasible[i]), performance_std=float(spreads[i]),
            )
            new.append(self._cache[key])
        if self.on_evaluated is not None:
            self.on_evaluated(new)

    def preload(self, evaluations: Sequence[Evaluation]) -> None:
        """Take earlier evaluations of this problem (a resumed search) as known: asking for them again
        costs no oracle call."""
        for e in evaluations:
            key = (np.asarray(e.embedding, dtype=np.int64).tobytes(), int(e.device))
            self._cache[key] = e
            self._asked.setdefault(key, len(self._asked))

    def evaluated(self) -> list[Evaluation]:
        """Every evaluation so far (preloaded ones included), in the order they were made."""
        return [self._cache[key] for key in sorted(self._cache, key=self._asked.__getitem__)]

    def seen(self, X: np.ndarray, device: np.ndarray) -> np.ndarray:
        """True for pairs already evaluated on this problem."""
        return np.array([(row.tobytes(), int(d)) in self._cache
                         for row, d in zip(np.asarray(X, dtype=np.int64), device)], dtype=bool)

    def describe(self, evaluation: Evaluation) -> dict[str, Any]:
        """JSON-ready description of an evaluated pair."""
        from flexibert import model_hash

        spec = self.spec(evaluation.embedding)
        return {
            "device": self.devices[evaluation.device],
            "runtime": self.runtime(evaluation.device),
            "model_dict": spec.to_model_dict(),
            "hash": model_hash(spec),
            "embedding": list(evaluation.embedding),
            "predicted": {m: evaluation.means[m] for m in MEASURES},
            "predicted_std": {m: evaluation.stds[m] for m in MEASURES},
            "performance": evaluation.performance,
            "performance_std": evaluation.performance_std,
        }


def _head_blocks(space: DesignSpace) -> tuple[np.ndarray, np.ndarray]:
    """(first index, size) of each head count's block of attention indices."""
    starts, sizes, start = [], [], 0
    for n_heads in space.attention_heads:
        size = sum(1 for ops in space.attention_ops if len(ops) == n_heads)
        starts.append(start)
        sizes.append(size)
        start += size
    return np.array(starts, dtype=np.int64), np.array(sizes, dtype=np.int64)
