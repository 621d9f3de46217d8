"""Whether the domain runs compiled (mypyc), and a refusal to run a stale build.

The pure modules of the PO/order/position domain (:data:`COMPILED`) can be compiled with
mypyc: ``make compile`` builds C extensions next to their sources (``tables/po.*.so``
...) and a shared library ``supplyflow/_domain__mypyc.*.so``; Python then imports the
extension instead of the ``.py``. ``make uncompile`` removes them: plain CPython again,
the default, which needs no C compiler. Behaviour is the same either way (``make
test-compiled`` runs the exactness tests against the compiled build).

An extension built from an older source would silently run the old code, so in a source
checkout (where ``make compile`` builds) :func:`check_build` refuses a build that is
older than a source file, or that covers only some of the modules: the package raises
:class:`CompiledBuildError` on import, naming the files and what to run.

``SUPPLYFLOW_COMPILED=0`` runs the ``.py`` sources even where a build exists (no check
then): how ``python -m bench domain --compare`` times both builds from one checkout.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

from supplyflow.errors import SupplyflowError

__all__ = [
    "COMPILED",
    "SHARED_LIBRARY",
    "CompiledBuildError",
    "build_problems",
    "check_build",
    "choose_build",
    "compiled_in_use",
    "domain_status",
    "extension_files",
]

#: The modules ``make compile`` compiles (read by setup.py too): the domain and the pure
#: codecs it calls. Not the pydantic event models, nor anything doing I/O.
COMPILED: Final = (
    "supplyflow.codecs.quantity",
    "supplyflow.codecs.state",
    "supplyflow.tables.common",
    "supplyflow.tables.exceptions",
    "supplyflow.tables.deadlines",
    "supplyflow.tables.position",
    "supplyflow.tables.po",
    "supplyflow.tables.order",
    "supplyflow.tables.batch",
)
#: The shared library the compiled modules' code lives in (setup.py's mypyc group).
SHARED_LIBRARY: Final = "_domain__mypyc"

_PACKAGE_DIR: Final = Path(__file__).resolve().parent
_SUFFIXES: Final = tuple(importlib.machinery.EXTENSION_SUFFIXES)


class CompiledBuildError(SupplyflowError):
    """The compiled domain does not match its sources."""


def _source(module: str, package_dir: Path = _PACKAGE_DIR) -> Path:
    """The ``.py`` of one of :data:`COMPILED` (``supplyflow.tables.po`` -> tables/po.py)."""
    parts = module.split(".")[1:]
    return package_dir.joinpath(*parts[:-1], parts[-1] + ".py")


def _extensions_beside(source: Path) -> list[Path]:
    candidates = (source.with_name(source.stem + suffix) for suffix in _SUFFIXES)
    return [path for path in candidates if path.exists()]


def extension_files(package_dir: Path = _PACKAGE_DIR) -> dict[str, list[Path]]:
    """Per compiled module (and :data:`SHARED_LIBRARY`), its extension files on disk."""
    files = {module: _extensions_beside(_source(module, package_dir)) for module in COMPILED}
    files[SHARED_LIBRARY] = _extensions_beside(package_dir / (SHARED_LIBRARY + ".py"))
    return files


def build_problems(package_dir: Path = _PACKAGE_DIR) -> list[str]:
    """What is wrong with the compiled build in ``package_dir`` (empty: none, or no build):
    a module or the shared library missing from it, an extension older than its source."""
    files = extension_files(package_dir)
    built = {name for name, paths in files.items() if paths}
    if not built:
        return []
    problems = [
        f"{name} is not compiled" for name in (*COMPILED, SHARED_LIBRARY) if name not in built
    ]
    for module in COMPILED:
        source = _source(module, package_dir)
        for ext in files[module]:
            if ext.stat().st_mtime < source.stat().st_mtime:
                problems.append(f"{ext.name} is older than {source.name}")
    return problems


def _in_source_checkout(package_dir: Path) -> bool:
    """A checkout (``make compile`` builds there), not an installed wheel."""
    return (package_dir.parents[1] / "pyproject.toml").exists()


class _PureSources(importlib.abc.MetaPathFinder):
    """Imports the modules of :data:`COMPILED` from their ``.py`` files."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


def choose_build() -> None:
    """Called once as the package is imported: with ``SUPPLYFLOW_COMPILED=0`` the domain
    runs from its sources; otherwise a build, if there is one, must be current
    (:func:`check_build`)."""
    if os.environ.get("SUPPLYFLOW_COMPILED", "") == "0":
        if not any(isinstance(f, _PureSources) for f in sys.meta_path):
            sys.meta_path.insert(0, _PureSources())
        return
    check_build()


def check_build(package_dir: Path = _PACKAGE_DIR) -> None:
    """Raise :class:`CompiledBuildError` if the compiled domain in this source checkout
    is stale (an extension older than its ``.py``) or partial. No build, or an installed
    package (not a checkout): nothing to check."""
    if not _in_source_checkout(package_dir):
        return
    problems = build_problems(package_dir)
    if problems:
        raise CompiledBuildError(
            "the compiled domain (mypyc) does not match its sources: "
            + "; ".join(problems)
            + ". Run `make compile` to rebuild it, or `make uncompile` to run pure Python"
        )


def domain_status() -> dict[str, bool]:
    """Per module of :data:`COMPILED`: is the imported module the compiled extension?"""
    status = {}
    for module in COMPILED:
        loaded = sys.modules.get(module) or importlib.import_module(module)
        status[module] = (getattr(loaded, "__file__", None) or "").endswith(_SUFFIXES)
    return status


def compiled_in_use() -> bool:
    """True iff every module of :data:`COMPILED` runs compiled."""
    return all(domain_status().values())
