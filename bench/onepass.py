"""A candidate decoder measured by ``python -m bench decode``: msgspec Structs, one pass.

:mod:`supplyflow.codecs.events` (pydantic) stays the contract and the source of the JSON
Schemas. This module mirrors those models as msgspec Structs that decode and check a JSON
record straight from its bytes, then builds the very same pydantic event objects (the
domain consumes those) without validating them a second time. It accepts a subset of
what the models accept, never more: for anything else (an unknown field, a non-ASCII or
escaped string, a timestamp sent as a number, a bad value of any kind)
:func:`decode_json_event` returns None and the caller decodes the record the reference
way, so every dead-letter reason and message would stay the one the models give.
``tests/bench/test_decode.py`` checks that both agree, value for value, on the workload
and on hostile input.

Why the accepted set is a subset:

- every Struct forbids unknown fields, so msgspec parses every byte of an accepted record
  into a typed field: a number orjson cannot hold or a string that is not UTF-8 inside an
  ignored field cannot slip through (msgspec skips those without looking at them);
- only records whose bytes are ASCII without a backslash or DEL are taken: then every
  string is printable ASCII (JSON forbids raw control characters), which is what the
  identifier patterns allow, and only SKUs and locations need a check (no ``@``, no
  space) -- far cheaper than msgspec's pattern check (Python's ``re``) per field;
- ``occurred_at`` (a JSON string) and quantities go through the models' own validators.

It stays a benchmark candidate: building the pydantic objects in Python costs about what
msgspec saves (see docs/benchmarks.md, "Decoding").
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from pydantic import BaseModel, TypeAdapter, ValidationError

from supplyflow.codecs import events as ev
from supplyflow.codecs.quantity import MAX_ABS_UNITS, SCALE, parse_qty

__all__ = ["DECODER", "STRUCTS", "decode_json_event"]

# Printable ASCII by the byte check of decode_json_event; the lengths are the models'.
Id = Annotated[str, Meta(min_length=1, max_length=128)]
Name = Annotated[str, Meta(min_length=1, max_length=64)]
Text = Annotated[str, Meta(max_length=1024)]
#: also checked for ``@`` and spaces (:func:`_code`)
Code = Annotated[str, Meta(min_length=1, max_length=64)]
Revision = Annotated[int, Meta(ge=0, lt=2**53)]
#: the models' validator parses it (:data:`_OCCURRED_AT`)
OccurredAt = str
RawQty = int | float | str


class _Strict(Struct, forbid_unknown_fields=True):
    pass


class Line(_Strict):
    line_no: Annotated[int, Meta(ge=1, lt=1_000_000)]
    sku: Code
    qty: RawQty


Lines = Annotated[tuple[Line, ...], Meta(min_length=1, max_length=10_000)]

# Field order is the models' (tests/codecs/test_decode_equivalence.py checks it): the
# models' __dict__ is built in that order, and so is ours.


class PoCreatedData(_Strict):
    lines: Lines
    po_id: Id
    revision: Revision
    supplier_id: Id
    location: Code


class PoUpdatedData(_Strict):
    lines: Lines
    po_id: Id
    revision: Revision


class PoCancelledData(_Strict):
    po_id: Id
    revision: Revision


class PoAcknowledgedData(_Strict):
    po_id: Id
    revision: Revision
    system: Name
    status: Literal["accepted", "rejected"]
    reason: Text | UnsetType | None = UNSET


class AsnIssuedData(_Strict):
    lines: Lines
    po_id: Id
    asn_id: Id


class GoodsReceivedData(_Strict):
    lines: Lines
    po_id: Id
    receipt_id: Id
    revision: Revision
    location: Code | UnsetType | None = UNSET


class OrderPlacedData(_Strict):
    lines: Lines
    order_id: Id
    channel: Name
    location: Code


class OrderAcknowledgedData(_Strict):
    order_id: Id
    system: Name
    status: Literal["accepted", "rejected"]
    reason: Text | UnsetType | None = UNSET


class OrderAllocatedData(_Strict):
    lines: Lines
    order_id: Id


class OrderShippedData(_Strict):
    lines: Lines
    order_id: Id
    shipment_id: Id
    carrier: Name | UnsetType | None = UNSET
    tracking: Id | UnsetType | None = UNSET


class OrderInvoicedData(_Strict):
    order_id: Id
    invoice_id: Id
    shipment_id: Id


class OrderCancelledData(_Strict):
    order_id: Id


class ReturnReceivedData(_Strict):
    lines: Lines
    order_id: Id
    rma_id: Id
    restock: bool


class InventoryAdjustedData(_Strict):
    sku: Code
    location: Code
    delta: RawQty
    reason: Text


class InventorySnapshotData(_Strict):
    sku: Code
    location: Code
    system: Name
    on_hand: RawQty


class _Envelope(_Strict, tag_field="type"):
    event_id: Id
    schema_version: Annotated[int, Meta(ge=1, le=ev.SCHEMA_VERSION)]
    source: Name
    occurred_at: OccurredAt


#: Event type -> the Struct of its ``data``.
STRUCTS: Final[dict[str, type[Struct]]] = {
    "po.created": PoCreatedData,
    "po.updated": PoUpdatedData,
    "po.cancelled": PoCancelledData,
    "po.acknowledged": PoAcknowledgedData,
    "asn.issued": AsnIssuedData,
    "goods.received": GoodsReceivedData,
    "order.placed": OrderPlacedData,
    "order.acknowledged": OrderAcknowledgedData,
    "order.allocated": OrderAllocatedData,
    "order.shipped": OrderShippedData,
    "order.invoiced": OrderInvoicedData,
    "order.cancelled": OrderCancelledData,
    "return.received": ReturnReceivedData,
    "inventory.adjusted": InventoryAdjustedData,
    "inventory.snapshot": InventorySnapshotData,
}


def _envelope_struct(type_: str, data: type[Struct]) -> type[_Envelope]:
    name = "".join(part.title() for part in type_.replace("_", ".").split(".")) + "Event"
    struct: type[_Envelope] = msgspec.defstruct(  # type: ignore[assignment]  # a subclass
        name, [("data", data)], bases=(_Envelope,), tag=type_, forbid_unknown_fields=True
    )
    return struct


_ENVELOPES: Final = {type_: _envelope_struct(type_, data) for type_, data in STRUCTS.items()}
DECODER: Final = msgspec.json.Decoder(Union[tuple(_ENVELOPES.values())])  # noqa: UP007
#: The models' own check of ``occurred_at`` (format, zone, range).
_OCCURRED_AT: Final[TypeAdapter[Any]] = TypeAdapter(ev.OccurredAt)
_MAX_MILLI: Final = MAX_ABS_UNITS * SCALE
#: Longest quantity text taken without :func:`parse_qty` (12 integer digits + 3 decimals).
_QTY_TEXT_MAX: Final = 16


class _RejectedError(ValueError):
    """The fast path does not take this record (the reference path decides on it)."""


# --- building the pydantic events without validating again ----------------------------
# What pydantic's validator leaves on a model instance is its __dict__ (the fields in
# declaration order), the names of the fields that were given, no extra and no private
# values. Set through the slots' own descriptors: the models are frozen.

_new: Final = object.__new__
_set_dict: Final = object.__setattr__
_set_fields: Final = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra: Final = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private: Final = BaseModel.__dict__["__pydantic_private__"].__set__


def _model(cls: type[BaseModel], values: dict[str, Any], fields_set: set[str]) -> Any:
    """What validating ``values`` into ``cls`` yields, for values known to be valid."""
    obj = _new(cls)
    _set_dict(obj, "__dict__", values)
    _set_fields(obj, fields_set)
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


def _code(text: str) -> str:
    if "@" in text or " " in text:
        raise _RejectedError("@ or space in a code")
    return text


def _qty(qty: int | float | str) -> int:
    """:func:`parse_qty` (unsigned), with its usual forms inline."""
    if type(qty) is int:
        if 0 <= qty < MAX_ABS_UNITS:
            return qty * SCALE
    elif type(qty) is str and len(qty) <= _QTY_TEXT_MAX:
        whole, dot, frac = qty.partition(".")
        if whole.isdigit() and (not dot or (frac.isdigit() and len(frac) <= 3)):
            milli = int(whole) * SCALE + (int(frac.ljust(3, "0")) if frac else 0)
            if milli < _MAX_MILLI:
                return milli
    return parse_qty(qty, signed=False)


def _lines(lines: tuple[Line, ...]) -> tuple[ev.Line, ...]:
    """The models' lines (a hot loop: :func:`_model` and :func:`_code` are inline)."""
    built = []
    new, set_dict, set_fields, set_extra, set_private, cls = (
        _new,
        _set_dict,
        _set_fields,
        _set_extra,
        _set_private,
        ev.Line,
    )
    for line in lines:
        sku = line.sku
        if "@" in sku or " " in sku:
            raise _RejectedError("@ or space in a code")
        qty = line.qty
        milli = qty * SCALE if type(qty) is int and 0 <= qty < MAX_ABS_UNITS else _qty(qty)
        obj = new(cls)
        set_dict(obj, "__dict__", {"line_no": line.line_no, "sku": sku, "qty": milli})
        set_fields(obj, {"line_no", "sku", "qty"})
        set_extra(obj, None)
        set_private(obj, None)
        built.append(obj)
    if len({line.line_no for line in lines}) != len(lines):
        raise _RejectedError("a line_no twice")
    return tuple(built)


