"""Every change supplyflow makes to Faust's behaviour, in one place.

1. :class:`QuietWeb`: Faust's aiohttp web server without its built-in blueprints. The
   ``/table`` and ``/router`` views dump raw table contents to anyone who can reach the
   port, and ``/`` would shadow our status page; the contract allows only our routes.
2. :class:`SupplyflowApp`: a ``faust.App`` that builds :class:`QuietWeb`.
3. :class:`MsgpackTable`: a ``faust.Table`` whose store and changelog use msgpack. Faust
   picks a table's codec from its value type and ignores a ``schema``'s serializers, so a
   table without a model value type would write JSON to RocksDB and its changelog.
   Recovery reads its changelog as raw bytes (see there).
7. :func:`install`: ``ProducerBuffer.flush`` waits until the buffer is empty *and* the
   message it is handing to the Kafka client has arrived there. Faust's version gives up
   after 0.1 s without progress and returns with messages still queued, and counts a
   message as gone the moment it leaves the queue, before the client has it; the offset
   commit that follows then overtakes unsent changelog records, and a worker killed at
   that moment loses table writes whose input is already committed (found by the SIGKILL
   integration test: state lost, its position deltas never emitted).
6. :func:`table_key_estimate`: RocksDB's own key count estimate over a table's open
   partition databases (Faust keeps them in a private mapping).
5. :func:`new_worker`: a ``faust.Worker`` without its terminal spinner. The spinner hooks
   a DEBUG-level handler onto the root logger, so every library builds a log record for
   every debug call: 10% of a busy worker's time, measured with py-spy.
8. :class:`BatchingStream` (the app's ``Stream`` class) adds :meth:`take_until_idle`:
   Faust's ``take_events`` always waits its whole window unless the buffer fills, so a
   short window gives small batches under load (less coalescing, more round trips: 2,800
   vs 5,100 events/s at 10 vs 50 ms, distributor profile at scale 0.2) and a long one
   adds its full length to every record's latency when idle. ``take_until_idle`` closes
   a batch when it is full, when no record arrived for ``idle`` seconds (caught up), or
   ``within`` seconds after its first record, whichever comes first. It is Faust's
   ``take_events`` with only that wait changed (acks, passive draining and cleanup as
   there); worth proposing upstream as an option of ``take_events``.
9. :func:`install`: ``Recovery.need_recovery`` stops at the first partition with records
   left. Faust's builds a ``Counter`` over every partition and runs it after *every*
   changelog record: 8% of a rebuild's samples (py-spy, 300,000 SKU-locations).
10. :func:`install`: the consumer's per-record ``wait_first(callback(message),
   suspend_flow.wait())`` first runs the callback inline and only falls back to
   ``wait_first`` if it has to wait (a full queue, a suspended flow). Faust's version
   starts four tasks per record and cancels three: 15% of a rebuild's samples. The
   result is the same: a callback that finished is what ``wait_first`` would return, one
   that waits is still abandoned when the flow is suspended. Worth proposing upstream.
11. :func:`install`: recovery's ``asyncio.wait_for(changelog_queue.get(), timeout=5.0)``,
   once per changelog record, returns at once when the queue has a record
   (:func:`wait_for_inline`). ``asyncio.wait_for`` starts a task and a timer for it
   every time and takes three turns of the event loop: 7% of a rebuild's samples.
12. :func:`share_rocksdb_memory`: every RocksDB database of the process (one per table
   partition: 24 with 8 partitions) uses one block cache and one memtable budget.
   Faust gives each its own cache and write buffers, so a worker's RocksDB memory grows
   with the partitions it holds instead of staying under one bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Coroutine, Sequence
from typing import Any, ClassVar

import faust
import rocksdict
from faust.stores.rocksdb import RocksDBOptions
from faust.streams import _tracks_buffer_agen
from faust.tables import recovery as faust_recovery
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from mode import Service
from mode.services import WaitResults
from mode.utils.aiter import aiter as mode_aiter
from mode.utils.futures import notify
from mode.utils.locks import Event

from supplyflow.codecs.serializers import MSGPACK_CODEC

__all__ = [
    "BatchingStream",
    "MsgpackTable",
    "QuietWeb",
    "SupplyflowApp",
    "flush_until_empty",
    "install",
    "new_worker",
    "table_key_estimate",
]


class QuietWeb(AiohttpWeb):
    """The aiohttp web driver serving only the pages the app registers itself."""

    default_blueprints: ClassVar[list[Any]] = []
    production_blueprints: ClassVar[list[Any]] = []
    debug_blueprints: ClassVar[list[Any]] = []
    optional_blueprints: ClassVar[list[Any]] = []


class SupplyflowApp(faust.App):
    """``faust.App`` whose web server is :class:`QuietWeb`."""

    def _new_web(self) -> QuietWeb:
        return QuietWeb(self)


class MsgpackTable(faust.Table[Any, Any]):
    """A table whose keys and values go through the ``msgpack`` codec everywhere.

    Its changelog topic reads records as raw bytes: recovery writes them to RocksDB as
    they are (``Store.apply_changelog_batch`` takes ``message.key``/``message.value``),
    so Faust decoding each one first was wasted (10% of a rebuild's samples). Writes
    still encode with the table's serializers, which Faust passes explicitly.
    """

    def _serializer_from_type(self, typ: Any) -> str:
        return MSGPACK_CODEC

    def _new_changelog_topic(
        self,
        *,
        retention: Any = None,
        compacting: bool | None = None,
        deleting: bool | None = None,
    ) -> Any:
        # Faust's own, with raw key and value. (``Topic.derive`` would not do: it drops
        # ``acks=False``, and a changelog consumed with acks tracks every offset gap
        # compaction leaves, in an interval tree merged per gap: hours at a million keys.)
        if retention is None and self.window:
            retention = self.window.expires
        return self.app.topic(
            self._changelog_topic_name(),
            schema=None,
            key_type=None,
            value_type=None,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.partitions,
            retention=retention,
            compacting=self._changelog_compacting if compacting is None else compacting,
            deleting=self._changelog_deleting if deleting is None else deleting,
            acks=False,
            internal=True,
            config=self.extra_topic_configs,
            maxsize=131_072,  # Faust's: changelog records are never committed
            allow_empty=True,
        )


class _TakeBuffer:
    """The events of the batch being collected (the processor Faust's take adds)."""

    def __init__(self, stream: Any, max_: int) -> None:
        self.stream = stream
        self.max = max_
        self.values: list[Any] = []
        self.events: list[Any] = []
        self.full = Event()
        self.consumed = Event()
        self.arrived = Event()  # set by the first event of a batch
        self.consuming: asyncio.Future[None] | None = None

    async def add(self, value: Any) -> Any:
        """As the processor in Faust's ``take_events``, plus setting ``arrived``."""
        stream = self.stream
        try:
            if self.consuming is not None:
                try:
                    await self.consuming
                finally:
                    self.consuming = None
            self.values.append(value)
            event = stream.current_event
            if event is None:
                raise RuntimeError("Take buffer found current_event is None")
            self.events.append(event)
            self.arrived.set()
            if len(self.values) >= self.max:
                self.full.set()
                self.consumed.clear()
                await stream.wait(self.consumed)
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    def release(self) -> None:
        """The batch was processed: start the next one."""
        self.values.clear()
        self.events.clear()
        self.arrived.clear()
        notify(self.consuming)
        self.full.clear()
        self.consumed.set()


class BatchingStream(faust.Stream):  # type: ignore[type-arg]  # faust's generic
    """``faust.Stream`` with :meth:`take_until_idle` (see the module's item 8)."""

    @_tracks_buffer_agen
    async def take_until_idle(
        self, max_: int, within: float, idle: float
    ) -> AsyncGenerator[Sequence[Any], None]:
        """Batches of at most ``max_`` events; a batch closes when full, after ``idle``
        seconds without a new event, or ``within`` seconds after its first event."""
        take = _TakeBuffer(self, max_)
        stream_enable_acks: bool = self.enable_acks
        self.enable_acks = False  # acked below, after the batch was processed
        self.add_processor(take.add)
        self._enable_passive(mode_aiter(self.channel))  # type: ignore[arg-type]  # as Faust
        loop = asyncio.get_running_loop()
        try:
            while not self.should_stop:
                if not take.values:
                    # (its result also says "stopped" on a timeout: not used)
                    await self.wait_for_stopped(take.arrived, timeout=within)
                    continue
                await self._until_idle(take, loop.time() + within, idle)
                take.consuming = loop.create_future()
                try:
                    yield list(take.events)
                finally:
                    for event in take.events:
                        await self.ack(event)
                    take.release()
        finally:
            self.enable_acks = stream_enable_acks
            self._processors.remove(take.add)

    async def _until_idle(self, take: _TakeBuffer, deadline: float, idle: float) -> None:
        """Until the batch is full, stopped growing for ``idle`` s, or ``deadline``."""
        loop = asyncio.get_running_loop()
        seen = len(take.values)
        while not take.full.is_set() and not self.should_stop:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            await self.wait_for_stopped(take.full, timeout=min(idle, remaining))
            if len(take.values) == seen:
                return
            seen = len(take.values)


def new_worker(
    app: Any, *, loop: Any, loglevel: str, logging_config: dict[str, Any] | None = None
) -> faust.Worker:
    """A ``faust.Worker`` for ``app`` that logs at ``loglevel`` and shows no spinner."""
    worker = faust.Worker(
        app,
        loop=loop,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        logging_config=logging_config,
    )
    worker.spinner = None
    return worker


def table_key_estimate(table: Any) -> int:
    """Estimated keys of ``table`` on this worker (0 before its store is opened)."""
    dbs = getattr(table.data, "_dbs", {})
    return sum(int(db.property_int_value("rocksdb.estimate-num-keys") or 0) for db in dbs.values())


#: How long one wait for buffer progress lasts before the emptiness check repeats.
_FLUSH_POLL_S = 0.1


async def flush_until_empty(buffer: Any) -> None:
    """Wait until ``buffer`` (a ``ProducerBuffer``) has handed every message on."""
    while buffer.size or getattr(buffer, "_supplyflow_in_flight", 0):
        if buffer.state != "running":
            raise RuntimeError("Cannot flush: Producer not Running")
        buffer.message_sent.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(buffer.message_sent.wait(), timeout=_FLUSH_POLL_S)


_original_send_pending = ProducerBuffer._send_pending


async def _send_pending_counted(self: Any, fut: Any) -> None:
    """``ProducerBuffer._send_pending`` that counts the message until the client has it."""
    self._supplyflow_in_flight = getattr(self, "_supplyflow_in_flight", 0) + 1
    try:
        await _original_send_pending(self, fut)
    finally:
        self._supplyflow_in_flight -= 1


def need_recovery(self: Any) -> bool:
    """``Recovery.need_recovery``: does any active partition have changelog records left?"""
    offsets = self.active_offsets
    for tp, highwater in self.active_highwaters.items():
        offset = offsets[tp]
        if highwater is not None and offset is not None and highwater > offset:
            return True
    return False


async def _resume(coro: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Run the rest of ``coro`` (started outside a task; its last step yielded ``waiting``,
    the future it awaits, or None for a bare yield) as a task would."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await waiting  # a task cancelling this one cancels ``waiting`` too
        except BaseException as outcome:  # noqa: BLE001  # the coroutine's to handle
            # What ``coro`` would have been resumed with: the error of the future it
            # awaits, or the cancellation of the task running it.
            try:
                waiting = coro.throw(outcome)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            return stop.value


def _start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` up to its first wait: ``(True, its result)`` if it finished without
    one, else ``(False, a coroutine that runs the rest as a task would)``."""
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _resume(coro, waiting)


async def wait_for_inline(awaitable: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109
    """``asyncio.wait_for`` that returns at once if ``awaitable``, a coroutine, finishes
    without waiting (no task, no timer); otherwise ``asyncio.wait_for`` on the rest."""
    if isinstance(awaitable, Coroutine):
        finished, outcome = _start(awaitable)
        if finished:
            return outcome
        awaitable = outcome
    return await asyncio.wait_for(awaitable, timeout)


class _RecoveryAsyncio:
    """The ``asyncio`` module as ``faust.tables.recovery`` sees it: ``wait_for`` inline."""

    wait_for = staticmethod(wait_for_inline)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def _close(waitable: Any) -> None:
    """A coroutine that will never run: close it (no "never awaited" warning)."""
    if isinstance(waitable, Coroutine):
        waitable.close()


async def consumer_wait_first(
    self: Any,
    *coros: Any,
    timeout: Any = None,  # noqa: ASYNC109  # Service.wait_first's signature
) -> WaitResults:
    """``Consumer.wait_first``: its per-record callback inline while the flow is active."""
    if (
        timeout is None
        and len(coros) == 2
        and isinstance(coros[0], Coroutine)
        and not self.suspend_flow.is_set()
        and not self._stopped.is_set()
        and not self._crashed.is_set()
    ):
        work, other = coros
        try:
            finished, outcome = _start(work)
        except BaseException:
            _close(other)
            raise
        if finished:
            _close(other)
            return WaitResults([work], [outcome], False)
        coros = (outcome, other)
    results: WaitResults = await Service.wait_first(self, *coros, timeout=timeout)
    return results


class SharedRocksDBMemory:
    """One block cache and one memtable budget for all of a process's RocksDB databases."""

    def __init__(self, cache_bytes: int, memtable_bytes: int) -> None:
        self.cache_bytes = cache_bytes
        self.cache = rocksdict.Cache(cache_bytes)
        self.write_buffers = rocksdict.WriteBufferManager(memtable_bytes, False)

    def usage(self) -> dict[str, tuple[int, int]]:
        """Pool (``block_cache``, ``memtables``) -> (bytes in use, the pool's budget)."""
        return {
            "block_cache": (self.cache.get_usage(), self.cache_bytes),
            "memtables": (self.write_buffers.get_usage(), self.write_buffers.get_buffer_size()),
        }

    def options(self, faust_options: RocksDBOptions) -> rocksdict.Options:
        """Faust's ``RocksDBOptions.as_options`` (rocksdict) with the shared cache and
        memtable budget in place of a cache of its own."""
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        if faust_options.max_open_files is not None:
            options.set_max_open_files(faust_options.max_open_files)
        options.set_write_buffer_size(faust_options.write_buffer_size)
        options.set_target_file_size_base(faust_options.target_file_size_base)
        options.set_max_write_buffer_number(faust_options.max_write_buffer_number)
        options.set_write_buffer_manager(self.write_buffers)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(faust_options.bloom_filter_size, block_based=True)
        table.set_block_cache(self.cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


def share_rocksdb_memory(cache_bytes: int, memtable_bytes: int) -> SharedRocksDBMemory:
    """Make every RocksDB database Faust opens from now on share one block cache of
    ``cache_bytes`` and one memtable budget of ``memtable_bytes``; returns them."""
    shared = SharedRocksDBMemory(cache_bytes, memtable_bytes)

    def as_options(self: RocksDBOptions) -> Any:
        return shared.options(self) if self.use_rocksdict else _original_as_options(self)

    RocksDBOptions.as_options = as_options  # type: ignore[method-assign]  # the patch
    return shared


_original_as_options = RocksDBOptions.as_options


def install() -> None:
    """Apply the process-wide patches (idempotent; before the producer starts)."""
    Recovery.need_recovery = need_recovery  # type: ignore[method-assign]  # the patch
    faust_recovery.asyncio = _RecoveryAsyncio()  # type: ignore[assignment,attr-defined]  # the patch
    Consumer.wait_first = consumer_wait_first  # type: ignore[method-assign]  # the patch
    ProducerBuffer.flush = flush_until_empty  # type: ignore[method-assign,assignment]  # the patch
    ProducerBuffer._send_pending = _send_pending_counted  # type: ignore[method-assign]  # the patch
