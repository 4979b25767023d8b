"""The protran command end to end: a real (tiny) profile of this machine, predict, import/export."""

import io
import json
import math
from types import SimpleNamespace

import pytest

from flexibert import clitools, model_hash
from protran._protocol import MeasurementResult
from protran.cli import _ProfileProgress, build_parser, main

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
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["measured_ok"] + summary["failed"] + summary["unstable"] == 3
    # stderr is not a terminal here, as in a log file: one progress line per measurement
    progress = [line for line in captured.err.splitlines() if line.startswith("profiling ")]
    assert [line.split()[1] for line in progress] == ["1/3", "2/3", "3/3"] and all("ETA" in line for line in progress)
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
    assert main(["meter-server", "--meter", "ina219"]) == 2
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


def _measured(arch_hash: str, status: str, latency_s: float | None, n_attempts: int) -> dict:
    result = SimpleNamespace(arch_hash=arch_hash, status=status, latency_s=latency_s)
    return {"event": "measured", "result": result, "n_attempts": n_attempts, "n_ok": n_attempts, "cv_mse": {}}


def test_profile_progress_in_a_log_file_is_one_line_per_measurement_with_its_eta():
    log = io.StringIO()
    report = _ProfileProgress(clitools.Progress(6, "profiling", stream=log))
    report({"event": "started", "n_attempts": 2})  # a resumed run: two measured before
    report({"event": "measuring", "hash": "aaaaaaaa11", "reason": "seed", "spec": None})
    report(_measured("aaaaaaaa11", "ok", 0.01234, 3))
    report({"event": "fitted", "cv_mse": {"latency_s": 0.5}, "passes": 0, "n_ok": 3})
    report(_measured("bbbbbbbb22", "timeout", None, 4))
    lines = log.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("profiling 3/6  elapsed ") and "  ETA " in lines[0]
    assert lines[0].endswith("aaaaaaaa ok, latency 12.34 ms, 3 ok")
    assert lines[1].startswith("profiling 4/6  elapsed ") and lines[1].endswith("bbbbbbbb timeout, latency n/a, 4 ok")


def _fake_measure(spec, *, runtime, batch_size, seq_len, num_threads, **settings) -> MeasurementResult:
    """A measurement without a worker process: latency grows with the model_dict's size."""
    model_dict = spec.to_model_dict()
    return MeasurementResult(model_hash(spec), model_dict, runtime, batch_size, seq_len, num_threads, "ok",
                             latency_s=1e-5 * len(json.dumps(model_dict)))


def test_ctrl_c_keeps_every_measurement_and_resume_goes_on(tmp_path, capsys, monkeypatch):
    import protran._profile as profiling
    from protran._store import RunStore

    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    measured = []

    def interrupted_on_the_third(spec, **settings):
        if len(measured) == 2:
            raise KeyboardInterrupt
        measured.append(spec)
        return _fake_measure(spec, **settings)

    monkeypatch.setattr(profiling, "_default_measure", interrupted_on_the_third)
    store = tmp_path / "runs" / "ci-cpu.sqlite"
    args = ["profile", "--device", "ci-cpu", "--space", str(space), "--seed-samples", "4", "--max-samples", "4",
            "--meter", "none", "--surrogate", "gbdt", "--reference-every", "0", "--out", str(tmp_path / "runs")]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (f"protran: interrupted; every finished measurement is in {store}; "
                                    "run the same command with --resume to continue")
    with RunStore(store, readonly=True) as runs:
        assert len(runs.measurements(status=None)) == 2
        assert runs.get_run(1).status == "interrupted"

    monkeypatch.setattr(profiling, "_default_measure", _fake_measure)
    assert main(args + ["--resume", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["run_id"] == 1 and summary["measured_ok"] == 4
    progress = [line.split()[1] for line in captured.err.splitlines() if line.startswith("profiling ")]
    assert progress == ["3/4", "4/4"]


def test_debug_shows_the_traceback(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["--debug", "import", str(broken), "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("protran: error: ") and "broken.json" in err


def test_max_latency_ms_is_a_deprecated_alias_in_seconds(capsys):
    pareto = ["pareto", "--profile", "board.json", "--accuracy", "scores.csv"]
    assert build_parser().parse_args(pareto + ["--max-latency-s", "0.05"]).max_latency_s == 0.05
    assert capsys.readouterr().err == ""
    assert build_parser().parse_args(pareto + ["--max-latency-ms", "50"]).max_latency_s == pytest.approx(0.05)
    assert capsys.readouterr().err == "protran: --max-latency-ms is deprecated; use --max-latency-s 0.05\n"
    assert main(["pareto", "--help"]) == 0
    assert "--max-latency-ms" not in capsys.readouterr().out  # hidden: new scripts see one unit


def test_processes_reach_every_measurement_of_a_run(tmp_path, monkeypatch, capsys):
    import protran._profile as profiling

    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    seen = []

    def measured(spec, **settings):
        seen.append(settings.get("processes"))
        return _fake_measure(spec, **settings)

    monkeypatch.setattr(profiling, "_default_measure", measured)
    args = ["profile", "--device", "ci-cpu", "--space", str(space), "--seed-samples", "3", "--max-samples", "3",
            "--meter", "none", "--surrogate", "gbdt", "--reference-every", "2", "--processes", "2",
            "--out", str(tmp_path / "runs")]
    assert main(args) == 0
    assert len(seen) == 5 and set(seen) == {2}  # three rows and two references
    assert main(args[:-2] + ["--processes", "0", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--processes" in err
    assert not (tmp_path / "other").exists()  # refused before anything was written
