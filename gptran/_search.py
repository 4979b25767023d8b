"""GPTran: grow and prune one architecture block by block under the masked-language-modelling loss.

The search keeps a tree of trained models. Expanding a node in one mode (see
:mod:`gptran._mutations`) makes its children: each inherits the node's weights, trains for that
mode's number of steps and is scored by its held-out MLM loss. Then:

- **Acceptance.** The best child of a grow becomes the current node if its loss is lower than the
  node's. The best child of a prune becomes the current node if its loss is at most
  ``node loss × (1 + prune_tolerance)``: a smaller model may cost a little loss.
- **Children.** Never repeat an architecture of their own lineage: the search does not undo its
  own steps (new heads start small, so a magnitude prune would otherwise remove them first).
- **Modes.** A node tries the modes in the cycle grow_attn_head → grow_ffnn → prune_attn_head →
  prune_ffnn, starting after the mode that made it (the root starts with grow_attn_head). A mode that
  has no child inside the design space is skipped.
- **Backtracking.** After ``branch_patience`` expansions in a row without an accepted child, or when
  the current node has tried every mode, the node is marked stalled and the search moves to the node
  with the lowest loss that is not stalled, still has an untried mode, and is neither a prune child
  rejected by the tolerance test nor a rejected child of a stalled node.
- **Budget.** An expansion makes up to ``num_samples`` children (grow) or ``prune_samples``
  (prune), fewer when the remaining budget must keep one model for each mode not tried yet.
- **Stopping.** After ``max_nodes`` trained models (root included), after ``stop_patience``
  expansions without a new best loss, or when no node is left to expand.

The state (tree, cursor, and one ``state_dict`` per node saved with ``torch.save`` and read back with
``weights_only=True``) is written after every trained node, so an interrupted search resumes where
it stopped when it is started again on the same directory.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from flexibert import ArchSpec, DesignSpace, as_spec, model_hash
from gptran._mutations import (
    GROW_ATTENTION,
    GROW_FEED_FORWARD,
    MODES,
    PRUNE_ATTENTION,
    PRUNE_FEED_FORWARD,
    Mutation,
    feed_forward_growths,
    feed_forward_magnitudes,
    grow_attention_heads,
    growable_head_slots,
    head_gradient_norms,
    head_magnitudes,
    inherit_weights,
    prune_attention_heads,
    prune_feed_forward,
)

ROOT = "root"
STATE_FILE = "search.json"
CHECKPOINT_DIR = "checkpoints"
STATE_FORMAT = "gptran-search"
STATE_VERSION = 1

# Table IV of the paper: training steps per child at paper scale. `steps_per_child` stands for the
# 20k of grow_attn_head; the other modes keep these ratios.
PAPER_STEPS = {GROW_ATTENTION: 20_000, GROW_FEED_FORWARD: 50_000, PRUNE_ATTENTION: 30_000, PRUNE_FEED_FORWARD: 20_000}
GROW_MODES = (GROW_ATTENTION, GROW_FEED_FORWARD)


class ChildTrainer(Protocol):
    """What the search needs from a training stack."""

    def build_model(self, spec: ArchSpec, seed: int) -> nn.Module:
        """A freshly initialised MLM model (with ``.encoder``) of ``spec``."""

    def train(self, model: nn.Module, steps: int, seed: int) -> list[tuple[int, float]]:
        """Train in place for ``steps`` steps (data order from ``seed``); the (step, loss) history."""

    def evaluate(self, model: nn.Module) -> float:
        """Held-out MLM loss with fixed masks (lower is better)."""

    def batch_loss(self, model: nn.Module, seed: int) -> torch.Tensor:
        """MLM loss of one training batch, differentiable (for head gradient norms)."""


@dataclass(frozen=True)
class SearchConfig:
    """Settings of a search. Defaults follow the paper (Table IV) where it has one."""

    steps_per_child: int = 100
    max_nodes: int = 12
    num_samples: int = 5  # children per grow
    prune_samples: int = 1  # children per prune (the paper prunes once)
    prune_tolerance: float = 0.02
    branch_patience: int = 2
    stop_patience: int = 5
    gradient_probability: float = 0.5  # grow next to the head with the largest gradient norm
    transfer: str = "ordered"
    paper_step_ratios: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        counts = ("steps_per_child", "max_nodes", "num_samples", "prune_samples", "branch_patience", "stop_patience")
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (isinstance(self.prune_tolerance, (int, float)) and self.prune_tolerance >= 0):
            raise ValueError(f"prune_tolerance must be >= 0, got {self.prune_tolerance!r}")
        if not 0.0 <= self.gradient_probability <= 1.0:
            raise ValueError(f"gradient_probability must lie in [0, 1], got {self.gradient_probability!r}")
        if self.transfer not in ("ordered", "random_projection"):
            raise ValueError(f"transfer must be 'ordered' or 'random_projection', got {self.transfer!r}")

    def steps_for(self, mode: str) -> int:
        """Training steps of a child made in ``mode`` (the root trains ``steps_per_child``)."""
        if mode == ROOT or not self.paper_step_ratios:
            return self.steps_per_child
        return max(1, round(self.steps_per_child * PAPER_STEPS[mode] / PAPER_STEPS[GROW_ATTENTION]))

    def identity(self) -> dict[str, Any]:
        """The settings a resumed search must share (``max_nodes`` and ``stop_patience`` may change)."""
        return {k: v for k, v in asdict(self).items() if k not in ("max_nodes", "stop_patience")}


@dataclass
class Node:
    """One trained (or planned) model of the tree."""

    id: int
    parent: int | None
    mode: str
    spec: ArchSpec
    description: str
    init_seed: int
    train_seed: int
    steps: int
    lineage_steps: int  # training steps from scratch to the end of this node's training
    change: dict[str, Any] | None = None  # how the changed layer maps onto the parent's
    status: str = "pending"  # "pending" | "trained"
    loss: float | None = None
    params: int | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    train_s: float = 0.0
    transferred_fraction: float | None = None
    accepted: bool | None = None  # None: root or not yet decided
    explored: list[str] = field(default_factory=list)
    stalled: bool = False

    @property
    def hash(self) -> str:
        return model_hash(self.spec)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["spec"] = self.spec.to_model_dict()
        data["hash"] = self.hash
        data["curve"] = [[int(s), float(v)] for s, v in self.curve]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["spec"] = ArchSpec.from_model_dict(data["spec"], space=False)
        values["curve"] = [(int(s), float(v)) for s, v in data.get("curve", [])]
        return cls(**values)


@dataclass
class Expansion:
    """Children made from one node in one mode, and the decision taken on them."""

    node: int
    mode: str
    children: list[int]
    accepted: int | None = None
    done: bool = False


class GrowAndPrune:
    """A resumable grow-and-prune search from ``root``.

    ``trainer`` implements :class:`ChildTrainer`. With ``out_dir`` the state is saved there after
    every node and an existing state is resumed; without it everything stays in memory.
    ``progress(event)`` receives a dict per event (``"node"``, ``"expansion"``, ``"backtrack"``,
    ``"finished"``, and ``"children"`` before an executor trains several children at once).
    ``executor`` (a :data:`ChildExecutor`, e.g. :func:`flexibert.ray_executor`): the children of each
    expansion are trained through it, all at once, and committed in order once all are back (a search
    interrupted meanwhile trains those children again when resumed); without it, one after another
    here. Either way the same seed gives the same tree.
    """

    def __init__(
        self,
        root: ArchSpec | dict,
        trainer: ChildTrainer,
        config: SearchConfig | None = None,
        out_dir: str | Path | None = None,
        space: DesignSpace | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
        executor: ChildExecutor | None = None,
    ) -> None:
        self.space = space or DesignSpace.default()
        self.executor = executor
        self.root_spec = ArchSpec.from_model_dict(root, space=self.space) if isinstance(root, dict) else as_spec(root)
        self.space.validate(self.root_spec)
        self.trainer = trainer
        self.config = config or SearchConfig()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress or (lambda event: None)
        self.nodes: list[Node] = []
        self.expansions: list[Expansion] = []
        self.events: list[dict[str, Any]] = []
        self.current = 0
        self.fails = 0
        self.stall = 0
        self.stop_reason: str | None = None
        self._memory: dict[int, dict[str, torch.Tensor]] = {}
        if self.out_dir is not None and (self.out_dir / STATE_FILE).is_file():
            self._load()

    # -- public ----------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def trained(self) -> list[Node]:
        return [node for node in self.nodes if node.status == "trained"]

    @property
    def best(self) -> Node:
        """The trained node with the lowest loss (ties: the earliest)."""
        trained = self.trained
        if not trained:
            raise RuntimeError("no node has been trained yet; call run() first")
        return min(trained, key=lambda node: (node.loss, node.id))

    def run(self) -> GrowAndPrune:
        """Search until a stopping rule holds; returns ``self``. Safe to interrupt and call again."""
        # Resumed with a larger budget or more patience: carry on.
        if self.stop_reason == "max_nodes" and len(self.trained) < self.config.max_nodes:
            self.stop_reason = None
        if self.stop_reason == "no_improvement" and self.stall < self.config.stop_patience:
            self.stop_reason = None
        if not self.nodes:
            self._plan_root()
        if self.nodes[0].status != "trained":
            self._train(self.nodes[0], None)
        while not self.finished:
            expansion = self._open_expansion()
            if expansion is None:
                break
            parent = self.nodes[expansion.node]
            self._train_children([self.nodes[i] for i in expansion.children if self.nodes[i].status != "trained"],
                                 parent)
            self._conclude(expansion)
        self.progress({"event": "finished", "reason": self.stop_reason, "best": self.best.id})
        return self

    def summary(self) -> dict[str, Any]:
        """``{"nodes": [{"id", "parent", "mode", "hash", "params", "loss"}, ...], "best": id}``."""
        nodes = [
            {"id": n.id, "parent": n.parent, "mode": n.mode, "hash": n.hash, "params": n.params, "loss": n.loss}
            for n in self.trained
        ]
        return {"nodes": nodes, "best": self.best.id if self.trained else None}

    def tree(self) -> dict[str, Any]:
        """The whole search as JSON-ready data (also the saved state)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "root": self.root_spec.to_model_dict(),
            "config": asdict(self.config),
            "space": self.space.to_dict(),
            "nodes": [node.to_dict() for node in self.nodes],
            "expansions": [asdict(e) for e in self.expansions],
            "events": self.events,
            "cursor": {"current": self.current, "fails": self.fails, "stall": self.stall},
            "stop_reason": self.stop_reason,
            "best": self.best.id if self.trained else None,
        }

    def lineage(self, node_id: int) -> list[Node]:
        """The nodes from the root down to ``node_id``."""
        chain = [self.nodes[node_id]]
        while chain[-1].parent is not None:
            chain.append(self.nodes[chain[-1].parent])
        return chain[::-1]

    def load_model(self, node_id: int) -> nn.Module:
        """The trained MLM model of a node."""
        node = self.nodes[node_id]
        if node.status != "trained":
            raise ValueError(f"node {node_id} has not been trained")
        model = self.trainer.build_model(node.spec, node.init_seed)
        model.load_state_dict(self._weights(node_id))
        return model

    # -- planning -------------------------------------------------------------------------------

    def _seed(self, *keys: int) -> int:
        return int(np.random.SeedSequence([self.config.seed, *keys]).generate_state(1)[0])

    def _plan_root(self) -> None:
        steps = self.config.steps_for(ROOT)
        self.nodes.append(Node(0, None, ROOT, self.root_spec, "root", self._seed(0, 0), self._seed(1, 0), steps, steps))

    def _open_expansion(self) -> Expansion | None:
        if self.expansions and not self.expansions[-1].done:
            return self.expansions[-1]
        while True:
            if len(self.trained) >= self.config.max_nodes:
                return self._stop("max_nodes")
            if self.stall >= self.config.stop_patience:
                return self._stop("no_improvement")
            node = self.nodes[self.current]
            mode = self._next_mode(node)
            if mode is None or self.fails >= self.config.branch_patience:
                if not self._backtrack():
                    return self._stop("exhausted")
                continue
            mutations = self._mutations(node, mode, len(self.expansions))
            if not mutations:  # nothing of this kind fits the design space: skip the mode
                node.explored.append(mode)
                continue
            children = [self._plan_child(node, mutation).id for mutation in mutations[: self._budget(mode)]]
            expansion = Expansion(node.id, mode, children)
            self.expansions.append(expansion)
            self._save()
            return expansion

    def _budget(self, mode: str) -> int:
        """Children this expansion may have: one model of the budget stays reserved for every other
        mode the search has not tried yet, so that a small ``max_nodes`` still visits every mode."""
        untried = {m for m in MODES if m != mode} - {node.mode for node in self.nodes}
        return max(1, self.config.max_nodes - len(self.trained) - len(untried))

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        self._save()
        return None

    @staticmethod
    def _next_mode(node: Node) -> str | None:
        start = 0 if node.mode == ROOT else MODES.index(node.mode) + 1
        for offset in range(len(MODES)):
            mode = MODES[(start + offset) % len(MODES)]
            if mode not in node.explored:
                return mode
        return None

    def _plan_child(self, parent: Node, mutation: Mutation) -> Node:
        node_id = len(self.nodes)
        steps = self.config.steps_for(mutation.mode)
        change = {
            "layer": mutation.layer,
            "head_sources": list(mutation.head_sources),
            "ff_change": list(mutation.ff_change) if mutation.ff_change else None,
            "ff_kept_units": list(mutation.ff_kept_units),
        }
        # Siblings share their data order (train_seed), so they are compared on equal terms.
        node = Node(
            node_id, parent.id, mutation.mode, mutation.child, mutation.description,
            init_seed=self._seed(0, node_id), train_seed=self._seed(1, parent.id, MODES.index(mutation.mode) + 1),
            steps=steps, lineage_steps=parent.lineage_steps + steps, change=change,
        )
        self.nodes.append(node)
        return node

    def _mutation_of(self, node: Node) -> Mutation:
        parent = self.nodes[node.parent]
        change = node.change
        return Mutation(
            node.mode, parent.spec, node.spec, change["layer"], node.description,
            tuple(change["head_sources"]),
            tuple(change["ff_change"]) if change["ff_change"] else None,
            tuple(change["ff_kept_units"]),
        )

    def _mutations(self, node: Node, mode: str, index: int) -> list[Mutation]:
        """The children of ``node`` in ``mode``, best first. A child that would repeat an
        architecture of its own lineage (undoing an earlier step) is passed over for the next one."""
        rng = np.random.default_rng(self._seed(2, index))
        seen = {ancestor.spec for ancestor in self.lineage(node.id)}
        if mode == GROW_ATTENTION:
            return self._grow_attention(node, rng, seen)
        if mode == GROW_FEED_FORWARD:
            growths = feed_forward_growths(node.spec, self.space)
            fresh = [growths[i] for i in rng.permutation(len(growths)) if growths[i].child not in seen]
            return fresh[: self.config.num_samples]
        model = self.load_model(node.id)
        if mode == PRUNE_ATTENTION:
            options = self._prune_attention(node, model)
        else:
            positions, units = feed_forward_magnitudes(model)
            options = []
            while (option := prune_feed_forward(node.spec, positions, units, self.space, len(options))) is not None:
                options.append(option)
        return [option for option in options if option.child not in seen][: self.config.prune_samples]

    def _grow_attention(self, node: Node, rng: np.random.Generator, seen: set[ArchSpec]) -> list[Mutation]:
        free = [
            slot for slot in growable_head_slots(node.spec, self.space)
            if grow_attention_heads(node.spec, *slot, self.space).child not in seen
        ]
        if not free:
            return []
        model = self.load_model(node.id)
        norms = head_gradient_norms(model, lambda m: self.trainer.batch_loss(m, self._seed(3, node.id)))
        heads = ((norm, layer, j) for layer, row in enumerate(norms) for j, norm in enumerate(row))
        ranked = sorted(heads, key=lambda t: (-t[0], t[1], t[2]))
        # Gradient-guided slots: the layer and op type of each head, by decreasing gradient norm.
        guided = list(dict.fromkeys((layer, node.spec.layers[layer].ops[j]) for _, layer, j in ranked))
        guided = [slot for slot in guided if slot in free]
        chosen: list[tuple[int, str]] = []
        while len(chosen) < self.config.num_samples and len(chosen) < len(free):
            use_gradient = rng.random() < self.config.gradient_probability
            pool = [slot for slot in guided if slot not in chosen] if use_gradient else []
            if pool:
                chosen.append(pool[0])
            else:
                left = [slot for slot in free if slot not in chosen]
                chosen.append(left[int(rng.integers(len(left)))])
        return [grow_attention_heads(node.spec, layer, op, self.space) for layer, op in chosen]

    def _prune_attention(self, node: Node, model: nn.Module) -> list[Mutation]:
        """One option per layer that can lose heads, the layer whose removed heads are weakest first."""
        options = []
        for layer, scores in enumerate(head_magnitudes(model)):
            if node.spec.layers[layer].n_heads > min(self.space.attention_heads):
                mutation = prune_attention_heads(node.spec, layer, scores, self.space)
                removed = [s for j, s in enumerate(scores) if j not in mutation.head_sources]
                options.append((float(np.mean(removed)), layer, mutation))
        options.sort(key=lambda item: item[:2])
        return [mutation for _, _, mutation in options]

    # -- training -------------------------------------------------------------------------------

    def _train_arguments(self, node: Node, parent: Node | None) -> tuple[Any, ...]:
        """The arguments of :func:`train_child` for ``node`` (the parent's weights included)."""
        inherit = None
        if parent is not None:
            inherit = (parent.spec, parent.init_seed, self._weights(parent.id), self._mutation_of(node),
                       self.config.transfer)
        return (self.trainer, node.spec, node.init_seed, node.steps, node.train_seed, inherit)

    def _train(self, node: Node, parent: Node | None) -> None:
        self._commit(node, train_child(*self._train_arguments(node, parent)))

    def _train_children(self, nodes: list[Node], parent: Node) -> None:
        """Train the children of one expansion: one after another here, or all at once through the
        executor (each is independent of its siblings); committed in order either way."""
        if self.executor is None or len(nodes) < 2:
            for node in nodes:
                self._train(node, parent)
            return
        self.progress({"event": "children", "parent": parent.id, "nodes": nodes})
        results = self.executor(train_child, [self._train_arguments(node, parent) for node in nodes])
        for node, result in zip(nodes, results):
            self._commit(node, result)

    def _commit(self, node: Node, result: TrainedChild) -> None:
        node.transferred_fraction = result.transferred_fraction
        node.curve = result.curve
        node.loss = result.loss
        node.params = result.params
        node.train_s = result.train_s
        node.status = "trained"
        self._store_state(node.id, result.state)
        self._save()
        self.progress({"event": "node", "node": node, "trained": len(self.trained), "max_nodes": self.config.max_nodes})

    def _conclude(self, expansion: Expansion) -> None:
        parent = self.nodes[expansion.node]
        children = [self.nodes[i] for i in expansion.children]
        best = min(children, key=lambda node: (node.loss, node.id))
        if expansion.mode in GROW_MODES:
            accept = best.loss < parent.loss
        else:
            accept = best.loss <= parent.loss * (1.0 + self.config.prune_tolerance)
        for child in children:
            child.accepted = accept and child is best
        parent.explored.append(expansion.mode)
        best_before = min((n.loss for n in self.trained if n.id not in expansion.children), default=math.inf)
        self.stall = 0 if best.loss < best_before else self.stall + 1
        if accept:
            expansion.accepted = best.id
            self.current, self.fails = best.id, 0
        else:
            self.fails += 1
        expansion.done = True
        self._save()
        self.progress({"event": "expansion", "expansion": expansion, "parent": parent, "best_child": best})

    def _backtrack(self) -> bool:
        """Leave the current branch for the next-best open node; False if there is none."""
        left = self.nodes[self.current]
        left.stalled = True
        stalled = {node.id for node in self.nodes if node.stalled}

        def open_(node: Node) -> bool:
            if node.status != "trained" or node.stalled or self._next_mode(node) is None:
                return False
            rejected = node.accepted is False
            return not (rejected and (node.mode not in GROW_MODES or node.parent in stalled))

        candidates = [node for node in self.nodes if open_(node)]
        if not candidates:
            return False
        target = min(candidates, key=lambda node: (node.loss, node.id))
        event = {"event": "backtrack", "from": left.id, "to": target.id, "after_node": len(self.nodes) - 1}
        self.events.append({k: v for k, v in event.items() if k != "event"} | {"kind": "backtrack"})
        self.current, self.fails = target.id, 0
        self._save()
        self.progress(event)
        return True

    # -- persistence ----------------------------------------------------------------------------

    def _checkpoint_path(self, node_id: int) -> Path:
        return self.out_dir / CHECKPOINT_DIR / f"node-{node_id}.pt"

    def _store_state(self, node_id: int, state: dict[str, torch.Tensor]) -> None:
        if self.out_dir is None:
            self._memory[node_id] = state
            return
        path = self._checkpoint_path(node_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        os.replace(temporary, path)

    def _weights(self, node_id: int) -> dict[str, torch.Tensor]:
        if self.out_dir is None:
            return self._memory[node_id]
        path = self._checkpoint_path(node_id)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint of node {node_id} is missing: {path}")
        return torch.load(path, map_location="cpu", weights_only=True)

    def _save(self) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / STATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.tree(), indent=1), encoding="utf-8")
        os.replace(temporary, path)

    def _load(self) -> None:
        path = self.out_dir / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise ValueError(f"{path} is not a valid search state: {error}") from None
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"{path} is not a {STATE_FORMAT} v{STATE_VERSION} state file")
        saved_root = ArchSpec.from_model_dict(state["root"], space=False)
        saved_config = SearchConfig(**state["config"])
        if saved_root != self.root_spec or saved_config.identity() != self.config.identity():
            raise ValueError(
                f"{self.out_dir} holds a search with a different root or settings "
                f"(saved: {saved_root}, {saved_config.identity()}); use another output directory"
            )
        if DesignSpace.from_dict(state["space"]) != self.space:
            raise ValueError(
                f"{self.out_dir} holds a search over a different design space; use another output directory"
            )
        self.nodes = [Node.from_dict(data) for data in state["nodes"]]
        self.expansions = [Expansion(**data) for data in state["expansions"]]
        self.events = list(state.get("events", []))
        cursor = state["cursor"]
        self.current, self.fails, self.stall = cursor["current"], cursor["fails"], cursor["stall"]
        self.stop_reason = state.get("stop_reason")


