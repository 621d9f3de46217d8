"""Input agents: consume an input topic in batches, dead-letter bad records, hand on the rest.

Input topics are keyed per entity (``po_id``, ``order_id``, ``SKU@LOCATION``), so the agent
consuming a topic owns the state of its entities: it decodes every record of a batch,
hands the valid events, grouped by partition and in order, to the entity handler, and
sends each record that failed decoding or that the handler rejected to ``dlq`` with its
reason. A bad record never stops the agent or holds back the ones after it.

The batches come from an :class:`~supplyflow.agents.runtime.reader.InputReader`, not from Faust's
per-record delivery; the Faust agent itself consumes the ticks topic (deadlines, and the
signal that a partition is ready to read after a rebalance).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from supplyflow.agents.metrics import DEAD_LETTERED, Metrics, observe_all
from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.config import RuntimeConfig
from supplyflow.agents.runtime.driver import ReaderAgent
from supplyflow.agents.runtime.outbox import Outbox
from supplyflow.agents.runtime.progress import ProgressMarkers, merge_completed
from supplyflow.agents.runtime.quarantine import describe
from supplyflow.agents.runtime.reader import InputReader
from supplyflow.agents.runtime.records import Record, by_partition
from supplyflow.agents.runtime.routing import ROUTED, Purge, Router
from supplyflow.agents.runtime.tail import READ_BACK_RECORDS, read_tail
from supplyflow.agents.topics import DLQ
from supplyflow.codecs import AnyEvent, DecodeError, build_dead_letter, decode_input
from supplyflow.codecs.dlq import DLQ_HEADER_PREFIX

__all__ = [
    "Accepted",
    "EntityHandler",
    "EntityTickHandler",
    "InjectedFaultError",
    "InputAgent",
    "Rejected",
    "SentLetters",
    "complete_from_markers",
    "decode_batch",
    "purge_applied",
    "quarantined",
    "register_input_agent",
    "replayed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event with where it came from (for offset-aware, idempotent updates)."""

    event: AnyEvent
    partition: int
    #: its offset in the stream it was read from (``record.stream``)
    offset: int
    timestamp_ms: int | None
    #: the record it was decoded from
    record: Record


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

    @property
    def stream(self) -> str:
        return "" if self.origin is None else ROUTED

    @property
    def source(self) -> tuple[int, int]:
        """(partition, offset) where it was produced: its provenance."""
        return (self.partition, self.offset) if self.origin is None else self.origin


#: Applies the valid events of one batch; returns, aligned with its input, each event's
#: outcome (applied/duplicate/stale) or the error that sends it to the dead-letter topic.
EntityHandler = Callable[[Sequence[Accepted]], Awaitable[list[str | DecodeError]]]
#: Fires the deadlines of a partition on a tick: (partition, the partitions owned here,
#: the time up to which the partition's input is read: None while unknown).
EntityTickHandler = Callable[[int, frozenset[int], int | None], Awaitable[None]]


def decode_batch(
    topic: str, records: Sequence[Record], *, max_bytes: int
) -> tuple[list[Accepted], list[Rejected]]:
    """Split records of the input topic ``topic`` into accepted and rejected."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    for msg in records:
        headers = msg.headers
        timestamp_ms = int(msg.timestamp * 1000) if msg.timestamp else None
        try:
            event = decode_input(topic, msg.key, msg.value, headers, max_bytes=max_bytes)
        except DecodeError as error:
            # Its traceback holds this frame, and so the whole batch, in a reference cycle
            # only a full garbage collection frees (seconds at a million keys of state).
            error.__traceback__ = error.__cause__ = error.__context__ = None
            rejected.append(
                Rejected(
                    error,
                    msg.partition,
                    msg.offset,
                    timestamp_ms,
                    msg.key,
                    msg.value,
                    headers,
                    msg.origin,
                )
            )
            continue
        accepted.append(Accepted(event, msg.partition, msg.offset, timestamp_ms, msg))
    return accepted, rejected


def observe_processed(
    metrics: Metrics, topic: str, applied: Sequence[Record], read: Sequence[Record]
) -> None:
    """Record-timestamp-to-processed latency of the records ``applied``, and the last
    offset per partition of the input topic's records ``read`` (applied or routed on)."""
    now = time.time()
    latencies = [max(0.0, now - msg.timestamp) for msg in applied if msg.timestamp]
    observe_all(metrics.record_to_processed.labels(topic=topic), latencies)
    last: dict[int, int] = {}
    for msg in read:
        if msg.origin is None:
            last[msg.partition] = msg.offset
    for partition, offset in last.items():
        metrics.note_processed(topic, partition, offset)


