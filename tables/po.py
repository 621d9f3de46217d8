"""Purchase-order state and the pure function that applies PO events to it.

Per PO line (contract): ``open = 0 if cancelled else max(0, ordered - received)`` and
``in_transit = min(open, max(0, asn_qty - received))``. A PO contributes ``inbound`` and
``in_transit`` at its location, and ``on_hand`` at each receipt's location.

An ASN or receipt sent again under the same id replaces the earlier one (a correction);
a repeated ``event_id`` has no second effect; a revision at or below the current one is
stale and ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Final

from supplyflow.codecs.events import (
    AsnIssued,
    GoodsReceived,
    Line,
    PoAcknowledged,
    PoCancelled,
    PoCreated,
    PoEvent,
    PoUpdated,
)
from supplyflow.codecs.quantity import format_qty, qty_to_json
from supplyflow.codecs.state import StateFormat
from supplyflow.tables.common import (
    IN_TRANSIT,
    INBOUND,
    ON_HAND,
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
from supplyflow.tables.exceptions import ExceptionBook, Rules, Transition

NO_RULES = Rules()

__all__ = [
    "PO_FORMAT",
    "PoLine",
    "PoState",
    "Receipt",
    "apply_po_event",
    "fire_po_deadlines",
    "po_contributions",
    "po_view",
]


@dataclass(slots=True)
class PoLine:
    sku: str
    ordered: int


@dataclass(slots=True)
class Receipt:
    location: str
    revision: int
    lines: dict[int, int]


@dataclass(slots=True)
class PoState:
    """Everything supplyflow knows about one purchase order."""

    po_id: str
    revision: int
    supplier_id: str
    location: str
    cancelled: bool = False
    lines: dict[int, PoLine] = field(default_factory=dict)
    asns: dict[str, dict[int, int]] = field(default_factory=dict)
    receipts: dict[str, Receipt] = field(default_factory=dict)
    #: system -> [revision, status] of its latest acknowledgment
    acks: dict[str, list[Any]] = field(default_factory=dict)
    event_ids: list[str] = field(default_factory=list)
    #: input stream -> highest offset processed (see tables.batch: replays are skipped)
    offsets: dict[str, int] = field(default_factory=dict)
    contributions: Contributions = field(default_factory=dict)
    updated_at: str = ""
    #: pending deadlines (see tables.deadlines): ACK_MISSING per system and revision
    deadlines: list[Deadline] = field(default_factory=list)
    #: exception bookkeeping (see tables.exceptions.ExceptionBook)
    exceptions: dict[str, list[Any]] = field(default_factory=dict)
    #: occurred_at (epoch ms) of the current revision
    revision_at: int = 0

    def received(self, line_no: int) -> int:
        return sum(r.lines.get(line_no, 0) for r in self.receipts.values())

    def asn_qty(self, line_no: int) -> int:
        return sum(a.get(line_no, 0) for a in self.asns.values())

    def to_wire(self) -> list[Any]:
        """The stored form (:data:`PO_FORMAT`): a new field goes at the end, here and in
        the class (with a default), and bumps the format's version."""
        return [
            PO_FORMAT.version,
            self.po_id,
            self.revision,
            self.supplier_id,
            self.location,
            self.cancelled,
            [[n, ln.sku, ln.ordered] for n, ln in self.lines.items()],
            [[a, list(q.items())] for a, q in self.asns.items()],
            [[r, v.location, v.revision, list(v.lines.items())] for r, v in self.receipts.items()],
            self.acks,
            self.event_ids,
            self.offsets,
            self.contributions,
            self.updated_at,
            self.deadlines,
            self.exceptions,
            self.revision_at,
        ]

    @classmethod
    def from_wire(cls, stored: Any) -> PoState:
        """A PO from its stored form, of any format version this release reads."""
        w = PO_FORMAT.unpack(stored)  # the fields in order; later ones keep their defaults
        w[5] = {n: PoLine(sku, q) for n, sku, q in w[5]}
        w[6] = {a: dict(map(tuple, q)) for a, q in w[6]}
        w[7] = {r: Receipt(loc, rev, dict(map(tuple, q))) for r, loc, rev, q in w[7]}
        return cls(*w)

    def next_due(self) -> int | None:
        """The earliest pending deadline (epoch ms), if any."""
        return next_due(self.deadlines)


