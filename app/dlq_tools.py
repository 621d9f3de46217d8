"""Operator tools for the dead-letter topic: list and show (replay: :mod:`.dlq_replay`).

``supplyflow dlq list|show|replay`` call these. A dead letter is addressed as
``<partition>/<offset>`` of this deployment's ``dlq`` topic (``dlq/3/17`` also works).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from supplyflow.app.exceptions import AppError
from supplyflow.app.kafka_clients import client_options, connection_error
from supplyflow.app.settings import Settings
from supplyflow.app.topics import DLQ, INPUT_TOPICS, topic_partitions
from supplyflow.codecs import (
    parse_dead_letter,
)
from supplyflow.codecs.decode import MSGPACK_CONTENT_TYPES, content_type
from supplyflow.codecs.dlq import DLQ_HEADER_PREFIX

__all__ = [
    "DeadLetterEntry",
    "fetch_dead_letter",
    "open_consumer",
    "parse_address",
    "read_dead_letters",
    "read_range",
    "show",
    "summary",
    "summary_line",
]

_FETCH_BYTES: Final = 8 * 1024 * 1024
_POLL_MS: Final = 500
#: Consecutive empty polls after which a read gives up short of the end offsets.
_MAX_IDLE_POLLS: Final = 20


@dataclass(frozen=True)
class DeadLetterEntry:
    """One record of the ``dlq`` topic, parsed."""

    partition: int
    offset: int
    timestamp_ms: int
    body: dict[str, Any]

    @property
    def address(self) -> str:
        return f"dlq/{self.partition}/{self.offset}"

    @property
    def reason(self) -> str:
        return str(self.body.get("reason"))

    @property
    def source_topic(self) -> str:
        return str(self.body.get("source", {}).get("topic"))

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The input record's headers, without any ``supplyflow-*`` header."""
        return [
            (h["key"], base64.b64decode(h["value_b64"]) if h.get("value_b64") else b"")
            for h in self.body.get("headers") or []
            if not h["key"].lower().startswith(DLQ_HEADER_PREFIX)
        ]


def parse_address(text: str) -> tuple[int, int]:
    """``3/17`` or ``dlq/3/17`` -> (3, 17)."""
    parts = text.strip().removeprefix("dlq/").split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise AppError(f"{text!r} is not a dead-letter address: write PARTITION/OFFSET, e.g. 3/17")
    return int(parts[0]), int(parts[1])


def _entry(message: Any) -> DeadLetterEntry:
    try:
        body = parse_dead_letter(message.value)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        body = {"reason": "unreadable", "detail": f"not a supplyflow dead letter: {exc}"}
    return DeadLetterEntry(message.partition, message.offset, message.timestamp, body)


async def open_consumer(settings: Settings) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=_FETCH_BYTES,
        fetch_max_bytes=_FETCH_BYTES * 4,
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise await connection_error(settings, "cannot reach Kafka", exc) from exc
    return consumer


async def read_range(consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int]) -> list[Any]:
    """Every record from ``starts`` up to the end offsets as of now."""
    ends = await consumer.end_offsets(list(starts))
    todo = {tp: end for tp, end in ends.items() if end > starts[tp]}
    if not todo:
        return []
    consumer.assign(list(todo))
    for tp in todo:
        consumer.seek(tp, starts[tp])
    records: list[Any] = []
    idle = 0
    while todo and idle < _MAX_IDLE_POLLS:
        batch = await consumer.getmany(*todo, timeout_ms=_POLL_MS)
        idle = 0 if batch else idle + 1
        for tp, messages in batch.items():
            records.extend(m for m in messages if m.offset < todo.get(tp, -1))
            if messages and messages[-1].offset + 1 >= todo.get(tp, 0):
                todo.pop(tp, None)
    if todo:
        raise AppError(
            f"could not read to the end of {sorted(tp.topic for tp in todo)} "
            f"({len(records)} records read): the cluster may be overloaded; try again"
        )
    return records


