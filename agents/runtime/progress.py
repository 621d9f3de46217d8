"""Per-partition progress markers: where reading resumes, and what is a replay.

Each agent keeps, in its own table and partition, the last offset it processed per
source topic, written after the batch's states, so the changelog holds it only if it
holds them. After a rebalance or a restart the agent's reader
(:mod:`supplyflow.agents.runtime.reader`) resumes at ``marker + 1``. Earlier versions let Faust
deliver the input and found it skipping records around rebalances (a worker jumping from
offset 25 to 27, the records in between never processed); if a batch starts past
``marker + 1``, the missing records are still read from Kafka directly.

Records at or below the marker (replays) are dropped, except those at or below the
marker the worker *found* when it first processed the partition: that marker says their
*outputs* (deltas, transitions, dead letters) were acknowledged, because it is written
after them, but not that their *state* reached the changelog. A worker killed with
SIGKILL restarts on its own RocksDB, which can hold state writes (and markers) the
changelog never got, and Faust's recovery can even put older changelog values over newer
local ones (found by the SIGKILL fault test, seed 338383: the local store had
``po.events[2]`` up to offset 355 applied, the changelog only up to 337; offsets 338..355
were dropped as replays, and three POs lost an event for good). Those replays are applied
again: entities and positions recognise them (event ids, offset watermarks), write their
state again, and emit nothing new; the agents skip the dead letters of records at or
below :meth:`ProgressMarkers.last` as it was before the batch. Replays of what this
process applied itself are dropped: its writes reach the changelog, or it dies and the
next one re-applies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from supplyflow.agents.runtime.records import Record, record_of
from supplyflow.codecs.state import StateFormat

__all__ = [
    "MARKER_FORMAT",
    "MarkerTable",
    "ProgressMarkers",
    "is_marker",
    "marker_key",
    "merge_completed",
]

log = logging.getLogger(__name__)

#: Table keys of markers start with NUL, which no entity id can (ids are printable).
_MARKER_PREFIX: Final = "\x00offset:"


def _bare_offset(stored: Any) -> list[Any] | None:
    """A marker stored before versions: the offset alone."""
    return [stored] if type(stored) is int else None


#: How a marker is stored: ``[version, offset]`` (see supplyflow.codecs.state).
MARKER_FORMAT: Final = StateFormat("progress marker", 1, 1, legacy=_bare_offset)
_FETCH_TIMEOUT_MS: Final = 1000
_MAX_IDLE_FETCHES: Final = 10
_FETCH_BYTES: Final = 8 * 1024 * 1024


def marker_key(topic: str) -> str:
    return f"{_MARKER_PREFIX}{topic}"


def is_marker(key: str) -> bool:
    return key.startswith(_MARKER_PREFIX)


class MarkerTable(Protocol):
    """Where markers are kept: the agent's table, by partition (a :class:`.TableIO`)."""

    def get(self, partition: int, key: str) -> Any: ...

    def put(self, partition: int, key: str, value: Any) -> None: ...