@dataclass
class TrainedChild:
    """What :func:`train_child` returns: the node's curve, loss, size, weights and timing."""

    curve: list[tuple[int, float]]
    loss: float
    params: int
    state: dict[str, torch.Tensor]
    transferred_fraction: float | None
    train_s: float


#: ``executor(train_child, argument_tuples)`` returns ``[train_child(*args) for args in argument_tuples]``,
#: in order, computed wherever it likes (e.g. Ray tasks: :func:`flexibert.ray_executor`).
ChildExecutor = Callable[[Callable[..., TrainedChild], list[tuple[Any, ...]]], list[TrainedChild]]


def train_child(trainer: ChildTrainer, spec: ArchSpec, init_seed: int, steps: int, train_seed: int,
                inherit: tuple[ArchSpec, int, dict[str, torch.Tensor], Mutation, str] | None = None) -> TrainedChild:
    """Build, initialise (from the parent's weights where ``inherit`` = ``(parent spec, parent init seed,
    parent weights, mutation, transfer mode)``), train and score one node. Depends on its arguments
    only, so a node trained in another process gets the same numbers."""
    started = time.perf_counter()
    model = trainer.build_model(spec, init_seed)
    fraction = None
    if inherit is not None:
        parent_spec, parent_seed, parent_state, mutation, transfer = inherit
        parent_model = trainer.build_model(parent_spec, parent_seed)
        parent_model.load_state_dict(parent_state)
        fraction = inherit_weights(parent_model, model, mutation, transfer, init_seed)
    curve = [(int(s), float(v)) for s, v in trainer.train(model, steps, train_seed)]
    loss = float(trainer.evaluate(model))
    if not math.isfinite(loss):
        loss = float("inf")  # a diverged child loses every comparison
    params = sum(p.numel() for p in model.encoder.parameters())
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainedChild(curve, loss, params, state, fraction, time.perf_counter() - started)


