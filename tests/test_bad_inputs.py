"""Every bad input to the four command-line tools ends in one line and exit status 2, and changes
nothing stored.

The first test is a table of inputs a hostile user tried (damaged and foreign stores, a run that does
not exist, infinite timeouts, broken YAML, JSON nested 200,000 deep, a model_dict with a junk field, a
plot nobody can write, a full disk); the property-based tests below generate many more of each kind
with hypothesis. Each checks the same contract: the exit status is 2, stderr is exactly one line
``<prog>...: error: ...``, there is no traceback, and every file that was in the working folder before
is byte for byte the same afterwards, with no new run store beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import boshcode.cli
import flexibert.cli
import gptran.cli
import protran.cli
from flexibert import DATASETS_DIR, ArchSpec, sample_architectures
from protran import RunStore

TOOLS: dict[str, Callable] = {"protran": protran.cli.main, "flexibert": flexibert.cli.main,
                              "boshcode": boshcode.cli.main, "gptran": gptran.cli.main}
SHIPPED_STORE = Path(DATASETS_DIR) / "profiles" / "epyc-cpu-onnxruntime.sqlite"
NASBENCH = str(Path(DATASETS_DIR) / "accuracy" / "nasbench_bert_250.json")
CORPUS = str(Path(DATASETS_DIR) / "corpus")
WEIGHTS = ["--alpha", "0.4", "--beta", "0.2", "--gamma", "0.2", "--epsilon", "0.2"]
# The hypothesis tests call the tools in-process, so 40 examples each take seconds; set
# EDGETRAN_HYPOTHESIS_EXAMPLES for a longer hunt.
FEW = settings(max_examples=int(os.environ.get("EDGETRAN_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- the folder of inputs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Good and bad files side by side: a run store (upgraded to this version's schema, so that opening
    it writes nothing) and its ProTran export, stores that are damaged, foreign, newer or empty, and
    JSON and YAML files that are malformed in the ways users produce them."""
    folder = tmp_path_factory.mktemp("inputs")
    good = folder / "good.sqlite"
    shutil.copy(SHIPPED_STORE, good)
    with RunStore(good) as store:
        store.export_protran_json(folder / "dataset.json", run_id=1)
    (folder / "random_bytes.sqlite").write_bytes(os.urandom(8192))
    (folder / "truncated.sqlite").write_bytes(good.read_bytes()[:3000])
    shutil.copy(good, folder / "newer.sqlite")
    with contextlib.closing(sqlite3.connect(folder / "newer.sqlite")) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.commit()
    with contextlib.closing(sqlite3.connect(folder / "foreign.sqlite")) as conn:
        conn.execute("CREATE TABLE notes (text)")
        conn.commit()
    (folder / "empty.sqlite").write_bytes(b"")
    spec = sample_architectures(1, method="random", seed=0)[0]
    (folder / "arch.json").write_text(spec.to_json())
    (folder / "junk_field.json").write_text(json.dumps({**spec.to_model_dict(), "junk": "x" * 10_000}))
    (folder / "deep.json").write_text('{"a":' * 200_000 + "1" + "}" * 200_000)
    (folder / "deep_list.json").write_text("[" * 200_000 + "]" * 200_000)
    (folder / "not_json.json").write_text("not json {")
    (folder / "empty_object.json").write_text("{}")
    (folder / "binary.json").write_bytes(bytes(range(256)) * 8)
    (folder / "broken.yaml").write_text("hidden_size: [128, 256\n  - : :\n")
    (folder / "list.yaml").write_text("- 1\n- 2\n")
    (folder / "a_file").write_text("a file, not a folder")
    surrogates = folder / "surrogates"
    surrogates.mkdir()
    (surrogates / "board.surrogates.json").write_text(json.dumps({"device": "board", "surrogates": {}}))
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a digest of its bytes."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def run_tool(argv: list[str], folder: Path) -> tuple[int, str]:
    """Run ``argv`` (tool name first) in-process inside ``folder``; its exit status and stderr."""
    stderr, stdout = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            status = TOOLS[argv[0]](argv[1:])
    finally:
        os.chdir(cwd)
    return status, stderr.getvalue()


