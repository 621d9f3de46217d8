"""Batched output and table access: the bytes, batches and offsets Faust's own path has."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import TP

from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.keys import partition_for
from supplyflow.agents.runtime.outbox import Outbox
from supplyflow.agents.runtime.progress import ProgressMarkers
from supplyflow.agents.runtime.table_io import TableIO, encode
from supplyflow.agents.state import state_table
from supplyflow.codecs import register_codecs

STATE: list[Any] = ["PO-17", 3, {"1": [12500, 0]}, {"erp": [3, "accepted"]}, 2**62, -17, "ünï"]


@dataclass
class Metadata:
    offset: int


class FakeProducer:
    """aiokafka's batch API with real record batches; offsets count per partition."""

    def __init__(self, batch_size: int = 16384) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []
        self.ends: dict[tuple[str, int], int] = {}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0, is_transactional=0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        assert batch._closed, "an open batch would take records from producer.send() too"
        records = list(_records(batch))
        self.sent.append((topic, partition, records))
        base = self.ends.get((topic, partition), 0)
        self.ends[(topic, partition)] = base + len(records)
        future = asyncio.get_running_loop().create_future()
        future.set_result(Metadata(base))
        return future


def _records(batch: BatchBuilder) -> Any:
    from aiokafka.record.default_records import DefaultRecordBatch

    buffer = batch._build()  # what goes on the wire
    for record in DefaultRecordBatch(bytes(buffer)):
        yield record.key, record.value


class FakeApp:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = type("P", (), {"_ensure_producer": lambda _self: producer})()


@pytest.fixture
def faust_app(tmp_path: Path) -> Any:
    register_codecs()
    return faust.App(
        "batch-io-test", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path)
    )


async def _commit(io: TableIO) -> None:
    """Commit what ``io`` staged as the agents do (their checkpoint owns the order)."""
    await Checkpoint(Outbox(io.app), io, ProgressMarkers(io, {})).commit()


def test_encode_is_what_faust_writes_to_the_changelog(faust_app: Any) -> None:
    table = state_table(faust_app, "po", partitions=4, help="test")
    changelog = table.changelog_topic
    # Faust's Table.send_changelog passes the table's own serializers.
    assert encode("PO-17") == changelog.prepare_key("PO-17", table.key_serializer)[0]
    assert encode(STATE) == changelog.prepare_value(STATE, table.value_serializer)[0]


async def test_commit_writes_changelog_then_store_as_faust_reads_them(faust_app: Any) -> None:
    table = state_table(faust_app, "po", partitions=4, help="test")
    producer = FakeProducer()
    io = TableIO(FakeApp(producer), table)
    io.put(2, "PO-17", STATE)
    io.put(2, "PO-18", [1])
    io.put(3, "PO-19", [2])
    # Staged: visible to reads through TableIO, not yet in RocksDB or Kafka.
    assert io.get(2, "PO-17") == STATE
    assert table.data._db_for_partition(2).get(encode("PO-17")) is None
    assert producer.sent == []

    await _commit(io)

    changelog = table.changelog_topic.get_topic_name()
    by_partition = {p: records for topic, p, records in producer.sent if topic == changelog}
    assert sorted(by_partition) == [2, 3]
    # Recovery decodes each changelog record back to the key and value written.
    decoded = [
        (
            table._to_key(faust_app.serializers.loads_key(None, k, serializer="msgpack")),
            table._to_value(faust_app.serializers.loads_value(None, v, serializer="msgpack")),
        )
        for k, v in by_partition[2]
    ]
    assert decoded == [("PO-17", STATE), ("PO-18", [1])]
    # Faust's own read path (as the web views use it) finds the values in the stores...
    assert table["PO-17"] == STATE
    assert table["PO-19"] == [2]
    # ...and recovery would resume after the last changelog record written.
    assert table.data.persisted_offset(TP(changelog, 2)) == 1
    assert table.data.persisted_offset(TP(changelog, 3)) == 0
    assert io.staged() == 0


async def test_a_later_write_of_the_same_key_wins(faust_app: Any) -> None:
    table = state_table(faust_app, "order", partitions=2, help="test")
    producer = FakeProducer()
    io = TableIO(FakeApp(producer), table)
    io.put(0, "SO-1", [1])
    io.put(0, "SO-1", [2])
    await _commit(io)
    assert [records for _, _, records in producer.sent] == [[(encode("SO-1"), encode([2]))]]
    assert io.get(0, "SO-1") == [2]


async def test_outbox_sends_one_batch_per_partition_in_order() -> None:
    producer = FakeProducer()
    outbox = Outbox(FakeApp(producer))
    for i in range(5):
        outbox.add("t", i % 2, f"k{i}".encode(), f"v{i}".encode())
    assert len(outbox) == 5
    last = await outbox.flush()
    assert last == {("t", 0): 2, ("t", 1): 1}
    assert [(p, [k for k, _ in records]) for _, p, records in producer.sent] == [
        (0, [b"k0", b"k2", b"k4"]),
        (1, [b"k1", b"k3"]),
    ]
    assert len(outbox) == 0
    assert await outbox.flush() == {}


async def test_outbox_splits_what_does_not_fit_one_batch() -> None:
    producer = FakeProducer(batch_size=256)
    outbox = Outbox(FakeApp(producer))
    values = [bytes([i]) * 100 for i in range(7)]
    for value in values:
        outbox.add("t", 0, None, value)
    outbox.add("t", 0, None, b"x" * 1000)  # larger than a batch: sent alone
    last = await outbox.flush()
    assert len(producer.sent) > 2
    assert [v for _, _, records in producer.sent for _, v in records] == [*values, b"x" * 1000]
    assert last == {("t", 0): 7}


async def test_keyed_records_go_where_kafkas_default_partitioner_puts_them() -> None:
    producer = FakeProducer()
    outbox = Outbox(FakeApp(producer))
    keys = [f"SKU-{i}@DC{i % 3}" for i in range(50)]
    for key in keys:
        outbox.add_keyed("positions", 8, key.encode(), b"{}")
    await outbox.flush()
    placed = {k.decode(): p for _, p, records in producer.sent for k, _ in records if k}
    every = list(range(8))
    reference = DefaultPartitioner()  # aiokafka's, as its producer would place them
    assert placed == {key: reference(key.encode(), every, every) for key in keys}
    assert placed == {key: partition_for(key, 8) for key in keys}


async def test_discarded_writes_and_records_are_never_sent(faust_app: Any) -> None:
    table = state_table(faust_app, "po", partitions=2, help="test")
    producer = FakeProducer()
    io, outbox = TableIO(FakeApp(producer), table), Outbox(FakeApp(producer))
    io.put(0, "PO-1", [1])
    outbox.add("t", 0, None, b"x")
    io.discard()
    outbox.discard()
    await outbox.flush()
    await _commit(io)
    assert producer.sent == []
    assert io.get(0, "PO-1") is None
