"""Training-free accuracy metrics: rank architectures by what a freshly initialised model shows.

No training and no labels: each metric is one number per architecture, higher meaning predicted more
accurate, and a user scores an architecture without any GLUE result. There are three kinds.

*Size* (analytic, milliseconds, no model is built): ``flops`` of one 128-token sequence, ``params`` and
``params_no_embeddings``.

*Model* metrics, the ones Serianni and Kalita (ACL 2023, "Training-free NAS for RNNs and
Transformers") evaluated on NAS-Bench-BERT, written here from the papers that define them. Each
architecture is built by :func:`flexibert.build_mlm_model` from ``seed`` (eval mode: no dropout) and
run once, forward, on one fixed probe batch (:func:`training_free_probe`); the gradient metrics take one
backward pass of the masked-language-model loss ``L`` of that batch, and ``jacobian_cov`` one more:

- ``head_confidence`` (Voita et al. 2019): per head, the mean over tokens of its largest attention
  weight; the mean over heads. (Voita leaves out the end-of-sentence token; the probe's blocks run
  across sentence boundaries, so every token counts.)
- ``head_importance`` (Michel et al. 2019): a gate ``ξ_h = 1`` multiplies each head's output;
  ``|∂L/∂ξ_h|``, summed over the model's heads.
- ``synaptic_diversity`` (Zhou et al. 2022): ``Σ ‖W‖_nuc · ‖∂L/∂W‖_nuc`` over the weight matrices of
  every layer's multi-head block.
- ``synaptic_saliency`` (Zhou et al. 2022, after Tanaka et al. 2020): ``Σ |θ ⊙ ∂L/∂θ|`` over the
  feed-forward weights.
- ``activation_distance`` (Mellor et al. 2021, NASWOT): ``log|K_H|``, ``K_H[i, j]`` the number of
  feed-forward units on which sequences i and j of the batch agree in sign (the number of units
  minus the Hamming distance of their binary activation codes).
- ``jacobian_cov`` (Mellor et al. 2020): ``-Σ_i (log(λ_i + k) + 1/(λ_i + k))``, ``k = 1e-5``, over the
  eigenvalues ``λ`` of the correlation matrix of the sequences' input Jacobians.

*Combined*: a linear combination of the standardised (log) values of all the metrics above, with
weights and standardisation constants fitted by ``benchmarks/training_free.py`` on the 246 distinct
NAS-Bench-BERT architectures and shipped in ``datasets/accuracy/training_free_combination.json``. An
architecture's combined score uses only its own metric values and those constants.

On those 246 architectures (``benchmarks/results/training_free/README.md``) the combination ranks the
GLUE average with Kendall tau 0.626, cross-validated; the best single metric is FLOPs (0.511), and of
the literature's metrics the activation distance (0.466), which in this space follows the number of
feed-forward units. Voita's head confidence ranks far worse (0.148) than the published 0.48 of the
upstream "head confidence", which counts projection modules rather than attention weights (the
report traces each upstream column).

Choices the papers leave open, for a space that mixes operations per layer:

- Heads without attention weights. FlexiBERT layers hold self-attention heads (``sa_sdp``,
  ``sa_wma``: a softmax over every token), dynamic-convolution heads (``c_k``: a softmax over the k
  positions around each token, ConvBERT's attention restricted to a window) and linear
  transforms (``l_dft``, ``l_dct``: fixed, input-independent mixing with no distribution over tokens).
  ``head_confidence`` averages over the heads that have attention weights, both kinds, each over its
  own support; a window of k positions is a sharper attention than one over every token, just as Voita's
  confident "positional" heads are. Transform heads are left out; a model made only of them scores
  ``1 / seq_len``, the confidence of uniform attention, the least any head can have.
  ``head_importance`` needs only a head's output, so it gates every head of every operation.
- The multi-head block of ``synaptic_diversity`` is whatever a layer mixes tokens with, head by head
  (FlexiBERT's heads are separate modules, of different operations): each head's weight matrices
  (query, key, value, the WMA matrix, the convolution's key filters and kernel generator; a
  convolution filter as the matrix of its output channels) and the head's columns of the layer's
  attention output projection. Biases are left out.
- The Jacobian is taken of the sum of the MLM logits (the network's output, as Mellor et al. sum the
  logits) with respect to the embedding block's output (the continuous input every layer stack
  sees). The sum of the encoder's final hidden states would not do: a LayerNorm output with unit gain
  and zero bias sums to zero for every input, so its gradient is rounding noise.
- The activation codes are the signs of the inputs of every feed-forward GELU (``GELU(x) > 0``
  exactly when ``x > 0``), over every token of a sequence and every layer: one code per sequence.

The probe batch is real text: ``PROBE_SEQUENCES`` blocks of ``PROBE_TOKENS`` tokens, evenly spaced
through the validation split of the shipped corpus (``datasets/corpus``), tokenised with its tokenizer
(the ``train`` extra: ``tokenizers``), and masked BERT-style from ``seed``. Attention patterns,
activation codes and the MLM loss mean most on the kind of input a model is trained on; uniformly
random token ids have no repeated words or structure. The batch is small (16 × 32 tokens) so that a
12-layer, 768-wide model takes a few seconds on a CPU. Models are built with the tokenizer's
vocabulary (8,000 entries) and 32 positions, and one forward pass over the masked blocks serves every
metric. Everything is seeded (the model's weights, the
masks) and no global random state is read, so an architecture's values do not depend on which others
are scored with it, or in which order. They repeat bit for bit at a fixed number of torch threads;
another thread count sums float32 products in another order (about 1e-7 relative).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from flexibert import ArchSpec
from protran.vocabulary import (
    COMBINED_TRAINING_FREE_METRIC,
    TRAINING_FREE_METRICS,
    TRAINING_FREE_MODEL_METRICS,
    TRAINING_FREE_SIZE_METRICS,
)

if TYPE_CHECKING:
    import torch

    from flexibert import EncoderLayer, FlexiBertForMaskedLM

SIZE_METRICS = TRAINING_FREE_SIZE_METRICS
MODEL_METRICS = TRAINING_FREE_MODEL_METRICS
COMBINED_METRIC = COMBINED_TRAINING_FREE_METRIC
#: Metrics that need the gradient of the MLM loss.
_LOSS_GRADIENT_METRICS = frozenset({"head_importance", "synaptic_diversity", "synaptic_saliency"})

PROBE_SEQUENCES = 16
PROBE_TOKENS = 32
MASK_PROBABILITY = 0.15
JACOBIAN_K = 1e-5
FLOPS_SEQ_LEN = 128
_MASK_STREAM = 7  # the key of the masking seed, so it never equals the weights' seed

#: How each metric enters the combination before standardising: ``log`` of a positive value,
#: ``identity`` for a value that is a logarithm already, ``neg_log_neg`` (``-log(-x)``) for
#: ``jacobian_cov``, which is at most ``-PROBE_SEQUENCES`` because ``log x + 1/x >= 1``.
FEATURE_TRANSFORMS: dict[str, str] = {
    "flops": "log", "params": "log", "params_no_embeddings": "log", "head_confidence": "log",
    "head_importance": "log", "synaptic_diversity": "log", "synaptic_saliency": "log",
    "activation_distance": "identity", "jacobian_cov": "neg_log_neg",
}
_TINY = 1e-300


def training_free_combination_path() -> Path:
    """Where the fitted combination ships: ``datasets/accuracy/training_free_combination.json``."""
    from flexibert import DATASETS_DIR

    return DATASETS_DIR / "accuracy" / "training_free_combination.json"


# -- the probe batch ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ProbeBatch:
    """Token blocks ``[sequences, tokens]`` of real text, the same blocks masked for the MLM loss, and
    the labels (``-100`` where nothing is masked)."""

    input_ids: torch.Tensor
    masked_ids: torch.Tensor
    labels: torch.Tensor
    vocab_size: int

    @property
    def sequences(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def tokens(self) -> int:
        return int(self.input_ids.shape[1])


def training_free_probe_settings(seed: int = 0) -> dict[str, Any]:
    """What the model metrics are computed with: the seed of the weights and masks, the probe batch's
    size and masking rate, and where its text comes from."""
    return {"seed": seed, "sequences": PROBE_SEQUENCES, "tokens": PROBE_TOKENS, "mask_probability": MASK_PROBABILITY,
            "text": "datasets/corpus/validation.txt, evenly spaced blocks"}


@functools.lru_cache(maxsize=4)
def training_free_probe(seed: int = 0, sequences: int = PROBE_SEQUENCES, tokens: int = PROBE_TOKENS) -> ProbeBatch:
    """``sequences`` full blocks of ``tokens`` tokens, evenly spaced through the shipped corpus's
    validation text, masked from ``seed``."""
    import torch

    from flexibert import (
        CORPUS_DIR,
        SpecialTokens,
        derive_seed,
        load_tokenizer,
        mask_tokens,
        pack_blocks,
        read_documents,
    )

    tokenizer = load_tokenizer()
    special = SpecialTokens.from_tokenizer(tokenizer)
    documents = read_documents(CORPUS_DIR / "validation.txt")
    encodings = tokenizer.encode_batch(documents, add_special_tokens=False)
    blocks = pack_blocks([encoding.ids for encoding in encodings], tokens, special)[:-1]  # the last is padded
    if len(blocks) < sequences:
        raise ValueError(f"the validation text has {len(blocks)} blocks of {tokens} tokens, fewer than {sequences}")
    chosen = blocks[torch.linspace(0, len(blocks) - 1, sequences).round().long()]
    generator = torch.Generator().manual_seed(derive_seed(seed, _MASK_STREAM))
    masked, labels = mask_tokens(chosen, tokenizer.get_vocab_size(), MASK_PROBABILITY, generator=generator,
                                 special_tokens=special)
    return ProbeBatch(chosen, masked, labels, tokenizer.get_vocab_size())


# -- size metrics ------------------------------------------------------------------------------------------


def size_metrics(spec: ArchSpec) -> dict[str, float]:
    """FLOPs of one ``FLOPS_SEQ_LEN``-token sequence, parameters, and parameters without embeddings."""
    from flexibert import analytic_features, count_parameters, embedding_parameters

    params = count_parameters(spec)
    return {"flops": float(analytic_features(spec, batch_size=1, seq_len=FLOPS_SEQ_LEN)["flops"]),
            "params": float(params), "params_no_embeddings": float(params - embedding_parameters(spec))}


# -- model metrics: one instrumented forward pass -----------------------------------------------------------


@dataclass
class _Recording:
    """What the hooks keep from the forward pass."""

    layer_inputs: list[torch.Tensor] = field(default_factory=list)
    gates: list[torch.Tensor] = field(default_factory=list)
    unit_signs: list[torch.Tensor] = field(default_factory=list)  # bool [sequences, tokens, units]
    embedded: torch.Tensor | None = None


def encoder_layers(model: FlexiBertForMaskedLM) -> list[EncoderLayer]:
    return [cast("EncoderLayer", layer) for layer in model.encoder.layers]


def _instrument(model: FlexiBertForMaskedLM, recording: _Recording, gates: bool, jacobian: bool) -> list[Any]:
    """Hooks that record every layer's input and its feed-forward signs, put a gate of ones on every
    head's output (``gates``) and make the embedding block's output a leaf to differentiate by
    (``jacobian``). Returns the hook handles."""
    import torch

    handles = []
    encoder = model.encoder
    if jacobian:
        def as_leaf(_module, _inputs, output):
            recording.embedded = output.detach().requires_grad_(True)
            return recording.embedded

        handles.append(encoder.embeddings.register_forward_hook(as_leaf))
    for layer in encoder_layers(model):
        handles.append(layer.register_forward_pre_hook(
            lambda _module, args: recording.layer_inputs.append(args[0].detach())))
        for linear in layer.feed_forward.linears[:-1]:
            handles.append(linear.register_forward_hook(
                lambda _module, _inputs, output: recording.unit_signs.append((output > 0).detach())))
        if gates:
            gate = torch.ones(layer.spec.n_heads, requires_grad=True)
            recording.gates.append(gate)
            head_dim = layer.spec.head_dim
            handles.append(layer.attention_output.register_forward_pre_hook(
                lambda _module, args, gate=gate, head_dim=head_dim: (args[0] * gate.repeat_interleave(head_dim),)))
    return handles


def _head_matrices(layer: EncoderLayer) -> list[torch.Tensor]:
    """Every head's weights of two or more axes (query, key, value, the WMA matrix, the convolution's
    key filters and kernel generator)."""
    return [p for head in layer.heads for p in head.parameters() if p.dim() >= 2]


def _per_head_columns(layer: EncoderLayer, matrix: torch.Tensor) -> list[torch.Tensor]:
    """The attention output projection ``[hidden, heads · head_dim]`` cut into each head's columns."""
    return list(matrix.split(layer.spec.head_dim, dim=1))