def rejected_from(item: Accepted, error: DecodeError) -> Rejected:
    """The dead-letter entry for an event the domain rejected."""
    msg = item.record
    return Rejected(
        error,
        msg.partition,
        msg.offset,
        item.timestamp_ms,
        msg.key,
        msg.value,
        msg.headers,
        msg.origin,
    )


def quarantined(msg: Record, error: BaseException) -> Rejected:
    """The dead-letter entry of a record that made processing fail on its own (see
    :mod:`supplyflow.agents.runtime.quarantine`): the exception's type and message."""
    kind, message = describe(error)
    return Rejected(
        DecodeError("processing_failed", f"{kind}: {message}"),
        msg.partition,
        msg.offset,
        int(msg.timestamp * 1000) if msg.timestamp else None,
        msg.key,
        msg.value,
        msg.headers,
        msg.origin,
    )


class InjectedFaultError(RuntimeError):
    """Test only: raised for the event ``RuntimeConfig.fail_on_event_id`` names."""


def inject_fault(accepted: Sequence[Accepted], event_id: str | None) -> None:
    """Test only (off unless ``SUPPLYFLOW_TEST_FAIL_ON_ID`` is set): raise as a bug in a
    domain function would, for the event whose ``event_id`` is ``event_id``."""
    if event_id is not None and any(a.event.event_id == event_id for a in accepted):
        raise InjectedFaultError(f"injected failure for event_id {event_id!r}")


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


