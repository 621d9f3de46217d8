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

A record can carry an ``on_acked`` callback, run by :meth:`Outbox.flush` once Kafka has
acknowledged the record batch that holds it, and never if it was refused: what must count
as written only when it is in Kafka (a dead letter, see ``agents.dead_letters.DeadLetters``)
learns it there, not when it is queued.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiokafka.partitioner import DefaultPartitioner

from supplyflow.agents.runtime.keys import partition_of

__all__ = ["Acked", "Headers", "Outbox"]

Headers = Sequence[tuple[str, bytes]]
#: Called once Kafka acknowledged the record it was queued with.
Acked = Callable[[], None]

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
        #: (topic, partition) -> (index of the record there, its callback), in order
        self._on_acked: dict[tuple[str, int], list[tuple[int, Acked]]] = {}

    def __len__(self) -> int:
        return sum(len(records) for records in self._pending.values())

    def discard(self) -> None:
        """Drop what is queued (an agent starting again after a crash mid-batch)."""
        self._pending.clear()
        self._on_acked.clear()

    def add(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        *,
        timestamp_ms: int | None = None,
        on_acked: Acked | None = None,
    ) -> None:
        """Queue one record for ``topic[partition]`` (in order with the others there);
        its timestamp is ``timestamp_ms`` (default: when it is sent). ``on_acked`` is
        called once Kafka acknowledged it (see :meth:`flush`)."""
        records = self._pending.get((topic, partition))
        if records is None:
            records = self._pending[(topic, partition)] = []
        if on_acked is not None:
            self._on_acked.setdefault((topic, partition), []).append((len(records), on_acked))
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
        """Send everything queued; returns the last offset written per (topic, partition).

        Each record's ``on_acked`` runs once the record batch holding it is acknowledged.
        If Kafka refuses a batch (or a send fails), the batches it did acknowledge still
        run theirs, and the first error is raised: the caller's batch failed.
        """
        pending, self._pending = self._pending, {}
        on_acked, self._on_acked = self._on_acked, {}
        if not pending:
            return {}
        producer = self.app.producer._ensure_producer()  # the aiokafka client Faust started
        #: (topic, partition), index of its first record, records, the batch's future
        sent: list[tuple[tuple[str, int], int, int, Any]] = []
        failure: BaseException | None = None
        try:
            for tp, records in pending.items():
                topic, partition = tp
                batch, first, count = producer.create_batch(), 0, 0
                for key, value, headers, timestamp in records:
                    if (
                        batch.append(key=key, value=value, timestamp=timestamp, headers=headers)
                        is None
                    ):
                        future = await producer.send_batch(batch, topic, partition=partition)
                        # (append closed the full batch: producer.send() cannot add to it)
                        sent.append((tp, first, count, future))
                        batch, first, count = producer.create_batch(), first + count, 0
                        # A record larger than a batch still fits into an empty one.
                        batch.append(key=key, value=value, timestamp=timestamp, headers=headers)
                    count += 1
                batch.close()  # an open batch would take records of producer.send() as well
                future = await producer.send_batch(batch, topic, partition=partition)
                sent.append((tp, first, count, future))
        except Exception as exc:  # noqa: BLE001  # re-raised below, after the acked callbacks
            failure = exc
        results = await asyncio.gather(*(f for *_, f in sent), return_exceptions=True)
        last: dict[tuple[str, int], int] = {}
        for (tp, first, count, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            for index, callback in on_acked.get(tp, ()):
                if first <= index < first + count:
                    callback()
            if result is not None:  # None: the producer does not wait for acks
                last[tp] = max(last.get(tp, -1), result.offset + count - 1)
        if failure is not None:
            raise failure
        return last
