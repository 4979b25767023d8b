"""Accuracy data (reference JSON, CSV, run store), accuracy models and the ranking tests."""

from __future__ import annotations

import csv
import json
import math
import sqlite3

import numpy as np
import pytest

from flexibert import embed, model_hash, sample_architectures
from protran._accuracy import (
    AccuracyFormatError,
    LambdaMARTRanker,
    accuracy_features,
    accuracy_training_set,
    import_accuracy,
    leave_some_out,
    leave_some_out_splits,
    load_accuracy,
    make_accuracy_surrogate,
    ndcg_at_k,
    ranking_metrics,
    read_accuracy_csv,
    read_reference_accuracy,
)
from protran._store import SCHEMA_VERSION, AccuracyRecord, RunStore

SPECS = sample_architectures(12, method="random", seed=7)


def _reference_row(spec, glue=" 0.8000", loss=2.5, steps=1000):
    return {"model_dict": str(spec.to_model_dict()), "model_type": "x", "embedding": str(embed(spec)),
            "pretrain": {"steps": steps, "loss": loss}, "glue": glue}


def _write_reference(path, rows):
    path.write_text(json.dumps(rows))
    return path


# -- reading -------------------------------------------------------------------------------------------


def test_public_reference_file_reads_every_model_with_scores_as_given(shared_data):
    records = read_reference_accuracy(shared_data / "flexibert" / "glue_pretrain_16.json")
    assert len(records) == 16
    scored = [r for r in records if r.score is not None]
    assert len(scored) == 13
    assert all(r.task == "glue" and r.pretrain_loss is not None and r.pretrain_steps for r in records)
    first = records[0]
    assert first.arch_hash == "f36d5c40c770e4f787c78b43a2a09d78"
    assert first.score == pytest.approx(0.8124)  # kept as stored (the reference scaled GLUE by 1.5)
    assert (first.pretrain_loss, first.pretrain_steps) == (pytest.approx(2.4507), 1000000)
    assert all(model_hash(r.spec) == r.arch_hash for r in records)


def test_reference_rows_are_checked_and_errors_name_row_and_field(tmp_path):
    spec = SPECS[0]
    good = _reference_row(spec)
    path = _write_reference(tmp_path / "acc.json", {model_hash(spec): good})
    assert read_reference_accuracy(path)[0].score == pytest.approx(0.8)

    wrong_key = _write_reference(tmp_path / "key.json", {"0" * 32: good})
    with pytest.raises(AccuracyFormatError, match="row '0{32}'.*not the hash"):
        read_reference_accuracy(wrong_key)
    bad_glue = _write_reference(tmp_path / "glue.json", {model_hash(spec): {**good, "glue": "high"}})
    with pytest.raises(AccuracyFormatError, match="field 'glue'.*not a number"):
        read_reference_accuracy(bad_glue)
    other = embed(SPECS[1])
    bad_embedding = _write_reference(tmp_path / "emb.json", {model_hash(spec): {**good, "embedding": str(other)}})
    with pytest.raises(AccuracyFormatError, match="field 'embedding'"):
        read_reference_accuracy(bad_embedding)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(AccuracyFormatError, match="not a JSON file"):
        read_reference_accuracy(tmp_path / "broken.json")


def test_reference_rows_without_glue_keep_their_pretraining_loss(tmp_path):
    spec = SPECS[2]
    path = _write_reference(tmp_path / "acc.json", {model_hash(spec): _reference_row(spec, glue=None)})
    (record,) = read_reference_accuracy(path)
    assert record.score is None and record.pretrain_loss == pytest.approx(2.5)