class InputAgent:
    """One input topic: its batches (from an :class:`InputReader`) and its ticks.

    It reads the input topic and its routed topic (records of other partitions whose key
    it owns, see :mod:`supplyflow.agents.runtime.routing`), forwards the records it does
    not own, and hands the rest, decoded, to ``handler``, which queues its outputs in the
    checkpoint's outbox and stages its states in its table; the agent then stages the
    progress markers and commits the checkpoint. With ``on_tick``, each tick of a
    partition calls it (deadlines) with the time up to which the partition's input is
    known to be read, and the checkpoint is committed the same way.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        topic: str,
        handler: EntityHandler,
        metrics: Metrics,
        checkpoint: Checkpoint,
        letters: SentLetters | None = None,
        on_tick: EntityTickHandler | None = None,
    ) -> None:
        self.topic = topic
        self.input_name = config.topic(topic)
        self.routed_name = config.routed_topic(topic)
        self.handler = handler
        self.metrics = metrics
        self.checkpoint = checkpoint
        self.markers = checkpoint.markers
        self.max_bytes = config.max_record_bytes
        self.fail_on = config.fail_on_event_id
        self.dead_letters = DeadLetters(config, topic, metrics, letters)
        self._on_tick = on_tick
        self.router = Router(
            topic=self.input_name,
            routed=self.routed_name,
            partitions=config.partitions,
            markers=checkpoint.markers,
            outbox=checkpoint.outbox,
        )
        self.reader = InputReader(
            config, [self.input_name, self.routed_name], probed=[self.input_name]
        )
        self.purge = Purge(config.kafka, self.routed_name)

    def marker_of(self, partition: int) -> dict[str, int | None]:
        """The input and routed topics' markers in ``partition``."""
        return {t: self.markers.last(t, partition) for t in (self.input_name, self.routed_name)}

    def discard(self) -> None:
        """Drop what a failed batch queued (it is read again from the markers)."""
        self.checkpoint.discard()
        self.router.discarded()

    async def process_batch(self, records: Sequence[Record]) -> None:
        """Apply a batch of the input topic (partitions mixed, each in offset order)."""
        groups = by_partition(records)
        if groups:
            await self.process(groups)

    async def quarantine(self, record: Record, error: BaseException) -> None:
        """Dead-letter ``record``, which makes processing fail on its own, with reason
        ``processing_failed`` where it is applied (a record this partition does not own
        is forwarded as usual), and commit its marker."""
        await self.process({record.partition: [record]}, poison=error)

    async def _route(
        self, partition: int, records: list[Record], floors: dict[tuple[str, int], int | None]
    ) -> tuple[list[Record], list[Record]]:
        """(the partition's records completed: each once, no gaps; those to apply)."""
        topics = (self.input_name, self.routed_name)
        marks = {t: self.markers.last(t, partition) for t in topics}
        floors[("", partition)] = marks[self.input_name]
        floors[(ROUTED, partition)] = marks[self.routed_name]
        completed = await merge_completed(
            records, topics, partial(complete_from_markers, self.markers, partition)
        )
        return completed, self.router.route(partition, completed, marks)

    async def process(
        self, groups: dict[int, list[Record]], *, poison: BaseException | None = None
    ) -> None:
        """Apply each partition's records (completed: each once, no gaps), in order;
        with ``poison``, dead-letter the records to apply instead, for that error."""
        topic, metrics = self.topic, self.metrics
        floors: dict[tuple[str, int], int | None] = {}
        completed: dict[int, list[Record]] = {}
        batch: list[Record] = []
        for partition, records in groups.items():
            completed[partition], mine = await self._route(partition, records, floors)
            batch.extend(mine)
        if poison is None:
            accepted, rejected = decode_batch(topic, batch, max_bytes=self.max_bytes)
            inject_fault(accepted, self.fail_on)
        else:
            accepted, rejected = [], [quarantined(msg, poison) for msg in batch]
            fresh = [r for r in rejected if not replayed(r.stream, r.partition, r.offset, floors)]
            metrics.records_quarantined.labels(topic=topic).inc(len(fresh))
        if accepted:
            results = await self.handler(accepted)
            tally: Counter[tuple[str, str]] = Counter()
            for item, result in zip(accepted, results, strict=True):
                if isinstance(result, DecodeError):
                    rejected.append(rejected_from(item, result))
                elif not replayed(item.record.stream, item.partition, item.offset, floors):
                    tally[(item.event.type, result)] += 1
            metrics.count_events(topic, tally)
        await self.dead_letters.add(self.checkpoint.outbox, rejected, floors)
        for partition, records in completed.items():
            for name in (self.input_name, self.routed_name):
                self.markers.record_all(name, partition, [r for r in records if r.topic == name])
        await self.checkpoint.commit()
        self.router.committed()
        forwarded = self.router.take_forwarded()
        if forwarded:
            metrics.records_routed.labels(topic=topic).inc(forwarded)
        if batch:
            metrics.batch_size.labels(topic=topic).observe(len(batch))
        read = [r for records in completed.values() for r in records if r.topic == self.input_name]
        observe_processed(metrics, topic, batch, read)

    async def tick(self, partition: int, owned: frozenset[int]) -> None:
        """Deadlines due in ``partition`` (transitions first, then the states), and the
        announcement of how far its input partition has been read."""
        own = self.reader.read_up_to_ms(self.input_name, partition)
        if self._on_tick is not None:
            await self._on_tick(partition, owned, self.router.read_up_to(partition, own))
        if own is not None:
            self.router.announce(partition, own)
        await self.checkpoint.commit()
        await purge_applied(self.purge, self.markers, self.reader.active)


async def purge_applied(purge: Purge, markers: ProgressMarkers, partitions: Iterable[int]) -> None:
    """If it is time, delete the routed records applied in ``partitions`` (committed)."""
    if purge.due():
        await purge.run((p, markers.last(purge.topic, p)) for p in sorted(partitions))


async def complete_from_markers(
    markers: ProgressMarkers, partition: int, topic: str, records: list[Record]
) -> list[Record]:
    """``markers.complete`` with its arguments in the order ``merge_completed`` takes."""
    return await markers.complete(topic, partition, records)


def register_input_agent(
    app: Any,
    config: RuntimeConfig,
    *,
    topic: str,
    handler: EntityHandler,
    metrics: Metrics,
    checkpoint: Checkpoint,
    letters: SentLetters | None = None,
    on_tick: EntityTickHandler | None = None,
) -> ReaderAgent:
    """The reader agent for input topic ``topic`` (contract name, without prefix): its
    input is read in batches by an :class:`~supplyflow.agents.runtime.reader.InputReader`
    (see there why), driven by the ticks (see ``register_ticks_agent``).
    """
    agent = InputAgent(
        config,
        topic=topic,
        handler=handler,
        metrics=metrics,
        checkpoint=checkpoint,
        letters=letters,
        on_tick=on_tick,
    )
    return ReaderAgent(
        app,
        agent.reader,
        ticks_topic=config.ticks_topic,
        handle=agent.process_batch,
        markers=agent.marker_of,
        on_tick=agent.tick,
        on_error=agent.discard,
        quarantine=agent.quarantine,
    )
