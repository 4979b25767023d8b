import json
import shutil
from pathlib import Path

import pytest
import torch

from flexibert import ArchSpec, DesignSpace
from gptran.cli import main

torch.set_num_threads(1)

CORPUS = Path(__file__).resolve().parents[2] / "datasets" / "corpus"
TINY = {"l": 2, "o": [["sa_sdp_64"] * 2] * 2, "h": [128, 128], "f": [[512], [512]]}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """A few kilobytes of the shipped corpus with its tokenizer, so that tokenising is instant."""
    if not (CORPUS / "tokenizer.json").is_file():
        pytest.skip(f"the shipped corpus is missing from {CORPUS}")
    directory = tmp_path_factory.mktemp("corpus")
    for name, size in (("train.txt", 20_000), ("validation.txt", 3_000)):
        text = (CORPUS / name).read_text(encoding="utf-8")[:size]
        (directory / name).write_text(text[: text.rfind("\n")] + "\n", encoding="utf-8")
    shutil.copy(CORPUS / "tokenizer.json", directory / "tokenizer.json")
    return directory


@pytest.fixture
def model_dict(tmp_path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def _run_args(model_dict, corpus, out, *extra):
    return [
        "run", "--model-dict", str(model_dict), "--corpus", str(corpus), "--steps-per-child", "3",
        "--max-nodes", "3", "--num-samples", "2", "--seq-len", "32", "--batch-size", "4", "--eval-blocks", "4",
        "--seed", "0", "--out", str(out), *extra,
    ]


def test_help_shows_an_example(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example:" in out and "gptran run --model-dict" in out


def test_run_prints_the_json_contract_writes_outputs_and_resumes(model_dict, small_corpus, tmp_path, capsys):
    out = tmp_path / "search"
    assert main(_run_args(model_dict, small_corpus, out, "--json")) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert set(result) == {"nodes", "best"}
    assert len(result["nodes"]) == 3
    for row in result["nodes"]:
        assert set(row) == {"id", "parent", "mode", "hash", "params", "loss"}
        assert isinstance(row["params"], int) and row["loss"] > 0
    root = result["nodes"][0]
    assert root["parent"] is None and root["mode"] == "root" and root["id"] == 0
    # a budget of 3 keeps room for the next mode
    assert [row["mode"] for row in result["nodes"][1:]] == ["grow_attn_head", "grow_ffnn"]
    assert result["best"] in {row["id"] for row in result["nodes"]}
    assert "node 0 (root" in captured.err  # progress goes to stderr
    steps = [line for line in captured.err.splitlines() if line.startswith("grow-and-prune ")]
    assert [line.split()[1] for line in steps] == ["1/3", "2/3", "3/3"] and all("ETA" in line for line in steps)

    tree = json.loads((out / "tree.json").read_text())
    assert [node["hash"] for node in tree["nodes"]] == [row["hash"] for row in result["nodes"]]
    assert (out / "losses.png").read_bytes()[:4] == b"\x89PNG"
    best = ArchSpec.from_model_dict(json.loads((out / "best" / "model_dict.json").read_text()))
    assert DesignSpace.default().contains(best)
    state = torch.load(out / "best" / "mlm_state_dict.pt", weights_only=True)
    assert "encoder.embeddings.word_embeddings.weight" in state

    # The same command again finds the finished search and trains nothing.
    stamps = {path: path.stat().st_mtime_ns for path in (out / "checkpoints").iterdir()}
    assert main(_run_args(model_dict, small_corpus, out, "--json")) == 0
    again = capsys.readouterr()
    assert json.loads(again.out) == result and "resuming" in again.err
    assert stamps == {path: path.stat().st_mtime_ns for path in (out / "checkpoints").iterdir()}

    # Other data settings on the same directory are refused.
    assert main(_run_args(model_dict, small_corpus, out, "--lr", "0.01")) == 2
    assert "other data settings (lr)" in capsys.readouterr().err


def test_table_output_without_json(model_dict, small_corpus, tmp_path, capsys):
    args = _run_args(model_dict, small_corpus, tmp_path / "s", "--equal-steps")
    args[args.index("--max-nodes") + 1] = "2"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["id", "parent", "mode", "hash", "params_M", "loss", "accepted"]
    assert "best: node" in out


def test_bad_input_is_reported_in_one_line(model_dict, small_corpus, tmp_path, capsys):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(dict(TINY, o=[["sa_sdp_42"] * 3] * 2)))
    assert main(_run_args(outside, small_corpus, tmp_path / "a")) == 2
    assert "3 heads is not in" in capsys.readouterr().err
    assert main(_run_args(tmp_path / "missing.json", small_corpus, tmp_path / "b")) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(_run_args(model_dict, tmp_path / "nowhere", tmp_path / "c")) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(_run_args(model_dict, small_corpus, tmp_path / "d", "--prune-tolerance", "-1")) == 2
    assert "--prune-tolerance" in capsys.readouterr().err


def test_ray_options_need_the_ray_executor_and_its_extra(model_dict, small_corpus, tmp_path, capsys, monkeypatch):
    import sys

    out = tmp_path / "search"
    assert main(_run_args(model_dict, small_corpus, out, "--num-cpus", "1")) == 2
    assert "--num-cpus needs --executor ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(_run_args(model_dict, small_corpus, out, "--executor", "ray")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'edgetran[ray]'" in err, err
    assert not out.exists()  # nothing trained or written
