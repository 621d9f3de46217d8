"""A deliberately plain reference computation of positions from a list of events.

It shares no code with the actors: it replays each entity's events in order into simple
dictionaries and then applies the contract's formulas once, at the end. Tests, the
benchmark and replay tooling compare the running system against it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from supplyflow.codecs.events import (
    AnyEvent,
    AsnIssued,
    GoodsReceived,
    InventoryAdjusted,
    OrderAllocated,
    OrderCancelled,
    OrderPlaced,
    OrderShipped,
    PoCancelled,
    PoCreated,
    PoUpdated,
    ReturnReceived,
)

__all__ = ["POSITION_FIELDS", "reference_positions"]

POSITION_FIELDS = (
    "on_hand",
    "allocated",
    "available",
    "inbound",
    "in_transit",
    "reserved",
    "projected",
)


def _lines_ok(known: dict[int, Any], lines: Iterable[Any]) -> bool:
    return all(ln.line_no in known and known[ln.line_no][0] == ln.sku for ln in lines)


def _apply_po(pos_state: dict[str, dict[str, Any]], seen: set[str], event: AnyEvent) -> None:
    data: Any = event.data
    po = pos_state.get(data.po_id)
    if po is None and not isinstance(event, PoCreated):
        return  # unknown entity: dead-lettered
    if event.event_id in seen:
        return
    if po is None:
        pos_state[data.po_id] = {
            "rev": data.revision,
            "loc": data.location,
            "cancelled": False,
            "lines": {ln.line_no: (ln.sku, ln.qty) for ln in data.lines},
            "asn": {},
            "rcv": {},
        }
    elif isinstance(event, PoCreated | PoUpdated | PoCancelled):
        if data.revision > po["rev"]:
            if isinstance(event, PoCancelled):
                po["cancelled"] = True
            else:
                lines = {n: (sku, 0) for n, (sku, _) in po["lines"].items()}
                lines.update({ln.line_no: (ln.sku, ln.qty) for ln in data.lines})
                po["lines"] = lines
            po["rev"] = data.revision
    elif isinstance(event, AsnIssued | GoodsReceived):
        if not _lines_ok(po["lines"], data.lines):
            return  # line_mismatch: dead-lettered
        quantities = {ln.line_no: ln.qty for ln in data.lines}
        if isinstance(event, AsnIssued):
            po["asn"][data.asn_id] = quantities
        else:
            po["rcv"][data.receipt_id] = (data.location or po["loc"], quantities)
    seen.add(event.event_id)


def _apply_order(orders: dict[str, dict[str, Any]], seen: set[str], event: AnyEvent) -> None:
    data: Any = event.data
    order = orders.get(data.order_id)
    if order is None and not isinstance(event, OrderPlaced):
        return
    if event.event_id in seen:
        return
    if order is None:
        orders[data.order_id] = {
            "loc": data.location,
            "cancelled": False,
            "lines": {ln.line_no: (ln.sku, ln.qty) for ln in data.lines},
            "alloc": defaultdict(int),
            "ship": {},
            "ret": {},
        }
    elif isinstance(event, OrderCancelled):
        order["cancelled"] = True
    elif isinstance(event, OrderAllocated | OrderShipped | ReturnReceived):
        if not _lines_ok(order["lines"], data.lines):
            return
        if isinstance(event, OrderAllocated):
            for ln in data.lines:
                order["alloc"][ln.line_no] += ln.qty
        elif isinstance(event, OrderShipped):
            order["ship"][data.shipment_id] = {ln.line_no: ln.qty for ln in data.lines}
        else:
            order["ret"][data.rma_id] = (data.restock, {ln.line_no: ln.qty for ln in data.lines})
    seen.add(event.event_id)


def _po_positions(pos: dict[str, dict[str, int]], po: dict[str, Any]) -> None:
    for line_no, (sku, ordered) in po["lines"].items():
        received = sum(q.get(line_no, 0) for _, q in po["rcv"].values())
        asn = sum(q.get(line_no, 0) for q in po["asn"].values())
        open_qty = 0 if po["cancelled"] else max(0, ordered - received)
        key = f"{sku}@{po['loc']}"
        pos[key]["inbound"] += open_qty
        pos[key]["in_transit"] += min(open_qty, max(0, asn - received))
    for location, quantities in po["rcv"].values():
        for line_no, qty in quantities.items():
            pos[f"{po['lines'][line_no][0]}@{location}"]["on_hand"] += qty


def _order_positions(pos: dict[str, dict[str, int]], order: dict[str, Any]) -> None:
    for line_no, (sku, ordered) in order["lines"].items():
        shipped = sum(s.get(line_no, 0) for s in order["ship"].values())
        key = f"{sku}@{order['loc']}"
        pos[key]["on_hand"] -= shipped
        if not order["cancelled"]:
            pos[key]["reserved"] += max(0, ordered - shipped)
            pos[key]["allocated"] += max(0, order["alloc"][line_no] - shipped)
    for restock, quantities in order["ret"].values():
        if restock:
            for line_no, qty in quantities.items():
                pos[f"{order['lines'][line_no][0]}@{order['loc']}"]["on_hand"] += qty


def reference_positions(events: Iterable[AnyEvent]) -> dict[str, dict[str, int]]:
    """Positions (integer thousandths per field) after all ``events``, in their order."""
    pos: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(POSITION_FIELDS, 0))
    seen: dict[str, set[str]] = defaultdict(set)
    adjust_ids: dict[str, set[str]] = defaultdict(set)
    pos_state: dict[str, dict[str, Any]] = {}
    order_state: dict[str, dict[str, Any]] = {}
    for event in events:
        data: Any = event.data
        if isinstance(event, InventoryAdjusted):
            key = f"{data.sku}@{data.location}"
            if event.event_id not in adjust_ids[key]:
                adjust_ids[key].add(event.event_id)
                pos[key]["on_hand"] += data.delta
        elif hasattr(data, "po_id"):
            _apply_po(pos_state, seen["po:" + data.po_id], event)
        elif hasattr(data, "order_id"):
            _apply_order(order_state, seen["order:" + data.order_id], event)
    for po in pos_state.values():
        _po_positions(pos, po)
    for order in order_state.values():
        _order_positions(pos, order)
    for values in pos.values():
        values["available"] = values["on_hand"] - values["allocated"]
        values["projected"] = values["on_hand"] + values["inbound"] - values["reserved"]
    return dict(pos)
