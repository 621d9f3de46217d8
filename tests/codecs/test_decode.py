from typing import Any

import msgpack
import orjson
import pytest

from supplyflow.app.sample import OK, sample_scenario
from supplyflow.codecs import DecodeError, decode_input
from supplyflow.codecs.events import EVENT_TYPE_TOPIC, OrderPlaced, PoCreated

MAX = 1024 * 1024


def envelope(type_: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "event_id": "e-1",
        "type": type_,
        "schema_version": 1,
        "source": "erp",
        "occurred_at": "2026-11-27T10:15:00Z",
        "data": data,
        **extra,
    }


PO = {
    "po_id": "PO-17",
    "revision": 1,
    "supplier_id": "S-1",
    "location": "DC1",
    "lines": [{"line_no": 1, "sku": "SKU-1", "qty": 12}],
}


def decode(
    topic: str, key: bytes | None, body: Any, headers: list[tuple[str, bytes]] | None = None
) -> Any:
    value = body if isinstance(body, bytes) else orjson.dumps(body)
    return decode_input(topic, key, value, headers, max_bytes=MAX)


def reason_of(topic: str, key: bytes | None, body: Any, **kw: Any) -> str:
    with pytest.raises(DecodeError) as info:
        decode(topic, key, body, **kw)
    return info.value.reason


def test_valid_json_event() -> None:
    event = decode("po.events", b"PO-17", envelope("po.created", PO))
    assert isinstance(event, PoCreated)
    assert event.data.lines[0].qty == 12000
    assert event.occurred_at.utcoffset() is not None


def test_valid_msgpack_event_equals_json_event() -> None:
    body = envelope("po.created", PO)
    from_json = decode("po.events", b"PO-17", body)
    packed = msgpack.packb(body)
    from_msgpack = decode(
        "po.events", b"PO-17", packed, headers=[("content-type", b"application/msgpack")]
    )
    assert from_json == from_msgpack


def test_unknown_fields_are_ignored() -> None:
    body = envelope("po.created", {**PO, "buyer": "x"}, trace_id="abc")
    assert decode("po.events", b"PO-17", body).data.po_id == "PO-17"


def test_inventory_key_is_sku_at_location() -> None:
    data = {"sku": "SKU-1", "location": "DC1", "delta": "-2.5", "reason": "damage"}
    event = decode("inventory.events", b"SKU-1@DC1", envelope("inventory.adjusted", data))
    assert event.data.delta == -2500
    assert reason_of("inventory.events", b"SKU-1@DC2", envelope("inventory.adjusted", data)) == (
        "key_mismatch"
    )


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: {**b, "type": "po.exploded"}, "unknown_type"),
        (lambda b: {**b, "type": 7}, "unknown_type"),
        (lambda b: {k: v for k, v in b.items() if k != "type"}, "unknown_type"),
        (lambda b: {**b, "type": "order.cancelled"}, "wrong_topic"),
        (lambda b: {k: v for k, v in b.items() if k != "event_id"}, "schema"),
        (lambda b: {**b, "event_id": ""}, "schema"),
        (lambda b: {**b, "event_id": "x" * 129}, "schema"),
        (lambda b: {**b, "event_id": 5}, "schema"),
        (lambda b: {**b, "occurred_at": "2026-11-27T10:15:00"}, "schema"),  # no zone
        (lambda b: {**b, "occurred_at": "yesterday"}, "schema"),
        (lambda b: {**b, "schema_version": 2}, "schema"),
        (lambda b: {**b, "data": {**PO, "revision": "1"}}, "schema"),
        (lambda b: {**b, "data": {**PO, "lines": []}}, "schema"),
        (
            lambda b: {**b, "data": {**PO, "lines": [{"line_no": 1, "sku": "A", "qty": -1}]}},
            "schema",
        ),
        (
            lambda b: {**b, "data": {**PO, "lines": [{"line_no": 1, "sku": "A", "qty": 1.2345}]}},
            "schema",
        ),
        (
            lambda b: {
                **b,
                "data": {
                    **PO,
                    "lines": [
                        {"line_no": 1, "sku": "A", "qty": 1},
                        {"line_no": 1, "sku": "B", "qty": 1},
                    ],
                },
            },
            "schema",
        ),
        (lambda b: {**b, "data": {**PO, "location": "DC@1"}}, "schema"),
        # identifiers are printable: no control or format characters (internal table keys
        # start with NUL, so no id can name one)
        (lambda b: {**b, "data": {**PO, "po_id": "\x00offset:po.events"}}, "schema"),
        (lambda b: {**b, "data": {**PO, "po_id": "PO-17\n"}}, "schema"),
        (lambda b: {**b, "data": {**PO, "supplier_id": "S\u202e1"}}, "schema"),
        (lambda b: {**b, "data": {**PO, "location": "DC\x7f1"}}, "schema"),
        (lambda b: {**b, "event_id": "e\u200b1"}, "schema"),
        (lambda b: {**b, "source": "erp\x00"}, "schema"),
        # occurred_at within [1970-01-01, 9000-01-01) UTC
        (lambda b: {**b, "occurred_at": "9999-12-31T23:59:59-14:00"}, "schema"),
        (lambda b: {**b, "occurred_at": "8999-12-31T23:00:00-14:00"}, "schema"),
        (lambda b: {**b, "occurred_at": "1969-12-31T23:59:59Z"}, "schema"),
        (lambda b: {**b, "data": {**PO, "po_id": "PO-18"}}, "key_mismatch"),
    ],
)
def test_bad_records_get_their_reason(mutate: Any, reason: str) -> None:
    assert reason_of("po.events", b"PO-17", mutate(envelope("po.created", PO))) == reason


