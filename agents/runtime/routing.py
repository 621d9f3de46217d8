"""Records that arrive in a partition that does not own their key go to the one that does.

supplyflow keeps each entity's state in the partition Kafka's default partitioner gives
its key (murmur2, as the Java client and aiokafka do). Producers with another
partitioner put records elsewhere: librdkafka's CRC32 (kcat, confluent-kafka), Sarama's
FNV-1a, kafka-go's round-robin, random or explicit partitions. Applied where it arrived,
such a record would build a second, partial state of its entity. So before any state is
touched, the reader of partition *q* of an input topic keeps the records whose key *q*
owns and forwards every other one unchanged (key, value, headers, timestamp), with its
origin (:data:`ORIGIN_HEADER`: partition and offset in the input topic), to the
partition that owns its key of the topic's *routed* topic (``<app_id>-<topic>-routed``):
Kafka Streams' repartition step, for the misplaced records only, so a producer that
partitions by murmur2 pays nothing for it.

The owner of partition *p* reads ``<topic>[p]`` and ``<topic>-routed[p]``, and applies
both as two input streams (``""`` and ``"r"``): each stream's offsets are what its
entities and positions recognise replays by.

**Exactly once.** A forward is an output of the batch that read the record, so Kafka
acknowledges it before the marker of ``<topic>[q]`` moves past the record (the
:class:`~supplyflow.agents.runtime.checkpoint.Checkpoint`); a worker killed in between
forwards it again. The owner keeps, per origin partition, the highest origin offset it
took (a progress marker of its own, committed with the states) and skips forwards at or
below it. Forwards from one origin partition reach an owner in origin order, so a
re-forward repeats what it already took.

**Order.** The records of one key keep the order they had in the partition they arrived
in: with any deterministic partitioner (murmur2, CRC32, FNV-1a, explicit partitions by
key) that is the order they were produced in. A non-deterministic partitioner
(round-robin, random) spreads one key over partitions, between which Kafka keeps no
order; such records are applied in the order they reach the owner.

**Kept until applied.** A routed topic keeps its records whatever their age (a forward
not applied yet is input: workers down for a week must not lose it); the owner of *p*
deletes, about once a minute, the records below its committed marker of
``<topic>-routed[p]`` (:class:`Purge`): they are never read again, a successor resumes
after the marker the changelog holds.

**Read up to.** Deadlines fire only once no on-time answer can still be unread (see
``tables.deadlines``). For partition *p* that needs more than ``<topic>[p]``: an answer
for one of *p*'s entities may sit unread in any other partition *q*, waiting to be
forwarded. So every reader announces, on each tick, the time up to which it has read
each of its input partitions (:meth:`Router.announce`: a record with
:data:`READ_UP_TO_HEADER` to every other partition of the routed topic, after its
forwards); the owner of *p* takes it in when it reaches it, having applied every
forward before it, and :meth:`Router.read_up_to` is the lowest of them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import KafkaError

from supplyflow.agents.runtime.keys import partition_of
from supplyflow.agents.runtime.outbox import Outbox
from supplyflow.agents.runtime.progress import ProgressMarkers
from supplyflow.agents.runtime.records import Record

__all__ = ["ORIGIN_HEADER", "READ_UP_TO_HEADER", "ROUTED", "Purge", "Router"]

log = logging.getLogger(__name__)

#: Header of a routed record: ``<partition>:<offset>`` of the record in its input topic.
ORIGIN_HEADER: Final = "supplyflow-origin"
#: Header of a read-up-to announcement: ``<partition>:<epoch ms>``.
READ_UP_TO_HEADER: Final = "supplyflow-read-up-to"
#: The stream name of records read from a routed topic (the input topic's is ``""``).
ROUTED: Final = "r"
#: How often an owner deletes the routed records it has applied, in seconds.
PURGE_EVERY_S: Final = 60.0


def _pair(value: bytes) -> tuple[int, int] | None:
    left, sep, right = value.partition(b":")
    if not sep or not left.isdigit() or not right.isdigit():
        return None
    return int(left), int(right)


class Router:
    """Routing for one input topic of one agent (see the module doc).

    ``markers`` and ``outbox`` are the agent's checkpoint's: what the router stages
    (origin markers) and queues (forwards, announcements) is committed with the batch.
    """

    def __init__(
        self,
        *,
        topic: str,
        routed: str,
        partitions: int,
        markers: ProgressMarkers,
        outbox: Outbox,
    ) -> None:
        self.topic = topic
        self.routed = routed
        self.partitions = partitions
        self.markers = markers
        self.outbox = outbox
        #: records forwarded since the last :meth:`take_forwarded`
        self._forwarded = 0
        #: input partitions whose misplaced records were logged (once per process)
        self._warned: set[int] = set()
        #: owner partition -> origin partition -> read up to (epoch ms), taken in
        self._read_up_to: dict[int, dict[int, int]] = {}
        #: the same, read in the batch in progress (taken in once it is committed)
        self._pending_read_up_to: dict[int, dict[int, int]] = {}
        #: input partition -> the read-up-to time last announced
        self._announced: dict[int, int] = {}

    def owner(self, record: Record) -> int:
        """The partition that owns ``record``'s key (a keyless record stays where it is:
        decoding rejects it)."""
        key = record.key
        return record.partition if key is None else partition_of(key, self.partitions)

    def route(
        self,
        partition: int,
        records: Sequence[Record],
        floors: dict[str, int | None],
    ) -> list[Record]:
        """The records of ``partition`` to apply, in order: those of the input topic it
        owns, and the forwards of the routed topic it has not applied (routed records are
        returned with their ``origin`` set and the routing headers removed). Records of
        any other topic stay in place.

        Every other input record is forwarded, unless it is at or below the input
        topic's marker (``floors``: the markers before the batch), where it was forwarded
        before. Read-up-to announcements are taken in once the batch is committed
        (:meth:`committed`).
        """
        floor, routed_floor = floors.get(self.topic), floors.get(self.routed)
        seen: dict[int, int] = {}
        out: list[Record] = []
        for record in records:
            if record.topic != self.routed:
                if record.topic != self.topic:
                    out.append(record)
                    continue
                owner = self.owner(record)
                if owner == partition:
                    out.append(record)
                elif floor is None or record.offset > floor:
                    self._forward(partition, owner, record)
                continue
            arrival = self._arrival(partition, record)
            if arrival is None:
                continue
            forwarded, (source, offset) = arrival
            if routed_floor is not None and record.offset <= routed_floor:
                out.append(forwarded)  # a replay: its entity recognises it by offset
                continue
            last = seen.get(source)
            if last is None:
                last = self._last_origin(source, partition)
            if last is not None and offset <= last:
                continue  # forwarded again after a crash: taken already
            seen[source] = offset
            out.append(forwarded)
        for source, offset in seen.items():
            self.markers.record(self._origin_topic(source), partition, offset)
        return out

    def _forward(self, partition: int, owner: int, record: Record) -> None:
        if partition not in self._warned:
            self._warned.add(partition)
            log.warning(
                "%s[%d] holds records whose key partition %d owns (their producer does not "
                "partition by murmur2 of the key): they are routed to it, one extra hop each. "
                "Producing with murmur2 saves it (librdkafka, kcat: -X partitioner="
                "murmur2_random; see docs/operations.md, Producing events)",
                self.topic,
                partition,
                owner,
            )
        headers = [*record.headers, (ORIGIN_HEADER, f"{partition}:{record.offset}".encode())]
        timestamp = None if record.timestamp is None else round(record.timestamp * 1000)
        self.outbox.add(
            self.routed, owner, record.key, record.value, headers, timestamp_ms=timestamp
        )
        self._forwarded += 1

    def _arrival(self, partition: int, record: Record) -> tuple[Record, tuple[int, int]] | None:
        """A routed record as the input record it carries, and its origin (None: an
        announcement, or a record supplyflow did not write)."""
        headers = record.headers
        if headers and headers[-1][0] == READ_UP_TO_HEADER:
            announced = _pair(headers[-1][1])
            if announced is not None:
                source, up_to = announced
                pending = self._pending_read_up_to.setdefault(partition, {})
                pending[source] = max(up_to, pending.get(source, up_to))
            return None
        if not headers or headers[-1][0] != ORIGIN_HEADER:
            log.warning(
                "%s[%d]@%d has no %s header: not written by supplyflow; skipped",
                record.topic,
                partition,
                record.offset,
                ORIGIN_HEADER,
            )
            return None
        origin = _pair(headers[-1][1])
        if origin is None:
            return None
        forwarded = Record(
            record.topic,
            partition,
            record.offset,
            record.key,
            record.value,
            headers[:-1],
            record.timestamp,
            origin,
        )
        return forwarded, origin

    def _origin_topic(self, source: int) -> str:
        """The marker name of origin partition ``source`` (the highest offset taken)."""
        return f"{self.routed}<{source}"

    def _last_origin(self, source: int, partition: int) -> int | None:
        return self.markers.last(self._origin_topic(source), partition)

    def committed(self) -> None:
        """The batch :meth:`route` read is committed: its announcements hold now."""
        pending, self._pending_read_up_to = self._pending_read_up_to, {}
        for partition, sources in pending.items():
            taken = self._read_up_to.setdefault(partition, {})
            for source, up_to in sources.items():
                taken[source] = max(up_to, taken.get(source, up_to))

    def announced(self, partition: int) -> dict[int, int]:
        """Per other input partition, the time it announced it was read up to, taken in
        or read in the batch in progress (its forwards before the announcement are read
        too)."""
        out = dict(self._read_up_to.get(partition, {}))
        for source, up_to in self._pending_read_up_to.get(partition, {}).items():
            out[source] = max(up_to, out.get(source, up_to))
        return out

    def discarded(self) -> None:
        """The batch :meth:`route` read failed and will be read again."""
        self._pending_read_up_to.clear()

    def take_forwarded(self) -> int:
        """How many records were forwarded since the last call."""
        count, self._forwarded = self._forwarded, 0
        return count

    def announce(self, partition: int, up_to_ms: int) -> None:
        """Queue, to every other partition's routed topic, that input partition
        ``partition`` has been read up to ``up_to_ms`` (its forwards so far precede it)."""
        if up_to_ms <= self._announced.get(partition, -1):
            return
        self._announced[partition] = up_to_ms
        headers = [(READ_UP_TO_HEADER, f"{partition}:{up_to_ms}".encode())]
        for other in range(self.partitions):
            if other != partition:
                self.outbox.add(self.routed, other, None, b"", headers)

    def read_up_to(self, partition: int, own_ms: int | None) -> int | None:
        """The time up to which every record for ``partition``'s keys has been read and
        applied: ``own_ms`` (its own input partition, see the reader) and what every other
        input partition announced. None until all of them have."""
        if own_ms is None:
            return None
        taken = self._read_up_to.get(partition, {})
        lowest = own_ms
        for source in range(self.partitions):
            if source == partition:
                continue
            up_to = taken.get(source)
            if up_to is None:
                return None
            lowest = min(lowest, up_to)
        return lowest


class Purge:
    """Deletes the records of a routed topic that its owners have applied (see the module
    doc), for the partitions of one worker, at most every ``every_s``."""

    def __init__(
        self,
        kafka: Mapping[str, Any],
        topic: str,
        *,
        every_s: float = PURGE_EVERY_S,
        new_admin: Callable[[], Any] | None = None,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.every_s = every_s
        self.new_admin = new_admin or self._default_admin
        self._last = time.monotonic()
        #: partition -> the offset records are deleted below
        self._deleted: dict[int, int] = {}

    def _default_admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.kafka)

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    async def run(self, markers: Iterable[tuple[int, int | None]]) -> None:
        """Delete, in each ``(partition, committed marker)``, the records at or below it."""
        self._last = time.monotonic()
        todo = {
            TopicPartition(self.topic, partition): RecordsToDelete(marker + 1)
            for partition, marker in markers
            if marker is not None and marker + 1 > self._deleted.get(partition, 0)
        }
        if not todo:
            return
        admin = self.new_admin()
        try:
            await admin.start()
            await admin.delete_records(todo)
        except KafkaError as exc:  # the next run deletes them (retention never does)
            log.warning("could not delete applied records of %s: %r", self.topic, exc)
            return
        finally:
            await admin.close()
        for tp, records in todo.items():
            self._deleted[tp.partition] = records.before_offset
