"""The checkpoint makes a batch durable in one order: outputs, changelog, RocksDB."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder

from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.exceptions import StateWriteError
from supplyflow.agents.runtime.outbox import Outbox
from supplyflow.agents.runtime.progress import ProgressMarkers, marker_key
from supplyflow.agents.runtime.table_io import Staged, TableIO, encode
from supplyflow.agents.state import state_table
from supplyflow.codecs import register_codecs

OUTPUTS = "t.exceptions"


@dataclass
class Metadata:
    offset: int


class LoggingProducer:
    """aiokafka's batch API; logs each send and each acknowledgement, in order. A send
    to ``fail`` is refused, as a broker that is gone."""

    def __init__(self, log: list[str], fail: str | None = None) -> None:
        self.log = log
        self.fail = fail

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16384, 0, is_transactional=0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        if topic == self.fail:
            raise ConnectionError(f"{topic} is unreachable")
        self.log.append(f"send {topic}[{partition}]")
        future = asyncio.get_running_loop().create_future()

        def acknowledge() -> None:
            self.log.append(f"ack {topic}[{partition}]")
            future.set_result(Metadata(0))

        asyncio.get_running_loop().call_soon(acknowledge)
        return future


class FakeApp:
    def __init__(self, producer: LoggingProducer) -> None:
        self.producer = type("P", (), {"_ensure_producer": lambda _self: producer})()


class LoggingTableIO(TableIO):
    def __init__(self, app: Any, table: Any, log: list[str]) -> None:
        super().__init__(app, table)
        self.log = log

    def write_store(self, staged: Staged, offsets: Any) -> None:
        self.log.append(f"store {sorted(staged)}")
        super().write_store(staged, offsets)


@pytest.fixture
def table(tmp_path: Path) -> Any:
    register_codecs()
    app = faust.App(
        "ckpt-test", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path)
    )
    return state_table(app, "po", partitions=4, help="test")


def _checkpoint(table: Any, log: list[str], fail: str | None = None) -> Checkpoint:
    app = FakeApp(LoggingProducer(log, fail))
    io = LoggingTableIO(app, table, log)
    return Checkpoint(Outbox(app), io, ProgressMarkers(io, {}))


def _batch(checkpoint: Checkpoint) -> None:
    """What an agent's batch leaves: outputs queued, a state and a marker staged."""
    checkpoint.outbox.add(OUTPUTS, 1, b"PO-1", b"{}")
    checkpoint.outbox.add(OUTPUTS, 3, b"PO-3", b"{}")
    checkpoint.io.put(1, "PO-1", [1])
    checkpoint.markers.record("t.po.events", 1, 41)


async def test_outputs_are_acknowledged_before_the_changelog_and_rocksdb_come_last(
    table: Any,
) -> None:
    log: list[str] = []
    checkpoint = _checkpoint(table, log)
    _batch(checkpoint)
    await checkpoint.commit()
    changelog = table.changelog_topic.get_topic_name()
    assert log == [
        f"send {OUTPUTS}[1]",
        f"send {OUTPUTS}[3]",
        f"ack {OUTPUTS}[1]",
        f"ack {OUTPUTS}[3]",
        f"send {changelog}[1]",  # the state and the marker: one record batch
        f"ack {changelog}[1]",
        "store [1]",
    ]
    assert checkpoint.io.get(1, "PO-1") == [1]
    assert checkpoint.markers.last("t.po.events", 1) == 41
    assert checkpoint.outputs_acknowledged_at > 0


async def test_outputs_kafka_refused_leave_changelog_and_store_untouched(table: Any) -> None:
    log: list[str] = []
    checkpoint = _checkpoint(table, log, fail=OUTPUTS)
    _batch(checkpoint)
    with pytest.raises(ConnectionError):
        await checkpoint.commit()
    assert log == []
    checkpoint.discard()  # what the reader does before it reads the batch again
    assert checkpoint.io.get(1, "PO-1") is None
    assert checkpoint.io.get(1, marker_key("t.po.events")) is None


async def test_a_changelog_kafka_refused_leaves_the_store_untouched(table: Any) -> None:
    log: list[str] = []
    checkpoint = _checkpoint(table, log, fail=table.changelog_topic.get_topic_name())
    _batch(checkpoint)
    with pytest.raises(StateWriteError) as caught:  # (after the outputs: never quarantined)
        await checkpoint.commit()
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert [line.split()[0] for line in log] == ["send", "send", "ack", "ack"]
    assert checkpoint.io.get(1, "PO-1") is None
    assert table.data._db_for_partition(1).get(encode("PO-1")) is None


async def test_a_batch_without_states_sends_its_outputs_only(table: Any) -> None:
    log: list[str] = []
    checkpoint = _checkpoint(table, log)
    checkpoint.outbox.add(OUTPUTS, 0, None, b"x")
    await checkpoint.commit()
    assert log == [f"send {OUTPUTS}[0]", f"ack {OUTPUTS}[0]"]


async def test_a_record_s_callback_runs_once_kafka_acknowledged_it_never_if_refused(
    table: Any,
) -> None:
    log: list[str] = []
    outbox = Outbox(FakeApp(LoggingProducer(log, fail="t.dlq")))
    acked: list[str] = []
    outbox.add(OUTPUTS, 1, b"PO-1", b"{}", on_acked=lambda: acked.append("output"))
    outbox.add("t.dlq", 1, b"PO-1", b"{}", on_acked=lambda: acked.append("letter"))
    with pytest.raises(ConnectionError):
        await outbox.flush()
    assert acked == ["output"]  # its batch was acknowledged; the refused one's was not
    outbox.add("t.dlq", 1, b"PO-1", b"{}", on_acked=lambda: acked.append("again"))
    outbox.discard()  # a failed batch's outbox: its callbacks go too
    outbox.add(OUTPUTS, 2, b"PO-2", b"{}")
    await outbox.flush()
    assert acked == ["output"]
