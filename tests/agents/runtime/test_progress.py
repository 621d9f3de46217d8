"""Progress markers: replays dropped, skipped records fetched, and everything kept in order."""

from __future__ import annotations

import asyncio
from typing import Any

from supplyflow.agents.runtime.progress import (
    MARKER_FORMAT,
    ProgressMarkers,
    marker_key,
    merge_completed,
)
from supplyflow.agents.runtime.records import Record

INV = "p.inventory.events"
DELTAS = "app-position-deltas"


def _event(topic: str, offset: int) -> Record:
    return Record(topic, 3, offset, b"k", b"v", [], None)


class DictTable:
    """A table's partitions as dicts (the part of ``TableIO`` the markers use)."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[str, Any]] = {}

    def get(self, partition: int, key: str) -> Any:
        return self.partitions.get(partition, {}).get(key)

    def put(self, partition: int, key: str, value: Any) -> None:
        self.partitions.setdefault(partition, {})[key] = value


class FakeMarkers(ProgressMarkers):
    """Markers over dicts; "fetching" returns every offset asked for."""

    def __init__(self) -> None:
        super().__init__(DictTable(), {"bootstrap_servers": "unused:9092"})
        self.fetched: list[tuple[str, int, int]] = []

    async def _fetch(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        self.fetched.append((topic, start, end))
        return [_event(topic, offset) for offset in range(start, end)]


def _order(events: list[Any]) -> list[tuple[str, int]]:
    return [(e.topic, e.offset) for e in events]


def _merge(markers: FakeMarkers, live: list[Record]) -> list[tuple[str, int]]:
    merged = asyncio.run(
        merge_completed(live, [INV, DELTAS], lambda t, mine: markers.complete(t, 3, mine))
    )
    return _order(merged)


def test_a_gap_after_a_live_record_is_filled_after_it_not_before() -> None:
    # Found by the SIGKILL test: marker at 20, Faust delivered 21 and then 30 (22..29
    # skipped around a rebalance). Processing the fetched 22..29 before 21 let offset 27
    # raise the inventory watermark past 21, which was then dropped as a replay.
    markers = FakeMarkers()
    markers.record(INV, 3, 20)
    assert _merge(markers, [_event(INV, 21), _event(INV, 30)]) == [(INV, o) for o in range(21, 31)]
    assert markers.fetched == [(INV, 22, 30)]


def test_topics_stay_interleaved_as_they_arrived_with_gaps_in_place() -> None:
    markers = FakeMarkers()
    markers.record(INV, 3, 4)
    markers.record(DELTAS, 3, 9)
    live = [_event(DELTAS, 10), _event(INV, 5), _event(DELTAS, 13), _event(INV, 8)]
    assert _merge(markers, live) == [
        (DELTAS, 10),
        (INV, 5),
        (DELTAS, 11),
        (DELTAS, 12),
        (DELTAS, 13),
        (INV, 6),
        (INV, 7),
        (INV, 8),
    ]


def test_replays_are_kept_in_order_and_a_record_delivered_twice_counts_once() -> None:
    # Replays of a previous process's work are applied again (their state may never have
    # reached the changelog); the entity and position functions recognise them.
    markers = FakeMarkers()
    markers.record(INV, 3, 7)
    live = [_event(INV, 7), _event(INV, 6), _event(INV, 8), _event(INV, 8), _event(INV, 9)]
    assert _merge(markers, live) == [(INV, 6), (INV, 7), (INV, 8), (INV, 9)]
    assert markers.fetched == []


def test_replays_of_what_this_process_applied_itself_are_dropped() -> None:
    markers = FakeMarkers()
    markers.record(INV, 3, 7)  # found in the store: a previous process got this far
    markers.record_all(INV, 3, asyncio.run(markers.complete(INV, 3, [_event(INV, 8)])))
    markers.record(INV, 3, 20)  # this process applied 9..20 (e.g. fetched by a repair)
    live = [_event(INV, o) for o in (6, 7, 8, 9, 20, 21)]
    assert _merge(markers, live) == [(INV, 6), (INV, 7), (INV, 21)]
    assert markers.fetched == []


def test_a_batch_of_replays_fetches_nothing_and_never_moves_the_marker_back() -> None:
    markers = FakeMarkers()
    markers.record(INV, 3, 40)
    replays = asyncio.run(markers.complete(INV, 3, [_event(INV, 12), _event(INV, 11)]))
    assert _order(replays) == [(INV, 11), (INV, 12)]
    markers.record_all(INV, 3, replays)
    assert markers.last(INV, 3) == 40
    assert markers.fetched == []


def test_a_fresh_partition_fetches_everything_before_its_first_record() -> None:
    markers = FakeMarkers()
    assert _merge(markers, [_event(INV, 2)]) == [(INV, 0), (INV, 1), (INV, 2)]


def test_each_partition_has_its_own_marker() -> None:
    markers = FakeMarkers()
    markers.record(INV, 3, 40)
    markers.record(INV, 4, 7)
    markers.record(DELTAS, 3, 9)
    assert (markers.last(INV, 3), markers.last(INV, 4), markers.last(INV, 5)) == (40, 7, None)
    assert markers.last(DELTAS, 3) == 9
    assert markers.last(DELTAS, 4) is None


def test_a_marker_stored_before_versions_is_read_and_written_back_versioned() -> None:
    markers = FakeMarkers()
    table = markers.table
    assert isinstance(table, DictTable)
    table.put(3, marker_key(INV), 41)  # the bare offset earlier releases stored
    assert markers.last(INV, 3) == 41
    markers.record_all(INV, 3, [_event(INV, 42)])
    assert table.get(3, marker_key(INV)) == [MARKER_FORMAT.version, 42]
    assert markers.last(INV, 3) == 42
