"""Writing exception transitions to ``exceptions`` exactly once per transition.

Outputs are written (and acknowledged) before the state that produced them, so a crash
in between replays into the same transitions: same ``exception_id``, same status. Before
a worker writes to a partition of ``exceptions`` for the first time after it got the
partition, it reads that partition's tail back and drops any transition already there.
Only the worker owning partition *p* of the entities writes to partition *p* of
``exceptions`` (the topics are co-partitioned and keyed by entity id), so the tail it
reads is complete.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from supplyflow.agents.metrics import Metrics
from supplyflow.agents.runtime.config import RuntimeConfig
from supplyflow.agents.runtime.keys import partition_for
from supplyflow.agents.runtime.outbox import Outbox
from supplyflow.agents.runtime.progress import is_marker
from supplyflow.agents.runtime.tail import READ_BACK_RECORDS, read_tail
from supplyflow.agents.topics import EXCEPTIONS
from supplyflow.tables.exceptions import ExceptionBook, Transition
from supplyflow.tables.order import OrderState
from supplyflow.tables.po import PoState
from supplyflow.tables.position import OVERALLOCATION, PositionState, WrittenLookup

__all__ = ["ExceptionEmitter", "OpenExceptions", "book_from_wire"]

log = logging.getLogger(__name__)


class ExceptionEmitter:
    """Sends transitions to ``exceptions``, skipping any already written."""

    def __init__(self, config: RuntimeConfig, metrics: Metrics, index: OpenExceptions) -> None:
        self.index = index
        self.kafka = config.kafka
        self.metrics = metrics
        self.topic_name = config.topic(EXCEPTIONS)
        #: partition -> (exception_id, status) written -> for an ``OVERALLOCATION`` open,
        #: its record (what :meth:`written` looks up; other records are not kept: at a
        #: million positions hundreds of thousands are open)
        self._written: dict[int, dict[tuple[str, str], dict[str, Any] | None]] = {}

    def forget(self, partitions: Sequence[int]) -> None:
        """Drop what is known of partitions this worker no longer owns."""
        for partition in partitions:
            self._written.pop(partition, None)

    async def _load(self, partition: int) -> dict[tuple[str, str], dict[str, Any] | None]:
        written: dict[tuple[str, str], dict[str, Any] | None] = {}

        def each(message: Any) -> None:
            body = orjson.loads(message.value)
            status = body["status"]
            written[(body["exception_id"], status)] = body if _kept(body) else None

        await read_tail(self.kafka, self.topic_name, partition, each)
        log.info("read back %d exception transitions of partition %d", len(written), partition)
        return written

    async def written(self, partition: int) -> WrittenLookup:
        """Looks up, in what ``exceptions`` holds for ``partition``, an exception id's
        ``open`` record (kept for ``OVERALLOCATION`` only) and whether it was resolved."""
        written = self._written.get(partition)
        if written is None:
            written = self._written[partition] = await self._load(partition)

        def lookup(exception_id: str) -> tuple[dict[str, Any] | None, bool]:
            return written.get((exception_id, "open")), (exception_id, "resolved") in written

        return lookup

    async def send(self, partition: int, transitions: Sequence[Transition], outbox: Outbox) -> None:
        """Queue the new transitions in ``outbox`` (a checkpoint's: sent before the states)."""
        if not transitions:
            return
        written = self._written.get(partition)
        if written is None:
            written = self._written[partition] = await self._load(partition)
        for transition in transitions:
            key = (transition.exception_id, transition.status)
            if key in written:
                continue
            record = transition.record()
            written[key] = record if _kept(record) else None
            self.index.apply(partition, transition, record)
            if len(written) > READ_BACK_RECORDS:
                del written[next(iter(written))]
            outbox.add(
                self.topic_name,
                partition,
                transition.entity_id.encode(),
                orjson.dumps(record),
            )
            counter = (
                self.metrics.exceptions_opened
                if transition.status == "open"
                else self.metrics.exceptions_resolved
            )
            counter.labels(rule=transition.rule).inc()


def _json(record: dict[str, Any]) -> bytes:
    """``record`` as JSON, in a bytes object of its own size, for keeping.

    ``orjson.dumps`` returns its bytes in the buffer it grew while writing: a 318-byte
    record held about 2 KB (tracemalloc, open-exceptions index at 300,000 positions: 552
    MiB for 139,000 records). Fine for bytes sent at once, not for bytes kept.
    """
    return bytes(memoryview(orjson.dumps(record)))


def _kept(record: dict[str, Any]) -> bool:
    """Whether the emitter keeps a written record (see ``ExceptionEmitter._written``)."""
    return bool(record["status"] == "open" and record["rule"] == OVERALLOCATION)


def book_from_wire(entity_type: str, wire: list[Any]) -> ExceptionBook:
    """The exception book inside a stored PO, order or position."""
    if entity_type == "po":
        po = PoState.from_wire(wire)
        return ExceptionBook("po", po.po_id, po.exceptions)
    if entity_type == "order":
        order = OrderState.from_wire(wire)
        return ExceptionBook("order", order.order_id, order.exceptions)
    position = PositionState.from_wire(wire)
    return ExceptionBook("position", position.key, position.exceptions)


class OpenExceptions:
    """Open exceptions of the partitions owned here, by partition, kept current.

    Rebuilt from local state (one pass over the tables) when the owned partitions
    change; updated by :class:`ExceptionEmitter` for every transition it writes. Records
    are kept as their JSON bytes (about a quarter of the memory of the dicts: hundreds
    of thousands are open at a million positions) and counted per rule as they change,
    so a metrics scrape does not walk them.
    """

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        #: partition -> exception_id -> (rule, the record as JSON)
        self._by_partition: dict[int, dict[str, tuple[str, bytes]]] = {}
        self._counts: dict[str, int] = {}
        self._owned: frozenset[int] | None = None

    def ensure(self, owned: frozenset[int], tables: Sequence[tuple[str, Any]]) -> None:
        """Rebuild from ``tables`` ((entity_type, table), ...) if ``owned`` changed."""
        if owned == self._owned:
            return
        index: dict[int, dict[str, tuple[str, bytes]]] = {p: {} for p in owned}
        for entity_type, table in tables:
            for key, wire in table.items():
                if is_marker(key):
                    continue
                bucket = index.get(partition_for(key, self.partitions))
                if bucket is None:
                    continue
                for record in book_from_wire(entity_type, wire).open_ones():
                    bucket[record["exception_id"]] = (record["rule"], _json(record))
        counts: dict[str, int] = {}
        for bucket in index.values():
            for rule, _ in bucket.values():
                counts[rule] = counts.get(rule, 0) + 1
        self._by_partition = index
        self._counts = counts
        self._owned = owned

    def apply(
        self, partition: int, transition: Transition, record: dict[str, Any] | None = None
    ) -> None:
        """Take in a written transition (``record``: its record, if already built)."""
        bucket = self._by_partition.get(partition)
        if bucket is None:
            return
        old = bucket.pop(transition.exception_id, None)
        if old is not None:
            self._counts[old[0]] -= 1
        if transition.status == "open":
            body = record if record is not None else transition.record()
            bucket[transition.exception_id] = (transition.rule, _json(body))
            self._counts[transition.rule] = self._counts.get(transition.rule, 0) + 1

    def records(self) -> list[dict[str, Any]]:
        return [
            orjson.loads(raw)
            for bucket in self._by_partition.values()
            for _, raw in bucket.values()
        ]

    def counts(self) -> dict[str, int]:
        return {rule: n for rule, n in self._counts.items() if n}
