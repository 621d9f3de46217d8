"""The canonical event model: the envelope and every event type of the contract (v1).

Every input record, JSON or msgpack, becomes one of these frozen models. Quantities are
integer thousandths (see :mod:`supplyflow.codecs.quantity`); unknown fields are ignored
for forward compatibility; wrong types are rejected rather than coerced.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
)

from supplyflow.codecs.quantity import MAX_ABS_UNITS, parse_qty

__all__ = [
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "EVENT_TYPE_TOPIC",
    "NOT_PRINTABLE",
    "OCCURRED_AT_MAX",
    "OCCURRED_AT_MIN",
    "AnyEvent",
    "Line",
    "entity_key",
]

SCHEMA_VERSION: Final = 1

_QTY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0, "exclusiveMaximum": MAX_ABS_UNITS},
        {"type": "string", "pattern": r"^\s*\d{1,13}(\.\d{1,3}0*)?\s*$"},
    ],
    "description": "decimal quantity in the item's base unit, at most 3 decimals",
}
_SIGNED_QTY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "number",
            "exclusiveMinimum": -MAX_ABS_UNITS,
            "exclusiveMaximum": MAX_ABS_UNITS,
        },
        {"type": "string", "pattern": r"^\s*-?\d{1,13}(\.\d{1,3}0*)?\s*$"},
    ],
    "description": "signed decimal quantity in the item's base unit, at most 3 decimals",
}


def _qty(value: object) -> int:
    return parse_qty(value, signed=False)


def _signed_qty(value: object) -> int:
    return parse_qty(value, signed=True)


#: A non-negative quantity, as integer thousandths.
Qty = Annotated[int, BeforeValidator(_qty), WithJsonSchema(_QTY_SCHEMA)]
#: A quantity that may be negative (``delta``, a snapshot's ``on_hand``).
SignedQty = Annotated[int, BeforeValidator(_signed_qty), WithJsonSchema(_SIGNED_QTY_SCHEMA)]
#: Characters no identifier may contain: control characters (C0, DEL, C1), Unicode format
#: characters (zero-width, bidi overrides, soft hyphen, BOM...) and the line and paragraph
#: separators. Identifiers become Kafka keys, table keys and log fields: these would hide
#: in logs, spoof other ids, or reach the key space supplyflow keeps for itself (internal
#: table keys start with NUL). The class reads the same in Python, ECMAScript and the Rust
#: regex engine pydantic uses, so the exported JSON Schemas say exactly what is checked.
NOT_PRINTABLE: Final = (
    r"\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e"
    r"\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
)
_PRINTABLE: Final = rf"^[^{NOT_PRINTABLE}]+$"
Id = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=_PRINTABLE)
]
Name = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=_PRINTABLE)
]
Text = Annotated[str, StringConstraints(strict=True, max_length=1024)]
#: SKUs and locations form the key ``SKU@LOCATION``, so neither may contain ``@``.
Code = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=64, pattern=rf"^[^@\s{NOT_PRINTABLE}]+$"
    ),
]
#: The range of ``occurred_at`` (UTC). Deadlines add an SLA and the grace (each at most
#: :data:`~supplyflow.app.durations.MAX_DURATION`) to it, and every time supplyflow
#: writes must stay a valid RFC 3339 date: a year-9999 time with a negative offset is
#: year 10000 in UTC, which no date type holds.
OCCURRED_AT_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
OCCURRED_AT_MAX: Final = datetime(9000, 1, 1, tzinfo=UTC)
OccurredAt = Annotated[
    AwareDatetime,
    Field(
        ge=OCCURRED_AT_MIN,
        lt=OCCURRED_AT_MAX,
        description="RFC 3339 with a zone; 1970-01-01T00:00:00Z <= UTC time < 9000-01-01T00:00:00Z",
    ),
]
Revision = Annotated[StrictInt, Field(ge=0, lt=2**53)]
AckStatus = Literal["accepted", "rejected"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Line(_Model):
    line_no: Annotated[StrictInt, Field(ge=1, lt=1_000_000)]
    sku: Code
    qty: Qty


Lines = Annotated[tuple[Line, ...], Field(min_length=1, max_length=10_000)]


def _unique_lines(lines: Sequence[Line]) -> Sequence[Line]:
    seen: set[int] = set()
    for line in lines:
        if line.line_no in seen:
            raise ValueError(f"line_no {line.line_no} appears twice")
        seen.add(line.line_no)
    return lines


class _LinesData(_Model):
    lines: Lines

    @field_validator("lines")
    @classmethod
    def _check_lines(cls, lines: tuple[Line, ...]) -> tuple[Line, ...]:
        _unique_lines(lines)
        return lines


class _PoData(_Model):
    po_id: Id

    @property
    def entity_key(self) -> str:
        return self.po_id


class _OrderData(_Model):
    order_id: Id

    @property
    def entity_key(self) -> str:
        return self.order_id


class _InventoryData(_Model):
    sku: Code
    location: Code

    @property
    def entity_key(self) -> str:
        return f"{self.sku}@{self.location}"


# --- purchase orders (po.events, key po_id) -------------------------------------------


class PoCreatedData(_PoData, _LinesData):
    revision: Revision
    supplier_id: Id
    location: Code


class PoUpdatedData(_PoData, _LinesData):
    revision: Revision


class PoCancelledData(_PoData):
    revision: Revision


class PoAcknowledgedData(_PoData):
    revision: Revision
    system: Name
    status: AckStatus
    reason: Text | None = None


class AsnIssuedData(_PoData, _LinesData):
    asn_id: Id


class GoodsReceivedData(_PoData, _LinesData):
    receipt_id: Id
    revision: Revision
    location: Code | None = None


# --- sales orders (order.events, key order_id) ---------------------------------------


class OrderPlacedData(_OrderData, _LinesData):
    channel: Name
    location: Code


class OrderAcknowledgedData(_OrderData):
    system: Name
    status: AckStatus
    reason: Text | None = None


class OrderAllocatedData(_OrderData, _LinesData):
    """Additional quantity allocated per order line."""


class OrderShippedData(_OrderData, _LinesData):
    shipment_id: Id
    carrier: Name | None = None
    tracking: Id | None = None


class OrderInvoicedData(_OrderData):
    invoice_id: Id
    shipment_id: Id


class OrderCancelledData(_OrderData):
    """Cancels the whole order."""


class ReturnReceivedData(_OrderData, _LinesData):
    rma_id: Id
    restock: StrictBool


# --- inventory (inventory.events, key SKU@LOCATION) ----------------------------------


class InventoryAdjustedData(_InventoryData):
    delta: SignedQty
    reason: Text


class InventorySnapshotData(_InventoryData):
    system: Name
    on_hand: SignedQty


# --- envelopes --------------------------------------------------------------------------


class Envelope(_Model):
    """Fields every input record carries, whatever its type."""

    event_id: Id
    type: str
    schema_version: Annotated[StrictInt, Field(ge=1, le=SCHEMA_VERSION)]
    source: Name
    occurred_at: OccurredAt


class PoCreated(Envelope):
    type: Literal["po.created"]
    data: PoCreatedData


class PoUpdated(Envelope):
    type: Literal["po.updated"]
    data: PoUpdatedData


class PoCancelled(Envelope):
    type: Literal["po.cancelled"]
    data: PoCancelledData


class PoAcknowledged(Envelope):
    type: Literal["po.acknowledged"]
    data: PoAcknowledgedData


class AsnIssued(Envelope):
    type: Literal["asn.issued"]
    data: AsnIssuedData


class GoodsReceived(Envelope):
    type: Literal["goods.received"]
    data: GoodsReceivedData


class OrderPlaced(Envelope):
    type: Literal["order.placed"]
    data: OrderPlacedData


class OrderAcknowledged(Envelope):
    type: Literal["order.acknowledged"]
    data: OrderAcknowledgedData


class OrderAllocated(Envelope):
    type: Literal["order.allocated"]
    data: OrderAllocatedData


class OrderShipped(Envelope):
    type: Literal["order.shipped"]
    data: OrderShippedData


class OrderInvoiced(Envelope):
    type: Literal["order.invoiced"]
    data: OrderInvoicedData


class OrderCancelled(Envelope):
    type: Literal["order.cancelled"]
    data: OrderCancelledData


class ReturnReceived(Envelope):
    type: Literal["return.received"]
    data: ReturnReceivedData


class InventoryAdjusted(Envelope):
    type: Literal["inventory.adjusted"]
    data: InventoryAdjustedData


class InventorySnapshot(Envelope):
    type: Literal["inventory.snapshot"]
    data: InventorySnapshotData


PoEvent = PoCreated | PoUpdated | PoCancelled | PoAcknowledged | AsnIssued | GoodsReceived
OrderEvent = (
    OrderPlaced
    | OrderAcknowledged
    | OrderAllocated
    | OrderShipped
    | OrderInvoiced
    | OrderCancelled
    | ReturnReceived
)
InventoryEvent = InventoryAdjusted | InventorySnapshot
AnyEvent = Annotated[
    Union[PoEvent, OrderEvent, InventoryEvent],  # noqa: UP007 - a discriminated union
    Field(discriminator="type"),
]

#: Validates a decoded record (dict) into the right event class, chosen by ``type``.
EVENT_ADAPTER: Final[TypeAdapter[AnyEvent]] = TypeAdapter(AnyEvent)

_PO_TYPES = (PoCreated, PoUpdated, PoCancelled, PoAcknowledged, AsnIssued, GoodsReceived)
_ORDER_TYPES = (
    OrderPlaced,
    OrderAcknowledged,
    OrderAllocated,
    OrderShipped,
    OrderInvoiced,
    OrderCancelled,
    ReturnReceived,
)
_INVENTORY_TYPES = (InventoryAdjusted, InventorySnapshot)


def _type_name(cls: type[Envelope]) -> str:
    literal: Any = cls.model_fields["type"].annotation
    (name,) = literal.__args__
    return str(name)


#: Event type -> the input topic (without prefix) it belongs on.
EVENT_TYPE_TOPIC: Final[dict[str, str]] = {
    **{_type_name(cls): "po.events" for cls in _PO_TYPES},
    **{_type_name(cls): "order.events" for cls in _ORDER_TYPES},
    **{_type_name(cls): "inventory.events" for cls in _INVENTORY_TYPES},
}
#: Event type -> its model class.
EVENT_TYPES: Final[dict[str, type[Envelope]]] = {
    _type_name(cls): cls for cls in (*_PO_TYPES, *_ORDER_TYPES, *_INVENTORY_TYPES)
}


def entity_key(event: AnyEvent) -> str:
    """The Kafka key the contract requires for ``event``: po_id, order_id or SKU@LOCATION."""
    return event.data.entity_key