def _feed_forward_weights(layer: EncoderLayer) -> list[torch.Tensor]:
    return [cast("torch.nn.Linear", linear).weight for linear in layer.feed_forward.linears]


def head_confidences(layer: EncoderLayer, hidden: torch.Tensor) -> list[float]:
    """Voita's confidence of every head of ``layer`` that has attention weights, given the layer's input:
    the mean over sequences and tokens of the head's largest weight. Transform heads have none."""
    import torch

    from flexibert import DynamicConvHead, dynamic_conv_weights, self_attention_weights

    confidences: list[float] = []
    with torch.no_grad():
        attending = [head for head in layer.heads if head.family == "sa"]
        if attending:
            weights = self_attention_weights(attending, hidden)  # [B, heads, S, S]
            confidences += weights.amax(dim=-1).mean(dim=(0, 2)).tolist()
        for head in layer.heads:
            if isinstance(head, DynamicConvHead):
                confidences.append(float(dynamic_conv_weights(head, hidden).amax(dim=-1).mean()))
    return confidences


def nuclear_norm(matrix: torch.Tensor) -> float:
    """The sum of the singular values of ``matrix`` read as ``[rows, everything else]``: the square
    roots of the eigenvalues of its smaller Gram matrix, in float64 (an eigenvalue's error is
    about 1e-16 of the largest, so the sum is exact to ~1e-8 relative, and it is much faster than an SVD)."""
    import torch

    flat = matrix.detach().reshape(matrix.shape[0], -1).double()
    gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    return float(torch.linalg.eigvalsh(gram).clamp_min(0.0).sqrt().sum())


