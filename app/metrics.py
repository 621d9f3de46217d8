"""Prometheus metrics of one worker, built against an injected ``CollectorRegistry``.

Names follow Prometheus conventions (base units, ``_total`` counters) and every label is
bounded: topic (contract name, without prefix), event type, outcome, reason. Never an
entity id.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE", "Metrics", "Outcome"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
#: Outcomes of one input record.
Outcome = str
APPLIED: Final = "applied"
DUPLICATE: Final = "duplicate"
STALE: Final = "stale"
DEAD_LETTERED: Final = "dead_lettered"
_BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


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
        self.batch_size = Histogram(
            "supplyflow_batch_size_records",
            "Records per processed batch, by topic",
            ["topic"],
            buckets=_BATCH_BUCKETS,
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
        self.build_info = Gauge(
            "supplyflow_build_info",
            "Always 1; labels carry the version and app id",
            ["version", "app_id"],
            registry=registry,
        )
        self.build_info.labels(version=version, app_id=app_id).set(1)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
