"""The PO actor behind the real input agent, killed with state the changelog never got.

Found by the SIGKILL fault test (seed 338383): a worker applied ``po.events[2]`` up to
offset 355 in its local RocksDB, the changelog held only up to 337 when it was killed,
and the restarted worker, on the same data dir, dropped the redelivered 338..355 as
replays. Its local state was complete, but the changelog (what any other worker
restores) lacked an event in three POs for good. Here the table keeps a local store and
a changelog; a crash throws away what was not yet sent, exactly as a SIGKILL does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from supplyflow.agents.entities import EntityActor
from supplyflow.agents.ingest import InputAgent
from supplyflow.agents.metrics import Metrics
from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.progress import MARKER_FORMAT, ProgressMarkers, marker_key
from supplyflow.agents.runtime.records import Record
from supplyflow.app.runtime_config import runtime_config
from supplyflow.app.settings import Settings
from supplyflow.app.topics import DLQ, PO_EVENTS
from supplyflow.app.worker import PO_KIND
from supplyflow.codecs.serializers import MsgpackCodec
from supplyflow.tables.exceptions import Rules, Transition
from supplyflow.tables.po import PoState

CODEC = MsgpackCodec()
CONFIG = runtime_config(
    Settings(bootstrap="unused:9092", topic_prefix="t.", app_id="t", partitions=4)
)
INPUT = CONFIG.topic(PO_EVENTS)
PARTITION = 2  # partition_for("PO-1", 4) and "PO-3": these tests' POs live here


class CrashTable:
    """A table as a worker sees it, behind the agents' table interface (``TableIO``): a
    local store that survives a SIGKILL, and a changelog that holds only what the producer
    had sent (``flush``) before it. (``TableIO`` itself waits for the changelog before it
    writes the local store; this is the worst case the markers must survive anyway.)"""

    def __init__(self) -> None:
        # Values stored encoded, as RocksDB and the changelog hold them.
        self.local: dict[str, bytes] = {}
        self.changelog: list[tuple[str, bytes]] = []
        self.sent = 0
        self.staged: dict[str, bytes] = {}
        self.table = None

    def value(self, key: str) -> Any:
        raw = self.staged.get(key, self.local.get(key))
        return None if raw is None else CODEC.loads(raw)

    def get(self, partition: int, key: str) -> Any:
        return self.value(key)

    def put(self, partition: int, key: str, value: Any) -> None:
        self.staged[key] = bytes(CODEC.dumps(value))

    def put_packed(self, partition: int, key: str, packed: bytes) -> None:
        self.staged[key] = packed

    def discard(self) -> None:
        self.staged.clear()

    def take_staged(self) -> dict[str, bytes]:
        staged, self.staged = self.staged, {}
        return staged

    async def send_to_changelog(self, staged: dict[str, bytes]) -> dict[int, int]:
        self.changelog.extend(staged.items())
        return {}

    def write_store(self, staged: dict[str, bytes], offsets: dict[int, int]) -> None:
        self.local.update(staged)

    def flush(self) -> None:
        """The producer sent everything written so far (Faust does this before a commit)."""
        self.sent = len(self.changelog)

    def kill(self) -> None:
        """SIGKILL: whatever was not sent yet never reaches the changelog."""
        del self.changelog[self.sent :]

    def restored(self) -> dict[str, Any]:
        """What a worker restoring the partition from the changelog gets."""
        return {key: CODEC.loads(value) for key, value in self.changelog}


class FakeOutbox:
    """Records what the agents queue and flush."""

    def __init__(self) -> None:
        self.queued: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    def add(
        self,
        topic: str,
        partition: int,
        key: Any,
        value: Any,
        headers: Any = None,
        *,
        timestamp_ms: int | None = None,
        on_acked: Callable[[], None] | None = None,
    ) -> None:
        self.queued.append(
            {
                "topic": topic,
                "partition": partition,
                "key": key,
                "value": value,
                "headers": headers,
                "on_acked": on_acked,
            }
        )

    def add_keyed(
        self, topic: str, partitions: int, key: Any, value: Any, headers: Any = None
    ) -> None:
        self.add(topic, 0, key, value, headers)

    def discard(self) -> None:
        self.queued.clear()

    async def flush(self) -> dict[tuple[str, int], int]:
        self.sent.extend(self.queued)
        queued, self.queued = self.queued, []
        for record in queued:
            if record["on_acked"] is not None:
                record["on_acked"]()
        return {}

    def topic(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.sent if r["topic"] == name]


class FakeEmitter:
    async def send(self, partition: int, transitions: list[Transition], outbox: Any) -> None:
        return None


class Stream:
    """Delivers the given batches, as ``take_events`` does."""

    def __init__(self, *batches: list[Record]) -> None:
        self.batches = batches

    async def take_until_idle(
        self, size: int, window: float, idle: float
    ) -> AsyncIterator[list[Record]]:
        for batch in self.batches:
            yield batch


def _record(offset: int, po_id: str, type_: str, data: dict[str, Any], eid: str) -> Record:
    value = orjson.dumps(
        {
            "event_id": eid,
            "type": type_,
            "schema_version": 1,
            "source": "erp",
            "occurred_at": f"2026-11-27T10:00:{offset:02d}Z",
            "data": {"po_id": po_id, **data},
        }
    )
    return Record(INPUT, PARTITION, offset, po_id.encode(), value, [], 1.0)


def _created(offset: int, po_id: str) -> Record:
    lines = [{"line_no": 1, "sku": "SKU-1", "qty": 10}]
    data = {"revision": 1, "supplier_id": "S-1", "location": "DC1", "lines": lines}
    return _record(offset, po_id, "po.created", data, f"e-{offset}")


def _acked(offset: int, po_id: str) -> Record:
    data = {"revision": 1, "system": "erp", "status": "accepted"}
    return _record(offset, po_id, "po.acknowledged", data, f"e-{offset}")


def _torn(offset: int) -> Record:
    return Record(INPUT, PARTITION, offset, b"PO-1", b'{"event_id": "e-', [], 1.0)


DELTAS = "t-position-deltas"


def _worker(table: CrashTable, outbox: FakeOutbox) -> Callable[[Stream], Any]:
    """A (re)started worker on ``table``'s local store: a fresh agent and actor."""
    checkpoint = Checkpoint(
        outbox,  # type: ignore[arg-type]  # Outbox's interface
        table,  # type: ignore[arg-type]  # TableIO's interface
        ProgressMarkers(table, CONFIG.kafka),
    )
    actor = EntityActor(
        kind=PO_KIND,
        checkpoint=checkpoint,
        deltas_topic=DELTAS,
        emitter=FakeEmitter(),  # type: ignore[arg-type]  # sends nothing: no rules fire
        rules=Rules(),
        partitions=CONFIG.partitions,
        metrics=Metrics(CollectorRegistry(), app_id="t", version="0"),
    )
    agent = InputAgent(
        CONFIG,
        topic=PO_EVENTS,
        handler=actor,
        metrics=actor.metrics,
        checkpoint=checkpoint,
    )

    async def consume(stream: Stream) -> None:
        """As the reader drives the agent: a fresh start drops what was queued."""
        checkpoint.discard()
        async for batch in stream.take_until_idle(0, 0, 0):
            await agent.process_batch(batch)

    return consume


