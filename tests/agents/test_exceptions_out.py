"""The open-exceptions index (API and metrics) and what the emitter keeps in memory."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from supplyflow.agents.exceptions_out import ExceptionEmitter, OpenExceptions
from supplyflow.agents.metrics import Metrics
from supplyflow.agents.runtime.keys import partition_for
from supplyflow.app.runtime_config import runtime_config
from supplyflow.app.settings import Settings
from supplyflow.tables.exceptions import Transition
from supplyflow.tables.position import OVERALLOCATION

CONFIG = runtime_config(Settings(bootstrap="127.0.0.1:1", topic_prefix="t.", app_id="t"))
PARTITIONS = CONFIG.partitions


def _transition(n: int, rule: str, status: str = "open") -> Transition:
    return Transition(
        exception_id=f"x-{n}",
        rule=rule,
        status=status,  # type: ignore[arg-type]  # the literal's values
        entity_type="position",
        entity_id=f"SKU-{n}@DC1",
        detail={"n": n},
        raised_at="2026-11-27T10:00:00.000Z",
        resolved_at=None if status == "open" else "2026-11-27T10:01:00.000Z",
        message=f"exception {n}",
        event_ids=[f"e-{n}"],
    )


def test_counts_follow_opens_and_resolves_without_walking_the_records() -> None:
    index = OpenExceptions(PARTITIONS)
    index.ensure(frozenset({0, 1}), [])
    index.apply(0, _transition(1, "INVENTORY_MISMATCH"))
    index.apply(1, _transition(2, "INVENTORY_MISMATCH"))
    index.apply(1, _transition(3, OVERALLOCATION))
    index.apply(1, _transition(3, OVERALLOCATION))  # written again: still one
    index.apply(0, _transition(1, "INVENTORY_MISMATCH", "resolved"))
    index.apply(5, _transition(4, OVERALLOCATION))  # not owned here: ignored
    assert index.counts() == {"INVENTORY_MISMATCH": 1, OVERALLOCATION: 1}
    records = sorted(index.records(), key=lambda r: str(r["exception_id"]))
    assert records == [
        _transition(2, "INVENTORY_MISMATCH").record(),
        _transition(3, OVERALLOCATION).record(),
    ]
    index.apply(1, _transition(3, OVERALLOCATION, "resolved"))
    index.apply(1, _transition(2, "INVENTORY_MISMATCH", "resolved"))
    assert index.counts() == {}
    assert index.records() == []


class Table:
    """A table's ``items()`` over position states."""

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, Any]]:
        return self._items


def test_a_rebuild_from_the_tables_counts_what_the_states_hold_open() -> None:
    from supplyflow.tables.position import PositionState

    state = PositionState.new("SKU-1@DC1")
    state.exceptions["a"] = [1, True, OVERALLOCATION, {}, "2026-11-27T10:00:00.000Z", "m", []]
    state.exceptions["b"] = [2, False, "INVENTORY_MISMATCH", {}, "2026-11-27T10:00:00Z", "m", []]
    owner = partition_for("SKU-1@DC1", PARTITIONS)
    index = OpenExceptions(PARTITIONS)
    index.ensure(frozenset({owner}), [("position", Table([("SKU-1@DC1", state.to_wire())]))])
    assert index.counts() == {OVERALLOCATION: 1}
    (record,) = index.records()
    assert record["entity_id"] == "SKU-1@DC1"
    assert record["status"] == "open"


class Outbox:
    def __init__(self) -> None:
        self.records: list[tuple[str, int]] = []

    def add(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        self.records.append((topic, partition))


def test_the_emitter_keeps_only_overallocation_records_for_its_lookup() -> None:
    metrics = Metrics(CollectorRegistry(), app_id="t", version="0")
    index = OpenExceptions(PARTITIONS)
    index.ensure(frozenset({0}), [])
    emitter = ExceptionEmitter(CONFIG, metrics, index)

    async def no_tail(partition: int) -> dict[tuple[str, str], dict[str, Any] | None]:
        return {}

    emitter._load = no_tail  # type: ignore[method-assign]  # no broker in a unit test
    outbox = Outbox()
    opened = [_transition(1, "INVENTORY_MISMATCH"), _transition(2, OVERALLOCATION)]
    asyncio.run(emitter.send(0, opened, outbox))  # type: ignore[arg-type]  # the fake
    asyncio.run(emitter.send(0, opened, outbox))  # type: ignore[arg-type]  # not again
    assert len(outbox.records) == 2
    lookup = asyncio.run(emitter.written(0))
    assert lookup("x-2") == (_transition(2, OVERALLOCATION).record(), False)
    assert lookup("x-1") == (None, False)  # written, but its record is not kept
    asyncio.run(emitter.send(0, [_transition(2, OVERALLOCATION, "resolved")], outbox))  # type: ignore[arg-type]  # the fake
    assert lookup("x-2") == (_transition(2, OVERALLOCATION).record(), True)
    assert emitter._written[0] == {
        ("x-1", "open"): None,
        ("x-2", "open"): _transition(2, OVERALLOCATION).record(),
        ("x-2", "resolved"): None,
    }
    assert index.counts() == {"INVENTORY_MISMATCH": 1}


def test_the_index_keeps_records_in_bytes_of_their_own_size() -> None:
    """orjson's bytes come in the buffer it grew (about 2 KB for a 300-byte record)."""
    import tracemalloc

    index = OpenExceptions(PARTITIONS)
    index.ensure(frozenset({0}), [])
    transitions = [_transition(n, "INVENTORY_MISMATCH") for n in range(2_000)]
    size = sum(len(orjson.dumps(t.record())) for t in transitions) // len(transitions)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for transition in transitions:
            index.apply(0, transition)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_entry = grown / len(transitions)
    # the JSON, its id and the bucket's share; not the ~2 KB orjson's buffer would add
    assert per_entry < size + 400, (per_entry, size)
