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
    check_lines,
    epoch_ms,
    iso_ms,
    offsets_from_wire,
    position_key,
    remember_event,
    settle,
)
from supplyflow.tables.exceptions import ExceptionBook, Rules, Transition

NO_RULES = Rules()

__all__ = [
    "OrderLine",
    "OrderState",
    "apply_order_event",
    "fire_order_deadlines",
    "order_contributions",
    "order_view",
]


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
    #: input stream -> highest offset processed (see tables.batch: replays are skipped)
    offsets: dict[str, int] = field(default_factory=dict)
    contributions: Contributions = field(default_factory=dict)
    updated_at: str = ""
    #: pending deadlines: [due_ms, kind ("ack" | "invoice"), system or shipment_id, event_id]
    deadlines: list[list[Any]] = field(default_factory=list)
    exceptions: dict[str, list[Any]] = field(default_factory=dict)

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
            self.offsets,
            self.contributions,
            self.updated_at,
            self.deadlines,
            self.exceptions,
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
            offsets=offsets_from_wire(w[10]),
            contributions=w[11],
            updated_at=w[12],
            deadlines=w[13],
            exceptions=w[14],
        )

    def next_due(self) -> int | None:
        """The earliest pending deadline (epoch ms), if any."""
        return min((d[0] for d in self.deadlines), default=None)


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


def _by_line(lines: tuple[Line, ...]) -> dict[int, int]:
    return {line.line_no: line.qty for line in lines}


def apply_order_event(
    state: OrderState | None,
    event: OrderEvent,
    *,
    rules: Rules = NO_RULES,
) -> tuple[OrderState | None, Applied | Rejection]:
    """Apply one event to an order (``None``: not placed yet). Mutates and returns it.

    The exceptions it opens or resolves are stamped with its ``occurred_at`` (event time);
    an answer after its deadline records the breach.
    """
    now = iso_ms(epoch_ms(event.occurred_at))
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
        due_base = epoch_ms(event.occurred_at)
        state.deadlines = [
            [due_base + sla, "ack", system, event.event_id]
            for system, sla in rules.order_ack_ms.items()
        ]
        remember_event(state.event_ids, event.event_id)
        return state, _finish(state, event, ExceptionBook("order", state.order_id, {}))
    if event.event_id in state.event_ids:
        return state, Applied("duplicate")
    book = ExceptionBook("order", state.order_id, state.exceptions)
    if isinstance(event, OrderPlaced):
        remember_event(state.event_ids, event.event_id)
        return state, Applied("stale")  # placed twice: the first placement stands
    if isinstance(event, OrderAcknowledged):
        state.acks[event.data.system] = event.data.status
        _on_ack(state, book, event, rules, now)
    elif isinstance(event, OrderCancelled):
        state.cancelled = True
    elif isinstance(event, OrderInvoiced):
        shipment_id = event.data.shipment_id
        state.invoices[shipment_id] = event.data.invoice_id
        _answer(state, book, rules, "invoice", shipment_id, at_ms=epoch_ms(event.occurred_at))
        book.resolve(
            "INVOICE_MISSING", {"shipment_id": shipment_id}, event_id=event.event_id, now=now
        )
    else:
        rejection = check_lines(state.order_id, state.lines, event.data.lines)
        if rejection is not None:
            return state, rejection
        if isinstance(event, OrderAllocated):
            for line in event.data.lines:
                state.lines[line.line_no].allocated += line.qty
        elif isinstance(event, OrderShipped):
            shipment_id = event.data.shipment_id
            if rules.invoice_ms is not None and shipment_id not in state.invoices:
                # A correction restarts the shipment's deadline; one it had already
                # passed when the correction happened was breached.
                _answer(
                    state, book, rules, "invoice", shipment_id, at_ms=epoch_ms(event.occurred_at)
                )
                state.deadlines.append(
                    [
                        epoch_ms(event.occurred_at) + rules.invoice_ms,
                        "invoice",
                        shipment_id,
                        event.event_id,
                    ]
                )
            state.shipments[shipment_id] = _by_line(event.data.lines)
        elif isinstance(event, ReturnReceived):
            state.returns[event.data.rma_id] = [event.data.restock, _by_line(event.data.lines)]
    remember_event(state.event_ids, event.event_id)
    return state, _finish(state, event, book)


