"""Batched output: the records a batch causes, sent as one Kafka record batch per partition.

Faust sends every record through ``Topic.send`` (a ``FutureMessage``, a ``PendingMessage``,
the client's per-record accumulator). At the distributor profile's full scale a worker
produces about 5.5 records per input event (position changelog 2.4, positions, deltas,
entity changelogs), and py-spy put about 40% of its CPU in those layers and in the many
small produce requests they cause (``python -m bench throughput``; see "Where the time
goes" in docs/benchmarks.md).

:class:`Outbox` collects the records a batch of input causes and hands each topic
partition's records to the Kafka client as one record batch (aiokafka's
``create_batch``/``send_batch``); :meth:`Outbox.flush` returns once Kafka has acknowledged
every one. An outbox is used by one agent at a time, never shared between agents.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, Final

from aiokafka.partitioner import DefaultPartitioner

from supplyflow.agents.runtime.keys import partition_of

__all__ = ["Headers", "Outbox"]

Headers = Sequence[tuple[str, bytes]]

#: Kafka's default partitioner (murmur2 of the key; a random partition without one).
_PARTITIONER: Final = DefaultPartitioner()


@functools.cache
def _every_partition(partitions: int) -> list[int]:
    """``[0, .., partitions - 1]``, built once (the partitioner only reads it)."""
    return list(range(partitions))


#: Empty header list shared by records without headers (the client only reads it).
_NO_HEADERS: Final[list[tuple[str, bytes]]] = []


class Outbox:
    """Records to produce, per topic partition; :meth:`flush` sends each as one batch."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._pending: dict[
            tuple[str, int], list[tuple[bytes | None, bytes | None, Any, int | None]]
        ] = {}

    def __len__(self) -> int:
        return sum(len(records) for records in self._pending.values())

    def discard(self) -> None:
        """Drop what is queued (an agent starting again after a crash mid-batch)."""
        self._pending.clear()

    def add(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        *,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one record for ``topic[partition]`` (in order with the others there);
        its timestamp is ``timestamp_ms`` (default: when it is sent)."""
        records = self._pending.get((topic, partition))
        if records is None:
            records = self._pending[(topic, partition)] = []
        records.append((key, value, list(headers) if headers else _NO_HEADERS, timestamp_ms))

    def add_keyed(
        self,
        topic: str,
        partitions: int,
        key: bytes | None,
        value: bytes,
        headers: Headers | None = None,
    ) -> None:
        """Queue a record in the partition Kafka's default partitioner picks for ``key``."""
        if key is None:
            every = _every_partition(partitions)
            partition = _PARTITIONER(key, every, every)  # a random one, as Kafka's
        else:
            partition = partition_of(key, partitions)
        self.add(topic, partition, key, value, headers)

    async def flush(self) -> dict[tuple[str, int], int]:
        """Send everything queued; returns the last offset written per (topic, partition)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return {}
        producer = self.app.producer._ensure_producer()  # the aiokafka client Faust started
        sent: list[tuple[tuple[str, int], int, Any]] = []
        for (topic, partition), records in pending.items():
            batch, count = producer.create_batch(), 0
            for key, value, headers, timestamp in records:
                if batch.append(key=key, value=value, timestamp=timestamp, headers=headers) is None:
                    future = await producer.send_batch(batch, topic, partition=partition)
                    # (append closed the full batch: producer.send() cannot add to it)
                    sent.append(((topic, partition), count, future))
                    batch, count = producer.create_batch(), 0
                    # A record larger than a batch still fits into an empty one.
                    batch.append(key=key, value=value, timestamp=timestamp, headers=headers)
                count += 1
            batch.close()  # an open batch would take records of producer.send() as well
            future = await producer.send_batch(batch, topic, partition=partition)
            sent.append(((topic, partition), count, future))
        results = await asyncio.gather(*(future for _, _, future in sent))
        last: dict[tuple[str, int], int] = {}
        for (tp, count, _), metadata in zip(sent, results, strict=True):
            if metadata is not None:  # None: the producer does not wait for acks
                last[tp] = max(last.get(tp, -1), metadata.offset + count - 1)
        return last
