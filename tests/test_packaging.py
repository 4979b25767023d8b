"""Packaging: the distribution lists every code package, ships the data the code reads, keeps torch a
range, and the code finds its data and its measuring worker outside the source tree too.

The full proof is a plain (non-editable) install into a fresh virtual environment, run from another
folder; these tests check the pieces of it that a unit test can.
"""

import fnmatch
import sys
from pathlib import Path

import pytest
from setuptools import find_packages

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
DATA_PACKAGE = "edgetran_datasets"


def test_every_code_package_is_listed():
    found = find_packages(ROOT, include=["flexibert*", "protran*", "boshcode*", "gptran*"])
    listed = PYPROJECT["tool"]["setuptools"]["packages"]
    assert sorted(listed) == sorted([*found, DATA_PACKAGE])


def test_the_data_package_is_the_datasets_folder_and_ships_every_data_file():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {DATA_PACKAGE: "datasets"}
    globs = setuptools["package-data"][DATA_PACKAGE]
    data_dir = ROOT / "datasets"
    files = [p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()]
    shipped = {f for f in files if any(fnmatch.fnmatch(f, g) for g in globs)}
    # Everything but the corpus build script (and any SQLite side file a reader left behind).
    assert set(files) - shipped <= {"corpus/make_corpus.py"} | {f for f in files if f.endswith(("-wal", "-shm"))}
    for needed in ("corpus/tokenizer.json", "corpus/train.txt", "corpus/validation.txt", "glue_sample/train.tsv",
                   "glue_sample/dev.tsv", "accuracy/mlm_proxy_lhs16.csv", "accuracy/nasbench_bert_250.json",
                   "accuracy/LICENSE-CC-BY-4.0.txt", "profiles/epyc-cpu-onnxruntime.sqlite",
                   "profiles/epyc-cpu-openvino.sqlite"):
        assert needed in shipped


def test_torch_is_a_range_and_the_extras_add_up():
    project = PYPROJECT["project"]
    torch = [d for d in project["dependencies"] if d.startswith("torch")]
    assert len(torch) == 1 and "==" not in torch[0] and ">=" in torch[0]
    extras = project["optional-dependencies"]
    assert extras["all"] == ["edgetran[openvino,train,meters]"]
    assert "edgetran[all]" in extras["test"]
    core = " ".join(project["dependencies"])
    for optional in ("openvino", "tokenizers", "optuna", "smbus2", "nvidia-ml-py"):
        assert optional not in core


def test_data_is_found_in_the_installed_package(tmp_path, monkeypatch):
    from flexibert import _data

    installed = tmp_path / DATA_PACKAGE
    (installed / "corpus").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, DATA_PACKAGE, raising=False)
    assert _data._datasets_dir() == installed


def test_data_falls_back_to_the_source_tree(monkeypatch):
    from flexibert import _data

    monkeypatch.setitem(sys.modules, DATA_PACKAGE, None)  # not importable
    assert _data._datasets_dir() == ROOT / "datasets"


def test_shipped_data_is_found():
    import flexibert
    from flexibert import _data

    assert (_data.CORPUS_DIR / "tokenizer.json").is_file()
    assert flexibert.load_tokenizer().get_vocab_size() > 0
    assert len(flexibert.load_glue_task().train) > 0


def test_the_measuring_worker_gets_no_path_for_an_installed_package(monkeypatch):
    import site

    from protran import _protocol

    monkeypatch.setattr(site, "getsitepackages", lambda: [str(ROOT)])
    assert _protocol._import_roots() == []
    assert _protocol._worker_env(1)["PYTHONPATH"] == (_protocol.os.environ.get("PYTHONPATH") or "")


def test_the_measuring_worker_gets_the_checkout_from_a_source_tree(monkeypatch):
    import site

    from protran import _protocol

    monkeypatch.setattr(site, "getsitepackages", lambda: [])
    monkeypatch.setattr(site, "getusersitepackages", lambda: "/nonexistent")
    assert _protocol._import_roots() == [str(ROOT)]
    assert _protocol._worker_env(1)["PYTHONPATH"].split(_protocol.os.pathsep)[0] == str(ROOT)
