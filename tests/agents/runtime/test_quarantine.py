"""Retry, bisection and quarantine of a failing batch; infrastructure errors are told apart."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)
from faust.exceptions import ProducerSendError
from rocksdict import DbClosedError

from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.exceptions import StateWriteError
from supplyflow.agents.runtime.quarantine import (
    RetryPolicy,
    describe,
    is_infrastructure,
    process_or_isolate,
)
from supplyflow.agents.runtime.records import Record
from supplyflow.agents.runtime.stall import StallWatch
from supplyflow.codecs.state import StateFormatError


def _records(*offsets: int, partition: int = 0) -> list[Record]:
    return [Record("t.po.events", partition, o, b"k", b"v", [], 1.0) for o in offsets]


@pytest.mark.parametrize(
    "error",
    [
        KafkaConnectionError("broker down"),
        KafkaTimeoutError(),
        NotLeaderForPartitionError(),
        # A topic's limit, which its configuration sets as much as the record.
        MessageSizeTooLargeError(),
        ProducerSendError("could not send"),
        OSError(errno.ENOSPC, "No space left on device"),
        ConnectionRefusedError(),
        TimeoutError(),
        MemoryError(),
        DbClosedError("closed"),
        Exception("IO error: No space left on device: While appending to file"),
    ],
    ids=type,
)
def test_infrastructure_errors_are_never_the_records_fault(error: BaseException) -> None:
    assert is_infrastructure(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("year 10000 is out of range"),
        OverflowError("int too large"),
        KeyError("line"),
        ZeroDivisionError(),
        RuntimeError("a bug"),
        Exception("a bug that says nothing"),
    ],
    ids=type,
)
def test_any_other_error_is_the_records_fault(error: BaseException) -> None:
    assert not is_infrastructure(error)


def test_describe_bounds_the_message() -> None:
    kind, message = describe(ValueError("x" * 5000))
    assert kind == "ValueError"
    assert len(message) < 1100


class Agent:
    """Applies records unless a poison is among them; records what each call did."""

    def __init__(self, poison: set[int], *, flaky: int = 0, error: type = ValueError) -> None:
        self.poison = poison
        self.flaky = flaky  # the first calls fail whatever the records
        self.error = error
        self.applied: list[int] = []
        self.staged: list[int] = []
        self.quarantined: list[tuple[int, str]] = []
        self.discards = 0

    async def handle(self, records: list[Record]) -> None:
        self.staged.extend(r.offset for r in records)  # what a failure must drop
        if self.flaky:
            self.flaky -= 1
            raise self.error("flaky")
        bad = [r.offset for r in records if r.offset in self.poison]
        if bad:
            raise self.error(f"poison at {bad[0]}")
        self.applied.extend(self.staged)
        self.staged.clear()

    def discard(self) -> None:
        self.discards += 1
        self.staged.clear()

    async def quarantine(self, record: Record, error: BaseException) -> None:
        assert not self.staged, "a failed attempt left writes behind"
        self.quarantined.append((record.offset, str(error)))


class Sleeps:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


async def test_a_poison_record_is_isolated_and_everything_around_it_is_applied() -> None:
    agent, sleeps = Agent({5}), Sleeps()
    count = await process_or_isolate(
        _records(*range(10)),
        agent.handle,
        discard=agent.discard,
        quarantine=agent.quarantine,
        policy=RetryPolicy(),
        sleep=sleeps,
    )
    assert count == 1
    assert agent.applied == [0, 1, 2, 3, 4, 6, 7, 8, 9]  # in order
    assert agent.quarantined == [(5, "poison at 5")]
    assert sleeps.pauses == [0.2, 0.4, 0.8]  # three attempts, then bisection


async def test_several_poison_records_each_go_alone() -> None:
    agent = Agent({0, 3, 4, 11})
    count = await process_or_isolate(
        _records(*range(12)),
        agent.handle,
        discard=agent.discard,
        quarantine=agent.quarantine,
        policy=RetryPolicy(),
        sleep=Sleeps(),
    )
    assert count == 4
    assert [offset for offset, _ in agent.quarantined] == [0, 3, 4, 11]
    assert agent.applied == [1, 2, 5, 6, 7, 8, 9, 10]


async def test_a_batch_of_one_poison_record_is_quarantined_after_its_attempts() -> None:
    agent, sleeps = Agent({7}), Sleeps()
    await process_or_isolate(
        _records(7),
        agent.handle,
        discard=agent.discard,
        quarantine=agent.quarantine,
        policy=RetryPolicy(),
        sleep=sleeps,
    )
    assert agent.quarantined == [(7, "poison at 7")]
    assert len(sleeps.pauses) == 3


async def test_a_failure_that_passes_is_retried_and_nothing_is_quarantined() -> None:
    agent, sleeps = Agent(set(), flaky=2), Sleeps()
    count = await process_or_isolate(
        _records(0, 1, 2),
        agent.handle,
        discard=agent.discard,
        quarantine=agent.quarantine,
        policy=RetryPolicy(),
        sleep=sleeps,
    )
    assert (count, agent.quarantined, agent.applied) == (0, [], [0, 1, 2])
    assert sleeps.pauses == [0.2, 0.4]
    assert agent.discards == 2  # each failed attempt's writes dropped


@pytest.mark.parametrize(
    "error", [KafkaConnectionError, ConnectionRefusedError, StateFormatError], ids=str
)
async def test_infrastructure_and_fatal_errors_go_to_the_caller_at_once(error: type) -> None:
    agent, sleeps = Agent({1}, error=error), Sleeps()
    with pytest.raises(error):
        await process_or_isolate(
            _records(0, 1, 2),
            agent.handle,
            discard=agent.discard,
            quarantine=agent.quarantine,
            policy=RetryPolicy(),
            sleep=sleeps,
        )
    assert agent.quarantined == []
    assert sleeps.pauses == []  # the reader reads again from the markers, after a pause


async def test_an_infrastructure_error_during_isolation_stops_it() -> None:
    class Outage(Agent):
        async def handle(self, records: list[Record]) -> None:
            if len(records) < 4:
                raise KafkaConnectionError("the broker went away")
            await super().handle(records)

    agent = Outage({5})
    with pytest.raises(KafkaConnectionError):
        await process_or_isolate(
            _records(*range(8)),
            agent.handle,
            discard=agent.discard,
            quarantine=agent.quarantine,
            policy=RetryPolicy(),
            sleep=Sleeps(),
        )
    assert agent.quarantined == []  # nothing dead-lettered for the broker's fault


def test_infrastructure_pauses_grow_to_a_bound() -> None:
    policy = RetryPolicy()
    assert [policy.infrastructure_pause(n) for n in (1, 2, 3, 4, 5, 10)] == [
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        5.0,
    ]


def test_a_partition_is_stalled_once_it_waits_longer_than_the_threshold() -> None:
    now = [1000.0]
    watch = StallWatch(30.0, clock=lambda: now[0])
    tp = ("t.po.events", 3)
    watch.watching(*tp)
    assert [s.stalled for s in watch.states({tp: 0})] == [False]
    watch.failed([tp], KafkaConnectionError("broker down"))
    now[0] += 29
    assert [s.stalled for s in watch.states({})] == [False]
    now[0] += 2
    (state,) = watch.states({})
    assert state.stalled
    assert state.since == 1000.0
    assert state.error == ("KafkaConnectionError", "KafkaConnectionError: broker down")
    watch.watching(*tp)  # read again after the failure: the stall goes on
    assert watch.states({})[0].since == 1000.0
    watch.advanced([tp])
    assert [(s.stalled, s.error) for s in watch.states({tp: 5})] == [(False, None)]


def test_lag_without_progress_is_a_stall_too_and_caught_up_is_not() -> None:
    now = [0.0]
    watch = StallWatch(10.0, clock=lambda: now[0])
    tp = ("t.po.events", 0)
    watch.watching(*tp)
    now[0] = 11
    assert watch.states({tp: 0})[0].stalled is False  # nothing waits
    assert watch.states({tp: 4})[0].stalled is True  # records wait, nothing moved
    watch.forget()  # revoked
    assert watch.states({tp: 4}) == []


def test_a_failure_after_the_outputs_were_sent_is_never_the_records_fault() -> None:
    """Writing the states fails after the batch's outputs (deltas) are in Kafka:
    dead-lettering the record would leave them counted, so it is retried, whatever the
    error."""

    class Outbox:
        async def flush(self) -> dict[tuple[str, int], int]:
            return {}

    class TableIO:
        def take_staged(self) -> dict[int, dict[bytes, bytes]]:
            return {0: {b"k": b"v" * 10}}

        async def send_to_changelog(self, staged: Any) -> dict[int, int]:
            raise ValueError("a bug in the changelog path")

    checkpoint = Checkpoint(Outbox(), TableIO(), None)  # type: ignore[arg-type]  # fakes
    with pytest.raises(StateWriteError) as caught:
        asyncio.run(checkpoint.commit())
    assert is_infrastructure(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)
