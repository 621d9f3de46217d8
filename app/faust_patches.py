"""Every change supplyflow makes to Faust's behaviour, in one place.

1. :class:`QuietWeb`: Faust's aiohttp web server without its built-in blueprints. The
   ``/table`` and ``/router`` views dump raw table contents to anyone who can reach the
   port, and ``/`` would shadow our status page; the contract allows only our routes.
2. :class:`SupplyflowApp`: a ``faust.App`` that builds :class:`QuietWeb`.
3. :class:`MsgpackTable`: a ``faust.Table`` whose store and changelog use msgpack. Faust
   picks a table's codec from its value type and ignores a ``schema``'s serializers, so a
   table without a model value type would write JSON to RocksDB and its changelog.
4. :func:`partition_scope`: run table reads and writes as if ``event`` were the current
   event. Faust's RocksDB store and changelog pick the partition of the *current event*;
   a batch from ``take_events`` mixes partitions, so each partition's keys must be read
   and written in the scope of an event from that partition.
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
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import faust
from faust.streams import _current_event
from faust.transport.producer import ProducerBuffer
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from supplyflow.codecs.serializers import MSGPACK_CODEC

__all__ = [
    "MsgpackTable",
    "QuietWeb",
    "SupplyflowApp",
    "flush_until_empty",
    "install",
    "new_worker",
    "partition_scope",
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
    """A table whose keys and values go through the ``msgpack`` codec everywhere."""

    def _serializer_from_type(self, typ: Any) -> str:
        return MSGPACK_CODEC


@contextmanager
def partition_scope(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event (and so its partition the tables') inside."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


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


def install() -> None:
    """Apply the process-wide patches (idempotent; before the producer starts)."""
    ProducerBuffer.flush = flush_until_empty  # type: ignore[method-assign,assignment]  # the patch
    ProducerBuffer._send_pending = _send_pending_counted  # type: ignore[method-assign]  # the patch
