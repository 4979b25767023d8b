"""One immutable description of an architecture: ``ArchSpec`` made of ``LayerSpec``s.

The reference ``model_dict`` format is ``{"l": L, "o": [[op, ...] per layer], "h": [hidden per layer],
"f": [[ff widths] per layer]}`` with op strings ``<type>_<headdim>`` such as ``sa_sdp_64`` or
``c_9_21``; the head dimension is always ``hidden // heads`` (floor division).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flexibert._errors import InvalidArchitectureError

# Model-building defaults shared by the torch models and the analytic cost formulas.
DEFAULT_VOCAB_SIZE = 30522
DEFAULT_MAX_POSITIONS = 512

_BASE_ORDER = {"sa_sdp": 0, "sa_wma": 1, "l_dft": 2, "l_dct": 3}


def op_sort_key(op_type: str) -> tuple[int, int]:
    """Canonical head order: sa_sdp, sa_wma, l_dft, l_dct, then convolutions by kernel size."""
    if op_type in _BASE_ORDER:
        return (_BASE_ORDER[op_type], 0)
    if op_type.startswith("c_") and op_type[2:].isdigit():
        return (len(_BASE_ORDER), int(op_type[2:]))
    raise InvalidArchitectureError(f"unknown operation type '{op_type}'")


def conv_kernel_size(op_type: str) -> int | None:
    """Kernel size of a ``c_<k>`` operation, None for other types."""
    return int(op_type[2:]) if op_type.startswith("c_") else None


def _split_op(op: str, where: str) -> tuple[str, int]:
    """'sa_sdp_64' -> ('sa_sdp', 64); 'c_13_21' -> ('c_13', 21)."""
    if not isinstance(op, str):
        raise InvalidArchitectureError(f"{where}, field 'o': operation {op!r} is not a string")
    op_type, sep, head_dim = op.rpartition("_")
    if not sep or not head_dim.isdigit():
        raise InvalidArchitectureError(
            f"{where}, field 'o': operation '{op}' must look like '<type>_<head dim>', e.g. 'sa_sdp_64'"
        )
    try:
        op_sort_key(op_type)
    except InvalidArchitectureError:
        raise InvalidArchitectureError(
            f"{where}, field 'o': unknown operation type '{op_type}' in '{op}'"
        ) from None
    return op_type, int(head_dim)


@dataclass(frozen=True)
class LayerSpec:
    """One encoder layer: its width, its attention heads (op types) and its feed-forward stack."""

    hidden_size: int
    ops: tuple[str, ...]
    ff_dims: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(sorted(self.ops, key=op_sort_key)))
        object.__setattr__(self, "ff_dims", tuple(int(d) for d in self.ff_dims))
        if not isinstance(self.hidden_size, int) or self.hidden_size <= 0:
            raise InvalidArchitectureError(f"field 'h': hidden size {self.hidden_size!r} must be a positive int")
        if not self.ops:
            raise InvalidArchitectureError("field 'o': a layer needs at least one attention head")
        if self.hidden_size < len(self.ops):
            raise InvalidArchitectureError(
                f"field 'o': {len(self.ops)} heads do not fit in hidden size {self.hidden_size}"
            )
        if not self.ff_dims or any(d <= 0 for d in self.ff_dims):
            raise InvalidArchitectureError(f"field 'f': feed-forward widths {list(self.ff_dims)} must be positive")

    @property
    def n_heads(self) -> int:
        return len(self.ops)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    @property
    def op_strings(self) -> list[str]:
        return [f"{op}_{self.head_dim}" for op in self.ops]


@dataclass(frozen=True)
class ArchSpec:
    """An architecture of the FlexiBERT 2.0 design space. Immutable and hashable.

    Build one with :meth:`from_model_dict` (which validates against a design space) or directly
    from ``LayerSpec``s. Heads inside a layer are kept in canonical order, so two specs are equal
    exactly when they describe the same architecture.
    """

    layers: tuple[LayerSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise InvalidArchitectureError("field 'l': an architecture needs at least one layer")

    # -- conversion -----------------------------------------------------------------------------

    @classmethod
    def from_model_dict(cls, model_dict: dict[str, Any], space=None) -> ArchSpec:
        """Parse and validate a reference ``model_dict``.

        ``space`` is a :class:`DesignSpace` (default: FlexiBERT 2.0); pass ``space=False`` to skip the
        membership check (structure is still checked).
        """
        if not isinstance(model_dict, dict):
            raise InvalidArchitectureError(f"a model_dict must be a dict, got {type(model_dict).__name__}")
        for key in ("l", "o", "h", "f"):
            if key not in model_dict:
                raise InvalidArchitectureError(f"field '{key}' is missing from the model_dict")
        unknown = sorted(str(key) for key in model_dict if key not in ("l", "o", "h", "f"))
        if unknown:
            # A misspelt or foreign field would otherwise be dropped without a word (and an 80 MB one
            # carried through every reader); a model_dict has exactly these four.
            shown = ", ".join(repr(key[:40]) for key in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
            raise InvalidArchitectureError(f"unknown field(s) {shown} in the model_dict; it holds exactly "
                                           "'l', 'o', 'h' and 'f'")
        num_layers = model_dict["l"]
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers <= 0:
            raise InvalidArchitectureError(f"field 'l': {num_layers!r} must be a positive int")
        for key in ("o", "h", "f"):
            value = model_dict[key]
            if not isinstance(value, (list, tuple)) or len(value) != num_layers:
                length = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
                raise InvalidArchitectureError(
                    f"field '{key}': expected a list with one entry per layer ({num_layers}), got {length}"
                )
        layers = [cls._parse_layer(index, model_dict) for index in range(num_layers)]
        spec = cls(tuple(layers))
        if space is not False:
            from flexibert._space import DesignSpace

            (space or DesignSpace.default()).validate(spec)
        return spec

    @staticmethod
    def _parse_layer(index: int, model_dict: dict[str, Any]) -> LayerSpec:
        where = f"layer {index}"
        hidden = model_dict["h"][index]
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden <= 0:
            raise InvalidArchitectureError(f"{where}, field 'h': hidden size {hidden!r} must be a positive int")
        ops = model_dict["o"][index]
        if not isinstance(ops, (list, tuple)) or not ops:
            raise InvalidArchitectureError(f"{where}, field 'o': expected a non-empty list of operations")
        parsed = [_split_op(op, where) for op in ops]
        expected_dim = hidden // len(ops)
        for op, (_, head_dim) in zip(ops, parsed):
            if head_dim != expected_dim:
                raise InvalidArchitectureError(
                    f"{where}, field 'o': operation '{op}' has head dim {head_dim}, but hidden {hidden} "
                    f"with {len(ops)} heads gives {expected_dim}"
                )
        ff = model_dict["f"][index]
        if not isinstance(ff, (list, tuple)) or not ff:
            raise InvalidArchitectureError(f"{where}, field 'f': expected a non-empty list of widths")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in ff):
            raise InvalidArchitectureError(f"{where}, field 'f': widths {ff!r} must be positive ints")
        try:
            return LayerSpec(hidden, tuple(op_type for op_type, _ in parsed), tuple(ff))
        except InvalidArchitectureError as error:
            raise InvalidArchitectureError(f"{where}, {error}") from None

    def to_model_dict(self) -> dict[str, Any]:
        return {
            "l": self.num_layers,
            "o": [layer.op_strings for layer in self.layers],
            "h": [layer.hidden_size for layer in self.layers],
            "f": [list(layer.ff_dims) for layer in self.layers],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_model_dict())

    @classmethod
    def from_json(cls, text: str, space=None) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidArchitectureError(f"model_dict is not valid JSON: {error}") from None
        except RecursionError:
            raise InvalidArchitectureError("model_dict is nested too deeply to be one") from None
        return cls.from_model_dict(data, space=space)

    # -- shape ------------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_sizes(self) -> list[int]:
        return [layer.hidden_size for layer in self.layers]

    @property
    def head_counts(self) -> list[int]:
        return [layer.n_heads for layer in self.layers]

    def replace_layer(self, index: int, layer: LayerSpec) -> ArchSpec:
        layers = list(self.layers)
        layers[index] = layer
        return ArchSpec(tuple(layers))

    def __str__(self) -> str:
        parts = [
            f"{layer.hidden_size}:{'+'.join(layer.ops)}|ff{'-'.join(map(str, layer.ff_dims))}"
            for layer in self.layers
        ]
        return f"ArchSpec({self.num_layers} layers: {', '.join(parts)})"


def as_spec(spec_or_dict: ArchSpec | dict | Iterable) -> ArchSpec:
    """Accept an ArchSpec or a model_dict."""
    if isinstance(spec_or_dict, ArchSpec):
        return spec_or_dict
    if isinstance(spec_or_dict, dict):
        return ArchSpec.from_model_dict(spec_or_dict)
    raise TypeError(f"expected an ArchSpec or a model_dict, got {type(spec_or_dict).__name__}")
