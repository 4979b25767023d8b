"""Accuracy data, accuracy surrogates and the ranking tests that judge them.

Data
----
Two input formats, both stored in the ``accuracy`` table of a run store:

- The reference JSON (``glue_pretrain_16.json``): an object keyed by model hash whose rows hold
  ``model_dict`` (a dict, or a string of a Python dict), ``embedding``, ``pretrain``
  (``{"steps", "loss"}``) and ``glue`` (the average GLUE score as a string, or null). Its scores were
  multiplied by 1.5 before they were stored (raw GLUE was about 0.47-0.56) and some models whose
  pre-training diverged (loss about 7.7) still carry high scores. Scores are kept *as given*: a
  constant factor changes neither rankings nor frontiers, only the printed accuracy scale.
- A plain CSV with a header: ``model_dict`` (JSON) or ``embedding`` (37 integers), and ``score``
  and/or ``pretrain_loss``; optional ``task`` (default ``glue``), ``pretrain_steps`` and ``hash``
  (checked against the architecture when present).

Surrogates
----------
With a dozen labelled architectures the accuracy model must be simple: a bagged ensemble of shallow,
strongly regularised xgboost regressors over the embedding plus the analytic features
(:func:`make_accuracy_surrogate`; its spread is calibrated on out-of-bag residuals), and a LambdaMART
ranker (:class:`LambdaMARTRanker`, xgboost's ``rank:ndcg`` objective) for when only the order matters.
:func:`leave_some_out` scores any of them by MSE and by ranking quality on held-out architectures:
nDCG@k, best-of-k hit rate (the truly best held-out architecture is among the k predicted best),
regret@k and rank correlations.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flexibert import ArchSpec, DesignSpace, EdgetranError, InvalidArchitectureError, decode, embed, model_hash
from protran._files import FileKind, file_kind, read_hash_keyed_json, read_json
from protran._store import AccuracyRecord, RunStore

DEFAULT_TASK = "glue"
#: The source name of NAS-Bench-BERT records (Serianni and Kalita, ACL 2023; CC BY 4.0).
NASBENCH_BERT_SOURCE = "nasbench_bert"
# The accuracy model sees the embedding and the analytic features of one 128-token sequence.
ACCURACY_FEATURES = "both"
ACCURACY_BATCH_SIZE = 1
ACCURACY_SEQ_LEN = 128

_CSV_COLUMNS = ("model_dict", "embedding", "hash", "task", "score", "pretrain_loss", "pretrain_steps")


class AccuracyFormatError(EdgetranError, ValueError):
    """An accuracy file is malformed; the message names the file, the row and the field."""


# -- reading ------------------------------------------------------------------------------------------


def read_reference_accuracy(path: str | Path) -> list[AccuracyRecord]:
    """Records of a reference accuracy JSON (``glue_pretrain_16.json``), in file order.

    Every architecture gives one ``glue`` record holding its score (None where the file has none)
    and its pre-training loss and steps. Architectures with neither are skipped.
    """
    path = Path(path)
    data = read_hash_keyed_json(path, AccuracyFormatError)
    records = []
    for key, value in data.items():
        record = _reference_record(path, key, value)
        if record.score is not None or record.pretrain_loss is not None:
            records.append(record)
    return records


def _reference_record(path: Path, key: str, value: Any) -> AccuracyRecord:
    where = f"{path}: row '{key}'"
    if not isinstance(value, dict):
        raise AccuracyFormatError(f"{where}: expected an object, got {type(value).__name__}")
    if "model_dict" not in value:
        raise AccuracyFormatError(f"{where}: field 'model_dict' is missing")
    spec = _parse_model_dict(value["model_dict"], f"{where}, field 'model_dict'")
    expected = model_hash(spec)
    if key != expected:
        raise AccuracyFormatError(f"{where}: the key is not the hash of its model_dict (expected '{expected}')")
    if value.get("embedding") is not None:
        given = _parse_embedding(value["embedding"], f"{where}, field 'embedding'")
        if given != embed(spec):
            raise AccuracyFormatError(f"{where}, field 'embedding': does not match the model_dict ({embed(spec)})")
    pretrain = value.get("pretrain") or {}
    if not isinstance(pretrain, dict):
        raise AccuracyFormatError(f"{where}, field 'pretrain': expected an object with 'steps' and 'loss'")
    return AccuracyRecord(
        spec=spec,
        arch_hash=key,
        task=DEFAULT_TASK,
        score=_parse_number(value.get("glue"), f"{where}, field 'glue'"),
        pretrain_loss=_parse_number(pretrain.get("loss"), f"{where}, field 'pretrain.loss'"),
        pretrain_steps=_parse_steps(pretrain.get("steps"), f"{where}, field 'pretrain.steps'"),
        source=path.name,
    )


def read_nasbench_bert(path: str | Path) -> list[AccuracyRecord]:
    """Records of NAS-Bench-BERT's upstream ``BERT_benchmark.json``, in file order.

    Every completed run gives one record per GLUE task and one for their mean (task ``glue``), on the
    upstream 0-100 scale, with source ``nasbench_bert`` and the run's recipe (upstream id, pre-training
    steps, batch size, learning rate, training time): an architecture trained twice is two
    observations. Runs that did not complete are skipped.
    """
    path = Path(path)
    data = read_json(path, AccuracyFormatError)
    if not isinstance(data, list):
        raise AccuracyFormatError(f"{path}: expected a JSON list of NAS-Bench-BERT runs")
    records = []
    for number, run in enumerate(data):
        where = f"{path}: run {number}"
        if not isinstance(run, dict):
            raise AccuracyFormatError(f"{where}: expected an object, got {type(run).__name__}")
        if run.get("completed") is False:
            continue
        records += _nasbench_records(run, where)
    return records


def _nasbench_records(run: dict, where: str) -> list[AccuracyRecord]:
    hparams, scores = run.get("hparams"), run.get("scores")
    if not isinstance(hparams, dict) or not isinstance(scores, dict) or not scores:
        raise AccuracyFormatError(f"{where}: needs 'hparams' and 'scores' objects")
    spec = _nasbench_spec(hparams.get("model_hparam_overrides"), f"{where}, field 'hparams.model_hparam_overrides'")
    steps = _parse_steps(hparams.get("num_train_steps"), f"{where}, field 'hparams.num_train_steps'")
    recipe = json.dumps({
        "upstream_id": run.get("id"), "pretraining": "ELECTRA-Small-style discriminative, OpenWebText",
        "num_train_steps": steps, "train_batch_size": hparams.get("train_batch_size"),
        "learning_rate": hparams.get("learning_rate"), "time_to_train_s": run.get("time_to_train"),
    }, sort_keys=True)
    arch_hash = model_hash(spec)
    return [
        AccuracyRecord(spec=spec, arch_hash=arch_hash, task=task,
                       score=_parse_number(value, f"{where}, field 'scores.{task}'"), pretrain_steps=steps,
                       source=NASBENCH_BERT_SOURCE, recipe=recipe)
        for task, value in scores.items() if value is not None
    ]


# NAS-Bench-BERT names operations by type and parameter; FlexiBERT 2.0 by one name.
_NASBENCH_OPERATIONS = {("SA", "SDP"): "sa_sdp", ("SA", "WMA"): "sa_wma", ("LT", "DFT"): "l_dft",
                        ("LT", "DCT"): "l_dct", ("DSC", "5"): "c_5", ("DSC", "9"): "c_9", ("DSC", "13"): "c_13"}


def _nasbench_spec(overrides: Any, where: str) -> ArchSpec:
    """The FlexiBERT 2.0 spec of a NAS-Bench-BERT architecture: one width for every layer, each layer
    with ``num_operation_heads`` heads of one operation of head size ``hidden_size // heads`` and a
    feed-forward stack of ``num_feed_forward`` layers of ``feed_forward_dimension``."""
    try:
        hidden = int(overrides["hidden_size"])
        layers = overrides["nas_config"]["encoder_layers"]
        ops, ffs = [], []
        for layer in layers:
            name = _NASBENCH_OPERATIONS[(str(layer["operation_type"]), str(layer["operation_parameter"]))]
            heads = int(layer["num_operation_heads"])
            ops.append([f"{name}_{hidden // heads}"] * heads)
            ffs.append([int(layer["feed_forward_dimension"])] * int(layer["num_feed_forward"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise AccuracyFormatError(f"{where}: not a NAS-Bench-BERT architecture ({error!r})") from None
    return _parse_model_dict({"l": len(layers), "o": ops, "h": [hidden] * len(layers), "f": ffs}, where)


def read_accuracy_csv(path: str | Path) -> list[AccuracyRecord]:
    """Records of a plain accuracy CSV (columns in the module docstring), in file order."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            rows = list(reader)
    except FileNotFoundError:
        raise AccuracyFormatError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise AccuracyFormatError(f"{path}: not a readable CSV file ({error})") from None
    _check_csv_columns(path, columns)
    records = []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        row = {(name or "").strip(): (value or "").strip() for name, value in row.items() if name is not None}
        records.append(_csv_record(path, number, row))
    if not records:
        raise AccuracyFormatError(f"{path}: holds a header but no rows")
    return records


