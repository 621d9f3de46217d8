"""Bulk histogram observations (agents.metrics.observe_all) and scrape-time gauges."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from supplyflow.agents.metrics import observe_all
from supplyflow.app.metrics import StateProbes, WorkerCollector

_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def _histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("lat_seconds", "test", ["topic"], buckets=_BUCKETS, registry=registry)


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    return {
        sample.name + str(sorted(sample.labels.items())) * (sample.name.endswith("_bucket")): (
            sample.value
        )
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_observe_all_exposes_what_observe_one_by_one_does() -> None:
    rng = random.Random(3)
    amounts = [rng.choice((0.001, 0.01, 1.0, 10.0, 11.0)) * rng.random() for _ in range(500)]
    amounts += [0.0, 0.001, 0.1, 10.0, 50.0]  # on the bounds and beyond the last
    one_by_one, bulk = CollectorRegistry(), CollectorRegistry()
    single = _histogram(one_by_one).labels(topic="t")
    for amount in amounts:
        single.observe(amount)
    batched = _histogram(bulk).labels(topic="t")
    observe_all(batched, amounts[:200])
    observe_all(batched, [])
    observe_all(batched, amounts[200:])
    got, want = _samples(bulk), _samples(one_by_one)
    assert got.pop("lat_seconds_sum") == pytest.approx(want.pop("lat_seconds_sum"))
    assert got == want  # every bucket and the count exactly
    assert got["lat_seconds_count"] == 505


def test_observe_all_of_nothing_observes_nothing() -> None:
    registry = CollectorRegistry()
    observe_all(_histogram(registry).labels(topic="t"), [])
    assert _samples(registry)["lat_seconds_count"] == 0


def test_the_collector_reports_rocksdb_memory_use_and_budget_per_pool() -> None:
    probes = StateProbes(
        lag=dict,
        table_keys=dict,
        disk_bytes=lambda: 0,
        recovery_remaining=lambda: 0,
        open_exceptions=dict,
        pending_deadlines=lambda: 0,
        rocksdb_memory=lambda: {"block_cache": (3_000, 64_000), "memtables": (5_000, 32_000)},
    )
    registry = CollectorRegistry()
    registry.register(WorkerCollector(probes, rules=()))
    samples = {
        (sample.name, sample.labels.get("pool")): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name.startswith("supplyflow_rocksdb_memory")
    }
    assert samples == {
        ("supplyflow_rocksdb_memory_bytes", "block_cache"): 3_000,
        ("supplyflow_rocksdb_memory_bytes", "memtables"): 5_000,
        ("supplyflow_rocksdb_memory_budget_bytes", "block_cache"): 64_000,
        ("supplyflow_rocksdb_memory_budget_bytes", "memtables"): 32_000,
    }
