"""PyTorch models of FlexiBERT 2.0 architectures.

Structure of the encoder built by :func:`build_model` (names as in ``named_parameters``)::

    embeddings.word_embeddings       Embedding(vocab, h0)
    embeddings.position_embeddings   Embedding(max_positions, h0)   learned absolute positions
    embeddings.layer_norm            LayerNorm(h0)
    layers.<i>.heads.<j>             one head per op, canonical order, each with ``.op_type``
    layers.<i>.attention_output      Linear(n·d -> h)   then dropout, residual, attention_norm
    layers.<i>.feed_forward.linears  Linear(h->f0), GELU, ..., Linear(f_last->h)
    layers.<i>.output_norm           LayerNorm(h) after the feed-forward residual
    projections.<i>                  Linear(h_i -> h_{i+1}) between layers of differing width,
                                     Identity otherwise

Weights start as in BERT: Linear, Embedding and Conv1d weights N(0, 0.02), biases 0, LayerNorm
(1, 0), WMA matrices U(-0.1, 0.1), all drawn from a local ``torch.Generator`` seeded by ``seed``.
Modules are built on the meta device first, so building never touches the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from flexibert._ops import Head, WeightedMultiplicativeHead, group_kind, make_head, run_head_group
from flexibert._spec import DEFAULT_MAX_POSITIONS, DEFAULT_VOCAB_SIZE, ArchSpec, LayerSpec, as_spec

DEFAULT_DROPOUT = 0.1
_INIT_STD = 0.02
_LAYER_NORM_EPS = 1e-12


class Embeddings(nn.Module):
    """Word plus learned absolute position embeddings, LayerNorm and dropout."""

    def __init__(self, vocab_size: int, max_positions: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
        self.position_embeddings = nn.Embedding(max_positions, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        return self.dropout(self.layer_norm(hidden))


class FeedForward(nn.Module):
    """Linear(h -> f0), GELU, Linear(f0 -> f1), GELU, ..., Linear(f_last -> h)."""

    def __init__(self, hidden_size: int, ff_dims: tuple[int, ...]) -> None:
        super().__init__()
        widths = (hidden_size, *ff_dims, hidden_size)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for linear in self.linears[:-1]:
            hidden = F.gelu(linear(hidden))
        return self.linears[-1](hidden)


class EncoderLayer(nn.Module):
    """Heterogeneous heads, output dense + residual + LayerNorm, then the feed-forward stack."""

    def __init__(self, layer: LayerSpec, dropout: float = DEFAULT_DROPOUT) -> None:
        super().__init__()
        self.spec = layer
        hidden, n_heads, head_dim = layer.hidden_size, layer.n_heads, layer.head_dim
        self.heads = nn.ModuleList(make_head(op, hidden, head_dim, dropout) for op in layer.ops)
        self.attention_output = nn.Linear(n_heads * head_dim, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=_LAYER_NORM_EPS)
        self.feed_forward = FeedForward(hidden, layer.ff_dims)
        self.output_norm = nn.LayerNorm(hidden, eps=_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self._groups = _contiguous_groups(self.heads)

    @property
    def op_types(self) -> tuple[str, ...]:
        return tuple(head.op_type for head in self.heads)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        parts = [run_head_group(self.heads[start:stop], hidden, attention_mask) for start, stop in self._groups]
        context = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        hidden = self.attention_norm(hidden + self.dropout(self.attention_output(context)))
        return self.output_norm(hidden + self.dropout(self.feed_forward(hidden)))


def _contiguous_groups(heads: nn.ModuleList) -> list[tuple[int, int]]:
    """Runs of heads that can be computed fused; canonical order keeps each kind contiguous."""
    groups: list[tuple[int, int]] = []
    start = 0
    for index in range(1, len(heads) + 1):
        if index == len(heads) or group_kind(heads[index]) != group_kind(heads[start]):
            groups.append((start, index))
            start = index
    return groups


class FlexiBertEncoder(nn.Module):
    """Maps ``input_ids`` ``[batch, seq]`` to hidden states ``[batch, seq, h_last]``.

    ``attention_mask`` (optional, ``[batch, seq]``, 1 = token, 0 = padding) hides padding from
    self-attention keys and zeroes padded values before DFT/DCT mixing and convolutions.
    """

    def __init__(
        self,
        spec: ArchSpec,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        max_positions: int = DEFAULT_MAX_POSITIONS,
        dropout: float = DEFAULT_DROPOUT,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.vocab_size = vocab_size
        self.max_positions = max_positions
        widths = spec.hidden_sizes
        self.embeddings = Embeddings(vocab_size, max_positions, widths[0], dropout)
        self.layers = nn.ModuleList(EncoderLayer(layer, dropout) for layer in spec.layers)
        self.projections = nn.ModuleList(
            nn.Linear(a, b) if a != b else nn.Identity() for a, b in zip(widths[:-1], widths[1:])
        )

    @property
    def hidden_size(self) -> int:
        """Width of the output hidden states."""
        return self.spec.layers[-1].hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not _is_tracing() and input_ids.shape[1] > self.max_positions:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_positions={self.max_positions}"
            )
        hidden = self.embeddings(input_ids)
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, attention_mask)
            if index < len(self.projections):
                hidden = self.projections[index](hidden)
        return hidden


class MaskedLMHead(nn.Module):
    """Dense + GELU + LayerNorm + decoder. The decoder is not tied to the word embeddings, since
    the first and last layers may have different widths."""

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=_LAYER_NORM_EPS)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(hidden))))


class FlexiBertForMaskedLM(nn.Module):
    """Encoder + :class:`MaskedLMHead`: ``input_ids`` -> logits ``[batch, seq, vocab]``."""

    def __init__(self, encoder: FlexiBertEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.mlm_head = MaskedLMHead(encoder.hidden_size, encoder.vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlm_head(self.encoder(input_ids, attention_mask))


class FlexiBertForSequenceClassification(nn.Module):
    """Encoder, first-token pooling (dense + tanh), dropout and a linear classifier:
    ``input_ids`` -> logits ``[batch, num_labels]``."""

    def __init__(self, encoder: FlexiBertEncoder, num_labels: int, dropout: float = DEFAULT_DROPOUT) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_labels = num_labels
        self.pooler = nn.Linear(encoder.hidden_size, encoder.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        pooled = torch.tanh(self.pooler(self.encoder(input_ids, attention_mask)[:, 0]))
        return self.classifier(self.dropout(pooled))


# -- construction ------------------------------------------------------------------------------------


def build_model(
    spec,
    seed: int = 0,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    dropout: float = DEFAULT_DROPOUT,
) -> FlexiBertEncoder:
    """The encoder of ``spec`` (an :class:`ArchSpec` or model_dict), initialised from ``seed``.

    Returned in eval mode (dropout off); call ``.train()`` before training.
    """
    spec = as_spec(spec)
    _check_sizes(vocab_size, max_positions, dropout)
    return _build(lambda: FlexiBertEncoder(spec, vocab_size, max_positions, dropout), seed)


def build_mlm_model(
    spec,
    seed: int = 0,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    dropout: float = DEFAULT_DROPOUT,
) -> FlexiBertForMaskedLM:
    """Encoder + masked-language-model head (untied decoder). Its ``.encoder`` equals
    ``build_model(spec, seed, ...)``. Returned in eval mode."""
    spec = as_spec(spec)
    _check_sizes(vocab_size, max_positions, dropout)
    return _build(lambda: FlexiBertForMaskedLM(FlexiBertEncoder(spec, vocab_size, max_positions, dropout)), seed)


def build_classifier(
    spec,
    num_labels: int = 2,
    seed: int = 0,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_positions: int = DEFAULT_MAX_POSITIONS,
    dropout: float = DEFAULT_DROPOUT,
) -> FlexiBertForSequenceClassification:
    """Encoder + sequence-classification head. Its ``.encoder`` equals ``build_model(spec, seed, ...)``.
    Returned in eval mode."""
    spec = as_spec(spec)
    _check_sizes(vocab_size, max_positions, dropout)
    if not isinstance(num_labels, int) or num_labels <= 0:
        raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
    return _build(
        lambda: FlexiBertForSequenceClassification(
            FlexiBertEncoder(spec, vocab_size, max_positions, dropout), num_labels, dropout
        ),
        seed,
    )


def _check_sizes(vocab_size: int, max_positions: int, dropout: float) -> None:
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if not isinstance(max_positions, int) or max_positions <= 0:
        raise ValueError(f"max_positions must be a positive int, got {max_positions!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")


def _build(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.device("meta"):
        model = factory()
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(int(seed))
    initialize_weights(model, generator)
    return model.eval()


@torch.no_grad()
def initialize_weights(model: nn.Module, generator: torch.Generator) -> None:
    """BERT-style initialisation of every parameter, in module order, from ``generator``."""
    done: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
            module.weight.normal_(0.0, _INIT_STD, generator=generator)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, WeightedMultiplicativeHead):
            module.mix.uniform_(-0.1, 0.1, generator=generator)
        else:
            continue
        done.update(id(p) for p in module.parameters(recurse=False))
    missed = [name for name, p in model.named_parameters() if id(p) not in done]
    if missed:
        raise RuntimeError(f"parameters without an initialiser: {missed}")


def _is_tracing() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


__all__ = [
    "Embeddings",
    "EncoderLayer",
    "FeedForward",
    "FlexiBertEncoder",
    "FlexiBertForMaskedLM",
    "FlexiBertForSequenceClassification",
    "Head",
    "MaskedLMHead",
    "build_classifier",
    "build_mlm_model",
    "build_model",
]