def _check_csv_columns(path: Path, columns: list[str]) -> None:
    if not columns:
        raise AccuracyFormatError(
            f"{path}: empty file; expected a header such as 'model_dict,task,score,pretrain_loss'")
    if "model_dict" not in columns and "embedding" not in columns:
        raise AccuracyFormatError(f"{path}: needs a 'model_dict' or an 'embedding' column; found {columns}")
    if "score" not in columns and "pretrain_loss" not in columns:
        raise AccuracyFormatError(f"{path}: needs a 'score' or a 'pretrain_loss' column; found {columns}")
    unknown = [name for name in columns if name not in _CSV_COLUMNS]
    if unknown:
        raise AccuracyFormatError(f"{path}: unknown column(s) {unknown}; known: {list(_CSV_COLUMNS)}")


def _csv_record(path: Path, number: int, row: dict[str, str]) -> AccuracyRecord:
    where = f"{path}: line {number}"
    if row.get("model_dict"):
        spec = _parse_model_dict(row["model_dict"], f"{where}, column 'model_dict'")
        if row.get("embedding") and _parse_embedding(row["embedding"], f"{where}, column 'embedding'") != embed(spec):
            raise AccuracyFormatError(f"{where}, column 'embedding': does not match the model_dict")
    elif row.get("embedding"):
        embedding = _parse_embedding(row["embedding"], f"{where}, column 'embedding'")
        try:
            spec = decode(embedding)
        except InvalidArchitectureError as error:
            raise AccuracyFormatError(f"{where}, column 'embedding': {error}") from None
    else:
        raise AccuracyFormatError(f"{where}: both 'model_dict' and 'embedding' are empty")
    arch_hash = model_hash(spec)
    if row.get("hash") and row["hash"] != arch_hash:
        raise AccuracyFormatError(
            f"{where}, column 'hash': '{row['hash']}' is not the hash of the architecture ('{arch_hash}')")
    score = _parse_number(row.get("score") or None, f"{where}, column 'score'")
    loss = _parse_number(row.get("pretrain_loss") or None, f"{where}, column 'pretrain_loss'")
    if score is None and loss is None:
        raise AccuracyFormatError(f"{where}: needs a score, a pretrain_loss or both")
    return AccuracyRecord(
        spec=spec,
        arch_hash=arch_hash,
        task=row.get("task") or DEFAULT_TASK,
        score=score,
        pretrain_loss=loss,
        pretrain_steps=_parse_steps(row.get("pretrain_steps") or None, f"{where}, column 'pretrain_steps'"),
        source=path.name,
    )


