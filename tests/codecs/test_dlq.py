import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder

from supplyflow.app.settings import Settings
from supplyflow.app.topics import max_dlq_message_bytes
from supplyflow.codecs import DecodeError, build_dead_letter, parse_dead_letter
from supplyflow.codecs.dlq import TRUNCATED_HEADER


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


def _letter(**kw: object) -> Any:
    args: dict[str, Any] = {
        "topic": "po.events",
        "partition": 1,
        "offset": 7,
        "timestamp_ms": None,
        "key": b"PO-1",
        "value": b"{}",
        "headers": [],
        "now": datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    }
    args.update(kw)
    return build_dead_letter(DecodeError("schema", "bad", event_id="e-1"), **args)


def _size(letter: Any) -> int:
    headers = sum(len(name.encode()) + len(value) for name, value in letter.headers)
    return len(letter.key or b"") + len(letter.value) + headers


def test_a_header_key_that_is_not_utf8_is_kept_in_the_value_not_on_the_letter() -> None:
    raw_key = b"tr\xffce"
    letter = _letter(headers=[(raw_key.decode("utf-8", "surrogateescape"), b"v"), ("ok", b"1")])
    names = [name for name, _ in letter.headers]
    assert "ok" in names
    assert all(name.encode() for name in names)  # every key on the letter is UTF-8
    entries = orjson.loads(letter.value)["headers"]
    assert base64.b64decode(entries[0]["key_b64"]) == raw_key
    assert entries[1] == {"key": "ok", "value_b64": base64.b64encode(b"1").decode()}


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (b"K" * 2_000_000, b"{}", []),  # a 2 MB key
        (b"PO-1", b"v" * 3_000_000, []),  # a value that base64 makes too large
        (b"PO-1", b"{}", [("big", b"h" * 1_500_000), ("big2", b"h" * 1_500_000)]),
    ],
)
def test_a_letter_larger_than_the_topic_takes_is_truncated_and_says_so(
    key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    limit = 1_000_000
    letter = _letter(key=key, value=value, headers=headers, max_bytes=limit)
    assert _size(letter) <= limit
    body = parse_dead_letter(letter.value)
    truncated = dict(letter.headers)[TRUNCATED_HEADER].decode()
    assert body["truncated"]
    for part, size in body["truncated"].items():
        assert f"{part}={size}" in truncated
    assert value.startswith(body["value"])
    assert key.startswith(body["key"])
    assert body["reason"] == "schema"
    assert body["source"]["offset"] == 7
    assert dict(letter.headers)["supplyflow-source-offset"] == b"7"


def test_a_letter_that_fits_is_not_truncated() -> None:
    letter = _letter(value=b"v" * 10_000, max_bytes=1_000_000)
    body = parse_dead_letter(letter.value)
    assert body["value"] == b"v" * 10_000
    assert "truncated" not in body
    assert TRUNCATED_HEADER not in dict(letter.headers)


def _record_batch_bytes(letter: Any) -> int:
    """What Kafka checks against a topic's ``max.message.bytes``: the letter alone in a
    record batch, as the producer builds it."""
    batch = BatchBuilder(1, 0, is_transactional=0)
    assert batch.append(key=letter.key, value=letter.value, timestamp=None, headers=letter.headers)
    return int(batch.size())


@pytest.mark.parametrize(
    ("key", "headers"),
    [
        (b"PO-1", [("trace", b"h" * 2_000_000)]),  # the 2 MB header of the issue
        (b"PO-1", [("\x01" * 2_000_000, b"v")]),  # a 2 MB header key, escaped 6x in JSON
        (b"\x00" * 2_000_000, []),  # a 2 MB record key
        (b"PO-1", [("", b"")] * 400_000),  # as many empty headers as the input takes
    ],
    ids=["header-value", "header-key", "key", "many-headers"],
)
def test_a_letter_of_any_record_the_input_topic_takes_fits_the_dlq_topic(
    key: bytes, headers: list[tuple[str, bytes]]
) -> None:
    settings = Settings(bootstrap="unused:9092")
    limit = max_dlq_message_bytes(settings)
    value = b'{"type": "po.created"}'
    letter = _letter(key=key, value=value, headers=headers, max_bytes=limit)
    assert _record_batch_bytes(letter) <= limit
    body = parse_dead_letter(letter.value)
    assert body["value"] == value  # what was small is whole
    assert key.startswith(body["key"])
    assert dict(letter.headers)[TRUNCATED_HEADER]
    assert dict(letter.headers)["supplyflow-source-offset"] == b"7"
    if len(headers) > 1:
        assert body["truncated"]["header_count"] == len(headers)
        assert 0 < len(body["headers"]) < len(headers)
