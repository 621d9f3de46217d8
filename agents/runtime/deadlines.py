"""Finding due deadlines cheaply: per partition, a heap of (due time, entity key).

The heaps are rebuilt from the entity table whenever the set of partitions this worker
owns changes (one pass over the local state), and pushed to whenever a state with
deadlines is written; a tick pops only the entries that are due. Entries can be stale
(the deadline was met or replaced): the domain function checks the state itself.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any

from supplyflow.agents.runtime.keys import partition_for
from supplyflow.agents.runtime.progress import is_marker

__all__ = ["DeadlineIndex"]


class DeadlineIndex:
    """Due-time index over one entity table's deadlines, for the partitions owned here."""

    def __init__(self, partitions: int, next_due: Callable[[list[Any]], int | None]) -> None:
        self.partitions = partitions
        self.next_due = next_due
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._owned: frozenset[int] | None = None

    def ensure(self, owned: frozenset[int], items: Callable[[], Iterable[tuple[str, Any]]]) -> None:
        """Rebuild from ``items()`` (key, wire) if the owned partitions changed."""
        if owned == self._owned:
            return
        heaps: dict[int, list[tuple[int, str]]] = {p: [] for p in owned}
        for key, wire in items():
            if is_marker(key):
                continue
            due = self.next_due(wire)
            if due is None:
                continue
            heap = heaps.get(partition_for(key, self.partitions))
            if heap is not None:
                heap.append((due, key))
        for heap in heaps.values():
            heapq.heapify(heap)
        self._heaps = heaps
        self._owned = owned

    def push(self, partition: int, key: str, due: int) -> None:
        heap = self._heaps.get(partition)
        if heap is not None:
            heapq.heappush(heap, (due, key))

    def pop_due(self, partition: int, until_ms: int) -> list[str]:
        """Keys with an entry due at or before ``until_ms`` (each once), removed."""
        heap = self._heaps.get(partition)
        keys: dict[str, None] = {}
        while heap and heap[0][0] <= until_ms:
            keys[heapq.heappop(heap)[1]] = None
        return list(keys)

    def size(self) -> int:
        return sum(len(h) for h in self._heaps.values())