def hamming_kernel_log_determinant(unit_signs: Sequence[torch.Tensor]) -> float:
    """NASWOT's ``log|K_H|``: ``K_H[i, j]`` counts the units on which sequences i and j agree."""
    import torch

    kernel = None
    for signs in unit_signs:
        codes = signs.reshape(signs.shape[0], -1).double()
        agree = codes @ codes.T + (1 - codes) @ (1 - codes).T
        kernel = agree if kernel is None else kernel + agree
    assert kernel is not None
    sign, log_determinant = torch.linalg.slogdet(kernel)
    return float(log_determinant) if float(sign) > 0 else -math.inf


def jacobian_covariance_score(jacobians: torch.Tensor, k: float = JACOBIAN_K) -> float:
    """Mellor et al.'s score of per-sequence input Jacobians ``[sequences, ...]``:
    ``-Σ (log(λ + k) + 1/(λ + k))`` over the eigenvalues of their correlation matrix."""
    flat = jacobians.detach().reshape(jacobians.shape[0], -1).double().numpy()
    correlation = np.nan_to_num(np.corrcoef(flat), nan=0.0)  # a constant Jacobian correlates with nothing
    eigenvalues = np.clip(np.linalg.eigvalsh(correlation), 0.0, None)
    return float(-np.sum(np.log(eigenvalues + k) + 1.0 / (eigenvalues + k)))


