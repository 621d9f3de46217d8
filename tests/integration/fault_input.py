"""Input of the fault runs, and what a fault-free run of exactly that input must produce.

:func:`build_input` is the generated workload (:mod:`supplyflow.app.workload`, scaled up)
with deliberately bad records mixed in at seeded random places, so that the dead-letter
path is exercised through the faults too.

:func:`replay` is the oracle. It takes the input *as it sits in Kafka* (read back after
producing: per partition, in offset order, which is the order every worker sees) and
applies it once, in order, with no Kafka, no batches and no crashes:

- positions come from :func:`~supplyflow.tables.reference.reference_positions`, the plain
  reference that shares no code with the actors;
- what happens to each record (applied, duplicate, stale, or dead-lettered with which
  reason), each entity's final state and the PO/order exception transitions come from
  the pure domain functions (``decode_input``, ``apply_po_event``, ``apply_order_event``)
  applied one event at a time. This is the "fault-free run of the same input": the fault
  suite tests what crashes, restarts, rebalances and broker outages do to the running
  system, not the rules themselves (their own tests cover those).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from supplyflow.app.sample import SampleRecord
from supplyflow.app.topics import INVENTORY_EVENTS, ORDER_EVENTS, PO_EVENTS
from supplyflow.app.workload import Scenario, generate
from supplyflow.codecs import DecodeError, decode_input
from supplyflow.codecs.events import (
    AnyEvent,
    InventoryAdjusted,
    InventorySnapshot,
    entity_key,
)
from supplyflow.tables.common import Rejection
from supplyflow.tables.exceptions import Rules
from supplyflow.tables.order import OrderState, apply_order_event, order_view
from supplyflow.tables.po import PoState, apply_po_event, po_view
from supplyflow.tables.position import RECENT_EVENT_IDS
from supplyflow.tables.reference import reference_positions

__all__ = [
    "MAX_RECORD_BYTES",
    "Expected",
    "InputRecord",
    "SourceOffset",
    "build_input",
    "replay",
    "scenario_of",
]

MAX_RECORD_BYTES: Final = 1 << 20
#: About one record in 200 is a deliberately bad one.
BAD_RATE: Final = 0.005
#: ``Scenario()`` yields ~6,300 records; ``scale`` multiplies every count.
BASE_RECORDS: Final = 6300

#: (contract topic name, partition, offset) of one input record
SourceOffset = tuple[str, int, int]


def scenario_of(events: int) -> Scenario:
    """A generated scenario of at least about ``events`` records."""
    scale = max(1, -(-events // BASE_RECORDS))
    base = Scenario()
    return Scenario(
        pos=base.pos * scale,
        orders=base.orders * scale,
        skus=base.skus * max(1, scale // 4),
        locations=base.locations,
        adjustments=base.adjustments * scale,
        duplicate_rate=base.duplicate_rate,
    )


def _event(run_id: str, n: int, type_: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{run_id}-bad-{n:05d}",
            "type": type_,
            "schema_version": 1,
            "source": "faults",
            "occurred_at": "2026-11-01T00:00:00Z",
            "data": data,
        }
    )


def _bad_record(rng: random.Random, run_id: str, n: int, after: SampleRecord) -> SampleRecord:
    """One invalid record; some refer to the entity of ``after`` (which exists by then)."""
    kind = rng.choice(["json", "type", "schema", "key", "entity", "line", "inventory"])
    if kind == "json":
        topic = rng.choice([PO_EVENTS, ORDER_EVENTS, INVENTORY_EVENTS])
        return SampleRecord(topic, after.key, b'{"event_id": "torn', label=kind)
    if kind == "type":
        body = _event(run_id, n, "po.exploded", {"po_id": f"{run_id}-PO-X{n}"})
        return SampleRecord(PO_EVENTS, f"{run_id}-PO-X{n}".encode(), body, label=kind)
    if kind == "schema":
        po_id = f"{run_id}-PO-NEG{n}"
        lines = [{"line_no": 1, "sku": "SKU-00000", "qty": -5}]
        data = {"po_id": po_id, "revision": 1, "supplier_id": "S", "location": "DC1"}
        body = _event(run_id, n, "po.created", {**data, "lines": lines})
        return SampleRecord(PO_EVENTS, po_id.encode(), body, label=kind)
    if kind == "entity":
        po_id = f"{run_id}-PO-GHOST{n}"
        data = {"po_id": po_id, "receipt_id": "R", "revision": 1}
        lines = [{"line_no": 1, "sku": "SKU-00000", "qty": 1}]
        body = _event(run_id, n, "goods.received", {**data, "lines": lines})
        return SampleRecord(PO_EVENTS, po_id.encode(), body, label=kind)
    if kind == "inventory":
        sku_loc = "SKU-00000@DC1"
        data = {"sku": "SKU-00000", "location": "DC1", "delta": "1.0001", "reason": "count"}
        body = _event(run_id, n, "inventory.adjusted", data)
        return SampleRecord(INVENTORY_EVENTS, sku_loc.encode(), body, label=kind)
    order_id = f"{run_id}-SO-{rng.randrange(10_000):05d}"
    if after.topic == ORDER_EVENTS and after.key is not None:
        order_id = after.key.decode()
    if kind == "key":
        body = _event(
            run_id,
            n,
            "order.acknowledged",
            {"order_id": order_id, "system": "erp", "status": "accepted"},
        )
        return SampleRecord(ORDER_EVENTS, b"not-" + order_id.encode(), body, label=kind)
    lines = [{"line_no": 99, "sku": "SKU-00000", "qty": 1}]  # a line no order has
    body = _event(run_id, n, "order.allocated", {"order_id": order_id, "lines": lines})
    return SampleRecord(ORDER_EVENTS, order_id.encode(), body, label=kind)


def build_input(seed: int, run_id: str, events: int) -> list[SampleRecord]:
    """The generated scenario with bad records inserted at seeded random places."""
    records = generate(seed=seed, run_id=run_id, shape=scenario_of(events))
    rng = random.Random(seed * 7919 + 1)
    out: list[SampleRecord] = []
    for record in records:
        out.append(record)
        if rng.random() < BAD_RATE:
            out.append(_bad_record(rng, run_id, len(out), record))
    return out


@dataclass(frozen=True)
class InputRecord:
    """One input record as read back from Kafka."""

    topic: str  # contract name, without prefix
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass
class Expected:
    """What the system must end with after processing all input exactly once."""

    positions: dict[str, dict[str, int]]
    #: every record that must be dead-lettered, with its reason
    dead_letters: dict[SourceOffset, str] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    pos: dict[str, PoState] = field(default_factory=dict)
    orders: dict[str, OrderState] = field(default_factory=dict)
    #: SKU@LOCATION -> event ids of the inventory events applied to it
    inventory_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: PO and order transitions: (exception_id, status, rule, entity_id, detail as JSON)
    transitions: Counter[tuple[str, str, str, str, str]] = field(default_factory=Counter)

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())


def transition_key(record: dict[str, Any]) -> tuple[str, str, str, str, str]:
    detail = orjson.dumps(record["detail"], option=orjson.OPT_SORT_KEYS).decode()
    return (record["exception_id"], record["status"], record["rule"], record["entity_id"], detail)


def entity_view(kind: str, state: Any) -> dict[str, Any]:
    """The HTTP view of a PO or order, open exceptions reduced to ids (their times vary)."""
    view = po_view(state) if kind == "po" else order_view(state)
    view["open_exceptions"] = sorted(e["exception_id"] for e in view["open_exceptions"])
    return view


def replay(records: list[InputRecord]) -> Expected:
    """Apply ``records`` (per partition, in offset order) once, with no SLA rules."""
    rules = Rules()
    events: list[AnyEvent] = []
    expected = Expected(positions={})
    for record in records:
        where = (record.topic, record.partition, record.offset)
        try:
            event = decode_input(
                record.topic, record.key, record.value, record.headers, max_bytes=MAX_RECORD_BYTES
            )
        except DecodeError as error:
            expected.dead_letters[where] = error.reason
            expected.outcomes["dead_lettered"] += 1
            continue
        events.append(event)
        key = entity_key(event)
        if isinstance(event, InventoryAdjusted | InventorySnapshot):
            ids = expected.inventory_ids[key]
            expected.outcomes["duplicate" if event.event_id in ids else "applied"] += 1
            ids.add(event.event_id)
            continue
        book: dict[str, Any] = expected.pos if record.topic == PO_EVENTS else expected.orders
        apply: Any = apply_po_event if record.topic == PO_EVENTS else apply_order_event
        state, result = apply(book.get(key), event, rules=rules)
        if state is not None:
            book[key] = state
        if isinstance(result, Rejection):
            expected.dead_letters[where] = result.reason
            expected.outcomes["dead_lettered"] += 1
            continue
        expected.outcomes[result.outcome] += 1
        for transition in result.transitions:
            expected.transitions[transition_key(transition.record())] += 1
    # Positions remember the last RECENT_EVENT_IDS inventory ids: the id check needs fewer.
    assert all(len(ids) < RECENT_EVENT_IDS for ids in expected.inventory_ids.values())
    expected.positions = reference_positions(events)
    return expected
