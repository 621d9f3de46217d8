"""The input reader against a fake consumer: where it reads, and that nothing is skipped
when the assignment changes, a rebalance starts or a batch fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from supplyflow.agents.runtime.config import BatchTunables
from supplyflow.agents.runtime.driver import drive
from supplyflow.agents.runtime.quarantine import RetryPolicy
from supplyflow.agents.runtime.reader import InputReader, read_batches
from supplyflow.agents.runtime.records import Record
from supplyflow.app.runtime_config import runtime_config
from supplyflow.app.settings import Settings
from supplyflow.codecs.state import StateFormatError

CONFIG = runtime_config(Settings(bootstrap="127.0.0.1:1", topic_prefix="t.", app_id="t"))
TOPIC = "t.po.events"


@dataclass
class FakeConsumerRecord:
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp: int


class FakeConsumer:
    """A consumer over fixed partition logs, with aiokafka's assign/seek/getmany rules:
    ``assign`` forgets every position, ``getmany`` advances the positions it returns."""

    def __init__(self, logs: dict[TopicPartition, int], *, start: int = 0) -> None:
        self.logs = {
            tp: [
                FakeConsumerRecord(o, b"k", f"{tp.partition}:{o}".encode(), [], 1000 + o)
                for o in range(n)
            ]
            for tp, n in logs.items()
        }
        self.start_offset = start
        self.assigned: set[TopicPartition] = set()
        self.position: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        #: called at the start of the next getmany (then cleared)
        self.during_fetch: Callable[[], Any] | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = set(tps)
        self.position = {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert tp in self.assigned
        self.position[tp] = offset

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs[tp])

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        hook, self.during_fetch = self.during_fetch, None
        out: dict[TopicPartition, list[FakeConsumerRecord]] = {}
        for tp in sorted(self.assigned):
            # (before the oldest record kept: reset to it, as auto_offset_reset="earliest")
            at = max(self.position.get(tp, 0), self.start_offset)
            records = self.logs[tp][at : at + max_records - sum(map(len, out.values()))]
            if records:
                out[tp] = records
        if hook is not None:  # as seen with aiokafka: what it fetched before still comes
            hook()
        for tp, records in out.items():
            self.position[tp] = records[-1].offset + 1
        if not out:  # as aiokafka: wait for records up to the timeout
            await asyncio.sleep(timeout_ms / 1000)
        return out

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.committed.update({tp: meta.offset for tp, meta in offsets.items()})


def _reader(consumer: FakeConsumer, batch_max: int = 100, commit_s: float = 1.0) -> InputReader:
    return InputReader(
        replace(CONFIG, batch=BatchTunables(batch_max, window_s=0.001, idle_s=0.0)),
        [TOPIC],
        new_consumer=lambda: consumer,  # the fake
        commit_every_s=commit_s,
    )


def _offsets(events: list[Record]) -> list[tuple[int, int]]:
    return [(e.partition, e.offset) for e in events]


def test_reading_starts_after_the_marker_or_at_the_start_of_the_log() -> None:
    async def run() -> list[tuple[int, int]]:
        consumer = FakeConsumer({TopicPartition(TOPIC, 0): 5, TopicPartition(TOPIC, 1): 3})
        reader = _reader(consumer)
        await reader.start()
        reader.activate(0, {TOPIC: 2})  # offsets 0..2 processed
        reader.activate(1, {TOPIC: None})  # nothing processed yet
        _, events = await reader.next_batch()
        assert events[0].value == b"0:3"
        assert events[0].timestamp == 1.003
        return _offsets(events)

    assert asyncio.run(run()) == [(0, 3), (0, 4), (1, 0), (1, 1), (1, 2)]


def test_a_partition_never_processed_starts_at_the_oldest_record_kept() -> None:
    async def run() -> list[tuple[int, int]]:
        consumer = FakeConsumer({TopicPartition(TOPIC, 0): 6}, start=4)  # 0..3 deleted
        reader = _reader(consumer)
        await reader.start()
        reader.activate(0, {TOPIC: None})
        _, events = await reader.next_batch()
        reader.accept(events)
        reader.rewind()  # (as after another partition's activation)
        _, again = await reader.next_batch()
        assert again == []
        return _offsets(events)

    assert asyncio.run(run()) == [(0, 4), (0, 5)]


def test_records_fetched_while_a_partition_is_activated_are_read_again() -> None:
    """The consumer moved past the records of the dropped fetch: the reader seeks back."""

    async def run() -> list[tuple[int, int]]:
        consumer = FakeConsumer({TopicPartition(TOPIC, 0): 4, TopicPartition(TOPIC, 1): 2})
        reader = _reader(consumer)
        await reader.start()
        reader.activate(0, {TOPIC: None})
        consumer.during_fetch = lambda: reader.activate(1, {TOPIC: None})
        version, dropped = await reader.next_batch()
        assert dropped == []
        assert reader.version != version
        _, events = await reader.next_batch()
        return _offsets(events)

    assert asyncio.run(run()) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]


class FakeApp:
    rebalancing = False


def _nothing() -> None:
    return None


def test_a_failed_batch_is_dropped_and_read_again_from_the_markers() -> None:
    async def run() -> tuple[list[list[tuple[int, int]]], int]:
        consumer = FakeConsumer({TopicPartition(TOPIC, 0): 3})
        reader = _reader(consumer)
        await reader.start()
        reader.activate(0, {TOPIC: None})
        handled: list[list[tuple[int, int]]] = []
        failed = asyncio.Event()
        stopping = asyncio.Event()

        async def handle(events: list[Record]) -> None:
            handled.append(_offsets(events))
            if len(handled) == 1:
                raise RuntimeError("a bug in a domain function")
            stopping.set()

        def on_error() -> None:
            failed.set()

        task = asyncio.create_task(
            read_batches(
                FakeApp(), reader, asyncio.Lock(), handle, on_error=on_error, stopping=stopping
            )
        )
        await asyncio.wait_for(failed.wait(), 5)
        assert reader.active == frozenset()  # every partition waits for its next tick
        reader.activate(0, {TOPIC: None})  # the tick: nothing was marked done
        await asyncio.wait_for(task, 5)
        await reader.commit()
        return handled, consumer.committed[TopicPartition(TOPIC, 0)]

    handled, committed = asyncio.run(run())
    assert handled == [[(0, 0), (0, 1), (0, 2)]] * 2
    assert committed == 3


def test_a_batch_read_as_a_rebalance_starts_is_held_back_and_read_again() -> None:
    async def run() -> list[list[tuple[int, int]]]:
        consumer = FakeConsumer({TopicPartition(TOPIC, 0): 2})
        reader = _reader(consumer)
        await reader.start()
        reader.activate(0, {TOPIC: None})
        app = FakeApp()
        app.rebalancing = True
        handled: list[list[tuple[int, int]]] = []
        stopping = asyncio.Event()

        async def handle(events: list[Record]) -> None:
            handled.append(_offsets(events))
            stopping.set()

        task = asyncio.create_task(
            read_batches(app, reader, asyncio.Lock(), handle, on_error=_nothing, stopping=stopping)
        )
        await asyncio.sleep(0.05)
        assert handled == []
        assert consumer.position[TopicPartition(TOPIC, 0)] == 0  # rewound
        app.rebalancing = False  # (no partition moved: the reader goes on)
        await asyncio.wait_for(task, 5)
        return handled

    assert asyncio.run(run()) == [[(0, 0), (0, 1)]]


def test_the_last_offsets_are_committed_once_the_input_goes_quiet() -> None:
    """Commits are at most every ``commit_every_s``: the tail of a burst is committed when
    nothing more arrives, not only with a later batch (the fault tests wait for it)."""

    async def run() -> list[int]:
        tp = TopicPartition(TOPIC, 0)
        consumer = FakeConsumer({tp: 3})
        reader = _reader(consumer, batch_max=2, commit_s=0.05)
        await reader.start()
        reader.activate(0, {TOPIC: None})
        seen: list[int] = []
        stopping = asyncio.Event()

        async def handle(events: list[Record]) -> None:
            seen.append(consumer.committed.get(tp, -1))

        task = asyncio.create_task(
            read_batches(
                FakeApp(), reader, asyncio.Lock(), handle, on_error=_nothing, stopping=stopping
            )
        )
        for _ in range(100):
            await asyncio.sleep(0.01)
            if consumer.committed.get(tp) == 3:
                break
        stopping.set()
        await asyncio.wait_for(task, 5)
        return [*seen, consumer.committed[tp]]

    # first batch (0, 1) committed at once; the second (2) only when the input went quiet
    assert asyncio.run(run()) == [-1, 2, 3]


def test_state_this_release_cannot_read_ends_the_reading_instead_of_a_retry() -> None:
    async def run() -> tuple[list[list[tuple[int, int]]], bool]:
        consumer = FakeConsumer({TopicPartition(TOPIC, 0): 3})
        reader = _reader(consumer)
        await reader.start()
        reader.activate(0, {TOPIC: None})
        handled: list[list[tuple[int, int]]] = []
        dropped: list[bool] = []

        async def handle(events: list[Record]) -> None:
            handled.append(_offsets(events))
            raise StateFormatError("stored PO state has format version 2")

        task = read_batches(
            FakeApp(),
            reader,
            asyncio.Lock(),
            handle,
            on_error=lambda: dropped.append(True),
            stopping=asyncio.Event(),
        )
        with pytest.raises(StateFormatError):
            await asyncio.wait_for(task, 5)
        return handled, dropped == [True]

    handled, dropped = asyncio.run(run())
    assert handled == [[(0, 0), (0, 1), (0, 2)]]  # once: not read again
    assert dropped


class TickStream:
    """The ticks agent's stream: one batch of ticks per given partition set."""

    def __init__(self, *ticks: list[int]) -> None:
        self.ticks = ticks

    async def take_until_idle(self, size: int, within: float, idle: float) -> Any:
        for partitions in self.ticks:
            yield [SimpleNamespace(message=SimpleNamespace(partition=p)) for p in partitions]


