"""Deterministic generated workloads, from a small test scenario to a distributor's day.

:func:`iter_records` yields input records lazily (memory stays flat for millions of
events): a bounded window of entity stories is in flight at once, each advancing in its
own order (a PO is created before it is received) while entities interleave, as systems
send them. The same seed gives the same records; ``now`` stamps ``occurred_at`` at the
moment a record is drawn instead of from the simulated clock (paced load tests).

:class:`Scenario` holds the sizes and rates. Its defaults are the small scenario of the
tests (every record valid); :data:`DISTRIBUTOR` is a mid-size distributor (25,000 SKUs at
4 locations with Zipf-like popularity, POs of 5-20 lines, sales orders of about 5 lines,
1% invalid records, and a closing ``inventory.snapshot`` for every position), and
:meth:`Scenario.scaled` multiplies its volumes. Each record's ``expect`` is ``ok`` or the
dead-letter reason the worker must give it; about ``duplicate_rate`` of the valid records
are sent twice (same ``event_id``, later), which must have no second effect.
"""

from __future__ import annotations

import bisect
import itertools
import random
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from supplyflow.app.sample import SampleRecord, envelope
from supplyflow.app.topics import INVENTORY_EVENTS, ORDER_EVENTS, PO_EVENTS
from supplyflow.codecs.quantity import parse_qty

__all__ = [
    "DISTRIBUTOR",
    "MISMATCH_LABEL",
    "Scenario",
    "estimate_records",
    "generate",
    "iter_records",
]

#: Label of a snapshot that deliberately disagrees with the computed on-hand (shrinkage).
MISMATCH_LABEL: Final = "inventory.snapshot:mismatch"
#: Stories sampled to estimate a workload's size (see :func:`estimate_records`).
_ESTIMATE_STORIES: Final = 3_000

#: One step of a story: topic, key, event type, source system, data.
Step = tuple[str, str, str, str, dict[str, Any]]


@dataclass(frozen=True)
class Scenario:
    """Sizes and rates of a generated workload (rates are per entity unless noted)."""

    pos: int = 200
    orders: int = 1000
    skus: int = 125
    locations: int = 4
    adjustments: int = 300
    #: share of valid records sent a second time, later
    duplicate_rate: float = 0.05
    po_lines: tuple[int, int] = (1, 5)
    order_lines: tuple[int, int] = (1, 3)
    #: POs that get a second revision; of those, ``stale_rate`` see revision 1 again, late
    revised_rate: float = 0.3
    stale_rate: float = 0.2
    asn_rate: float = 0.6
    #: POs received in part (1-2 receipts of 20-70% each) or completely (one receipt)
    partial_receipt_rate: float = 0.75
    full_receipt_rate: float = 0.0
    po_cancel_rate: float = 0.1
    allocation_rate: float = 0.8
    #: number of shipments, drawn from these; each ships 30-50% of every line
    shipments: tuple[int, ...] = (0, 1, 1, 2)
    invoice_rate: float = 0.9
    #: of orders with a shipment
    return_rate: float = 0.1
    order_cancel_rate: float = 0.1
    #: Zipf exponent of SKU popularity (0: uniform)
    popularity: float = 0.0
    #: share of records that are invalid and must be dead-lettered
    invalid_rate: float = 0.0
    #: a closing ``inventory.snapshot`` (system ``wms``) for every SKU-location
    snapshots: bool = False
    snapshot_mismatch_rate: float = 0.0
    #: stories in flight at once: bounds memory, sets how far an entity's events spread
    window: int = 1000

    def scaled(self, factor: float) -> Scenario:
        """The same shape with ``factor`` x the POs, orders, SKUs and adjustments."""
        if factor <= 0:
            raise ValueError(f"scale must be positive, not {factor}")
        least_skus = max(self.po_lines[1], self.order_lines[1], 2)
        return replace(
            self,
            pos=max(1, round(self.pos * factor)),
            orders=max(1, round(self.orders * factor)),
            skus=max(least_skus, round(self.skus * factor)),
            adjustments=max(1, round(self.adjustments * factor)),
        )

    @property
    def positions(self) -> int:
        return self.skus * self.locations


