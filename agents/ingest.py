"""Input agents: consume an input topic in batches, dead-letter bad records, hand on the rest.

Input topics are keyed per entity (``po_id``, ``order_id``, ``SKU@LOCATION``), so the agent
consuming a topic owns the state of its entities: it decodes every record of a batch,
sends each invalid one to ``dlq`` with its reason, and passes the valid events, in order,
to the entity handler. A bad record never stops the agent or holds back the ones after it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from supplyflow.app.metrics import APPLIED, DEAD_LETTERED, Metrics
from supplyflow.app.settings import Settings
from supplyflow.app.topics import DLQ
from supplyflow.codecs import AnyEvent, DecodeError, build_dead_letter, decode_input

__all__ = ["Accepted", "EntityHandler", "IngestTunables", "decode_batch", "register_input_agent"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestTunables:
    """How input agents batch."""

    #: Most records per batch: amortises table writes and per-batch work over many events
    #: while keeping memory per batch small.
    batch_max: int = 2000
    #: Longest wait for a batch to fill, in seconds: bounds added latency at low load.
    batch_window_s: float = 0.05


DEFAULT_TUNABLES: Final = IngestTunables()


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid event with where it came from (for offset-aware, idempotent updates)."""

    event: AnyEvent
    partition: int
    offset: int
    timestamp_ms: int | None


#: Receives the valid events of one batch, in partition order.
EntityHandler = Callable[[Sequence[Accepted]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that goes to the dead-letter topic."""

    error: DecodeError
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def decode_batch(
    topic: str, messages: Sequence[Any], *, max_bytes: int
) -> tuple[list[Accepted], list[Rejected]]:
    """Split Faust messages of the input topic ``topic`` into accepted and rejected."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    for msg in messages:
        headers = list(msg.headers or ())
        timestamp_ms = int(msg.timestamp * 1000) if msg.timestamp else None
        try:
            event = decode_input(topic, msg.key, msg.value, headers, max_bytes=max_bytes)
        except DecodeError as error:
            rejected.append(
                Rejected(
                    error, msg.partition, msg.offset, timestamp_ms, msg.key, msg.value, headers
                )
            )
            continue
        accepted.append(Accepted(event, msg.partition, msg.offset, timestamp_ms))
    return accepted, rejected


def register_input_agent(
    app: Any,
    settings: Settings,
    *,
    topic: str,
    handler: EntityHandler,
    metrics: Metrics,
    tunables: IngestTunables = DEFAULT_TUNABLES,
) -> Any:
    """Create the agent consuming input topic ``topic`` (contract name, without prefix)."""
    full_name = settings.topic(topic)
    source = app.topic(
        full_name,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        internal=False,
    )
    dlq = app.topic(settings.topic(DLQ), key_serializer="raw", value_serializer="raw")
    max_bytes = settings.max_record_bytes
    batch_sizes = metrics.batch_size.labels(topic=topic)

    async def consume(stream: Any) -> None:
        async for batch in stream.take_events(tunables.batch_max, tunables.batch_window_s):
            messages = [event.message for event in batch]
            accepted, rejected = decode_batch(topic, messages, max_bytes=max_bytes)
            for bad in rejected:
                letter = build_dead_letter(
                    bad.error,
                    topic=full_name,
                    partition=bad.partition,
                    offset=bad.offset,
                    timestamp_ms=bad.timestamp_ms,
                    key=bad.key,
                    value=bad.value,
                    headers=bad.headers,
                )
                await dlq.send(key=letter.key, value=letter.value, headers=letter.headers)
                metrics.dead_letters.labels(topic=topic, reason=bad.error.reason).inc()
                metrics.events.labels(topic=topic, type="invalid", outcome=DEAD_LETTERED).inc()
                log.warning(
                    "dead-lettered %s[%d]@%d event_id=%s key=%r: %s",
                    full_name,
                    bad.partition,
                    bad.offset,
                    bad.error.event_id,
                    bad.key[:128] if bad.key else bad.key,
                    bad.error,
                )
            if accepted:
                await handler(accepted)
                for item in accepted:
                    metrics.events.labels(topic=topic, type=item.event.type, outcome=APPLIED).inc()
            batch_sizes.observe(len(batch))

    return app.agent(source, name=f"supplyflow.input.{topic}", concurrency=1)(consume)
