"""Producing records to supplyflow's input topics with aiokafka (murmur2 partitioner by
default, or any of :mod:`supplyflow.app.partitioners`)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from supplyflow.app.exceptions import AppError
from supplyflow.app.kafka_clients import client_options, connection_error
from supplyflow.app.partitioners import Partitioner
from supplyflow.app.sample import SampleRecord
from supplyflow.app.settings import Settings
from supplyflow.app.topics import max_input_message_bytes

__all__ = ["produce_records"]

#: Bytes the producer batches per partition before sending: large batches for throughput.
_BATCH_BYTES: Final = 256 * 1024
_LINGER_MS: Final = 5
#: Sends awaited in bulk once this many are in flight: memory stays flat for any count.
_MAX_IN_FLIGHT: Final = 20_000
#: ``on_progress`` is called every this many records (and once at the end).
_PROGRESS_EVERY: Final = 1_000


async def produce_records(
    settings: Settings,
    records: Iterable[SampleRecord],
    *,
    pause_s: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
    partitioner: Partitioner | None = None,
) -> int:
    """Send ``records`` (topic names without prefix) in order; return how many were sent.

    ``records`` may be a lazy iterator of any length: at most ``_MAX_IN_FLIGHT`` sends are
    pending at a time. With ``pause_s``, each record is delivered before the pause and the
    next one. ``on_progress`` gets the number of records sent since its previous call.
    ``partitioner`` picks each record's partition (default: murmur2 of the key, as Kafka's
    Java client).
    """
    extra = {} if partitioner is None else {"partitioner": partitioner}
    producer = AIOKafkaProducer(
        **client_options(settings),
        max_request_size=max_input_message_bytes(settings),
        max_batch_size=_BATCH_BYTES,
        linger_ms=_LINGER_MS,
        acks="all",
        enable_idempotence=True,
        **extra,
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise await connection_error(settings, "cannot reach Kafka", exc) from exc
    sent = 0
    futures: deque[asyncio.Future[object]] = deque()
    try:
        for record in records:
            futures.append(
                await producer.send(
                    settings.topic(record.topic),
                    value=record.value,
                    key=record.key,
                    headers=record.headers or None,
                )
            )
            sent += 1
            if pause_s:
                await futures[-1]
                await asyncio.sleep(pause_s)
            if len(futures) >= _MAX_IN_FLIGHT:
                while len(futures) > _MAX_IN_FLIGHT // 2:
                    await futures.popleft()
            if on_progress is not None and sent % _PROGRESS_EVERY == 0:
                on_progress(_PROGRESS_EVERY)
        while futures:
            await futures.popleft()
        if on_progress is not None and sent % _PROGRESS_EVERY:
            on_progress(sent % _PROGRESS_EVERY)
    except KafkaError as exc:
        # Collect the outcome of everything in flight so no failure goes unobserved.
        await asyncio.gather(*futures, return_exceptions=True)
        raise AppError(f"producing to {settings.bootstrap} failed after {sent}: {exc}") from exc
    finally:
        await producer.stop()
    return sent
