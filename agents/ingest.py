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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from supplyflow.agents.dead_letters import DeadLetters, Rejected, SentLetters, replayed
from supplyflow.agents.metrics import Metrics, observe_all
from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.config import RuntimeConfig
from supplyflow.agents.runtime.driver import ReaderAgent
from supplyflow.agents.runtime.ordering import ApplyOrder
from supplyflow.agents.runtime.progress import ProgressMarkers, merge_completed
from supplyflow.agents.runtime.quarantine import describe
from supplyflow.agents.runtime.reader import InputReader
from supplyflow.agents.runtime.records import LaneRecord, Record, by_partition
from supplyflow.agents.runtime.routing import ROUTED, Purge, Router
from supplyflow.codecs import AnyEvent, DecodeError, decode_input

__all__ = [
    "Accepted",
    "EntityHandler",
    "EntityTickHandler",
    "InjectedFaultError",
    "InputAgent",
    "complete_from_markers",
    "decode_batch",
    "observe_processed",
    "purge_applied",
    "quarantined",
    "register_input_agent",
]

log = logging.getLogger(__name__)

#: (input stream, partition) -> its marker before the batch, filled in per partition
_Floors = dict[tuple[str, int], int | None]


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
                    msg.lane if isinstance(msg, LaneRecord) else None,
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
        msg.lane if isinstance(msg, LaneRecord) else None,
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
        #: None: records are applied as read (``SUPPLYFLOW_APPLY_ORDER=arrival``)
        self.order = (
            ApplyOrder(
                topics=(self.input_name, self.routed_name),
                partitions=config.partitions,
                lateness_ms=config.apply_lateness_ms,
                table=checkpoint.markers.table,
            )
            if config.apply_order == "timestamp"
            else None
        )
        #: partitions whose late records were logged (once per process)
        self._warned_late: set[int] = set()

    def marker_of(self, partition: int) -> dict[str, int | None]:
        """Where reading ``partition`` starts when it is activated: the input and routed
        topics' markers, or, in timestamp order, the first record held back unapplied."""
        topics = (self.input_name, self.routed_name)
        marks = {t: self.markers.last(t, partition) for t in topics}
        if self.order is None:
            return marks
        for topic in topics:
            self.markers.rescan(topic, partition)
        return self.order.resume(partition, marks)

    def discard(self) -> None:
        """Drop what a failed batch queued (it is read again from the markers)."""
        self.checkpoint.discard()
        self.router.discarded()
        if self.order is not None:
            self.order.drop()

    async def process_batch(self, records: Sequence[Record]) -> None:
        """Apply a batch of the input topic (partitions mixed, each in offset order)."""
        groups = by_partition(records)
        if groups:
            await self.process(groups)

    @property
    def isolates_failures(self) -> bool:
        """Whether a record that makes processing fail is isolated and quarantined.

        Not in timestamp order: there a batch releases records held back from earlier
        batches, so the records of a failed batch are not the ones that failed, and a
        retry of the batch alone would forget the held ones. A failed batch is then read
        again from the stored state instead (each time), and its partition shows as
        stalled (``degraded``) until the cause is fixed."""
        return self.order is None

    async def quarantine(self, record: Record, error: BaseException) -> None:
        """Dead-letter ``record``, which makes processing fail on its own, with reason
        ``processing_failed`` where it is applied (a record this partition does not own
        is forwarded as usual), and commit its marker."""
        await self.process({record.partition: [record]}, poison=error)

    async def _route(
        self, partition: int, records: list[Record], floors: _Floors
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
            if self.order is not None:
                mine = self._in_order(self.order, partition, mine, floors)
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
            if self.order is not None:
                self.order.stage(partition)
        await self.checkpoint.commit()
        self.router.committed()
        forwarded = self.router.take_forwarded()
        if forwarded:
            metrics.records_routed.labels(topic=topic).inc(forwarded)
        if batch:
            metrics.batch_size.labels(topic=topic).observe(len(batch))
        read = [r for records in completed.values() for r in records if r.topic == self.input_name]
        observe_processed(metrics, topic, batch, read)

    def _in_order(
        self, order: ApplyOrder, partition: int, records: list[Record], floors: _Floors
    ) -> list[Record]:
        """Hold ``records`` back, and return those that can be applied in timestamp order
        now (see :mod:`~supplyflow.agents.runtime.ordering`)."""
        for lane, offset in order.floors(partition).items():
            floors[(lane, partition)] = offset
        order.hold(partition, records)
        read_up_to = self.router.announced(partition)
        own = self.reader.read_up_to_ms(self.input_name, partition)
        if own is not None:
            read_up_to[partition] = own
        released = order.release(partition, read_up_to)
        late = order.take_late(partition)
        if late and partition not in self._warned_late:
            self._warned_late.add(partition)
            log.warning(
                "%s[%d]: %d records reached Kafka later than SUPPLYFLOW_APPLY_LATENESS "
                "allows after their timestamp, and were applied when read, after records "
                "with later timestamps; raise it if producers deliver that late",
                self.input_name,
                partition,
                late,
            )
        return released

    async def tick(self, partition: int, owned: frozenset[int]) -> None:
        """Deadlines due in ``partition`` (transitions first, then the states), and the
        announcement of how far its input partition has been read. In timestamp order,
        first the held records that can be applied now."""
        own = self.reader.read_up_to_ms(self.input_name, partition)
        read_up_to = self.router.read_up_to(partition, own)
        if self.order is not None:
            try:
                await self.process({partition: []})
            except Exception:
                self.discard()  # read again from the stored state, as after a failed batch
                self.reader.reset()
                raise
            read_up_to = self.order.applied_up_to(partition, read_up_to)
        if self._on_tick is not None:
            await self._on_tick(partition, owned, read_up_to)
        if own is not None:
            self.router.announce(partition, own)
        await self.checkpoint.commit()
        if self.order is None:
            await purge_applied(self.purge, self.markers, self.reader.active)
        elif self.purge.due():  # not the routed records held back, unapplied
            order, routed = self.order, self.routed_name
            await self.purge.run(
                (p, _lowest(self.markers.last(routed, p), order.held_from(p, routed)))
                for p in sorted(self.reader.active)
            )


def _lowest(marker: int | None, held_from: int | None) -> int | None:
    return marker if held_from is None or marker is None else min(marker, held_from)


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
        quarantine=agent.quarantine if agent.isolates_failures else None,
    )
