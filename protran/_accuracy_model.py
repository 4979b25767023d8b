"""The multi-source accuracy model: one ranking of architectures learnt from every accuracy source at
once, with a standard deviation that says how far an architecture is from the scored ones.

Sources
-------
Accuracy records come from several places that disagree in recipe and scale: NAS-Bench-BERT's GLUE
average (0-100, 100k-step ELECTRA-style pre-training), the EdgeTran reference set (0-1, times 1.5),
users' CSVs, the short MLM proxy (``exp(-loss)``). A *source* here is one (``source``, ``task``) pair
of the records. The model assumes that every source sees the same latent quality ``g(x)`` of an
architecture through its own offset and scale, ``y = a_s + b_s g(x) + noise_s``:

1. the *anchor*, the source with the most scored architectures of the chosen task, fixes the scale
   of ``g`` (``a = 0, b = 1``) and a first model is fitted on it alone;
2. every other source is linked to it by least squares of its scores on that first model's
   predictions at its architectures; a source whose scores do not follow the anchor's (fewer than
   :data:`MIN_LINK_ROWS` architectures, or a correlation under :data:`MIN_LINK_CORRELATION`) is
   left out and reported, never silently mixed in;
3. the scores of the linked sources, mapped onto the anchor's scale, are fitted together, each row
   weighted by its noise;
4. predictions are given on the scale of the chosen *target* source: ``a_t + b_t g(x)``.

Noise comes from repeats: an architecture trained twice by one source is two observations, and the
pooled variance within architectures is that source's noise (NAS-Bench-BERT's repeat pairs differ by
about 0.7 GLUE points). It weights the rows and enters the Gaussian process below as per-row noise.

Features
--------
:data:`STRUCTURE_FEATURE_NAMES`: sizes (log parameters with and without embeddings, log FLOPs of a
128-token sequence, layers) and the layers' make-up, averaged over the layers and read at fixed
positions (first, second, second to last, last, and the mean of the middle layers): the share of
each operation among its heads, the log head count, the feed-forward depth and log width, the log
hidden width. A one-hot view of the operations at each position ranks NAS-Bench-BERT's
architectures better than the integer embedding does (its operation codes are not ordered), and the
same features exist for every FlexiBERT 2.0 architecture, so the model is defined beyond the scored
region. :func:`structure_features` reads specs one by one; :func:`structure_features_of_embeddings`
reads thousands of embeddings of a design space at once (searches) through per-space lookup tables,
and both give the same numbers (tested).

The model
---------
The mean is a weighted average of two learners that fail differently: extremely randomised trees
(leaves of at least 4 rows, 60 % of the features per split) and an RBF support-vector regressor on
standardised features. The regressor's weight (0, 0.25 or 0.5, :data:`SVR_WEIGHTS`) is chosen per fit
by the ranking of out-of-fold predictions: with a few dozen scored architectures its fixed kernel
ranks worse than the trees, with hundreds the two together rank best
(``benchmarks/accuracy_learning.py``).

The standard deviation is a Gaussian process's (constant times an isotropic RBF plus white noise, on
standardised size and make-up features, :data:`SPREAD_FEATURE_NAMES`): near scored architectures it
is the noise and misfit the process learnt;
away from them it grows to the spread of scores in the data, the honest answer for, say, a 12-layer
× 768 model when the scored ones stop at 4 × 256. It is scaled by one factor, fitted on
out-of-fold residuals of the mean, so that 95 % of unseen scores fall inside ±1.96 σ. Separately,
:meth:`AccuracyModel.extrapolated` flags an architecture whose size, width, depth or head count
at some position lies outside the range of the scored architectures, or that uses an operation none
of them uses.

Nothing is persisted: the model is refitted from the accuracy files (seconds), so there is nothing
to unpickle.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexibert import (
    ArchSpec,
    DesignSpace,
    analytic_features,
    count_parameters,
    decode,
    embedding_parameters,
    model_hash,
)

#: The least distinct architectures a source needs to be linked to the anchor, and the least
#: correlation of its scores with the anchor model's predictions there.
MIN_LINK_ROWS = 5
MIN_LINK_CORRELATION = 0.3
#: The least distinct scored architectures of the anchor source.
MIN_ANCHOR_ROWS = 3
#: Internal folds for the calibration of the standard deviation (fewer when rows are few).
CALIBRATION_FOLDS = 5
CALIBRATION_TREES = 60
#: The weights of the support-vector regressor in the mean (the trees have the rest), chosen per fit.
SVR_WEIGHTS = (0.0, 0.25, 0.5)
_TARGET_COVERAGE = 0.95

OP_TYPES: tuple[str, ...] = DesignSpace.default().operation_types
LAYER_FEATURE_NAMES: tuple[str, ...] = (*(f"share_{op}" for op in OP_TYPES), "log2_heads", "ff_depth",
                                        "log2_ff_width", "log2_hidden")
SLOTS: tuple[str, ...] = ("first", "second", "second_last", "last", "middle")
SIZE_FEATURE_NAMES: tuple[str, ...] = ("num_layers", "middle_layers", "log_params", "log_params_no_embeddings",
                                       "log_flops")
STRUCTURE_FEATURE_NAMES: tuple[str, ...] = (
    *SIZE_FEATURE_NAMES,
    *(f"mean_{name}" for name in LAYER_FEATURE_NAMES),
    *(f"{slot}_{name}" for slot in SLOTS for name in LAYER_FEATURE_NAMES),
)
#: The features the std's Gaussian process measures distance on: size and make-up averaged over the
#: layers. Per-position features matter for the mean but would let a 4 x 768 model look as close to
#: the scored 4 x 256 ones as any reshuffled 4 x 256 model.
SPREAD_FEATURE_NAMES: tuple[str, ...] = (
    "num_layers", "log_params", "log_flops", "mean_log2_hidden", "mean_log2_ff_width", "mean_ff_depth",
    "mean_log2_heads", *(f"mean_share_{op}" for op in OP_TYPES),
)
#: Features whose range over the scored architectures decides ``extrapolated``: sizes, and widths,
#: depths and head counts at every position. (Operation shares count only for an operation no scored
#: architecture uses: mixing seen operations inside a layer is interpolation.)
RANGE_FEATURE_NAMES: tuple[str, ...] = (
    *SIZE_FEATURE_NAMES,
    *(f"{where}_{name}" for where in ("mean", *SLOTS) for name in ("log2_heads", "ff_depth", "log2_ff_width",
                                                                   "log2_hidden")),
)
# FLOPs of one 128-token sequence: a size measure, not a workload.
_FLOPS_SEQ_LEN = 128


# -- features -------------------------------------------------------------------------------------------


def _layer_row(hidden_size: int, ops: Sequence[str], ff_dims: Sequence[int]) -> np.ndarray:
    """:data:`LAYER_FEATURE_NAMES` of one layer."""
    shares = [sum(op == name for op in ops) / len(ops) for name in OP_TYPES]
    return np.array([*shares, math.log2(len(ops)), float(len(ff_dims)), math.log2(max(ff_dims)),
                     math.log2(hidden_size)])


def _assemble(per_layer: np.ndarray, layers: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The feature matrix from per-layer rows (n, max layers, k; zero past each model's depth), the
    layer counts (n,) and the size columns (n, 3: log parameters, without embeddings, log FLOPs)."""
    n, depth, _ = per_layer.shape
    rows = np.arange(n)
    position = np.arange(depth)[None, :]
    middle = (position >= 2) & (position < layers[:, None] - 2)
    middle_count = middle.sum(axis=1)
    mean = per_layer.sum(axis=1) / layers[:, None]
    middle_mean = (per_layer * middle[:, :, None]).sum(axis=1) / np.maximum(middle_count, 1)[:, None]
    slots = [per_layer[:, 0], per_layer[:, np.minimum(1, depth - 1)] * (layers >= 2)[:, None],
             per_layer[rows, np.maximum(layers - 2, 0)] * (layers >= 2)[:, None], per_layer[rows, layers - 1],
             middle_mean]
    head = np.column_stack([layers.astype(float), middle_count.astype(float), sizes])
    return np.hstack([head, mean, *slots])


