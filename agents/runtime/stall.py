"""Which partitions of a reader have records to process but do not get on with them.

A partition is *stalled* when it has records left to process (a batch of it failed, or
Kafka holds records past its position) and it has neither advanced nor been caught up
for longer than ``RuntimeConfig.stall_after_s``: a broker it cannot write to, a disk
that is full, a record being retried. The worker reports it as ``degraded`` on
``/health`` and in ``supplyflow_partition_stalled`` (see docs/guarantees.md).

A :class:`StallWatch` belongs to one :class:`~supplyflow.agents.runtime.reader.InputReader`,
which tells it, per topic partition (full names), when a batch advanced it, when it was
read up to its end, and when a batch of it failed; a revocation forgets everything (the
next owner watches from then on).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from supplyflow.agents.runtime.quarantine import describe

__all__ = ["Stall", "StallWatch"]


@dataclass(frozen=True, slots=True)
class Stall:
    """One topic partition's state as the watch sees it."""

    topic: str
    partition: int
    #: since when it has neither advanced nor been caught up (epoch seconds)
    since: float
    #: whether that has lasted longer than the threshold while records wait
    stalled: bool
    #: the last error a batch of it failed with: (type, message); None: none since it
    #: last advanced
    error: tuple[str, str] | None


@dataclass
class _Partition:
    since: float
    error: tuple[str, str] | None = None


class StallWatch:
    """Progress and errors per topic partition of one reader (see the module doc)."""

    def __init__(self, stall_after_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self.stall_after_s = stall_after_s
        self.clock = clock
        self._partitions: dict[tuple[str, int], _Partition] = {}

    def watching(self, topic: str, partition: int) -> None:
        """The reader reads ``topic[partition]`` (again): watched from now on, unless it
        already is (a partition read again after a failure keeps its time)."""
        self._partitions.setdefault((topic, partition), _Partition(self.clock()))

    def advanced(self, partitions: Iterable[tuple[str, int]]) -> None:
        """A batch with records of ``partitions`` was committed (or they are read to the
        end): they are fine as of now."""
        now = self.clock()
        for key in partitions:
            self._partitions[key] = _Partition(now)

    def failed(self, partitions: Iterable[tuple[str, int]], error: BaseException) -> None:
        """A batch with records of ``partitions`` failed with ``error``."""
        described = describe(error)
        now = self.clock()
        for key in partitions:
            state = self._partitions.setdefault(key, _Partition(now))
            state.error = described

    def forget(self) -> None:
        """The partitions were revoked: their next owner watches them."""
        self._partitions.clear()

    def states(self, lag: Mapping[tuple[str, int], int]) -> list[Stall]:
        """Every watched partition, with ``lag`` (records Kafka holds past its position,
        for the partitions being read) deciding whether records wait."""
        now = self.clock()
        out = []
        for (topic, partition), state in sorted(self._partitions.items()):
            waiting = state.error is not None or lag.get((topic, partition), 0) > 0
            stalled = waiting and now - state.since > self.stall_after_s
            out.append(Stall(topic, partition, state.since, stalled, state.error))
        return out
