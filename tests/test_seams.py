"""The seams between packages: each package, and every benchmark, uses the others' public names only.

A private module (one whose dotted path has a part starting with ``_``) or a private name of another
package may change without notice; importing one couples two packages through a back door. This
test reads every source file's imports (without running them) and fails on any such import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flexibert", "protran", "boshcode", "gptran")


def _private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def cross_package_private_imports(path: Path, owner: str | None) -> list[str]:
    """``file:line: import`` for every import of another package's private module or name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            names = [alias.name for alias in node.names]
            if top in PACKAGES and top != owner and (_private(node.module) or any(map(_private, names))):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in PACKAGES and top != owner and _private(alias.name):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: import {alias.name}")
    return found


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", [*PACKAGES, "benchmarks"])
def test_no_private_import_across_packages(folder):
    owner = folder if folder in PACKAGES else None  # a benchmark owns no package: public names only
    found = [line for path in _sources(folder) for line in cross_package_private_imports(path, owner)]
    assert not found, "private imports across packages:\n" + "\n".join(found)


def test_the_check_sees_a_private_import(tmp_path, monkeypatch):
    # The checker itself must be able to fail: a file importing another package's private module.
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    source = tmp_path / "x.py"
    source.write_text("from protran._pareto import search_frontiers\nimport flexibert._spec\n"
                      "from protran import models\nfrom flexibert.lazy import attach\n")
    found = cross_package_private_imports(source, owner="boshcode")
    assert [line.split(": ", 1)[1] for line in found] == [
        "from protran._pareto import search_frontiers", "import flexibert._spec"]
    assert cross_package_private_imports(source, owner="protran") == ["x.py:2: import flexibert._spec"]
