"""The partitioners producers use in the wild, for ``supplyflow produce --partitioner``.

supplyflow gives the same results whichever partitioner a producer used (it routes every
record to the partition that owns its key, see docs/guarantees.md). These reproduce what
common clients do by default, so a test, the benchmark or a user can produce as their
own systems do:

======================  ==========================================================
``murmur2``             the Java client, aiokafka, kcat ``-X partitioner=murmur2_random``
``crc32``               librdkafka's default ``consistent_random`` (kcat, confluent-kafka
                        for Python, Go, .NET): CRC32 of the key; a random partition without
``fnv1a``               Sarama's default hash partitioner (32-bit FNV-1a, sign folded)
``round-robin``         kafka-go's default balancer: the key is ignored
``random``              a random partition per record (seeded)
======================  ==========================================================

Each is an aiokafka partitioner: ``(key bytes | None, all partitions, available) -> int``.
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Callable, Sequence
from typing import Final

from supplyflow.agents.runtime.keys import partition_of

__all__ = ["PARTITIONERS", "Partitioner", "fnv1a_32", "partitioner"]

#: aiokafka's partitioner signature.
Partitioner = Callable[[bytes | None, Sequence[int], Sequence[int]], int]

_FNV_OFFSET: Final = 0x811C9DC5
_FNV_PRIME: Final = 0x01000193
_MASK32: Final = 0xFFFFFFFF


def fnv1a_32(data: bytes) -> int:
    """32-bit FNV-1a (Go's ``hash/fnv.New32a``, which Sarama's hash partitioner uses)."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK32
    return h


def _murmur2(key: bytes | None, every: Sequence[int], available: Sequence[int]) -> int:
    if key is None:
        return random.choice(available or every)  # noqa: S311 - load spreading, not security
    return every[partition_of(key, len(every))]


def _crc32(key: bytes | None, every: Sequence[int], available: Sequence[int]) -> int:
    if key is None:
        return random.choice(available or every)  # noqa: S311
    return every[zlib.crc32(key) % len(every)]


def _fnv1a(key: bytes | None, every: Sequence[int], available: Sequence[int]) -> int:
    if key is None:
        return random.choice(available or every)  # noqa: S311
    signed = fnv1a_32(key)
    if signed >= 2**31:
        signed -= 2**32
    # Go's % keeps the dividend's sign; Sarama then negates a negative partition.
    index = abs(signed) % len(every)
    return every[index]


def _round_robin() -> Partitioner:
    turn = itertools.count()

    def pick(key: bytes | None, every: Sequence[int], available: Sequence[int]) -> int:
        return every[next(turn) % len(every)]

    return pick


def _random(seed: int) -> Partitioner:
    rng = random.Random(seed)  # noqa: S311

    def pick(key: bytes | None, every: Sequence[int], available: Sequence[int]) -> int:
        return rng.choice(every)

    return pick


#: Name -> factory (seeded where the choice is random).
PARTITIONERS: Final[dict[str, Callable[[int], Partitioner]]] = {
    "murmur2": lambda seed: _murmur2,
    "crc32": lambda seed: _crc32,
    "fnv1a": lambda seed: _fnv1a,
    "round-robin": lambda seed: _round_robin(),
    "random": _random,
}


def partitioner(name: str, seed: int = 0) -> Partitioner:
    """The partitioner called ``name`` (one of :data:`PARTITIONERS`)."""
    try:
        factory = PARTITIONERS[name]
    except KeyError:
        known = ", ".join(PARTITIONERS)
        raise ValueError(f"unknown partitioner {name!r}: use one of {known}") from None
    return factory(seed)
