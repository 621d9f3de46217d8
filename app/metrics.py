"""The scrape-time gauges of one worker, built against an injected ``CollectorRegistry``.

Counters and histograms are updated as records flow (:class:`~supplyflow.agents.metrics.
Metrics`, which the agents record into); :class:`WorkerCollector` computes the gauges that
describe state (lag, table sizes, disk, RocksDB memory, recovery, open exceptions) when
Prometheus scrapes, from callables the worker provides. Labels stay bounded as there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "StateProbes", "WorkerCollector"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


def _no_partitions() -> Mapping[tuple[str, int], bool]:
    return {}


@dataclass(frozen=True)
class StateProbes:
    """Callables the collector reads at scrape time (each cheap, none blocking long)."""

    #: (topic, partition) -> (highwater, next offset to process) for owned input partitions
    lag: Callable[[], Mapping[tuple[str, int], tuple[int, int]]]
    #: table name -> estimated number of keys on this worker
    table_keys: Callable[[], Mapping[str, int]]
    #: bytes of local state on disk
    disk_bytes: Callable[[], int]
    #: changelog records still to read before the worker is running
    recovery_remaining: Callable[[], int]
    #: rule -> open exceptions in this worker's partitions
    open_exceptions: Callable[[], Mapping[str, int]]
    #: deadlines waiting to fire in this worker's partitions
    pending_deadlines: Callable[[], int]
    #: RocksDB memory pool -> (bytes in use, budget), shared by all of the worker's tables
    rocksdb_memory: Callable[[], Mapping[str, tuple[int, int]]]
    #: (topic, partition) -> whether it is stalled (see supplyflow.agents.runtime.stall)
    stalled: Callable[[], Mapping[tuple[str, int], bool]] = field(default=_no_partitions)


class WorkerCollector(Collector):
    """Gauges computed at scrape time from :class:`StateProbes`."""

    def __init__(self, probes: StateProbes, rules: Iterable[str]) -> None:
        self.probes = probes
        self.rules = tuple(rules)

    def collect(self) -> Iterable[Metric]:
        lag = GaugeMetricFamily(
            "supplyflow_consumer_lag_records",
            "Records not yet processed, by input topic and partition",
            labels=["topic", "partition"],
        )
        for (topic, partition), (highwater, position) in sorted(self.probes.lag().items()):
            lag.add_metric([topic, str(partition)], max(0, highwater - position))
        yield lag
        stalled = GaugeMetricFamily(
            "supplyflow_partition_stalled",
            "1 while a partition has records to process and has not advanced for longer "
            "than SUPPLYFLOW_STALL_AFTER, else 0, by topic and partition",
            labels=["topic", "partition"],
        )
        for (topic, partition), is_stalled in sorted(self.probes.stalled().items()):
            stalled.add_metric([topic, str(partition)], 1 if is_stalled else 0)
        yield stalled
        keys = GaugeMetricFamily(
            "supplyflow_table_keys", "Keys in local state, by table", labels=["table"]
        )
        for table, count in sorted(self.probes.table_keys().items()):
            keys.add_metric([table], count)
        yield keys
        yield GaugeMetricFamily(
            "supplyflow_state_disk_bytes",
            "Bytes of RocksDB state under SUPPLYFLOW_DATA_DIR",
            value=self.probes.disk_bytes(),
        )
        yield GaugeMetricFamily(
            "supplyflow_recovery_remaining_records",
            "Changelog records left to read before the worker runs",
            value=self.probes.recovery_remaining(),
        )
        open_now = GaugeMetricFamily(
            "supplyflow_exceptions_open", "Open exceptions, by rule", labels=["rule"]
        )
        counts = self.probes.open_exceptions()
        for rule in self.rules:
            open_now.add_metric([rule], counts.get(rule, 0))
        yield open_now
        yield GaugeMetricFamily(
            "supplyflow_deadlines_pending",
            "Acknowledgment and invoice deadlines waiting to fire",
            value=self.probes.pending_deadlines(),
        )
        used = GaugeMetricFamily(
            "supplyflow_rocksdb_memory_bytes",
            "RocksDB memory in use, by pool (block_cache, memtables), all tables together",
            labels=["pool"],
        )
        budget = GaugeMetricFamily(
            "supplyflow_rocksdb_memory_budget_bytes",
            "RocksDB memory budget, by pool (memtables past it are flushed to disk)",
            labels=["pool"],
        )
        for pool, (in_use, limit) in sorted(self.probes.rocksdb_memory().items()):
            used.add_metric([pool], in_use)
            budget.add_metric([pool], limit)
        yield used
        yield budget