def model_metrics(spec: ArchSpec, metrics: Iterable[str] = MODEL_METRICS, seed: int = 0) -> dict[str, float]:
    """The model metrics named in ``metrics`` of ``spec``, built from ``seed`` and run on the probe batch."""
    import torch

    from flexibert import build_mlm_model

    wanted = set(metrics)
    unknown = wanted - set(MODEL_METRICS)
    if unknown:
        raise ValueError(f"not a model metric: {', '.join(sorted(unknown))}; choose from {', '.join(MODEL_METRICS)}")
    batch = training_free_probe(seed)
    model = build_mlm_model(spec, seed=seed, vocab_size=batch.vocab_size, max_positions=batch.tokens)
    needs_loss = bool(wanted & _LOSS_GRADIENT_METRICS)
    needs_jacobian = "jacobian_cov" in wanted
    recording = _Recording()
    handles = _instrument(model, recording, gates="head_importance" in wanted, jacobian=needs_jacobian)
    try:
        with torch.set_grad_enabled(needs_loss or needs_jacobian):
            logits = model(batch.masked_ids)
    finally:
        for handle in handles:
            handle.remove()
    layers = encoder_layers(model)
    values: dict[str, float] = {}
    if "head_confidence" in wanted:
        confidences = [confidence for layer, hidden in zip(layers, recording.layer_inputs)
                       for confidence in head_confidences(layer, hidden)]
        values["head_confidence"] = float(np.mean(confidences)) if confidences else 1.0 / batch.tokens
    if "activation_distance" in wanted:
        values["activation_distance"] = hamming_kernel_log_determinant(recording.unit_signs)
    if needs_loss:
        values.update(_loss_gradient_metrics(layers, recording, logits, batch, wanted, keep_graph=needs_jacobian))
    if needs_jacobian:
        assert recording.embedded is not None
        (jacobians,) = torch.autograd.grad(logits.sum(), recording.embedded)
        values["jacobian_cov"] = jacobian_covariance_score(jacobians)
    return {name: values[name] for name in MODEL_METRICS if name in wanted}


