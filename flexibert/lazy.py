"""Lazy package namespaces, and one clear message when an optional dependency is missing.

Most public names of edgetran live in modules that import torch, ONNX Runtime or OpenVINO, which take
seconds to load, while ``flexibert --help`` or a design-space query should start at once. So each
package lists those names with :func:`attach` instead of importing them: a name is imported from its
module the first time it is used and then kept in the package, so later look-ups are plain attribute
reads. Editors and type checkers do not run ``__getattr__``; for them every package imports the same
names again under ``if TYPE_CHECKING:``, and a test keeps the two lists equal.

A package's ``__init__.py``::

    from typing import TYPE_CHECKING

    from flexibert.lazy import attach

    if TYPE_CHECKING:
        from mypackage._heavy import Model, fit

    __getattr__, __dir__, __all__ = attach(__name__, {"mypackage._heavy": ["Model", "fit"]})

Parts of edgetran that a board does not need are optional extras of the distribution (OpenVINO,
the training libraries, the power-meter drivers). When one is missing, the import fails with
:class:`MissingDependencyError`: an ``ImportError`` whose one-line message names the extra that
installs it (``pip install 'edgetran[openvino]'``). Lazy names raise it by themselves; code that
imports an optional library inside a function wraps the import in :func:`optional_dependency`.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping

from flexibert._errors import EdgetranError

# Import name -> (distribution, extra of edgetran that installs it). Everything else is a core
# dependency, installed with edgetran itself.
OPTIONAL_DEPENDENCIES: dict[str, tuple[str, str]] = {
    "openvino": ("openvino", "openvino"),
    "tokenizers": ("tokenizers", "train"),
    "optuna": ("optuna", "train"),
    "smbus2": ("smbus2", "meters"),
    "pynvml": ("nvidia-ml-py", "meters"),
    "zeus": ("zeus", "zeus"),
    "ray": ("ray", "ray"),
}

# Package name -> {lazy name: module it comes from}, for lazy_attributes().
_ATTACHED: dict[str, dict[str, str]] = {}


class MissingDependencyError(EdgetranError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def missing_dependency_message(module: str, purpose: str | None = None) -> str | None:
    """The one-line install hint for the optional import ``module``, or None for a core dependency."""
    found = OPTIONAL_DEPENDENCIES.get(module.partition(".")[0])
    if found is None:
        return None
    distribution, extra = found
    needs = f"{purpose} needs" if purpose else "this needs"
    return (f"{needs} the optional package '{distribution}', which is not installed; "
            f"install it with: pip install 'edgetran[{extra}]'")


@contextlib.contextmanager
def optional_dependency(purpose: str) -> Iterator[None]:
    """Turn a failed import of an optional dependency inside the block into MissingDependencyError.

    >>> with optional_dependency("exporting to OpenVINO IR"):  # doctest: +SKIP
    ...     import openvino
    """
    try:
        yield
    except ModuleNotFoundError as error:
        message = missing_dependency_message(error.name or "", purpose)
        if message is None:
            raise
        # The cause stays attached for --debug style tracebacks; the message alone says what to do.
        raise MissingDependencyError(message, name=error.name) from error


def attach(
    package: str, lazy: Mapping[str, Iterable[str]], eager: Iterable[str] = ()
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """Module-level ``__getattr__``, ``__dir__`` and ``__all__`` for the package called ``package``.

    ``lazy`` maps each submodule to the names it provides; ``eager`` lists the names the package
    imports itself. ``__all__`` holds both, sorted.
    """
    origins: dict[str, str] = {}
    for module, names in lazy.items():
        for name in names:
            if name in origins:
                raise ValueError(f"{package}: {name!r} is listed under both {origins[name]} and {module}")
            origins[name] = module
    _ATTACHED[package] = origins
    public = sorted(set(origins) | set(eager))

    def __getattr__(name: str) -> object:
        module = origins.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        with optional_dependency(f"{package}.{name}"):
            value = getattr(importlib.import_module(module), name)
        # Kept in the package, so the next look-up is a plain attribute read.
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return list(public)

    return __getattr__, __dir__, list(public)


def lazy_attributes(package: str) -> dict[str, str]:
    """The names ``package`` imports on first use, each with the module it comes from."""
    return dict(_ATTACHED.get(package, {}))


__all__ = [
    "OPTIONAL_DEPENDENCIES",
    "MissingDependencyError",
    "attach",
    "lazy_attributes",
    "missing_dependency_message",
    "optional_dependency",
]
