"""Exact results whatever partitioner the producer used: kcat's default, FNV-1a, round-robin.

A generated scenario (the fault suite's: POs, orders, adjustments, duplicates, stale
revisions and deliberately bad records) is produced by kcat with librdkafka's default
partitioner (CRC32 of the key, not Kafka's murmur2), by Sarama's FNV-1a, or by a producer
that ignores the key (round-robin), into two workers. Every record must be routed to the
partition that owns its key before it touches any state: positions, dead letters and
PO/order transitions must then equal the fault-free replay of the input as it sits in
Kafka, on the topics and over HTTP from both workers. The replay applies what a
deterministic partitioner produced per partition in offset order; round-robin spreads one
key over every partition, so its workers run with ``SUPPLYFLOW_APPLY_ORDER=timestamp`` and
the replay applies each topic in (timestamp, partition, offset) order.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
from collections.abc import Callable
from typing import Final

import pytest

from supplyflow.app.partitioners import partitioner
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import SampleRecord
from tests.integration.fault_checks import Row
from tests.integration.test_faults import FaultRun

pytestmark = pytest.mark.integration

EVENTS: Final = 12_000
CASE_TIMEOUT_S: Final = 900
#: Delimiters no generated key or value contains (checked before producing).
_KEY_DELIMITER: Final = b"\x1e\x1fK\x1f\x1e"
_DELIMITER: Final = b"\x1e\x1fD\x1f\x1e"


def _kcat(bootstrap: str, topic: str, records: list[SampleRecord]) -> None:
    """Produce ``records`` in order as ``kcat -P -K`` does: librdkafka's default
    partitioner, consistent_random (CRC32 of the key)."""
    payload = bytearray()
    for record in records:
        for part in (record.key or b"", record.value):
            assert _KEY_DELIMITER not in part
            assert _DELIMITER not in part
        assert not record.headers, "kcat's standard input carries no headers"
        if record.key is not None:
            payload += record.key + _KEY_DELIMITER
        payload += record.value + _DELIMITER
    subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", topic, "-K", _KEY_DELIMITER, "-D", _DELIMITER],
        input=bytes(payload),
        check=True,
        timeout=120,
    )


@pytest.fixture
def seed() -> int:
    text = os.environ.get("SUPPLYFLOW_FAULTS_SEED", "")
    return int(text) if text else random.SystemRandom().randrange(1, 1_000_000)


@pytest.mark.timeout(CASE_TIMEOUT_S)
@pytest.mark.parametrize(
    ("producer", "apply_order"),
    [("kcat default (crc32)", "arrival"), ("fnv1a", "arrival"), ("round-robin", "timestamp")],
)
def test_results_are_exact_whatever_the_partitioner(
    producer: str,
    apply_order: str,
    seed: int,
    bootstrap: str,
    names: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    fault_table: list[Row],
) -> None:
    row = Row(f"routing: {producer}, {apply_order} order", seed)
    fault_table.append(row)
    run = FaultRun(
        row.case, seed, EVENTS, bootstrap, names, start_worker, row, apply_order=apply_order
    )
    run.start(0)
    run.start(1)
    if producer.startswith("kcat"):
        for topic in ("po.events", "order.events", "inventory.events"):
            mine = [r for r in run.records if r.topic == topic]
            _kcat(bootstrap, run.settings.topic(topic), mine)
    else:
        asyncio.run(produce_records(run.settings, run.records, partitioner=partitioner(producer)))
    run.verify(run.workers[0])
    run.verify(run.workers[1])