def test_csv_with_model_dicts_or_embeddings(tmp_path):
    path = tmp_path / "scores.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model_dict", "embedding", "task", "score", "pretrain_loss"])
        writer.writerow([json.dumps(SPECS[0].to_model_dict()), "", "sst2", "0.91", ""])
        writer.writerow(["", str(embed(SPECS[1])), "", "0.75", "3.1"])
        writer.writerow(["", " ".join(map(str, embed(SPECS[2]))), "glue", "", "2.9"])
    first, second, third = read_accuracy_csv(path)
    assert (first.arch_hash, first.task, first.score, first.pretrain_loss) == (model_hash(SPECS[0]), "sst2", 0.91, None)
    assert (second.spec, second.task, second.score, second.pretrain_loss) == (SPECS[1], "glue", 0.75, 3.1)
    assert third.score is None and third.pretrain_loss == 2.9
    assert load_accuracy(path, task="sst2") == [first]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("task,score\nglue,0.5\n", "'model_dict' or an 'embedding' column"),
        ("embedding,task\n\"[0]\",glue\n", "'score' or a 'pretrain_loss' column"),
        ("embedding,score,colour\n\"[0]\",0.5,red\n", r"unknown column\(s\) \['colour'\]"),
        ("embedding,score\n\"[1, 2, 3]\",0.5\n", "line 2, column 'embedding': has 3 entries"),
        ("embedding,score\n,0.5\n", "line 2: both 'model_dict' and 'embedding' are empty"),
    ],
)
def test_bad_csv_is_reported_with_its_line_and_column(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(AccuracyFormatError, match=message):
        read_accuracy_csv(path)


def test_bad_csv_values_name_the_line(tmp_path):
    valid = f"\"{embed(SPECS[0])}\""
    path = tmp_path / "bad.csv"
    path.write_text(f"embedding,score\n{valid},0.5\n{valid},nan\n")
    with pytest.raises(AccuracyFormatError, match="line 3, column 'score'.*not a finite number"):
        read_accuracy_csv(path)
    path.write_text(f"embedding,hash,score\n{valid},{'f' * 32},0.5\n")
    with pytest.raises(AccuracyFormatError, match="column 'hash'.*not the hash"):
        read_accuracy_csv(path)


# -- run store ------------------------------------------------------------------------------------------


def test_accuracy_lives_in_the_run_store_and_imports_idempotently(tmp_path):
    csv_path = tmp_path / "scores.csv"
    rows = "".join(f"\"{embed(s)}\",{0.5 + i / 100}\n" for i, s in enumerate(SPECS[:4]))
    csv_path.write_text("embedding,score\n" + rows)
    store_path = tmp_path / "runs.sqlite"
    assert import_accuracy(store_path, csv_path) == 4
    assert import_accuracy(store_path, csv_path) == 0  # the same file again adds nothing
    with RunStore(store_path) as store:
        assert store.schema_version == SCHEMA_VERSION == 6
        assert store.accuracy_tasks() == ["glue"]
        stored = store.accuracy()
        repeat = AccuracyRecord(SPECS[0], model_hash(SPECS[0]), "glue", 0.99, source="rerun")
        assert store.add_accuracy([repeat]) == 1
    assert [r.score for r in stored] == [0.5, 0.51, 0.52, 0.53]
    loaded = load_accuracy(store_path)
    assert len(loaded) == 5 and loaded[0].spec == SPECS[0]
    specs, scores = accuracy_training_set(loaded)
    assert specs == SPECS[:4] and scores[0] == pytest.approx((0.5 + 0.99) / 2)


def test_invalid_records_are_refused_before_writing(tmp_path):
    with RunStore(tmp_path / "runs.sqlite") as store:
        with pytest.raises(ValueError, match="not the hash"):
            store.add_accuracy([AccuracyRecord(SPECS[0], "0" * 32, "glue", 0.5)])
        with pytest.raises(ValueError, match="needs a score, a pretrain_loss or both"):
            store.add_accuracy([AccuracyRecord(SPECS[0], model_hash(SPECS[0]), "glue", None)])
        with pytest.raises(ValueError, match="finite"):
            store.add_accuracy([AccuracyRecord(SPECS[0], model_hash(SPECS[0]), "glue", float("inf"))])
        assert store.accuracy() == []


def _downgrade_to_version_1(path):
    """Make a store look like what version 1 wrote: no accuracy table."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE accuracy")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")


def test_version_1_store_reads_read_only_and_upgrades_when_opened_for_writing(tmp_path):
    path = tmp_path / "old.sqlite"
    with RunStore(path) as store:
        run_id = store.create_run("old-board", "onnxruntime")
    _downgrade_to_version_1(path)
    with RunStore(path, readonly=True) as reader:
        assert reader.schema_version == 1
        assert reader.accuracy() == [] and reader.accuracy_tasks() == []
        assert reader.get_run(run_id).device == "old-board"
    with RunStore(path) as writer:
        assert writer.schema_version == SCHEMA_VERSION
        assert writer.get_run(run_id).device == "old-board"
        assert writer.add_accuracy([AccuracyRecord(SPECS[0], model_hash(SPECS[0]), "glue", 0.7)]) == 1


# -- models ---------------------------------------------------------------------------------------------


def _synthetic_scores(specs):
    """A learnable score: more layers and more parameters score higher."""
    X = accuracy_features(specs)
    return 0.6 + 0.01 * X[:, 37 + 3] + 0.02 * (X[:, 37] - X[:, 37].mean())


def test_accuracy_surrogate_reports_a_spread_and_tracks_a_learnable_score():
    specs = sample_architectures(30, method="random", seed=11)
    y = _synthetic_scores(specs)
    X = accuracy_features(specs)
    model = make_accuracy_surrogate(seed=0).fit(X[:20], y[:20])
    mean, std = model.predict(X[20:], return_std=True)
    assert np.all(std > 0)
    assert np.corrcoef(mean, y[20:])[0, 1] > 0.5
    again = make_accuracy_surrogate(seed=0).fit(X[:20], y[:20]).predict(X[20:])
    assert np.array_equal(mean, again)  # seeded: the same model twice


def test_lambdamart_ranker_orders_rows_and_saves_without_pickle(tmp_path):
    specs = sample_architectures(30, method="random", seed=12)
    y = _synthetic_scores(specs)
    X = accuracy_features(specs)
    ranker = LambdaMARTRanker(seed=0).fit(X, y)
    scores = ranker.predict(X)
    from scipy.stats import spearmanr

    assert spearmanr(scores, y).statistic > 0.8
    loaded = LambdaMARTRanker.load(ranker.save(tmp_path / "ranker"))
    assert np.array_equal(loaded.predict(X), scores)
    assert list(LambdaMARTRanker.relevance(np.array([0.3, 0.1, 0.3, 0.9]))) == [16, 0, 16, 31]


def test_ranking_metrics_of_perfect_reversed_and_constant_predictions():
    y = np.array([0.1, 0.5, 0.3, 0.9])
    perfect = ranking_metrics(y, y, ks=(1, 2))
    assert perfect["best_of_1"] == 1 and perfect["ndcg_at_2"] == pytest.approx(1.0)
    assert perfect["regret_at_1"] == 0 and perfect["spearman"] == pytest.approx(1.0)
    reversed_ = ranking_metrics(y, -y, ks=(1, 2))
    assert reversed_["best_of_1"] == 0 and reversed_["best_of_2"] == 0
    assert reversed_["regret_at_1"] == pytest.approx(0.8) and reversed_["kendall"] == pytest.approx(-1.0)
    constant = ranking_metrics(y, np.zeros(4), ks=(1,))
    assert constant["best_of_1"] == 0 and np.isnan(constant["spearman"])  # ties never count as a hit
    assert ndcg_at_k(y, y[::-1] * 0 + np.arange(4), 4) < 1.0


def test_leave_some_out_uses_distinct_splits_and_scores_an_oracle_perfectly():
    splits = leave_some_out_splits(13, 4, 50, seed=0)
    assert len({tuple(test) for _, test in splits}) == 50
    assert all(len(test) == 4 and len(train) == 9 and not set(test) & set(train) for train, test in splits)
    assert len(leave_some_out_splits(6, 2, 100)) == 15  # every split when there are fewer
    y = np.linspace(0.5, 0.9, 13)
    oracle = leave_some_out(lambda train, test: y[test], y, splits)
    assert oracle["best_of_1"] == 1 and oracle["mse"] == 0 and oracle["ndcg_at_3"] == pytest.approx(1.0)
    mean = leave_some_out(lambda train, test: np.full(len(test), y[train].mean()), y, splits)
    assert mean["best_of_1"] == 0 and mean["chance_best_of_1"] == 0.25
    with pytest.raises(ValueError, match="hold out between 2 and 11"):
        leave_some_out_splits(13, 12, 10)


# -- MLM-loss proxy -------------------------------------------------------------------------------------


def test_mlm_proxy_is_deterministic_and_storable(tmp_path):
    import torch

    from flexibert import ArchSpec
    from flexibert._data import TextCorpus
    from protran._proxy import PROXY_TASK, ProxyConfig, measure_proxies, rank_correlation

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(5, 60, (24, 16), generator=generator)
    blocks[:, 0] = 2  # [CLS]
    corpus = TextCorpus(train=blocks[:20], validation=blocks[20:], seq_len=16, vocab_size=60)
    small = ArchSpec.from_model_dict({"l": 2, "o": [["sa_sdp_64", "l_dft_64"]] * 2, "h": [128, 128], "f": [[256]] * 2})
    other = ArchSpec.from_model_dict({"l": 2, "o": [["c_5_64", "l_dct_64"]] * 2, "h": [128, 128], "f": [[512]] * 2})
    config = ProxyConfig(steps=3, batch_size=4, seq_len=16, warmup_steps=1)
    first, second = measure_proxies([small, other], config, corpus=corpus)
    again = measure_proxies([small], config, corpus=corpus)[0]
    assert first.eval_loss == again.eval_loss and math.isfinite(second.eval_loss)
    assert first.steps == 3 and first.arch_hash == model_hash(small)
    record = first.to_record(small, config)
    assert (record.task, record.score, record.pretrain_steps) == (PROXY_TASK, math.exp(-first.eval_loss), 3)
    assert record.pretrain_loss == first.eval_loss
    with RunStore(tmp_path / "runs.sqlite") as store:
        assert store.add_accuracy([record]) == 1
        assert store.accuracy(task=PROXY_TASK)[0].pretrain_loss == first.eval_loss
    perfect = rank_correlation([1.0, 2.0, 3.0, 4.0], [0.9, 0.8, 0.7, 0.6])  # lower loss, higher accuracy
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["kendall"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3 paired values"):
        rank_correlation([1.0, 2.0], [0.5, 0.6])