def test_printable_ids_and_times_at_the_bounds_are_accepted() -> None:
    body = envelope(
        "po.created",
        {**PO, "po_id": "PO 17 é", "supplier_id": "Zulieferer-Ä"},
        occurred_at="8999-12-31T23:59:59.999Z",
    )
    assert decode("po.events", "PO 17 é".encode(), body).data.po_id == "PO 17 é"
    early = envelope("po.created", PO, occurred_at="1970-01-01T00:00:00Z")
    assert decode("po.events", b"PO-17", early).occurred_at.year == 1970


def test_a_header_key_that_is_not_utf8_is_invalid_header() -> None:
    # aiokafka (patched, app.kafka_records) hands such a key over with its bytes kept as
    # lone surrogates
    bad_key = b"tr\xffce".decode("utf-8", "surrogateescape")
    body = envelope("po.created", PO)
    with pytest.raises(DecodeError) as info:
        decode("po.events", b"PO-17", body, headers=[("ok", b"1"), (bad_key, b"x")])
    assert info.value.reason == "invalid_header"
    assert "tr\\xffce" in info.value.detail
    assert decode("po.events", b"PO-17", body, headers=[("tracé", b"x")]).data.po_id == "PO-17"


def test_syntax_shape_size_and_content_type() -> None:
    assert reason_of("po.events", b"PO-17", b"{not json") == "invalid_json"
    assert reason_of("po.events", b"PO-17", b"\xff\xfe") == "invalid_json"
    assert reason_of("po.events", b"PO-17", b"") == "invalid_json"
    assert reason_of("po.events", b"PO-17", b'"a string"') == "not_an_object"
    assert reason_of("po.events", b"PO-17", b"x" * (MAX + 1)) == "too_large"
    ctype = [("content-type", b"application/xml")]
    assert reason_of("po.events", b"PO-17", b"<po/>", headers=ctype) == "unsupported_content_type"
    mp = [("Content-Type", b"application/msgpack")]
    assert reason_of("po.events", b"PO-17", b"\xc1", headers=mp) == "invalid_msgpack"


def test_missing_or_non_utf8_key_is_key_mismatch() -> None:
    body = envelope("po.created", PO)
    assert reason_of("po.events", None, body) == "key_mismatch"
    assert reason_of("po.events", b"\xff", body) == "key_mismatch"


def test_schema_error_keeps_the_event_id_and_names_the_field() -> None:
    body = envelope("po.created", {**PO, "lines": [{"line_no": 1, "sku": "A", "qty": -1}]})
    with pytest.raises(DecodeError) as info:
        decode("po.events", b"PO-17", body)
    assert info.value.event_id == "e-1"
    assert "lines.0.qty" in info.value.detail
    assert "negative" in info.value.detail


def test_deep_nesting_is_rejected_not_crashing() -> None:
    deep = b'{"event_id":"e","type":"po.created","data":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert reason_of("po.events", b"PO-17", deep) in {"invalid_json", "schema"}


def test_json_and_string_quantities_agree() -> None:
    a = decode(
        "order.events",
        b"O-1",
        envelope(
            "order.placed",
            {
                "order_id": "O-1",
                "channel": "web",
                "location": "DC1",
                "lines": [{"line_no": 1, "sku": "S", "qty": 12.5}],
            },
        ),
    )
    b = decode(
        "order.events",
        b"O-1",
        envelope(
            "order.placed",
            {
                "order_id": "O-1",
                "channel": "web",
                "location": "DC1",
                "lines": [{"line_no": 1, "sku": "S", "qty": "12.500"}],
            },
        ),
    )
    assert isinstance(a, OrderPlaced)
    assert a == b


def test_every_event_type_has_a_topic() -> None:
    assert len(EVENT_TYPE_TOPIC) == 15
    assert set(EVENT_TYPE_TOPIC.values()) == {"po.events", "order.events", "inventory.events"}


def test_sample_scenario_records_decode_as_labelled() -> None:
    for record in sample_scenario("t"):
        if record.expect == OK:
            decode_input(record.topic, record.key, record.value, record.headers, max_bytes=MAX)
        else:
            with pytest.raises(DecodeError) as info:
                decode_input(record.topic, record.key, record.value, record.headers, max_bytes=MAX)
            assert info.value.reason == record.expect, record.label


def test_headers_count_towards_the_record_size() -> None:
    body = orjson.dumps(envelope("po.created", PO))
    small = [("trace", b"x" * 100)]
    assert (
        decode_input("po.events", b"PO-17", body, small, max_bytes=MAX).data.entity_key == "PO-17"
    )
    with pytest.raises(DecodeError) as info:
        decode_input("po.events", b"PO-17", body, [("trace", b"x" * MAX)], max_bytes=MAX)
    assert info.value.reason == "too_large"
    assert "headers" in info.value.detail
