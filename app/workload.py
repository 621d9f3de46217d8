"""Deterministic generated scenarios: many POs, orders and SKU-locations, with duplicates.

``generate(seed, ...)`` returns input records in an order that respects each entity's own
sequence (a PO is created before it is received) while interleaving entities, as
systems do. Every event is valid; about ``duplicate_rate`` of them are sent twice (the
same ``event_id``, later), which must have no second effect.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from supplyflow.app.sample import SampleRecord
from supplyflow.app.topics import INVENTORY_EVENTS, ORDER_EVENTS, PO_EVENTS

__all__ = ["Scenario", "generate"]


@dataclass(frozen=True)
class Scenario:
    """Sizes of a generated scenario."""

    pos: int = 200
    orders: int = 1000
    skus: int = 125
    locations: int = 4
    adjustments: int = 300
    duplicate_rate: float = 0.05


def _qty(rng: random.Random, low: int, high: int) -> Any:
    value = rng.randint(low, high)
    roll = rng.random()
    if roll < 0.2:
        return f"{value}.500"  # decimal string
    if roll < 0.3:
        return value + 0.25  # JSON number with decimals
    return value


def _milli(qty: Any) -> int:
    return round(float(qty) * 1000)


def _units(milli: int) -> Any:
    return milli // 1000 if milli % 1000 == 0 else f"{milli / 1000:.3f}"


class _Gen:
    def __init__(self, seed: int, run_id: str, shape: Scenario) -> None:
        self.rng = random.Random(seed)
        self.run_id = run_id
        self.shape = shape
        self.clock = datetime(2026, 11, 1, tzinfo=UTC)
        self.seq = 0
        self.skus = [f"SKU-{i:05d}" for i in range(shape.skus)]
        self.locations = [f"DC{i + 1}" for i in range(shape.locations)]

    def event(self, type_: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        self.clock += timedelta(seconds=self.rng.randint(1, 30))
        return {
            "event_id": f"{self.run_id}-{self.seq:07d}",
            "type": type_,
            "schema_version": 1,
            "source": source,
            "occurred_at": self.clock.isoformat().replace("+00:00", "Z"),
            "data": data,
        }

    def po_story(self, n: int) -> list[tuple[str, str, dict[str, Any]]]:
        rng = self.rng
        po_id = f"{self.run_id}-PO-{n:05d}"
        location = rng.choice(self.locations)
        skus = rng.sample(self.skus, rng.randint(1, 5))
        lines = [
            {"line_no": i + 1, "sku": sku, "qty": _qty(rng, 5, 200)} for i, sku in enumerate(skus)
        ]
        out = [
            (
                PO_EVENTS,
                po_id,
                self.event(
                    "po.created",
                    "procurement",
                    {
                        "po_id": po_id,
                        "revision": 1,
                        "supplier_id": f"SUP-{rng.randint(1, 40)}",
                        "location": location,
                        "lines": lines,
                    },
                ),
            )
        ]
        out.append(
            (
                PO_EVENTS,
                po_id,
                self.event(
                    "po.acknowledged",
                    "erp",
                    {
                        "po_id": po_id,
                        "revision": 1,
                        "system": "erp",
                        "status": "accepted",
                    },
                ),
            )
        )
        revision = 1
        if rng.random() < 0.3:
            revision = 2
            lines = [dict(ln, qty=_qty(rng, 5, 220)) for ln in lines]
            if len(lines) > 1 and rng.random() < 0.3:
                lines = lines[:-1]  # a line dropped from the order
            out.append(
                (
                    PO_EVENTS,
                    po_id,
                    self.event(
                        "po.updated",
                        "procurement",
                        {
                            "po_id": po_id,
                            "revision": 2,
                            "lines": lines,
                        },
                    ),
                )
            )
            if rng.random() < 0.2:  # a stale revision arriving late
                out.append(
                    (
                        PO_EVENTS,
                        po_id,
                        self.event(
                            "po.updated",
                            "procurement",
                            {
                                "po_id": po_id,
                                "revision": 1,
                                "lines": lines[:1],
                            },
                        ),
                    )
                )
        if rng.random() < 0.6:
            asn_lines = [
                dict(ln, qty=_units(_milli(ln["qty"]) * rng.randint(3, 10) // 10)) for ln in lines
            ]
            out.append(
                (
                    PO_EVENTS,
                    po_id,
                    self.event(
                        "asn.issued",
                        "supplier",
                        {
                            "po_id": po_id,
                            "asn_id": f"ASN-{n}-1",
                            "lines": asn_lines,
                        },
                    ),
                )
            )
        for r in range(rng.choice([0, 1, 1, 2])):
            receipt_lines = [
                dict(ln, qty=_units(_milli(ln["qty"]) * rng.randint(2, 7) // 10)) for ln in lines
            ]
            data: dict[str, Any] = {
                "po_id": po_id,
                "receipt_id": f"RCV-{n}-{r}",
                "revision": revision,
                "lines": receipt_lines,
            }
            if rng.random() < 0.1:
                data["location"] = rng.choice(self.locations)
            out.append((PO_EVENTS, po_id, self.event("goods.received", "wms", data)))
        if rng.random() < 0.1:
            out.append(
                (
                    PO_EVENTS,
                    po_id,
                    self.event(
                        "po.cancelled",
                        "procurement",
                        {
                            "po_id": po_id,
                            "revision": revision + 1,
                        },
                    ),
                )
            )
        return out

    def order_story(self, n: int) -> list[tuple[str, str, dict[str, Any]]]:
        rng = self.rng
        order_id = f"{self.run_id}-SO-{n:05d}"
        location = rng.choice(self.locations)
        skus = rng.sample(self.skus, rng.randint(1, 3))
        lines = [
            {"line_no": i + 1, "sku": sku, "qty": _qty(rng, 1, 20)} for i, sku in enumerate(skus)
        ]
        channel = rng.choice(["web", "amazon", "b2b"])
        out = [
            (
                ORDER_EVENTS,
                order_id,
                self.event(
                    "order.placed",
                    f"channel:{channel}",
                    {
                        "order_id": order_id,
                        "channel": channel,
                        "location": location,
                        "lines": lines,
                    },
                ),
            )
        ]
        out.append(
            (
                ORDER_EVENTS,
                order_id,
                self.event(
                    "order.acknowledged",
                    "erp",
                    {
                        "order_id": order_id,
                        "system": "erp",
                        "status": "accepted",
                    },
                ),
            )
        )
        if rng.random() < 0.8:
            out.append(
                (
                    ORDER_EVENTS,
                    order_id,
                    self.event(
                        "order.allocated",
                        "erp",
                        {
                            "order_id": order_id,
                            "lines": [
                                dict(ln, qty=_units(_milli(ln["qty"]) * rng.randint(5, 10) // 10))
                                for ln in lines
                            ],
                        },
                    ),
                )
            )
        shipments = rng.choice([0, 1, 1, 2])
        for s in range(shipments):
            out.append(
                (
                    ORDER_EVENTS,
                    order_id,
                    self.event(
                        "order.shipped",
                        "3pl",
                        {
                            "order_id": order_id,
                            "shipment_id": f"SHP-{n}-{s}",
                            "lines": [
                                dict(ln, qty=_units(_milli(ln["qty"]) * rng.randint(3, 5) // 10))
                                for ln in lines
                            ],
                            "carrier": "DHL",
                        },
                    ),
                )
            )
            if rng.random() < 0.9:
                out.append(
                    (
                        ORDER_EVENTS,
                        order_id,
                        self.event(
                            "order.invoiced",
                            "erp",
                            {
                                "order_id": order_id,
                                "invoice_id": f"INV-{n}-{s}",
                                "shipment_id": f"SHP-{n}-{s}",
                            },
                        ),
                    )
                )
        if shipments and rng.random() < 0.1:
            out.append(
                (
                    ORDER_EVENTS,
                    order_id,
                    self.event(
                        "return.received",
                        "wms",
                        {
                            "order_id": order_id,
                            "rma_id": f"RMA-{n}",
                            "lines": [dict(lines[0], qty=1)],
                            "restock": rng.random() < 0.7,
                        },
                    ),
                )
            )
        if rng.random() < 0.1:
            out.append(
                (
                    ORDER_EVENTS,
                    order_id,
                    self.event(
                        "order.cancelled",
                        "channel:web",
                        {
                            "order_id": order_id,
                        },
                    ),
                )
            )
        return out

    def adjustment(self) -> tuple[str, str, dict[str, Any]]:
        rng = self.rng
        sku, location = rng.choice(self.skus), rng.choice(self.locations)
        delta = rng.randint(-20, 60)
        return (
            INVENTORY_EVENTS,
            f"{sku}@{location}",
            self.event(
                "inventory.adjusted",
                "wms",
                {
                    "sku": sku,
                    "location": location,
                    "delta": f"{delta}.250" if rng.random() < 0.2 else delta,
                    "reason": "cycle count",
                },
            ),
        )


def generate(
    seed: int = 7, run_id: str = "gen", shape: Scenario | None = None
) -> list[SampleRecord]:
    """The scenario's records, in a production order that respects each entity's story."""
    shape = shape or Scenario()
    gen = _Gen(seed, run_id, shape)
    stories: list[Iterator[tuple[str, str, dict[str, Any]]]] = []
    stories += [iter(gen.po_story(n)) for n in range(shape.pos)]
    stories += [iter(gen.order_story(n)) for n in range(shape.orders)]
    stories += [iter([gen.adjustment()]) for _ in range(shape.adjustments)]
    rng = random.Random(seed + 1)
    records: list[SampleRecord] = []
    pending_duplicates: list[SampleRecord] = []
    while stories:
        i = rng.randrange(len(stories))
        step = next(stories[i], None)
        if step is None:
            stories[i] = stories[-1]
            stories.pop()
            continue
        topic, key, body = step
        record = SampleRecord(topic, key.encode(), orjson.dumps(body), label=body["type"])
        records.append(record)
        if rng.random() < shape.duplicate_rate:
            pending_duplicates.append(record)
        if pending_duplicates and rng.random() < 0.05:
            records.append(pending_duplicates.pop(rng.randrange(len(pending_duplicates))))
    records.extend(pending_duplicates)
    return records
