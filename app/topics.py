"""The contract's topics, their Kafka configuration, and creating them at start.

supplyflow creates its topics on start with ``SUPPLYFLOW_PARTITIONS`` partitions; an
existing topic with another partition count stops the worker with instructions, because
per-entity state is co-partitioned with its input topic.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from supplyflow.agents.topics import (
    DLQ,
    EXCEPTIONS,
    INPUT_TOPICS,
    INVENTORY_EVENTS,
    ORDER_EVENTS,
    PO_EVENTS,
    POSITIONS,
)
from supplyflow.app.exceptions import AppError
from supplyflow.app.kafka_clients import client_options, connection_error
from supplyflow.app.settings import Settings

__all__ = [
    "DLQ",
    "EXCEPTIONS",
    "INPUT_TOPICS",
    "INVENTORY_EVENTS",
    "ORDER_EVENTS",
    "POSITIONS",
    "PO_EVENTS",
    "TopicSpec",
    "delete_topics",
    "deltas_topic_name",
    "ensure_topics",
    "input_group",
    "read_topic",
    "routed_topic_name",
    "ticks_topic_name",
    "topic_partitions",
    "topic_specs",
]

log = logging.getLogger(__name__)

#: Room for the dead-letter envelope (base64 grows data by 4/3, plus provenance).
_DLQ_OVERHEAD_BYTES: Final = 64 * 1024
_ADMIN_TIMEOUT_MS: Final = 30_000
#: Per-partition fetch size when reading a topic back: room for the largest dead letter.
_READ_FETCH_BYTES: Final = 8 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    """One topic supplyflow owns: its full name, partitions and Kafka configs."""

    name: str
    partitions: int
    config: dict[str, str]
    #: internal topics are supplyflow's own plumbing, not part of the contract
    internal: bool = False


def max_input_message_bytes(settings: Settings) -> int:
    """Input topics accept records a bit over the limit so they can be dead-lettered."""
    return settings.max_record_bytes * 2 + _DLQ_OVERHEAD_BYTES


def max_dlq_message_bytes(settings: Settings) -> int:
    """A dead letter holds the original value base64-encoded (and a text copy if small)."""
    return max_input_message_bytes(settings) * 2 + _DLQ_OVERHEAD_BYTES


def deltas_topic_name(settings: Settings) -> str:
    """The internal topic carrying PO/order contributions to positions (keyed SKU@LOC)."""
    return f"{settings.app_id}-position-deltas"


def ticks_topic_name(settings: Settings) -> str:
    """The internal topic of deadline ticks (one per owned partition every tick interval)."""
    return f"{settings.app_id}-ticks"


def routed_topic_name(settings: Settings, contract: str) -> str:
    """The internal topic that carries records of input topic ``contract`` to the partition
    that owns their key, when a producer put them elsewhere (agents.runtime.routing)."""
    return f"{settings.app_id}-{contract}-routed"


def input_group(settings: Settings) -> str:
    """The consumer group the readers commit input offsets to (for Kafka's tools)."""
    return f"{settings.app_id}-input"


#: The state tables (see ``agents.state``); each has a compacted changelog topic.
STATE_TABLES: Final = ("po", "order", "position")


def changelog_topic_name(settings: Settings, table: str) -> str:
    """The changelog topic Faust uses for state table ``table``."""
    return f"{settings.app_id}-{table}-changelog"


#: Changelogs are compacted, but Kafka compacts only closed segments, and its default
#: segment (1 GiB, rolled after 7 days) keeps every write of a busy table in the open one:
#: a rebuild then reads each key's whole history. Smaller segments, rolled at least hourly,
#: let the log cleaner keep a changelog near one record per key.
_CHANGELOG_CONFIG: Final = {
    "cleanup.policy": "compact",
    "segment.bytes": str(32 * 1024 * 1024),
    "segment.ms": str(3_600_000),
}

#: Ticks are worthless after a moment; keep an hour for debugging.
_TICKS_RETENTION_MS: Final = 3_600_000
#: A routed record carries its origin in a header or two: room for them on top of the
#: input topics' limit.
_ROUTED_OVERHEAD_BYTES: Final = 4 * 1024


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic of the contract, named with the configured prefix, and the internal one."""
    n = settings.partitions
    inputs = {"max.message.bytes": str(max_input_message_bytes(settings))}
    return [
        TopicSpec(deltas_topic_name(settings), n, {}, internal=True),
        TopicSpec(
            ticks_topic_name(settings),
            n,
            {"retention.ms": str(_TICKS_RETENTION_MS)},
            internal=True,
        ),
        # Created up front, not left to Faust: an agent that starts before Faust's own
        # creation is visible in the metadata crashed with PartitionsMismatch ("0
        # partitions") and never processed again.
        *(
            TopicSpec(changelog_topic_name(settings, t), n, dict(_CHANGELOG_CONFIG), True)
            for t in STATE_TABLES
        ),
        *(TopicSpec(settings.topic(name), n, dict(inputs)) for name in INPUT_TOPICS),
        # Records routed to the partition that owns their key are input not yet applied:
        # kept until the owner has applied them (it deletes what its changelog holds the
        # marker past, see agents.runtime.routing), never by age.
        *(
            TopicSpec(
                routed_topic_name(settings, name),
                n,
                {
                    "retention.ms": "-1",
                    "max.message.bytes": str(
                        max_input_message_bytes(settings) + _ROUTED_OVERHEAD_BYTES
                    ),
                },
                internal=True,
            )
            for name in INPUT_TOPICS
        ),
        TopicSpec(settings.topic(POSITIONS), n, {"cleanup.policy": "compact"}),
        TopicSpec(settings.topic(EXCEPTIONS), n, {}),
        TopicSpec(
            settings.topic(DLQ), n, {"max.message.bytes": str(max_dlq_message_bytes(settings))}
        ),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics (only check, with ``SUPPLYFLOW_CREATE_TOPICS=false``); check
    the partition count of existing ones.

    Returns the names created. Raises :class:`AppError` when Kafka cannot be reached or an
    input topic has the wrong number of partitions.
    """
    specs = topic_specs(settings)
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=_ADMIN_TIMEOUT_MS)
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise await connection_error(settings, "cannot reach Kafka", exc) from exc
    try:
        # Describe only topics that exist: a metadata request for a missing topic makes a
        # broker with auto.create.topics.enable create it, with the wrong configuration.
        names = set(await admin.list_topics())
        existing = await admin.describe_topics([s.name for s in specs if s.name in names])
        found = {t["topic"]: len(t["partitions"]) for t in existing if t.get("error_code", 0) == 0}
        for spec in specs:
            have = found.get(spec.name)
            if have is not None and have != spec.partitions:
                raise AppError(
                    f"topic {spec.name} has {have} partitions but SUPPLYFLOW_PARTITIONS is "
                    f"{spec.partitions}: set SUPPLYFLOW_PARTITIONS={have}, or use a new "
                    "SUPPLYFLOW_TOPIC_PREFIX (state is co-partitioned with its topics)"
                )
        missing = [spec for spec in specs if spec.name not in found]
        created: list[str] = []
        if missing and not settings.create_topics:
            raise AppError(
                f"{len(missing)} of supplyflow's topics do not exist on {settings.bootstrap} "
                f"and SUPPLYFLOW_CREATE_TOPICS is false: {', '.join(s.name for s in missing)}. "
                "Create them with the partitions and configs `supplyflow topics plan` prints "
                "(same settings), or let the workers create them (SUPPLYFLOW_CREATE_TOPICS=true)"
            )
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name,
                        num_partitions=s.partitions,
                        replication_factor=settings.replication_factor,
                        topic_configs=s.config,
                    )
                    for s in missing
                ]
            )
            for result in response.to_object()["topic_errors"]:
                code = result["error_code"]
                if code == 0:
                    created.append(result["topic"])
                elif code != TopicAlreadyExistsError.errno:  # another worker was first
                    error = for_code(code)
                    raise AppError(
                        f"cannot create topic {result['topic']}: {error.__name__} "
                        f"{result.get('error_message') or ''}".rstrip()
                    )
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    except KafkaError as exc:
        raise AppError(f"cannot create supplyflow topics on {settings.bootstrap}: {exc}") from exc
    finally:
        await admin.close()


