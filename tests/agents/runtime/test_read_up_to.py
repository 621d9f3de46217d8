"""How far a reader has read: a partition is read up to the time Kafka was asked where it
ended, once the reader's position reached that end."""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition

from supplyflow.agents.runtime.reader import InputReader
from supplyflow.app.runtime_config import runtime_config
from supplyflow.app.settings import Settings

CONFIG = runtime_config(Settings(bootstrap="127.0.0.1:1", topic_prefix="t.", app_id="t"))
TOPIC = "t.po.events"
ROUTED = "t-po.events-routed"


class Consumer:
    """Ends and positions the test sets; the calls the reader makes."""

    def __init__(self) -> None:
        self.ends: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.asked: list[list[TopicPartition]] = []

    async def start(self) -> None:
        return None

    def assign(self, tps: list[TopicPartition]) -> None:
        return None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked.append(sorted(tps))
        return {tp: self.ends[tp] for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


def _reader(consumer: Consumer) -> InputReader:
    reader = InputReader(
        CONFIG, [TOPIC, ROUTED], new_consumer=lambda: consumer, probed=[TOPIC], probe_every_s=0
    )
    asyncio.run(reader.start())
    reader.activate(0, {TOPIC: 9, ROUTED: None})
    return reader


def test_a_partition_is_read_up_to_the_probe_once_its_position_reaches_the_end() -> None:
    consumer = Consumer()
    tp = TopicPartition(TOPIC, 0)
    consumer.ends[tp] = 15
    reader = _reader(consumer)
    assert reader.read_up_to_ms(TOPIC, 0) is None
    before = time.time()
    asyncio.run(reader.probe())
    assert consumer.asked == [[tp]]  # the routed topic is not probed
    asyncio.run(reader.settle())
    assert reader.read_up_to_ms(TOPIC, 0) is None  # at 10, the end was 15
    consumer.positions[tp] = 15
    asyncio.run(reader.settle())
    up_to = reader.read_up_to_ms(TOPIC, 0)
    assert up_to is not None
    assert before * 1000 - 1 <= up_to <= time.time() * 1000


def test_an_empty_partition_is_read_up_to_at_once_and_a_rebalance_keeps_what_was_read() -> None:
    consumer = Consumer()
    tp = TopicPartition(TOPIC, 0)
    consumer.ends[tp] = 10  # the marker is at 9: nothing left
    reader = _reader(consumer)
    asyncio.run(reader.probe())
    asyncio.run(reader.settle())
    up_to = reader.read_up_to_ms(TOPIC, 0)
    assert up_to is not None
    consumer.ends[tp] = 12
    asyncio.run(reader.probe())
    reader.reset()  # a rebalance: the pending probe is dropped, what was read stays true
    asyncio.run(reader.settle())
    assert reader.read_up_to_ms(TOPIC, 0) == up_to
