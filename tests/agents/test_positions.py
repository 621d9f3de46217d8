"""The position actor's batch bookkeeping: what it emits and what it writes back."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from supplyflow.agents.exceptions_out import ExceptionEmitter, OpenExceptions
from supplyflow.agents.metrics import Metrics
from supplyflow.agents.positions import _PartitionBatch
from supplyflow.app.runtime_config import runtime_config
from supplyflow.app.settings import Settings
from supplyflow.tables.exceptions import Transition, exception_id
from supplyflow.tables.position import (
    OVERALLOCATION,
    PositionState,
    apply_deltas,
    check_overallocation,
)


class FakeIO:
    """``TableIO.get`` over a dict of one partition's states."""

    def __init__(self, states: dict[str, Any]) -> None:
        self.states = states

    def get(self, partition: int, key: str) -> Any:
        return self.states.get(key)


NOW = "2026-11-27T10:00:00.000Z"
KEY = "SKU-1@DC1"
#: one delta item from PO partition 1, offset 5: +1 unit inbound
DELTAS: list[Any] = ["po:1", [[KEY, [[5, 1_795_000_000_000, 0, 0, 1000, 0, 0]]]]]


def test_a_replayed_delta_writes_the_position_again_and_emits_nothing() -> None:
    # After a SIGKILL the local store can hold a position the changelog never got; the
    # replay that finds it applied must still write it (see agents.progress).
    first = _PartitionBatch(FakeIO({}), 0, NOW)  # type: ignore[arg-type]
    first.deltas(DELTAS)
    assert first.changed == first.dirty == {KEY}
    again = _PartitionBatch(FakeIO({KEY: first.cache[KEY].to_wire()}), 0, NOW)  # type: ignore[arg-type]
    again.deltas(DELTAS)
    assert again.changed == set()
    assert again.dirty == {KEY}
    assert again.cache[KEY].totals == first.cache[KEY].totals


class Outbox:
    """The exception records an emitter queues."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        self.records.append(orjson.loads(value))


def _emitter(tail: list[Transition]) -> ExceptionEmitter:
    """An emitter whose read-back of ``exceptions[0]`` finds ``tail``."""
    config = runtime_config(Settings(bootstrap="127.0.0.1:1", topic_prefix="t.", app_id="t"))
    metrics = Metrics(CollectorRegistry(), app_id="t", version="0")
    emitter = ExceptionEmitter(config, metrics, OpenExceptions(config.partitions))
    written = {(t.exception_id, t.status): t.record() for t in tail}

    async def read_back(partition: int) -> dict[tuple[str, str], dict[str, Any] | None]:
        return dict(written)

    emitter._load = read_back  # type: ignore[method-assign]  # no broker in a unit test
    return emitter


def _batch(
    restored: PositionState | None, emitter: ExceptionEmitter, *deltas: list[int]
) -> list[tuple[str, int]]:
    """One batch of the successor: ``restored`` from the changelog, then ``deltas`` (order
    partition 0); returns the (status, occurrence) of each transition it emits."""
    states = {} if restored is None else {KEY: copy.deepcopy(restored).to_wire()}
    work = _PartitionBatch(FakeIO(states), 0, NOW)  # type: ignore[arg-type]
    work.deltas(["order:0", [[KEY, [list(d) for d in deltas]]]])
    outbox = Outbox()

    async def run() -> None:
        work.check_overallocation(await emitter.written(0))
        await emitter.send(0, work.transitions, outbox)  # type: ignore[arg-type]  # the fake

    asyncio.run(run())
    ids = {exception_id("position", KEY, OVERALLOCATION, n): n for n in range(1, 5)}
    return [(r["status"], ids[r["exception_id"]]) for r in outbox.records]


#: order partition 0 deltas: [offset, occurred_at, on_hand, allocated, inbound, in_transit,
#: reserved]
ALLOCATE_3 = [5, 0, 0, 3000, 0, 0, 0]
RESTOCK_5 = [6, 0, 5000, 0, 0, 0, 0]
ALLOCATE_9 = [7, 0, 0, 9000, 0, 0, 0]


def test_a_resolution_lost_with_the_killed_worker_state_opens_the_next_occurrence() -> None:
    """Seed 78334: the killed worker emitted ``resolved`` for occurrence 1 and died before
    the state reached the changelog; the successor restores occurrence 1 open and batches
    the same deltas with a later allocation, ending below zero."""
    restored = PositionState.new(KEY)
    apply_deltas(restored, "order:0", [ALLOCATE_3])
    (opened,) = check_overallocation(restored, NOW)
    killed = copy.deepcopy(restored)
    apply_deltas(killed, "order:0", [RESTOCK_5])
    (resolved,) = check_overallocation(killed, NOW)
    emitter = _emitter([opened, resolved])
    assert _batch(restored, emitter, RESTOCK_5, ALLOCATE_9) == [("open", 2)]
    # Back above zero instead: occurrence 1 is resolved on the topic already, nothing new.
    assert _batch(restored, _emitter([opened, resolved]), RESTOCK_5) == []


def test_an_open_lost_with_the_killed_worker_state_is_resolved() -> None:
    """Seed 748909: the killed worker emitted ``open`` for occurrence 1 and died before
    the state reached the changelog; the successor's batch never dips."""
    killed = PositionState.new(KEY)
    apply_deltas(killed, "order:0", [ALLOCATE_3])
    (opened,) = check_overallocation(killed, NOW)
    assert _batch(None, _emitter([opened]), ALLOCATE_3, RESTOCK_5) == [("resolved", 1)]
    assert _batch(None, _emitter([opened]), ALLOCATE_3) == []  # open on both sides
