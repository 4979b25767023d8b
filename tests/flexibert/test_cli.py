import argparse
import importlib.util
import io
import json
import re
import subprocess
import sys

import pytest

from flexibert import ArchSpec, DesignSpace, InvalidArchitectureError, choices, clitools, embed, model_hash
from flexibert._sampling import MODEL_TYPES, model_type
from flexibert.cli import main

TINY = {"l": 2, "o": [["sa_sdp_64", "l_dft_64"], ["sa_wma_64", "c_5_64"]], "h": [128, 128], "f": [[256], [256]]}
BAD_HIDDEN = {"l": 2, "o": [["sa_sdp_64"] * 2, ["sa_sdp_150"] * 2], "h": [128, 300], "f": [[512], [512]]}

needs_features = pytest.mark.skipif(
    importlib.util.find_spec("flexibert._features") is None, reason="flexibert._features is not available"
)
needs_export = pytest.mark.skipif(
    importlib.util.find_spec("flexibert._export") is None, reason="flexibert._export is not available"
)


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def run_cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


# -- help -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["sample"], ["describe"], ["export"]])
def test_help_shows_a_working_example(capsys, command):
    status, out, _ = run_cli(capsys, *command, "--help")
    assert status == 0
    assert "Example:\n  flexibert " in out
    if command:
        assert "--json" in out


def test_missing_command_is_a_usage_error(capsys):
    status, _, err = run_cli(capsys)
    assert status == 2
    assert "COMMAND" in err


# -- sample ---------------------------------------------------------------------------------------


def test_sample_prints_a_table_and_a_diversity_line(capsys):
    status, out, _ = run_cli(capsys, "sample", "-n", 4, "--method", "lhs", "--seed", 0)
    assert status == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["#", "hash", "layers", "hidden", "heads", "model_type"]
    rows = [line.split() for line in lines[1:5]]
    assert [row[0] for row in rows] == ["0", "1", "2", "3"]
    assert all(len(row[1]) == 8 and row[5] in MODEL_TYPES for row in rows)
    assert lines[5].startswith("diversity: 4 architectures")


def test_sample_json_lists_hash_model_dict_embedding_and_type(capsys):
    status, out, err = run_cli(capsys, "sample", "-n", 5, "--method", "sobol", "--seed", 3, "--json")
    assert status == 0
    rows = json.loads(out)
    assert len(rows) == 5 and len({row["hash"] for row in rows}) == 5
    for row in rows:
        assert set(row) == {"hash", "model_dict", "embedding", "model_type"}
        spec = ArchSpec.from_model_dict(row["model_dict"])
        assert model_hash(spec) == row["hash"]
        assert embed(spec) == row["embedding"]
        assert model_type(spec) == row["model_type"]
    assert "diversity: 5 architectures" in err  # stdout stays pure JSON


def test_sample_is_deterministic_per_seed(capsys):
    first = run_cli(capsys, "sample", "-n", 3, "--method", "random", "--seed", 11, "--json")[1]
    assert run_cli(capsys, "sample", "-n", 3, "--method", "random", "--seed", 11, "--json")[1] == first
    assert run_cli(capsys, "sample", "-n", 3, "--method", "random", "--seed", 12, "--json")[1] != first


def test_sample_out_directory_writes_one_model_dict_per_architecture(capsys, tmp_path):
    out_dir = tmp_path / "seeds"
    status, out, _ = run_cli(capsys, "sample", "-n", 4, "--method", "lhs_split", "--out", out_dir)
    assert status == 0
    files = sorted(out_dir.glob("*.json"))
    assert len(files) == 4
    for path in files:
        spec = ArchSpec.from_json(path.read_text())
        assert path.stem == model_hash(spec)
    assert f"wrote 4 model_dict files to {out_dir}" in out


def test_sample_out_jsonl_writes_one_row_per_line(capsys, tmp_path):
    path = tmp_path / "samples.jsonl"
    status, out, _ = run_cli(capsys, "sample", "-n", 3, "--method", "halton", "--out", path, "--json")
    assert status == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == json.loads(out)


def test_sample_custom_space(capsys, tmp_path):
    space = {**DesignSpace.default().to_dict(), "encoder_layers": [2], "hidden_size": [256]}
    space_file = tmp_path / "space.yaml"
    space_file.write_text(json.dumps(space))  # JSON is valid YAML
    status, out, _ = run_cli(capsys, "sample", "-n", 3, "--space", space_file, "--json")
    assert status == 0
    assert all(row["model_dict"]["h"] == [256, 256] and len(row["embedding"]) == 7 for row in json.loads(out))


