"""Applying a partition's records in timestamp order, whichever partitions they came from.

Routing (:mod:`.routing`) brings every record to the partition that owns its key, and
keeps the order each key had in the partition it was produced to. That is the order it
was produced in when the producer's partitioner is deterministic (murmur2, CRC32, FNV-1a,
explicit partitions by key): one key's records all come from one source partition. A
round-robin or random partitioner spreads one key over every partition, between which
Kafka keeps no order: the forwards from different source partitions reach the owner
interleaved as they arrived, and a PO's revisions or an order's lines would be applied
out of order. ``SUPPLYFLOW_APPLY_ORDER=timestamp`` makes the owner apply them in the
order of their timestamps instead (:class:`ApplyOrder`).

**The order.** Each record gets the key (*t*, source partition, source offset), where
*t* is its Kafka timestamp (CreateTime: when the producer created it), raised to the
largest *t* of the records before it from the same source partition (a clock that
stepped back does not reorder a partition). The owner applies its records in key
order: a total order that depends on the records alone, not on when they arrived.

**Holding back.** A record is applied once no record with a smaller key can still
come: each source partition *q* has a floor, the larger of the last *t* read from *q*
and the time up to which *q* is known to have been read (for the owner's own partition
the reader's probe of the log end; for the others their read-up-to announcements, which
follow their forwards) minus ``SUPPLYFLOW_APPLY_LATENESS``: every record still to come
from *q* has a key of at least (floor, *q*). Records whose (*t*, source) is at most the
lowest (floor, *q*) are applied. An idle partition read to its end therefore holds nothing
back for longer than the lateness plus the time an announcement takes. A record whose
producer delivered it later than the lateness allows (created before its partition was
already read past its time) is applied as soon as it is read: late, and counted.

**Exactly once.** Records applied in timestamp order are applied as one stream per
source partition (their *lane*, ``t<q>``) whose offsets are the source offsets: a
source partition's records are applied in its offset order (keys grow with the offset
within one source), so entities and positions recognise replays by them as they do by
the offsets of a topic. What the owner applied is part of its checkpoint (a progress
marker of its own, :meth:`ApplyOrder.stage`): per source partition the last offset
applied and its *t*, and per input stream where reading must resume for the records
held back, unapplied. A worker that restarts reads those again; the ones at or below
the offsets applied are replays, which entities skip (or re-apply, if their state never
reached the changelog, see :mod:`.progress`).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from supplyflow.agents.runtime.progress import marker_key
from supplyflow.agents.runtime.records import LaneRecord, Record
from supplyflow.codecs.state import StateFormat

__all__ = [
    "ORDER_STATE_FORMAT",
    "ApplyOrder",
    "lane_of",
]

log = logging.getLogger(__name__)

#: How the apply order's state is stored: ``[version, resume offsets, applied]``.
ORDER_STATE_FORMAT: Final = StateFormat("apply order", 1, 2, legacy=lambda _: None)
#: A floor below every timestamp: nothing is applied while a source partition is unknown.
_UNKNOWN: Final = -(2**63)


def lane_of(source: int) -> str:
    """The stream name of the records of source partition ``source`` in timestamp order."""
    return f"t{source}"


class StateTable(Protocol):
    """Where the state is kept: the agent's table, by partition (a :class:`.TableIO`)."""

    def get(self, partition: int, key: str) -> object: ...

    def put(self, partition: int, key: str, value: object) -> None: ...


#: A held record: (t, source partition, source offset, the record as read).
_Held = tuple[int, int, int, Record]