class _Spec:
    """How one event type's Structs become its models."""

    __slots__ = ("codes", "data_model", "has_lines", "model", "optional", "signed", "type")

    def __init__(self, type_: str) -> None:
        struct = STRUCTS[type_]
        fields: tuple[str, ...] = struct.__struct_fields__
        self.type = type_
        self.model = ev.EVENT_TYPES[type_]
        data_model: Any = self.model.model_fields["data"].annotation
        if not (isinstance(data_model, type) and issubclass(data_model, BaseModel)):
            raise TypeError(f"{type_}: data is not a model")
        self.data_model: type[BaseModel] = data_model
        self.optional = fields[len(fields) - len(struct.__struct_defaults__) :]
        self.has_lines = "lines" in fields
        self.codes = tuple(name for name in ("sku", "location") if name in fields)
        self.signed = tuple(name for name in ("delta", "on_hand") if name in fields)


_SPECS: Final = {cls: _Spec(type_) for type_, cls in _ENVELOPES.items()}
_EVENT_FIELDS: Final = ("event_id", "type", "schema_version", "source", "occurred_at", "data")


def _event(decoded: _Envelope) -> Any:
    spec = _SPECS[type(decoded)]
    values = msgspec.structs.asdict(decoded.data)  # type: ignore[attr-defined]  # per type
    fields_set = set(values)
    for name in spec.optional:
        if values[name] is UNSET:
            values[name] = None
            fields_set.discard(name)
    for name in spec.codes:
        if values[name] is not None:
            _code(values[name])
    if spec.has_lines:
        values["lines"] = _lines(values["lines"])
    for name in spec.signed:
        values[name] = parse_qty(values[name], signed=True)
    envelope = {
        "event_id": decoded.event_id,
        "type": spec.type,
        "schema_version": decoded.schema_version,
        "source": decoded.source,
        "occurred_at": _OCCURRED_AT.validate_python(decoded.occurred_at),
        "data": _model(spec.data_model, values, fields_set),
    }
    return _model(spec.model, envelope, set(_EVENT_FIELDS))


def decode_json_event(value: bytes) -> ev.AnyEvent | None:
    """The event in JSON ``value``, decoded in one pass; None when the fast path does not
    take the record (then the reference path decides, with its reason and message)."""
    if not value.isascii() or b"\\" in value or b"\x7f" in value:
        return None
    try:
        return _event(DECODER.decode(value))  # type: ignore[no-any-return]
    except (msgspec.DecodeError, ValidationError, ValueError, RecursionError):
        return None
