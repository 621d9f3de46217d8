"""Dead letters: to the source partition's ``dlq`` partition, once, even across a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import CollectorRegistry

from supplyflow.agents import dead_letters
from supplyflow.agents.dead_letters import DeadLetters, Rejected, SentLetters
from supplyflow.agents.ingest import Accepted, InputAgent
from supplyflow.agents.metrics import Metrics
from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.outbox import Outbox as Outbox_
from supplyflow.agents.runtime.progress import MARKER_FORMAT, ProgressMarkers, marker_key
from supplyflow.agents.runtime.records import Record as RuntimeRecord
from supplyflow.agents.runtime.routing import ROUTED
from supplyflow.app.runtime_config import runtime_config
from supplyflow.app.settings import Settings
from supplyflow.codecs import DecodeError, build_dead_letter
from tests.agents.test_entities import CODEC, CrashTable

CONFIG = runtime_config(
    Settings(bootstrap="unused:9092", topic_prefix="t.", app_id="t", partitions=4)
)
SOURCE = CONFIG.topic("po.events")
DLQ = CONFIG.topic("dlq")


@dataclass
class Record:
    headers: list[tuple[str, bytes]]


class Outbox:
    def __init__(self) -> None:
        self.records: list[tuple[str, int, bytes | None, list[tuple[str, bytes]]]] = []
        self.on_acked: list[Callable[[], None]] = []

    def add(
        self,
        topic: str,
        partition: int,
        key: Any,
        value: Any,
        headers: Any = None,
        *,
        on_acked: Callable[[], None] | None = None,
    ) -> None:
        self.records.append((topic, partition, key, list(headers or ())))
        if on_acked is not None:
            self.on_acked.append(on_acked)

    def acknowledge(self) -> None:
        """Kafka acknowledged everything queued."""
        callbacks, self.on_acked = self.on_acked, []
        for callback in callbacks:
            callback()


def _bad(partition: int, offset: int) -> Rejected:
    return Rejected(
        DecodeError("invalid_json", "not JSON"), partition, offset, None, b"PO-1", b"{", []
    )


def _in_dlq(partition: int, offset: int) -> Record:
    letter = build_dead_letter(
        DecodeError("invalid_json", "not JSON"),
        topic=SOURCE,
        partition=partition,
        offset=offset,
        timestamp_ms=None,
        key=b"PO-1",
        value=b"{",
        headers=[],
    )
    return Record(letter.headers)


@pytest.fixture
def dlq_tail(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[Record]]:
    """What ``dlq`` holds per partition, as the read-back sees it."""
    tails: dict[int, list[Record]] = {}
    reads: list[int] = []

    async def read_tail(
        kafka: Mapping[str, Any],
        topic: str,
        partition: int,
        each: Callable[[Any], None],
        **_: Any,
    ) -> None:
        assert topic == DLQ
        reads.append(partition)
        for record in tails.get(partition, []):
            each(record)

    monkeypatch.setattr(dead_letters, "read_tail", read_tail)
    tails[-1] = reads  # type: ignore[assignment]  # the partitions read, for the test
    return tails


def _letters(dlq_tail: dict[int, list[Record]]) -> tuple[DeadLetters, Outbox]:
    metrics = Metrics(CollectorRegistry(), app_id="t", version="0")
    return DeadLetters(CONFIG, "po.events", metrics, SentLetters(CONFIG)), Outbox()


async def test_a_letter_goes_to_the_source_partition(dlq_tail: dict[int, list[Record]]) -> None:
    letters, outbox = _letters(dlq_tail)
    await letters.add(outbox, [_bad(3, 10), _bad(1, 4)], {})  # type: ignore[arg-type]
    assert [(t, p) for t, p, _, _ in outbox.records] == [(DLQ, 3), (DLQ, 1)]


async def test_a_letter_sent_before_a_crash_is_not_sent_again(
    dlq_tail: dict[int, list[Record]],
) -> None:
    dlq_tail[2] = [_in_dlq(2, 7)]  # the killed worker's letter for offset 7 reached dlq
    letters, outbox = _letters(dlq_tail)
    await letters.add(outbox, [_bad(2, 7), _bad(2, 9)], {})  # type: ignore[arg-type]
    sent = [dict(h)["supplyflow-source-offset"] for _, _, _, h in outbox.records]
    assert sent == [b"9"]
    outbox.acknowledge()
    # Read back once per partition; then what this process sends is remembered.
    await letters.add(outbox, [_bad(2, 9)], {})  # type: ignore[arg-type]
    assert len(outbox.records) == 1
    assert dlq_tail[-1] == [2]  # type: ignore[comparison-overlap]


async def test_a_letter_counts_as_sent_only_once_kafka_acknowledged_it(
    dlq_tail: dict[int, list[Record]],
) -> None:
    letters, outbox = _letters(dlq_tail)
    await letters.add(outbox, [_bad(1, 4)], {})  # type: ignore[arg-type]
    assert _dead_lettered(letters) == 0  # queued, not acknowledged: not counted
    outbox.on_acked.clear()  # the send failed: the batch's outbox is dropped
    await letters.add(outbox, [_bad(1, 4)], {})  # type: ignore[arg-type]  # read again
    assert len(outbox.records) == 2  # queued again: it is not in dlq
    outbox.acknowledge()
    assert _dead_lettered(letters) == 1
    await letters.add(outbox, [_bad(1, 4)], {})  # type: ignore[arg-type]
    assert len(outbox.records) == 2  # acknowledged: never sent again


def _dead_lettered(letters: DeadLetters, reason: str = "invalid_json") -> float:
    value = letters.metrics.registry.get_sample_value(
        "supplyflow_dead_letters_total", {"topic": "po.events", "reason": reason}
    )
    return value or 0.0


async def test_a_replay_at_or_below_the_marker_sends_nothing(
    dlq_tail: dict[int, list[Record]],
) -> None:
    letters, outbox = _letters(dlq_tail)
    await letters.add(outbox, [_bad(0, 5), _bad(0, 6)], {("", 0): 5})  # type: ignore[arg-type]
    assert [dict(h)["supplyflow-source-offset"] for _, _, _, h in outbox.records] == [b"6"]


def _routed(owner: int, origin: tuple[int, int], routed_offset: int) -> Rejected:
    return Rejected(
        DecodeError("invalid_json", "not JSON"),
        owner,
        routed_offset,
        None,
        b"PO-1",
        b"{",
        [],
        origin,
    )


async def test_a_routed_record_goes_to_its_owners_partition_with_its_origin(
    dlq_tail: dict[int, list[Record]],
) -> None:
    dlq_tail[3] = [_in_dlq(0, 7)]  # letter of po.events[0]@7, read back in dlq[3]
    letters, outbox = _letters(dlq_tail)
    batch = [_routed(3, (0, 7), 40), _routed(3, (1, 7), 41), _routed(3, (0, 8), 42)]
    await letters.add(outbox, batch, {(ROUTED, 3): 40})  # type: ignore[arg-type]
    # the replay (routed offset 40 at the marker) and the letter already in dlq are skipped;
    # the same origin offset of another partition is another record
    sent = [
        (p, dict(h)["supplyflow-source-partition"], dict(h)["supplyflow-source-offset"])
        for _, p, _, h in outbox.records
    ]
    assert sent == [(3, b"1", b"7"), (3, b"0", b"8")]


class FailingOnceProducer:
    """aiokafka's batch API: acknowledges every batch, but refuses the first one sent to
    ``refuse`` (as a broker refuses a record larger than the topic takes)."""

    def __init__(self, refuse: str) -> None:
        self.refuse: str | None = refuse
        #: (topic, partition, records) of every acknowledged batch
        self.acked: list[tuple[str, int, int]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(16384, 0, is_transactional=0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if topic == self.refuse:
            self.refuse = None
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.acked.append((topic, partition, batch.record_count()))
            future.set_result(SimpleNamespace(offset=0))
        return future


async def test_a_refused_letter_is_neither_counted_nor_passed_and_is_sent_once_on_retry(
    dlq_tail: dict[int, list[Record]],
) -> None:
    producer = FailingOnceProducer(DLQ)
    app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
    table = CrashTable()
    checkpoint = Checkpoint(
        Outbox_(app),
        table,  # type: ignore[arg-type]  # TableIO's interface
        ProgressMarkers(table, CONFIG.kafka),
    )
    metrics = Metrics(CollectorRegistry(), app_id="t", version="0")
    letters = SentLetters(CONFIG)

    async def handler(accepted: Sequence[Accepted]) -> list[str | DecodeError]:
        return ["applied" for _ in accepted]

    agent = InputAgent(
        CONFIG,
        topic="po.events",
        handler=handler,
        metrics=metrics,
        checkpoint=checkpoint,
        letters=letters,
    )
    torn = RuntimeRecord(SOURCE, 2, 0, b"PO-1", b'{"event_id": "e-', [], 1.0)
    marker = marker_key(SOURCE)

    with pytest.raises(MessageSizeTooLargeError):
        await agent.process_batch([torn])
    # Nothing says the record is done: not the letters, the metrics nor its marker.
    assert (SOURCE, 2, 0) not in await letters.of(2)
    assert _dead_lettered(agent.dead_letters, "invalid_json") == 0
    assert marker not in table.local  # staged only
    assert table.changelog == []

    agent.discard()  # what the reader does before it reads the batch again
    await agent.process_batch([torn])
    assert [(t, p, n) for t, p, n in producer.acked if t == DLQ] == [(DLQ, 2, 1)]
    assert (SOURCE, 2, 0) in await letters.of(2)
    assert _dead_lettered(agent.dead_letters, "invalid_json") == 1
    assert [key for key, _ in table.changelog] == [marker]
    assert int(MARKER_FORMAT.unpack(CODEC.loads(table.local[marker]))[0]) == 0

    agent.discard()
    await agent.process_batch([torn])  # delivered once more: a replay, nothing sent
    assert [(t, p, n) for t, p, n in producer.acked if t == DLQ] == [(DLQ, 2, 1)]
    assert _dead_lettered(agent.dead_letters, "invalid_json") == 1