def structure_features(specs: Sequence[ArchSpec]) -> np.ndarray:
    """:data:`STRUCTURE_FEATURE_NAMES` of each spec (rows x columns), one architecture at a time."""
    specs = list(specs)
    if not specs:
        return np.empty((0, len(STRUCTURE_FEATURE_NAMES)))
    depth = max(spec.num_layers for spec in specs)
    per_layer = np.zeros((len(specs), depth, len(LAYER_FEATURE_NAMES)))
    sizes = np.zeros((len(specs), 3))
    for i, spec in enumerate(specs):
        for j, layer in enumerate(spec.layers):
            per_layer[i, j] = _layer_row(layer.hidden_size, layer.ops, layer.ff_dims)
        params = count_parameters(spec)
        flops = analytic_features(spec, batch_size=1, seq_len=_FLOPS_SEQ_LEN)["flops"]
        sizes[i] = [math.log(params), math.log(params - embedding_parameters(spec)), math.log(flops)]
    layers = np.array([spec.num_layers for spec in specs], dtype=np.int64)
    return _assemble(per_layer, layers, sizes)


@functools.lru_cache(maxsize=8)
def _lookup_tables(space: DesignSpace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-space tables of the layer features: by hidden index, by feed-forward index and by
    attention index (each zero where the part has no say)."""
    k = len(LAYER_FEATURE_NAMES)
    n_ops = len(OP_TYPES)
    by_hidden = np.zeros((len(space.hidden_size), k))
    by_hidden[:, k - 1] = np.log2(np.array(space.hidden_size, dtype=float))
    by_ff = np.zeros((len(space.feed_forward_ops), k))
    for i, dims in enumerate(space.feed_forward_ops):
        by_ff[i, n_ops + 1] = len(dims)
        by_ff[i, n_ops + 2] = math.log2(max(dims))
    by_att = np.zeros((len(space.attention_ops), k))
    for i, ops in enumerate(space.attention_ops):
        row = _layer_row(1 << 30, ops, (1,))
        by_att[i, : n_ops + 1] = row[: n_ops + 1]
    return by_hidden, by_ff, by_att


def structure_features_of_embeddings(X: np.ndarray, space: DesignSpace | None = None,
                                     columns: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """:data:`STRUCTURE_FEATURE_NAMES` of valid embeddings ``X`` (n, embedding length) of ``space``
    (default FlexiBERT 2.0), vectorised; ``columns``: the space's :class:`flexibert.FeatureTable`
    columns of ``X`` for one 128-token sequence, when already computed."""
    from flexibert.feature_table import feature_table

    space = space or DesignSpace.default()
    X = np.asarray(X, dtype=np.int64)
    if columns is None:
        columns = feature_table(space, 1, _FLOPS_SEQ_LEN).columns(X)
    by_hidden, by_ff, by_att = _lookup_tables(space)
    layers = np.array(space.encoder_layers, dtype=np.int64)[X[:, 0]]
    used = (np.arange(space.max_layers)[None, :] < layers[:, None])[:, :, None]
    per_layer = (by_hidden[X[:, 1::3]] + by_ff[X[:, 2::3]] + by_att[X[:, 3::3]]) * used
    hidden0 = np.array(space.hidden_size, dtype=np.int64)[X[:, 1]]
    params = columns["params"].astype(np.int64)
    no_embeddings = params - _embedding_rows() * hidden0
    sizes = np.column_stack([np.log(params.astype(float)), np.log(no_embeddings.astype(float)),
                             np.log(columns["flops"].astype(float))])
    return _assemble(per_layer, layers, sizes)


@functools.lru_cache(maxsize=1)
def _embedding_rows() -> int:
    """Embedding parameters per unit of the first layer's width (vocabulary, positions, segments)."""
    space = DesignSpace.default()
    smallest = decode([0] * space.embedding_length, space)
    return embedding_parameters(smallest) // smallest.hidden_sizes[0]


# -- sources ------------------------------------------------------------------------------------------


@dataclass
class SourceFit:
    """How one source of accuracy records enters the model (scores of all its rows in its own scale):
    ``offset`` and ``scale`` map the anchor's scale onto it, ``noise_std`` is its repeat noise (None
    where it has no repeats), ``linked`` says whether its rows were fitted, and ``reason`` why not."""

    source: str
    task: str
    architectures: int
    observations: int
    offset: float = 0.0
    scale: float = 1.0
    noise_std: float | None = None
    correlation: float | None = None
    linked: bool = False
    reason: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.source, self.task

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "task": self.task, "architectures": self.architectures,
                "observations": self.observations, "offset": self.offset, "scale": self.scale,
                "noise_std": self.noise_std, "correlation": self.correlation, "linked": self.linked,
                "reason": self.reason}


