"""A small, deterministic sample scenario: the demo's input and the integration tests'.

It covers each event type and a handful of bad records, each labelled with the
dead-letter reason it must produce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import orjson

from supplyflow.app.topics import INVENTORY_EVENTS, ORDER_EVENTS, PO_EVENTS

__all__ = ["SampleRecord", "envelope", "sample_scenario"]

OK = "ok"


@dataclass(frozen=True)
class SampleRecord:
    """One record to produce; ``expect`` is ``ok`` or the dead-letter reason it must get."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    expect: str = OK
    label: str = ""


def envelope(
    event_id: str, type_: str, source: str, occurred_at: datetime, data: dict[str, Any]
) -> dict[str, Any]:
    """The contract's event envelope around ``data`` (``occurred_at`` in UTC)."""
    return {
        "event_id": event_id,
        "type": type_,
        "schema_version": 1,
        "source": source,
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


class _Builder:
    def __init__(self, start: datetime, run_id: str) -> None:
        self.now = start
        self.run_id = run_id
        self.seq = 0
        self.records: list[SampleRecord] = []

    def envelope(self, type_: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        self.now += timedelta(milliseconds=100)
        return envelope(f"{self.run_id}-e{self.seq:05d}", type_, source, self.now, data)

    def add(
        self,
        topic: str,
        key: str | None,
        type_: str,
        source: str,
        data: dict[str, Any],
        *,
        expect: str = OK,
        label: str = "",
    ) -> dict[str, Any]:
        body = self.envelope(type_, source, data)
        self.records.append(
            SampleRecord(
                topic,
                None if key is None else key.encode(),
                orjson.dumps(body),
                expect=expect,
                label=label or type_,
            )
        )
        return body

    def raw(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes,
        expect: str,
        label: str,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.records.append(SampleRecord(topic, key, value, headers or [], expect, label))


def _lines(*items: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"line_no": i, "sku": sku, "qty": qty} for i, (sku, qty) in enumerate(items, 1)]


def sample_scenario(
    run_id: str = "demo", start: datetime | None = None, *, max_record_bytes: int = 1024 * 1024
) -> list[SampleRecord]:
    """The sample records, in the order to produce them. Ids are prefixed with ``run_id``."""
    b = _Builder(start or datetime.now(UTC), run_id)
    po1, po2 = f"{run_id}-PO-1001", f"{run_id}-PO-1002"
    o1, o2, o3 = f"{run_id}-SO-1", f"{run_id}-SO-2", f"{run_id}-SO-3"
    loc = "DC1"

    b.add(
        PO_EVENTS,
        po1,
        "po.created",
        "procurement",
        {
            "po_id": po1,
            "revision": 1,
            "supplier_id": "SUP-7",
            "location": loc,
            "lines": _lines(("SKU-A", 100), ("SKU-B", "50.500")),
        },
    )
    b.add(
        PO_EVENTS,
        po1,
        "po.acknowledged",
        "erp",
        {"po_id": po1, "revision": 1, "system": "erp", "status": "accepted"},
    )
    b.add(
        PO_EVENTS,
        po1,
        "asn.issued",
        "supplier",
        {"po_id": po1, "asn_id": "ASN-1", "lines": _lines(("SKU-A", 60))},
    )
    b.add(
        PO_EVENTS,
        po1,
        "goods.received",
        "wms",
        {"po_id": po1, "receipt_id": "RCV-1", "revision": 1, "lines": _lines(("SKU-A", 60))},
    )
    b.add(
        PO_EVENTS,
        po2,
        "po.created",
        "procurement",
        {
            "po_id": po2,
            "revision": 1,
            "supplier_id": "SUP-9",
            "location": loc,
            "lines": _lines(("SKU-C", 20)),
        },
    )
    b.add(
        PO_EVENTS,
        po2,
        "po.updated",
        "procurement",
        {"po_id": po2, "revision": 2, "lines": _lines(("SKU-C", 25))},
    )
    b.add(PO_EVENTS, po2, "po.cancelled", "procurement", {"po_id": po2, "revision": 3})

    b.add(
        INVENTORY_EVENTS,
        f"SKU-A@{loc}",
        "inventory.adjusted",
        "wms",
        {"sku": "SKU-A", "location": loc, "delta": 40, "reason": "cycle count"},
    )
    b.add(
        ORDER_EVENTS,
        o1,
        "order.placed",
        "channel:web",
        {"order_id": o1, "channel": "web", "location": loc, "lines": _lines(("SKU-A", 30))},
    )
    b.add(
        ORDER_EVENTS,
        o1,
        "order.acknowledged",
        "erp",
        {"order_id": o1, "system": "erp", "status": "accepted"},
    )
    b.add(
        ORDER_EVENTS, o1, "order.allocated", "erp", {"order_id": o1, "lines": _lines(("SKU-A", 30))}
    )
    b.add(
        ORDER_EVENTS,
        o1,
        "order.shipped",
        "3pl",
        {
            "order_id": o1,
            "shipment_id": "SHP-1",
            "lines": _lines(("SKU-A", 20)),
            "carrier": "DHL",
            "tracking": "JD0001",
        },
    )
    b.add(
        ORDER_EVENTS,
        o1,
        "order.invoiced",
        "erp",
        {"order_id": o1, "invoice_id": "INV-1", "shipment_id": "SHP-1"},
    )
    b.add(
        ORDER_EVENTS,
        o2,
        "order.placed",
        "channel:amazon",
        {"order_id": o2, "channel": "amazon", "location": loc, "lines": _lines(("SKU-B", 5))},
    )
    b.add(ORDER_EVENTS, o2, "order.cancelled", "channel:amazon", {"order_id": o2})
    b.add(
        ORDER_EVENTS,
        o1,
        "return.received",
        "wms",
        {"order_id": o1, "rma_id": "RMA-1", "lines": _lines(("SKU-A", 2)), "restock": True},
    )
    b.add(
        INVENTORY_EVENTS,
        f"SKU-A@{loc}",
        "inventory.snapshot",
        "wms",
        {"sku": "SKU-A", "location": loc, "system": "wms", "on_hand": "82.000"},
    )

    # A valid record sent as MessagePack.
    body = b.envelope(
        "order.placed",
        "channel:b2b",
        {
            "order_id": o3,
            "channel": "b2b",
            "location": loc,
            "lines": _lines(("SKU-B", 3)),
        },
    )
    b.raw(
        ORDER_EVENTS,
        key=o3.encode(),
        value=msgpack.packb(body),
        expect=OK,
        label="msgpack order.placed",
        headers=[("content-type", b"application/msgpack")],
    )

    # Bad records: each must land in dlq with this reason, and not disturb the others.
    b.raw(
        PO_EVENTS,
        key=po1.encode(),
        value=b'{"event_id": "broken", "type": ',
        expect="invalid_json",
        label="truncated JSON",
    )
    b.raw(
        ORDER_EVENTS,
        key=o1.encode(),
        value=b"\xc1\xff\x00",
        expect="invalid_msgpack",
        label="corrupt msgpack",
        headers=[("content-type", b"application/msgpack")],
    )
    b.add(
        ORDER_EVENTS,
        o1,
        "order.teleported",
        "erp",
        {"order_id": o1},
        expect="unknown_type",
        label="unknown type",
    )
    b.add(
        PO_EVENTS,
        f"{run_id}-PO-OTHER",
        "po.cancelled",
        "procurement",
        {"po_id": po1, "revision": 9},
        expect="key_mismatch",
        label="key differs from po_id",
    )
    b.add(
        ORDER_EVENTS,
        None,
        "order.cancelled",
        "erp",
        {"order_id": o1},
        expect="key_mismatch",
        label="no key",
    )
    b.add(
        INVENTORY_EVENTS,
        f"SKU-A@{loc}",
        "inventory.snapshot",
        "wms",
        {"sku": "SKU-A", "location": loc, "system": "wms"},
        expect="schema",
        label="missing on_hand",
    )
    b.add(
        ORDER_EVENTS,
        o1,
        "order.allocated",
        "erp",
        {"order_id": o1, "lines": _lines(("SKU-A", -3))},
        expect="schema",
        label="negative qty",
    )
    b.add(
        ORDER_EVENTS,
        o1,
        "order.allocated",
        "erp",
        {"order_id": o1, "lines": _lines(("SKU-A", "1.0005"))},
        expect="schema",
        label="4 decimals",
    )
    b.add(
        INVENTORY_EVENTS,
        f"{run_id}-PO-1001",
        "po.cancelled",
        "procurement",
        {"po_id": po1, "revision": 9},
        expect="wrong_topic",
        label="PO event on inventory",
    )
    b.raw(
        PO_EVENTS, key=po1.encode(), value=b"[1, 2, 3]", expect="not_an_object", label="JSON array"
    )
    b.raw(
        PO_EVENTS,
        key=po1.encode(),
        value=b"{}" + b" " * max_record_bytes,
        expect="too_large",
        label="over SUPPLYFLOW_MAX_RECORD_BYTES",
    )
    b.raw(
        PO_EVENTS,
        key=po1.encode(),
        value=b"{}",
        expect="unsupported_content_type",
        label="XML content type",
        headers=[("content-type", b"application/xml")],
    )

    # A valid record after all the bad ones: proof nothing was blocked.
    b.add(
        INVENTORY_EVENTS,
        f"SKU-B@{loc}",
        "inventory.adjusted",
        "wms",
        {"sku": "SKU-B", "location": loc, "delta": "-1.5", "reason": "damaged"},
    )
    return b.records
