"""Which faust-streaming and mode-streaming the patches were written for, and a check.

Every patch in this package replaces or copies a private part of Faust (see each
module's ``ORIGINALS``). A release that changes one of them can break a patch silently,
so the package refuses to load with any other release (:func:`check_versions`), and the
tests compare a hash of each original's source with the one the patch was checked
against (``tests/agents/runtime/faust/test_versions.py``).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from supplyflow.agents.runtime.exceptions import FaustVersionError

__all__ = ["WRITTEN_FOR", "check_versions", "source_hash"]

#: The distributions whose internals the patches touch, and the releases they were
#: written and checked against (pyproject.toml pins the same).
WRITTEN_FOR: Final = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1"}


def check_versions(installed: Callable[[str], str] = version) -> None:
    """Raise :class:`FaustVersionError` unless :data:`WRITTEN_FOR` is what is installed."""
    found: dict[str, str] = {}
    for name in WRITTEN_FOR:
        try:
            found[name] = installed(name)
        except PackageNotFoundError:
            found[name] = "none"
    wrong = {name: have for name, have in found.items() if have != WRITTEN_FOR[name]}
    if wrong:
        have = ", ".join(f"{name} {release}" for name, release in wrong.items())
        pins = " ".join(f"'{name}=={release}'" for name, release in WRITTEN_FOR.items())
        raise FaustVersionError(
            f"supplyflow's Faust patches were written for {_releases(WRITTEN_FOR)}, but "
            f"{have} is installed: install those releases (pip install {pins}, as "
            "pyproject.toml pins them). To move to a new release, check every patch in "
            "supplyflow/agents/runtime/faust/ against it (the source-hash tests in "
            "tests/agents/runtime/faust/ name the functions to compare), then update "
            "WRITTEN_FOR and the pins."
        )


def _releases(releases: Mapping[str, str]) -> str:
    return " and ".join(f"{name} {release}" for name, release in releases.items())


def source_hash(function: Any) -> str:
    """sha256 of the source of ``function`` (a Faust function a patch replaces or copies)."""
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