@dataclass
class _Group:
    """The scored architectures of one source: distinct specs, the mean score and count of each."""

    source: str
    task: str
    specs: list[ArchSpec] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)

    def add(self, spec: ArchSpec, arch_hash: str, score: float, index: dict[str, int]) -> None:
        if arch_hash not in index:
            index[arch_hash] = len(self.specs)
            self.specs.append(spec)
            self.scores.append([])
        self.scores[index[arch_hash]].append(float(score))

    @property
    def means(self) -> np.ndarray:
        return np.array([np.mean(s) for s in self.scores])

    @property
    def counts(self) -> np.ndarray:
        return np.array([len(s) for s in self.scores], dtype=float)

    def repeat_noise_std(self) -> float | None:
        """Pooled standard deviation within architectures scored more than once (None without repeats)."""
        repeated = [np.asarray(s) for s in self.scores if len(s) > 1]
        if not repeated:
            return None
        squares = sum(float(((s - s.mean()) ** 2).sum()) for s in repeated)
        return math.sqrt(squares / sum(len(s) - 1 for s in repeated))


def source_name(record: Any) -> str:
    """The source a record is grouped under (records without one share the name ``unnamed``)."""
    return record.source or "unnamed"


def _groups(records: Sequence[Any], tasks: Sequence[str]) -> dict[tuple[str, str], _Group]:
    groups: dict[tuple[str, str], _Group] = {}
    indexes: dict[tuple[str, str], dict[str, int]] = {}
    for record in records:
        if record.score is None or record.task not in tasks or not math.isfinite(record.score):
            continue
        key = (source_name(record), record.task)
        group = groups.setdefault(key, _Group(*key))
        group.add(record.spec, record.arch_hash, record.score, indexes.setdefault(key, {}))
    return groups