def _po_from_v0(w: list[Any]) -> list[Any]:
    """Version 0 (no version stored) to 1: ``offsets`` was one int before it was kept
    per input stream, and a deadline was ``[due_ms, system, revision, event_id]``."""
    w[10] = offsets_from_wire(w[10])
    w[13] = [
        deadline(due, "ACK_MISSING", {"system": system, "revision": revision}, cause)
        for due, system, revision, cause in w[13]
    ]
    return w


#: How a PO is stored (see supplyflow.codecs.state).
PO_FORMAT: Final = StateFormat("PO", 1, len(fields(PoState)), migrations={0: _po_from_v0})


def po_contributions(state: PoState) -> Contributions:
    """What this PO adds to each position it touches."""
    out: Contributions = {}
    for line_no, line in state.lines.items():
        received = state.received(line_no)
        open_qty = 0 if state.cancelled else max(0, line.ordered - received)
        in_transit = min(open_qty, max(0, state.asn_qty(line_no) - received))
        key = position_key(line.sku, state.location)
        add_into(out, key, INBOUND, open_qty)
        add_into(out, key, IN_TRANSIT, in_transit)
    for receipt in state.receipts.values():
        for line_no, qty in receipt.lines.items():
            add_into(out, position_key(state.lines[line_no].sku, receipt.location), ON_HAND, qty)
    return out


def _new_po(event: PoCreated) -> PoState:
    data = event.data
    return PoState(
        po_id=data.po_id,
        revision=data.revision,
        supplier_id=data.supplier_id,
        location=data.location,
        lines={ln.line_no: PoLine(ln.sku, ln.qty) for ln in data.lines},
    )


def _set_lines(state: PoState, lines: tuple[Line, ...]) -> Rejection | None:
    """A full snapshot of the lines: lines left out are no longer ordered."""
    for line in lines:
        known = state.lines.get(line.line_no)
        if known is not None and known.sku != line.sku and state.received(line.line_no):
            return Rejection(
                "line_mismatch",
                f"{state.po_id} line {line.line_no} was received as {known.sku}; "
                f"it cannot become {line.sku}",
            )
    kept = {n: PoLine(ln.sku, 0) for n, ln in state.lines.items()}
    kept.update({ln.line_no: PoLine(ln.sku, ln.qty) for ln in lines})
    state.lines = kept
    return None


