"""Errors of the runtime that an operator can meet, each saying what to do."""

from __future__ import annotations

from typing import Final

from supplyflow.codecs.state import StateFormatError
from supplyflow.errors import SupplyflowError

__all__ = ["FATAL_ERRORS", "FaustVersionError", "RuntimeSetupError", "StateWriteError"]

#: Errors a batch or tick is not retried after: reading the same records or state again
#: would meet them again (state in a format this release cannot read). The worker stops
#: with the error's message instead (``register_ticks_agent``'s ``on_fatal``).
FATAL_ERRORS: Final = (StateFormatError,)


class RuntimeSetupError(SupplyflowError):
    """The runtime cannot run in this environment."""


class FaustVersionError(RuntimeSetupError):
    """The installed Faust is not the release the runtime's patches were written for."""


class StateWriteError(SupplyflowError):
    """The states of a batch whose outputs Kafka has acknowledged could not be written.

    Never the records' fault as far as the runtime is concerned (see
    ``runtime.quarantine``): dead-lettering a record whose outputs are out would leave
    them counted. The batch is read again until its states are written.
    """
