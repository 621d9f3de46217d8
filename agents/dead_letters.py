"""Dead letters: the records an input agent rejects, sent to ``dlq`` exactly once.

A record that fails decoding, or that the domain rejects, goes to the ``dlq`` partition
of the partition that owns it (see :class:`DeadLetters`), with its reason and its
provenance (source topic, partition, offset). The letter is an output of the batch that
read the record: it is sent before the marker that says the record is done, and a
successor that finds it in ``dlq`` already does not send it again (:class:`SentLetters`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from supplyflow.agents.metrics import DEAD_LETTERED, Metrics
from supplyflow.agents.runtime.config import RuntimeConfig
from supplyflow.agents.runtime.outbox import Outbox
from supplyflow.agents.runtime.routing import ROUTED
from supplyflow.agents.runtime.tail import READ_BACK_RECORDS, read_tail
from supplyflow.agents.topics import DLQ
from supplyflow.codecs import DecodeError, build_dead_letter
from supplyflow.codecs.dlq import DLQ_HEADER_PREFIX

__all__ = ["DeadLetters", "Floors", "Rejected", "SentLetters", "replayed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that goes to the dead-letter topic."""

    error: DecodeError
    #: the partition it was read in (its owner's: the ``dlq`` partition it goes to)
    partition: int
    #: its offset in the stream it was read from
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    #: (partition, offset) in its input topic, for a record routed from another
    #: partition (see agents.runtime.routing); None: read where it was produced
    origin: tuple[int, int] | None = None
    #: the stream it was applied as in timestamp order (see agents.runtime.ordering)
    lane: str | None = None

    @property
    def stream(self) -> str:
        if self.lane is not None:
            return self.lane
        return "" if self.origin is None else ROUTED

    @property
    def source(self) -> tuple[int, int]:
        """(partition, offset) where it was produced: its provenance."""
        return (self.partition, self.offset) if self.origin is None else self.origin


#: (input stream, partition) -> its marker before the batch
Floors = Mapping[tuple[str, int], int | None]


def replayed(stream: str, partition: int, offset: int, floors: Floors) -> bool:
    """Whether a record is at or below its stream partition's marker (``floors``, taken
    before the batch): processed already, so its dead letter was sent and its outcome
    counted."""
    floor = floors.get((stream, partition))
    return floor is not None and offset <= floor


#: Where a dead letter's record was produced: (input topic, partition, offset).
Source = tuple[str, int, int]


class SentLetters:
    """The dead letters ``dlq`` holds, per partition: read back on first use.

    A dead letter goes to the ``dlq`` partition of the partition that owns its record
    (where it was read, after routing), and is acknowledged before the marker that says its
    record is done moves; a worker killed in between leaves the record to its successor,
    which would send the letter again. The successor reads the partition's tail back once
    (see :mod:`supplyflow.agents.runtime.tail`) and skips letters whose source topic,
    partition and offset are already there. After that, a letter is added when Kafka
    acknowledged it (:meth:`mark`), never when it is queued: a letter whose send failed is
    not in ``dlq``, and the batch that is read again must send it. Shared by a worker's
    agents.
    """

    def __init__(self, config: RuntimeConfig) -> None:
        self.kafka = config.kafka
        self.topic = config.topic(DLQ)
        #: partition -> source of each letter -> None, oldest first
        self._sent: dict[int, dict[Source, None]] = {}

    def forget(self, partitions: Sequence[int]) -> None:
        """Drop what is known of partitions this worker no longer owns."""
        for partition in partitions:
            self._sent.pop(partition, None)

    def mark(self, partition: int, source: Source) -> None:
        """Kafka acknowledged the letter of ``source`` in ``dlq[partition]``. (A partition
        not read back yet will find it in the tail.)"""
        sent = self._sent.get(partition)
        if sent is not None:
            sent[source] = None
            if len(sent) > READ_BACK_RECORDS:
                del sent[next(iter(sent))]

    async def of(self, partition: int) -> dict[Source, None]:
        """The letters in ``dlq[partition]`` (this process adds those it sent)."""
        sent = self._sent.get(partition)
        if sent is None:
            found: dict[Source, None] = {}

            def each(message: Any) -> None:
                headers = dict(message.headers or ())
                topic, offset = headers.get(_SOURCE_TOPIC), headers.get(_SOURCE_OFFSET)
                at = headers.get(_SOURCE_PARTITION)
                if topic is not None and offset is not None and at is not None:
                    name = topic.decode("utf-8", "replace")
                    found[(name, int(at), int(offset))] = None

            await read_tail(self.kafka, self.topic, partition, each)
            sent = self._sent.setdefault(partition, found)
        return sent


