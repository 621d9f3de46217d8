"""Timestamp order: a total order independent of arrival, held until every source is read
past it, exact across a restart."""

from __future__ import annotations

import random

from supplyflow.agents.runtime.ordering import ApplyOrder, lane_of
from supplyflow.agents.runtime.records import Record
from tests.agents.runtime.test_progress import DictTable

IN = "t.po.events"
ROUTED = "t-po.events-routed"
N = 3
OWNER = 0


class Source:
    """One source partition's records for the owner, as the owner reads them: its own
    from the input topic, the others' forwarded through the routed topic."""

    def __init__(self) -> None:
        self.routed_offset = 0

    def record(self, source: int, offset: int, t_ms: int | None) -> Record:
        timestamp = None if t_ms is None else t_ms / 1000
        if source == OWNER:
            return Record(IN, OWNER, offset, b"PO-1", b"{}", [], timestamp)
        self.routed_offset += 1
        return Record(
            ROUTED, OWNER, self.routed_offset, b"PO-1", b"{}", [], timestamp, (source, offset)
        )


def _order(table: DictTable, lateness_ms: int = 0) -> ApplyOrder:
    return ApplyOrder(topics=(IN, ROUTED), partitions=N, lateness_ms=lateness_ms, table=table)


def _ids(records: list[Record]) -> list[tuple[str, int]]:
    return [(r.stream, r.offset) for r in records]


def test_records_apply_in_timestamp_order_once_every_source_is_read_past_them() -> None:
    order, src = _order(DictTable()), Source()
    order.hold(
        OWNER,
        [
            src.record(1, 0, 1005),
            src.record(0, 0, 1010),
            src.record(2, 0, 1001),
            src.record(1, 1, 1020),
        ],
    )
    # Source 2 was read up to 1001 only: nothing after (1001, 2) can be applied yet.
    assert _ids(order.release(OWNER, {})) == [("t2", 0)]
    assert order.held(OWNER) == 3
    # Every source known to be read up to 1015: all but source 1's record at 1020.
    released = order.release(OWNER, {0: 1015, 1: 1015, 2: 1015})
    assert _ids(released) == [("t1", 0), ("t0", 0)]
    assert [r.partition for r in released] == [OWNER, OWNER]
    assert released[0].origin == (1, 0)
    assert released[1].origin is None
    assert _ids(order.release(OWNER, {0: 2000, 1: 2000, 2: 2000})) == [("t1", 1)]


def test_a_source_never_heard_of_holds_everything_back() -> None:
    order, src = _order(DictTable()), Source()
    order.hold(OWNER, [src.record(1, 0, 1000), src.record(0, 0, 1000)])
    assert order.release(OWNER, {0: 5000, 1: 5000}) == []  # partition 2: unknown
    assert len(order.release(OWNER, {0: 5000, 1: 5000, 2: 1001})) == 2


def test_ties_break_by_source_partition_then_offset() -> None:
    order, src = _order(DictTable()), Source()
    order.hold(
        OWNER,
        [src.record(2, 7, 1000), src.record(1, 3, 1000), src.record(0, 9, 1000)],
    )
    order.hold(OWNER, [src.record(1, 4, 1000)])
    released = order.release(OWNER, dict.fromkeys(range(N), 1001))
    assert _ids(released) == [("t0", 9), ("t1", 3), ("t1", 4), ("t2", 7)]


def test_idle_partitions_hold_back_only_by_the_lateness() -> None:
    order, src = _order(DictTable(), lateness_ms=100), Source()
    order.hold(OWNER, [src.record(1, 0, 1000)])
    # Partitions 0 and 2 are read to their end up to 1050: a record created before 950
    # could still arrive there (lateness 100).
    assert order.release(OWNER, {0: 1050, 1: 1050, 2: 1050}) == []
    assert _ids(order.release(OWNER, {0: 1101, 1: 1101, 2: 1101})) == [("t1", 0)]


def test_a_source_keeps_its_offset_order_when_its_clock_steps_back() -> None:
    order, src = _order(DictTable()), Source()
    order.hold(
        OWNER,
        [src.record(1, 0, 1000), src.record(1, 1, 900), src.record(2, 0, 950)],
    )
    released = order.release(OWNER, dict.fromkeys(range(N), 2000))
    # 1@1 (900) counts as 1000, after 1@0: a lane's offsets only grow.
    assert _ids(released) == [("t2", 0), ("t1", 0), ("t1", 1)]


def test_a_record_read_twice_is_held_once() -> None:
    order, src = _order(DictTable()), Source()
    order.hold(OWNER, [src.record(1, 0, 1000), src.record(1, 0, 1000)])
    assert _ids(order.release(OWNER, dict.fromkeys(range(N), 2000))) == [("t1", 0)]


