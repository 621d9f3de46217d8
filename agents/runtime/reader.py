"""Reading an agent's input topics in whole batches, outside Faust's per-record path.

Faust hands every record to a stream on its own: the fetch loop awaits a race of two
tasks per record (``wait_first``), the conductor delivers it to a channel queue, the
stream runs its processors, sets the current event and acknowledges it, and the offset
tracker keeps it until it is committed. py-spy put about 30% of a busy worker's CPU
there (``python -m bench throughput``), more than the domain functions took. An
:class:`InputReader` instead reads the input topics of one agent with its own aiokafka
consumer and returns what one ``getmany`` call (plus whatever arrives within the batch
window) fetched, as one list.

Who reads what:

* The consumer group still decides: Faust's consumer subscribes to the ticks topic,
  which has the input topics' partition count, so partition *p* of the ticks topic, of
  every state table's changelog and of the inputs belongs to one worker. The reader is
  assigned partitions by hand (no group membership of its own).
* A partition is read only once it is *active*: after a rebalance Faust restores the
  tables and only then resumes the ticks stream, so the agent activates partition *p*
  on its first tick of *p* and the reader seeks to the record after the progress marker
  (see :mod:`supplyflow.agents.runtime.progress`), which is where the table's state ends.
* When a rebalance starts, the reader forgets every partition (:meth:`reset`) once the
  batch in progress is done; nothing fetched before is processed after. Ticks activate
  the partitions this worker still owns again, from their markers.

Both the activation on ticks and the reset on a rebalance are driven from
:mod:`supplyflow.agents.runtime.driver`, which holds everything that happens when a
partition changes hands.

The reader commits the offsets it processed to its own consumer group,
``<app_id>-input`` (``RuntimeConfig.input_group``), for Kafka's tools
(``kafka-consumer-groups``) and lag monitoring; where processing resumes is decided by
the progress markers alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from supplyflow.agents.runtime.config import RuntimeConfig
from supplyflow.agents.runtime.exceptions import FATAL_ERRORS
from supplyflow.agents.runtime.quarantine import (
    Quarantine,
    RetryPolicy,
    describe,
    is_infrastructure,
    process_or_isolate,
)
from supplyflow.agents.runtime.records import Record, record_of
from supplyflow.agents.runtime.stall import StallWatch

__all__ = ["BatchHandler", "InputReader", "owned_partitions", "read_batches"]

log = logging.getLogger(__name__)

#: How often processed offsets are committed to the input group, in seconds.
_COMMIT_EVERY_S: Final = 1.0
#: At least this many bytes per partition fetch (aiokafka's default).
_MIN_FETCH_BYTES: Final = 1024 * 1024
#: How often a reader asks Kafka where its input partitions end, in seconds: how far the
#: time a partition is known to be read up to lags behind (deadlines wait for it).
_PROBE_EVERY_S: Final = 0.5


#: How batches that fail are tried again (see :mod:`.quarantine`).
DEFAULT_RETRY: Final = RetryPolicy()


def owned_partitions(app: Any, topic: str) -> frozenset[int]:
    """The partitions of ``topic`` assigned to this worker's Faust consumer right now."""
    return frozenset(tp.partition for tp in app.consumer.assignment() if tp.topic == topic)