async def read_topic(
    kafka: Settings | str, topic: str, *, expected: int | None = None, wait_s: float = 60.0
) -> list[Any]:
    """Every record of ``topic`` from the start (no consumer group, nothing committed).

    ``kafka`` is the settings (or a plain ``host:port`` list). Waits until ``expected``
    records have arrived or ``wait_s`` passes; with ``expected`` None, reads up to the end
    offsets at the time of the call.
    """
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=_READ_FETCH_BYTES,
        fetch_max_bytes=_READ_FETCH_BYTES * 4,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        if expected is None:
            partitions = consumer.assignment() or set()
            while not partitions and loop.time() < deadline:
                await asyncio.sleep(0.05)
                partitions = consumer.assignment()
            ends = await consumer.end_offsets(list(partitions))
            expected = sum(ends.values())
        while len(records) < expected and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=250)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` (an error naming the prefix when it does not exist)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
        # Never describe a missing topic: a broker that auto-creates topics would make it.
        exists = topic in await admin.list_topics()
        described = await admin.describe_topics([topic]) if exists else []
    except KafkaError as exc:
        raise await connection_error(settings, "cannot reach Kafka", exc) from exc
    finally:
        await admin.close()
    found = [t for t in described if t.get("topic") == topic and t.get("error_code", 0) == 0]
    if not found or not found[0]["partitions"]:
        raise AppError(f"topic {topic} does not exist: is SUPPLYFLOW_TOPIC_PREFIX right?")
    return [TopicPartition(topic, p["partition"]) for p in found[0]["partitions"]]


async def delete_topics(kafka: Settings | str, prefixes: tuple[str, ...]) -> list[str]:
    """Delete every topic whose name starts with one of ``prefixes``; return their names."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
