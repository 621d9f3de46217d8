"""Faust's RocksDB stores: one block cache and memtable budget for all of them (patch 12).

12. :func:`share_rocksdb_memory`: every RocksDB database of the process (one per table
   partition: 24 with 8 partitions) uses one block cache and one memtable budget.
   Faust gives each its own cache and write buffers, so a worker's RocksDB memory grows
   with the partitions it holds instead of staying under one bound.
"""

from __future__ import annotations

from typing import Any, Final

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

__all__ = ["ORIGINALS", "SharedRocksDBMemory", "share_rocksdb_memory"]


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


#: The Faust code these patches replace or depend on, as the pinned release defines it.
ORIGINALS: Final = {
    "RocksDBOptions.as_options": _original_as_options,
}
