"""The position actor: inventory events and PO/order deltas in, positions out.

It consumes ``inventory.events`` (keyed ``SKU@LOCATION``) and the internal deltas topic
(same keys, same partition count), so partition *p* of both belongs to the worker that
owns the positions of partition *p*. After each batch it emits every changed position to
``inventory.positions`` (one record batch per partition) and commits its
:class:`~supplyflow.agents.runtime.checkpoint.Checkpoint`, which waits for Kafka to take
them before it writes the states: a crash in between replays into the same outputs
rather than losing one.

Both topics are read in batches by an :class:`~supplyflow.agents.runtime.reader.InputReader`.
(Earlier versions appended a heartbeat to each deltas partition twice a second: a record
from no source with no deltas, which applies nothing.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import orjson

from supplyflow.agents.dead_letters import DeadLetters, SentLetters, replayed
from supplyflow.agents.exceptions_out import ExceptionEmitter
from supplyflow.agents.ingest import (
    complete_from_markers,
    decode_batch,
    inject_fault,
    observe_processed,
    purge_applied,
    quarantined,
    rejected_from,
)
from supplyflow.agents.metrics import Metrics, observe_all
from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.config import RuntimeConfig
from supplyflow.agents.runtime.driver import ReaderAgent
from supplyflow.agents.runtime.progress import merge_completed
from supplyflow.agents.runtime.reader import InputReader
from supplyflow.agents.runtime.records import Record, by_partition
from supplyflow.agents.runtime.routing import ROUTED, Purge, Router
from supplyflow.agents.runtime.table_io import TableIO
from supplyflow.agents.topics import INVENTORY_EVENTS, POSITIONS
from supplyflow.codecs import DecodeError
from supplyflow.codecs.events import InventoryAdjusted, InventorySnapshot
from supplyflow.codecs.packing import unpack
from supplyflow.tables.common import Rejection, epoch_ms
from supplyflow.tables.exceptions import Transition
from supplyflow.tables.position import (
    INVENTORY_SOURCE,
    PositionState,
    WrittenLookup,
    adopt_overallocation,
    apply_deltas,
    apply_inventory_event_bounded,
    check_overallocation,
    position_record,
    record_time,
)

__all__ = ["PositionActor", "register_position_agent"]

#: The inventory events a position applies (a tuple: ``A | B`` builds a union per use).
_POSITION_EVENTS: Final = (InventoryAdjusted, InventorySnapshot)
#: The metrics label and dead-letter name of the internal deltas topic.
DELTAS: Final = "position-deltas"


class PositionActor:
    """Applies one batch (mixed partitions, both topics) to the position table."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        checkpoint: Checkpoint,
        metrics: Metrics,
        dead_letters: DeadLetters,
        emitter: ExceptionEmitter,
        delta_letters: DeadLetters | None = None,
    ) -> None:
        self.emitter = emitter
        self.checkpoint = checkpoint
        self.markers = checkpoint.markers
        self.deltas_topic = config.deltas_topic
        self.inventory_topic = config.topic(INVENTORY_EVENTS)
        self.routed_topic = config.routed_topic(INVENTORY_EVENTS)
        self.topics = (self.inventory_topic, self.routed_topic, self.deltas_topic)
        self.router = Router(
            topic=self.inventory_topic,
            routed=self.routed_topic,
            partitions=config.partitions,
            markers=checkpoint.markers,
            outbox=checkpoint.outbox,
        )
        self.purge = Purge(config.kafka, self.routed_topic)
        self.positions = config.topic(POSITIONS)
        self.io = checkpoint.io
        self.outbox = checkpoint.outbox
        self.metrics = metrics
        self.dead_letters = dead_letters
        #: dead-letters a deltas record that makes processing fail (none: not at all)
        self.delta_letters = delta_letters
        self.fail_on = config.fail_on_event_id
        #: set while a record that fails alone is dead-lettered (:meth:`quarantine`)
        self._poison: BaseException | None = None
        self.max_bytes = config.max_record_bytes
        self.partitions = config.partitions
        #: occurred_at (ms) of every change applied in the current batch
        self._occurred: list[int] = []

    async def process(self, batch: Sequence[Record]) -> None:
        """Apply ``batch``, emit what changed, then commit the states and markers."""
        for partition, records in by_partition(batch).items():
            await self._process(partition, records)
        try:
            await self.checkpoint.commit()
        finally:
            occurred, self._occurred = self._occurred, []
        self.router.committed()
        forwarded = self.router.take_forwarded()
        if forwarded:
            self.metrics.records_routed.labels(topic=INVENTORY_EVENTS).inc(forwarded)
        emitted = self.checkpoint.outputs_acknowledged_at * 1000
        observe_all(
            self.metrics.event_to_position,
            [max(0.0, (emitted - occurred_ms) / 1000) for occurred_ms in occurred],
        )

    async def _process(self, partition: int, records: list[Record]) -> None:
        marks = {topic: self.markers.last(topic, partition) for topic in self.topics}
        completed = await self._complete(partition, records)
        await self._process_partition(partition, completed, marks)
        for topic in self.topics:
            self.markers.record_all(topic, partition, [r for r in completed if r.topic == topic])

    async def quarantine(self, record: Record, error: BaseException) -> None:
        """Dead-letter ``record``, which makes processing fail on its own, with reason
        ``processing_failed`` (an inventory event this partition does not own is
        forwarded as usual), and commit its marker."""
        self._poison = error
        try:
            await self.process([record])
        finally:
            self._poison = None

    async def _dead_letter(
        self, partition: int, records: list[Record], floors: dict[tuple[str, int], int | None]
    ) -> None:
        """Dead-letter ``records`` (routed already) for :attr:`_poison`."""
        error = self._poison
        if error is None:
            return
        inventory = [quarantined(r, error) for r in records if r.topic != self.deltas_topic]
        deltas = [quarantined(r, error) for r in records if r.topic == self.deltas_topic]
        await self.dead_letters.add(self.outbox, inventory, floors)
        fresh = [r for r in inventory if not replayed(r.stream, r.partition, r.offset, floors)]
        self.metrics.records_quarantined.labels(topic=INVENTORY_EVENTS).inc(len(fresh))
        if deltas and self.delta_letters is not None:
            deltas_floor = {("", partition): self.markers.last(self.deltas_topic, partition)}
            await self.delta_letters.add(self.outbox, deltas, deltas_floor)
            fresh = [r for r in deltas if not replayed("", partition, r.offset, deltas_floor)]
            self.metrics.records_quarantined.labels(topic=DELTAS).inc(len(fresh))

    def markers_of(self, partition: int) -> dict[str, int | None]:
        """Every topic's marker in ``partition``."""
        return {topic: self.markers.last(topic, partition) for topic in self.topics}

    def discard(self) -> None:
        """Drop what a failed batch queued (it is read again from the markers)."""
        self.checkpoint.discard()
        self.router.discarded()

    async def _complete(self, partition: int, events: list[Record]) -> list[Record]:
        """Every topic's events of one partition: each once, skipped ones fetched.

        Each topic's records stay in offset order (watermarks skip anything at or below
        the highest offset applied, so a fetched record must never overtake an earlier
        live one); the topics stay interleaved as they arrived.
        """
        return await merge_completed(
            events, self.topics, partial(complete_from_markers, self.markers, partition)
        )

    async def _process_partition(
        self, partition: int, records: list[Record], marks: dict[str, int | None]
    ) -> None:
        work = _PartitionBatch(self.io, partition, record_time(datetime.now(UTC)))
        floors = {  # the markers before the batch: replays are at or below them
            ("", partition): marks[self.inventory_topic],
            (ROUTED, partition): marks[self.routed_topic],
        }
        records = self.router.route(partition, records, marks)
        if self._poison is not None:
            await self._dead_letter(partition, records, floors)
            return
        inventory = [r for r in records if r.topic != self.deltas_topic]
        accepted, rejected = decode_batch(INVENTORY_EVENTS, inventory, max_bytes=self.max_bytes)
        inject_fault(accepted, self.fail_on)
        decoded = {id(a.record): a for a in accepted}
        tally: Counter[tuple[str, str]] = Counter()
        for msg in records:
            if msg.topic == self.deltas_topic:
                if msg.value is not None:  # (a deltas record always has one)
                    work.deltas(unpack(msg.value))
                continue
            item = decoded.get(id(msg))
            if item is not None and isinstance(item.event, _POSITION_EVENTS):
                stream = msg.stream
                source = INVENTORY_SOURCE + (f"/{stream}" if stream else "")
                outcome = work.inventory(item.event, item.offset, source)
                if isinstance(outcome, Rejection):
                    error = DecodeError(outcome.reason, outcome.detail, item.event.event_id)
                    rejected.append(rejected_from(item, error))
                elif not replayed(stream, partition, item.offset, floors):
                    tally[(item.event.type, outcome)] += 1
        self.metrics.count_events(INVENTORY_EVENTS, tally)
        work.check_overallocation(await self.emitter.written(partition))
        await self.dead_letters.add(self.outbox, rejected, floors)
        await self.emitter.send(partition, work.transitions, self.outbox)
        for key in work.changed:
            state = work.cache[key]
            state.updated_at = work.now
            record = position_record(state, work.now)
            self.outbox.add_keyed(
                self.positions, self.partitions, key.encode(), orjson.dumps(record)
            )
        self._occurred.extend(work.occurred)
        for key in work.dirty:
            self.io.put(partition, key, work.cache[key].to_wire())
        read = [r for r in records if r.topic == self.inventory_topic]
        observe_processed(self.metrics, INVENTORY_EVENTS, inventory, read)


