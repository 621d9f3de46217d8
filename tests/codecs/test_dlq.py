from datetime import UTC, datetime

import orjson

from supplyflow.codecs import DecodeError, build_dead_letter, parse_dead_letter


def test_dead_letter_keeps_original_bytes_headers_and_provenance() -> None:
    value = b"\xc1\xff binary"
    headers = [("content-type", b"application/msgpack"), ("trace", b"t-1")]
    letter = build_dead_letter(
        DecodeError("invalid_msgpack", "bad byte", event_id=None),
        topic="acme.order.events",
        partition=3,
        offset=1234,
        timestamp_ms=1_700_000_000_000,
        key=b"SO-1",
        value=value,
        headers=headers,
        now=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    )
    assert letter.key == b"SO-1"
    body = parse_dead_letter(letter.value)
    assert body["value"] == value
    assert body["key"] == b"SO-1"
    assert body["value_text"] is None  # not UTF-8
    assert body["reason"] == "invalid_msgpack"
    assert body["source"] == {
        "topic": "acme.order.events",
        "partition": 3,
        "offset": 1234,
        "timestamp_ms": 1_700_000_000_000,
    }
    assert body["dead_lettered_at"] == "2026-11-27T10:00:00Z"
    out = dict(letter.headers)
    assert out["supplyflow-dlq-reason"] == b"invalid_msgpack"
    assert out["supplyflow-source-offset"] == b"1234"
    assert out["trace"] == b"t-1"
    assert orjson.loads(letter.value)["headers"][0]["key"] == "content-type"


def test_text_copy_for_readable_values_and_missing_key() -> None:
    letter = build_dead_letter(
        DecodeError("key_mismatch", "no key", event_id="e-9"),
        topic="po.events",
        partition=0,
        offset=0,
        timestamp_ms=None,
        key=None,
        value=b'{"a": 1}',
        headers=None,
    )
    body = parse_dead_letter(letter.value)
    assert body["key"] is None
    assert body["value_text"] == '{"a": 1}'
    assert body["event_id"] == "e-9"