def _parse_model_dict(value: Any, where: str) -> ArchSpec:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except RecursionError:
            raise AccuracyFormatError(f"{where}: model_dict nested too deeply (over about a thousand levels)") \
                from None
        except json.JSONDecodeError:
            try:  # the reference stored str(dict): single quotes
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise AccuracyFormatError(f"{where}: not a JSON object or a Python dict literal") from None
    try:
        return ArchSpec.from_model_dict(value)
    except InvalidArchitectureError as error:
        raise AccuracyFormatError(f"{where}: {error}") from None


def _parse_embedding(value: Any, where: str) -> list[int]:
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        items = re.findall(r"-?\d+", value)
    else:
        raise AccuracyFormatError(f"{where}: expected a list of integers, got {type(value).__name__}")
    try:
        numbers = [int(item) for item in items]
    except (TypeError, ValueError):
        raise AccuracyFormatError(f"{where}: expected a list of integers") from None
    length = DesignSpace.default().embedding_length
    if len(numbers) != length:
        raise AccuracyFormatError(f"{where}: has {len(numbers)} entries, the design space needs {length}")
    return numbers


def _parse_number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise AccuracyFormatError(f"{where}: {value!r} is not a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise AccuracyFormatError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise AccuracyFormatError(f"{where}: {value!r} is not a finite number")
    return number


def _parse_steps(value: Any, where: str) -> int | None:
    number = _parse_number(value, where)
    if number is None:
        return None
    if number < 0 or number != int(number):
        raise AccuracyFormatError(f"{where}: {value!r} is not a non-negative whole number of steps")
    return int(number)


def load_accuracy(path: str | Path, task: str | None = None) -> list[AccuracyRecord]:
    """Accuracy records from a run store, a reference accuracy JSON or a CSV (told apart by content),
    optionally of one task."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such accuracy file: {path}")
    kind = file_kind(path)
    if kind is FileKind.RUN_STORE:
        with RunStore(path, readonly=True) as store:
            records = store.accuracy()
    elif kind is FileKind.ACCURACY_CSV:
        records = read_accuracy_csv(path)
    elif kind is FileKind.NASBENCH_BERT_JSON:
        records = read_nasbench_bert(path)
    else:  # a hash-keyed JSON object: the reference format's reader names what a profile lacks
        records = read_reference_accuracy(path)
    return [record for record in records if task is None or record.task == task]


def load_accuracy_files(paths: str | Path | Sequence[str | Path], task: str | None = None) -> list[AccuracyRecord]:
    """:func:`load_accuracy` of every file, in order: the records of several sources at once."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return [record for path in paths for record in load_accuracy(path, task)]


def import_accuracy(store: RunStore | str | Path, path: str | Path) -> int:
    """Import an accuracy file (reference JSON or CSV) into a run store; returns the new records."""
    records = load_accuracy(path)
    if isinstance(store, RunStore):
        return store.add_accuracy(records)
    with RunStore(store) as opened:
        return opened.add_accuracy(records)


def accuracy_training_set(records: Sequence[AccuracyRecord],
                          task: str = DEFAULT_TASK) -> tuple[list[ArchSpec], np.ndarray]:
    """One (architecture, mean score) per distinct architecture with a score on ``task``, in order
    of first appearance."""
    scores: dict[str, list[float]] = {}
    specs: dict[str, ArchSpec] = {}
    for record in records:
        if record.task == task and record.score is not None:
            specs.setdefault(record.arch_hash, record.spec)
            scores.setdefault(record.arch_hash, []).append(record.score)
    return list(specs.values()), np.array([np.mean(values) for values in scores.values()], dtype=float)


def accuracy_features(specs: Sequence[ArchSpec]) -> np.ndarray:
    """The accuracy models' inputs: the embedding and the analytic features of one sequence."""
    from protran.surrogates import featurize

    return featurize(list(specs), features=ACCURACY_FEATURES, batch_size=ACCURACY_BATCH_SIZE,
                     seq_len=ACCURACY_SEQ_LEN)


# -- models ---------------------------------------------------------------------------------------------


def make_accuracy_surrogate(seed: int = 0, **params: Any):
    """The accuracy regressor: 16 bootstrap members of 2-level xgboost trees with a strong L2 penalty,
    its spread calibrated on out-of-bag residuals (``protran.surrogates.GBDTEnsembleSurrogate``).

    Depth-2 trees, half the features per tree and a minimum leaf weight of 2 keep a dozen rows from
    being memorised; ``params`` override any of these.
    """
    from protran.surrogates import make_surrogate

    settings = {
        "n_members": 16, "n_estimators": 60, "max_depth": 2, "learning_rate": 0.05, "subsample": 1.0,
        "colsample_bytree": 0.5, "min_child_weight": 2.0, "reg_lambda": 5.0, "features": ACCURACY_FEATURES,
    }
    settings.update(params)
    return make_surrogate("gbdt", seed=seed, **settings)


class LambdaMARTRanker:
    """A LambdaMART ranker (xgboost's ``rank:ndcg`` objective) that orders architectures by accuracy.

    Scores are turned into graded relevance labels 0..31 by rank (only their order matters), and all
    training rows form one query. ``predict`` returns ranking scores: higher means predicted better;
    their scale means nothing. Saved as xgboost's own JSON plus a small header; never pickled.
    """

    name = "lambdamart"
    _MAX_GRADE = 31

    def __init__(self, *, seed: int = 0, n_estimators: int = 100, max_depth: int = 2, learning_rate: float = 0.1,
                 colsample_bytree: float = 0.5, min_child_weight: float = 0.0, reg_lambda: float = 5.0,
                 lambdarank_pair_method: str = "mean") -> None:
        # Lambda gradients have tiny hessians, so any positive min_child_weight blocks every split on a
        # dozen rows; the L2 penalty regularises instead. "mean" pairs every row with sampled others,
        # which suits one short query better than pairs around the top-k only.
        self.params = {
            "n_estimators": int(n_estimators), "max_depth": int(max_depth), "learning_rate": float(learning_rate),
            "colsample_bytree": float(colsample_bytree), "min_child_weight": float(min_child_weight),
            "reg_lambda": float(reg_lambda), "lambdarank_pair_method": str(lambdarank_pair_method),
        }
        self.seed = int(seed)
        self.booster_ = None

    @staticmethod
    def relevance(scores: np.ndarray, max_grade: int = _MAX_GRADE) -> np.ndarray:
        """Integer grades 0..max_grade by rank (ties share a grade), the best row getting the highest."""
        scores = np.asarray(scores, dtype=float)
        distinct = np.unique(scores)
        position = np.searchsorted(distinct, scores)
        if distinct.size == 1:
            return np.zeros(scores.size, dtype=np.int64)
        return np.floor(position * max_grade / (distinct.size - 1) + 0.5).astype(np.int64)

    def fit(self, X, y) -> LambdaMARTRanker:
        import xgboost

        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] < 2:
            raise ValueError(f"need a 2-D X and one score per row (at least 2 rows); got X {X.shape}, y {y.shape}")
        model = xgboost.XGBRanker(objective="rank:ndcg", random_state=self.seed, n_jobs=1, **self.params)
        model.fit(X, self.relevance(y), qid=np.zeros(X.shape[0], dtype=np.int64))
        self.booster_ = model.get_booster()
        return self

    def predict(self, X) -> np.ndarray:
        if self.booster_ is None:
            raise RuntimeError("this LambdaMARTRanker is not fitted yet; call fit(X, y) first")
        return self.booster_.inplace_predict(np.asarray(X, dtype=float)).astype(np.float64)

    def save(self, path: str | Path) -> Path:
        if self.booster_ is None:
            raise RuntimeError("this LambdaMARTRanker is not fitted yet; call fit(X, y) first")
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(directory / "ranker.json"))
        header = {"name": self.name, "seed": self.seed, "params": self.params}
        (directory / "ranker_header.json").write_text(json.dumps(header, indent=2), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, path: str | Path) -> LambdaMARTRanker:
        import xgboost

        directory = Path(path)
        header = json.loads((directory / "ranker_header.json").read_text(encoding="utf-8"))
        if header.get("name") != cls.name:
            raise ValueError(f"{directory} does not hold a saved {cls.name} ranker")
        ranker = cls(seed=header["seed"], **header["params"])
        ranker.booster_ = xgboost.Booster()
        ranker.booster_.load_model(str(directory / "ranker.json"))
        return ranker


