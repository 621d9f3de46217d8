"""Input agents: consume an input topic in batches, dead-letter bad records, hand on the rest.

Input topics are keyed per entity (``po_id``, ``order_id``, ``SKU@LOCATION``), so the agent
consuming a topic owns the state of its entities: it decodes every record of a batch,
hands the valid events, grouped by partition and in order, to the entity handler, and
sends each record that failed decoding or that the handler rejected to ``dlq`` with its
reason. A bad record never stops the agent or holds back the ones after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from faust.types import TP

from supplyflow.agents.progress import ProgressMarkers
from supplyflow.agents.tail import READ_BACK_RECORDS, read_tail
from supplyflow.app.batch_io import Outbox, TableIO
from supplyflow.app.faust_patches import partition_scope
from supplyflow.app.metrics import DEAD_LETTERED, Metrics
from supplyflow.app.settings import Settings
from supplyflow.app.topics import DLQ
from supplyflow.codecs import AnyEvent, DecodeError, build_dead_letter, decode_input
from supplyflow.codecs.dlq import DLQ_HEADER_PREFIX

__all__ = [
    "Accepted",
    "EntityHandler",
    "IngestTunables",
    "Rejected",
    "SentLetters",
    "by_partition",
    "decode_batch",
    "end_offset",
    "register_input_agent",
    "replayed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestTunables:
    """How input agents batch."""

    #: Most records per batch: amortises table writes and per-batch work over many events
    #: while keeping memory per batch small.
    batch_max: int = 2000
    #: Longest a batch stays open after its first record, in seconds: bounds the latency
    #: batching adds under sustained load.
    batch_window_s: float = 0.025
    #: A batch closes when no record arrived for this long, in seconds (caught up): the
    #: latency batching adds when input is sparse.
    batch_idle_s: float = 0.002


DEFAULT_TUNABLES: Final = IngestTunables()


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event with where it came from (for offset-aware, idempotent updates)."""

    event: AnyEvent
    partition: int
    offset: int
    timestamp_ms: int | None
    #: the Faust event it came from (its partition scopes table access)
    source: Any


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that goes to the dead-letter topic."""

    error: DecodeError
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


#: Applies the valid events of one batch; returns, aligned with its input, each event's
#: outcome (applied/duplicate/stale) or the error that sends it to the dead-letter topic.
EntityHandler = Callable[[Sequence[Accepted]], Awaitable[list[str | DecodeError]]]


def decode_batch(
    topic: str, events: Sequence[Any], *, max_bytes: int
) -> tuple[list[Accepted], list[Rejected]]:
    """Split Faust events of the input topic ``topic`` into accepted and rejected."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    for source in events:
        msg = source.message
        headers = list(msg.headers or ())
        timestamp_ms = int(msg.timestamp * 1000) if msg.timestamp else None
        try:
            event = decode_input(topic, msg.key, msg.value, headers, max_bytes=max_bytes)
        except DecodeError as error:
            # Its traceback holds this frame, and so the whole batch, in a reference cycle
            # only a full garbage collection frees (seconds at a million keys of state).
            error.__traceback__ = error.__cause__ = error.__context__ = None
            rejected.append(
                Rejected(
                    error, msg.partition, msg.offset, timestamp_ms, msg.key, msg.value, headers
                )
            )
            continue
        accepted.append(Accepted(event, msg.partition, msg.offset, timestamp_ms, source))
    return accepted, rejected


def by_partition(items: Sequence[Accepted]) -> dict[int, list[Accepted]]:
    """Group accepted events by partition, keeping their order."""
    groups: dict[int, list[Accepted]] = {}
    for item in items:
        groups.setdefault(item.partition, []).append(item)
    return groups


def observe_processed(metrics: Metrics, topic: str, events: Sequence[Any]) -> None:
    """Record-timestamp-to-processed latency and the last offset per partition."""
    now = time.time()
    latency = metrics.record_to_processed.labels(topic=topic)
    last: dict[int, int] = {}
    for event in events:
        msg = event.message
        if msg.timestamp:
            latency.observe(max(0.0, now - msg.timestamp))
        last[msg.partition] = msg.offset
    for partition, offset in last.items():
        metrics.note_processed(topic, partition, offset)


def owned_partitions(app: Any, topic: str) -> frozenset[int]:
    """The partitions of ``topic`` assigned to this worker right now."""
    return frozenset(tp.partition for tp in app.consumer.assignment() if tp.topic == topic)