class InputReader:
    """Reads ``topics`` (full names) for the partitions activated, in batches."""

    def __init__(
        self,
        config: RuntimeConfig,
        topics: Sequence[str],
        *,
        new_consumer: Callable[[], AIOKafkaConsumer] | None = None,
        commit_every_s: float = _COMMIT_EVERY_S,
        probed: Sequence[str] = (),
        probe_every_s: float = _PROBE_EVERY_S,
    ) -> None:
        self.commit_every_s = commit_every_s
        #: topics whose read-up-to time is tracked (:meth:`read_up_to_ms`)
        self.probed = frozenset(probed)
        self.probe_every_s = probe_every_s
        self.config = config
        #: builds the (unstarted) consumer; the default connects as the config says
        self.new_consumer = new_consumer or self._default_consumer
        self.topics = tuple(topics)
        self.batch_max = config.batch.batch_max
        self.window_s = config.batch.window_s
        self.idle_s = config.batch.idle_s
        self._consumer: AIOKafkaConsumer | None = None
        #: partitions being read
        self._active: set[int] = set()
        #: the offset of the next record to process, per active topic partition
        self._next: dict[TopicPartition, int] = {}
        #: changes on every change of the assignment: a fetch that spans one is dropped
        self.version = 0
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        #: probed partition -> (when Kafka was asked, epoch s; the end offset it gave)
        self._probes: dict[TopicPartition, tuple[float, int]] = {}
        self._last_probe = 0.0
        #: probed partition -> every record appended before this time is processed
        self._read_up_to: dict[TopicPartition, float] = {}
        #: which partitions advance, which are stalled (``/health``)
        self.watch = StallWatch(config.stall_after_s)

    @property
    def active(self) -> frozenset[int]:
        return frozenset(self._active)

    def _default_consumer(self) -> AIOKafkaConsumer:
        config = self.config
        return AIOKafkaConsumer(
            **config.kafka,
            group_id=config.input_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(_MIN_FETCH_BYTES, config.max_input_message_bytes),
        )

    async def start(self) -> None:
        consumer = self.new_consumer()
        await consumer.start()
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError):
                await self._commit(consumer, force=True)
            await consumer.stop()

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("InputReader used before start()")
        return self._consumer

    def reset(self) -> None:
        """Stop reading every partition (a rebalance started)."""
        self.version += 1
        if self._active:
            log.info("stopped reading %s (rebalance)", ", ".join(self.topics))
        self._active.clear()
        self._next.clear()
        self._committed.clear()
        self._probes.clear()  # (what was read up to stays true)
        if self._consumer is not None:
            self._consumer.assign([])

    def activate(self, partition: int, markers: Mapping[str, int | None]) -> None:
        """Read ``partition`` from the record after each topic's marker (None: from the
        start of the log)."""
        consumer = self._started()
        self.version += 1
        self._active.add(partition)
        new = [TopicPartition(topic, partition) for topic in self.topics]
        consumer.assign([*self._next, *new])
        for tp in new:
            marker = markers.get(tp.topic)
            # Never processed: offset 0, or the oldest record retention kept (the consumer
            # resets to it on its first fetch). No request here: activation holds the
            # agent's lock, which a stop or a rebalance waits for.
            self._next[tp] = 0 if marker is None else marker + 1
            self.watch.watching(tp.topic, partition)
            log.info("reading %s[%d] from offset %d", tp.topic, partition, self._next[tp])
        self.rewind()

    def rewind(self) -> None:
        """Seek every active partition back to its next record to process."""
        consumer = self._started()
        for tp, offset in self._next.items():
            consumer.seek(tp, offset)

    def highwater(self, topic: str, partition: int) -> int | None:
        """The offset the next record of an active partition gets (None: not known yet)."""
        tp = TopicPartition(topic, partition)
        if self._consumer is None or tp not in self._next:
            return None
        end = self._consumer.highwater(tp)
        return None if end is None else int(end)

    def lag(self) -> dict[tuple[str, int], int]:
        """Records Kafka holds past the next one to process, per active topic partition
        whose end is known."""
        out = {}
        for tp, offset in self._next.items():
            end = self.highwater(tp.topic, tp.partition)
            if end is not None and end >= 0:
                out[(tp.topic, tp.partition)] = max(0, end - offset)
        return out

    async def probe(self) -> None:
        """Ask Kafka where the probed active partitions end (at most every
        ``probe_every_s``); :meth:`settle` later compares the reader's position with it."""
        if self._consumer is None or not self.probed:
            return
        now = time.monotonic()
        if now - self._last_probe < self.probe_every_s:
            return
        self._last_probe = now
        partitions = [tp for tp in self._next if tp.topic in self.probed]
        if not partitions:
            return
        asked = time.time()
        version = self.version
        try:
            ends = await self._consumer.end_offsets(partitions)
        except KafkaError as exc:  # the next probe asks again
            log.debug("could not read the end offsets of %s: %r", ", ".join(self.topics), exc)
            return
        if self.version != version:
            return  # the assignment changed meanwhile
        for tp, end in ends.items():
            if tp in self._next and tp not in self._probes:
                self._probes[tp] = (asked, end)

    async def settle(self) -> None:
        """Call between batches (every record fetched handled): a probed partition whose
        position reached the end its probe gave is read up to the time of the probe."""
        consumer = self._consumer
        if consumer is None or not self._probes:
            return
        for tp, (asked, end) in list(self._probes.items()):
            if tp not in self._next:
                del self._probes[tp]
                continue
            # The position, not the last record: control records of transactions and
            # offsets compaction removed have none.
            if await consumer.position(tp) >= end:
                self._read_up_to[tp] = max(asked, self._read_up_to.get(tp, asked))
                del self._probes[tp]

    def read_up_to_ms(self, topic: str, partition: int) -> int | None:
        """The time (epoch ms) before which every record of ``topic[partition]`` that
        Kafka had was processed by this reader; None until known."""
        up_to = self._read_up_to.get(TopicPartition(topic, partition))
        return None if up_to is None else int(up_to * 1000)

    async def next_batch(self) -> tuple[int, list[Record]]:
        """(the assignment version it was read under, up to ``batch_max`` records).

        Returns as soon as records arrived and none followed for ``idle_s``, the batch is
        full, or ``window_s`` passed since the first record; empty after ``window_s``
        without any.
        """
        version = self.version
        if not self._active:
            await asyncio.sleep(self.window_s)
            return version, []
        consumer = self._started()
        loop = asyncio.get_running_loop()
        events: list[Record] = []
        timeout_ms = int(self.window_s * 1000)
        deadline = loop.time() + self.window_s
        while len(events) < self.batch_max:
            fetched = await consumer.getmany(
                timeout_ms=timeout_ms, max_records=self.batch_max - len(events)
            )
            if self.version != version:
                # Read under an assignment that changed meanwhile: the consumer's position
                # moved past records that will not be processed; back to the next one.
                self.rewind()
                return version, []
            if not fetched:
                break
            for tp, records in fetched.items():
                if tp not in self._next:
                    continue
                topic, partition = tp.topic, tp.partition
                events.extend(record_of(topic, partition, record) for record in records)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            timeout_ms = max(0, int(min(self.idle_s, remaining) * 1000))
        return version, events

    def accept(self, events: Sequence[Record]) -> None:
        """``events`` will be processed: the next records to process follow them."""
        for event in events:
            tp = TopicPartition(event.topic, event.partition)
            if tp in self._next and event.offset >= self._next[tp]:
                self._next[tp] = event.offset + 1

    async def commit(self) -> None:
        """Commit the processed offsets to the input group, at most once a second."""
        if self._consumer is not None:
            await self._commit(self._consumer, force=False)

    async def _commit(self, consumer: AIOKafkaConsumer, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_every_s:
            return
        self._last_commit = now
        due = {tp: offset for tp, offset in self._next.items() if self._committed.get(tp) != offset}
        if not due:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in due.items()})
        except KafkaError as exc:  # informational only: the markers say where to resume
            log.warning("could not commit input offsets to %s: %r", self.config.input_group, exc)
            return
        self._committed.update(due)