def assert_one_line_error(argv: list[str], folder: Path) -> str:
    """The contract: status 2, one stderr line naming the tool, no traceback, nothing changed."""
    before = snapshot(folder)
    status, err = run_tool(argv, folder)
    lines = err.strip().splitlines()
    assert status == 2, (argv, status, err)
    assert len(lines) == 1 and lines[0].startswith(argv[0]) and ": error: " in lines[0], (argv, err)
    assert "Traceback" not in err
    assert snapshot(folder) == before, f"{argv} changed files"
    return lines[0]


# -- the table --------------------------------------------------------------------------------------------

STORE_CASES = [
    *[["protran", "export", "--store", store, "out.json"] for store in
      ("random_bytes.sqlite", "missing.sqlite", "truncated.sqlite", "newer.sqlite", "foreign.sqlite", "empty.sqlite")],
    *[["protran", "import", "dataset.json", "--store", store] for store in
      ("random_bytes.sqlite", "truncated.sqlite", "newer.sqlite", "foreign.sqlite", "a_file/x.sqlite")],
    *[["protran", "profile", "--device", "x", "--store", store, "--seed-samples", "2", "--max-samples", "2"]
      for store in ("random_bytes.sqlite", "truncated.sqlite", "newer.sqlite", "foreign.sqlite")],
    *[["boshcode", "codesign", *WEIGHTS, "--accuracy", NASBENCH, "--profile", store] for store in
      ("random_bytes.sqlite", "missing.sqlite", "truncated.sqlite", "newer.sqlite", "foreign.sqlite", "deep.json")],
    ["protran", "proxy", "arch.json", "--store", "random_bytes.sqlite", "--steps", "1"],
    ["protran", "export", "--store", "good.sqlite", "--run", "99", "out.json"],
    ["protran", "export", "--store", "good.sqlite", "--run", "1", "."],
]
OPTION_CASES = [
    ["protran", "profile", "--device", "x", "--timeout-s", value, "--seed-samples", "2", "--max-samples", "2"]
    for value in ("inf", "nan", "1e400", "0", "-1")
] + [
    ["protran", "profile", "--device", "x", *option, "--seed-samples", "2", "--max-samples", "2"] for option in (
        ["--time-cap-s", "0"], ["--surrogate", "bogus"], ["--meter", "bogus"], ["--meter", "remote:127.0.0.1:1"],
        ["--batch-size", "0"], ["--seq-len", "100000"], ["--target-rel-ci", "2"], ["--space", "broken.yaml"],
        ["--space", "list.yaml"], ["--space", "missing.yaml"], ["--space", "deep.json"], ["--out", "a_file"],
        ["--device", "../x"], ["--prior", "missing.sqlite"], ["--prior", "empty_object.json"],
        ["--prior", "random_bytes.sqlite"], ["--prior", "deep.json"],
    )
] + [
    ["protran", "meter-server", "--meter", "ina219", "--port", "99999"],
    ["protran", "meter-server", "--meter", "ina219", "--option", "nonsense"],
    ["protran", "pareto", "--accuracy", NASBENCH, "--profile", "good.sqlite", "--plot", "a_file/p.png"],
    ["protran", "pareto", "--accuracy", NASBENCH, "--profile", "good.sqlite", "--plot", "p.notaformat"],
    ["protran", "pareto", "--accuracy", NASBENCH, "--profile", "good.sqlite", "--measure", "bogus"],
    ["flexibert", "sample", "-n", "-1"],
    ["flexibert", "sample", "-n", "2", "--space", "broken.yaml"],
    ["boshcode", "codesign", "--profile", "good.sqlite", "--accuracy", NASBENCH, *WEIGHTS, "--risk", "inf"],
    ["boshcode", "codesign", "--alpha", "0.5", "--beta", "0.5", "--gamma", "0.5", "--epsilon", "0.5",
     "--profile", "good.sqlite", "--accuracy", NASBENCH],
    ["boshcode", "codesign", *WEIGHTS, "--oracle", "no_such_module:factory"],
    ["gptran", "run", "--model-dict", "arch.json", "--corpus", "no_such_corpus"],
    *[["flexibert", "serve", "arch.json", *option] for option in (
        ["--runtime", "bogus"], ["--http", "99999"], ["--http", "-1"], ["--cpus", "x"], ["--cpus", "4096"],
        ["--runtime", "torch", "--top-k", "0"], ["--runtime", "torch", "--bench", "1", "--http", "0"],
        ["--runtime", "torch", "--seq-len", "100000"],
    )],
]
FILE_CASES = [
    *[["flexibert", "describe", name] for name in
      ("deep.json", "deep_list.json", "not_json.json", "binary.json", "junk_field.json", "empty_object.json")],
    ["flexibert", "export", "deep.json", "--out", "exported"],
    ["protran", "measure", "--device", "x", "deep.json"],
    ["protran", "measure", "--device", "x", "junk_field.json"],
    ["protran", "predict", "deep_list.json", "--surrogates", "surrogates"],
    ["protran", "predict", "arch.json", "--surrogates", "surrogates"],
    ["protran", "pareto", "--profile", "good.sqlite", "--accuracy", "deep.json"],
    *[["protran", "import", name, "--store", "new.sqlite"] for name in
      ("empty_object.json", "deep.json", "binary.json", "not_json.json")],
    ["protran", "import", "deep.json", "--store", "new.sqlite", "--accuracy"],
    ["protran", "replay", "deep.json"],
    ["gptran", "run", "--model-dict", "deep.json", "--corpus", CORPUS],
    *[["flexibert", "serve", name, "--runtime", "torch"] for name in
      ("deep.json", "binary.json", "junk_field.json", "not_json.json", "random_bytes.sqlite", "missing.json")],
]