# -- ranking tests ------------------------------------------------------------------------------------


def ndcg_at_k(y_true: np.ndarray, y_score: np.ndarray, k: int) -> float:
    """nDCG@k with the true scores, min-max scaled over these rows, as gains (1 = perfect order)."""
    y_true = np.asarray(y_true, dtype=float)
    span = y_true.max() - y_true.min()
    gains = (y_true - y_true.min()) / span if span > 0 else np.ones_like(y_true)
    discounts = 1.0 / np.log2(np.arange(2, min(k, y_true.size) + 2))
    # Ties in the prediction are broken pessimistically (worst true score first), so a constant
    # predictor scores no better than chance.
    order = np.lexsort((y_true, -np.asarray(y_score, dtype=float)))[:k]
    ideal = np.sort(gains)[::-1][:k]
    best = float(np.sum(ideal * discounts))
    return float(np.sum(gains[order] * discounts) / best) if best > 0 else 1.0


def ranking_metrics(y_true, y_score, ks: Sequence[int] = (1, 2, 3)) -> dict[str, float]:
    """Ranking quality of ``y_score`` (higher = predicted better) against the true scores.

    ``best_of_<k>``: 1 when the truly best row is among the k rows predicted best (ties in the
    prediction broken pessimistically), else 0. ``regret_at_<k>``: the true best score minus the best
    true score among the k predicted best. ``ndcg_at_<k>``, and Spearman's rho and Kendall's tau
    (NaN when the prediction is constant).
    """
    from scipy.stats import kendalltau, spearmanr

    y_true = np.asarray(y_true, dtype=float)
    y_score = np.asarray(y_score, dtype=float)
    order = np.lexsort((y_true, -y_score))
    metrics: dict[str, float] = {}
    for k in ks:
        top = order[:k]
        metrics[f"best_of_{k}"] = float(y_true[top].max() >= y_true.max())
        metrics[f"regret_at_{k}"] = float(y_true.max() - y_true[top].max())
        metrics[f"ndcg_at_{k}"] = ndcg_at_k(y_true, y_score, k)
    constant = np.ptp(y_score) == 0 or np.ptp(y_true) == 0
    metrics["spearman"] = float("nan") if constant else float(spearmanr(y_true, y_score).statistic)
    metrics["kendall"] = float("nan") if constant else float(kendalltau(y_true, y_score).statistic)
    return metrics


