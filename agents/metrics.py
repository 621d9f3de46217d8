"""The counters and histograms a worker's agents record into, on an injected registry.

Names follow Prometheus conventions (base units, ``_total`` counters) and every label is
bounded: topic (contract name, without prefix), partition, event type, outcome, reason,
rule, system (only systems named in an SLA setting). Never an entity id. The gauges
computed at scrape time (lag, table sizes, disk, RocksDB memory, open exceptions) are
the app's (``supplyflow.app.metrics``), read from callables the worker provides.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest

__all__ = ["APPLIED", "DEAD_LETTERED", "DUPLICATE", "STALE", "Metrics", "observe_all"]

APPLIED: Final = "applied"
DUPLICATE: Final = "duplicate"
STALE: Final = "stale"
DEAD_LETTERED: Final = "dead_lettered"
_BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: Seconds: from 1 ms (in-process) to an hour (a backlog being worked off).
_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
#: Seconds: acknowledgments take from seconds to days.
_SYNC_BUCKETS: Final = (1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 14400, 43200, 86400, 172800)


class Metrics:
    """Every metric a worker exports. One instance per process (or per test)."""

    def __init__(self, registry: CollectorRegistry, *, app_id: str, version: str) -> None:
        # ``*_created`` series double the scrape size and no dashboard of ours uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = registry
        self.events = Counter(
            "supplyflow_events",
            "Input records consumed, by topic, event type and outcome",
            ["topic", "type", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "supplyflow_dead_letters",
            "Input records sent to the dead-letter topic, by topic and reason",
            ["topic", "reason"],
            registry=registry,
        )
        self.records_routed = Counter(
            "supplyflow_records_routed",
            "Input records that arrived in a partition that does not own their key (a "
            "producer not partitioning by murmur2), routed to the one that does, by topic",
            ["topic"],
            registry=registry,
        )
        self.records_quarantined = Counter(
            "supplyflow_records_quarantined",
            "Input records that made processing fail on their own, retried and then "
            "dead-lettered (reason processing_failed), by topic",
            ["topic"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "supplyflow_batch_size_records",
            "Records per processed batch, by topic",
            ["topic"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.record_to_processed = Histogram(
            "supplyflow_record_to_processed_seconds",
            "From a record's Kafka timestamp to the end of its processing, by input topic",
            ["topic"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.event_to_position = Histogram(
            "supplyflow_event_to_position_seconds",
            "From an event's occurred_at to the position it changed being emitted",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.po_sync = Histogram(
            "supplyflow_po_sync_seconds",
            "From a PO revision to a required system's acknowledgment of it, by system",
            ["system"],
            buckets=_SYNC_BUCKETS,
            registry=registry,
        )
        self.memory_trim = Histogram(
            "supplyflow_memory_trim_seconds",
            "How long each return of free heap pages to the system took (see app.memory)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.exceptions_opened = Counter(
            "supplyflow_exceptions_opened",
            "Exceptions opened, by rule",
            ["rule"],
            registry=registry,
        )
        self.exceptions_resolved = Counter(
            "supplyflow_exceptions_resolved",
            "Exceptions resolved, by rule",
            ["rule"],
            registry=registry,
        )
        self.processed_offset = Gauge(
            "supplyflow_processed_offset",
            "Offset of the last record processed, by input topic and partition",
            ["topic", "partition"],
            registry=registry,
        )
        self.build_info = Gauge(
            "supplyflow_build_info",
            "Always 1; labels carry the version and app id",
            ["version", "app_id"],
            registry=registry,
        )
        self.build_info.labels(version=version, app_id=app_id).set(1)

        #: (topic, partition) -> next offset to process, for the lag gauge
        self.next_offsets: dict[tuple[str, int], int] = {}

    def count_events(self, topic: str, tally: Mapping[tuple[str, str], int]) -> None:
        """Add a batch's outcomes, ``(type, outcome) -> records``, to ``supplyflow_events``
        (one label lookup per pair, not per record)."""
        for (type_, outcome), n in tally.items():
            self.events.labels(topic=topic, type=type_, outcome=outcome).inc(n)

    def note_processed(self, topic: str, partition: int, offset: int) -> None:
        self.processed_offset.labels(topic=topic, partition=str(partition)).set(offset)
        self.next_offsets[(topic, partition)] = offset + 1

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)


def observe_all(histogram: Histogram, amounts: Iterable[float]) -> None:
    """``histogram.observe(a)`` for every ``a`` in ``amounts``, one increment per bucket.

    A batch's latencies are thousands of observations; prometheus-client takes a lock
    twice for each (3% of a busy worker's samples). This counts them per bucket first.
    It uses the client's bucket layout (pinned to 0.26; ``tests/app/test_metrics.py``
    checks the result equals ``observe`` one by one).
    """
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    total = 0.0
    for amount in amounts:
        counts[bisect_left(bounds, amount)] += 1
        total += amount
    if total or any(counts):
        histogram._sum.inc(total)
        for bucket, count in zip(histogram._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