def test_sample_rejects_a_bad_space_file(capsys, tmp_path):
    space_file = write_json(tmp_path / "space.yaml", {"encoder_layers": [2]})
    status, _, err = run_cli(capsys, "sample", "--space", space_file)
    assert status == 2
    assert f"{space_file}: design space is missing field(s)" in err


@pytest.mark.parametrize("argv", [["-n", "0"], ["--method", "grid"], ["--seed", "x"]])
def test_sample_rejects_bad_arguments(capsys, argv):
    status, _, err = run_cli(capsys, "sample", *argv)
    assert status == 2
    assert "error:" in err


# -- describe -------------------------------------------------------------------------------------


@needs_features
def test_describe_json_keys(capsys, tmp_path):
    path = write_json(tmp_path / "tiny.json", TINY)
    status, out, _ = run_cli(capsys, "describe", path, "--seq-len", 64, "--json")
    assert status == 0
    (row,) = json.loads(out)
    assert {"source", "hash", "model_dict", "embedding", "model_type", "params", "flops", "activation_bytes",
            "batch_size", "seq_len"} <= set(row)
    spec = ArchSpec.from_model_dict(TINY)
    assert row["hash"] == model_hash(spec) and row["embedding"] == embed(spec)
    assert row["model_type"] == "shallow_narrow" and row["seq_len"] == 64
    assert row["params"] > 0 and row["flops"] > 0 and row["activation_bytes"] > 0


@needs_features
def test_describe_flops_grow_with_sequence_length(capsys, tmp_path):
    path = write_json(tmp_path / "tiny.json", TINY)
    short = json.loads(run_cli(capsys, "describe", path, "--seq-len", 32, "--json")[1])[0]
    long = json.loads(run_cli(capsys, "describe", path, "--seq-len", 256, "--json")[1])[0]
    assert long["flops"] > short["flops"] and long["params"] == short["params"]


@needs_features
def test_describe_reads_rows_datasets_jsonl_and_directories(capsys, tmp_path):
    spec = ArchSpec.from_model_dict(TINY)
    key = model_hash(spec)
    write_json(tmp_path / "row.json", {"model_dict": TINY, "model_type": "shallow_narrow"})
    write_json(tmp_path / "dataset.json", {key: {"model_dict": TINY}})
    write_json(tmp_path / "list.json", [TINY, {"model_dict": TINY}])
    (tmp_path / "rows.jsonl").write_text(json.dumps({"model_dict": TINY}) + "\n" + json.dumps(TINY) + "\n")
    status, out, _ = run_cli(capsys, "describe", tmp_path, "--json")
    assert status == 0
    rows = json.loads(out)
    assert [row["source"] for row in rows] == [
        str(tmp_path / "dataset.json") + f"[{key}]",
        str(tmp_path / "list.json") + "[0]",
        str(tmp_path / "list.json") + "[1]",
        str(tmp_path / "row.json"),
        str(tmp_path / "rows.jsonl") + "[0]",
        str(tmp_path / "rows.jsonl") + "[1]",
    ]
    assert {row["hash"] for row in rows} == {key}


@needs_features
def test_describe_prints_a_readable_block(capsys, tmp_path):
    path = write_json(tmp_path / "tiny.json", TINY)
    status, out, _ = run_cli(capsys, "describe", path)
    assert status == 0
    assert out.splitlines()[0] == str(path)
    for field in ("hash", "model_type", "params", "flops", "activation", "embedding"):
        assert f"  {field}" in out


@needs_features
def test_describe_public_data_file(capsys, shared_data):
    status, out, _ = run_cli(capsys, "describe", shared_data / "flexibert" / "glue_pretrain_16.json", "--json")
    assert status == 0
    rows = json.loads(out)
    data = json.loads((shared_data / "flexibert" / "glue_pretrain_16.json").read_text())
    assert [row["hash"] for row in rows] == list(data)
    assert [row["model_type"] for row in rows] == [value["model_type"] for value in data.values()]


def test_describe_invalid_model_dict_names_layer_and_field(capsys, tmp_path):
    path = write_json(tmp_path / "bad.json", BAD_HIDDEN)
    status, out, err = run_cli(capsys, "describe", path)
    assert status == 2
    assert out == ""
    assert f"{path}: layer 1, field 'h': hidden size 300" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"l": 2,', "not valid JSON"),
        ("[1, 2]", "expected a model_dict"),
        ("[]", "holds no architectures"),
    ],
)
def test_describe_unusable_files(capsys, tmp_path, content, message):
    path = tmp_path / "model.json"
    path.write_text(content)
    status, _, err = run_cli(capsys, "describe", path)
    assert status == 2
    assert err.startswith(f"flexibert: error: {path}: {message}")


