"""Turn one raw input record (key, value bytes, headers) into a canonical event.

Checks run cheapest first and stop at the first failure, whose reason is what the
dead-letter record carries: size, header keys, content type, syntax, shape, type, topic,
schema, key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgpack
import orjson
from pydantic import ValidationError

from supplyflow.codecs.events import EVENT_ADAPTER, EVENT_TYPE_TOPIC, AnyEvent
from supplyflow.codecs.exceptions import DecodeError

__all__ = [
    "CONTENT_TYPE_HEADER",
    "JSON_CONTENT_TYPES",
    "MSGPACK_CONTENT_TYPES",
    "Headers",
    "content_type",
    "decode_input",
    "header_key_bytes",
]

Headers = Sequence[tuple[str, bytes]]

CONTENT_TYPE_HEADER: Final = "content-type"
JSON_CONTENT_TYPES: Final = frozenset({"application/json", "text/json"})
MSGPACK_CONTENT_TYPES: Final = frozenset(
    {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}
)
#: How many validation problems a dead-letter reason lists before "(+N more)".
_MAX_PROBLEMS: Final = 5
#: msgpack limits: no legitimate event nests deeper or carries more items than these.
_MSGPACK_MAX_ITEMS: Final = 100_000


def header_key_bytes(name: str) -> bytes:
    """The bytes a producer sent as a header key (see :mod:`supplyflow.app.kafka_records`:
    keys that are not UTF-8 arrive with their bytes kept as lone surrogates)."""
    return name.encode("utf-8", "surrogateescape")


def _check_header_keys(headers: Headers) -> None:
    for name, _ in headers:
        if name.isascii():
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as exc:
            shown = header_key_bytes(name)[:64]
            raise DecodeError("invalid_header", f"header key {shown!r} is not UTF-8") from exc


def content_type(headers: Headers | None) -> str | None:
    """The record's ``content-type`` header, lower-cased, without parameters; else None."""
    if not headers:
        return None
    for name, value in headers:
        if name.lower() == CONTENT_TYPE_HEADER:
            text = value.decode("latin-1") if value is not None else ""
            return text.split(";", 1)[0].strip().lower()
    return None


def _parse(value: bytes, ctype: str | None) -> Any:
    if ctype is None or ctype in JSON_CONTENT_TYPES:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("invalid_json", f"not valid UTF-8 JSON: {exc}") from exc
    if ctype in MSGPACK_CONTENT_TYPES:
        try:
            return msgpack.unpackb(
                value,
                raw=False,
                strict_map_key=True,
                max_array_len=_MSGPACK_MAX_ITEMS,
                max_map_len=_MSGPACK_MAX_ITEMS,
                timestamp=0,
            )
        except (ValueError, msgpack.UnpackException, RecursionError) as exc:
            why = str(exc) or type(exc).__name__
            raise DecodeError("invalid_msgpack", f"not valid MessagePack: {why}") from exc
    raise DecodeError(
        "unsupported_content_type",
        f"content-type {ctype!r} is neither JSON nor application/msgpack",
    )


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"][1:]) or "record"
        problems.append(f"{where}: {error['msg']}")
    more = len(problems) - _MAX_PROBLEMS
    text = "; ".join(problems[:_MAX_PROBLEMS])
    return f"{text} (+{more} more)" if more > 0 else text


def decode_input(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    *,
    max_bytes: int,
) -> AnyEvent:
    """Decode and validate one record consumed from the input topic ``topic``.

    ``topic`` is the contract name without prefix (``po.events``...). Raises
    :class:`DecodeError` with the dead-letter reason when the record is not acceptable.
    """
    size = len(value or b"") + len(key or b"")
    if headers:
        size += sum(len(header_key_bytes(name)) + len(v or b"") for name, v in headers)
    if size > max_bytes:
        raise DecodeError(
            "too_large", f"record (key, value, headers) is {size} bytes, the limit is {max_bytes}"
        )
    if headers:
        _check_header_keys(headers)
    if not value:
        raise DecodeError("invalid_json", "record has no value (tombstone or empty)")
    raw = _parse(value, content_type(headers))
    if not isinstance(raw, dict):
        raise DecodeError("not_an_object", f"value is a {type(raw).__name__}, not an object")
    event_id = raw.get("event_id")
    event_id = event_id if isinstance(event_id, str) and len(event_id) <= 128 else None
    type_ = raw.get("type")
    home = EVENT_TYPE_TOPIC.get(type_) if isinstance(type_, str) else None
    if home is None:
        shown = repr(type_)[:80]
        raise DecodeError("unknown_type", f"type {shown} is not a known event type", event_id)
    if home != topic:
        raise DecodeError("wrong_topic", f"{type_} events belong on {home}, not {topic}", event_id)
    try:
        event = EVENT_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise DecodeError("schema", _describe(exc), event_id) from exc
    except RecursionError as exc:
        raise DecodeError("schema", "value nests too deeply", event_id) from exc
    expected = event.data.entity_key
    if key is None:
        raise DecodeError("key_mismatch", f"record has no key; expected {expected!r}", event_id)
    try:
        text_key = key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("key_mismatch", "key is not UTF-8", event_id) from exc
    if text_key != expected:
        raise DecodeError(
            "key_mismatch", f"key {text_key[:140]!r} differs from entity id {expected!r}", event_id
        )
    return event
