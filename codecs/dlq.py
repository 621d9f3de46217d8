"""Dead-letter records: the original bytes, headers, provenance and a machine reason.

Value layout (JSON)::

    {"reason": "schema", "detail": "data.lines.0.qty: must not be negative",
     "event_id": "e-1" | null,
     "source": {"topic": "po.events", "partition": 3, "offset": 1234, "timestamp_ms": ...},
     "key_b64": "...", "value_b64": "...", "value_text": "..." | null,
     "headers": [{"key": "content-type", "value_b64": "..."}],
     "dead_lettered_at": "2026-11-27T10:15:00.123Z"}

The record's key is the original key; its headers are the original headers (those with a
UTF-8 key; every one is in the value) plus ``supplyflow-dlq-reason``,
``supplyflow-source-topic``, ``-partition`` and ``-offset``. A header key that is not
UTF-8 appears in the value with ``key_b64``, its exact bytes. A letter larger than the
``dlq`` topic takes is truncated (see :func:`build_dead_letter`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from supplyflow.codecs.decode import Headers, header_key_bytes
from supplyflow.codecs.exceptions import DecodeError

__all__ = [
    "DLQ_HEADER_PREFIX",
    "TRUNCATED_HEADER",
    "DeadLetter",
    "build_dead_letter",
    "parse_dead_letter",
]

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


#: Room for the record's own framing and the supplyflow headers when a letter is sized.
_RECORD_OVERHEAD: Final = 1024
#: In a letter that must be truncated, the key and each header key and value keep this much.
_TRUNCATED_PART_BYTES: Final = 1024
#: ... and the original headers listed in its value take at most this much (a record can
#: carry a million empty headers): the headers after that are only counted.
_TRUNCATED_HEADERS_BYTES: Final = 64 * 1024
#: Kafka's framing of one record header: two varint lengths of up to 5 bytes each.
_HEADER_OVERHEAD: Final = 10
TRUNCATED_HEADER: Final = f"{DLQ_HEADER_PREFIX}dlq-truncated"


def _header_entry(name: str, value: bytes, keep: int | None) -> dict[str, Any]:
    raw_key = header_key_bytes(name)
    kept_key = raw_key if keep is None else raw_key[:keep]
    kept = value if keep is None else value[:keep]
    entry: dict[str, Any] = {"key": kept_key.decode("utf-8", "replace")}
    if kept_key.decode("utf-8", "replace").encode() != kept_key:
        entry["key_b64"] = _b64(kept_key)  # not UTF-8: the exact bytes
    if len(kept_key) < len(raw_key):
        entry["key_bytes"] = len(raw_key)
    entry["value_b64"] = _b64(kept)
    if len(kept) < len(value):
        entry["value_bytes"] = len(value)
    return entry


def _kafka_header_ok(name: str) -> bool:
    """Whether a header can be copied onto the letter (its key must be UTF-8)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not name.startswith(DLQ_HEADER_PREFIX)


@dataclass(frozen=True, slots=True)
class _Rejected:
    """A rejected record and where it came from: everything a letter is built from."""

    error: DecodeError
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    now: datetime

    def provenance(self, extra: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """``extra`` then the ``supplyflow-*`` headers every letter has."""
        return [
            *extra,
            (f"{DLQ_HEADER_PREFIX}dlq-reason", self.error.reason.encode()),
            (f"{DLQ_HEADER_PREFIX}source-topic", self.topic.encode()),
            (f"{DLQ_HEADER_PREFIX}source-partition", str(self.partition).encode()),
            (f"{DLQ_HEADER_PREFIX}source-offset", str(self.offset).encode()),
        ]

    def body(self) -> dict[str, Any]:
        """The value's fields that do not depend on truncation."""
        return {
            "reason": self.error.reason,
            "detail": self.error.detail,
            "event_id": self.error.event_id,
            "source": {
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "timestamp_ms": self.timestamp_ms,
            },
            "dead_lettered_at": self.now.isoformat().replace("+00:00", "Z"),
        }


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
    max_bytes: int | None = None,
) -> DeadLetter:
    """Build the dead-letter record for ``value`` rejected with ``error``.

    With ``max_bytes`` (the ``dlq`` topic's record limit), a letter that would not fit is
    truncated instead of failing to send: no text copy, the original headers only in the
    value, the key and each header key and value cut to 1 KiB, the header list to 64 KiB
    (the rest counted), the value to what fits. The value's ``truncated`` field and the
    ``supplyflow-dlq-truncated`` header name what was cut, with the original sizes
    (``headers``: their total bytes, ``header_count`` when some are left out). Whatever
    the record held, the result is at most ``max_bytes`` as :func:`_size` counts it, once
    ``max_bytes`` leaves room for what is never cut (about 70 KiB at most: the provenance,
    the reason's detail, the cut key and header list; the ``dlq`` topic takes megabytes).
    """
    rejected = _Rejected(
        error,
        topic,
        partition,
        offset,
        timestamp_ms,
        key,
        value,
        [(name, bytes(v) if v is not None else b"") for name, v in headers or ()],
        now or datetime.now(UTC),
    )
    letter = _whole(rejected)
    if max_bytes is None or _size(letter) <= max_bytes:
        return letter
    return _truncated(rejected, max_bytes)


