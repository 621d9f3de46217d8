"""Purchase-order state and the pure function that applies PO events to it.

Per PO line (contract): ``open = 0 if cancelled else max(0, ordered - received)`` and
``in_transit = min(open, max(0, asn_qty - received))``. A PO contributes ``inbound`` and
``in_transit`` at its location, and ``on_hand`` at each receipt's location.

An ASN or receipt sent again under the same id replaces the earlier one (a correction);
a repeated ``event_id`` has no second effect; a revision at or below the current one is
stale and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
from supplyflow.codecs.quantity import qty_to_json
from supplyflow.tables.common import (
    IN_TRANSIT,
    INBOUND,
    ON_HAND,
    Applied,
    Contributions,
    Rejection,
    add_into,
    diff,
    position_key,
    remember_event,
)

__all__ = ["PoLine", "PoState", "Receipt", "apply_po_event", "po_contributions", "po_view"]


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
    #: highest source offset applied (the version of its contributions)
    offset: int = -1
    contributions: Contributions = field(default_factory=dict)
    updated_at: str = ""

    def received(self, line_no: int) -> int:
        return sum(r.lines.get(line_no, 0) for r in self.receipts.values())

    def asn_qty(self, line_no: int) -> int:
        return sum(a.get(line_no, 0) for a in self.asns.values())

    def to_wire(self) -> list[Any]:
        return [
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
            self.offset,
            self.contributions,
            self.updated_at,
        ]

    @classmethod
    def from_wire(cls, w: list[Any]) -> PoState:
        return cls(
            po_id=w[0],
            revision=w[1],
            supplier_id=w[2],
            location=w[3],
            cancelled=w[4],
            lines={n: PoLine(sku, q) for n, sku, q in w[5]},
            asns={a: dict(map(tuple, q)) for a, q in w[6]},
            receipts={r: Receipt(loc, rev, dict(map(tuple, q))) for r, loc, rev, q in w[7]},
            acks=w[8],
            event_ids=w[9],
            offset=w[10],
            contributions=w[11],
            updated_at=w[12],
        )


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


def _check_lines(state: PoState, lines: tuple[Line, ...]) -> Rejection | None:
    for line in lines:
        known = state.lines.get(line.line_no)
        if known is None:
            return Rejection(
                "line_mismatch", f"{state.po_id} has no line {line.line_no} (sku {line.sku})"
            )
        if known.sku != line.sku:
            return Rejection(
                "line_mismatch",
                f"{state.po_id} line {line.line_no} is {known.sku}, not {line.sku}",
            )
    return None


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
    state: PoState | None, event: PoEvent, offset: int
) -> tuple[PoState | None, Applied | Rejection]:
    """Apply one event to a PO (``None``: not created yet). Mutates and returns the state."""
    if state is None:
        if not isinstance(event, PoCreated):
            return None, Rejection(
                "unknown_entity", f"{event.type} for {event.data.po_id}, which was never created"
            )
        state = _new_po(event)
        remember_event(state.event_ids, event.event_id)
        return state, _finish(state, event, offset)
    if event.event_id in state.event_ids:
        return state, Applied("duplicate")
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
    elif isinstance(event, PoAcknowledged):
        ack = event.data
        previous = state.acks.get(ack.system)
        if previous is None or ack.revision >= previous[0]:
            state.acks[ack.system] = [ack.revision, ack.status]
    elif isinstance(event, AsnIssued):
        rejection = _check_lines(state, event.data.lines)
        if rejection is not None:
            return state, rejection
        state.asns[event.data.asn_id] = _sum_lines(event.data.lines)
    elif isinstance(event, GoodsReceived):
        rejection = _check_lines(state, event.data.lines)
        if rejection is not None:
            return state, rejection
        state.receipts[event.data.receipt_id] = Receipt(
            event.data.location or state.location,
            event.data.revision,
            _sum_lines(event.data.lines),
        )
    remember_event(state.event_ids, event.event_id)
    return state, _finish(state, event, offset)


def _sum_lines(lines: tuple[Line, ...]) -> dict[int, int]:
    return {line.line_no: line.qty for line in lines}


def _finish(state: PoState, event: PoEvent, offset: int) -> Applied:
    new = po_contributions(state)
    deltas = diff(state.contributions, new)
    state.contributions = {k: v for k, v in new.items() if any(v)}
    state.offset = max(state.offset, offset)
    state.updated_at = event.occurred_at.isoformat()
    return Applied("applied", deltas)


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
        "updated_at": state.updated_at,
    }