def _offset(marker: Any) -> int:
    """The offset a stored progress marker holds."""
    return int(MARKER_FORMAT.unpack(marker)[0])


def _event_ids(wire: Any) -> list[str]:
    return list(PoState.from_wire(wire).event_ids)


def _dead_lettered_offsets(outbox: FakeOutbox) -> list[int]:
    sent = outbox.topic(CONFIG.topic(DLQ))
    return [int(dict(r["headers"])["supplyflow-source-offset"]) for r in sent]


@pytest.mark.parametrize(
    "killed",
    [
        "after the marker",  # the fault test's case: local marker ahead of the changelog
        "before the marker",  # local states ahead, local marker still before the batch
        "and recovery put an older PO-1 back",  # Faust re-applies changelog records
    ],
)
def test_a_batch_the_changelog_never_got_reaches_it_after_the_restart(killed: str) -> None:
    table, app = CrashTable(), FakeOutbox()
    first = [_created(0, "PO-1"), _created(1, "PO-3")]
    lost = [_acked(2, "PO-1"), _torn(3), _acked(4, "PO-3")]
    killed_worker = _worker(table, app)
    asyncio.run(killed_worker(Stream(first)))
    table.flush()  # the commit of offsets 0..1 flushed their state; 2.. is uncommitted
    older_po1 = table.local["PO-1"]
    asyncio.run(killed_worker(Stream(lost)))
    table.kill()
    if killed == "before the marker":
        table.local[marker_key(INPUT)] = bytes(CODEC.dumps(1))
    elif killed == "and recovery put an older PO-1 back":
        table.local["PO-1"] = older_po1
    assert "e-2" in _event_ids(table.value("PO-1")) or killed.startswith("and recovery")
    assert "e-2" not in _event_ids(table.restored()["PO-1"])

    # Restarted on the same data dir: the consumer redelivers from the committed offset.
    asyncio.run(_worker(table, app)(Stream(lost)))

    restored = table.restored()
    assert _event_ids(restored["PO-1"]) == ["e-0", "e-2"]
    assert _event_ids(restored["PO-3"]) == ["e-1", "e-4"]
    assert _offset(restored[marker_key(INPUT)]) == 4
    assert _offset(table.value(marker_key(INPUT))) == 4
    # Killed after the marker, the replay's dead letter is not sent a second time. Killed
    # between the dead letter's acknowledgement and the marker, it is (at least once).
    assert _dead_lettered_offsets(app) == ([3, 3] if killed == "before the marker" else [3])


