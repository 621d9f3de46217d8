"""Dead-letter tools without Kafka: addresses, the readable view, what a replay sends."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest

from supplyflow.app.dlq_replay import REPLAYED_FROM, _prepare
from supplyflow.app.dlq_tools import DeadLetterEntry, parse_address, show, summary_line
from supplyflow.app.exceptions import AppError
from supplyflow.app.settings import Settings
from supplyflow.codecs import DecodeError, build_dead_letter, parse_dead_letter

SETTINGS = Settings(topic_prefix="acme.")


def _letter(
    value: bytes,
    reason: Any = "unknown_entity",
    *,
    key: bytes | None = b"PO-1",
    headers: list[tuple[str, bytes]] | None = None,
    topic: str = "acme.po.events",
) -> DeadLetterEntry:
    letter = build_dead_letter(
        DecodeError(reason, "because"),
        topic=topic,
        partition=2,
        offset=40,
        timestamp_ms=1_000,
        key=key,
        value=value,
        headers=headers or [("trace", b"t-1")],
    )
    # what a consumer of dlq sees: the original headers plus the dead-letter ones
    assert any(k == "supplyflow-dlq-reason" for k, _ in letter.headers)
    return DeadLetterEntry(3, 17, 2_000, parse_dead_letter(letter.value))


def _po(po_id: str = "PO-1", qty: Any = 5, type_: str = "po.created") -> dict[str, Any]:
    return {
        "event_id": "e-1",
        "type": type_,
        "schema_version": 1,
        "source": "erp",
        "occurred_at": "2026-11-27T10:00:00Z",
        "data": {
            "po_id": po_id,
            "revision": 1,
            "supplier_id": "S",
            "location": "DC1",
            "lines": [{"line_no": 1, "sku": "SKU-1", "qty": qty}],
        },
    }


def test_addresses() -> None:
    assert parse_address("3/17") == (3, 17)
    assert parse_address("dlq/3/17") == (3, 17)
    for bad in ("3", "3:17", "a/b", "dlq/3/17/1"):
        with pytest.raises(AppError, match="PARTITION/OFFSET"):
            parse_address(bad)


def test_show_decodes_json_and_msgpack_and_keeps_raw_bytes_otherwise() -> None:
    json_view = show(_letter(orjson.dumps(_po())))
    assert json_view["address"] == "dlq/3/17"
    assert json_view["value"]["data"]["po_id"] == "PO-1"
    assert json_view["key"] == "PO-1"
    assert {"key": "trace", "value": "t-1"} in json_view["headers"]
    packed = msgpack.packb(_po())
    msgpack_view = show(
        _letter(packed, headers=[("content-type", b"application/msgpack")], key=b"\xff")
    )
    assert msgpack_view["value"]["type"] == "po.created"
    assert msgpack_view["key"] is None
    assert msgpack_view["key_b64"] == "/w=="
    binary = show(_letter(b"\xc1\xff\x00", "invalid_msgpack"))
    assert binary["value"] is None
    assert binary["value_b64"] == "wf8A"
    assert "dlq/3/17" in summary_line(_letter(orjson.dumps(_po())))


def test_replay_sends_the_original_with_provenance_and_without_dead_letter_headers() -> None:
    value = orjson.dumps(_po())
    plan, note = _prepare(SETTINGS, _letter(value), None)
    assert plan is not None
    assert note is None
    assert plan.topic == "acme.po.events"
    assert plan.key == b"PO-1"
    assert plan.value == value
    assert plan.headers == [("trace", b"t-1"), (REPLAYED_FROM, b"dlq/3/17")]


def test_a_correction_replaces_value_content_type_and_key() -> None:
    letter = _letter(
        msgpack.packb(_po(qty=-1)),
        "schema",
        key=b"WRONG",
        headers=[("content-type", b"application/msgpack"), ("trace", b"t")],
    )
    plan, note = _prepare(SETTINGS, letter, orjson.dumps(_po(qty="2.5")))
    assert plan is not None
    assert plan.key == b"PO-1"
    assert "WRONG" in str(note)
    assert ("content-type", b"application/msgpack") not in plan.headers
    assert orjson.loads(plan.value)["data"]["lines"][0]["qty"] == "2.5"


def test_still_invalid_records_are_not_sent() -> None:
    plan, why = _prepare(SETTINGS, _letter(orjson.dumps(_po(qty=-1)), "schema"), None)
    assert plan is None
    assert "still invalid (schema:" in str(why)
    plan, why = _prepare(SETTINGS, _letter(b"{}"), orjson.dumps({"type": "nope"}))
    assert plan is None
    assert "unknown_type" in str(why)


def test_dead_letters_of_another_prefix_are_refused() -> None:
    with pytest.raises(AppError, match="not an input topic of this deployment"):
        _prepare(SETTINGS, _letter(b"{}", topic="other.po.events"), None)
