"""Each exception rule on the pure domain functions, with an injected clock."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from supplyflow.codecs import EVENT_ADAPTER
from supplyflow.tables.common import Applied, epoch_ms
from supplyflow.tables.exceptions import Rules, Transition, exception_id
from supplyflow.tables.order import OrderState, apply_order_event, fire_order_deadlines
from supplyflow.tables.po import PoState, apply_po_event, fire_po_deadlines
from supplyflow.tables.position import (
    PositionState,
    adopt_overallocation,
    apply_deltas,
    apply_inventory_event,
    check_overallocation,
)

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
RULES = Rules(
    po_ack_ms={"erp": 30_000, "wms": 60_000},
    order_ack_ms={"erp": 30_000},
    invoice_ms=4 * 3600_000,
    receipt_tolerance_pct=Decimal(5),
    grace_ms=2000,
)
_seq = iter(range(1, 10**6))


def ev(type_: str, data: dict[str, Any], at: datetime = T0) -> Any:
    n = next(_seq)
    return EVENT_ADAPTER.validate_python(
        {
            "event_id": f"e{n}",
            "type": type_,
            "schema_version": 1,
            "source": "test",
            "occurred_at": at.isoformat(),
            "data": data,
        }
    )


def ms(moment: datetime) -> int:
    return epoch_ms(moment)


class PoHarness:
    def __init__(self) -> None:
        self.state: PoState | None = None
        self.transitions: list[Transition] = []
        self.offset = 0

    def apply(self, type_: str, data: dict[str, Any], at: datetime = T0) -> None:
        self.offset += 1
        state, result = apply_po_event(
            self.state, ev(type_, {"po_id": "PO-17", **data}, at), rules=RULES
        )
        assert isinstance(result, Applied), result
        self.state = state
        self.transitions += result.transitions

    def tick(self, at: datetime) -> None:
        assert self.state is not None
        self.transitions += fire_po_deadlines(self.state, ms(at), RULES)

    def summary(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(t.rule, t.status, t.detail) for t in self.transitions]


LINES = [{"line_no": 1, "sku": "A", "qty": 100}, {"line_no": 2, "sku": "B", "qty": 10}]


def created(h: PoHarness, at: datetime = T0) -> None:
    h.apply(
        "po.created",
        {"revision": 1, "supplier_id": "S", "location": "DC1", "lines": LINES},
        at,
    )


def test_on_time_acks_raise_nothing() -> None:
    h = PoHarness()
    created(h)
    h.apply("po.acknowledged", {"revision": 1, "system": "erp", "status": "accepted"})
    h.apply("po.acknowledged", {"revision": 1, "system": "wms", "status": "accepted"})
    h.tick(T0 + timedelta(hours=1))
    assert h.summary() == []
    assert h.state is not None
    assert h.state.deadlines == []


def test_missing_ack_fires_after_due_plus_grace_and_late_ack_resolves() -> None:
    h = PoHarness()
    created(h)
    h.apply("po.acknowledged", {"revision": 1, "system": "erp", "status": "accepted"})
    h.tick(T0 + timedelta(seconds=62))  # due at 60 s, grace 2 s: an ack then is on time
    assert h.summary() == []
    h.tick(T0 + timedelta(seconds=62, milliseconds=1))
    assert h.summary() == [("ACK_MISSING", "open", {"system": "wms", "revision": 1})]
    h.tick(T0 + timedelta(seconds=90))  # fires once
    assert len(h.transitions) == 1
    assert (
        h.transitions[0].message
    ) == "wms has not acknowledged PO-17 rev 1 (due 2026-11-27T10:01:00.000Z)"
    h.apply("po.acknowledged", {"revision": 1, "system": "wms", "status": "accepted"})
    assert h.summary()[-1] == ("ACK_MISSING", "resolved", {"system": "wms", "revision": 1})
    assert h.transitions[0].exception_id == h.transitions[1].exception_id


def test_rejection_resolves_missing_and_opens_rejected_until_accepted() -> None:
    h = PoHarness()
    created(h)
    h.tick(T0 + timedelta(seconds=40))
    assert h.summary() == [("ACK_MISSING", "open", {"system": "erp", "revision": 1})]
    h.apply(
        "po.acknowledged",
        {"revision": 1, "system": "erp", "status": "rejected", "reason": "price"},
    )
    assert h.summary()[1:] == [
        ("ACK_MISSING", "resolved", {"system": "erp", "revision": 1}),
        ("ACK_REJECTED", "open", {"system": "erp", "revision": 1}),
    ]
    assert "price" in h.transitions[-1].message
    h.apply("po.updated", {"revision": 2, "lines": LINES})
    h.apply("po.acknowledged", {"revision": 2, "system": "erp", "status": "accepted"})
    assert h.summary()[-1] == ("ACK_REJECTED", "resolved", {"system": "erp", "revision": 1})


def test_newer_revision_replaces_pending_deadlines() -> None:
    h = PoHarness()
    created(h)
    h.apply("po.updated", {"revision": 2, "lines": LINES}, T0 + timedelta(seconds=20))
    assert h.state is not None
    pending = sorted((d[2]["system"], d[2]["revision"]) for d in h.state.deadlines)
    assert pending == [("erp", 2), ("wms", 2)]
    h.tick(T0 + timedelta(seconds=40))  # rev 1's erp deadline (30 s) is gone
    assert h.summary() == []
    h.tick(T0 + timedelta(seconds=53))
    assert h.summary() == [("ACK_MISSING", "open", {"system": "erp", "revision": 2})]


def test_receipt_rules() -> None:
    h = PoHarness()
    created(h)
    h.apply("po.updated", {"revision": 2, "lines": LINES})
    h.apply(
        "goods.received",
        {"receipt_id": "R1", "revision": 1, "lines": [{"line_no": 1, "sku": "A", "qty": 106}]},
    )
    rules = {t.rule: t for t in h.transitions if t.rule != "ACK_MISSING"}
    assert set(rules) == {"RECEIPT_REVISION_MISMATCH", "ASN_MISSING", "OVER_RECEIPT"}
    assert rules["OVER_RECEIPT"].detail == {"line_no": 1}
    assert rules["ASN_MISSING"].detail == {"receipt_id": "R1"}


def test_within_tolerance_and_with_asn_nothing_opens() -> None:
    h = PoHarness()
    created(h)
    h.apply("asn.issued", {"asn_id": "A1", "lines": [{"line_no": 1, "sku": "A", "qty": 100}]})
    h.apply(
        "goods.received",
        {"receipt_id": "R1", "revision": 1, "lines": [{"line_no": 1, "sku": "A", "qty": 105}]},
    )
    assert h.summary() == []


def test_order_ack_and_invoice_deadlines() -> None:
    state: OrderState | None = None
    transitions: list[Transition] = []

    def apply(type_: str, data: dict[str, Any], at: datetime = T0) -> None:
        nonlocal state
        state, result = apply_order_event(
            state, ev(type_, {"order_id": "SO-1", **data}, at), rules=RULES
        )
        assert isinstance(result, Applied)
        transitions.extend(result.transitions)

    line = [{"line_no": 1, "sku": "A", "qty": 5}]
    apply("order.placed", {"channel": "web", "location": "DC1", "lines": line})
    apply("order.shipped", {"shipment_id": "S1", "lines": line}, T0 + timedelta(minutes=1))
    assert state is not None
    transitions += fire_order_deadlines(state, ms(T0 + timedelta(seconds=33)), RULES)
    assert [(t.rule, t.detail) for t in transitions] == [("ACK_MISSING", {"system": "erp"})]
    transitions += fire_order_deadlines(
        state, ms(T0 + timedelta(hours=4, minutes=1, seconds=2, milliseconds=1)), RULES
    )
    assert transitions[-1].rule == "INVOICE_MISSING"
    assert transitions[-1].detail == {"shipment_id": "S1"}
    apply("order.invoiced", {"invoice_id": "I1", "shipment_id": "S1"})
    apply("order.acknowledged", {"system": "erp", "status": "rejected"})
    assert [(t.rule, t.status) for t in transitions[2:]] == [
        ("INVOICE_MISSING", "resolved"),
        ("ACK_MISSING", "resolved"),
        ("ACK_REJECTED", "open"),
    ]


def test_a_fired_deadline_is_raised_at_due_plus_grace_whenever_it_fires() -> None:
    h = PoHarness()
    created(h)
    h.tick(T0 + timedelta(days=3))  # the worker was down for days
    assert {t.raised_at for t in h.transitions} == {
        "2026-11-27T10:00:32.000Z",  # erp: 30 s + 2 s grace
        "2026-11-27T10:01:02.000Z",  # wms: 60 s + 2 s grace
    }


def test_a_late_ack_processed_before_the_deadline_fired_still_records_the_breach() -> None:
    h = PoHarness()
    created(h)
    late = T0 + timedelta(seconds=90)  # wms due at 60 s + 2 s grace
    h.apply("po.acknowledged", {"revision": 1, "system": "wms", "status": "accepted"}, late)
    h.apply("po.acknowledged", {"revision": 1, "system": "erp", "status": "accepted"})
    assert h.summary() == [
        ("ACK_MISSING", "open", {"system": "wms", "revision": 1}),
        ("ACK_MISSING", "resolved", {"system": "wms", "revision": 1}),
    ]
    opened, resolved = h.transitions
    assert opened.exception_id == resolved.exception_id
    assert opened.raised_at == "2026-11-27T10:01:02.000Z"
    assert resolved.resolved_at == "2026-11-27T10:01:30.000Z"  # the ack's occurred_at
    h.tick(T0 + timedelta(hours=1))
    assert len(h.transitions) == 2  # nothing left to fire


def test_an_on_time_ack_processed_late_raises_nothing() -> None:
    h = PoHarness()
    created(h)
    on_time = T0 + timedelta(seconds=62)  # exactly due + grace
    for system in ("erp", "wms"):
        at = on_time if system == "wms" else T0
        h.apply("po.acknowledged", {"revision": 1, "system": system, "status": "accepted"}, at)
    h.tick(T0 + timedelta(days=1))  # however late the worker processed them
    assert h.summary() == []


def test_a_rejection_after_the_deadline_resolves_the_breach_and_opens_rejected() -> None:
    h = PoHarness()
    created(h)
    late = T0 + timedelta(minutes=5)
    h.apply("po.acknowledged", {"revision": 1, "system": "erp", "status": "accepted"})
    h.apply("po.acknowledged", {"revision": 1, "system": "wms", "status": "rejected"}, late)
    assert h.summary() == [
        ("ACK_MISSING", "open", {"system": "wms", "revision": 1}),
        ("ACK_MISSING", "resolved", {"system": "wms", "revision": 1}),
        ("ACK_REJECTED", "open", {"system": "wms", "revision": 1}),
    ]


def test_a_revision_after_the_old_deadline_passed_records_the_old_breach() -> None:
    h = PoHarness()
    created(h)
    h.apply("po.acknowledged", {"revision": 1, "system": "erp", "status": "accepted"})
    update = {"revision": 2, "lines": LINES}
    h.apply("po.updated", update, T0 + timedelta(minutes=2))  # wms rev 1 was due at 62 s
    assert h.summary() == [("ACK_MISSING", "open", {"system": "wms", "revision": 1})]
    assert h.state is not None
    pending = sorted((d[2]["system"], d[2]["revision"]) for d in h.state.deadlines)
    assert pending == [("erp", 2), ("wms", 2)]
    # an ack of rev 2 answers rev 1 too
    h.apply(
        "po.acknowledged",
        {"revision": 2, "system": "wms", "status": "accepted"},
        T0 + timedelta(minutes=2, seconds=10),
    )
    assert h.summary()[-1] == ("ACK_MISSING", "resolved", {"system": "wms", "revision": 1})


def test_a_revision_before_the_old_deadline_replaces_it() -> None:
    h = PoHarness()
    created(h)
    h.apply("po.updated", {"revision": 2, "lines": LINES}, T0 + timedelta(seconds=20))
    assert h.state is not None
    pending = sorted((d[2]["system"], d[2]["revision"]) for d in h.state.deadlines)
    assert pending == [("erp", 2), ("wms", 2)]
    h.tick(T0 + timedelta(seconds=51))  # rev 1's erp deadline (32 s) was replaced
    assert h.summary() == []


def test_late_order_answers_record_their_breaches() -> None:
    state: OrderState | None = None
    transitions: list[Transition] = []

    def apply(type_: str, data: dict[str, Any], at: datetime) -> None:
        nonlocal state
        state, result = apply_order_event(
            state, ev(type_, {"order_id": "SO-2", **data}, at), rules=RULES
        )
        assert isinstance(result, Applied)
        transitions.extend(result.transitions)

    line = [{"line_no": 1, "sku": "A", "qty": 5}]
    apply("order.placed", {"channel": "web", "location": "DC1", "lines": line}, T0)
    apply("order.shipped", {"shipment_id": "S1", "lines": line}, T0 + timedelta(seconds=10))
    apply("order.acknowledged", {"system": "erp", "status": "rejected"}, T0 + timedelta(hours=1))
    late_invoice = T0 + timedelta(hours=5)  # due 4 h after the shipment
    apply("order.invoiced", {"invoice_id": "I1", "shipment_id": "S1"}, late_invoice)
    assert [(t.rule, t.status, t.raised_at) for t in transitions] == [
        ("ACK_MISSING", "open", "2026-11-27T10:00:32.000Z"),
        ("ACK_MISSING", "resolved", "2026-11-27T10:00:32.000Z"),
        ("ACK_REJECTED", "open", "2026-11-27T11:00:00.000Z"),
        ("INVOICE_MISSING", "open", "2026-11-27T14:00:12.000Z"),
        ("INVOICE_MISSING", "resolved", "2026-11-27T14:00:12.000Z"),
    ]
    assert state is not None
    assert state.deadlines == []


def test_overallocation_and_inventory_mismatch() -> None:
    pos = PositionState.new("A@DC1")
    apply_deltas(pos, "order:0", [[5, 0, 0, 3000, 0, 0, 3000]])  # 3 allocated, nothing on hand
    opened = check_overallocation(pos, "t1")
    assert [(t.rule, t.status) for t in opened] == [("OVERALLOCATION", "open")]
    assert check_overallocation(pos, "t2") == []  # open at most once
    apply_deltas(pos, "po:1", [[9, 0, 5000, 0, 0, 0, 0]])
    resolved = check_overallocation(pos, "t3")
    assert [(t.rule, t.status) for t in resolved] == [("OVERALLOCATION", "resolved")]
    assert resolved[0].exception_id == opened[0].exception_id
    again = (
        apply_deltas(pos, "order:0", [[6, 0, 0, 9000, 0, 0, 0]]),
        check_overallocation(pos, "t4"),
    )
    assert again[1][0].exception_id != opened[0].exception_id  # a new occurrence

    snap = {"sku": "A", "location": "DC1", "system": "wms"}
    _, found = apply_inventory_event(pos, ev("inventory.snapshot", {**snap, "on_hand": 4}), 1)
    assert [(t.rule, t.status, t.detail) for t in found] == [
        ("INVENTORY_MISMATCH", "open", {"system": "wms"})
    ]
    _, found = apply_inventory_event(pos, ev("inventory.snapshot", {**snap, "on_hand": 5}), 2)
    assert [(t.rule, t.status) for t in found] == [("INVENTORY_MISMATCH", "resolved")]


class ExceptionsTopic:
    """What a worker reads back from its ``exceptions`` partition (a ``WrittenLookup``)."""

    def __init__(self, *transitions: Transition) -> None:
        self.written = {(t.exception_id, t.status): t.record() for t in transitions}

    def __call__(self, exception_id: str) -> tuple[dict[str, Any] | None, bool]:
        return self.written.get((exception_id, "open")), (exception_id, "resolved") in self.written


def add(pos: PositionState, *deltas: tuple[str, list[int]]) -> PositionState:
    for source, item in deltas:
        apply_deltas(pos, source, [item])
    return pos


def position(*deltas: tuple[str, list[int]]) -> PositionState:
    return add(PositionState.new("A@DC1"), *deltas)


ALLOCATE_3 = ("order:0", [5, 0, 0, 3000, 0, 0, 3000])
RECEIVE_5 = ("po:1", [9, 0, 5000, 0, 0, 0, 0])
ALLOCATE_9 = ("order:0", [6, 0, 0, 9000, 0, 0, 0])


def test_an_overallocation_opened_by_a_killed_worker_is_adopted_and_resolved() -> None:
    # The killed worker's batch dipped and emitted the open; its state write was lost.
    killed = position(ALLOCATE_3)
    (opened,) = check_overallocation(killed, "t1")
    topic = ExceptionsTopic(opened)
    # The successor applies the same deltas and more in one batch: no dip, nothing open.
    pos = position(ALLOCATE_3, RECEIVE_5)
    assert check_overallocation(copy.deepcopy(pos), "t2") == []
    assert adopt_overallocation(pos, topic)
    (resolved,) = check_overallocation(pos, "t2")
    assert (resolved.exception_id, resolved.status) == (opened.exception_id, "resolved")
    assert resolved.raised_at == opened.raised_at == "t1"
    # Resolved now (the topic gets it too): nothing more to adopt, the next dip is new.
    topic = ExceptionsTopic(opened, resolved)
    assert not adopt_overallocation(pos, topic)
    add(pos, ALLOCATE_9)
    (again,) = check_overallocation(pos, "t3")
    assert again.status == "open"
    assert again.exception_id != opened.exception_id


def test_a_resolution_written_by_a_killed_worker_closes_the_restored_occurrence() -> None:
    """Seed 78334: occurrence k open in the restored state, resolved on the topic."""
    # Before the kill: the state with occurrence 1 open reached the changelog.
    restored = position(ALLOCATE_3)
    (opened,) = check_overallocation(restored, "t1")
    # The killed worker's next batch resolved it (emitted), then its state write was lost.
    killed = copy.deepcopy(restored)
    add(killed, RECEIVE_5)
    (resolved,) = check_overallocation(killed, "t2")
    assert resolved.status == "resolved"
    topic = ExceptionsTopic(opened, resolved)
    # The successor restores occurrence 1 open and batches the same deltas with the next
    # allocation: available < 0 at the end of its batch.
    pos = copy.deepcopy(restored)
    add(pos, RECEIVE_5)
    add(pos, ALLOCATE_9)
    without = copy.deepcopy(pos)
    assert check_overallocation(without, "t3") == []  # the loss: nothing open on the topic
    assert adopt_overallocation(pos, topic)
    (reopened,) = check_overallocation(pos, "t3")
    assert reopened.status == "open"
    assert reopened.exception_id not in (opened.exception_id, resolved.exception_id)
    assert reopened.exception_id == exception_id("position", "A@DC1", "OVERALLOCATION", 2)


def test_an_occurrence_opened_and_resolved_by_killed_workers_is_skipped() -> None:
    # The state never saw occurrence 1; the topic has it opened and resolved.
    killed = position(ALLOCATE_3)
    (opened,) = check_overallocation(killed, "t1")
    add(killed, RECEIVE_5)
    (resolved,) = check_overallocation(killed, "t2")
    pos = position(ALLOCATE_3, RECEIVE_5, ALLOCATE_9)
    assert adopt_overallocation(pos, ExceptionsTopic(opened, resolved))
    (found,) = check_overallocation(pos, "t3")
    assert (found.status, found.exception_id) == (
        "open",
        exception_id("position", "A@DC1", "OVERALLOCATION", 2),
    )


def test_nothing_is_adopted_when_state_and_topic_agree() -> None:
    pos = position(RECEIVE_5)
    assert not adopt_overallocation(pos, ExceptionsTopic())
    assert check_overallocation(pos, "t1") == []
    dipped = position(ALLOCATE_3)
    (opened,) = check_overallocation(dipped, "t1")
    assert not adopt_overallocation(dipped, ExceptionsTopic(opened))
    assert check_overallocation(dipped, "t2") == []  # still open, on both


def test_exception_ids_are_deterministic() -> None:
    a = exception_id("po", "PO-17", "ACK_MISSING|wms|2", 1)
    assert a == exception_id("po", "PO-17", "ACK_MISSING|wms|2", 1)
    assert a != exception_id("po", "PO-17", "ACK_MISSING|wms|2", 2)
    assert a.startswith("exc-")
