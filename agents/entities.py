"""The PO and order actors: per-entity state in RocksDB tables, position deltas out.

Each batch is applied per partition, in the scope of that partition (Faust's stores and
changelogs follow the current event's partition). The deltas are sent to the internal
``<app_id>-position-deltas`` topic (one record per target partition per batch, holding
every position key of that partition) and acknowledged by Kafka *before* the states are
written, so a crash in between replays into the same deltas, which positions skip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgpack

from supplyflow.agents.ingest import Accepted, by_partition
from supplyflow.app.faust_patches import partition_scope
from supplyflow.app.keys import partition_for
from supplyflow.codecs import DecodeError
from supplyflow.tables.batch import apply_entity_batch
from supplyflow.tables.common import Applied, Rejection

__all__ = ["EntityActor"]

#: Prefix of a delta's source id per entity kind: ``po:3`` is po.events partition 3.
SOURCE_PREFIX: Final = {"po": "po", "order": "order"}


class EntityActor:
    """Applies batches of one entity kind (``po`` or ``order``) and emits position deltas."""

    def __init__(
        self,
        *,
        kind: str,
        table: Any,
        deltas_topic: Any,
        apply: Callable[[Any, Any, int], tuple[Any, Applied | Rejection]],
        from_wire: Callable[[list[Any]], Any],
        partitions: int,
    ) -> None:
        self.kind = kind
        self.table = table
        self.deltas_topic = deltas_topic
        self.apply = apply
        self.from_wire = from_wire
        self.partitions = partitions

    def load(self, key: str) -> Any:
        wire = self.table.get(key)
        return None if wire is None else self.from_wire(wire)

    async def __call__(self, accepted: Sequence[Accepted]) -> list[str | DecodeError]:
        results: dict[int, str | DecodeError] = {}
        for partition, items in by_partition(accepted).items():
            with partition_scope(items[-1].source):
                batch = apply_entity_batch(
                    [(i.event.data.entity_key, i.event, i.offset) for i in items],
                    self.load,
                    self.apply,
                )
                source = f"{self.kind}:{partition}"
                # One record per target partition, holding every position key of it.
                by_target: dict[int, list[list[Any]]] = {}
                for pk, delta_items in batch.deltas.items():
                    target = partition_for(pk, self.partitions)
                    by_target.setdefault(target, []).append([pk, delta_items])
                futures = [
                    await self.deltas_topic.send(
                        key=None, value=msgpack.packb([source, entries]), partition=target
                    )
                    for target, entries in by_target.items()
                ]
                if futures:
                    await asyncio.gather(*futures)
                for key, state in batch.states.items():
                    self.table[key] = state.to_wire()
            for item, result in zip(items, batch.results, strict=True):
                results[id(item)] = (
                    DecodeError(result.reason, result.detail, item.event.event_id)
                    if isinstance(result, Rejection)
                    else result
                )
        return [results[id(item)] for item in accepted]
