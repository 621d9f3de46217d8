"""Entity size and sums: no state grows past what its changelog takes, no sum overflows.

An entity's state is one changelog record (Kafka's 1 MiB limit): an event that would make
it pack larger than ``MAX_STATE_BYTES`` is rejected (``entity_too_large``) and leaves it
as it was. Sums in state are Python integers of any size, packed as msgpack extension
values past 64 bits (``codecs.packing``): the issue's three ways past 2**63 stay exact.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from supplyflow.codecs import EVENT_ADAPTER
from supplyflow.codecs.packing import pack, unpack
from supplyflow.codecs.quantity import MAX_ABS_UNITS, SCALE, format_qty
from supplyflow.codecs.state import MAX_STATE_BYTES
from supplyflow.tables.batch import apply_entity_batch
from supplyflow.tables.common import RECENT_EVENT_IDS, Rejection
from supplyflow.tables.po import PoState, apply_po_event
from supplyflow.tables.position import (
    PositionState,
    apply_deltas,
    apply_inventory_event,
    apply_inventory_event_bounded,
    position_record,
)

#: The largest quantity accepted, in thousandths.
MAX_QTY: Final = MAX_ABS_UNITS * SCALE - 1
LINES: Final = 10_000
LONG: Final = "S" * 59  # codes of up to 64 characters (with a 5-digit number)


def _ev(n: int, type_: str, data: dict[str, Any], key: str = "po_id", id_: str = "PO-1") -> Any:
    return EVENT_ADAPTER.validate_python(
        {
            "event_id": f"e{n}",
            "type": type_,
            "schema_version": 1,
            "source": "test",
            "occurred_at": "2026-11-27T10:00:00Z",
            "data": {key: id_, **data} if key else data,
        }
    )


def _lines(count: int, sku: Any = "SKU-1", qty: str = "1") -> list[dict[str, Any]]:
    return [
        {"line_no": n, "sku": sku(n) if callable(sku) else sku, "qty": qty}
        for n in range(1, count + 1)
    ]


def _created(n: int, lines: list[dict[str, Any]], po_id: str = "PO-1", loc: str = "DC1") -> Any:
    data = {"revision": 1, "supplier_id": "S", "location": loc, "lines": lines}
    return _ev(n, "po.created", data, id_=po_id)


class Store:
    """A table: packed states, each load a state of its own (as the agent's)."""

    def __init__(self) -> None:
        self.packed: dict[str, bytes] = {}

    def load(self, key: str) -> PoState | None:
        raw = self.packed.get(key)
        return None if raw is None else PoState.from_wire(unpack(raw))

    def run(
        self, events: list[Any], first_offset: int = 0, max_bytes: int = MAX_STATE_BYTES
    ) -> list[Any]:
        batch = apply_entity_batch(
            [(e.data.entity_key, e, first_offset + i, "") for i, e in enumerate(events)],
            self.load,
            apply_po_event,
            max_bytes=max_bytes,
        )
        for key, state in batch.states.items():
            assert batch.packed[key] == pack(state.to_wire())
            assert len(batch.packed[key]) <= max_bytes
            self.packed[key] = batch.packed[key]
        self.deltas = batch.deltas.get("", {})
        return batch.results


def test_a_10000_line_po_with_long_codes_is_rejected_and_leaves_nothing() -> None:
    store = Store()
    huge = _created(0, _lines(LINES, lambda n: f"{LONG}{n:05d}"), loc="L" * 64)
    results = store.run([huge, _created(1, _lines(2), po_id="PO-2")])
    assert isinstance(results[0], Rejection)
    assert results[0].reason == "entity_too_large"
    assert str(MAX_STATE_BYTES) in results[0].detail
    assert results[1] == "applied"  # the next one, in the same batch
    assert "PO-1" not in store.packed
    assert "PO-2" in store.packed


def test_the_event_that_would_outgrow_the_bound_is_rejected_the_entity_stays_as_before() -> None:
    store, limit, lines = Store(), 20_000, 100  # the bound scaled down: same code path
    store.run([_created(0, _lines(lines, lambda n: f"SKU-{n}"))], max_bytes=limit)
    # Receipts of every line, each under a new id, until the PO no longer fits; in one
    # batch, so the rejected one sits between applied ones.
    receipts = [
        _ev(
            n,
            "goods.received",
            {"receipt_id": f"R-{n}", "revision": 1, "lines": _lines(lines, lambda i: f"SKU-{i}")},
        )
        for n in range(1, 40)
    ]
    ack = _ev(99, "po.acknowledged", {"revision": 1, "system": "erp", "status": "accepted"})
    results = store.run([*receipts, ack], first_offset=1, max_bytes=limit)
    rejected = [i for i, r in enumerate(results) if isinstance(r, Rejection)]
    assert rejected, "the receipts never reached the bound: make them larger"
    first = rejected[0]
    assert first >= 2
    assert results[:first] == ["applied"] * first
    assert all(results[i].reason == "entity_too_large" for i in rejected)
    assert results[-1] == "applied"  # a small event still applies
    state = store.load("PO-1")
    assert state is not None
    assert sorted(state.receipts) == sorted(f"R-{n}" for n in range(1, first + 1))
    assert state.acks == {"erp": [1, "accepted"]}
    assert f"e{first + 1}" not in state.event_ids
    # The rejected receipts left no deltas: on_hand counts the applied receipts only.
    on_hand = sum(item[2] for items in store.deltas.values() for item in items)
    assert on_hand == first * lines * SCALE


def test_8000_events_on_one_po_stay_small_because_only_the_last_1000_ids_are_kept() -> None:
    store = Store()
    acks = [
        _ev(n, "po.acknowledged", {"revision": 1, "system": "erp", "status": "accepted"})
        for n in range(1, 8001)
    ]
    results = store.run([_created(0, _lines(1)), *acks])
    assert set(results) == {"applied"}
    state = store.load("PO-1")
    assert state is not None
    assert len(state.event_ids) == RECENT_EVENT_IDS
    assert len(store.packed["PO-1"]) < 200_000
    # A resend within the window has no effect; one older than it is applied again
    # (harmless for an ack, a correction or a revision; see docs/guarantees.md).
    assert store.run([acks[-1]], first_offset=9000) == ["duplicate"]
    assert store.run([acks[0]], first_offset=9001) == ["applied"]


def _max_po(n: int, po_id: str) -> Any:
    return _created(n, _lines(LINES, "SKU-1", f"{MAX_ABS_UNITS - 1}.999"), po_id=po_id)


def test_sums_past_64_bits_stay_exact_through_state_deltas_and_positions() -> None:
    store = Store()
    position = PositionState.new("SKU-1@DC1")

    def apply(events: list[Any], offset: int) -> None:
        nonlocal position
        store.run(events, first_offset=offset)
        apply_deltas(position, "po:0", store.deltas["SKU-1@DC1"])
        # through the stored form, as the position table keeps it
        position = PositionState.from_wire(unpack(pack(position.to_wire())))

    per_po = LINES * MAX_QTY
    assert per_po > 2**63
    apply([_max_po(0, "PO-1"), _max_po(1, "PO-2")], 0)  # two maximal POs
    assert position.totals[2] == 2 * per_po  # inbound
    apply([_ev(2, "po.cancelled", {"revision": 2}, id_="PO-1")], 2)  # one cancelled
    assert position.totals[2] == per_po
    po = store.load("PO-2")
    assert po is not None
    assert po.contributions["SKU-1@DC1"][2] == per_po
    record = orjson.dumps(position_record(position, ""))
    assert f'"inbound":{format_qty(per_po)},'.encode() in record

    # ~9,300 maximal negative adjustments: on_hand below -2**63 thousandths
    adjustments = 9_300
    for n in range(adjustments):
        data = {"sku": "SKU-1", "location": "DC1", "delta": -(MAX_ABS_UNITS - 1), "reason": "x"}
        outcome, _ = apply_inventory_event(
            position, _ev(10 + n, "inventory.adjusted", data, key=""), n
        )
        assert outcome == "applied"
    position = PositionState.from_wire(unpack(pack(position.to_wire())))
    on_hand = -adjustments * (MAX_ABS_UNITS - 1) * SCALE
    assert on_hand < -(2**63)
    assert position.totals[0] == on_hand
    assert position.totals[2] == per_po


def test_a_position_does_not_grow_past_the_bound_with_snapshots_of_ever_new_systems() -> None:
    position = PositionState.new("SKU-1@DC1")
    limit = 20_000
    outcomes: list[Any] = []
    for n in range(2_000):
        data = {"sku": "SKU-1", "location": "DC1", "system": f"wms-{n:05d}", "on_hand": 1}
        event = _ev(n, "inventory.snapshot", data, key="")
        position, outcome, _ = apply_inventory_event_bounded(position, event, n, max_bytes=limit)
        outcomes.append(outcome)
        if isinstance(outcome, Rejection):
            break
    assert isinstance(outcomes[-1], Rejection)
    assert outcomes[-1].reason == "entity_too_large"
    assert set(outcomes[:-1]) == {"applied"}
    assert len(pack(position.to_wire())) <= limit
    assert len(position.snapshots) == len(outcomes) - 1
    # a system it knows still reports
    data = {"sku": "SKU-1", "location": "DC1", "system": "wms-00000", "on_hand": 0}
    position, outcome, _ = apply_inventory_event_bounded(
        position, _ev(5000, "inventory.snapshot", data, key=""), 5000, max_bytes=limit
    )
    assert outcome == "applied"