def test_the_ticks_agent_stops_every_reader_and_the_worker_on_a_fatal_error() -> None:
    class Agent:
        def __init__(self, fails: bool) -> None:
            self.fails = fails
            self.calls: list[str] = []

        async def start(self) -> None:
            self.calls.append("start")

        async def ticked(self, partitions: set[int]) -> None:
            self.calls.append(f"tick {sorted(partitions)}")
            if self.fails:
                raise StateFormatError("stored order state has format version 9")

        async def stop(self) -> None:
            self.calls.append("stop")

    fine, failing = Agent(fails=False), Agent(fails=True)
    fatal: list[BaseException] = []
    asyncio.run(
        drive(
            TickStream([0, 1], [1]),
            [fine, failing],  # type: ignore[list-item]  # ReaderAgent's interface
            batch_window_s=0.01,
            on_fatal=fatal.append,
        )
    )
    assert [str(e) for e in fatal] == ["stored order state has format version 9"]
    assert fine.calls == ["start", "tick [0, 1]", "stop"]
    assert failing.calls == ["start", "tick [0, 1]", "stop"]


def test_a_record_that_fails_alone_is_quarantined_and_the_partition_goes_on() -> None:
    async def run() -> tuple[list[int], list[int], list[Any]]:
        consumer = FakeConsumer({TopicPartition(TOPIC, 0): 4})
        reader = _reader(consumer)
        await reader.start()
        reader.activate(0, {TOPIC: None})
        applied: list[int] = []
        quarantined: list[int] = []
        stopping = asyncio.Event()

        async def handle(events: list[Record]) -> None:
            if any(e.offset == 1 for e in events):
                raise ValueError("a bug that record 1 reaches")
            applied.extend(e.offset for e in events)
            if applied[-1] == 3:
                stopping.set()

        async def quarantine(record: Record, error: BaseException) -> None:
            quarantined.append(record.offset)

        await asyncio.wait_for(
            read_batches(
                FakeApp(),
                reader,
                asyncio.Lock(),
                handle,
                on_error=_nothing,
                stopping=stopping,
                quarantine=quarantine,
                policy=RetryPolicy(backoff_s=(0.0,)),
            ),
            5,
        )
        return applied, quarantined, reader.watch.states(reader.lag())

    applied, quarantined, states = asyncio.run(run())
    assert (applied, quarantined) == ([0, 2, 3], [1])
    assert [(s.partition, s.stalled, s.error) for s in states] == [(0, False, None)]


def test_an_infrastructure_error_is_read_again_and_shows_on_the_partition() -> None:
    async def run() -> tuple[list[Any], bool]:
        consumer = FakeConsumer({TopicPartition(TOPIC, 0): 2})
        reader = _reader(consumer)
        await reader.start()
        reader.activate(0, {TOPIC: None})
        stopping = asyncio.Event()
        quarantined: list[int] = []

        async def handle(events: list[Record]) -> None:
            stopping.set()
            raise KafkaConnectionError("the broker went away")

        async def quarantine(record: Record, error: BaseException) -> None:
            quarantined.append(record.offset)

        await asyncio.wait_for(
            read_batches(
                FakeApp(),
                reader,
                asyncio.Lock(),
                handle,
                on_error=_nothing,
                stopping=stopping,
                quarantine=quarantine,
            ),
            5,
        )
        return reader.watch.states({}), quarantined == [] and reader.active == frozenset()

    states, reset = asyncio.run(run())
    assert reset  # nothing dead-lettered; read again from the markers on the next tick
    ((topic, partition, error),) = [(s.topic, s.partition, s.error) for s in states]
    assert (topic, partition) == (TOPIC, 0)
    assert error is not None
    assert error[0] == "KafkaConnectionError"
