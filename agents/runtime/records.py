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

__all__ = ["LaneRecord", "Record", "by_partition", "record_of"]


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

    @property
    def stream(self) -> str:
        """The input stream it was read from: ``""`` its input topic, ``"r"`` routed."""
        return "" if self.origin is None else "r"

    @property
    def source(self) -> tuple[int, int]:
        """(partition, offset) where it was produced: its provenance in dead letters."""
        return (self.partition, self.offset) if self.origin is None else self.origin


@dataclass(frozen=True, slots=True)
class LaneRecord(Record):
    """A record its partition applies in timestamp order (see :mod:`.ordering`): its
    offset is its source offset, and it is applied as the stream of its source partition,
    its *lane*. (A subclass: the records applied as read carry no field more, each one
    costs time to build.)"""

    lane: str = ""

    @property
    def stream(self) -> str:
        """The lane it is applied as."""
        return self.lane


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
