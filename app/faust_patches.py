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
6. :func:`table_key_estimate`: RocksDB's own key count estimate over a table's open
   partition databases (Faust keeps them in a private mapping).
5. :func:`new_worker`: a ``faust.Worker`` without its terminal spinner. The spinner hooks
   a DEBUG-level handler onto the root logger, so every library builds a log record for
   every debug call: 10% of a busy worker's time, measured with py-spy.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import faust
from faust.streams import _current_event
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from supplyflow.codecs.serializers import MSGPACK_CODEC

__all__ = [
    "MsgpackTable",
    "QuietWeb",
    "SupplyflowApp",
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