@pytest.mark.parametrize("argv", STORE_CASES + OPTION_CASES + FILE_CASES, ids=lambda argv: " ".join(argv)[:90])
def test_a_bad_input_is_one_line_exit_2_and_changes_nothing(argv, inputs):
    assert_one_line_error(argv, inputs)


def test_the_error_names_the_problem_and_the_fix(inputs):
    assert "run 99 is not in run store" in assert_one_line_error(STORE_CASES[-2], inputs)
    assert "its runs: 1" in assert_one_line_error(STORE_CASES[-2], inputs)
    assert "newer than" in assert_one_line_error(["protran", "export", "--store", "newer.sqlite", "o.json"], inputs)
    line = assert_one_line_error(["flexibert", "describe", "junk_field.json"], inputs)
    assert "'junk'" in line and "'l', 'o', 'h' and 'f'" in line
    assert "deep.json" in assert_one_line_error(["flexibert", "describe", "deep.json"], inputs)
    assert "broken.yaml: not valid YAML" in assert_one_line_error(["flexibert", "sample", "--space", "broken.yaml"],
                                                                  inputs)


def test_a_full_disk_during_import_is_one_line_and_keeps_the_store(inputs, tmp_path):
    """``protran import`` under a file-size limit, which the kernel enforces as a full disk (EFBIG): an
    existing store keeps exactly what it held, and a store the import was creating is removed."""
    shutil.copy(inputs / "good.sqlite", tmp_path / "store.sqlite")
    dataset = inputs / "dataset.json"
    before = (tmp_path / "store.sqlite").read_bytes()
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    for store in ("store.sqlite", "new.sqlite"):

        result = subprocess.run([sys.executable, "-m", "protran.cli", "import", str(dataset), "--store",
                                 str(tmp_path / store), "--device", "big"], capture_output=True, text=True,
                                preexec_fn=limited, timeout=120)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "disk" in result.stderr
    assert (tmp_path / "store.sqlite").read_bytes() == before
    assert not (tmp_path / "new.sqlite").exists()


# -- property-based: generated bad inputs ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=20,
)
# Mostly near-misses of a model_dict (the four fields, some of them wrong), which reach deeper checks
# than arbitrary JSON does.
model_dicts = st.fixed_dictionaries(
    {"l": st.integers(-2, 14) | json_values, "o": json_values | st.lists(st.lists(st.text(max_size=6), max_size=3)),
     "h": json_values | st.lists(st.integers(-1, 1024), max_size=13),
     "f": json_values | st.lists(st.lists(st.integers(-1, 4096), max_size=4), max_size=13)},
    optional={"junk": json_values},
) | json_values


