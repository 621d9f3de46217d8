"""Faust's tables: msgpack everywhere, raw changelog records, key estimates (patches 3, 6).

3. :class:`MsgpackTable`: a ``faust.Table`` whose store and changelog use msgpack. Faust
   picks a table's codec from its value type and ignores a ``schema``'s serializers, so a
   table without a model value type would write JSON to RocksDB and its changelog.
   Recovery reads its changelog as raw bytes (see there).
6. :func:`table_key_estimate`: RocksDB's own key count estimate over a table's open
   partition databases (Faust keeps them in a private mapping).

The runtime's table I/O (:mod:`supplyflow.agents.runtime.table_io`) reads and writes a
table's partition databases and persisted changelog offsets through Faust's store; those
private functions are pinned here as well.
"""

from __future__ import annotations

from typing import Any, Final

import faust
from faust.stores.rocksdb import Store
from faust.tables.base import Collection

from supplyflow.codecs.serializers import MSGPACK_CODEC

__all__ = ["ORIGINALS", "MsgpackTable", "table_key_estimate"]


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


def table_key_estimate(table: Any) -> int:
    """Estimated keys of ``table`` on this worker (0 before its store is opened)."""
    dbs = getattr(table.data, "_dbs", {})
    return sum(int(db.property_int_value("rocksdb.estimate-num-keys") or 0) for db in dbs.values())


#: The Faust code these patches replace or depend on, as the pinned release defines it.
ORIGINALS: Final = {
    "Collection._serializer_from_type": Collection._serializer_from_type,
    "Collection._new_changelog_topic": Collection._new_changelog_topic,
    # fills Store._dbs (table_key_estimate); TableIO reads a partition's database through it
    "Store._db_for_partition": Store._db_for_partition,
    # TableIO records the changelog offset recovery resumes after, as Faust's own path does
    "Store.set_persisted_offset": Store.set_persisted_offset,
}
