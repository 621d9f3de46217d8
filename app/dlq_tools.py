"""Operator tools for the dead-letter topic: list, show, and replay after correction.

``supplyflow dlq list|show|replay`` call these. A dead letter is addressed as
``<partition>/<offset>`` of this deployment's ``dlq`` topic (``dlq/3/17`` also works).

Replay sends a dead letter back to its source topic: the original key, value and headers
(or a corrected value from a file), without the ``supplyflow-*`` dead-letter headers,
plus ``supplyflow-replayed-from: dlq/<partition>/<offset>``. It is safe to run again:
before sending, it reads the source topics since the dead letters were written and skips
every dead letter whose replay is already there, so a re-run (also after a crash halfway)
sends each one exactly once. Run one replay at a time per deployment.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from supplyflow.app.exceptions import AppError
from supplyflow.app.kafka_clients import client_options, connection_error
from supplyflow.app.settings import Settings
from supplyflow.app.topics import DLQ, INPUT_TOPICS, max_input_message_bytes, topic_partitions
from supplyflow.codecs import (
    EVENT_ADAPTER,
    DecodeError,
    decode_input,
    entity_key,
    parse_dead_letter,
)
from supplyflow.codecs.decode import CONTENT_TYPE_HEADER, MSGPACK_CONTENT_TYPES, content_type
from supplyflow.codecs.dlq import DLQ_HEADER_PREFIX

__all__ = [
    "REPLAYED_FROM",
    "DeadLetterEntry",
    "ReplayReport",
    "fetch_dead_letter",
    "parse_address",
    "read_dead_letters",
    "replay_dead_letters",
    "show",
    "summary",
    "summary_line",
]

#: Header naming the dead letter a replayed record came from: ``dlq/<partition>/<offset>``.
REPLAYED_FROM: Final = f"{DLQ_HEADER_PREFIX}replayed-from"
#: Replays are looked for from this long before the dead letter was written: room for
#: clocks of the worker and of the replaying machine that disagree.
CLOCK_SKEW_MARGIN_MS: Final = 15 * 60 * 1000
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


@dataclass
class ReplayReport:
    """What a replay did with each dead letter it was given."""

    sent: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            *(f"replayed {what}" for what in self.sent),
            *(f"skipped {what}: already replayed" for what in self.already),
            *(f"NOT replayed {what}" for what in self.invalid),
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


async def _consumer(settings: Settings) -> AIOKafkaConsumer:
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


async def _read_range(consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int]) -> list[Any]:
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
    consumer = await _consumer(settings)
    try:
        tps = await topic_partitions(settings, settings.topic(DLQ))
        starts = await consumer.beginning_offsets(tps)
        records = await _read_range(consumer, dict(starts))
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
    consumer = await _consumer(settings)
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
        records = await _read_range(consumer, {tp: offset})
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


@dataclass(frozen=True)
class _Replay:
    entry: DeadLetterEntry
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def _contract_topic(settings: Settings, entry: DeadLetterEntry) -> str:
    for name in INPUT_TOPICS:
        if settings.topic(name) == entry.source_topic:
            return name
    raise AppError(
        f"{entry.address} came from {entry.source_topic!r}, not an input topic of this "
        f"deployment (SUPPLYFLOW_TOPIC_PREFIX={settings.topic_prefix!r}); nothing replayed"
    )


def _prepare(
    settings: Settings, entry: DeadLetterEntry, corrected: bytes | None
) -> tuple[_Replay | None, str | None]:
    """The record to send for ``entry``, or why it would only be dead-lettered again."""
    name = _contract_topic(settings, entry)
    headers = entry.original_headers()
    key: bytes | None = entry.body.get("key")
    value = entry.body.get("value")
    note = ""
    if corrected is not None:
        value = corrected  # JSON: the content-type of a msgpack original no longer applies
        headers = [(k, v) for k, v in headers if k.lower() != CONTENT_TYPE_HEADER]
        fixed_key = _entity_key(value)
        if fixed_key is not None and fixed_key != key:
            note = f" (key {key!r} -> {fixed_key!r})"
            key = fixed_key
    if value is None:
        return None, f"{entry.address}: the dead letter has no value to replay"
    try:
        decode_input(name, key, value, headers, max_bytes=settings.max_record_bytes)
    except DecodeError as error:
        return None, (
            f"{entry.address}: still invalid ({error}); correct it and replay it alone with "
            "--value-file"
        )
    headers.append((REPLAYED_FROM, entry.address.encode()))
    return _Replay(entry, settings.topic(name), key, value, headers), note or None


def _entity_key(value: bytes) -> bytes | None:
    """The key the contract requires for a corrected JSON value (its entity id)."""
    try:
        raw = orjson.loads(value)
        return entity_key(EVENT_ADAPTER.validate_python(raw)).encode()
    except ValueError:
        return None


async def _already_replayed(
    settings: Settings, topics: Iterable[str], since_ms: int
) -> dict[str, str]:
    """``dlq/p/o`` -> where its replay is, for every replay in ``topics`` since ``since_ms``."""
    consumer = await _consumer(settings)
    found: dict[str, str] = {}
    try:
        tps = [
            tp for topic in sorted(set(topics)) for tp in await topic_partitions(settings, topic)
        ]
        offsets = await consumer.offsets_for_times(dict.fromkeys(tps, max(0, since_ms)))
        ends = await consumer.end_offsets(tps)
        starts = {tp: (o.offset if o is not None else ends[tp]) for tp, o in offsets.items()}
        for message in await _read_range(consumer, starts):
            for name, value in message.headers or ():
                if name == REPLAYED_FROM and value:
                    where = f"{message.topic}/{message.partition}/{message.offset}"
                    found[value.decode("utf-8", "replace")] = where
    finally:
        await consumer.stop()
    return found


async def replay_dead_letters(
    settings: Settings,
    entries: Sequence[DeadLetterEntry],
    *,
    corrected: bytes | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Send ``entries`` back to their source topics, each at most once (see module doc)."""
    report = ReplayReport()
    if not entries:
        return report
    topics = {settings.topic(_contract_topic(settings, entry)) for entry in entries}
    since = min(entry.timestamp_ms for entry in entries) - CLOCK_SKEW_MARGIN_MS
    done = await _already_replayed(settings, topics, since)
    todo: list[tuple[_Replay, str | None]] = []
    for entry in entries:
        if entry.address in done:
            report.already.append(f"{entry.address} (at {done[entry.address]})")
            continue
        plan, note = _prepare(settings, entry, corrected)
        if plan is None:
            report.invalid.append(str(note))
        else:
            todo.append((plan, note))
    if dry_run:
        report.sent.extend(f"{p.entry.address} -> {p.topic} (dry run){n or ''}" for p, n in todo)
        return report
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        max_request_size=max_input_message_bytes(settings),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise await connection_error(settings, "cannot reach Kafka", exc) from exc
    try:
        for plan, note in todo:  # one at a time, in order: a failure leaves a clean re-run
            meta = await (
                await producer.send(plan.topic, plan.value, key=plan.key, headers=plan.headers)
            )
            report.sent.append(
                f"{plan.entry.address} -> {meta.topic}/{meta.partition}/{meta.offset}{note or ''}"
            )
    except KafkaError as exc:
        raise AppError(
            f"replay stopped after {len(report.sent)} of {len(todo)}: {exc}; run the same "
            "command again: what was sent is skipped"
        ) from exc
    finally:
        await producer.stop()
    return report
