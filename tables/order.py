"""Sales-order state and the pure function that applies order events to it.

Per order line (contract): ``reserved = 0 if cancelled else max(0, ordered - shipped)`` and
``allocated_open = 0 if cancelled else max(0, allocated - shipped)``. An order contributes
at its location ``allocated``, ``reserved`` and ``on_hand`` (minus shipments, plus
restocked returns).

A shipment or return sent again under the same id replaces the earlier one; allocations
add up; a repeated ``event_id`` has no second effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from supplyflow.codecs.events import (
    Line,
    OrderAcknowledged,
    OrderAllocated,
    OrderCancelled,
    OrderEvent,
    OrderInvoiced,
    OrderPlaced,
    OrderShipped,
    ReturnReceived,
)
from supplyflow.codecs.quantity import qty_to_json
from supplyflow.tables.common import (
    ALLOCATED,
    ON_HAND,
    RESERVED,
    Applied,
    Contributions,
    Rejection,
    add_into,
    diff,
    position_key,
    remember_event,
)

__all__ = ["OrderLine", "OrderState", "apply_order_event", "order_contributions", "order_view"]


@dataclass(slots=True)
class OrderLine:
    sku: str
    ordered: int
    allocated: int = 0


@dataclass(slots=True)
class OrderState:
    """Everything supplyflow knows about one sales order."""

    order_id: str
    channel: str
    location: str
    cancelled: bool = False
    lines: dict[int, OrderLine] = field(default_factory=dict)
    shipments: dict[str, dict[int, int]] = field(default_factory=dict)
    #: shipment_id -> invoice_id
    invoices: dict[str, str] = field(default_factory=dict)
    #: rma_id -> [restock, {line_no: qty}]
    returns: dict[str, list[Any]] = field(default_factory=dict)
    #: system -> status of its latest acknowledgment
    acks: dict[str, str] = field(default_factory=dict)
    event_ids: list[str] = field(default_factory=list)
    offset: int = -1
    contributions: Contributions = field(default_factory=dict)
    updated_at: str = ""

    def shipped(self, line_no: int) -> int:
        return sum(s.get(line_no, 0) for s in self.shipments.values())

    def to_wire(self) -> list[Any]:
        return [
            self.order_id,
            self.channel,
            self.location,
            self.cancelled,
            [[n, ln.sku, ln.ordered, ln.allocated] for n, ln in self.lines.items()],
            [[s, list(q.items())] for s, q in self.shipments.items()],
            self.invoices,
            [[r, v[0], list(v[1].items())] for r, v in self.returns.items()],
            self.acks,
            self.event_ids,
            self.offset,
            self.contributions,
            self.updated_at,
        ]

    @classmethod
    def from_wire(cls, w: list[Any]) -> OrderState:
        return cls(
            order_id=w[0],
            channel=w[1],
            location=w[2],
            cancelled=w[3],
            lines={n: OrderLine(sku, q, a) for n, sku, q, a in w[4]},
            shipments={s: dict(map(tuple, q)) for s, q in w[5]},
            invoices=w[6],
            returns={r: [restock, dict(map(tuple, q))] for r, restock, q in w[7]},
            acks=w[8],
            event_ids=w[9],
            offset=w[10],
            contributions=w[11],
            updated_at=w[12],
        )


def order_contributions(state: OrderState) -> Contributions:
    """What this order adds to each position at its location."""
    out: Contributions = {}
    for line_no, line in state.lines.items():
        shipped = state.shipped(line_no)
        key = position_key(line.sku, state.location)
        if not state.cancelled:
            add_into(out, key, RESERVED, max(0, line.ordered - shipped))
            add_into(out, key, ALLOCATED, max(0, line.allocated - shipped))
        add_into(out, key, ON_HAND, -shipped)
    for restock, lines in state.returns.values():
        if restock:
            for line_no, qty in lines.items():
                add_into(out, position_key(state.lines[line_no].sku, state.location), ON_HAND, qty)
    return out


def _check_lines(state: OrderState, lines: tuple[Line, ...]) -> Rejection | None:
    for line in lines:
        known = state.lines.get(line.line_no)
        if known is None:
            return Rejection(
                "line_mismatch", f"{state.order_id} has no line {line.line_no} (sku {line.sku})"
            )
        if known.sku != line.sku:
            return Rejection(
                "line_mismatch",
                f"{state.order_id} line {line.line_no} is {known.sku}, not {line.sku}",
            )
    return None


def _by_line(lines: tuple[Line, ...]) -> dict[int, int]:
    return {line.line_no: line.qty for line in lines}


def apply_order_event(
    state: OrderState | None, event: OrderEvent, offset: int
) -> tuple[OrderState | None, Applied | Rejection]:
    """Apply one event to an order (``None``: not placed yet). Mutates and returns it."""
    if state is None:
        if not isinstance(event, OrderPlaced):
            return None, Rejection(
                "unknown_entity",
                f"{event.type} for {event.data.order_id}, which was never placed",
            )
        data = event.data
        state = OrderState(
            order_id=data.order_id,
            channel=data.channel,
            location=data.location,
            lines={ln.line_no: OrderLine(ln.sku, ln.qty) for ln in data.lines},
        )
        remember_event(state.event_ids, event.event_id)
        return state, _finish(state, event, offset)
    if event.event_id in state.event_ids:
        return state, Applied("duplicate")
    if isinstance(event, OrderPlaced):
        remember_event(state.event_ids, event.event_id)
        return state, Applied("stale")  # placed twice: the first placement stands
    if isinstance(event, OrderAcknowledged):
        state.acks[event.data.system] = event.data.status
    elif isinstance(event, OrderCancelled):
        state.cancelled = True
    elif isinstance(event, OrderInvoiced):
        state.invoices[event.data.shipment_id] = event.data.invoice_id
    else:
        rejection = _check_lines(state, event.data.lines)
        if rejection is not None:
            return state, rejection
        if isinstance(event, OrderAllocated):
            for line in event.data.lines:
                state.lines[line.line_no].allocated += line.qty
        elif isinstance(event, OrderShipped):
            state.shipments[event.data.shipment_id] = _by_line(event.data.lines)
        elif isinstance(event, ReturnReceived):
            state.returns[event.data.rma_id] = [event.data.restock, _by_line(event.data.lines)]
    remember_event(state.event_ids, event.event_id)
    return state, _finish(state, event, offset)


def _finish(state: OrderState, event: OrderEvent, offset: int) -> Applied:
    new = order_contributions(state)
    deltas = diff(state.contributions, new)
    state.contributions = {k: v for k, v in new.items() if any(v)}
    state.offset = max(state.offset, offset)
    state.updated_at = event.occurred_at.isoformat()
    return Applied("applied", deltas)


def order_view(state: OrderState) -> dict[str, Any]:
    """The order as the HTTP API shows it."""
    lines = []
    for line_no, line in sorted(state.lines.items()):
        shipped = state.shipped(line_no)
        live = not state.cancelled
        lines.append(
            {
                "line_no": line_no,
                "sku": line.sku,
                "ordered": qty_to_json(line.ordered),
                "allocated": qty_to_json(line.allocated),
                "shipped": qty_to_json(shipped),
                "reserved": qty_to_json(max(0, line.ordered - shipped) if live else 0),
                "allocated_open": qty_to_json(max(0, line.allocated - shipped) if live else 0),
            }
        )
    return {
        "order_id": state.order_id,
        "channel": state.channel,
        "location": state.location,
        "cancelled": state.cancelled,
        "lines": lines,
        "shipments": [
            {"shipment_id": sid, "invoice_id": state.invoices.get(sid)}
            for sid in sorted(state.shipments)
        ],
        "returns": [
            {"rma_id": rid, "restock": bool(r[0])} for rid, r in sorted(state.returns.items())
        ],
        "acks": dict(sorted(state.acks.items())),
        "events": len(state.event_ids),
        "updated_at": state.updated_at,
    }