class _PartitionBatch:
    """The positions one partition's batch touches, and what changed."""

    def __init__(self, io: TableIO, partition: int, now: str) -> None:
        self.io = io
        self.partition = partition
        self.now = now
        self.cache: dict[str, PositionState] = {}
        self.changed: set[str] = set()  # totals changed: emit the position
        self.dirty: set[str] = set()  # state changed (watermarks, ids): write it
        self.occurred: list[int] = []  # occurred_at (ms) of every change applied
        self.transitions: list[Transition] = []

    def load(self, key: str) -> PositionState:
        state = self.cache.get(key)
        if state is None:
            wire = self.io.get(self.partition, key)
            state = PositionState.new(key) if wire is None else PositionState.from_wire(wire)
            self.cache[key] = state
        return state

    def inventory(
        self, event: InventoryAdjusted | InventorySnapshot, offset: int, source: str
    ) -> str | Rejection:
        key = event.data.entity_key
        state = self.load(key)
        before = list(state.totals)
        state, outcome, opened = apply_inventory_event_bounded(
            state, event, offset, now=self.now, source=source
        )
        self.cache[key] = state
        if isinstance(outcome, Rejection):
            return outcome
        self.transitions.extend(opened)
        self.dirty.add(key)  # a duplicate's too: see deltas()
        if outcome == "applied" and state.totals != before:
            self.changed.add(key)
            self.occurred.append(epoch_ms(event.occurred_at))
        return outcome

    def deltas(self, record: list[Any]) -> None:
        source, entries = record
        for key, items in entries:
            applied = apply_deltas(self.load(key), source, items)
            # Written even if a replay applied nothing: the changelog may lack the state
            # the local store has (see agents.progress).
            self.dirty.add(key)
            if applied:
                self.changed.add(key)
                self.occurred.extend(applied)

    def check_overallocation(self, written: WrittenLookup) -> None:
        for key in self.changed:
            if adopt_overallocation(self.cache[key], written):
                self.dirty.add(key)
            found = check_overallocation(self.cache[key], self.now)
            if found:
                self.transitions.extend(found)
                self.dirty.add(key)


