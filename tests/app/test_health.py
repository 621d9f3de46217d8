"""Stalled partitions as /health and the gauge show them, under the names operators know."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from supplyflow.agents.runtime.stall import StallWatch
from supplyflow.app.health import PartitionHealth
from supplyflow.app.metrics import StateProbes, WorkerCollector
from supplyflow.app.runtime_config import runtime_config
from supplyflow.app.settings import Settings

CONFIG = runtime_config(Settings(bootstrap="unused:9092", topic_prefix="t.", app_id="t"))


class Reader:
    """A reader as PartitionHealth sees it: its watch and its lag."""

    def __init__(self, clock: list[float], lag: dict[tuple[str, int], int]) -> None:
        self.watch = StallWatch(CONFIG.stall_after_s, clock=lambda: clock[0])
        self._lag = lag

    def lag(self) -> dict[tuple[str, int], int]:
        return self._lag


def _health(readers: list[Any]) -> PartitionHealth:
    return PartitionHealth(readers, CONFIG, ("po.events", "inventory.events"))


def test_a_stalled_partition_is_named_with_its_error_and_the_rest_are_not() -> None:
    clock = [1_000_000.0]
    po, positions = Reader(clock, {}), Reader(clock, {})
    health = _health([po, positions])
    for topic in (CONFIG.topic("po.events"), CONFIG.routed_topic("po.events")):
        po.watch.watching(topic, 1)
        po.watch.watching(topic, 2)
    positions.watch.watching(CONFIG.deltas_topic, 0)
    po.watch.failed([(CONFIG.routed_topic("po.events"), 2)], OSError(28, "No space left"))
    clock[0] += CONFIG.stall_after_s + 1

    assert health.degraded() == [
        {
            "topic": "po.events",
            "partition": 2,
            "since": "1970-01-12T13:46:40+00:00",
            "stall_after_s": 30.0,
            "last_error": {"type": "OSError", "message": "[Errno 28] No space left"},
        }
    ]
    assert health.stalled() == {
        ("po.events", 1): False,
        ("po.events", 2): True,  # its routed topic is stalled
        ("position-deltas", 0): False,
    }


def test_the_gauge_has_one_series_per_partition() -> None:
    registry = CollectorRegistry()
    probes = StateProbes(
        lag=dict,
        table_keys=dict,
        disk_bytes=int,
        recovery_remaining=int,
        open_exceptions=dict,
        pending_deadlines=int,
        rocksdb_memory=dict,
        stalled=lambda: {("po.events", 2): True, ("po.events", 1): False},
    )
    registry.register(WorkerCollector(probes, rules=()))

    samples = {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        if family.name == "supplyflow_partition_stalled"
        for s in family.samples
    }
    assert samples == {("po.events", "1"): 0.0, ("po.events", "2"): 1.0}
