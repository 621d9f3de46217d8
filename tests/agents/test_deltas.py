"""Deltas records stay under the deltas topic's limit, and split ones apply exactly once."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson

from supplyflow.agents.entities import DELTAS_CHUNK_BYTES, deltas_records
from supplyflow.agents.runtime.keys import partition_of
from supplyflow.agents.runtime.records import Record
from supplyflow.codecs.packing import unpack
from supplyflow.codecs.quantity import SCALE
from supplyflow.tables.position import PositionState, apply_deltas
from tests.agents.test_entities import (
    DELTAS,
    INPUT,
    PARTITION,
    CrashTable,
    FakeOutbox,
    Stream,
    _worker,
)


def _entries(keys: int, items: int, first_offset: int = 0) -> list[list[Any]]:
    return [
        [
            f"{'S' * 60}{k:04d}@{'L' * 64}",
            [[first_offset + i, 1_795_000_000_000, k, 0, 2**70 + i, i, 0] for i in range(items)],
        ]
        for k in range(keys)
    ]


def _joined(records: list[bytes]) -> list[list[Any]]:
    """The entries of ``records``, a key's pieces joined again."""
    joined: dict[str, list[Any]] = {}
    for record in records:
        source, entries = unpack(record)
        assert source == "po:3"
        for key, items in entries:
            joined.setdefault(key, []).extend(items)
    return [[key, items] for key, items in joined.items()]


def test_small_deltas_are_one_record() -> None:
    entries = _entries(3, 2)
    assert [unpack(r) for r in deltas_records("po:3", entries)] == [["po:3", entries]]


def test_deltas_over_the_limit_are_split_each_record_under_it_in_order() -> None:
    entries = _entries(8_000, 2)  # a 10,000-line PO with long codes: ~2 MB
    records = deltas_records("po:3", entries)
    assert len(records) >= 3
    assert all(len(r) <= DELTAS_CHUNK_BYTES for r in records)
    assert _joined(records) == entries
    # each position's items in one record: no key appears in two
    keys = [key for r in records for key, _ in unpack(r)[1]]
    assert len(keys) == len(set(keys))


def test_one_positions_items_over_the_limit_are_split_in_offset_order() -> None:
    entries = [*_entries(2, 3), *_entries(1, 12_000, first_offset=100)]
    entries[2][0] = "HOT@DC1"
    records = deltas_records("po:3", entries, limit=64 * 1024)
    assert all(len(r) <= 64 * 1024 for r in records)
    assert _joined(records) == entries


def _apply(records: list[bytes], positions: dict[str, PositionState]) -> None:
    for record in records:
        source, entries = unpack(record)
        for key, items in entries:
            state = positions.setdefault(key, PositionState.new(key))
            apply_deltas(state, source, items)


def test_split_deltas_apply_exactly_once_whatever_record_a_kill_falls_after() -> None:
    entries = [*_entries(40, 30), *_entries(1, 3_000, first_offset=50)]
    entries[-1][0] = "HOT@DC1"
    records = deltas_records("po:3", entries, limit=16 * 1024)
    assert len(records) > 5
    once: dict[str, PositionState] = {}
    _apply(records, once)
    for killed_after in range(len(records)):
        # The records up to the kill reached the position; the replay sends them all
        # again (and, batched differently, in other records: the same items in order).
        positions: dict[str, PositionState] = {}
        _apply(records[: killed_after + 1], positions)
        _apply(deltas_records("po:3", entries, limit=24 * 1024), positions)
        assert {k: p.totals for k, p in positions.items()} == {k: p.totals for k, p in once.items()}


#: 3,000 long SKUs whose positions (at location L...L) all live in partition 0
SKUS = list(
    itertools.islice(
        (
            sku
            for sku in (f"{'S' * 58}{n:06d}" for n in itertools.count())
            if partition_of(f"{sku}@{'L' * 64}".encode(), 4) == 0
        ),
        3_000,
    )
)


def _po(offset: int, po_id: str, lines: int) -> Record:
    value = orjson.dumps(
        {
            "event_id": f"e-{offset}",
            "type": "po.created",
            "schema_version": 1,
            "source": "erp",
            "occurred_at": "2026-11-27T10:00:00Z",
            "data": {
                "po_id": po_id,
                "revision": 1,
                "supplier_id": "S-1",
                "location": "L" * 64,
                "lines": [
                    {"line_no": n, "sku": SKUS[n - 1], "qty": "1.5"} for n in range(1, lines + 1)
                ],
            },
        }
    )
    return Record(INPUT, PARTITION, offset, po_id.encode(), value, [], 1.0)


def test_a_batch_of_large_pos_sends_its_deltas_in_records_under_the_limit() -> None:
    table, outbox = CrashTable(), FakeOutbox()
    # Three POs of 3,000 long-coded lines (each fits an entity), all positions in one
    # partition: ~700 KB of deltas for it in one batch
    pos = list(itertools.islice((f"PO-{n}" for n in itertools.count() if _owned(f"PO-{n}")), 3))
    batch = [_po(offset, po_id, 3_000) for offset, po_id in enumerate(pos)]
    asyncio.run(_worker(table, outbox)(Stream(batch)))
    deltas = outbox.topic(DELTAS)
    assert [r["partition"] for r in deltas] == [0, 0]
    assert all(len(r["value"]) <= DELTAS_CHUNK_BYTES for r in deltas)
    positions: dict[str, PositionState] = {}
    _apply([r["value"] for r in deltas], positions)
    assert len(positions) == 3_000
    assert {p.totals[2] for p in positions.values()} == {3 * 1_500}  # inbound: 3 x 1.5
    assert all(p.totals[2] == 3 * 3 * SCALE // 2 for p in positions.values())


def _owned(po_id: str) -> bool:
    return partition_of(po_id.encode(), 4) == PARTITION
