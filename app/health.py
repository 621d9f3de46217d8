"""Which of a worker's partitions are stalled: ``/health``'s ``degraded`` and the gauge.

Each input reader watches its partitions (:mod:`supplyflow.agents.runtime.stall`); this
module gathers what every reader of the worker sees, under the names operators know:
an input topic's contract name (``po.events``) for the topic and its routed topic, and
``position-deltas`` for the internal deltas topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from supplyflow.agents.positions import DELTAS
from supplyflow.agents.runtime.config import RuntimeConfig
from supplyflow.agents.runtime.reader import InputReader
from supplyflow.agents.runtime.stall import Stall

__all__ = ["PartitionHealth"]


class PartitionHealth:
    """The stall state of every partition the worker's ``readers`` read."""

    def __init__(
        self, readers: Sequence[InputReader], config: RuntimeConfig, inputs: Sequence[str]
    ) -> None:
        self.readers = readers
        self.stall_after_s = config.stall_after_s
        #: full topic name -> the name operators see
        self.labels: dict[str, str] = {config.deltas_topic: DELTAS}
        for name in inputs:
            self.labels[config.topic(name)] = name
            routed = config.routed_topics.get(config.topic(name))
            if routed is not None:
                self.labels[routed] = name

    def states(self) -> list[Stall]:
        """Every watched partition, topics under their operator names."""
        out = []
        for reader in self.readers:
            for state in reader.watch.states(reader.lag()):
                label = self.labels.get(state.topic, state.topic)
                out.append(Stall(label, state.partition, state.since, state.stalled, state.error))
        return out

    def stalled(self) -> Mapping[tuple[str, int], bool]:
        """(topic, partition) -> stalled, for ``supplyflow_partition_stalled``."""
        out: dict[tuple[str, int], bool] = {}
        for state in self.states():
            key = (state.topic, state.partition)
            out[key] = out.get(key, False) or state.stalled
        return out

    def degraded(self) -> list[dict[str, Any]]:
        """The stalled partitions as ``/health`` shows them (oldest stall first)."""
        found: dict[tuple[str, int], Stall] = {}
        for state in self.states():
            key = (state.topic, state.partition)
            if state.stalled and (key not in found or state.since < found[key].since):
                found[key] = state
        return [
            {
                "topic": state.topic,
                "partition": state.partition,
                "since": datetime.fromtimestamp(state.since, UTC).isoformat(timespec="seconds"),
                "stall_after_s": self.stall_after_s,
                "last_error": None
                if state.error is None
                else {"type": state.error[0], "message": state.error[1]},
            }
            for state in sorted(found.values(), key=lambda s: s.since)
        ]
