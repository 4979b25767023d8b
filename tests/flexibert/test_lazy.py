"""The lazy package namespaces of flexibert, protran, boshcode and gptran, and the one-line message
for a missing optional dependency.

Each package lists its torch-dependent names with ``flexibert.lazy.attach`` and imports the same
names under ``if TYPE_CHECKING:`` for editors; these tests keep the two lists equal, check that every
public name resolves, and that importing the packages does not import torch.
"""

import ast
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

from flexibert.lazy import MissingDependencyError, attach, lazy_attributes, optional_dependency

PACKAGES = ("flexibert", "protran", "boshcode", "gptran")
ROOT = Path(__file__).resolve().parents[2]


def _type_checking_imports(package: str) -> dict[str, str]:
    """``{name: module}`` of the imports under ``if TYPE_CHECKING:`` in the package's __init__.py."""
    tree = ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8"))
    blocks = [node for node in tree.body
              if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1, f"{package}/__init__.py should have one `if TYPE_CHECKING:` block"
    names = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom), f"{package}: only `from module import names` under TYPE_CHECKING"
        for alias in node.names:
            assert alias.asname is None, f"{package}: {alias.name} is renamed under TYPE_CHECKING"
            names[alias.name] = node.module
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__ == sorted(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    assert sorted(dir(module)) == module.__all__


@pytest.mark.parametrize("package", PACKAGES)
def test_type_checking_block_lists_exactly_the_lazy_names(package):
    importlib.import_module(package)
    lazy = lazy_attributes(package)
    assert lazy, f"{package} attaches no lazy names"
    assert _type_checking_imports(package) == lazy


@pytest.mark.parametrize("package", PACKAGES)
def test_unknown_names_raise_attribute_error(package):
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018 - the attribute access itself must raise


def test_importing_the_packages_does_not_import_torch():
    code = ("import sys, flexibert, protran, boshcode, gptran; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_a_lazy_name_is_imported_once_and_kept(monkeypatch):
    provider = types.ModuleType("fake_provider")
    provider.value = object()
    monkeypatch.setitem(sys.modules, "fake_provider", provider)
    package = types.ModuleType("fake_package")
    monkeypatch.setitem(sys.modules, "fake_package", package)
    package.__getattr__, package.__dir__, package.__all__ = attach("fake_package", {"fake_provider": ["value"]},
                                                                    eager=["eager_name"])
    assert package.__all__ == ["eager_name", "value"]
    assert package.value is provider.value
    assert "value" in vars(package)  # later look-ups are plain attribute reads


def test_attach_refuses_a_name_listed_twice():
    with pytest.raises(ValueError, match="listed under both"):
        attach("fake_package", {"a": ["x"], "b": ["x"]})


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails
    with pytest.raises(MissingDependencyError) as raised, optional_dependency("exporting to OpenVINO IR"):
        import openvino  # noqa: F401 - the import itself must raise
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("exporting to OpenVINO IR needs the optional package 'openvino'")
    assert "pip install 'edgetran[openvino]'" in message
    assert isinstance(raised.value, ImportError)


def test_a_missing_core_dependency_is_not_disguised(monkeypatch):
    monkeypatch.setitem(sys.modules, "no_such_core_module", None)
    with pytest.raises(ModuleNotFoundError) as raised, optional_dependency("anything"):
        import no_such_core_module  # noqa: F401 - the import itself must raise
    assert not isinstance(raised.value, MissingDependencyError)


def test_load_tokenizer_without_tokenizers_says_which_extra(monkeypatch):
    import flexibert

    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgetran\[train\]'"):
        flexibert.load_tokenizer()


def test_a_lazy_name_whose_module_needs_a_missing_extra(monkeypatch, tmp_path):
    (tmp_path / "fake_tuner.py").write_text("import optuna\n\ntune = optuna.create_study\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "optuna", None)
    package = types.ModuleType("fake_trainer")
    monkeypatch.setitem(sys.modules, "fake_trainer", package)
    package.__getattr__, _, _ = attach("fake_trainer", {"fake_tuner": ["tune"]})
    with pytest.raises(MissingDependencyError, match=r"fake_trainer.tune needs .*edgetran\[train\]"):
        package.tune  # noqa: B018 - the attribute access itself must raise
