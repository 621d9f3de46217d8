"""A dead letter is never lost: records whose letter is larger than ``dlq`` takes, through a
real worker and the real broker.

An invalid record with a 2 MB header (or a 2 MB key) fits its input topic, but its
letter, which keeps the original headers and a base64 copy of everything, does not fit
``dlq``. Sent whole, Kafka refused it, the batch failed and was read again forever: the
records after it in the partition (the canaries here) were never applied. The letter now
goes out truncated, once, counted once, and the canaries are applied.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
import pytest

from supplyflow.agents.runtime.keys import partition_of
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import SampleRecord
from supplyflow.app.settings import Settings
from supplyflow.app.topics import read_topic
from supplyflow.codecs import parse_dead_letter
from supplyflow.codecs.dlq import TRUNCATED_HEADER
from tests.integration.worker_http import http_json

pytestmark = pytest.mark.integration

WORKER_READY_S: Final = 90.0
#: A canary behind the hostile record is applied within this (the issue asks for 10 s).
CANARY_S: Final = 10.0
DRAIN_S: Final = 30.0
PARTITIONS: Final = 4
HUGE: Final = 2_000_000


def _po(event_id: str, po_id: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": "po.created",
            "schema_version": 1,
            "source": "erp",
            "occurred_at": "2026-11-27T10:15:00Z",
            "data": {
                "po_id": po_id,
                "revision": 1,
                "supplier_id": "SUP",
                "location": "DC1",
                "lines": [{"line_no": 1, "sku": "SKU-1", "qty": 5}],
            },
        }
    )


def _canary_beside(key: bytes, run: str) -> str:
    """A PO id whose records land in the partition of ``key``."""
    target = partition_of(key, PARTITIONS)
    n = 0
    while partition_of(f"{run}-CANARY-{n}".encode(), PARTITIONS) != target:
        n += 1
    return f"{run}-CANARY-{n}"


def _dead_letter_count(worker: WorkerProcess, reason: str) -> float:
    return sum(
        value
        for (name, labels), value in worker.metrics().items()
        if name == "supplyflow_dead_letters_total" and dict(labels).get("reason") == reason
    )


def test_a_letter_larger_than_dlq_takes_is_sent_truncated_once_and_the_partition_moves_on(
    bootstrap: str, names: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    run = names["app_id"]
    settings = Settings(
        bootstrap=bootstrap,
        topic_prefix=names["prefix"],
        app_id=run,
        partitions=PARTITIONS,
    )
    worker = start_worker()
    worker.wait_healthy(WORKER_READY_S)

    header_po = f"{run}-PO-H"
    big_key = f"{run}-PO-K-".encode() + b"k" * HUGE
    key_canary = _canary_beside(big_key, run)
    records = [
        # invalid (key + value + headers over 1 MiB: too_large) with a 2 MB header
        SampleRecord(
            "po.events",
            header_po.encode(),
            _po(f"{run}-e1", header_po),
            [("trace", b"h" * HUGE)],
            "too_large",
        ),
        SampleRecord("po.events", header_po.encode(), _po(f"{run}-e2", header_po)),
        # invalid with a 2 MB key, and a canary in its partition
        SampleRecord("po.events", big_key, _po(f"{run}-e3", "PO-K"), [], "too_large"),
        SampleRecord("po.events", key_canary.encode(), _po(f"{run}-e4", key_canary)),
    ]
    sent_at = time.monotonic()
    asyncio.run(produce_records(settings, records))

    for po_id in (header_po, key_canary):
        status: int | None = None
        while time.monotonic() < sent_at + CANARY_S:
            status, _ = http_json(worker, f"/pos/{po_id}")
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, f"the canary {po_id} behind a hostile record was not applied"

    letters = asyncio.run(read_topic(bootstrap, settings.topic("dlq"), expected=2, wait_s=DRAIN_S))
    time.sleep(1.0)  # a letter sent twice would arrive right behind the first
    letters = asyncio.run(read_topic(bootstrap, settings.topic("dlq")))
    assert len(letters) == 2
    by_key: dict[bytes, Any] = {}
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["supplyflow-dlq-reason"] == b"too_large"
        assert headers[TRUNCATED_HEADER]
        body = parse_dead_letter(letter.value)
        assert body["reason"] == "too_large"
        assert body["truncated"]
        by_key[letter.key] = (headers, body)

    headers, body = by_key[header_po.encode()]
    assert body["truncated"]["headers"] == len(b"trace") + HUGE
    assert [h["key"] for h in body["headers"]] == ["trace"]
    assert body["headers"][0]["value_bytes"] == HUGE
    assert body["value"] == records[0].value  # the value itself was small: kept whole
    assert b"headers=" in headers[TRUNCATED_HEADER]

    cut_key = big_key[:1024]
    headers, body = by_key[cut_key]
    assert body["truncated"]["key"] == len(big_key)
    assert body["value"] == records[2].value

    assert _dead_letter_count(worker, "too_large") == 2
