"""The design space: which layer counts, widths, head counts, operations and feed-forward stacks exist."""

from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from flexibert._errors import InvalidArchitectureError

DEFAULT_SPACE_PATH = Path(__file__).with_name("design_space.yaml")

# Operation families this package can build. `c_<k>` is a dynamic-span convolution with odd kernel k.
_KNOWN_OP = re.compile(r"^(sa_sdp|sa_wma|l_dft|l_dct|c_[1-9][0-9]*)$")

_FIELDS = (
    "encoder_layers",
    "hidden_size",
    "attention_heads",
    "operation_types",
    "feed_forward_depth",
    "feed_forward_dims",
)


@dataclass(frozen=True)
class DesignSpace:
    """A FlexiBERT-style design space, read from YAML (see ``design_space.yaml``).

    Every list is ordered; the embedding stores indices into them. ``operation_types`` is in the
    canonical order used to sort the heads of a layer.
    """

    encoder_layers: tuple[int, ...]
    hidden_size: tuple[int, ...]
    attention_heads: tuple[int, ...]
    operation_types: tuple[str, ...]
    feed_forward_depth: tuple[int, ...]
    feed_forward_dims: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in _FIELDS:
            values = getattr(self, name)
            if not values:
                raise ValueError(f"design space field '{name}' is empty")
            if len(set(values)) != len(values):
                raise ValueError(f"design space field '{name}' has duplicates: {list(values)}")
            if name != "operation_types" and any(int(v) <= 0 for v in values):
                raise ValueError(f"design space field '{name}' must hold positive integers: {list(values)}")
        for op in self.operation_types:
            if not _KNOWN_OP.match(op):
                raise ValueError(
                    f"design space operation type '{op}' is unknown; known: sa_sdp, sa_wma, l_dft, l_dct, "
                    "c_<odd kernel size>"
                )
            if op.startswith("c_") and int(op[2:]) % 2 == 0:
                raise ValueError(f"design space operation type '{op}': convolution kernels must be odd")

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict) -> DesignSpace:
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise ValueError(f"design space is missing field(s) {missing}; expected {list(_FIELDS)}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"design space has unknown field(s) {unknown}; expected {list(_FIELDS)}")
        return cls(**{
            name: tuple(str(v) if name == "operation_types" else int(v) for v in data[name]) for name in _FIELDS
        })

    @classmethod
    def from_yaml(cls, path: str | Path) -> DesignSpace:
        """Read a design-space YAML file; every way it can be wrong is a ``ValueError`` naming the file
        (an ``OSError`` when it cannot be opened)."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a UTF-8 text file") from None
        except yaml.YAMLError as problem:
            raise ValueError(f"{path}: not valid YAML ({' '.join(str(problem).split())})") from None
        except RecursionError:
            raise ValueError(f"{path}: nested too deeply to be a design space") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a design space file must hold a mapping of {list(_FIELDS)}")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as problem:
            raise ValueError(f"{path}: {problem}") from None

    @classmethod
    def default(cls) -> DesignSpace:
        """The FlexiBERT 2.0 space (about 1.69e88 architectures)."""
        return _default_space()

    def to_dict(self) -> dict:
        return {name: list(getattr(self, name)) for name in _FIELDS}

    # -- derived lists ----------------------------------------------------------------------------

    @property
    def max_layers(self) -> int:
        return max(self.encoder_layers)

    @property
    def embedding_length(self) -> int:
        """One entry for the depth, then (hidden, feed-forward, attention) indices per layer slot."""
        return 1 + 3 * self.max_layers

    @property
    def feed_forward_ops(self) -> tuple[tuple[int, ...], ...]:
        """Every feed-forward stack, by depth, then in lexicographic (itertools.product) order."""
        return _feed_forward_ops(self)

    @property
    def attention_ops(self) -> tuple[tuple[str, ...], ...]:
        """Every multiset of head types, by head count, in combinations-with-replacement order."""
        return _attention_ops(self)

    @property
    def size(self) -> int:
        """Number of architectures in the space (exact integer)."""
        per_layer = len(self.hidden_size) * len(self.feed_forward_ops) * len(self.attention_ops)
        return sum(per_layer**layers for layers in self.encoder_layers)

    @property
    def log10_size(self) -> float:
        return math.log10(self.size)

    def op_rank(self, op_type: str) -> int:
        return self.operation_types.index(op_type)

    # -- validation ---------------------------------------------------------------------------------

    def validate(self, spec) -> None:
        """Raise InvalidArchitectureError naming the layer and field that falls outside this space."""
        if spec.num_layers not in self.encoder_layers:
            raise InvalidArchitectureError(
                f"field 'l': {spec.num_layers} layers is not in the design space {list(self.encoder_layers)}"
            )
        for index, layer in enumerate(spec.layers):
            where = f"layer {index}"
            if layer.hidden_size not in self.hidden_size:
                raise InvalidArchitectureError(
                    f"{where}, field 'h': hidden size {layer.hidden_size} is not in {list(self.hidden_size)}"
                )
            if layer.n_heads not in self.attention_heads:
                raise InvalidArchitectureError(
                    f"{where}, field 'o': {layer.n_heads} heads is not in {list(self.attention_heads)}"
                )
            for op in layer.ops:
                if op not in self.operation_types:
                    raise InvalidArchitectureError(
                        f"{where}, field 'o': operation '{op}' is not in {list(self.operation_types)}"
                    )
            if len(layer.ff_dims) not in self.feed_forward_depth:
                raise InvalidArchitectureError(
                    f"{where}, field 'f': a stack of {len(layer.ff_dims)} feed-forward layers is not in "
                    f"{list(self.feed_forward_depth)}"
                )
            for dim in layer.ff_dims:
                if dim not in self.feed_forward_dims:
                    raise InvalidArchitectureError(
                        f"{where}, field 'f': feed-forward width {dim} is not in {list(self.feed_forward_dims)}"
                    )

    def contains(self, spec) -> bool:
        try:
            self.validate(spec)
        except InvalidArchitectureError:
            return False
        return True


@functools.lru_cache(maxsize=1)
def _default_space() -> DesignSpace:
    return DesignSpace.from_yaml(DEFAULT_SPACE_PATH)


@functools.lru_cache(maxsize=8)
def _feed_forward_ops(space: DesignSpace) -> tuple[tuple[int, ...], ...]:
    return tuple(
        stack
        for depth in space.feed_forward_depth
        for stack in itertools.product(space.feed_forward_dims, repeat=depth)
    )


@functools.lru_cache(maxsize=8)
def _attention_ops(space: DesignSpace) -> tuple[tuple[str, ...], ...]:
    return tuple(
        heads
        for n_heads in space.attention_heads
        for heads in itertools.combinations_with_replacement(space.operation_types, n_heads)
    )
