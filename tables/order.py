"""Sales-order state and the pure function that applies order events to it.

Per order line (contract): ``reserved = 0 if cancelled else max(0, ordered - shipped)`` and
``allocated_open = 0 if cancelled else max(0, allocated - shipped)``. An order contributes
at its location ``allocated``, ``reserved`` and ``on_hand`` (minus shipments, plus
restocked returns).

A shipment or return sent again under the same id replaces the earlier one; allocations
add up; a repeated ``event_id`` has no second effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Final

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
from supplyflow.codecs.state import StateFormat
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
from supplyflow.tables.deadlines import Deadline, answer, deadline, fire_due, next_due
from supplyflow.tables.exceptions import ExceptionBook, Rule, Rules, Transition

NO_RULES = Rules()

__all__ = [
    "ORDER_FORMAT",
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
    #: pending deadlines (see tables.deadlines): ACK_MISSING per system, INVOICE_MISSING
    #: per shipment
    deadlines: list[Deadline] = field(default_factory=list)
    exceptions: dict[str, list[Any]] = field(default_factory=dict)

    def shipped(self, line_no: int) -> int:
        return sum(s.get(line_no, 0) for s in self.shipments.values())

    def to_wire(self) -> list[Any]:
        """The stored form (:data:`ORDER_FORMAT`): a new field goes at the end, here and
        in the class (with a default), and bumps the format's version."""
        return [
            ORDER_FORMAT.version,
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
    def from_wire(cls, stored: Any) -> OrderState:
        """An order from its stored form, of any format version this release reads."""
        w = ORDER_FORMAT.unpack(stored)  # the fields in order; later ones keep their defaults
        w[4] = {n: OrderLine(sku, q, a) for n, sku, q, a in w[4]}
        w[5] = {s: dict(map(tuple, q)) for s, q in w[5]}
        w[7] = {r: [restock, dict(map(tuple, q))] for r, restock, q in w[7]}
        return cls(*w)

    def next_due(self) -> int | None:
        """The earliest pending deadline (epoch ms), if any."""
        return next_due(self.deadlines)


#: The rule of each kind of deadline stored before version 1.
_V0_RULES: Final = {"ack": ("ACK_MISSING", "system"), "invoice": ("INVOICE_MISSING", "shipment_id")}


def _order_from_v0(w: list[Any]) -> list[Any]:
    """Version 0 (no version stored) to 1: ``offsets`` was one int before it was kept
    per input stream, and a deadline was ``[due_ms, "ack" | "invoice", system or
    shipment_id, event_id]``."""
    w[10] = offsets_from_wire(w[10])
    migrated = []
    for due, kind, subject, cause in w[13]:
        rule, name = _V0_RULES[kind]
        migrated.append([due, rule, {name: subject}, cause])
    w[13] = migrated
    return w


#: How an order is stored (see supplyflow.codecs.state).
ORDER_FORMAT: Final = StateFormat(
    "order", 1, len(fields(OrderState)), migrations={0: _order_from_v0}
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
            deadline(due_base + sla, "ACK_MISSING", {"system": system}, event.event_id)
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
        detail = {"shipment_id": shipment_id}
        _answer(state, book, rules, "INVOICE_MISSING", detail, at_ms=epoch_ms(event.occurred_at))
        book.resolve("INVOICE_MISSING", detail, event_id=event.event_id, now=now)
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
                detail = {"shipment_id": shipment_id}
                at_ms = epoch_ms(event.occurred_at)
                _answer(state, book, rules, "INVOICE_MISSING", detail, at_ms=at_ms)
                state.deadlines.append(
                    deadline(at_ms + rules.invoice_ms, "INVOICE_MISSING", detail, event.event_id)
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
    state: OrderState,
    book: ExceptionBook,
    rules: Rules,
    rule: Rule,
    detail: dict[str, Any],
    *,
    at_ms: int,
) -> None:
    """Remove the ``rule`` deadlines of ``detail``, answered at ``at_ms`` (event time); one
    it answered after its due time plus grace was breached: its exception opens (raised
    at due + grace) for the caller to resolve."""
    state.deadlines = answer(
        state.deadlines,
        lambda pending, identity: pending == rule and identity == detail,
        at_ms=at_ms,
        grace_ms=rules.grace_ms,
        book=book,
        message=_message(state),
    )


def _on_ack(
    state: OrderState, book: ExceptionBook, event: OrderAcknowledged, rules: Rules, now: str
) -> None:
    ack = event.data
    detail = {"system": ack.system}
    _answer(state, book, rules, "ACK_MISSING", detail, at_ms=epoch_ms(event.occurred_at))
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


def _message(state: OrderState) -> Callable[[str, dict[str, Any], str], str]:
    """The text of the exception a breached deadline of ``state`` opens, per rule."""

    def message(rule: str, detail: dict[str, Any], due: str) -> str:
        if rule == "ACK_MISSING":
            return f"{detail['system']} has not acknowledged order {state.order_id} (due {due})"
        shipment_id = detail["shipment_id"]
        return f"shipment {shipment_id} of order {state.order_id} is not invoiced (due {due})"

    return message


def fire_order_deadlines(state: OrderState, until_ms: int, rules: Rules) -> list[Transition]:
    """Open ``ACK_MISSING`` / ``INVOICE_MISSING`` for every deadline whose due time plus
    grace is before ``until_ms``: the time up to which the order's input is known to be
    read (so no on-time answer can still be unread). ``raised_at`` is due + grace."""
    book = ExceptionBook("order", state.order_id, state.exceptions)
    state.deadlines = fire_due(
        state.deadlines, until_ms, grace_ms=rules.grace_ms, book=book, message=_message(state)
    )
    return book.transitions


#: What ``pending_deadlines`` of the HTTP view calls each rule's deadlines.
_VIEW_KINDS: Final = {"ACK_MISSING": "ack", "INVOICE_MISSING": "invoice"}


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
            {
                "kind": _VIEW_KINDS.get(d[1], d[1].lower()),
                "subject": next(iter(d[2].values()), None),
                "due": iso_ms(d[0]),
            }
            for d in state.deadlines
        ],
        "open_exceptions": ExceptionBook("order", state.order_id, state.exceptions).open_ones(),
        "updated_at": state.updated_at,
    }