def _size(letter: DeadLetter) -> int:
    """The letter's size as a Kafka record, an upper bound."""
    headers = sum(
        len(header_key_bytes(name)) + len(value) + _HEADER_OVERHEAD
        for name, value in letter.headers
    )
    return len(letter.key or b"") + len(letter.value) + headers + _RECORD_OVERHEAD


def _whole(rejected: _Rejected) -> DeadLetter:
    value = rejected.value
    text: str | None = None
    if value is not None and len(value) <= _TEXT_COPY_LIMIT:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    body = rejected.body()
    body.update(
        key_b64=_b64(rejected.key),
        value_b64=_b64(value),
        value_text=text,
        headers=[_header_entry(name, v, None) for name, v in rejected.headers],
    )
    copied = [(name, v) for name, v in rejected.headers if _kafka_header_ok(name)]
    return DeadLetter(rejected.key, orjson.dumps(body), rejected.provenance(copied))


def _truncated(rejected: _Rejected, max_bytes: int) -> DeadLetter:
    cut: dict[str, int] = {}
    key, value = rejected.key, rejected.value
    if key is not None and len(key) > _TRUNCATED_PART_BYTES:
        cut["key"] = len(key)
        key = key[:_TRUNCATED_PART_BYTES]
    entries: list[dict[str, Any]] = []
    listed = 0
    for name, header_value in rejected.headers:
        entry = _header_entry(name, header_value, _TRUNCATED_PART_BYTES)
        listed += len(orjson.dumps(entry)) + 1
        if listed > _TRUNCATED_HEADERS_BYTES:
            break
        entries.append(entry)
    shortened = any("value_bytes" in e or "key_bytes" in e for e in entries)
    if shortened or len(entries) < len(rejected.headers):
        cut["headers"] = sum(len(header_key_bytes(n)) + len(v) for n, v in rejected.headers)
    if len(entries) < len(rejected.headers):
        cut["header_count"] = len(rejected.headers)
    body = rejected.body()
    body.update(key_b64=_b64(key), value_b64="", value_text=None, headers=entries)
    # What the letter holds besides the value, with room for the truncation notes.
    notes = {"key": 0, "headers": 0, "header_count": 0, "value": 0}
    skeleton = DeadLetter(
        key,
        orjson.dumps({**body, "truncated": notes}),
        rejected.provenance([(TRUNCATED_HEADER, b"key=0,headers=0,header_count=0,value=0")]),
    )
    if value is not None:
        keep = max(0, max_bytes - _size(skeleton) - 64) * 3 // 4  # base64: 4 bytes per 3
        if keep < len(value):
            cut["value"] = len(value)
            value = value[:keep]
    body["value_b64"] = _b64(value)
    body["truncated"] = cut
    what = ",".join(f"{part}={size}" for part, size in cut.items())
    headers = rejected.provenance([(TRUNCATED_HEADER, what.encode())])
    return DeadLetter(key, orjson.dumps(body), headers)


def parse_dead_letter(value: bytes) -> dict[str, Any]:
    """Read a dead-letter value back, with ``key`` and ``value`` restored to bytes."""
    body: dict[str, Any] = orjson.loads(value)
    for field in ("key", "value"):
        encoded = body.get(f"{field}_b64")
        body[field] = None if encoded is None else base64.b64decode(encoded)
    return body