def test_a_late_record_is_applied_when_read_and_counted() -> None:
    order, src = _order(DictTable()), Source()
    order.hold(OWNER, [src.record(1, 0, 1000), src.record(1, 1, 1400)])
    assert len(order.release(OWNER, dict.fromkeys(range(N), 1500))) == 2
    # Created before partition 2 was read up to 1500, and after 1@1 was applied.
    order.hold(OWNER, [src.record(2, 0, 1200)])
    assert _ids(order.release(OWNER, dict.fromkeys(range(N), 1500))) == [("t2", 0)]
    assert order.take_late(OWNER) == 1
    assert order.take_late(OWNER) == 0


def test_applied_up_to_stops_before_the_earliest_record_held() -> None:
    order, src = _order(DictTable()), Source()
    assert order.applied_up_to(OWNER, 5000) == 5000
    order.hold(OWNER, [src.record(1, 0, 1200), src.record(2, 0, 1100)])
    assert order.applied_up_to(OWNER, 5000) == 1100
    assert order.applied_up_to(OWNER, None) is None


def _scenario(seed: int) -> list[tuple[int, int, int]]:
    """(source, source offset, t) of a round-robin producer: t grows, ties included."""
    rng = random.Random(seed)
    offsets = [0] * N
    out = []
    t = 1000
    for i in range(300):
        t += rng.choice((0, 0, 1, 3))
        source = i % N
        out.append((source, offsets[source], t))
        offsets[source] += 1
    return out


def _arrivals(scenario: list[tuple[int, int, int]], seed: int) -> list[tuple[int, int, int]]:
    """The scenario interleaved as the owner might read it: each source in order."""
    rng = random.Random(seed)
    queues = [[r for r in scenario if r[0] == q] for q in range(N)]
    out = []
    while any(queues):
        q = rng.choice([i for i in range(N) if queues[i]])
        take = rng.randint(1, 5)
        out.extend(queues[q][:take])
        del queues[q][:take]
    return out


def _run(
    order: ApplyOrder,
    arrivals: list[tuple[int, int, int]],
    applied: list[tuple[str, int]],
) -> dict[str, int]:
    """Read ``arrivals`` in batches of 7, releasing after each with what each source
    was read up to (its last t), and stage: as the agent does. Returns the last offset
    read per topic (the progress markers)."""
    markers: dict[str, int] = {}
    src = Source()
    read_up_to: dict[int, int] = {}
    for start in range(0, len(arrivals), 7):
        batch = []
        for source, offset, t in arrivals[start : start + 7]:
            record = src.record(source, offset, t)
            markers[record.topic] = record.offset
            batch.append(record)
            read_up_to[source] = t
        floors = order.floors(OWNER)
        order.hold(OWNER, batch)
        for record in order.release(OWNER, read_up_to):
            if record.offset > floors.get(record.stream, -1):
                applied.append((record.stream, record.offset))
        order.stage(OWNER)
    return markers


def test_the_order_is_the_same_whatever_the_arrival_and_across_a_restart() -> None:
    scenario = _scenario(7)
    expected = [(lane_of(s), o) for s, o, t in sorted(scenario, key=lambda r: (r[2], r[0], r[1]))]
    everything_read = dict.fromkeys(range(N), 10000)
    for seed in range(5):
        arrivals = _arrivals(scenario, seed)
        applied: list[tuple[str, int]] = []
        table = DictTable()
        first = _order(table)
        cut = len(arrivals) // 2
        markers = _run(first, arrivals[:cut], applied)
        assert first.held(OWNER) > 0, "the cut must leave records held back"
        # Killed here: a new process reads the stored state and resumes where it says.
        second = _order(table)
        resume = second.resume(OWNER, {IN: markers[IN], ROUTED: markers[ROUTED]})
        starts = {topic: offset for topic, offset in resume.items() if offset is not None}
        assert starts[IN] < markers[IN] or starts[ROUTED] < markers[ROUTED]
        src = Source()
        replay = []
        for source, offset, t in arrivals:
            record = src.record(source, offset, t)
            if record.offset > starts[record.topic]:
                replay.append((source, offset, t))
        assert len(replay) > len(arrivals) - cut, "some records applied are read again"
        _run(second, replay, applied)
        for record in second.release(OWNER, everything_read):
            applied.append((record.stream, record.offset))
        assert applied == expected, f"arrival seed {seed}"


def test_the_records_held_back_stay_in_kafka_and_are_read_again() -> None:
    table = DictTable()
    order, src = _order(table), Source()
    order.hold(OWNER, [src.record(1, 0, 1000), src.record(2, 0, 1100), src.record(0, 5, 1200)])
    assert len(order.release(OWNER, dict.fromkeys(range(N), 1050))) == 1
    order.stage(OWNER)
    # Routed offset 1 (1@0) is applied, routed 2 (2@0) and input 5 are held.
    assert order.held_from(OWNER, ROUTED) == 1
    assert order.held_from(OWNER, IN) == 4
    assert _order(table).resume(OWNER, {IN: 5, ROUTED: 2}) == {IN: 4, ROUTED: 1}
    assert order.release(OWNER, dict.fromkeys(range(N), 2000))
    order.stage(OWNER)
    assert order.held_from(OWNER, ROUTED) is None
    assert _order(table).resume(OWNER, {IN: 5, ROUTED: 2}) == {IN: 5, ROUTED: 2}