@dataclass
class _Partition:
    """What one owner partition holds back and has applied."""

    #: the records read and not applied yet, a heap by key
    held: list[_Held] = field(default_factory=list)
    #: (source, offset) of every held record (a record read twice is held once)
    queued: set[tuple[int, int]] = field(default_factory=set)
    #: source partition -> (last offset applied, its t)
    applied: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: source partition -> the largest t read from it (a record's t is raised to it)
    last_t: dict[int, int] = field(default_factory=dict)
    #: the key of the last record applied, to tell late records
    frontier: tuple[int, int, int] = (_UNKNOWN, 0, 0)
    #: records applied late (after records with a larger key) in this process
    late: int = 0
    #: held or applied records since the state was last staged
    dirty: bool = False


class ApplyOrder:
    """Timestamp order for the partitions of one input topic an agent owns (module doc).

    ``topics`` are the input topic and its routed topic (full names): the streams the
    held records are read from, whose resume offsets :meth:`stage` keeps.
    """

    def __init__(
        self,
        *,
        topics: tuple[str, str],
        partitions: int,
        lateness_ms: int,
        table: StateTable,
    ) -> None:
        self.topics = topics
        self.partitions = partitions
        self.lateness_ms = lateness_ms
        self.table = table
        #: its key in the agent's table: a progress marker's, skipped as one
        self.key = marker_key(f"{topics[1]}#apply-order")
        self._parts: dict[int, _Partition] = {}

    def _part(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = self._load(partition)
        return part

    def _stored(self, partition: int) -> tuple[dict[str, int | None], dict[int, tuple[int, int]]]:
        stored = self.table.get(partition, self.key)
        if stored is None:
            return {}, {}
        resume, applied = ORDER_STATE_FORMAT.unpack(stored)
        return (
            dict(resume),
            {source: (offset, t) for source, offset, t in applied},
        )

    def _load(self, partition: int) -> _Partition:
        _, applied = self._stored(partition)
        part = _Partition(applied=applied)
        part.last_t = {source: t for source, (_, t) in applied.items()}
        return part

    def resume(self, partition: int, markers: Mapping[str, int | None]) -> dict[str, int | None]:
        """Where to read ``partition`` from after it was (re)assigned: each topic's marker
        (``markers``), or the record before the first one held back, unapplied. What was
        held in memory is dropped: it is read again."""
        self._parts.pop(partition, None)
        resume, _ = self._stored(partition)
        out = dict(markers)
        for topic, offset in resume.items():
            if offset is not None and topic in out:  # None: nothing held back there
                out[topic] = offset
        return out

    def held_from(self, partition: int, topic: str) -> int | None:
        """The stored offset before the first record of ``topic[partition]`` held back
        (None: none held): the records after it must stay in Kafka."""
        resume, _ = self._stored(partition)
        return resume.get(topic)

    def drop(self) -> None:
        """Forget every partition (a batch failed: they are read again from the stored
        state, see :meth:`resume`)."""
        self._parts.clear()

    def floors(self, partition: int) -> dict[str, int]:
        """Per lane, the last offset applied: a record at or below it is a replay."""
        return {lane_of(s): offset for s, (offset, _) in self._part(partition).applied.items()}

    def hold(self, partition: int, records: Iterable[Record]) -> None:
        """Hold back ``records`` of ``partition`` (in the order read) until :meth:`release`."""
        part = self._part(partition)
        for record in records:
            source, offset = record.source
            if (source, offset) in part.queued:
                continue
            t = _UNKNOWN if record.timestamp is None else round(record.timestamp * 1000)
            applied = part.applied.get(source)
            if applied is not None and offset <= applied[0]:
                # Applied before this process read it again: a replay, which keeps its
                # source's order and changes nothing the source's later records see.
                t = min(t, applied[1])
            else:
                t = max(t, part.last_t.get(source, t))
                part.last_t[source] = t
            part.queued.add((source, offset))
            part.dirty = True
            heapq.heappush(part.held, (t, source, offset, record))

    def floor(self, partition: int, read_up_to: Mapping[int, int]) -> tuple[int, int]:
        """(t, source partition): every record of ``partition``'s keys still to come from
        source *q* has a larger (t, *q*) (the same, from *q* itself, at a later offset).
        ``read_up_to`` holds, per source partition, the time it is known to be read up to
        (the reader's probe for the own partition, announcements for the others)."""
        part = self._part(partition)
        lowest = (_UNKNOWN, -1)
        for source in range(self.partitions):
            floor = part.last_t.get(source)
            up_to = read_up_to.get(source)
            if up_to is not None:
                floor = max(floor if floor is not None else _UNKNOWN, up_to - self.lateness_ms)
            if floor is None:
                return (_UNKNOWN, -1)
            if source == 0 or (floor, source) < lowest:
                lowest = (floor, source)
        return lowest

    def release(self, partition: int, read_up_to: Mapping[int, int]) -> list[Record]:
        """The held records of ``partition`` that can be applied now, in key order, each
        as its lane's record (offset: its source offset)."""
        part = self._part(partition)
        floor = self.floor(partition, read_up_to)
        held = part.held
        out: list[Record] = []
        while held and held[0][:2] <= floor:
            t, source, offset, record = heapq.heappop(held)
            part.queued.discard((source, offset))
            part.dirty = True
            key = (t, source, offset)
            if key < part.frontier:
                part.late += 1
                log.debug("applied late: %s[%d]@%d (t=%d)", record.topic, source, offset, t)
            else:
                part.frontier = key
            applied = part.applied.get(source)
            if applied is None or offset > applied[0]:
                part.applied[source] = (offset, t)
            out.append(
                LaneRecord(
                    record.topic,
                    partition,
                    offset,
                    record.key,
                    record.value,
                    record.headers,
                    record.timestamp,
                    record.origin,
                    lane_of(source),
                )
            )
        return out

    def stage(self, partition: int) -> None:
        """Stage the state of ``partition`` in the table (committed with the batch), if
        records were held or applied since the last time."""
        part = self._part(partition)
        if not part.dirty:
            return
        part.dirty = False
        resume: dict[str, int] = {}
        for *_, record in part.held:
            before = record.offset - 1
            if before < resume.get(record.topic, before + 1):
                resume[record.topic] = before
        applied = [[s, offset, t] for s, (offset, t) in sorted(part.applied.items())]
        wire = [[topic, resume.get(topic)] for topic in self.topics]
        self.table.put(partition, self.key, [ORDER_STATE_FORMAT.version, wire, applied])

    def held(self, partition: int) -> int:
        """How many records of ``partition`` are held back."""
        part = self._parts.get(partition)
        return 0 if part is None else len(part.held)

    def take_late(self, partition: int) -> int:
        """Records of ``partition`` applied late since the last call."""
        part = self._parts.get(partition)
        if part is None:
            return 0
        late, part.late = part.late, 0
        return late

    def applied_up_to(self, partition: int, read_up_to: int | None) -> int | None:
        """``read_up_to`` (the time up to which ``partition``'s input is read), lowered to
        the earliest timestamp held back: the time up to which it is also applied."""
        part = self._parts.get(partition)
        if read_up_to is None or part is None or not part.held:
            return read_up_to
        times = [round(r.timestamp * 1000) for *_, r in part.held if r.timestamp is not None]
        return min(read_up_to, *times) if times else read_up_to
