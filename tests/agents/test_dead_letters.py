"""Dead letters: to the source partition's ``dlq`` partition, once, even across a crash."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from supplyflow.agents import dead_letters
from supplyflow.agents.dead_letters import DeadLetters, Rejected, SentLetters
from supplyflow.agents.metrics import Metrics
from supplyflow.agents.runtime.routing import ROUTED
from supplyflow.app.runtime_config import runtime_config
from supplyflow.app.settings import Settings
from supplyflow.codecs import DecodeError, build_dead_letter

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

    def add(self, topic: str, partition: int, key: Any, value: Any, headers: Any = None) -> None:
        self.records.append((topic, partition, key, list(headers or ())))


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
    # Read back once per partition; then what this process sends is remembered.
    await letters.add(outbox, [_bad(2, 9)], {})  # type: ignore[arg-type]
    assert len(outbox.records) == 1
    assert dlq_tail[-1] == [2]  # type: ignore[comparison-overlap]


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