def _loss_gradient_metrics(layers, recording: _Recording, logits, batch: ProbeBatch, wanted: set[str],
                           keep_graph: bool) -> dict[str, float]:
    """``head_importance``, ``synaptic_diversity`` and ``synaptic_saliency`` from one backward pass of
    the MLM loss of the batch (cross-entropy over its masked tokens)."""
    import torch
    import torch.nn.functional as F

    from flexibert import IGNORE_INDEX

    loss = F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE_INDEX)
    gates = recording.gates if "head_importance" in wanted else []
    mixing = [[*_head_matrices(layer), layer.attention_output.weight] for layer in layers] \
        if "synaptic_diversity" in wanted else []
    feed_forward = [w for layer in layers for w in _feed_forward_weights(layer)] \
        if "synaptic_saliency" in wanted else []
    targets = [*gates, *(m for matrices in mixing for m in matrices), *feed_forward]
    gradients = iter(torch.autograd.grad(loss, targets, retain_graph=keep_graph))
    values: dict[str, float] = {}
    if "head_importance" in wanted:
        values["head_importance"] = float(sum(float(next(gradients).abs().sum()) for _ in gates))
    if "synaptic_diversity" in wanted:
        values["synaptic_diversity"] = sum(
            _synaptic_diversity_of_layer(layer, matrices, [next(gradients) for _ in matrices])
            for layer, matrices in zip(layers, mixing))
    if "synaptic_saliency" in wanted:
        values["synaptic_saliency"] = float(sum(float((weight.detach() * next(gradients)).abs().sum())
                                                for weight in feed_forward))
    return values


def _synaptic_diversity_of_layer(layer: EncoderLayer, matrices: list[torch.Tensor],
                                 gradients: list[torch.Tensor]) -> float:
    """``Σ ‖W‖_nuc · ‖∂L/∂W‖_nuc`` over the head matrices of ``layer`` and each head's columns of its
    attention output projection (the last of ``matrices``)."""
    pairs = list(zip(matrices[:-1], gradients[:-1]))
    pairs += zip(_per_head_columns(layer, matrices[-1]), _per_head_columns(layer, gradients[-1]))
    return float(sum(nuclear_norm(weight) * nuclear_norm(gradient) for weight, gradient in pairs))


