"""The PO and order actors: per-entity state in RocksDB tables, deltas and exceptions out.

Each batch is applied per partition, in the scope of that partition (Faust's stores and
changelogs follow the current event's partition). Its position deltas go to the internal
``<app_id>-position-deltas`` topic (one record per target partition, holding every
position key of it) and its exception transitions to ``exceptions``; both are
acknowledged by Kafka *before* the states are written, so a crash in between replays into
the same outputs, which positions and the exception emitter skip.

Deadlines fire on ticks: a timer on every worker sends a tick to each partition of the
ticks topic it owns, and the actor consuming that partition pops the due entries of its
:class:`DeadlineIndex` and opens the exceptions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import msgpack

from supplyflow.agents.deadlines import DeadlineIndex
from supplyflow.agents.exceptions_out import ExceptionEmitter
from supplyflow.agents.ingest import Accepted, by_partition
from supplyflow.app.faust_patches import partition_scope
from supplyflow.app.keys import partition_for
from supplyflow.app.metrics import Metrics
from supplyflow.codecs import DecodeError
from supplyflow.tables.batch import apply_entity_batch
from supplyflow.tables.common import Rejection, iso_ms
from supplyflow.tables.exceptions import Rules, Transition

__all__ = ["EntityActor", "EntityKind", "wall_clock_ms"]

_MS: Final = 1000


def wall_clock_ms() -> int:
    """Now, in epoch milliseconds."""
    return int(time.time() * _MS)


@dataclass(frozen=True)
class EntityKind:
    """How to handle one kind of entity (``po`` or ``order``)."""

    name: str
    apply: Callable[..., tuple[Any, Any]]
    fire: Callable[[Any, int, Rules], list[Transition]]
    from_wire: Callable[[list[Any]], Any]


class EntityActor:
    """Applies batches of one entity kind and fires its deadlines."""

    def __init__(
        self,
        *,
        kind: EntityKind,
        table: Any,
        deltas_topic: Any,
        emitter: ExceptionEmitter,
        rules: Rules,
        partitions: int,
        metrics: Metrics,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.metrics = metrics
        self.kind = kind
        self.table = table
        self.deltas_topic = deltas_topic
        self.emitter = emitter
        self.rules = rules
        self.partitions = partitions
        self.clock = clock
        self.index = DeadlineIndex(partitions, self._wire_next_due)

    def _wire_next_due(self, wire: list[Any]) -> int | None:
        due: int | None = self.kind.from_wire(wire).next_due()
        return due

    def load(self, key: str) -> Any:
        wire = self.table.get(key)
        return None if wire is None else self.kind.from_wire(wire)

    async def __call__(self, accepted: Sequence[Accepted]) -> list[str | DecodeError]:
        results: dict[int, str | DecodeError] = {}
        now = iso_ms(self.clock())
        apply = partial(self.kind.apply, rules=self.rules, now=now)
        for partition, items in by_partition(accepted).items():
            with partition_scope(items[-1].source):
                batch = apply_entity_batch(
                    [(i.event.data.entity_key, i.event, i.offset) for i in items],
                    self.load,
                    apply,
                )
                futures = await self._send_deltas(partition, batch.deltas)
                futures += await self.emitter.send(partition, batch.transitions)
                if futures:
                    await asyncio.gather(*futures)
                self._write(partition, batch.states)
            for system, seconds in batch.sync:
                self.metrics.po_sync.labels(system=system).observe(seconds)
            for item, result in zip(items, batch.results, strict=True):
                results[id(item)] = (
                    DecodeError(result.reason, result.detail, item.event.event_id)
                    if isinstance(result, Rejection)
                    else result
                )
        return [results[id(item)] for item in accepted]

    async def _send_deltas(self, partition: int, deltas: dict[str, list[list[int]]]) -> list[Any]:
        source = f"{self.kind.name}:{partition}"
        by_target: dict[int, list[list[Any]]] = {}
        for pk, delta_items in deltas.items():
            by_target.setdefault(partition_for(pk, self.partitions), []).append([pk, delta_items])
        return [
            await self.deltas_topic.send(
                key=None, value=msgpack.packb([source, entries]), partition=target
            )
            for target, entries in by_target.items()
        ]

    def _write(self, partition: int, states: dict[str, Any]) -> None:
        for key, state in states.items():
            self.table[key] = state.to_wire()
            due = state.next_due()
            if due is not None:
                self.index.push(partition, key, due)

    async def tick(self, partition: int, source: Any, owned: frozenset[int]) -> None:
        """Fire every deadline of ``partition`` that is past due (plus grace)."""
        self.index.ensure(owned, self.table.items)
        now_ms = self.clock()
        keys = self.index.pop_due(partition, now_ms - self.rules.grace_ms)
        if not keys:
            return
        with partition_scope(source):
            states: dict[str, Any] = {}
            transitions: list[Transition] = []
            for key in keys:
                state = self.load(key)
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
            futures = await self.emitter.send(partition, transitions)
            if futures:
                await asyncio.gather(*futures)
            self._write(partition, states)
