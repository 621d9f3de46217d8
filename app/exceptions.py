"""Errors raised while building and running the application (settings, CLI, workers)."""

from typing import Final

from supplyflow.errors import SupplyflowError

__all__ = ["USAGE_EXIT_CODE", "AppError", "SettingsError"]

#: Exit code of a command stopped by an error the operator can fix (a bad setting, a missing
#: broker): one clear message, no traceback.
USAGE_EXIT_CODE: Final = 2


class AppError(SupplyflowError):
    """An application-level failure the operator has to act on."""


class SettingsError(AppError):
    """A setting has a bad value; the message names the ``SUPPLYFLOW_*`` variable."""