# -- every metric of many architectures ---------------------------------------------------------------------


def metric_dependencies(metrics: Iterable[str], combination: TrainingFreeCombination | None = None) -> tuple[str, ...]:
    """The metrics to compute for ``metrics``, in :data:`TRAINING_FREE_METRICS` order: ``combined``
    also needs every metric of its combination (default: the shipped one)."""
    names = list(metrics)
    unknown = [name for name in names if name not in TRAINING_FREE_METRICS]
    if unknown:
        raise ValueError(f"unknown training-free metric {unknown[0]!r}; "
                         f"choose one of {', '.join(TRAINING_FREE_METRICS)}")
    needed = set(names)
    if COMBINED_METRIC in needed:
        needed |= set((combination or load_training_free_combination()).metrics)
    return tuple(name for name in TRAINING_FREE_METRICS if name in needed)


def architecture_metrics(spec: ArchSpec, metrics: Iterable[str], seed: int = 0,
                         combination: TrainingFreeCombination | None = None) -> dict[str, float]:
    """The values of ``metrics``, and of what ``combined`` needs, of one architecture."""
    metrics = tuple(metrics)
    if COMBINED_METRIC in metrics and combination is None:
        combination = load_training_free_combination()
    needed = metric_dependencies(metrics, combination)
    values = {name: value for name, value in size_metrics(spec).items() if name in needed}
    model_wanted = [name for name in needed if name in MODEL_METRICS]
    if model_wanted:
        values.update(model_metrics(spec, model_wanted, seed))
    if combination is not None and COMBINED_METRIC in needed:
        values[COMBINED_METRIC] = float(combination.score({name: np.array([values[name]])
                                                           for name in combination.metrics})[0])
    return values


def training_free_metrics(specs: Sequence[ArchSpec], metrics: Iterable[str] | None = None, seed: int = 0,
                          progress=None) -> dict[str, np.ndarray]:
    """Every named metric (default: all of :data:`TRAINING_FREE_METRICS`) of every architecture, as
    arrays in the order of ``specs``; higher predicts more accurate. ``progress(done, total)`` is
    called after each architecture. Each architecture is scored on its own, so its values do not
    depend on the others."""
    wanted = tuple(TRAINING_FREE_METRICS if metrics is None else metrics)
    combination = load_training_free_combination() if COMBINED_METRIC in wanted else None
    needed = metric_dependencies(wanted, combination)
    rows = []
    for index, spec in enumerate(specs):
        rows.append(architecture_metrics(spec, needed, seed, combination))
        if progress is not None:
            progress(index + 1, len(specs))
    return {name: np.array([row[name] for row in rows], dtype=float) for name in wanted}


def training_free_scores(specs: Sequence[ArchSpec], metric: str | None = None, seed: int = 0,
                         progress=None) -> list[dict]:
    """``{"hash", "score", <metric>: value}`` per architecture; ``score`` is the value of ``metric``
    (default :data:`protran.vocabulary.DEFAULT_TRAINING_FREE_METRIC`). A size metric also reports the
    other two sizes, as it costs nothing."""
    from flexibert import model_hash
    from protran.vocabulary import DEFAULT_TRAINING_FREE_METRIC

    metric = DEFAULT_TRAINING_FREE_METRIC if metric is None else metric
    reported = SIZE_METRICS if metric in SIZE_METRICS else (metric,)
    values = training_free_metrics(specs, reported, seed, progress)
    return [{"hash": model_hash(spec), "score": float(values[metric][i]),
             **{name: float(values[name][i]) for name in reported}} for i, spec in enumerate(specs)]


# -- the learned combination ------------------------------------------------------------------------------