class MLMTrainer:
    """:class:`ChildTrainer` on a text corpus with :func:`flexibert._training.pretrain`.

    Every child gets a fresh AdamW and a linear warm-up (``warmup_fraction`` of its steps) and decay
    schedule, as the paper's children start from the parent's weights without its optimizer state.
    ``evaluate`` is the mean masked-token loss on ``eval_blocks`` (default: the corpus's validation
    split) with masks fixed by ``eval_seed``, so every model is scored on the same tokens.
    """

    def __init__(
        self,
        corpus,
        *,
        batch_size: int = 32,
        lr: float = 1e-3,
        warmup_fraction: float = 0.1,
        eval_blocks: torch.Tensor | None = None,
        eval_batch_size: int = 64,
        eval_seed: int = 0,
        device: str = "cpu",
        log_every: int = 10,
        max_positions: int | None = None,
        step_progress: Callable[[int, int, float], None] | None = None,
    ) -> None:
        from flexibert import DEFAULT_MAX_POSITIONS

        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {warmup_fraction!r}")
        self.corpus = corpus
        self.batch_size = batch_size
        self.lr = lr
        self.warmup_fraction = warmup_fraction
        self.eval_blocks = corpus.validation if eval_blocks is None else eval_blocks
        if len(self.eval_blocks) == 0:
            raise ValueError("the corpus has no validation blocks to score children on")
        self.eval_batch_size = eval_batch_size
        self.eval_seed = eval_seed
        self.device = device
        self.log_every = log_every
        self.max_positions = max(max_positions or DEFAULT_MAX_POSITIONS, corpus.seq_len)
        self.step_progress = step_progress

    def config(self, steps: int, seed: int):
        from flexibert import PretrainConfig

        return PretrainConfig(
            max_steps=steps, batch_size=self.batch_size, lr=self.lr, warmup_steps=int(self.warmup_fraction * steps),
            seed=seed, device=self.device, log_every=min(self.log_every, steps),
        )

    def build_model(self, spec: ArchSpec, seed: int) -> nn.Module:
        from flexibert import build_mlm_model

        return build_mlm_model(spec, seed=seed, vocab_size=self.corpus.vocab_size, max_positions=self.max_positions)

    def train(self, model: nn.Module, steps: int, seed: int) -> list[tuple[int, float]]:
        from flexibert import pretrain

        result = pretrain(model, self.corpus.train, self.config(steps, seed), progress=self.step_progress,
                          special_tokens=self.corpus.special_tokens)
        model.to("cpu")
        return list(result.loss_history)

    def evaluate(self, model: nn.Module, blocks: torch.Tensor | None = None) -> float:
        from flexibert import evaluate_mlm

        return evaluate_mlm(model, self.eval_blocks if blocks is None else blocks, self.eval_batch_size, self.eval_seed,
                            special_tokens=self.corpus.special_tokens)

    def batch_loss(self, model: nn.Module, seed: int) -> torch.Tensor:
        from flexibert import IGNORE_INDEX, mlm_batches

        special = self.corpus.special_tokens
        input_ids, labels = next(mlm_batches(self.corpus.train, self.batch_size, seed=seed % 2**63, shuffle=True,
                                             vocab_size=self.corpus.vocab_size, special_tokens=special))
        attention_mask = (input_ids != special.pad).long()
        logits = model(input_ids, attention_mask)
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


def run_search(
    root: ArchSpec | dict,
    trainer: ChildTrainer,
    config: SearchConfig | None = None,
    out_dir: str | Path | None = None,
    space: DesignSpace | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    executor: ChildExecutor | None = None,
) -> GrowAndPrune:
    """Run (or resume) a grow-and-prune search and return it; with ``executor``, the children of each
    expansion are trained through it, all at once."""
    return GrowAndPrune(root, trainer, config, out_dir, space, progress, executor).run()


__all__ = [
    "ChildExecutor", "ChildTrainer", "Expansion", "GrowAndPrune", "MLMTrainer", "Node", "PAPER_STEPS", "SearchConfig",
    "TrainedChild", "run_search", "train_child",
]
