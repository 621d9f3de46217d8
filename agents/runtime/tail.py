"""Reading back the tail of an output partition this worker now owns.

Outputs are acknowledged before the state (and progress marker) that produced them is
written, so a worker killed in between leaves outputs its successor will produce again.
For outputs that must appear once (exception transitions, dead letters), the successor
reads back the tail of the partition it now writes to and skips what is already there.
Only the owner of partition *p* of the inputs writes to partition *p* of these outputs,
so the tail it reads is complete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

__all__ = ["READ_BACK_RECORDS", "read_tail"]

log = logging.getLogger(__name__)

#: Records read back per partition: far more than a crash can leave in doubt (the
#: records written since the last state write), and bounded memory per partition.
READ_BACK_RECORDS: Final = 100_000
_READ_TIMEOUT_MS: Final = 1000
_MAX_IDLE_FETCHES: Final = 5


async def read_tail(
    kafka: Mapping[str, Any],
    topic: str,
    partition: int,
    each: Callable[[ConsumerRecord[bytes, bytes]], None],
    *,
    limit: int = READ_BACK_RECORDS,
) -> None:
    """Call ``each`` for the last ``limit`` records of ``topic[partition]``, in order.

    ``kafka``: the aiokafka client options to connect with (``RuntimeConfig.kafka``).
    """
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(**kafka, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        start = max(0, end - limit)
        consumer.seek(tp, start)
        position, idle = start, 0
        while position < end and idle < _MAX_IDLE_FETCHES:
            batch = await consumer.getmany(tp, timeout_ms=_READ_TIMEOUT_MS)
            idle = 0 if batch else idle + 1
            for message in batch.get(tp, []):
                each(message)
                position = message.offset + 1
        if position < end:
            log.warning(
                "read back %s[%d] only to offset %d of %d; an output written just before a "
                "crash may appear twice",
                topic,
                partition,
                position,
                end,
            )
    finally:
        await consumer.stop()
