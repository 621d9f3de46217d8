"""Patch 12: all of a process's RocksDB databases share one cache and memtable budget."""

from __future__ import annotations

from pathlib import Path

from supplyflow.agents.runtime.faust.rocksdb import share_rocksdb_memory


def test_every_rocksdb_database_shares_one_cache_and_memtable_budget(tmp_path: Path) -> None:
    from faust.stores.rocksdb import RocksDBOptions

    original = RocksDBOptions.as_options
    try:
        shared = share_rocksdb_memory(8 * 1024 * 1024, 8 * 1024 * 1024)
        options = RocksDBOptions(write_buffer_size=1024 * 1024)
        dbs = [options.open(tmp_path / f"p{i}.db") for i in range(2)]
        opened = shared.write_buffers.get_usage()  # each empty memtable's first block
        for db in dbs:
            for i in range(2000):
                db.put(b"key-%d" % i, b"v" * 100)
        # Both databases' 2 x 2,000 writes of over 100 bytes count against the one budget.
        assert shared.write_buffers.get_usage() - opened > 2 * 2000 * 100
        # What the worker's gauges report (supplyflow_rocksdb_memory_*): use and budget.
        memtables_used, memtables_budget = shared.usage()["memtables"]
        assert memtables_used - opened > 2 * 2000 * 100
        assert memtables_budget == 8 * 1024 * 1024
        assert shared.usage()["block_cache"] == (shared.cache.get_usage(), 8 * 1024 * 1024)
        for db in dbs:
            db.flush()
            assert db.get(b"key-7") == b"v" * 100  # read through the shared cache
        assert shared.cache.get_usage() > 0
        assert shared.usage()["block_cache"][0] == shared.cache.get_usage()
        for db in dbs:
            db.close()
    finally:
        RocksDBOptions.as_options = original  # type: ignore[method-assign]  # the test's own patch
