"""Errors raised while building and running the application (settings, CLI, workers)."""

from supplyflow.errors import SupplyflowError

__all__ = ["AppError", "SettingsError"]


class AppError(SupplyflowError):
    """An application-level failure the operator has to act on."""


class SettingsError(AppError):
    """A setting has a bad value; the message names the ``SUPPLYFLOW_*`` variable."""
