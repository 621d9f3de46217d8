"""The input record as the runtime hands it to the agents: where it came from, and its bytes.

The readers fetch records with their own aiokafka consumers (:mod:`.reader`), and the
progress markers fetch the ones a batch skipped the same way (:mod:`.progress`); both
turn them into :class:`Record`. The partition travels in the record itself: table reads
and writes name it explicitly, nothing keeps a "current" record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["Record", "by_partition", "record_of"]


@dataclass(frozen=True, slots=True)
class Record:
    """One record of an input topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    #: the record's Kafka timestamp in seconds (None: the record carries none)
    timestamp: float | None
    #: (partition, offset) of the record in its input topic, when it was read from a
    #: routed topic (see :mod:`.routing`); None for a record read where it was produced
    origin: tuple[int, int] | None = None
    #: the stream it is applied as when its partition applies records in timestamp order
    #: (see :mod:`.ordering`: one per source partition, offsets its source offsets)
    lane: str | None = None

    @property
    def stream(self) -> str:
        """The input stream it is applied as: ``""`` its input topic, ``"r"`` routed, or
        its lane in timestamp order."""
        if self.lane is not None:
            return self.lane
        return "" if self.origin is None else "r"

    @property
    def source(self) -> tuple[int, int]:
        """(partition, offset) where it was produced: its provenance in dead letters."""
        return (self.partition, self.offset) if self.origin is None else self.origin


def record_of(topic: str, partition: int, record: Any) -> Record:
    """A record an aiokafka consumer returned (a ``ConsumerRecord``), as the agents take it."""
    return Record(
        topic,
        partition,
        record.offset,
        record.key,
        record.value,
        list(record.headers) if record.headers else [],
        record.timestamp / 1000 if record.timestamp else None,
    )


class _Partitioned(Protocol):
    @property
    def partition(self) -> int: ...


P = TypeVar("P", bound=_Partitioned)


def by_partition(items: Iterable[P]) -> dict[int, list[P]]:
    """``items`` (records, or anything with a partition) grouped by partition, in order."""
    groups: dict[int, list[P]] = {}
    for item in items:
        groups.setdefault(item.partition, []).append(item)
    return groups