# -- the learners -------------------------------------------------------------------------------------


def noise_weights(targets: np.ndarray, noise_var: np.ndarray) -> np.ndarray:
    """Row weights from each row's known noise variance: a row loses weight only when it is noisier
    than a tenth of the targets' variance (the misfit any model of them keeps)."""
    misfit = max(float(np.var(targets)) * 0.1, 1e-12)
    return 1.0 / (1.0 + np.asarray(noise_var, dtype=float) / misfit)


def _column_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column (1 where a column is constant)."""
    width = X.std(axis=0)
    width[width == 0] = 1.0
    return X.mean(axis=0), width


class MeanModel:
    """A weighted average of extremely randomised trees and an RBF support-vector regressor
    (``svr_weight`` for the regressor; standardised inputs and targets), with per-row weights."""

    def __init__(self, seed: int, n_trees: int = 200, svr_weight: float = 0.5) -> None:
        self.seed = seed
        self.n_trees = n_trees
        self.svr_weight = svr_weight

    def fit(self, X: np.ndarray, y: np.ndarray, weight: np.ndarray) -> MeanModel:
        from sklearn.ensemble import ExtraTreesRegressor
        from sklearn.svm import SVR

        self.center_, self.width_ = _column_scale(X)
        self.y_center_, self.y_width_ = float(y.mean()), float(y.std()) or 1.0
        Z, t = self._scaled(X), (y - self.y_center_) / self.y_width_
        self.trees_ = ExtraTreesRegressor(n_estimators=self.n_trees, min_samples_leaf=4, max_features=0.6,
                                          random_state=self.seed, n_jobs=1).fit(Z, t, sample_weight=weight)
        # C and epsilon in standard deviations of the target: 10 and 0.5 GLUE points at NAS-Bench-BERT's
        # spread of 3.9; gamma for about 60 standardised features.
        self.svr_ = SVR(C=2.5, epsilon=0.13, gamma=0.003).fit(Z, t, sample_weight=weight)
        return self

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return (X - self.center_) / self.width_

    def parts(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The trees' and the regressor's predictions, on the targets' scale."""
        Z = self._scaled(X)
        return (self.y_center_ + self.y_width_ * _forest_mean(self.trees_, Z),
                self.y_center_ + self.y_width_ * self.svr_.predict(Z))

    def predict(self, X: np.ndarray) -> np.ndarray:
        trees, svr = self.parts(X)
        return (1.0 - self.svr_weight) * trees + self.svr_weight * svr


