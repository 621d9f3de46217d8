"""Replaying dead letters to their source topics, each at most once.

A replay sends a dead letter back to its source topic: the original key, value and
headers (or a corrected value from a file), without the ``supplyflow-*`` dead-letter
headers, plus ``supplyflow-replayed-from: dlq/<partition>/<offset>``. It is safe to run
again: before sending, it reads the source topics since the dead letters were written and
skips every dead letter whose replay is already there, so a re-run (also after a crash
halfway) sends each one exactly once. Run one replay at a time per deployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from supplyflow.app.dlq_tools import DeadLetterEntry, open_consumer, read_range
from supplyflow.app.exceptions import AppError
from supplyflow.app.kafka_clients import client_options, connection_error
from supplyflow.app.settings import Settings
from supplyflow.app.topics import INPUT_TOPICS, max_input_message_bytes, topic_partitions
from supplyflow.codecs import EVENT_ADAPTER, DecodeError, decode_input, entity_key
from supplyflow.codecs.decode import CONTENT_TYPE_HEADER
from supplyflow.codecs.dlq import DLQ_HEADER_PREFIX

__all__ = ["CLOCK_SKEW_MARGIN_MS", "REPLAYED_FROM", "ReplayReport", "replay_dead_letters"]

#: Header naming the dead letter a replayed record came from: ``dlq/<partition>/<offset>``.
REPLAYED_FROM: Final = f"{DLQ_HEADER_PREFIX}replayed-from"
#: Replays are looked for from this long before the dead letter was written: room for
#: clocks of the worker and of the replaying machine that disagree.
CLOCK_SKEW_MARGIN_MS: Final = 15 * 60 * 1000


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
    consumer = await open_consumer(settings)
    found: dict[str, str] = {}
    try:
        tps = [
            tp for topic in sorted(set(topics)) for tp in await topic_partitions(settings, topic)
        ]
        offsets = await consumer.offsets_for_times(dict.fromkeys(tps, max(0, since_ms)))
        ends = await consumer.end_offsets(tps)
        starts = {tp: (o.offset if o is not None else ends[tp]) for tp, o in offsets.items()}
        for message in await read_range(consumer, starts):
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
