"""Partitioning keys as Kafka's default partitioner does (agents.runtime.keys)."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from supplyflow.agents.runtime.keys import murmur2, partition_for, partition_of


def test_murmur2_hashes_as_aiokafka_does() -> None:
    rng = random.Random(11)
    for _ in range(5000):
        data = rng.randbytes(rng.randrange(0, 41))
        assert murmur2(data) == aiokafka_murmur2(data), data


def test_partitions_are_kafkas_default_for_text_and_bytes_keys() -> None:
    reference = DefaultPartitioner()
    for partitions in (1, 3, 8, 12):
        every = list(range(partitions))
        for i in range(300):
            key = f"SKU-{i}@DC{i % 4}"
            expected = reference(key.encode(), every, every)
            assert partition_for(key, partitions) == expected
            assert partition_of(key.encode(), partitions) == expected
            assert partition_for(key, partitions) == expected  # a cached answer too