class ProgressMarkers:
    """The markers of one table, per source topic and partition."""

    def __init__(self, table: MarkerTable, kafka: Mapping[str, Any]) -> None:
        self.table = table
        #: aiokafka client options of the gap-filling consumer (``RuntimeConfig.kafka``)
        self.kafka = kafka
        #: (topic, partition) -> the marker found when this process first completed a batch
        #: of it: up to there, a previous process may have died with state unsent
        self._found: dict[tuple[str, int], int | None] = {}
        #: (topic, partition) whose re-applied replays were logged (once per process)
        self._logged: set[tuple[str, int]] = set()

    def last(self, topic: str, partition: int) -> int | None:
        """The offset of the last record of ``topic[partition]`` processed (None: none)."""
        stored = self.table.get(partition, marker_key(topic))
        return None if stored is None else int(MARKER_FORMAT.unpack(stored)[0])

    def record(self, topic: str, partition: int, offset: int) -> None:
        self.table.put(partition, marker_key(topic), [MARKER_FORMAT.version, offset])

    async def complete(self, topic: str, partition: int, events: Sequence[Record]) -> list[Record]:
        """``events`` of one partition, in offset order, each once, with gaps filled.

        Replays are dropped, but those at or below the marker found in the store when this
        process first got here stay in, ahead of the rest (see the module doc).
        """
        last = self.last(topic, partition)
        found = self._found.setdefault((topic, partition), last)
        # A seek back during a rebalance can deliver a batch out of order or twice.
        by_offset = {e.offset: e for e in events}
        ordered = [by_offset[offset] for offset in sorted(by_offset)]
        replays = [e for e in ordered if last is not None and e.offset <= last]
        fresh = ordered[len(replays) :]
        replays = [e for e in replays if found is not None and e.offset <= found]
        if replays and (topic, partition) not in self._logged:
            self._logged.add((topic, partition))
            log.info(
                "%s[%d]: records from %d..%d up to %d were applied before this process "
                "started: applied again, so that the changelog has their state",
                topic,
                partition,
                replays[0].offset,
                replays[-1].offset,
                found,
            )
        return replays + (await self._fill(topic, partition, last, fresh) if fresh else [])

    def rescan(self, topic: str, partition: int) -> None:
        """Reading ``topic[partition]`` resumes below its marker (records held back
        there, not applied yet, see :mod:`.ordering`): the next batch hands the records up
        to the marker on again, as replays, instead of dropping them."""
        self._found.pop((topic, partition), None)

    def record_all(self, topic: str, partition: int, events: Sequence[Record]) -> None:
        """Mark the highest offset among ``events`` (of ``partition``) as processed.

        Never moves the marker back, but writes it again after a batch of replays only:
        the changelog may lack it as it lacked their states (see the module doc).
        """
        if events:
            top = max(e.offset for e in events)
            last = self.last(topic, partition)
            self.record(topic, partition, top if last is None else max(top, last))

    async def _fill(
        self, topic: str, partition: int, last: int | None, fresh: list[Record]
    ) -> list[Record]:
        """Insert the records missing before and between ``fresh``'s offsets."""
        out: list[Record] = []
        expected = await self._gap_start(topic, partition, last)
        for event in fresh:
            offset = event.offset
            if offset > expected:
                missing = await self._fetch(topic, partition, expected, offset)
                if missing:
                    log.warning(
                        "%s[%d]: records %d..%d were skipped by the consumer; fetched %d "
                        "of them directly and processed them in order",
                        topic,
                        partition,
                        expected,
                        offset - 1,
                        len(missing),
                    )
                    out.extend(missing)
            out.append(event)
            expected = offset + 1
        return out

    async def _gap_start(self, topic: str, partition: int, last: int | None) -> int:
        # Never processed: everything from the start of the log is owed (what Faust's
        # ``earliest`` reset would read), unless retention already removed it.
        return 0 if last is None else last + 1

    async def _fetch(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(
            **self.kafka,
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=_FETCH_BYTES,
        )
        await consumer.start()
        events: list[Record] = []
        try:
            consumer.assign([tp])
            beginning = (await consumer.beginning_offsets([tp]))[tp]
            consumer.seek(tp, max(start, beginning))
            idle = 0
            while idle < _MAX_IDLE_FETCHES:
                batch = await consumer.getmany(tp, timeout_ms=_FETCH_TIMEOUT_MS)
                idle = 0 if batch else idle + 1
                events.extend(
                    record_of(topic, partition, record)
                    for record in batch.get(tp, [])
                    if record.offset < end
                )
                # The position, not the last record seen: offsets without a record
                # (compaction, transaction markers) must not keep the fetch waiting.
                if await consumer.position(tp) >= end:
                    break
        finally:
            await consumer.stop()
        return events


#: Completes one topic's live events of a partition (see :meth:`ProgressMarkers.complete`).
Completer = Callable[[str, list[Record]], Awaitable[list[Record]]]


async def merge_completed(
    events: Sequence[Record], topics: Sequence[str], complete: Completer
) -> list[Record]:
    """Complete each topic's events of one partition and merge them back in arrival order.

    Every topic's completed records keep their offset order: a record fetched to fill a
    gap comes right before the first live record after it, never ahead of an earlier live
    one (offset watermarks would then drop that one as a replay). Records of different
    topics keep the interleaving in which they arrived.
    """
    queues: dict[str, list[Record]] = {}
    for topic in topics:
        mine = [e for e in events if e.topic == topic]
        queues[topic] = (await complete(topic, mine))[::-1]  # reversed: pop() from the front
    out: list[Record] = []
    for event in events:
        queue = queues.get(event.topic)
        if not queue:
            continue  # a replay dropped, a record already out, or a topic not completed here
        offset = event.offset  # this record, and any fetched ones before it
        while queue and queue[-1].offset <= offset:
            out.append(queue.pop())
    for topic in topics:  # fetched records after the last live one (none expected)
        out.extend(reversed(queues[topic]))
    return out