_SOURCE_TOPIC: Final = f"{DLQ_HEADER_PREFIX}source-topic"
_SOURCE_PARTITION: Final = f"{DLQ_HEADER_PREFIX}source-partition"
_SOURCE_OFFSET: Final = f"{DLQ_HEADER_PREFIX}source-offset"


class DeadLetters:
    """Sends rejected records of one input topic to ``dlq``, with metrics and a log line.

    A letter counts (``SentLetters``, ``supplyflow_dead_letters_total``, the
    ``dead_lettered`` outcome, the log line) only once Kafka acknowledged it: the outbox
    calls back per acknowledged record batch. If the send fails, the batch fails, nothing
    counted it, its markers stay where they were (the checkpoint writes them after the
    outputs), and the batch read again sends the letter again. A letter larger than the
    ``dlq`` topic takes is sent truncated (``build_dead_letter``), never dropped.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        topic: str,
        metrics: Metrics,
        letters: SentLetters | None = None,
    ) -> None:
        self.topic = topic
        self.full_name = config.topic(topic)
        self.dlq = config.topic(DLQ)
        self.max_bytes = config.max_dlq_message_bytes
        self.metrics = metrics
        #: what ``dlq`` holds already (None: not checked, as in tests of a single process)
        self.letters = letters

    async def add(self, outbox: Outbox, rejected: Sequence[Rejected], floors: Floors) -> None:
        """Queue every entry in ``outbox`` but replays (see :func:`replayed`) and letters
        already in ``dlq`` (a checkpoint's outbox: sent before the markers move)."""
        for bad in rejected:
            if replayed(bad.stream, bad.partition, bad.offset, floors):
                continue
            source_partition, source_offset = bad.source
            source = (self.full_name, source_partition, source_offset)
            if self.letters is not None and source in await self.letters.of(bad.partition):
                continue
            letter = build_dead_letter(
                bad.error,
                topic=self.full_name,
                partition=source_partition,
                offset=source_offset,
                timestamp_ms=bad.timestamp_ms,
                key=bad.key,
                value=bad.value,
                headers=bad.headers,
                max_bytes=self.max_bytes,
            )
            # The owner's partition: the owner of input partition p is dlq[p]'s only writer.
            outbox.add(
                self.dlq,
                bad.partition,
                letter.key,
                letter.value,
                letter.headers,
                on_acked=partial(self._acked, bad, source),
            )

    def _acked(self, bad: Rejected, source: Source) -> None:
        """Kafka has the letter of ``bad``: now it counts as sent."""
        if self.letters is not None:
            self.letters.mark(bad.partition, source)
        self.metrics.dead_letters.labels(topic=self.topic, reason=bad.error.reason).inc()
        self.metrics.events.labels(topic=self.topic, type="invalid", outcome=DEAD_LETTERED).inc()
        _, source_partition, source_offset = source
        entity_id = bad.key[:128].decode("utf-8", "replace") if bad.key else None
        log.warning(
            "dead-lettered %s[%d]@%d event_id=%s entity_id=%s: %s",
            self.full_name,
            source_partition,
            source_offset,
            bad.error.event_id,
            entity_id,
            bad.error,
            extra={
                "event_id": bad.error.event_id,
                "entity_id": entity_id,
                "topic": self.full_name,
                "partition": source_partition,
                "offset": source_offset,
                "reason": bad.error.reason,
            },
        )
