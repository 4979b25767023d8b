"""NAS-Bench-BERT's upstream format: the shipped 250 records import with every GLUE task, their
source and recipe, repeats kept as observations, and a version-2 store gains the recipe column."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from flexibert import ArchSpec, embed, model_hash
from protran import FileKind, RunStore, file_kind, load_accuracy
from protran._accuracy import NASBENCH_BERT_SOURCE, read_nasbench_bert
from protran._store import SCHEMA_VERSION
from protran.cli import main
from protran.vocabulary import DEFAULT_TRAINING_FREE_METRIC, TRAINING_FREE_METRICS

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "accuracy" / "nasbench_bert_250.json"
TASKS = {"cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst", "sts", "glue"}


def _run(run_id=1, glue=70.0, op=("SA", "SDP"), heads=2, hidden=128):
    layer = {"operation_type": op[0], "operation_parameter": op[1], "num_operation_heads": heads,
             "feed_forward_dimension": 512, "num_feed_forward": 3}
    return {"id": run_id, "completed": True, "time_to_train": 1000.0,
            "scores": {"cola": 30.0, "rte": 55.5, "glue": glue},
            "hparams": {"num_train_steps": 100000, "train_batch_size": 128, "learning_rate": 5e-4,
                        "model_hparam_overrides": {"hidden_size": hidden,
                                                   "nas_config": {"encoder_layers": [layer, layer]}}}}


def test_the_shipped_records_import_with_every_task_and_their_recipe():
    assert file_kind(SHIPPED) is FileKind.NASBENCH_BERT_JSON
    records = load_accuracy(SHIPPED)
    assert {r.task for r in records} == TASKS and len(records) == 9 * 250
    glue = [r for r in records if r.task == "glue"]
    assert all(r.source == NASBENCH_BERT_SOURCE and r.pretrain_steps == 100_000 for r in glue)
    assert 53 < min(r.score for r in glue) < max(r.score for r in glue) < 76  # the upstream 0-100 scale
    # an architecture trained twice is two observations, told apart by their recipes
    assert len({r.arch_hash for r in glue}) < len(glue) == len({r.recipe for r in glue})
    upstream = json.loads(SHIPPED.read_text())
    assert json.loads(glue[0].recipe)["upstream_id"] == upstream[0]["id"]
    assert glue[0].score == upstream[0]["scores"]["glue"]


def test_operations_map_to_flexibert_heads(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([_run(1, op=("DSC", 9), heads=4), _run(2, op=("LT", "DCT"), heads=2, hidden=256),
                                {**_run(3), "completed": False}]))
    records = read_nasbench_bert(path)
    assert len(records) == 6  # three tasks of each completed run
    first = ArchSpec.from_model_dict({"l": 2, "o": [["c_9_32"] * 4] * 2, "h": [128, 128],
                                      "f": [[512, 512, 512]] * 2})
    assert records[0].spec == first and records[0].arch_hash == model_hash(first)
    assert records[3].spec.to_model_dict()["o"][0] == ["l_dct_128", "l_dct_128"]
    assert embed(records[3].spec)  # inside the default design space


@pytest.mark.parametrize("text, message", [
    ("[1]", "run 0: expected an object"),
    (json.dumps([{"completed": True, "scores": {"glue": 1}}]), "run 0: needs 'hparams' and 'scores'"),
    (json.dumps([{**_run(), "hparams": {"model_hparam_overrides": {"hidden_size": 128}}}]),
     "not a NAS-Bench-BERT architecture"),
    (json.dumps([{**_run(), "scores": {"glue": "high"}}]), "scores.glue"),
])
def test_bad_records_name_the_run_and_field(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_nasbench_bert(path)


def test_protran_import_keeps_repeats_and_is_idempotent(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps([_run(1, glue=70.0), _run(2, glue=71.0)]))  # one architecture, trained twice
    store = tmp_path / "acc.sqlite"
    assert main(["import", str(path), "--store", str(store), "--accuracy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 6
    assert main(["import", str(path), "--store", str(store), "--accuracy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 0
    with RunStore(store, readonly=True) as opened:
        glue = opened.accuracy("glue")
    assert sorted(r.score for r in glue) == [70.0, 71.0]
    assert [json.loads(r.recipe)["upstream_id"] for r in glue] == [1, 2]


def test_a_version_2_store_reads_without_recipes_and_gains_the_column(tmp_path):
    path = tmp_path / "v2.sqlite"
    with RunStore(path) as store:
        store.add_accuracy(load_accuracy_first(tmp_path))
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE accuracy DROP COLUMN recipe")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with RunStore(path, readonly=True) as reader:
        assert reader.schema_version == 2 and reader.accuracy()[0].recipe is None
    with RunStore(path) as writer:
        assert writer.schema_version == SCHEMA_VERSION
        assert writer.add_accuracy(load_accuracy_first(tmp_path)) == 3  # now told apart by their recipe


def load_accuracy_first(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps([_run(5)]))
    return read_nasbench_bert(path)


def test_training_free_scores_need_no_store_and_rank_bigger_models_higher(tmp_path, capsys):
    small = {"l": 2, "o": [["sa_sdp_64", "sa_sdp_64"]] * 2, "h": [128, 128], "f": [[512]] * 2}
    large = {"l": 4, "o": [["sa_sdp_64"] * 4] * 4, "h": [256] * 4, "f": [[1024, 1024, 1024]] * 4}
    paths = []
    for name, model_dict in (("small", small), ("large", large)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(model_dict))
    assert main(["proxy", *map(str, paths), "--training-free", "--metric", "flops", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["scores"]
    assert [row["hash"] for row in scores] == [model_hash(ArchSpec.from_model_dict(m)) for m in (small, large)]
    assert set(scores[0]) == {"hash", "score"} and scores[1]["score"] > scores[0]["score"] > 0
    assert main(["proxy", str(paths[0])]) == 2  # a trained proxy keeps its losses in a store
    assert "--store is required" in capsys.readouterr().err


def test_the_training_free_benchmark_reports_every_metric_on_the_shipped_records(tmp_path):
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "training_free.py"
    spec = importlib.util.spec_from_file_location("benchmark_training_free", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    # the model metrics of the 246 architectures come from the cache shipped with the results
    combination = tmp_path / "combination.json"
    assert module.main(["--out", str(tmp_path), "--combination", str(combination)]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["architectures"] == 246
    assert set(result["metrics"]) == set(TRAINING_FREE_METRICS)
    assert set(result["metrics"]["flops"]) == TASKS
    # size ranks these architectures far better than chance (published: parameters, tau about 0.45)
    assert result["metrics"][result["best_by_kendall_glue"]]["glue"]["kendall_tau"] > 0.3
    assert result["best_by_kendall_glue"] == DEFAULT_TRAINING_FREE_METRIC
    assert (tmp_path / "README.md").read_text().startswith("# Training-free proxies")
    # the shipped combination is the one the benchmark fits
    shipped = json.loads((Path(__file__).resolve().parents[2] / "datasets" / "accuracy" /
                          "training_free_combination.json").read_text())
    assert json.loads(combination.read_text())["weights"] == pytest.approx(shipped["weights"])