def test_describe_missing_file_and_empty_directory(capsys, tmp_path):
    status, _, err = run_cli(capsys, "describe", tmp_path / "nope.json")
    assert status == 2 and f"{tmp_path / 'nope.json'}: no such file or directory" in err
    status, _, err = run_cli(capsys, "describe", tmp_path)
    assert status == 2 and "holds no .json or .jsonl files" in err


# -- export ---------------------------------------------------------------------------------------


@needs_export
def test_export_torchscript_and_run(capsys, tmp_path):
    path = write_json(tmp_path / "tiny.json", TINY)
    out_dir = tmp_path / "exported"
    status, out, err = run_cli(
        capsys, "export", path, "--format", "torchscript", "--out", out_dir, "--seq-len", 8, "--run", "--json"
    )
    assert status == 0, err
    result = json.loads(out)
    assert result["hash"] == model_hash(ArchSpec.from_model_dict(TINY))
    (entry,) = result["exports"]
    assert entry["format"] == "torchscript"
    assert (out_dir / "model.pt").is_file() and entry["path"] == str(out_dir / "model.pt")
    assert entry["run_s"] > 0 and entry["max_abs_diff"] < 1e-4


@needs_export
def test_export_onnx(capsys, tmp_path):
    path = write_json(tmp_path / "tiny.json", TINY)
    status, out, err = run_cli(capsys, "export", path, "--format", "onnx", "--out", tmp_path, "--seq-len", 8, "--run")
    assert status == 0, err
    assert (tmp_path / "model.onnx").is_file()
    header, row = out.strip().splitlines()[1:3]
    assert header.split() == ["format", "export_s", "run_s", "max_abs_diff", "path"]
    assert row.split()[0] == "onnx" and float(row.split()[3]) < 1e-4


def test_export_rejects_unknown_format_and_invalid_model(capsys, tmp_path):
    good = write_json(tmp_path / "tiny.json", TINY)
    status, _, err = run_cli(capsys, "export", good, "--format", "onnx,tflite", "--out", tmp_path)
    assert status == 2 and "choose one or more of onnx, openvino, torchscript" in err
    bad = write_json(tmp_path / "bad.json", BAD_HIDDEN)
    status, _, err = run_cli(capsys, "export", bad, "--out", tmp_path)
    assert status == 2 and "layer 1, field 'h'" in err and "Traceback" not in err


def test_export_needs_exactly_one_architecture(capsys, tmp_path):
    path = write_json(tmp_path / "two.json", [TINY, TINY])
    status, _, err = run_cli(capsys, "export", path, "--out", tmp_path)
    assert status == 2 and "holds 2 architectures" in err


# -- shared helpers -------------------------------------------------------------------------------


