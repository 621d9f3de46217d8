"""Live positions from real workers equal the reference computation, through crashes.

A generated scenario (200 POs, 1,000 orders, 500 SKU-locations, duplicates, stale
revisions, partial receipts and shipments, cancellations, returns, adjustments) is
produced to the real broker; the last ``inventory.positions`` record per key and the
HTTP API must equal :func:`reference_positions` field by field.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
import pytest

from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.settings import Settings
from supplyflow.app.topics import read_topic
from supplyflow.app.worker import ROCKSDB_CACHE_BYTES, ROCKSDB_MEMTABLE_BYTES
from supplyflow.app.workload import generate
from supplyflow.codecs import decode_input
from supplyflow.codecs.quantity import parse_qty
from supplyflow.tables.reference import POSITION_FIELDS, reference_positions
from tests.integration.worker_http import http_json

pytestmark = pytest.mark.integration

WORKER_READY_S: Final = 90.0
#: Processing ~6,300 records takes a few seconds; rebalances after a kill add ~15 s.
EXACT_S: Final = 180.0

Factory = Callable[..., WorkerProcess]


def _settings(bootstrap: str, names: dict[str, str]) -> Settings:
    return Settings(
        bootstrap=bootstrap, topic_prefix=names["prefix"], app_id=names["app_id"], partitions=4
    )


def _scenario(run_id: str) -> tuple[list[Any], dict[str, dict[str, int]]]:
    records = generate(seed=11, run_id=run_id)
    events = [decode_input(r.topic, r.key, r.value, r.headers, max_bytes=1 << 20) for r in records]
    return records, reference_positions(events)


def _milli(record: dict[str, Any]) -> dict[str, int]:
    return {field: parse_qty(record[field], signed=True) for field in POSITION_FIELDS}


def _zero() -> dict[str, int]:
    return dict.fromkeys(POSITION_FIELDS, 0)


def _differences(expected: dict[str, dict[str, int]], got: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for key in sorted(expected.keys() | got.keys()):
        want, have = expected.get(key, _zero()), got.get(key, _zero())
        if want != have:
            problems.append(f"{key}: expected {want}, got {have}")
    return problems


def wait_exact(settings: Settings, expected: dict[str, dict[str, int]]) -> None:
    """Until the last positions record per key equals ``expected`` (or fail with a diff)."""
    deadline = time.monotonic() + EXACT_S
    problems: list[str] = []
    while time.monotonic() < deadline:
        records = asyncio.run(
            read_topic(settings.bootstrap, settings.topic("inventory.positions"), wait_s=30)
        )
        latest = {m.key.decode(): _milli(orjson.loads(m.value)) for m in records}
        problems = _differences(expected, latest)
        if not problems:
            return
        time.sleep(1.0)
    pytest.fail(f"{len(problems)} positions differ, e.g.:\n" + "\n".join(problems[:10]))


def http_positions(worker: WorkerProcess, keys: list[str]) -> dict[str, Any]:
    answers = {}
    for key in keys:
        sku, location = key.split("@")
        status, body = http_json(worker, f"/positions/{sku}/{location}")
        assert status in (200, 404), (key, status, body)
        answers[key] = body if status == 200 else None
    return answers


def _started(factory: Factory, count: int) -> list[WorkerProcess]:
    workers = [factory() for _ in range(count)]
    for worker in workers:
        worker.wait_healthy(WORKER_READY_S)
    return workers


def test_two_workers_end_exact_and_answer_for_any_key(
    bootstrap: str, names: dict[str, str], start_worker: Factory
) -> None:
    settings = _settings(bootstrap, names)
    records, expected = _scenario(names["app_id"])
    assert len(expected) >= 450
    assert len(records) > 6000
    workers = _started(start_worker, 2)
    asyncio.run(produce_records(settings, records))
    wait_exact(settings, expected)

    keys = sorted(expected)
    for worker in workers:  # each worker answers for every key, owned or forwarded
        answers = http_positions(worker, keys)
        got = {k: _milli(v) for k, v in answers.items() if v is not None}
        assert _differences(expected, got) == []

    po_id = f"{names['app_id']}-PO-00003"
    views = [http_json(w, f"/pos/{po_id}") for w in workers]
    assert views[0] == views[1]
    assert views[0][0] == 200
    assert views[0][1]["po_id"] == po_id
    order_id = f"{names['app_id']}-SO-00007"
    status, order = http_json(workers[1], f"/orders/{order_id}")
    assert status == 200
    assert order["order_id"] == order_id
    status, missing = http_json(workers[0], "/orders/nope")
    assert status == 404
    assert "nope" in missing["error"]

    # Both workers processed part of the input (the group split the partitions).
    for worker in workers:
        applied = sum(
            v
            for (name, labels), v in worker.metrics().items()
            if name == "supplyflow_events_total" and dict(labels)["outcome"] == "applied"
        )
        assert applied > 0
    # Duplicates were recognised as such, not applied twice.
    duplicates = sum(
        v
        for w in workers
        for (name, labels), v in w.metrics().items()
        if name == "supplyflow_events_total" and dict(labels)["outcome"] == "duplicate"
    )
    assert duplicates > 0
    # Each worker reports the memory its RocksDB tables share, against the budgets.
    for worker in workers:
        scraped = worker.metrics()
        in_use, budget = (
            {dict(labels)["pool"]: v for (name, labels), v in scraped.items() if name == metric}
            for metric in (
                "supplyflow_rocksdb_memory_bytes",
                "supplyflow_rocksdb_memory_budget_bytes",
            )
        )
        assert budget == {"block_cache": ROCKSDB_CACHE_BYTES, "memtables": ROCKSDB_MEMTABLE_BYTES}
        assert 0 < in_use["memtables"] <= budget["memtables"], in_use
        assert 0 <= in_use["block_cache"] <= budget["block_cache"], in_use


def test_sigkill_mid_stream_and_restart_still_exact(
    bootstrap: str, names: dict[str, str], start_worker: Factory
) -> None:
    settings = _settings(bootstrap, names)
    records, expected = _scenario(names["app_id"])
    workers = _started(start_worker, 2)
    cut = len(records) * 2 // 5
    asyncio.run(produce_records(settings, records[:cut]))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _processed(workers[1]):
        time.sleep(0.05)
    workers[1].kill()  # SIGKILL: no flush, no commit
    asyncio.run(produce_records(settings, records[cut:]))
    time.sleep(2)
    restarted = start_worker(1)  # same data dir as the killed one
    restarted.wait_healthy(WORKER_READY_S)
    wait_exact(settings, expected)


def test_state_survives_restart_and_rebuilds_from_changelog(
    bootstrap: str, names: dict[str, str], start_worker: Factory
) -> None:
    settings = _settings(bootstrap, names)
    records, expected = _scenario(names["app_id"])
    (worker,) = _started(start_worker, 1)
    asyncio.run(produce_records(settings, records))
    wait_exact(settings, expected)
    keys = sorted(expected)
    before = http_positions(worker, keys)
    po_path = f"/pos/{names['app_id']}-PO-00001"
    po_before = http_json(worker, po_path)

    worker.stop()
    again = start_worker(0)  # same data dir
    again.wait_healthy(WORKER_READY_S)
    assert http_positions(again, keys) == before  # local RocksDB state kept
    again.stop()

    data_dir = again.env["SUPPLYFLOW_DATA_DIR"]
    shutil.rmtree(data_dir)
    rebuilt = start_worker(0)
    rebuilt.wait_healthy(WORKER_READY_S)
    assert http_positions(rebuilt, keys) == before  # rebuilt from the changelogs
    assert http_json(rebuilt, po_path) == po_before


def _processed(worker: WorkerProcess) -> bool:
    try:
        samples = worker.metrics()
    except OSError:
        return False
    return any(name == "supplyflow_events_total" and v > 0 for (name, _), v in samples.items())
