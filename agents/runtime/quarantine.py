"""A record that makes its batch fail is isolated and dead-lettered; the partition goes on.

A batch can fail for two kinds of reasons, and the runtime tells them apart by the
exception (:func:`is_infrastructure`):

* **Infrastructure**: Kafka (every client error, a producer that cannot send: also a
  record a topic refuses as too large, which a topic's configuration causes as often as
  the record; the bounds at decode keep what supplyflow writes within them), the
  operating system (``OSError``: disk full, connection refused), RocksDB, timeouts, memory,
  and any failure to write the states of a batch whose outputs Kafka already acknowledged
  (:class:`.StateWriteError`: dead-lettering its record would leave its outputs counted).
  Reading the same records again later can succeed, and the records are not at fault, so
  they are never dead-lettered: the batch is dropped and read again from the markers,
  with a growing pause (:meth:`RetryPolicy.infrastructure_pause`), for as long as it
  takes; the partition shows as stalled meanwhile (:mod:`.stall`).
* **Record**: any other exception (a bug in a domain function that some input reaches).
  The batch is tried :attr:`RetryPolicy.attempts` times with a pause after each failure;
  if it keeps failing, it is split in halves, each applied on its own in order
  (bisection), until the record that fails alone is found. That record is handed to the
  agent's quarantine (``Quarantine``), which dead-letters it with reason
  ``processing_failed`` and moves the marker past it; everything before and after it is
  applied. A record that fails alone fails the same way on any worker (same record, same
  committed state), so after a takeover the next owner isolates the same record, and the
  dead-letter tail read-back (:mod:`.tail`) keeps it from being lettered twice.

Every failed attempt leaves nothing behind: the agent's ``discard`` drops what it queued
and staged (:meth:`~supplyflow.agents.runtime.checkpoint.Checkpoint.discard`) before the
next one. Errors of :data:`.FATAL_ERRORS` are neither retried nor isolated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from aiokafka.errors import KafkaError
from faust.exceptions import FaustError
from rocksdict import DbClosedError

from supplyflow.agents.runtime.exceptions import FATAL_ERRORS, StateWriteError
from supplyflow.agents.runtime.records import Record

__all__ = [
    "INFRASTRUCTURE_ERRORS",
    "Quarantine",
    "RetryPolicy",
    "describe",
    "is_infrastructure",
    "process_or_isolate",
]

log = logging.getLogger(__name__)

#: Errors that are not a record's fault (see the module doc): retried, never quarantined.
INFRASTRUCTURE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    KafkaError,
    FaustError,
    OSError,
    TimeoutError,
    MemoryError,
    DbClosedError,
    # After the outputs: quarantining the record would leave its outputs counted.
    StateWriteError,
)
#: RocksDB reports its own errors as plain exceptions whose message starts like this.
_ROCKSDB_MESSAGES: Final = ("IO error", "Corruption", "Resource busy", "rocksdb", "RocksDB")
#: The longest exception message a dead letter or the health endpoint carries.
_MESSAGE_CHARS: Final = 1000


def is_infrastructure(error: BaseException) -> bool:
    """Whether ``error`` is the infrastructure's fault, not the records' (module doc)."""
    if isinstance(error, INFRASTRUCTURE_ERRORS):
        return True
    # rocksdict raises a bare Exception carrying RocksDB's status message.
    return type(error) is Exception and str(error).startswith(_ROCKSDB_MESSAGES)


def describe(error: BaseException) -> tuple[str, str]:
    """(the exception's type name, its message, cut to a bounded length)."""
    message = str(error)
    if len(message) > _MESSAGE_CHARS:
        message = message[:_MESSAGE_CHARS] + "..."
    return type(error).__name__, message


@dataclass(frozen=True)
class RetryPolicy:
    """How often and after which pauses a failed batch is tried again."""

    #: Attempts of a batch that fails with a record error before it is bisected.
    attempts: int = 3
    #: The pause after each failed attempt, in seconds (the last one repeats).
    backoff_s: tuple[float, ...] = (0.2, 0.4, 0.8)
    #: The longest pause between reads of a batch that failed with an infrastructure
    #: error (it doubles from the first ``backoff_s`` up to this).
    infrastructure_max_s: float = 5.0

    def pause(self, attempt: int) -> float:
        """The pause after failed attempt ``attempt`` (0-based)."""
        return self.backoff_s[min(attempt, len(self.backoff_s) - 1)]

    def infrastructure_pause(self, failures: int) -> float:
        """The pause after ``failures`` (>= 1) infrastructure failures in a row."""
        return float(min(self.backoff_s[0] * 2 ** min(failures - 1, 16), self.infrastructure_max_s))


#: Applies a batch of records (the agent's batch handler).
Handle = Callable[[list[Record]], Awaitable[None]]
#: Dead-letters one record that fails alone with the error it raised, moves its marker on
#: and commits (the agent's; it raises what its commit raises).
Quarantine = Callable[[Record, BaseException], Awaitable[None]]


async def process_or_isolate(
    events: list[Record],
    handle: Handle,
    *,
    discard: Callable[[], None],
    quarantine: Quarantine,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """Apply ``events``: retried, then bisected, a record failing alone quarantined.

    Returns how many records were quarantined. Raises an error of :data:`.FATAL_ERRORS`
    or an infrastructure error (the caller drops the batch and reads again from the
    markers); what a failed attempt queued is dropped (``discard``) before the next one.
    """
    error: BaseException = RuntimeError("no attempt made")
    for attempt in range(policy.attempts):
        try:
            await handle(events)
            return 0
        except FATAL_ERRORS:
            raise
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            discard()
            error = exc
            kind, message = describe(exc)
            log.warning(
                "a batch of %d records failed (attempt %d of %d): %s: %s",
                len(events),
                attempt + 1,
                policy.attempts,
                kind,
                message,
            )
            await sleep(policy.pause(attempt))
    log.warning("isolating the record that fails a batch of %d records", len(events))
    return await _isolate(events, handle, discard=discard, quarantine=quarantine, error=error)


async def _isolate(
    failed: Sequence[Record],
    handle: Handle,
    *,
    discard: Callable[[], None],
    quarantine: Quarantine,
    error: BaseException,
) -> int:
    """``failed`` failed as a whole: apply its halves in order, each on its own, and
    quarantine a record that fails alone. Returns how many were quarantined.

    (The halves keep each partition's records in order: the first half is committed
    before the second is read, so each starts right after the marker.)
    """
    if len(failed) == 1:
        record = failed[0]
        kind, message = describe(error)
        log.error(
            "%s[%d]@%d fails alone (%s: %s): dead-lettered as processing_failed",
            record.topic,
            record.partition,
            record.offset,
            kind,
            message,
            exc_info=error,
        )
        await quarantine(record, error)
        return 1
    middle = len(failed) // 2
    quarantined = 0
    for half in (failed[:middle], failed[middle:]):
        try:
            await handle(list(half))
        except FATAL_ERRORS:
            raise
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            discard()
            quarantined += await _isolate(
                half, handle, discard=discard, quarantine=quarantine, error=exc
            )
    return quarantined
