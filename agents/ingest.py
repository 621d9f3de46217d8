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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from supplyflow.agents.metrics import DEAD_LETTERED, Metrics, observe_all
from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.config import RuntimeConfig
from supplyflow.agents.runtime.driver import ReaderAgent, TickHandler
from supplyflow.agents.runtime.outbox import Outbox
from supplyflow.agents.runtime.progress import ProgressMarkers
from supplyflow.agents.runtime.reader import InputReader
from supplyflow.agents.runtime.records import Record, by_partition
from supplyflow.agents.runtime.tail import READ_BACK_RECORDS, read_tail
from supplyflow.agents.topics import DLQ
from supplyflow.codecs import AnyEvent, DecodeError, build_dead_letter, decode_input
from supplyflow.codecs.dlq import DLQ_HEADER_PREFIX

__all__ = [
    "Accepted",
    "EntityHandler",
    "InputAgent",
    "Rejected",
    "SentLetters",
    "decode_batch",
    "register_input_agent",
    "replayed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event with where it came from (for offset-aware, idempotent updates)."""

    event: AnyEvent
    partition: int
    offset: int
    timestamp_ms: int | None
    #: the record it was decoded from
    record: Record


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
                    error, msg.partition, msg.offset, timestamp_ms, msg.key, msg.value, headers
                )
            )
            continue
        accepted.append(Accepted(event, msg.partition, msg.offset, timestamp_ms, msg))
    return accepted, rejected


def observe_processed(metrics: Metrics, topic: str, records: Sequence[Record]) -> None:
    """Record-timestamp-to-processed latency and the last offset per partition."""
    now = time.time()
    latencies: list[float] = []
    last: dict[int, int] = {}
    for msg in records:
        if msg.timestamp:
            latencies.append(max(0.0, now - msg.timestamp))
        last[msg.partition] = msg.offset
    observe_all(metrics.record_to_processed.labels(topic=topic), latencies)
    for partition, offset in last.items():
        metrics.note_processed(topic, partition, offset)


def rejected_from(item: Accepted, error: DecodeError) -> Rejected:
    """The dead-letter entry for an event the domain rejected."""
    msg = item.record
    return Rejected(
        error, msg.partition, msg.offset, item.timestamp_ms, msg.key, msg.value, msg.headers
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
    partition's tail back once (see :mod:`supplyflow.agents.runtime.tail`) and skips letters whose
    source topic and offset are already there. Shared by a worker's agents.
    """

    def __init__(self, config: RuntimeConfig) -> None:
        self.kafka = config.kafka
        self.topic = config.topic(DLQ)
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

            await read_tail(self.kafka, self.topic, partition, each)
            sent = self._sent.setdefault(partition, found)
        return sent


_SOURCE_TOPIC: Final = f"{DLQ_HEADER_PREFIX}source-topic"
_SOURCE_OFFSET: Final = f"{DLQ_HEADER_PREFIX}source-offset"


class DeadLetters:
    """Sends rejected records of one input topic to ``dlq``, with metrics and a log line."""

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
        self.metrics = metrics
        #: what ``dlq`` holds already (None: not checked, as in tests of a single process)
        self.letters = letters

    async def add(
        self, outbox: Outbox, rejected: Sequence[Rejected], floors: Mapping[int, int | None]
    ) -> None:
        """Queue every entry in ``outbox`` but replays (see :func:`replayed`) and letters
        already in ``dlq`` (a checkpoint's outbox: sent before the markers move)."""
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
    markers: ProgressMarkers, topic: str, groups: dict[int, list[Record]]
) -> tuple[list[Record], dict[int, int | None]]:
    """Complete each partition's records of ``topic`` in ``groups`` (in place, see
    :meth:`ProgressMarkers.complete`); returns them as one batch, and each partition's
    marker before the batch (replays are at or below it)."""
    batch: list[Record] = []
    floors: dict[int, int | None] = {}
    for partition, group in groups.items():
        floors[partition] = markers.last(topic, partition)
        groups[partition] = await markers.complete(topic, partition, group)
        batch.extend(groups[partition])
    return batch, floors


class InputAgent:
    """One input topic: its batches (from an :class:`InputReader`) and its ticks.

    ``handler`` queues its outputs in the checkpoint's outbox and stages its states in
    its table (the agent's); after each batch the agent stages the progress markers and
    commits the checkpoint. With ``on_tick``, each tick of a partition calls it
    (deadlines), and the checkpoint is committed the same way.
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
        on_tick: TickHandler | None = None,
    ) -> None:
        self.topic = topic
        self.input_name = config.topic(topic)
        self.handler = handler
        self.metrics = metrics
        self.checkpoint = checkpoint
        self.markers = checkpoint.markers
        self.max_bytes = config.max_record_bytes
        self.dead_letters = DeadLetters(config, topic, metrics, letters)
        self._on_tick = on_tick

    def marker_of(self, partition: int) -> dict[str, int | None]:
        """The input topic's marker in ``partition``."""
        return {self.input_name: self.markers.last(self.input_name, partition)}

    async def process_batch(self, records: Sequence[Record]) -> None:
        """Apply a batch of the input topic (partitions mixed, each in offset order)."""
        groups = by_partition(records)
        if groups:
            await self.process(groups)

    async def process(self, groups: dict[int, list[Record]]) -> None:
        """Apply each partition's records (completed: each once, no gaps), in order."""
        topic, metrics = self.topic, self.metrics
        batch, floors = await complete_groups(self.markers, self.input_name, groups)
        accepted, rejected = decode_batch(topic, batch, max_bytes=self.max_bytes)
        if accepted:
            results = await self.handler(accepted)
            tally: Counter[tuple[str, str]] = Counter()
            for item, result in zip(accepted, results, strict=True):
                if isinstance(result, DecodeError):
                    rejected.append(rejected_from(item, result))
                elif not replayed(item.partition, item.offset, floors):
                    tally[(item.event.type, result)] += 1
            metrics.count_events(topic, tally)
        await self.dead_letters.add(self.checkpoint.outbox, rejected, floors)
        for partition, completed in groups.items():
            self.markers.record_all(self.input_name, partition, completed)
        await self.checkpoint.commit()
        if batch:
            metrics.batch_size.labels(topic=topic).observe(len(batch))
            observe_processed(metrics, topic, batch)

    async def tick(self, partition: int, owned: frozenset[int]) -> None:
        """The deadlines due in ``partition``: transitions first, then the states."""
        if self._on_tick is not None:
            await self._on_tick(partition, owned)
            await self.checkpoint.commit()


def register_input_agent(
    app: Any,
    config: RuntimeConfig,
    *,
    topic: str,
    handler: EntityHandler,
    metrics: Metrics,
    checkpoint: Checkpoint,
    letters: SentLetters | None = None,
    on_tick: TickHandler | None = None,
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
    reader = InputReader(config, [agent.input_name])
    return ReaderAgent(
        app,
        reader,
        ticks_topic=config.ticks_topic,
        handle=agent.process_batch,
        markers=agent.marker_of,
        on_tick=agent.tick,
        on_error=checkpoint.discard,
    )
