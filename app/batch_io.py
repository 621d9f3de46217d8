"""Batched output and table access: one Kafka record batch per partition, not per record.

Faust sends every record through ``Topic.send`` (a ``FutureMessage``, a ``PendingMessage``,
the client's per-record accumulator) and every table write through ``on_key_set``, a
changelog ``send_soon`` through its producer buffer, and an offset write to RocksDB on each
delivery callback. At the distributor profile's full scale a worker produces about 5.5
records per input event (position changelog 2.4, positions, deltas, entity changelogs),
and py-spy put about 40% of its CPU in those layers and in the many small produce
requests they cause (``python -m bench throughput``; see "Where the time goes" in
docs/benchmarks.md).

* :class:`Outbox` collects the records a batch of input causes and hands each topic
  partition's records to the Kafka client as one record batch (aiokafka's
  ``create_batch``/``send_batch``); :meth:`Outbox.flush` returns once Kafka has
  acknowledged every one.
* :class:`TableIO` reads a Faust table's RocksDB partition databases directly and stages
  writes; :meth:`TableIO.commit` sends the staged values to the table's changelog (one
  batch per partition, so a partition's states and progress marker land in Kafka
  together), waits for Kafka, then writes RocksDB and records the changelog offset the way
  Faust does (``set_persisted_offset``), so recovery and standbys work unchanged. Keys and
  values are the bytes Faust's own path writes (the table's ``msgpack`` codec).

Both are used by one agent at a time (agent concurrency is 1), never shared between
agents. Faust keeps doing everything else: consuming, offset commits (which follow the
agent's batches, and the agent awaits both flushes inside its batch), recovery, standbys.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, Final

from aiokafka.partitioner import DefaultPartitioner
from faust.streams import current_event
from faust.types import TP
from rocksdict import WriteBatch

from supplyflow.app.keys import partition_of
from supplyflow.codecs.packing import pack, unpack

__all__ = ["Outbox", "ScopedTable", "TableIO", "encode"]

Headers = Sequence[tuple[str, bytes]]


def encode(obj: Any) -> bytes:
    """A table key or value as Faust's ``msgpack`` codec writes it."""
    return pack(obj)


def _decode(raw: bytes) -> Any:
    return unpack(raw)


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
        self._pending: dict[tuple[str, int], list[tuple[bytes | None, bytes | None, Any]]] = {}

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
    ) -> None:
        """Queue one record for ``topic[partition]`` (in order with the others there)."""
        records = self._pending.get((topic, partition))
        if records is None:
            records = self._pending[(topic, partition)] = []
        records.append((key, value, list(headers) if headers else _NO_HEADERS))

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
            for key, value, headers in records:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    future = await producer.send_batch(batch, topic, partition=partition)
                    # (append closed the full batch: producer.send() cannot add to it)
                    sent.append(((topic, partition), count, future))
                    batch, count = producer.create_batch(), 0
                    # A record larger than a batch still fits into an empty one.
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
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


class TableIO:
    """Direct, batched access to one Faust table's partition stores and changelog."""

    def __init__(self, app: Any, table: Any) -> None:
        self.app = app
        self.table = table
        self.changelog = table.changelog_topic.get_topic_name()
        #: partition -> encoded key -> encoded value, in write order
        self._staged: dict[int, dict[bytes, bytes]] = {}

    def _db(self, partition: int) -> Any:
        return self.table.data._db_for_partition(partition)

    def get(self, partition: int, key: str) -> Any:
        """The value of ``key`` in ``partition``, staged writes included (None: absent)."""
        encoded = encode(key)
        staged = self._staged.get(partition)
        raw = staged.get(encoded) if staged else None
        if raw is None:
            raw = self._db(partition).get(encoded)
        return None if raw is None else _decode(raw)

    def put(self, partition: int, key: str, value: Any) -> None:
        """Stage ``key = value`` in ``partition`` until :meth:`commit`."""
        staged = self._staged.get(partition)
        if staged is None:
            staged = self._staged[partition] = {}
        staged[encode(key)] = encode(value)

    def staged(self) -> int:
        return sum(len(items) for items in self._staged.values())

    def discard(self) -> None:
        """Drop the staged writes (an agent starting again after a crash mid-batch: they
        belong to a batch whose outputs were never sent, and it will be redelivered)."""
        self._staged.clear()

    def scoped(self) -> ScopedTable:
        """A ``get``/``[]=`` view that follows the current event's partition, like Faust's."""
        return ScopedTable(self)

    async def commit(self) -> None:
        """Changelog first (acknowledged), then RocksDB and the persisted changelog offset."""
        staged, self._staged = self._staged, {}
        if not staged:
            return
        outbox = Outbox(self.app)
        for partition, items in staged.items():
            for key, value in items.items():
                outbox.add(self.changelog, partition, key, value)
        offsets = await outbox.flush()
        store = self.table.data
        for partition, items in staged.items():
            # One write per partition: a write batch takes a fifth of the time of a put
            # per key (which appends to RocksDB's write-ahead log each time).
            batch = WriteBatch(raw_mode=True)
            for key, value in items.items():
                batch.put(key, value)
            self._db(partition).write(batch)
            offset = offsets.get((self.changelog, partition))
            if offset is not None:
                store.set_persisted_offset(TP(self.changelog, partition), offset)


class ScopedTable:
    """The part of a table's mapping interface the progress markers use, via TableIO."""

    def __init__(self, io: TableIO) -> None:
        self.io = io

    @staticmethod
    def _partition() -> int:
        event = current_event()
        if event is None:
            raise RuntimeError("table access outside a partition scope (see partition_scope)")
        partition: int = event.message.partition
        return partition

    def get(self, key: str) -> Any:
        return self.io.get(self._partition(), key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.io.put(self._partition(), key, value)
