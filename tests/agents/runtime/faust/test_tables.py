"""Patch 6: a table's key estimate is RocksDB's, over its open partition databases."""

from __future__ import annotations

from pathlib import Path

import faust

from supplyflow.agents.runtime.faust.tables import table_key_estimate
from supplyflow.agents.runtime.table_io import encode
from supplyflow.agents.state import state_table
from supplyflow.codecs import register_codecs


def test_the_estimate_counts_the_keys_of_every_open_partition(tmp_path: Path) -> None:
    register_codecs()
    app = faust.App("k", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path))
    table = state_table(app, "po", partitions=4, help="test")
    assert table_key_estimate(table) == 0  # no partition database opened yet
    for partition, keys in ((0, 30), (3, 12)):
        db = table.data._db_for_partition(partition)
        for i in range(keys):
            db.put(encode(f"PO-{partition}-{i}"), encode([i]))
    assert table_key_estimate(table) == 42