def test_a_replay_after_a_restart_rewrites_its_state_and_sends_nothing_again() -> None:
    table, app = CrashTable(), FakeOutbox()
    records = [_created(0, "PO-1"), _acked(1, "PO-1"), _torn(2)]
    asyncio.run(_worker(table, app)(Stream(records)))
    sent = len(app.topic(DELTAS))
    table.changelog.clear()
    asyncio.run(_worker(table, app)(Stream(records)))  # restarted: all replays
    assert [key for key, _ in table.changelog] == ["PO-1", marker_key(INPUT)]
    assert _offset(table.value(marker_key(INPUT))) == 2  # not moved back
    assert _event_ids(table.value("PO-1")) == ["e-0", "e-1"]
    assert len(app.topic(DELTAS)) == sent
    assert _dead_lettered_offsets(app) == [2]


def test_a_replay_of_this_process_own_work_is_dropped() -> None:
    table, app = CrashTable(), FakeOutbox()
    consume = _worker(table, app)
    asyncio.run(consume(Stream([_created(0, "PO-1"), _acked(1, "PO-1")])))
    table.changelog.clear()
    asyncio.run(consume(Stream([_acked(1, "PO-1")])))  # delivered again, same process
    assert table.changelog == []


def test_an_event_that_would_make_its_po_too_large_is_dead_lettered_the_next_applied() -> None:
    table, app = CrashTable(), FakeOutbox()
    lines = [{"line_no": n, "sku": f"{'S' * 58}{n:06d}", "qty": 1} for n in range(1, 10_001)]
    data = {"revision": 1, "supplier_id": "S-1", "location": "L" * 64, "lines": lines}
    huge = _record(0, "PO-1", "po.created", data, "e-0")
    asyncio.run(_worker(table, app)(Stream([huge, _created(1, "PO-3")])))
    letters = app.topic(CONFIG.topic(DLQ))
    assert [dict(r["headers"])["supplyflow-dlq-reason"] for r in letters] == [b"entity_too_large"]
    assert _dead_lettered_offsets(app) == [0]
    assert table.value("PO-1") is None
    assert _event_ids(table.value("PO-3")) == ["e-1"]
    assert _offset(table.value(marker_key(INPUT))) == 1
