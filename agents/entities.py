"""The PO and order actors: per-entity state in RocksDB tables, deltas and exceptions out.

Each batch is applied per partition. Its position deltas go to the internal
``<app_id>-position-deltas`` topic (one record per target partition, holding every
position key of it) and its exception transitions to ``exceptions``, both queued in the
agent's :class:`~supplyflow.agents.runtime.checkpoint.Checkpoint`, where the new states
are staged too. The checkpoint's commit sends the outputs and only then the states, so a
crash in between replays into the same outputs, which positions and the exception
emitter skip.

Deadlines fire on ticks: a timer on every worker sends a tick to each partition of the
ticks topic it owns, and the actor consuming that partition pops the due entries of its
:class:`DeadlineIndex` and opens the exceptions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from supplyflow.agents.exceptions_out import ExceptionEmitter
from supplyflow.agents.ingest import Accepted
from supplyflow.agents.metrics import Metrics
from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.deadlines import DeadlineIndex
from supplyflow.agents.runtime.keys import partition_for
from supplyflow.agents.runtime.records import by_partition
from supplyflow.agents.runtime.table_io import encode
from supplyflow.codecs import DecodeError
from supplyflow.tables.batch import apply_entity_batch
from supplyflow.tables.common import Rejection
from supplyflow.tables.exceptions import Rules, Transition

__all__ = ["DELTAS_CHUNK_BYTES", "EntityActor", "EntityKind", "deltas_records", "wall_clock_ms"]

_MS: Final = 1000

#: The largest deltas record the PO and order actors send, packed. The deltas topic takes
#: Kafka's default ``max.message.bytes`` (1 MiB), and one event can change thousands of
#: positions (a 10,000-line PO with long codes: about 2 MB of deltas in one partition), a
#: batch more: a batch's deltas for one partition are split into records of at most this
#: size (the outbox's record batches are 512 KiB too). A position's items stay in one
#: record unless they alone exceed it (more than about 5,000 events of one batch on one
#: position); either way they go in offset order, so the watermarks positions skip replays
#: by stay exact (see :func:`deltas_records`).
DELTAS_CHUNK_BYTES: Final = 512 * 1024
#: What a record's list header and each entry's list header can add when packed.
_LIST_HEADER_BYTES: Final = 5


def deltas_records(
    source: str, entries: list[list[Any]], limit: int = DELTAS_CHUNK_BYTES
) -> list[bytes]:
    """The packed deltas records ``[source, entries]`` for ``entries`` (``[position key,
    delta items]``, each key once, items in offset order), each at most ``limit`` bytes.

    Usually one record. Split, the records keep the entries' order and a key's items in
    one record where they fit: a position applies an item only above its watermark for
    ``source``, so records of one partition applied in order (and a replay that sends
    them all again) give each item exactly once, wherever a kill falls between them.
    """
    whole = encode([source, entries])
    if len(whole) <= limit:
        return [whole]
    room = limit - len(encode([source, []])) - _LIST_HEADER_BYTES
    records: list[bytes] = []
    chunk: list[list[Any]] = []
    size = 0

    def close() -> None:
        nonlocal chunk, size
        if chunk:
            records.append(encode([source, chunk]))
        chunk, size = [], 0

    for key, items in entries:
        entry_size = len(encode([key, items]))
        if entry_size > room:  # one position's items alone: split them, in order
            close()
            head = len(encode(key)) + 2 * _LIST_HEADER_BYTES
            piece: list[Any] = []
            piece_size = head
            for item in items:
                item_size = len(encode(item))
                if piece and piece_size + item_size > room:
                    records.append(encode([source, [[key, piece]]]))
                    piece, piece_size = [], head
                piece.append(item)
                piece_size += item_size
            records.append(encode([source, [[key, piece]]]))
            continue
        if size + entry_size > room:
            close()
        chunk.append([key, items])
        size += entry_size
    close()
    return records


def wall_clock_ms() -> int:
    """Now, in epoch milliseconds."""
    return int(time.time() * _MS)


@dataclass(frozen=True)
class EntityKind:
    """How to handle one kind of entity (``po`` or ``order``): the pure functions of its
    table module, in the shape of a stateful operator with timers (Bytewax's
    ``StatefulLogic``: ``on_item``, ``notify_at``, ``on_notify``, ``snapshot``).

    The state itself answers ``notify_at`` (``next_due()``: its earliest pending deadline,
    which the :class:`DeadlineIndex` keeps per partition) and ``snapshot``
    (``to_wire()``, versioned: see ``supplyflow.codecs.state``).
    """

    name: str
    #: on_item: (state or None, event, rules=...) -> (new state, outcome)
    apply: Callable[..., tuple[Any, Any]]
    #: on_notify: (state, time up to which input is read, rules) -> transitions
    fire: Callable[[Any, int, Rules], list[Transition]]
    #: restore a snapshot of any format version this release reads
    from_wire: Callable[[Any], Any]


class EntityActor:
    """Applies batches of one entity kind and fires its deadlines."""

    def __init__(
        self,
        *,
        kind: EntityKind,
        checkpoint: Checkpoint,
        deltas_topic: str,
        emitter: ExceptionEmitter,
        rules: Rules,
        partitions: int,
        metrics: Metrics,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.metrics = metrics
        self.kind = kind
        self.checkpoint = checkpoint
        self.io = checkpoint.io
        self.table = checkpoint.io.table
        self.outbox = checkpoint.outbox
        self.deltas_topic = deltas_topic
        self.emitter = emitter
        self.rules = rules
        self.partitions = partitions
        self.clock = clock
        self.index = DeadlineIndex(partitions, self._wire_next_due)

    def _wire_next_due(self, wire: list[Any]) -> int | None:
        due: int | None = self.kind.from_wire(wire).next_due()
        return due

    def loader(self, partition: int) -> Callable[[str], Any]:
        """Reads the states of ``partition`` (staged writes included)."""

        def load(key: str) -> Any:
            wire = self.io.get(partition, key)
            return None if wire is None else self.kind.from_wire(wire)

        return load

    async def __call__(self, accepted: Sequence[Accepted]) -> list[str | DecodeError]:
        """Apply, queue the outputs and stage the states; the agent commits."""
        results: dict[int, str | DecodeError] = {}
        apply = partial(self.kind.apply, rules=self.rules)
        for partition, items in by_partition(accepted).items():
            batch = apply_entity_batch(
                [(i.event.data.entity_key, i.event, i.offset, i.record.stream) for i in items],
                self.loader(partition),
                apply,
            )
            self._send_deltas(partition, batch.deltas)
            await self.emitter.send(partition, batch.transitions, self.outbox)
            self._write(partition, batch.states, batch.packed)
            for system, seconds in batch.sync:
                self.metrics.po_sync.labels(system=system).observe(seconds)
            for item, result in zip(items, batch.results, strict=True):
                results[id(item)] = (
                    DecodeError(result.reason, result.detail, item.event.event_id)
                    if isinstance(result, Rejection)
                    else result
                )
        return [results[id(item)] for item in accepted]

    def _send_deltas(self, partition: int, deltas: dict[str, dict[str, list[list[int]]]]) -> None:
        """One deltas record per target partition and input stream. The source names the
        stream (``po:3``, or ``po:3/r`` for records routed to partition 3): positions keep a
        watermark per source, and each stream's offsets only grow."""
        for stream, by_key in deltas.items():
            source = f"{self.kind.name}:{partition}" + (f"/{stream}" if stream else "")
            by_target: dict[int, list[list[Any]]] = {}
            for pk, delta_items in by_key.items():
                target = partition_for(pk, self.partitions)
                by_target.setdefault(target, []).append([pk, delta_items])
            for target, entries in by_target.items():
                for record in deltas_records(source, entries):
                    self.outbox.add(self.deltas_topic, target, None, record)

    def _write(
        self, partition: int, states: dict[str, Any], packed: dict[str, bytes] | None = None
    ) -> None:
        """Stage ``states`` (``packed``: each one's stored form, packed, if known)."""
        for key, state in states.items():
            raw = packed.get(key) if packed else None
            if raw is None:
                self.io.put(partition, key, state.to_wire())
            else:
                self.io.put_packed(partition, key, raw)
            due = state.next_due()
            if due is not None:
                self.index.push(partition, key, due)

    async def tick(self, partition: int, owned: frozenset[int], read_up_to: int | None) -> None:
        """Fire every deadline of ``partition`` whose due time plus grace is before both
        the wall clock and ``read_up_to``: the time up to which every input partition has
        been read for it (None: not known yet, nothing fires), so that no on-time answer
        can still be unread.

        Queues the transitions and stages the states, like a batch (the agent commits).
        """
        self.index.ensure(owned, self.table.items)
        if read_up_to is None:
            return
        now_ms = min(self.clock(), read_up_to)
        keys = self.index.pop_due(partition, now_ms - self.rules.grace_ms)
        if not keys:
            return
        load = self.loader(partition)
        states: dict[str, Any] = {}
        transitions: list[Transition] = []
        for key in keys:
            state = load(key)
            if state is None:
                continue
            pending = len(state.deadlines)
            fired = self.kind.fire(state, now_ms, self.rules)
            transitions.extend(fired)
            if fired or len(state.deadlines) != pending:
                states[key] = state
            else:
                due = state.next_due()
                if due is not None:  # not due yet (a newer deadline replaced it)
                    self.index.push(partition, key, due)
        await self.emitter.send(partition, transitions, self.outbox)
        self._write(partition, states)