def _outcome_is_clean(argv: list[str], folder: Path) -> tuple[int, str]:
    """Success, or the one-line error with nothing changed: never a traceback or another status."""
    before = snapshot(folder)
    status, err = run_tool(argv, folder)
    assert "Traceback" not in err and status in (0, 2), (argv, status, err)
    event(f"status {status}")
    if status == 2:
        assert len(err.strip().splitlines()) == 1 and ": error: " in err, err
        assert snapshot(folder) == before
    return status, err


@FEW
@given(model_dict=model_dicts)
def test_generated_model_dicts_are_described_or_refused_in_one_line(model_dict, tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(model_dict))
    status, _ = _outcome_is_clean(["flexibert", "describe", "arch.json"], tmp_path)
    if status == 0:  # accepted only if it is an architecture of the space
        ArchSpec.from_model_dict(model_dict)


@FEW
@given(rows=st.dictionaries(st.text(max_size=34), st.fixed_dictionaries(
    {"model_dict": model_dicts, "performance": st.dictionaries(st.sampled_from(["latency", "energy", "peak_power"]),
                                                             json_values, max_size=3)}) | json_values, max_size=3))
def test_generated_dataset_files_import_or_leave_the_store_unchanged(rows, tmp_path_factory, inputs):
    folder = tmp_path_factory.mktemp("import")
    shutil.copy(inputs / "good.sqlite", folder / "store.sqlite")
    (folder / "dataset.json").write_text(json.dumps(rows))
    _outcome_is_clean(["protran", "import", "dataset.json", "--store", "store.sqlite"], folder)
    _outcome_is_clean(["protran", "import", "dataset.json", "--store", "new.sqlite"], folder)


@FEW
@given(damage=st.lists(st.tuples(st.integers(0, 300_000), st.binary(min_size=1, max_size=64)), min_size=1,
                       max_size=4), cut=st.none() | st.integers(0, 300_000))
def test_a_damaged_store_is_read_or_refused_in_one_line_and_left_as_it_was(damage, cut, tmp_path_factory, inputs):
    folder = tmp_path_factory.mktemp("damaged")
    data = bytearray((inputs / "good.sqlite").read_bytes())
    for offset, junk in damage:
        offset %= len(data)
        data[offset:offset + len(junk)] = junk
    (folder / "store.sqlite").write_bytes(bytes(data[:cut] if cut is not None else data))
    _outcome_is_clean(["protran", "export", "--store", "store.sqlite", "--run", "1", "out.json"], folder)


space_fields = ["encoder_layers", "hidden_size", "attention_heads", "operation_types", "feed_forward_depth",
                "feed_forward_dims"]


@FEW
@given(space=st.dictionaries(st.sampled_from(space_fields) | st.text(max_size=6), json_values, max_size=7)
       | json_values, garbage=st.none() | st.text(max_size=40))
def test_generated_design_spaces_sample_or_fail_in_one_line(space, garbage, tmp_path):
    text = yaml.safe_dump(space) if garbage is None else garbage
    (tmp_path / "space.yaml").write_text(text)
    _outcome_is_clean(["flexibert", "sample", "-n", "2", "--space", "space.yaml", "--out", "sampled"], tmp_path)


numeric_options = ["--batch-size", "--seq-len", "--threads", "--target-rel-ci", "--time-cap-s", "--timeout-s",
                   "--vocab-size", "--seed-samples", "--pool-size", "--target-mse", "--patience", "--max-samples",
                   "--max-hours", "--seed"]


@FEW
@given(option=st.sampled_from(numeric_options), value=st.text(max_size=12) | st.sampled_from(
    ["inf", "-inf", "nan", "1e400", "0", "-1", "1e-300", "0x10", "3.5", "", " 7", "١٢"]))
def test_generated_option_values_are_refused_before_any_run(option, value, inputs, tmp_path_factory):
    """A bad value fails in argparse or in validation; a good one reaches the damaged store, which is
    refused; either way before a meter is opened, a run created or a file written."""
    folder = tmp_path_factory.mktemp("options")
    shutil.copy(inputs / "random_bytes.sqlite", folder / "store.sqlite")
    argv = ["protran", "profile", "--device", "x", "--meter", "none", "--store", "store.sqlite", f"{option}={value}"]
    assert_one_line_error(argv, folder)