def _finish(state: OrderState, event: OrderEvent, book: ExceptionBook) -> Applied:
    deltas = settle(state, order_contributions(state), event.occurred_at)
    return Applied("applied", deltas, book.transitions)


def _answer(
    state: OrderState, book: ExceptionBook, rules: Rules, kind: str, subject: str, *, at_ms: int
) -> None:
    """Remove the ``kind`` deadlines of ``subject``, answered at ``at_ms`` (event time); one
    it answered after its due time plus grace was breached: its exception opens (raised
    at due + grace) for the caller to resolve."""
    kept = []
    for deadline in state.deadlines:
        if deadline[1] != kind or deadline[2] != subject:
            kept.append(deadline)
        elif at_ms > deadline[0] + rules.grace_ms:
            _open_missing(state, book, deadline, rules)
    state.deadlines = kept


def _on_ack(
    state: OrderState, book: ExceptionBook, event: OrderAcknowledged, rules: Rules, now: str
) -> None:
    ack = event.data
    _answer(state, book, rules, "ack", ack.system, at_ms=epoch_ms(event.occurred_at))
    detail = {"system": ack.system}
    book.resolve("ACK_MISSING", detail, event_id=event.event_id, now=now)
    if ack.status == "accepted":
        book.resolve("ACK_REJECTED", detail, event_id=event.event_id, now=now)
    else:
        reason = f": {ack.reason}" if ack.reason else ""
        book.open(
            "ACK_REJECTED",
            detail,
            message=f"{ack.system} rejected order {state.order_id}{reason}",
            event_ids=[event.event_id],
            now=now,
        )


def _open_missing(
    state: OrderState, book: ExceptionBook, deadline: list[Any], rules: Rules
) -> None:
    """``ACK_MISSING`` or ``INVOICE_MISSING`` for a breached deadline, raised at its due
    time plus grace."""
    due, kind, subject, cause = deadline
    raised_at = iso_ms(due + rules.grace_ms)
    if kind == "ack":
        book.open(
            "ACK_MISSING",
            {"system": subject},
            message=f"{subject} has not acknowledged order {state.order_id} (due {iso_ms(due)})",
            event_ids=[cause],
            now=raised_at,
        )
    else:
        book.open(
            "INVOICE_MISSING",
            {"shipment_id": subject},
            message=(
                f"shipment {subject} of order {state.order_id} is not invoiced (due {iso_ms(due)})"
            ),
            event_ids=[cause],
            now=raised_at,
        )


def fire_order_deadlines(state: OrderState, until_ms: int, rules: Rules) -> list[Transition]:
    """Open ``ACK_MISSING`` / ``INVOICE_MISSING`` for every deadline whose due time plus
    grace is before ``until_ms``: the time up to which the order's input is known to be
    read (so no on-time answer can still be unread). ``raised_at`` is due + grace."""
    book = ExceptionBook("order", state.order_id, state.exceptions)
    pending = []
    for deadline in state.deadlines:
        if deadline[0] + rules.grace_ms < until_ms:
            _open_missing(state, book, deadline, rules)
        else:
            pending.append(deadline)
    state.deadlines = pending
    return book.transitions


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
        "pending_deadlines": [
            {"kind": d[1], "subject": d[2], "due": iso_ms(d[0])} for d in state.deadlines
        ],
        "open_exceptions": ExceptionBook("order", state.order_id, state.exceptions).open_ones(),
        "updated_at": state.updated_at,
    }
