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
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from supplyflow.app.sample import SampleRecord, envelope
from supplyflow.app.topics import INVENTORY_EVENTS, ORDER_EVENTS, PO_EVENTS
from supplyflow.app.workload import Scenario, generate
from supplyflow.codecs import DecodeError, decode_input
from supplyflow.codecs.events import (
    AnyEvent,
    InventoryAdjusted,
    InventorySnapshot,
    entity_key,
)
from supplyflow.codecs.quantity import format_qty
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
    "crossing_streams",
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


def build_input(seed: int, run_id: str, events: int, *, hot: int = 0) -> list[SampleRecord]:
    """The generated scenario with bad records inserted at seeded random places, and with
    ``hot`` positions crossing zero all along (see :func:`crossing_streams`)."""
    records = generate(seed=seed, run_id=run_id, shape=scenario_of(events))
    rng = random.Random(seed * 7919 + 1)
    out: list[SampleRecord] = []
    for record in records:
        out.append(record)
        if rng.random() < BAD_RATE:
            out.append(_bad_record(rng, run_id, len(out), record))
    if hot:
        out = _interleave(rng, out, crossing_streams(seed, run_id, hot))
    return out


#: Each hot position's ``available`` crosses zero about this often (its inventory events,
#: about half of the crossings, stay below ``RECENT_EVENT_IDS``).
CROSSINGS: Final = 400
#: Largest distance from zero a crossing goes, in units.
_SWING: Final = 40


def crossing_streams(seed: int, run_id: str, positions: int) -> list[list[SampleRecord]]:
    """Per hot position, records that each push its ``available`` across zero.

    Below zero by an allocation (on an order of that SKU there, placed first) or a negative
    adjustment; back above by a positive adjustment or by cancelling the order (its
    allocation is released). Whether a batch ends below zero (``OVERALLOCATION`` opens) or
    not (it resolves) then depends on where the batch boundaries fall, which the faults
    move. Each stream is in its entities' order; :func:`build_input` interleaves them.
    """
    rng = random.Random(seed * 104_729 + 3)
    return [_HotPosition(rng, run_id, i).records() for i in range(positions)]


class _HotPosition:
    """One position driven across zero :data:`CROSSINGS` times."""

    def __init__(self, rng: random.Random, run_id: str, n: int) -> None:
        self.rng = rng
        self.prefix = f"{run_id}-hot{n:02d}"
        self.sku, self.location = f"SKU-HOT{n:02d}", f"DC{n % 4 + 1}"
        self.order_prefix = f"{run_id}-SO-HOT{n:02d}"
        self.out: list[SampleRecord] = []
        self.available = 0  # thousandths, as the records leave it
        self.order = ""  # the order allocations go to ("": place one first)
        self.allocated = 0
        self.orders = 0

    def add(self, topic: str, key: str, type_: str, data: dict[str, Any]) -> None:
        n = len(self.out) + 1
        stamp = HOT_CLOCK + timedelta(seconds=n)
        body = envelope(f"{self.prefix}-{n:05d}", type_, "faults", stamp, data)
        self.out.append(SampleRecord(topic, key.encode(), orjson.dumps(body), label=type_))

    def adjust(self, delta: int) -> None:
        data = {"sku": self.sku, "location": self.location, "delta": format_qty(delta)}
        key = f"{self.sku}@{self.location}"
        self.add(INVENTORY_EVENTS, key, "inventory.adjusted", {**data, "reason": "count"})
        self.available += delta

    def allocate(self, qty: int) -> None:
        if not self.order:
            self.orders += 1
            self.order, self.allocated = f"{self.order_prefix}-{self.orders:04d}", 0
            line: dict[str, Any] = {"line_no": 1, "sku": self.sku, "qty": 100_000}
            placed = {"order_id": self.order, "channel": "web", "location": self.location}
            self.add(ORDER_EVENTS, self.order, "order.placed", {**placed, "lines": [line]})
        line = {"line_no": 1, "sku": self.sku, "qty": format_qty(qty)}
        allocated = {"order_id": self.order, "lines": [line]}
        self.add(ORDER_EVENTS, self.order, "order.allocated", allocated)
        self.allocated += qty
        self.available -= qty

    def cancel(self) -> None:
        self.add(ORDER_EVENTS, self.order, "order.cancelled", {"order_id": self.order})
        self.available += self.allocated
        self.order, self.allocated = "", 0

    def records(self) -> list[SampleRecord]:
        rng = self.rng
        for _ in range(CROSSINGS + rng.randint(0, 1)):  # ends below zero or not
            swing = rng.randint(1, _SWING) * 1000 + rng.choice((0, 0, 125, 500))
            if self.available >= 0:
                need = self.available + swing
                if rng.random() < 0.5:
                    self.allocate(need)
                else:
                    self.adjust(-need)
            elif self.order and self.allocated + self.available >= 0 and rng.random() < 0.4:
                self.cancel()
            else:
                self.adjust(swing - self.available)
        return self.out


HOT_CLOCK: Final = datetime(2026, 11, 1, tzinfo=UTC)


def _interleave(
    rng: random.Random, base: list[SampleRecord], streams: list[list[SampleRecord]]
) -> list[SampleRecord]:
    """``base`` and ``streams`` merged at random places, each in its own order."""
    picks = [-1] * len(base) + [i for i, stream in enumerate(streams) for _ in stream]
    rng.shuffle(picks)
    sources = [iter(base), *(iter(stream) for stream in streams)]
    return [next(sources[pick + 1]) for pick in picks]


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