#: A mid-size distributor: 100,000 SKU-locations, 12,000 POs (about 10,000 left open),
#: 20,000 sales orders; about 250,000 records at scale 1.
DISTRIBUTOR: Final = Scenario(
    pos=12_000,
    orders=20_000,
    skus=25_000,
    locations=4,
    adjustments=10_000,
    duplicate_rate=0.005,
    po_lines=(5, 20),
    order_lines=(3, 7),
    revised_rate=0.1,
    stale_rate=0.0,
    asn_rate=0.7,
    partial_receipt_rate=0.2,
    full_receipt_rate=0.15,
    po_cancel_rate=0.02,
    allocation_rate=0.9,
    shipments=(0, 1, 1, 2, 2),
    invoice_rate=0.95,
    return_rate=0.025,
    order_cancel_rate=0.03,
    popularity=1.0,
    invalid_rate=0.01,
    snapshots=True,
    snapshot_mismatch_rate=0.005,
)


def _qty(rng: random.Random, low: int, high: int) -> Any:
    value = rng.randint(low, high)
    roll = rng.random()
    if roll < 0.2:
        return f"{value}.500"  # decimal string
    if roll < 0.3:
        return value + 0.25  # JSON number with decimals
    return value


def _milli(qty: Any) -> int:
    return parse_qty(qty, signed=True)


def _units(milli: int) -> Any:
    return milli // 1000 if milli % 1000 == 0 else f"{milli / 1000:.3f}"


