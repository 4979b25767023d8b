"""The protran command end to end: a real (tiny) profile of this machine, predict, import/export."""

import json
import math

import pytest

from protran.cli import main

TINY_SPACE = """\
encoder_layers: [2]
hidden_size: [128]
attention_heads: [2, 4]
operation_types: [sa_sdp, l_dft, c_5]
feed_forward_depth: [1]
feed_forward_dims: [256, 512]
"""


def test_profile_then_predict_on_this_machine(tmp_path, capsys):
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    out = tmp_path / "runs"
    args = ["profile", "--device", "ci-cpu", "--space", str(space), "--seed-samples", "2", "--max-samples", "3",
            "--seq-len", "16", "--vocab-size", "500", "--time-cap-s", "2", "--target-rel-ci", "0.2",
            "--meter", "none", "--surrogate", "gbdt", "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measured_ok"] + summary["failed"] + summary["unstable"] == 3
    assert summary["measured_ok"] >= 2, summary
    assert summary["measures"] == ["latency_s"] and summary["meter"] is None
    assert summary["stop_reason"] == "max_samples"

    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"l": 2, "o": [["sa_sdp_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[256]] * 2}))
    assert main(["predict", "--surrogates", str(out), str(arch), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["device"] == "ci-cpu"
    latency = rows[0]["predicted"]["latency_s"]
    assert latency["mean"] > 0 and latency["std"] >= 0

    exported = tmp_path / "ci-cpu.json"
    assert main(["export", "--store", summary["store"], str(exported)]) == 0
    dataset = json.loads(exported.read_text())
    assert len(dataset) == summary["measured_ok"]
    assert all(row["performance"]["energy"] is None for row in dataset.values())


def test_import_and_export_round_trip(shared_data, tmp_path, capsys):
    source = shared_data / "protran" / "cpu_rpi_b1_r1.json"
    store = tmp_path / "boards.sqlite"
    assert main(["import", str(source), "--store", str(store), "--json"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert imported["device"] == "cpu_rpi_b1_r1" and imported["rows"] == 81
    target = tmp_path / "out.json"
    assert main(["export", "--store", str(store), str(target)]) == 0
    assert json.loads(target.read_text()) == json.loads(source.read_text())


def test_bad_input_is_one_line_and_exit_code(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["import", str(broken), "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and "Traceback" not in err
    assert main(["predict", "--surrogates", str(tmp_path / "none"), str(broken)]) == 2
    assert main(["meter-server", "--meter", "ina219"]) == 1
    assert "INA219" in capsys.readouterr().err
    assert main(["profile", "--help"]) == 0
    assert "Example:" in capsys.readouterr().out


def test_measure_a_listed_set_on_this_machine(tmp_path, capsys):
    archs = tmp_path / "holdout.jsonl"
    archs.write_text("\n".join(json.dumps(d) for d in (
        {"l": 2, "o": [["sa_sdp_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[256]] * 2},
        {"l": 2, "o": [["l_dft_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[512]] * 2},
    )) + "\n")
    args = ["measure", str(archs), "--device", "ci-cpu", "--purpose", "holdout", "--seq-len", "16",
            "--vocab-size", "500", "--time-cap-s", "2", "--target-rel-ci", "0.2", "--meter", "none",
            "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["purpose"] == "holdout" and summary["requested"] == 2
    assert summary["measured_ok"] + summary["unstable"] == 2, summary
    assert summary["store"] == str(tmp_path / "ci-cpu.sqlite")
    assert main(args + ["--resume"]) == 0  # a finished run is never resumed: a second run
    assert json.loads(capsys.readouterr().out)["run_id"] == summary["run_id"] + 1


def test_accuracy_import_and_the_mlm_proxy_land_in_one_store(tmp_path, capsys):
    scores = tmp_path / "scores.csv"
    small = {"l": 2, "o": [["sa_sdp_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[256]] * 2}
    other = {"l": 2, "o": [["l_dft_64", "c_5_64"]] * 2, "h": [128, 128], "f": [[512]] * 2}
    lines = ["model_dict,task,score"] + [f'"{json.dumps(d).replace(chr(34), chr(34) * 2)}",sst2,{s}'
                                         for d, s in ((small, 0.8), (other, 0.7))]
    scores.write_text("\n".join(lines) + "\n")
    store = tmp_path / "accuracy.sqlite"
    assert main(["import", str(scores), "--store", str(store), "--accuracy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"records": 2, "added": 2, "tasks": ["sst2"], "store": str(store)}
    assert main(["import", str(scores), "--store", str(store), "--accuracy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 0  # importing again changes nothing

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("The quick brown fox jumps over the lazy dog. " * 200)
    (corpus / "validation.txt").write_text("A lazy dog sleeps while the quick fox runs away. " * 40)
    arch = tmp_path / "small.json"
    arch.write_text(json.dumps(small))
    assert main(["proxy", str(arch), "--store", str(store), "--steps", "2", "--batch-size", "2", "--seq-len", "16",
                 "--corpus", str(corpus), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    from protran._store import RunStore

    with RunStore(store, readonly=True) as opened:
        assert opened.accuracy_tasks() == ["mlm_proxy", "sst2"]
        (record,) = opened.accuracy(task="mlm_proxy")
    assert record.pretrain_loss == row["proxy_loss"] and record.score == pytest.approx(math.exp(-row["proxy_loss"]))
    assert main(["import", str(tmp_path / "absent.csv"), "--store", str(store), "--accuracy"]) == 2
    assert "absent.csv" in capsys.readouterr().err