def test_positive_int_and_comma_list():
    assert clitools.positive_int("3") == 3
    for text in ("0", "-2", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            clitools.positive_int(text)
    parse = clitools.comma_list(("a", "b"))
    assert parse("b, a,b") == ["b", "a"]
    with pytest.raises(argparse.ArgumentTypeError, match="choose one or more of a, b"):
        parse("a,c")


def test_to_json_puts_one_record_per_line():
    assert clitools.to_json([{"a": 1}, {"b": [1, 2]}]) == '[\n  {"a": 1},\n  {"b": [1, 2]}\n]'
    assert json.loads(clitools.to_json({"x": (1, 2)})) == {"x": [1, 2]}


def test_run_turns_errors_into_messages_and_exit_codes(capsys):
    def fail_with(error):
        def handler(args):
            raise error

        return handler

    cases = [
        (InvalidArchitectureError("layer 0, field 'o': bad"), 2, "tool: error: layer 0, field 'o': bad"),
        (FileNotFoundError(2, "No such file or directory", "x.json"), 2, "tool: error: x.json: No such file"),
        (clitools.CliError("export failed"), 2, "tool: error: export failed"),
        (RecursionError("maximum recursion depth exceeded"), 2, "tool: error: an input is nested too deeply"),
        (ZeroDivisionError("division by zero"), 1, "tool: error: internal error (ZeroDivisionError"),
    ]
    for error, expected_status, expected_message in cases:
        parser = clitools.make_parser("tool", "A tool.", "tool go")
        sub = clitools.add_command(clitools.add_subcommands(parser), "go", fail_with(error), "go", "tool go")
        assert sub.get_default("handler") is not None
        assert clitools.run(parser, ["go"]) == expected_status
        err = capsys.readouterr().err
        assert err.startswith(expected_message) and len(err.splitlines()) == 1 and "Traceback" not in err


def _tool(handler):
    parser = clitools.make_parser("tool", "A tool.", "tool go")
    clitools.add_command(clitools.add_subcommands(parser), "go", handler, "go", "tool go")
    return parser


def _fail(args):
    raise ValueError("bad value; use another")


@pytest.mark.parametrize("argv", [["go"], ["--debug", "go"], ["go", "--debug"]])
def test_debug_adds_the_traceback_to_the_one_line_error(capsys, argv):
    assert clitools.run(_tool(_fail), argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "tool: error: bad value; use another"
    assert ("Traceback" in err) == ("--debug" in argv)


def test_a_missing_extra_is_one_line_naming_the_pip_command(capsys):
    from flexibert.lazy import optional_dependency

    def needs_openvino(args):
        with optional_dependency("exporting to OpenVINO IR"):
            raise ModuleNotFoundError("No module named 'openvino'", name="openvino")

    assert clitools.run(_tool(needs_openvino), ["go"]) == clitools.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("tool: error: ") and "pip install 'edgetran[openvino]'" in err


def test_ctrl_c_exits_130_with_one_line_that_says_how_to_resume(capsys):
    def resumable_work(args):
        with clitools.resumable("the results so far are in out/; run the same command with --resume to continue"):
            raise KeyboardInterrupt

    def plain_work(args):
        raise KeyboardInterrupt

    assert clitools.run(_tool(resumable_work), ["go"]) == clitools.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == ("tool: interrupted; the results so far are in out/; run the same command "
                                       "with --resume to continue\n")
    assert clitools.run(_tool(plain_work), ["go"]) == 130
    assert capsys.readouterr().err == f"tool: interrupted; {clitools.NOTHING_KEPT}\n"


def test_progress_off_a_terminal_prints_one_line_per_step_with_an_eta():
    log = io.StringIO()  # like a log file, a pipe or CI: not a terminal
    with clitools.Progress(4, "measuring", stream=log) as progress:
        progress.resume_from(1)  # one step done by an earlier run
        for name in ("a", "b", "c"):
            progress.step(f"arch {name}")
            progress.note("between steps: only a bar shows this")
    lines = log.getvalue().splitlines()
    assert len(lines) == 3
    pattern = r"measuring (\d)/4  elapsed \d:\d\d:\d\d  ETA (\d:\d\d:\d\d)  arch ([abc])"
    matches = [re.fullmatch(pattern, line) for line in lines]
    assert all(matches), lines
    assert [(m[1], m[3]) for m in matches] == [("2", "a"), ("3", "b"), ("4", "c")]
    assert matches[-1][2] == "0:00:00"


def test_progress_eta_is_the_pace_of_this_process(monkeypatch):
    now_s = [100.0]
    monkeypatch.setattr(clitools.time, "monotonic", lambda: now_s[0])
    progress = clitools.Progress(10, "x", stream=io.StringIO())
    assert progress.eta_s() is None  # no step yet: no pace
    progress.resume_from(4)  # steps of an earlier run took no time in this one
    now_s[0] += 6.0
    progress.step(done=5)
    progress.step(done=6)
    assert progress.eta_s() == pytest.approx(12.0)  # 3 s per step, 4 steps left


def test_choices_are_the_ones_the_implementing_modules_accept():
    from flexibert import _export, _sampling, _transfer

    assert choices.EXPORT_FORMATS == _export.EXPORT_FORMATS
    assert choices.SAMPLING_METHODS == _sampling.SAMPLING_METHODS
    assert choices.MODEL_TYPES == _sampling.MODEL_TYPES
    assert set(choices.TRANSFER_MODES) == set(_transfer._MODES.values())


def test_every_command_builds_its_parser_without_torch():
    code = ("import importlib, sys\n"
            "for name in ('flexibert', 'protran', 'boshcode', 'gptran'):\n"
            "    importlib.import_module(name + '.cli').build_parser()\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_warning_is_one_line_naming_the_tool(capsys):
    import warnings

    def warns(args):
        warnings.warn("CPU 0 scales its frequency (governor powersave)\nsecond line", UserWarning, stacklevel=1)

    assert clitools.run(_tool(warns), ["go"]) == 0
    assert capsys.readouterr().err == "tool: warning: CPU 0 scales its frequency (governor powersave) second line\n"