def _part(lines: list[dict[str, Any]], rng: random.Random, low: int, high: int) -> list[Any]:
    """The lines with ``low``-``high`` tenths of each quantity (rounded down)."""
    return [dict(ln, qty=_units(_milli(ln["qty"]) * rng.randint(low, high) // 10)) for ln in lines]


class _Catalogue:
    """SKUs and locations, and drawing SKUs by popularity."""

    def __init__(self, shape: Scenario, rng: random.Random) -> None:
        width = max(5, len(str(shape.skus - 1)))
        self.skus = [f"SKU-{i:0{width}d}" for i in range(shape.skus)]
        self.locations = [f"DC{i + 1}" for i in range(shape.locations)]
        self.rng = rng
        self.cumulative: list[float] = []
        if shape.popularity > 0:
            weights = (1 / (rank**shape.popularity) for rank in range(1, shape.skus + 1))
            self.cumulative = list(itertools.accumulate(weights))

    def pick(self, count: int) -> list[str]:
        """``count`` distinct SKUs; popular ones more often."""
        if not self.cumulative:
            return self.rng.sample(self.skus, count)
        chosen: dict[str, None] = {}
        top = self.cumulative[-1]
        while len(chosen) < count:
            index = bisect.bisect_left(self.cumulative, self.rng.random() * top)
            chosen[self.skus[min(index, len(self.skus) - 1)]] = None
        return list(chosen)


class _Gen:
    def __init__(
        self, seed: int, run_id: str, shape: Scenario, now: Callable[[], datetime] | None
    ) -> None:
        self.rng = random.Random(seed)
        self.run_id = run_id
        self.shape = shape
        self.now = now
        self.clock = datetime(2026, 11, 1, tzinfo=UTC)
        self.seq = 0
        self.cat = _Catalogue(shape, self.rng)
        self.sku_index = {sku: i for i, sku in enumerate(self.cat.skus)} if shape.snapshots else {}
        self.loc_index = {loc: i for i, loc in enumerate(self.cat.locations)}
        #: on-hand (thousandths) per SKU-location as the valid events leave it
        self.on_hand = array("q", bytes(8 * shape.positions)) if shape.snapshots else array("q")

    def body(self, type_: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        # Drawn in both modes, so that ``now`` changes the timestamps and nothing else.
        self.clock += timedelta(seconds=self.rng.randint(1, 30))
        stamp = self.clock if self.now is None else self.now()
        return envelope(f"{self.run_id}-{self.seq:07d}", type_, source, stamp, data)

    def stock(self, sku: str, location: str, milli: int) -> None:
        if self.sku_index:
            self.on_hand[self.sku_index[sku] * self.shape.locations + self.loc_index[location]] += (
                milli
            )

    def lines(self, low_high: tuple[int, int], q_low: int, q_high: int) -> list[dict[str, Any]]:
        skus = self.cat.pick(self.rng.randint(*low_high))
        return [
            {"line_no": i + 1, "sku": sku, "qty": _qty(self.rng, q_low, q_high)}
            for i, sku in enumerate(skus)
        ]

    def po_story(self, n: int) -> Iterator[Step]:
        rng, shape = self.rng, self.shape
        po_id = f"{self.run_id}-PO-{n:05d}"
        location = rng.choice(self.cat.locations)
        lines = self.lines(shape.po_lines, 5, 200)
        created = {
            "po_id": po_id,
            "revision": 1,
            "supplier_id": f"SUP-{rng.randint(1, 40)}",
            "location": location,
            "lines": lines,
        }
        yield PO_EVENTS, po_id, "po.created", "procurement", created
        ack = {"po_id": po_id, "revision": 1, "system": "erp", "status": "accepted"}
        yield PO_EVENTS, po_id, "po.acknowledged", "erp", ack
        revision = 1
        if rng.random() < shape.revised_rate:
            revision = 2
            lines = [dict(ln, qty=_qty(rng, 5, 220)) for ln in lines]
            if len(lines) > 1 and rng.random() < 0.3:
                lines = lines[:-1]  # a line dropped from the order
            updated = {"po_id": po_id, "revision": 2, "lines": lines}
            yield PO_EVENTS, po_id, "po.updated", "procurement", updated
            if rng.random() < shape.stale_rate:  # a stale revision arriving late
                stale = {"po_id": po_id, "revision": 1, "lines": lines[:1]}
                yield PO_EVENTS, po_id, "po.updated", "procurement", stale
        if rng.random() < shape.asn_rate:
            asn = {"po_id": po_id, "asn_id": f"ASN-{n}-1", "lines": _part(lines, rng, 3, 10)}
            yield PO_EVENTS, po_id, "asn.issued", "supplier", asn
        roll = rng.random()
        if roll < shape.partial_receipt_rate:
            receipts = [_part(lines, rng, 2, 7) for _ in range(rng.choice([1, 1, 2]))]
        elif roll < shape.partial_receipt_rate + shape.full_receipt_rate:
            receipts = [lines]
        else:
            receipts = []
        for r, receipt_lines in enumerate(receipts):
            data: dict[str, Any] = {
                "po_id": po_id,
                "receipt_id": f"RCV-{n}-{r}",
                "revision": revision,
                "lines": receipt_lines,
            }
            if rng.random() < 0.1:
                data["location"] = rng.choice(self.cat.locations)
            for ln in receipt_lines:
                self.stock(ln["sku"], data.get("location", location), _milli(ln["qty"]))
            yield PO_EVENTS, po_id, "goods.received", "wms", data
        if rng.random() < shape.po_cancel_rate:
            cancelled = {"po_id": po_id, "revision": revision + 1}
            yield PO_EVENTS, po_id, "po.cancelled", "procurement", cancelled

    def order_story(self, n: int) -> Iterator[Step]:
        rng, shape = self.rng, self.shape
        order_id = f"{self.run_id}-SO-{n:05d}"
        location = rng.choice(self.cat.locations)
        lines = self.lines(shape.order_lines, 1, 20)
        channel = rng.choice(["web", "amazon", "b2b"])
        placed = {"order_id": order_id, "channel": channel, "location": location, "lines": lines}
        yield ORDER_EVENTS, order_id, "order.placed", f"channel:{channel}", placed
        ack = {"order_id": order_id, "system": "erp", "status": "accepted"}
        yield ORDER_EVENTS, order_id, "order.acknowledged", "erp", ack
        if rng.random() < shape.allocation_rate:
            allocated = {"order_id": order_id, "lines": _part(lines, rng, 5, 10)}
            yield ORDER_EVENTS, order_id, "order.allocated", "erp", allocated
        shipments = rng.choice(shape.shipments)
        for s in range(shipments):
            shipped_lines = _part(lines, rng, 3, 5)
            shipped = {
                "order_id": order_id,
                "shipment_id": f"SHP-{n}-{s}",
                "lines": shipped_lines,
                "carrier": "DHL",
            }
            for ln in shipped_lines:
                self.stock(ln["sku"], location, -_milli(ln["qty"]))
            yield ORDER_EVENTS, order_id, "order.shipped", "3pl", shipped
            if rng.random() < shape.invoice_rate:
                invoiced = {
                    "order_id": order_id,
                    "invoice_id": f"INV-{n}-{s}",
                    "shipment_id": f"SHP-{n}-{s}",
                }
                yield ORDER_EVENTS, order_id, "order.invoiced", "erp", invoiced
        if shipments and rng.random() < shape.return_rate:
            restock = rng.random() < 0.7
            returned = {
                "order_id": order_id,
                "rma_id": f"RMA-{n}",
                "lines": [dict(lines[0], qty=1)],
                "restock": restock,
            }
            if restock:
                self.stock(lines[0]["sku"], location, 1000)
            yield ORDER_EVENTS, order_id, "return.received", "wms", returned
        if rng.random() < shape.order_cancel_rate:
            yield ORDER_EVENTS, order_id, "order.cancelled", "channel:web", {"order_id": order_id}

    def adjustment(self) -> Iterator[Step]:
        rng = self.rng
        (sku,), location = self.cat.pick(1), rng.choice(self.cat.locations)
        delta = rng.randint(-20, 60)
        qty: Any = f"{delta}.250" if rng.random() < 0.2 else delta
        self.stock(sku, location, _milli(qty))
        data = {"sku": sku, "location": location, "delta": qty, "reason": "cycle count"}
        yield INVENTORY_EVENTS, f"{sku}@{location}", "inventory.adjusted", "wms", data

    def snapshots(self) -> Iterator[SampleRecord]:
        for s, sku in enumerate(self.cat.skus):
            for loc_i, location in enumerate(self.cat.locations):
                milli = self.on_hand[s * self.shape.locations + loc_i]
                label = "inventory.snapshot"
                if self.rng.random() < self.shape.snapshot_mismatch_rate:
                    milli, label = milli + 1000, MISMATCH_LABEL  # shrinkage, miscount
                data = {"sku": sku, "location": location, "system": "wms", "on_hand": _units(milli)}
                body = self.body("inventory.snapshot", "wms", data)
                key = f"{sku}@{location}".encode()
                record = SampleRecord(INVENTORY_EVENTS, key, orjson.dumps(body), label=label)
                yield record
                if self.rng.random() < self.shape.invalid_rate:
                    yield self.invalid(record, body)

    def invalid(self, valid: SampleRecord, body: dict[str, Any]) -> SampleRecord:
        """A broken variant of ``valid`` that the worker must dead-letter, with its reason."""
        rng, data = self.rng, body["data"]
        self.seq += 1
        bad = dict(body, event_id=f"{self.run_id}-x{self.seq:07d}")
        key = valid.key.decode() if valid.key else ""
        kinds = ["schema", "invalid_json", "unknown_type", "wrong_topic", "key_mismatch"]
        creates = body["type"] in ("po.created", "order.placed")
        if valid.topic != INVENTORY_EVENTS and not creates:
            kinds.append("unknown_entity")
            if "lines" in data and body["type"] != "po.updated":
                kinds.append("line_mismatch")
        reason = rng.choice(kinds)
        topic = valid.topic
        if reason == "schema":
            if "lines" in data:
                bad["data"] = dict(data, lines=[dict(data["lines"][0], qty="1.2345")])
            else:
                bad["schema_version"] = 2
        elif reason == "unknown_type":
            bad["type"] = body["type"].split(".")[0] + ".archived"
        elif reason == "wrong_topic":
            topic = ORDER_EVENTS if topic == PO_EVENTS else PO_EVENTS
        elif reason == "key_mismatch":
            key += "-other"
        elif reason == "unknown_entity":
            field = "po_id" if topic == PO_EVENTS else "order_id"
            key = f"{self.run_id}-{field[:-3].upper()}-GHOST-{self.seq}"
            bad["data"] = dict(data, **{field: key})
        elif reason == "line_mismatch":
            bad["data"] = dict(data, lines=[dict(data["lines"][0], line_no=9999)])
        value = orjson.dumps(bad)
        if reason == "invalid_json":
            value = value[: len(value) // 2]
        return SampleRecord(topic, key.encode(), value, expect=reason, label=f"invalid:{reason}")


def iter_records(
    seed: int = 7,
    run_id: str = "gen",
    shape: Scenario | None = None,
    *,
    now: Callable[[], datetime] | None = None,
) -> Iterator[SampleRecord]:
    """The workload's records, lazily, in an order that respects each entity's story."""
    shape = shape or Scenario()
    gen = _Gen(seed, run_id, shape, now)
    order = random.Random(seed + 1)
    remaining = {"po": shape.pos, "order": shape.orders, "adjustment": shape.adjustments}
    started = {"po": 0, "order": 0}

    def next_story() -> Iterator[Step] | None:
        if not any(remaining.values()):
            return None
        (kind,) = order.choices(list(remaining), weights=list(remaining.values()))
        remaining[kind] -= 1
        if kind == "adjustment":
            return gen.adjustment()
        n, started[kind] = started[kind], started[kind] + 1
        return gen.po_story(n) if kind == "po" else gen.order_story(n)

    window: list[Iterator[Step]] = []
    while len(window) < shape.window and (story := next_story()) is not None:
        window.append(story)
    pending_duplicates: list[SampleRecord] = []
    while window:
        i = order.randrange(len(window))
        step = next(window[i], None)
        if step is None:
            replacement = next_story()
            if replacement is None:
                window[i] = window[-1]
                window.pop()
            else:
                window[i] = replacement
            continue
        topic, key, type_, source, data = step
        body = gen.body(type_, source, data)
        record = SampleRecord(topic, key.encode(), orjson.dumps(body), label=type_)
        yield record
        if order.random() < shape.invalid_rate:
            yield gen.invalid(record, body)
        if order.random() < shape.duplicate_rate:
            pending_duplicates.append(record)
        if pending_duplicates and order.random() < 0.05:
            yield pending_duplicates.pop(order.randrange(len(pending_duplicates)))
    yield from pending_duplicates
    if shape.snapshots:
        yield from gen.snapshots()


def generate(
    seed: int = 7, run_id: str = "gen", shape: Scenario | None = None
) -> list[SampleRecord]:
    """The scenario's records as a list (small scenarios; use :func:`iter_records` for big)."""
    return list(iter_records(seed, run_id, shape))


def estimate_records(shape: Scenario, seed: int = 7) -> int:
    """About how many records :func:`iter_records` yields for ``shape`` (for progress bars).

    Counts the records of a sample of the stories and scales it up; snapshots are exact.
    """
    stories = shape.pos + shape.orders + shape.adjustments
    snapshots = shape.positions if shape.snapshots else 0
    if not stories:
        return snapshots
    factor = min(1.0, _ESTIMATE_STORIES / stories)
    sample = replace(
        shape,
        pos=round(shape.pos * factor),
        orders=round(shape.orders * factor),
        adjustments=round(shape.adjustments * factor),
        skus=min(shape.skus, 5_000),
        snapshots=False,
    )
    counted = sum(1 for _ in iter_records(seed, "estimate", sample))
    return round(counted / factor) + snapshots