def apply_po_event(
    state: PoState | None,
    event: PoEvent,
    *,
    rules: Rules = NO_RULES,
) -> tuple[PoState | None, Applied | Rejection]:
    """Apply one event to a PO (``None``: not created yet). Mutates and returns the state.

    The exceptions it opens or resolves are stamped with its ``occurred_at`` (event time:
    a replay stamps them the same); an answer after its deadline records the breach.
    """
    now = iso_ms(epoch_ms(event.occurred_at))
    if state is None:
        if not isinstance(event, PoCreated):
            return None, Rejection(
                "unknown_entity", f"{event.type} for {event.data.po_id}, which was never created"
            )
        state = _new_po(event)
        remember_event(state.event_ids, event.event_id)
        book = ExceptionBook("po", state.po_id, state.exceptions)
        _register_revision(state, event, rules, book)
        return state, _finish(state, event, book)
    if event.event_id in state.event_ids:
        return state, Applied("duplicate")
    book = ExceptionBook("po", state.po_id, state.exceptions)
    if isinstance(event, PoCreated | PoUpdated | PoCancelled):
        if event.data.revision <= state.revision:
            remember_event(state.event_ids, event.event_id)
            return state, Applied("stale")
        if isinstance(event, PoCancelled):
            state.cancelled = True
        else:
            rejection = _set_lines(state, event.data.lines)
            if rejection is not None:
                return state, rejection
        state.revision = event.data.revision
        _register_revision(state, event, rules, book)
    elif isinstance(event, PoAcknowledged):
        ack = event.data
        previous = state.acks.get(ack.system)
        if previous is None or ack.revision >= previous[0]:
            state.acks[ack.system] = [ack.revision, ack.status]
        _on_ack(state, book, event, rules, now)
        if ack.revision == state.revision and ack.system in rules.po_ack_ms:
            seconds = (epoch_ms(event.occurred_at) - state.revision_at) / 1000
            remember_event(state.event_ids, event.event_id)
            applied = _finish(state, event, book)
            applied.sync.append((ack.system, max(0.0, seconds)))
            return state, applied
    elif isinstance(event, AsnIssued):
        rejection = check_lines(state.po_id, state.lines, event.data.lines)
        if rejection is not None:
            return state, rejection
        state.asns[event.data.asn_id] = _sum_lines(event.data.lines)
    elif isinstance(event, GoodsReceived):
        rejection = check_lines(state.po_id, state.lines, event.data.lines)
        if rejection is not None:
            return state, rejection
        state.receipts[event.data.receipt_id] = Receipt(
            event.data.location or state.location,
            event.data.revision,
            _sum_lines(event.data.lines),
        )
        _check_receipt(state, book, event, rules, now)
    remember_event(state.event_ids, event.event_id)
    return state, _finish(state, event, book)


def _sum_lines(lines: tuple[Line, ...]) -> dict[int, int]:
    return {line.line_no: line.qty for line in lines}


def _finish(state: PoState, event: PoEvent, book: ExceptionBook) -> Applied:
    deltas = settle(state, po_contributions(state), event.occurred_at)
    return Applied("applied", deltas, book.transitions)


def _register_revision(state: PoState, event: PoEvent, rules: Rules, book: ExceptionBook) -> None:
    """A new revision replaces pending ack deadlines of older ones (contract); one that had
    already passed when the revision happened was breached, and opens ``ACK_MISSING``."""
    due_base = state.revision_at = epoch_ms(event.occurred_at)
    revision = state.revision
    state.deadlines = answer(
        state.deadlines,
        lambda rule, detail: rule == "ACK_MISSING" and detail["revision"] < revision,
        at_ms=due_base,
        grace_ms=rules.grace_ms,
        book=book,
        message=_message(state),
    )
    if not rules.po_ack_ms:
        return
    for system, sla_ms in rules.po_ack_ms.items():
        acked = state.acks.get(system)
        if acked is not None and acked[0] >= revision:
            continue
        detail = {"system": system, "revision": revision}
        state.deadlines.append(deadline(due_base + sla_ms, "ACK_MISSING", detail, event.event_id))


def _on_ack(
    state: PoState, book: ExceptionBook, event: PoAcknowledged, rules: Rules, now: str
) -> None:
    """An ack answers its system's deadlines up to its revision. One that came after a
    deadline (``occurred_at`` past due + grace) records the breach: ``ACK_MISSING`` opens
    (``raised_at`` due + grace) and is resolved by this ack at once, whether or not the
    deadline had fired yet."""
    ack = event.data
    state.deadlines = answer(
        state.deadlines,
        lambda rule, detail: (
            rule == "ACK_MISSING"
            and detail["system"] == ack.system
            and detail["revision"] <= ack.revision
        ),
        at_ms=epoch_ms(event.occurred_at),
        grace_ms=rules.grace_ms,
        book=book,
        message=_message(state),
    )
    for entry in list(book.entries.values()):
        rule, detail = entry[2], entry[3]
        if detail.get("system") != ack.system or detail.get("revision", 0) > ack.revision:
            continue
        if rule == "ACK_MISSING" or (rule == "ACK_REJECTED" and ack.status == "accepted"):
            book.resolve(rule, detail, event_id=event.event_id, now=now)
    if ack.status == "rejected":
        reason = f": {ack.reason}" if ack.reason else ""
        book.open(
            "ACK_REJECTED",
            {"system": ack.system, "revision": ack.revision},
            message=f"{ack.system} rejected {state.po_id} rev {ack.revision}{reason}",
            event_ids=[event.event_id],
            now=now,
        )