def metric_features(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` of metric ``name`` on the scale the combination standardises (see
    :data:`FEATURE_TRANSFORMS`); a non-positive value of a ``log`` metric is taken as tiny."""
    values = np.asarray(values, dtype=float)
    transform = FEATURE_TRANSFORMS[name]
    if transform == "log":
        return np.log(np.maximum(values, _TINY))
    if transform == "neg_log_neg":
        return -np.log(np.maximum(-values, _TINY))
    return values


@dataclass(frozen=True)
class TrainingFreeCombination:
    """``score = Σ_m weight_m · (feature_m − center_m) / scale_m`` over ``metrics``, a feature being a
    metric's value through :func:`metric_features`. The score predicts the GLUE average in standard
    deviations from the mean of the architectures it was fitted on. A non-finite feature counts as
    the center (it adds nothing)."""

    metrics: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    ridge_alpha: float
    seed: int = 0
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def standardized(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """``[architectures, metrics]`` standardised features."""
        matrix = np.column_stack([(metric_features(name, values[name]) - center) / scale
                                  for name, center, scale in zip(self.metrics, self.center, self.scale)])
        return np.where(np.isfinite(matrix), matrix, 0.0)

    def score(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """The combined score of each architecture, from its own metric values."""
        return self.standardized(values) @ np.asarray(self.weights)

    @classmethod
    def fit(cls, values: Mapping[str, np.ndarray], target: np.ndarray, metrics: Sequence[str] | None = None,
            seed: int = 0, alphas: Sequence[float] = tuple(np.logspace(-2, 3, 11)),
            info=None) -> TrainingFreeCombination:
        """Standardise each metric's features and fit ridge weights to the standardised ``target`` (the
        GLUE average), the penalty chosen among ``alphas`` by leave-one-out error on these rows only."""
        from sklearn.linear_model import RidgeCV

        metrics = tuple(metrics or [name for name in TRAINING_FREE_METRICS if name in values])
        features = np.column_stack([metric_features(name, values[name]) for name in metrics])
        finite = np.isfinite(features).all(axis=1)
        center, scale = features[finite].mean(axis=0), features[finite].std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        target = np.asarray(target, dtype=float)[finite]
        model = RidgeCV(alphas=list(alphas)).fit((features[finite] - center) / scale,
                                                  (target - target.mean()) / target.std())
        return cls(metrics, tuple(map(float, center)), tuple(map(float, scale)), tuple(map(float, model.coef_)),
                   float(model.alpha_), seed, dict(info or {}))

    def to_json(self) -> str:
        return json.dumps({
            "description": "protran proxy --training-free --metric combined: score = sum_m weight_m * "
                           "(feature_m - center_m) / scale_m, feature_m = transform_m(value of metric m); "
                           "fitted by benchmarks/training_free.py",
            "metrics": list(self.metrics), "transforms": {name: FEATURE_TRANSFORMS[name] for name in self.metrics},
            "center": list(self.center), "scale": list(self.scale), "weights": list(self.weights),
            "ridge_alpha": self.ridge_alpha,
            "probe": training_free_probe_settings(self.seed),
            **dict(self.info),
        }, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> TrainingFreeCombination:
        data = json.loads(text)
        metrics = tuple(data["metrics"])
        unknown = [name for name in metrics if name not in FEATURE_TRANSFORMS]
        changed = [name for name in metrics
                   if name not in unknown and data["transforms"][name] != FEATURE_TRANSFORMS[name]]
        if unknown or changed:
            raise ValueError(f"the combination uses metrics or transforms this version does not know: "
                             f"{', '.join(unknown + changed)}")
        info = {key: value for key, value in data.items() if key not in
                {"description", "metrics", "transforms", "center", "scale", "weights", "ridge_alpha", "probe"}}
        return cls(metrics, tuple(data["center"]), tuple(data["scale"]), tuple(data["weights"]),
                   float(data["ridge_alpha"]), int(data["probe"]["seed"]), info)


@functools.lru_cache(maxsize=4)
def load_training_free_combination(path: str | Path | None = None) -> TrainingFreeCombination:
    """The fitted combination (default: the shipped ``datasets/accuracy/training_free_combination.json``)."""
    path = training_free_combination_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training-free combination not found: {path}; "
                                "run `python benchmarks/training_free.py`")
    return TrainingFreeCombination.from_json(path.read_text())