def leave_some_out_splits(n_rows: int, n_test: int, n_splits: int,
                          seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` distinct random (train, test) index splits with ``n_test`` held-out rows each
    (every possible split when there are fewer)."""
    from itertools import combinations

    if not 2 <= n_test <= n_rows - 2:
        raise ValueError(f"hold out between 2 and {n_rows - 2} of {n_rows} rows, not {n_test}")
    all_rows = np.arange(n_rows)
    if math.comb(n_rows, n_test) <= n_splits:
        tests = [np.array(test) for test in combinations(range(n_rows), n_test)]
    else:
        rng = np.random.default_rng(seed)
        seen: set[tuple[int, ...]] = set()
        tests = []
        while len(tests) < n_splits:
            test = tuple(sorted(rng.choice(n_rows, size=n_test, replace=False).tolist()))
            if test not in seen:
                seen.add(test)
                tests.append(np.array(test))
    return [(np.setdiff1d(all_rows, test), test) for test in tests]


def leave_some_out(
    predict_fold: Callable[[np.ndarray, np.ndarray], np.ndarray],
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    ks: Sequence[int] = (1, 2, 3),
    regression: bool = True,
) -> dict[str, float]:
    """Mean test metrics over ``splits`` of a model given as ``predict_fold(train, test) -> scores``.

    ``mse`` (and the test-set ``mse_of_mean`` of always predicting the training mean, for scale) is
    reported for regressors only; rankers' scores have no units.
    """
    y = np.asarray(y, dtype=float)
    rows = []
    for train, test in splits:
        predicted = np.asarray(predict_fold(train, test), dtype=float)
        metrics = ranking_metrics(y[test], predicted, ks)
        if regression:
            metrics["mse"] = float(np.mean((predicted - y[test]) ** 2))
            metrics["mse_of_mean"] = float(np.mean((y[train].mean() - y[test]) ** 2))
        rows.append(metrics)
    summary = {key: _mean_of_finite([row[key] for row in rows]) for key in rows[0]}
    summary["splits"] = len(rows)
    summary["chance_best_of_1"] = 1.0 / len(splits[0][1])
    return summary


def _mean_of_finite(values: list[float]) -> float:
    """Mean over the splits where the metric is defined (rank correlations of a constant prediction
    are not); NaN when it never is."""
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")
