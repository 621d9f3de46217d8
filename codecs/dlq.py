"""Dead-letter records: the original bytes, headers, provenance and a machine reason.

Value layout (JSON)::

    {"reason": "schema", "detail": "data.lines.0.qty: must not be negative",
     "event_id": "e-1" | null,
     "source": {"topic": "po.events", "partition": 3, "offset": 1234, "timestamp_ms": ...},
     "key_b64": "...", "value_b64": "...", "value_text": "..." | null,
     "headers": [{"key": "content-type", "value_b64": "..."}],
     "dead_lettered_at": "2026-11-27T10:15:00.123Z"}

The record's key is the original key; its headers are the original headers plus
``supplyflow-dlq-reason``, ``supplyflow-source-topic``, ``-partition`` and ``-offset``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from supplyflow.codecs.decode import Headers
from supplyflow.codecs.exceptions import DecodeError

__all__ = ["DLQ_HEADER_PREFIX", "DeadLetter", "build_dead_letter", "parse_dead_letter"]

DLQ_HEADER_PREFIX: Final = "supplyflow-"
#: Values up to this size are also copied as text, so the topic can be read by eye.
_TEXT_COPY_LIMIT: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What goes to the ``dlq`` topic for one rejected record."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def build_dead_letter(
    error: DecodeError,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    now: datetime | None = None,
) -> DeadLetter:
    """Build the dead-letter record for ``value`` rejected with ``error``."""
    text: str | None = None
    if value is not None and len(value) <= _TEXT_COPY_LIMIT:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    original_headers = [(name, bytes(v) if v is not None else b"") for name, v in headers or ()]
    body: dict[str, Any] = {
        "reason": error.reason,
        "detail": error.detail,
        "event_id": error.event_id,
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp_ms": timestamp_ms,
        },
        "key_b64": _b64(key),
        "value_b64": _b64(value),
        "value_text": text,
        "headers": [{"key": name, "value_b64": _b64(v)} for name, v in original_headers],
        "dead_lettered_at": (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
    }
    out_headers = [
        *original_headers,
        (f"{DLQ_HEADER_PREFIX}dlq-reason", error.reason.encode()),
        (f"{DLQ_HEADER_PREFIX}source-topic", topic.encode()),
        (f"{DLQ_HEADER_PREFIX}source-partition", str(partition).encode()),
        (f"{DLQ_HEADER_PREFIX}source-offset", str(offset).encode()),
    ]
    return DeadLetter(key=key, value=orjson.dumps(body), headers=out_headers)


def parse_dead_letter(value: bytes) -> dict[str, Any]:
    """Read a dead-letter value back, with ``key`` and ``value`` restored to bytes."""
    body: dict[str, Any] = orjson.loads(value)
    for field in ("key", "value"):
        encoded = body.get(f"{field}_b64")
        body[field] = None if encoded is None else base64.b64decode(encoded)
    return body