#: Processes one batch of records (all partitions of the reader mixed, each in order).
BatchHandler = Callable[[list[Record]], Awaitable[None]]


async def read_batches(
    app: Any,
    reader: InputReader,
    lock: asyncio.Lock,
    handle: BatchHandler,
    *,
    on_error: Callable[[], None],
    stopping: asyncio.Event,
    quarantine: Quarantine | None = None,
    policy: RetryPolicy = DEFAULT_RETRY,
) -> None:
    """Read and handle batches until ``stopping`` is set (run as a task beside the agent).

    A batch is handled under ``lock`` (held by the agent's tick handler and by the
    revocation handler too), and only if no rebalance started since it was read. A batch
    that fails with a record's error is tried again and then bisected, and the record that
    fails alone goes to ``quarantine`` (see :mod:`.quarantine`; without one, it is handled
    as an infrastructure error). On an infrastructure error the error is logged,
    ``on_error`` drops what the batch queued, and every partition is read again from its
    marker once the next tick activates it, after a pause that grows while it lasts; an
    error of :data:`.FATAL_ERRORS` ends the task instead (the ticks agent stops the worker
    with it). The reader's :class:`.StallWatch` learns which partitions advanced and
    which failed.
    """
    failures = 0  # infrastructure failures in a row
    watch = reader.watch
    while not stopping.is_set():
        await reader.probe()
        version, events = await reader.next_batch()
        if not events:
            watch.advanced(tp for tp, lag in reader.lag().items() if lag == 0)
            await reader.settle()
            await reader.commit()  # the last batch's offsets, once the input went quiet
            continue
        async with lock:
            if reader.version != version:
                reader.rewind()  # activated a partition meanwhile: read again from _next
                continue
            held_back = app.rebalancing
            if held_back:
                reader.rewind()  # the revocation that follows resets the reader
            else:
                reader.accept(events)
            partitions = {(e.topic, e.partition) for e in events}
            try:
                if not held_back:
                    if quarantine is None:
                        await handle(events)
                    else:
                        await process_or_isolate(
                            events, handle, discard=on_error, quarantine=quarantine, policy=policy
                        )
                    watch.advanced(partitions)
                    failures = 0
            except FATAL_ERRORS:
                on_error()
                raise
            except Exception as exc:
                failures += 1
                kind, message = describe(exc)
                log.error(
                    "a batch of %d records of %s failed (%s, %d in a row: %s: %s); its "
                    "partitions are read again from their progress markers",
                    len(events),
                    ", ".join(reader.topics),
                    "infrastructure" if is_infrastructure(exc) else "not isolated",
                    failures,
                    kind,
                    message,
                    exc_info=exc,
                )
                watch.failed(partitions, exc)
                on_error()
                reader.reset()
                held_back = True
        if held_back:
            await asyncio.sleep(policy.infrastructure_pause(max(1, failures)))
            continue
        await reader.settle()
        await reader.commit()