def register_position_agent(
    app: Any,
    config: RuntimeConfig,
    *,
    checkpoint: Checkpoint,
    metrics: Metrics,
    emitter: ExceptionEmitter,
    letters: SentLetters | None = None,
) -> ReaderAgent:
    """The reader agent for inventory.events and the position deltas (read in batches by
    an :class:`~supplyflow.agents.runtime.reader.InputReader`, driven by ticks)."""
    dead_letters = DeadLetters(config, INVENTORY_EVENTS, metrics, letters)
    delta_letters = DeadLetters(config, DELTAS, metrics, letters)
    delta_letters.full_name = config.deltas_topic  # internal: not a contract topic
    actor = PositionActor(
        config,
        checkpoint=checkpoint,
        metrics=metrics,
        dead_letters=dead_letters,
        emitter=emitter,
        delta_letters=delta_letters,
    )
    batch_sizes = metrics.batch_size.labels(topic="positions")

    async def handle(batch: list[Record]) -> None:
        await actor.process(batch)
        batch_sizes.observe(len(batch))

    reader = InputReader(config, actor.topics)

    async def tick(partition: int, owned: frozenset[int]) -> None:
        """Now and then, delete the routed inventory events this worker applied."""
        await purge_applied(actor.purge, actor.markers, reader.active)

    return ReaderAgent(
        app,
        reader,
        ticks_topic=config.ticks_topic,
        handle=handle,
        markers=actor.markers_of,
        on_tick=tick,
        on_error=actor.discard,
        quarantine=actor.quarantine,
    )
