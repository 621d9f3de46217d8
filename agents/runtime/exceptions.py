"""Errors of the runtime that an operator can meet, each saying what to do."""

from __future__ import annotations

from supplyflow.errors import SupplyflowError

__all__ = ["FaustVersionError", "RuntimeSetupError"]


class RuntimeSetupError(SupplyflowError):
    """The runtime cannot run in this environment."""


class FaustVersionError(RuntimeSetupError):
    """The installed Faust is not the release the runtime's patches were written for."""