def _check_receipt(
    state: PoState, book: ExceptionBook, event: GoodsReceived, rules: Rules, now: str
) -> None:
    data = event.data
    if data.revision < state.revision:
        book.open(
            "RECEIPT_REVISION_MISMATCH",
            {"receipt_id": data.receipt_id},
            message=(
                f"receipt {data.receipt_id} of {state.po_id} was made against rev "
                f"{data.revision}, the PO is at rev {state.revision}"
            ),
            event_ids=[event.event_id],
            now=now,
        )
    if not state.asns:
        book.open(
            "ASN_MISSING",
            {"receipt_id": data.receipt_id},
            message=f"receipt {data.receipt_id} arrived for {state.po_id} without an ASN",
            event_ids=[event.event_id],
            now=now,
        )
    factor = 100 + rules.receipt_tolerance_pct
    for line in data.lines:
        ordered = state.lines[line.line_no].ordered
        received = state.received(line.line_no)
        if received * 100 > ordered * factor:
            book.open(
                "OVER_RECEIPT",
                {"line_no": line.line_no},
                message=(
                    f"{state.po_id} line {line.line_no} ({line.sku}): received "
                    f"{format_qty(received)} of {format_qty(ordered)} ordered"
                ),
                event_ids=[event.event_id],
                now=now,
            )


def _message(state: PoState) -> Callable[[str, dict[str, Any], str], str]:
    """The text of the exception a breached deadline of ``state`` opens, per rule."""

    def message(rule: str, detail: dict[str, Any], due: str) -> str:
        system, revision = detail["system"], detail["revision"]
        return f"{system} has not acknowledged {state.po_id} rev {revision} (due {due})"

    return message


def fire_po_deadlines(state: PoState, until_ms: int, rules: Rules) -> list[Transition]:
    """Open ``ACK_MISSING`` for every ack deadline whose due time plus grace is before
    ``until_ms``: the time up to which the PO's input is known to be read (so no on-time
    answer can still be unread). ``raised_at`` is the due time plus grace."""
    book = ExceptionBook("po", state.po_id, state.exceptions)
    state.deadlines = fire_due(
        state.deadlines, until_ms, grace_ms=rules.grace_ms, book=book, message=_message(state)
    )
    return book.transitions


def po_view(state: PoState) -> dict[str, Any]:
    """The PO as the HTTP API shows it."""
    lines = []
    for line_no, line in sorted(state.lines.items()):
        received = state.received(line_no)
        asn = state.asn_qty(line_no)
        open_qty = 0 if state.cancelled else max(0, line.ordered - received)
        lines.append(
            {
                "line_no": line_no,
                "sku": line.sku,
                "ordered": qty_to_json(line.ordered),
                "received": qty_to_json(received),
                "asn_qty": qty_to_json(asn),
                "open": qty_to_json(open_qty),
                "in_transit": qty_to_json(min(open_qty, max(0, asn - received))),
            }
        )
    return {
        "po_id": state.po_id,
        "revision": state.revision,
        "supplier_id": state.supplier_id,
        "location": state.location,
        "cancelled": state.cancelled,
        "lines": lines,
        "asns": sorted(state.asns),
        "receipts": [
            {"receipt_id": rid, "location": r.location, "revision": r.revision}
            for rid, r in sorted(state.receipts.items())
        ],
        "acks": {s: {"revision": a[0], "status": a[1]} for s, a in sorted(state.acks.items())},
        "events": len(state.event_ids),
        "pending_deadlines": [{**d[2], "due": iso_ms(d[0])} for d in state.deadlines],
        "open_exceptions": ExceptionBook("po", state.po_id, state.exceptions).open_ones(),
        "updated_at": state.updated_at,
    }