def _forest_mean(forest, Z: np.ndarray) -> np.ndarray:
    """The forest's prediction from its trees' arrays: what ``forest.predict`` computes, without its
    per-tree dispatch, which costs ~70 ms a call for 200 trees; a search asks for a few rows at a time."""
    rows = np.ascontiguousarray(Z, dtype=np.float32)
    total = np.zeros(len(rows))
    for tree in forest.estimators_:
        total += tree.tree_.predict(rows).reshape(len(rows), -1)[:, 0]  # one output: (n, 1) or (n, 1, 1)
    return total / len(forest.estimators_)


_SPREAD_COLUMNS = [STRUCTURE_FEATURE_NAMES.index(name) for name in SPREAD_FEATURE_NAMES]
_RANGE_COLUMNS = [STRUCTURE_FEATURE_NAMES.index(name) for name in RANGE_FEATURE_NAMES]
_SHARE_COLUMNS = [STRUCTURE_FEATURE_NAMES.index(f"mean_share_{op}") for op in OP_TYPES]


class _SpreadModel:
    """A Gaussian process (constant x isotropic RBF + white noise, normalised targets) on the
    :data:`SPREAD_FEATURE_NAMES` columns, whose posterior standard deviation grows away from the rows
    it was fitted on; ``noise_var`` is each row's known noise."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, noise_var: np.ndarray) -> _SpreadModel:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, WhiteKernel
        from sklearn.gaussian_process.kernels import ConstantKernel as Constant

        X = X[:, _SPREAD_COLUMNS]
        self.center_, self.width_ = _column_scale(X)
        self.y_width_ = float(y.std()) or 1.0
        # white noise of at least a tenth of the scores' variance: a dozen rows must not convince the
        # process that it knows every architecture to the last decimal
        kernel = Constant(1.0, (1e-3, 1e3)) * RBF(3.0, (1e-1, 1e4)) + WhiteKernel(0.1, (1e-2, 1e1))
        self.gp_ = GaussianProcessRegressor(kernel, alpha=noise_var / self.y_width_**2 + 1e-8, random_state=self.seed)
        with warnings.catch_warnings():
            # a hyperparameter at its bound (no white noise left, say) is an answer, not a fault
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.gp_.fit((X - self.center_) / self.width_, (y - y.mean()) / self.y_width_)
        return self

    def std(self, X: np.ndarray) -> np.ndarray:
        """Posterior std of each row, computed row by row: a row's value never depends on the others
        asked with it (a batched product may round differently)."""
        from scipy.linalg import solve_triangular

        Z = (X[:, _SPREAD_COLUMNS] - self.center_) / self.width_
        kernel, train, factor = self.gp_.kernel_, self.gp_.X_train_, self.gp_.L_
        variance = np.empty(len(Z))
        for i in range(len(Z)):
            row = Z[i: i + 1]
            v = solve_triangular(factor, kernel(row, train)[0], lower=True, check_finite=False)
            variance[i] = kernel.diag(row)[0] - float(np.dot(v, v))
        return self.y_width_ * np.sqrt(np.maximum(variance, 0.0))


# -- the model ------------------------------------------------------------------------------------------


class AccuracyModel:
    """Predicted accuracy of any architecture, on the scale of one source and task.

    ``fit(records)`` learns from every record of ``task`` (and of the MLM proxy, when present) of
    every source; ``predict(specs)`` and ``predict_features(F)`` give mean and std on the target
    source's scale (``target_source``, default the anchor: the source with the most scored
    architectures); ``extrapolated`` flags architectures outside the scored range. ``sources``
    describes how each source entered.
    """

    def __init__(self, task: str = "glue", target_source: str | None = None, seed: int = 0,
                 auxiliary_tasks: Sequence[str] = ("mlm_proxy",)) -> None:
        self.task = task
        self.target_source = target_source
        self.seed = int(seed)
        self.auxiliary_tasks = tuple(t for t in auxiliary_tasks if t != task)
        self.sources: list[SourceFit] = []

    # fitting

    def fit(self, records: Sequence[Any]) -> AccuracyModel:
        groups = _groups(records, (self.task, *self.auxiliary_tasks))
        candidates = [g for g in groups.values() if g.task == self.task]
        if not candidates:
            tasks = sorted({r.task for r in records if r.score is not None})
            raise ValueError(f"the accuracy data holds no scores for task '{self.task}' (tasks with scores: "
                             f"{', '.join(tasks) or 'none'})")
        anchor = max(candidates, key=lambda g: (len(g.specs), g.source))
        target = self._target_group(candidates, anchor)
        if len(anchor.specs) < MIN_ANCHOR_ROWS:
            raise ValueError(f"the accuracy data holds {len(anchor.specs)} scored architecture(s) of task "
                             f"'{self.task}' in its largest source; an accuracy model needs at least {MIN_ANCHOR_ROWS}")
        if np.ptp(anchor.means) == 0:
            raise ValueError(f"every scored architecture of task '{self.task}' has the same score; nothing to rank")
        features = {key: structure_features(g.specs) for key, g in groups.items()}
        first = MeanModel(self.seed).fit(features[(anchor.source, anchor.task)], anchor.means, anchor.counts)
        self.sources = [self._link(g, anchor, first, features[key]) for key, g in groups.items()]
        fits = {fit.key: fit for fit in self.sources}
        if not fits[(target.source, target.task)].linked:
            # the chosen scale cannot be linked: fit that source on its own rather than guess a mapping
            self.sources = [self._link(target, target, None, features[(target.source, target.task)])]
            fits = {fit.key: fit for fit in self.sources}
            anchor = target
        self._fit_linked(groups, features, fits)
        self.anchor_ = (anchor.source, anchor.task)
        self.target_ = fits[(target.source, target.task)]
        self.target_scores_ = target.means
        self.target_specs_ = list(target.specs)
        self._calibrate(groups, features, fits, anchor)
        return self

    def _target_group(self, candidates: list[_Group], anchor: _Group) -> _Group:
        if self.target_source is None:
            return anchor
        for group in candidates:
            if group.source == self.target_source:
                return group
        raise ValueError(f"no scores of task '{self.task}' from source '{self.target_source}'; sources: "
                         f"{', '.join(sorted(g.source for g in candidates))}")

    def _link(self, group: _Group, anchor: _Group, first: MeanModel | None, X: np.ndarray) -> SourceFit:
        fit = SourceFit(group.source, group.task, len(group.specs), int(group.counts.sum()),
                        noise_std=group.repeat_noise_std())
        if group is anchor:
            fit.linked, fit.correlation = True, 1.0
            return fit
        if len(group.specs) < MIN_LINK_ROWS or first is None:
            fit.reason = f"fewer than {MIN_LINK_ROWS} scored architectures"
            return fit
        predicted, observed = first.predict(X), group.means
        if np.ptp(predicted) == 0 or np.ptp(observed) == 0:
            fit.reason = "no spread to link on"
            return fit
        fit.correlation = float(np.corrcoef(predicted, observed)[0, 1])
        if not fit.correlation >= MIN_LINK_CORRELATION:
            fit.reason = (f"its scores do not follow the anchor's (correlation {fit.correlation:.2f} "
                          f"< {MIN_LINK_CORRELATION})")
            return fit
        fit.scale, fit.offset = (float(v) for v in np.polyfit(predicted, observed, 1))
        fit.linked = fit.scale > 0
        if not fit.linked:
            fit.reason = "its scores fall where the anchor's rise"
        return fit

    def _training_rows(self, groups: dict, features: dict, fits: dict[tuple[str, str], SourceFit],
                       exclude: np.ndarray | None = None, anchor_key: tuple[str, str] | None = None):
        """Features, anchor-scale targets, row weights and noise variances of every linked source (the
        anchor's rows at ``exclude`` left out)."""
        X, y, noise = [], [], []  # noise: each row's noise variance on the anchor's scale
        for key, fit in fits.items():
            if not fit.linked:
                continue
            group = groups[key]
            keep = np.ones(len(group.specs), dtype=bool)
            if exclude is not None and key == anchor_key:
                keep[exclude] = False
            variance = (fit.noise_std / fit.scale) ** 2 if fit.noise_std else 0.0
            X.append(features[key][keep])
            y.append((group.means[keep] - fit.offset) / fit.scale)
            noise.append(variance / group.counts[keep])
        targets, noise_var = np.concatenate(y), np.concatenate(noise)
        return np.vstack(X), targets, noise_weights(targets, noise_var), noise_var

    def _fit_linked(self, groups: dict, features: dict, fits: dict) -> None:
        X, y, weight, noise = self._training_rows(groups, features, fits)
        self.mean_ = MeanModel(self.seed).fit(X, y, weight)
        self.spread_ = _SpreadModel(self.seed).fit(X, y, noise)
        self.low_, self.high_ = X.min(axis=0), X.max(axis=0)

    def _calibrate(self, groups: dict, features: dict, fits: dict, anchor: _Group) -> None:
        """From out-of-fold predictions of the anchor's scores: the regressor's weight in the mean (the
        one of :data:`SVR_WEIGHTS` that ranks them best: with a few dozen rows its fixed kernel width
        ranks worse than the trees, with hundreds better), then one factor on the process's std so that
        95 % of them fall inside ±1.96 σ."""
        n = len(anchor.specs)
        folds = min(CALIBRATION_FOLDS, n)
        self.std_factor_ = 1.0
        if folds < 3:
            return
        key = (anchor.source, anchor.task)
        order = np.random.default_rng(self.seed).permutation(n)
        held_out, trees, svr, std = [], [], [], []
        for held in np.array_split(order, folds):
            X, y, weight, noise = self._training_rows(groups, features, fits, exclude=held, anchor_key=key)
            # fewer trees than the final model: a fold's residuals need the mean, not its last decimal
            learner = MeanModel(self.seed, n_trees=CALIBRATION_TREES).fit(X, y, weight)
            parts = learner.parts(features[key][held])
            held_out.append(held)
            trees.append(parts[0])
            svr.append(parts[1])
            std.append(_SpreadModel(self.seed).fit(X, y, noise).std(features[key][held]))
        truth = anchor.means[np.concatenate(held_out)]
        trees_all, svr_all, std_all = np.concatenate(trees), np.concatenate(svr), np.concatenate(std)
        weight = max(SVR_WEIGHTS, key=lambda w: _kendall((1 - w) * trees_all + w * svr_all, truth))
        self.mean_.svr_weight = weight
        mean = (1 - weight) * trees_all + weight * svr_all
        ratio = float(np.quantile(np.abs(truth - mean) / np.maximum(std_all, 1e-12), _TARGET_COVERAGE))
        self.std_factor_ = float(np.clip(ratio / 1.959964, 0.5, 5.0))

    # predicting

    def predict_features(self, F: np.ndarray, return_std: bool = False):
        """Mean (and std) on the target's scale of the rows of a :data:`STRUCTURE_FEATURE_NAMES` matrix."""
        F = np.asarray(F, dtype=float)
        mean = self.target_.offset + self.target_.scale * self.mean_.predict(F)
        if not return_std:
            return mean
        return mean, abs(self.target_.scale) * self.std_factor_ * self.spread_.std(F)

    def predict(self, specs: Sequence[ArchSpec], return_std: bool = False):
        return self.predict_features(structure_features(specs), return_std)

    def extrapolated_features(self, F: np.ndarray) -> np.ndarray:
        """True for rows outside the scored architectures: a :data:`RANGE_FEATURE_NAMES` feature
        outside their range, or an operation none of them uses."""
        F = np.asarray(F, dtype=float)
        low, high = self.low_[_RANGE_COLUMNS], self.high_[_RANGE_COLUMNS]
        tolerance = 1e-9 * np.maximum(1.0, np.abs(high))
        values = F[:, _RANGE_COLUMNS]
        outside = ((values < low - tolerance) | (values > high + tolerance)).any(axis=1)
        unseen = ((F[:, _SHARE_COLUMNS] > 0) & (self.high_[_SHARE_COLUMNS] <= 0)).any(axis=1)
        return outside | unseen

    def extrapolated(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        return self.extrapolated_features(structure_features(specs))

    def scored_range(self) -> dict[str, tuple[float, float]]:
        """The range of every :data:`RANGE_FEATURE_NAMES` feature over the scored architectures."""
        return {name: (float(self.low_[i]), float(self.high_[i]))
                for name, i in zip(RANGE_FEATURE_NAMES, _RANGE_COLUMNS)}

    @property
    def target(self) -> SourceFit:
        return self.target_

    def describe(self) -> dict[str, Any]:
        """What was fitted: the anchor, the target, every source and the std factor (JSON-ready)."""
        return {"task": self.task, "anchor": {"source": self.anchor_[0], "task": self.anchor_[1]},
                "target": {"source": self.target_.source, "task": self.target_.task},
                "std_factor": self.std_factor_, "svr_weight": self.mean_.svr_weight,
                "sources": [fit.as_dict() for fit in self.sources]}


def _kendall(predicted: np.ndarray, truth: np.ndarray) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(predicted, truth)[0]
    return float(tau) if np.isfinite(tau) else -1.0


def fit_accuracy_model(records: Sequence[Any], task: str = "glue", target_source: str | None = None,
                       seed: int = 0) -> AccuracyModel:
    """An :class:`AccuracyModel` fitted on ``records`` (the same records and seed give the same model).

    A fitted model is never changed afterwards, so fits are shared within a process: frontiers, co-design
    and their baselines fit the same records again and again, a couple of seconds each time."""
    return _shared_fit(tuple(records), task, target_source, int(seed))


@functools.lru_cache(maxsize=4)
def _shared_fit(records: tuple, task: str, target_source: str | None, seed: int) -> AccuracyModel:
    return AccuracyModel(task, target_source, seed).fit(records)


def prediction_rows(model: AccuracyModel, specs: Sequence[ArchSpec]) -> list[dict[str, Any]]:
    """``{"hash", "accuracy", "accuracy_std", "extrapolated"}`` per architecture, as ``protran predict
    --accuracy`` prints them."""
    F = structure_features(specs)
    mean, std = model.predict_features(F, return_std=True)
    flags = model.extrapolated_features(F)
    return [{"hash": model_hash(spec), "accuracy": float(m), "accuracy_std": float(s), "extrapolated": bool(e)}
            for spec, m, s, e in zip(specs, mean, std, flags)]
