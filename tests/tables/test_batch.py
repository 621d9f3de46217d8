"""Replays and repeated event ids in entity batches: offsets per stream, ids bounded."""

from __future__ import annotations

from typing import Any

from supplyflow.codecs import EVENT_ADAPTER
from supplyflow.tables.batch import apply_entity_batch
from supplyflow.tables.common import RECENT_EVENT_IDS
from supplyflow.tables.order import OrderState, apply_order_event
from supplyflow.tables.po import PoState


def _ev(n: int, type_: str, data: dict[str, Any], event_id: str | None = None) -> Any:
    return EVENT_ADAPTER.validate_python(
        {
            "event_id": event_id or f"e{n}",
            "type": type_,
            "schema_version": 1,
            "source": "test",
            "occurred_at": "2026-11-27T10:00:00Z",
            "data": {"order_id": "SO-1", **data},
        }
    )


LINE = [{"line_no": 1, "sku": "A", "qty": 1}]


def _order_log(allocations: int) -> list[tuple[str, Any, int]]:
    log = [
        ("SO-1", _ev(0, "order.placed", {"channel": "web", "location": "DC1", "lines": LINE}), 0)
    ]
    log += [
        ("SO-1", _ev(n, "order.allocated", {"lines": LINE}), n) for n in range(1, allocations + 1)
    ]
    return log


def _run(
    log: list[tuple[str, Any, int]], state: OrderState | None, stream: str = ""
) -> tuple[OrderState, list[Any]]:
    events = [(key, event, offset, stream) for key, event, offset in log]
    batch = apply_entity_batch(events, lambda key: state, apply_order_event)
    final = batch.states["SO-1"]
    return final, batch.results


def test_a_replay_is_a_duplicate_by_offset_whatever_the_entitys_age() -> None:
    state, _ = _run(_order_log(3 * RECENT_EVENT_IDS), None)
    allocated = state.lines[1].allocated
    assert len(state.event_ids) == RECENT_EVENT_IDS  # ids are bounded
    assert state.offsets == {"": 3 * RECENT_EVENT_IDS}
    # a worker restarted on a store ahead of the changelog re-applies the whole log
    again, results = _run(_order_log(3 * RECENT_EVENT_IDS), state)
    assert set(results) == {"duplicate"}
    assert again.lines[1].allocated == allocated


def test_streams_are_separate_offset_spaces() -> None:
    state, _ = _run(_order_log(2), None, stream="")
    routed = [("SO-1", _ev(50, "order.allocated", {"lines": LINE}), 1)]  # offset 1 of another
    after, results = _run(routed, state, stream="r")
    assert results == ["applied"]
    assert after.offsets == {"": 2, "r": 1}


def test_a_recent_repeated_event_id_has_no_second_effect() -> None:
    state, _ = _run(_order_log(5), None)
    resent = [("SO-1", _ev(99, "order.allocated", {"lines": LINE}, event_id="e3"), 6)]
    after, results = _run(resent, state)
    assert results == ["duplicate"]
    assert after.lines[1].allocated == 5_000


def test_states_stored_with_one_offset_read_as_the_direct_stream() -> None:
    state, _ = _run(_order_log(1), None)
    wire = state.to_wire()[1:]  # no version in front: as stored before state formats
    wire[10] = 7  # as stored before streams existed
    assert OrderState.from_wire(wire).offsets == {"": 7}
    wire[10] = -1
    assert OrderState.from_wire(wire).offsets == {}
    assert PoState.from_wire(
        ["PO", 1, "S", "L", False, [], [], [], {}, [], 4, {}, "", [], {}, 0]
    ).offsets == {"": 4}