async def read_dead_letters(
    settings: Settings, *, reason: str | None = None, topic: str | None = None
) -> list[DeadLetterEntry]:
    """Every dead letter written so far, optionally of one reason and/or source topic.

    ``topic`` is a contract name (``po.events``) or a full topic name.
    """
    consumer = await open_consumer(settings)
    try:
        tps = await topic_partitions(settings, settings.topic(DLQ))
        starts = await consumer.beginning_offsets(tps)
        records = await read_range(consumer, dict(starts))
    finally:
        await consumer.stop()
    wanted_topic = settings.topic(topic) if topic in INPUT_TOPICS else topic
    entries = [_entry(m) for m in records]
    return sorted(
        (
            e
            for e in entries
            if (reason is None or e.reason == reason)
            and (wanted_topic is None or e.source_topic == wanted_topic)
        ),
        key=lambda e: (e.timestamp_ms, e.partition, e.offset),
    )


async def fetch_dead_letter(settings: Settings, partition: int, offset: int) -> DeadLetterEntry:
    """The dead letter at ``dlq/<partition>/<offset>``."""
    consumer = await open_consumer(settings)
    try:
        tps = await topic_partitions(settings, settings.topic(DLQ))
        tp = TopicPartition(settings.topic(DLQ), partition)
        if tp not in tps:
            raise AppError(f"dlq has partitions 0..{len(tps) - 1}, not {partition}")
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        if not first <= offset < end:
            raise AppError(
                f"no dead letter at dlq/{partition}/{offset}: that partition holds offsets "
                f"{first}..{end - 1} (see `supplyflow dlq list`)"
            )
        records = await read_range(consumer, {tp: offset})
    finally:
        await consumer.stop()
    return _entry(records[0])


def summary(entry: DeadLetterEntry) -> dict[str, Any]:
    """The fields ``dlq list --json`` prints for one dead letter."""
    body = entry.body
    key = body.get("key")
    return {
        "address": entry.address,
        "dead_lettered_at": body.get("dead_lettered_at"),
        "reason": entry.reason,
        "source": body.get("source"),
        "key": _text(key) if key is not None else None,
        "event_id": body.get("event_id"),
        "detail": body.get("detail"),
    }


def summary_line(entry: DeadLetterEntry) -> str:
    """One line of ``dlq list``."""
    fields = summary(entry)
    source = fields["source"] or {}
    detail = str(fields["detail"] or "")
    detail = detail if len(detail) <= 100 else detail[:97] + "..."
    return (
        f"{entry.address:<14} {fields['dead_lettered_at'] or '-':<24} {entry.reason:<15} "
        f"{source.get('topic')}[{source.get('partition')}]@{source.get('offset')} "
        f"key={fields['key']!r} event_id={fields['event_id']!r}: {detail}"
    )


def _decoded_value(value: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
    """The value as data when it parses (JSON or msgpack per its header), else None."""
    if not value:
        return None
    try:
        if content_type(headers) in MSGPACK_CONTENT_TYPES:
            return msgpack.unpackb(value, raw=False, strict_map_key=False, timestamp=0)
        return orjson.loads(value)
    except (ValueError, msgpack.UnpackException, orjson.JSONDecodeError, RecursionError):
        return None


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def show(entry: DeadLetterEntry) -> dict[str, Any]:
    """Everything about one dead letter, readable: the original value decoded if possible."""
    body = entry.body
    headers = [(h["key"], base64.b64decode(h.get("value_b64") or "")) for h in body["headers"]]
    value = body.get("value")
    decoded = _decoded_value(value, headers)
    return {
        "address": entry.address,
        "reason": body.get("reason"),
        "detail": body.get("detail"),
        "event_id": body.get("event_id"),
        "source": body.get("source"),
        "dead_lettered_at": body.get("dead_lettered_at"),
        "key": _text(body.get("key")) if body.get("key") is not None else None,
        "key_b64": body.get("key_b64"),
        "headers": [
            {"key": k, "value": _text(v), **({} if _text(v) is not None else {"b64": b64})}
            for (k, v), b64 in zip(
                headers, (h.get("value_b64") for h in body["headers"]), strict=True
            )
        ],
        "value_bytes": len(value) if value is not None else None,
        "value": decoded,
        "value_text": None if decoded is not None else _text(value),
        "value_b64": None if decoded is not None or _text(value) else body.get("value_b64"),
    }