def end_offset(app: Any, topic: str, partition: int) -> int | None:
    """The offset the next record of ``topic[partition]`` gets, as last fetched (or None)."""
    try:
        end = app.consumer.highwater(TP(topic, partition))
    except AssertionError:  # aiokafka: the partition was revoked meanwhile
        return None
    return None if end is None else int(end)


def rejected_from(item: Accepted, error: DecodeError) -> Rejected:
    """The dead-letter entry for an event the domain rejected."""
    msg = item.source.message
    return Rejected(
        error,
        msg.partition,
        msg.offset,
        item.timestamp_ms,
        msg.key,
        msg.value,
        list(msg.headers or ()),
    )


def replayed(partition: int, offset: int, floors: Mapping[int, int | None]) -> bool:
    """Whether a record is at or below its partition's marker (``floors``, taken before the
    batch): processed already, so its dead letter was sent and its outcome counted."""
    floor = floors.get(partition)
    return floor is not None and offset <= floor


class SentLetters:
    """The dead letters ``dlq`` already holds, per partition: read back on first use.

    A dead letter goes to the ``dlq`` partition of its source partition, and is sent
    before the marker that says its record is done; a worker killed in between leaves the
    record to its successor, which would send the letter again. The successor reads the
    partition's tail back once (see :mod:`supplyflow.agents.tail`) and skips letters whose
    source topic and offset are already there. Shared by a worker's agents.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic(DLQ)
        #: partition -> (source topic, source offset) -> None, oldest first
        self._sent: dict[int, dict[tuple[str, int], None]] = {}

    def forget(self, partitions: Sequence[int]) -> None:
        """Drop what is known of partitions this worker no longer owns."""
        for partition in partitions:
            self._sent.pop(partition, None)

    async def of(self, partition: int) -> dict[tuple[str, int], None]:
        """The letters in ``dlq[partition]`` (this process adds what it sends)."""
        sent = self._sent.get(partition)
        if sent is None:
            found: dict[tuple[str, int], None] = {}

            def each(message: Any) -> None:
                headers = dict(message.headers or ())
                topic, offset = headers.get(_SOURCE_TOPIC), headers.get(_SOURCE_OFFSET)
                if topic is not None and offset is not None:
                    found[(topic.decode("utf-8", "replace"), int(offset))] = None

            await read_tail(self.settings, self.topic, partition, each)
            sent = self._sent.setdefault(partition, found)
        return sent


_SOURCE_TOPIC: Final = f"{DLQ_HEADER_PREFIX}source-topic"
_SOURCE_OFFSET: Final = f"{DLQ_HEADER_PREFIX}source-offset"


class DeadLetters:
    """Sends rejected records of one input topic to ``dlq``, with metrics and a log line."""

    def __init__(
        self, settings: Settings, topic: str, metrics: Metrics, letters: SentLetters | None = None
    ) -> None:
        self.topic = topic
        self.full_name = settings.topic(topic)
        self.dlq = settings.topic(DLQ)
        self.metrics = metrics
        #: what ``dlq`` holds already (None: not checked, as in tests of a single process)
        self.letters = letters

    async def add(
        self, outbox: Outbox, rejected: Sequence[Rejected], floors: Mapping[int, int | None]
    ) -> None:
        """Queue every entry in ``outbox`` but replays (see :func:`replayed`) and letters
        already in ``dlq``; flush it before marking the records done."""
        for bad in rejected:
            if replayed(bad.partition, bad.offset, floors):
                continue
            if self.letters is not None:
                sent = await self.letters.of(bad.partition)
                if (self.full_name, bad.offset) in sent:
                    continue
                sent[(self.full_name, bad.offset)] = None
                if len(sent) > READ_BACK_RECORDS:
                    del sent[next(iter(sent))]
            letter = build_dead_letter(
                bad.error,
                topic=self.full_name,
                partition=bad.partition,
                offset=bad.offset,
                timestamp_ms=bad.timestamp_ms,
                key=bad.key,
                value=bad.value,
                headers=bad.headers,
            )
            # The source partition: the owner of input partition p is dlq[p]'s only writer.
            outbox.add(self.dlq, bad.partition, letter.key, letter.value, letter.headers)
            self.metrics.dead_letters.labels(topic=self.topic, reason=bad.error.reason).inc()
            self.metrics.events.labels(
                topic=self.topic, type="invalid", outcome=DEAD_LETTERED
            ).inc()
            entity_id = bad.key[:128].decode("utf-8", "replace") if bad.key else None
            log.warning(
                "dead-lettered %s[%d]@%d event_id=%s entity_id=%s: %s",
                self.full_name,
                bad.partition,
                bad.offset,
                bad.error.event_id,
                entity_id,
                bad.error,
                extra={
                    "event_id": bad.error.event_id,
                    "entity_id": entity_id,
                    "topic": self.full_name,
                    "partition": bad.partition,
                    "offset": bad.offset,
                    "reason": bad.error.reason,
                },
            )


async def complete_groups(
    markers: ProgressMarkers, topic: str, groups: dict[int, list[Any]], scopes: dict[int, Any]
) -> tuple[list[Any], dict[int, int | None]]:
    """Complete each partition's records of ``topic`` in ``groups`` (in place, see
    :meth:`ProgressMarkers.complete`); returns them as one batch, and each partition's
    marker before the batch (replays are at or below it)."""
    batch: list[Any] = []
    floors: dict[int, int | None] = {}
    for partition, group in groups.items():
        with partition_scope(scopes[partition]):
            floors[partition] = markers.last(topic)
            groups[partition] = await markers.complete(topic, partition, group)
        batch.extend(groups[partition])
    return batch, floors


def discard(outbox: Outbox, io: TableIO) -> None:
    """Drop what a crash mid-batch left queued, when an agent starts (again)."""
    outbox.discard()
    io.discard()


#: Called with (partition, the tick event, partitions this worker owns) for each tick.
TickHandler = Callable[[int, Any, frozenset[int]], Awaitable[None]]


def register_input_agent(
    app: Any,
    settings: Settings,
    *,
    topic: str,
    handler: EntityHandler,
    metrics: Metrics,
    io: TableIO,
    outbox: Outbox,
    letters: SentLetters | None = None,
    ticks: tuple[str, TickHandler] | None = None,
    tunables: IngestTunables = DEFAULT_TUNABLES,
) -> Any:
    """Create the agent consuming input topic ``topic`` (contract name, without prefix).

    ``handler`` queues its outputs in ``outbox`` and stages its states in ``io`` (the
    agent's table); after each batch the agent flushes the outbox, then commits the
    states with its progress markers. With ``ticks`` (topic name, handler), the agent also
    consumes the ticks topic and calls the handler for each partition ticked, after the
    batch's input events.
    """
    names = [settings.topic(topic)] + ([ticks[0]] if ticks else [])
    source = app.topic(
        *names,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=False,
    )
    input_name = names[0]
    dead_letters = DeadLetters(settings, topic, metrics, letters)
    markers = ProgressMarkers(io.scoped(), settings)

    async def process(groups: dict[int, list[Any]], scopes: dict[int, Any]) -> None:
        """Apply each partition's records (completed: each once, no gaps), in order."""
        batch, floors = await complete_groups(markers, input_name, groups, scopes)
        accepted, rejected = decode_batch(topic, batch, max_bytes=settings.max_record_bytes)
        if accepted:
            results = await handler(accepted)
            for item, result in zip(accepted, results, strict=True):
                if isinstance(result, DecodeError):
                    rejected.append(rejected_from(item, result))
                elif not replayed(item.partition, item.offset, floors):
                    metrics.events.labels(topic=topic, type=item.event.type, outcome=result).inc()
        await dead_letters.add(outbox, rejected, floors)
        await outbox.flush()
        for partition, completed in groups.items():
            with partition_scope(scopes[partition]):
                markers.record_all(input_name, completed)
        await io.commit()
        if batch:
            metrics.batch_size.labels(topic=topic).observe(len(batch))
            observe_processed(metrics, topic, batch)

    async def on_tick(partition: int, tick: Any, owned: frozenset[int]) -> None:
        """Records the consumer never delivered, then the deadlines due."""
        with partition_scope(tick):
            end = end_offset(app, input_name, partition)
            missing = await markers.stalled(input_name, partition, end)
        if missing:
            await process({partition: list(missing)}, {partition: tick})
        if ticks:
            await ticks[1](partition, tick, owned)
            await outbox.flush()  # transitions first, then the states that produced them
            await io.commit()

    async def consume(stream: Any) -> None:
        discard(outbox, io)
        async for events in stream.take_until_idle(
            tunables.batch_max, tunables.batch_window_s, tunables.batch_idle_s
        ):
            ticked = {e.message.partition: e for e in events if e.message.topic != input_name}
            groups: dict[int, list[Any]] = {}
            for event in events:
                if event.message.topic == input_name:
                    groups.setdefault(event.message.partition, []).append(event)
            if groups:
                await process(groups, {p: group[-1] for p, group in groups.items()})
            if ticked:
                owned = owned_partitions(app, input_name)
                for partition, tick in ticked.items():
                    if partition in owned:
                        await on_tick(partition, tick, owned)

    return app.agent(source, name=f"supplyflow.input.{topic}", concurrency=1)(consume)
