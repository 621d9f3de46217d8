"""Exactness checks of a fault run, all from topic evidence, and the suite's summary table.

What is checked, against :class:`~fault_input.Expected`:

- **positions**: the last ``inventory.positions`` record per key equals the reference,
  field by field (a key the reference does not have must be all zero).
- **dead letters**: every record the oracle rejects is on ``dlq`` exactly once, found by
  its provenance headers (source topic, partition, offset), with the same reason; no
  other record is there. Counting on the topic, not in worker metrics, survives kills.
- **applied**: every accepted PO/order record's ``event_id`` is in its entity's final
  state, read from the table changelogs (what any worker restores), and each entity's
  ids equal the oracle's exactly, so no rejected record was applied either; each
  position's recent inventory event ids equal the accepted ones for that key. Ids are a
  set, so *once* is shown by the quantities: allocations and adjustments add up, and the
  whole entity view (ordered, received, ASN, allocated, shipped, revision, cancelled,
  acks, shipments, invoices, returns) and the positions must equal the oracle's; every
  other event replaces what it sets, so a second application changes nothing by design.
- **exceptions**: PO and order transitions equal the oracle's as a multiset (so also no
  duplicates). Position rules are excluded from that equality: ``OVERALLOCATION`` is
  evaluated once per batch, so whether a position dips below zero on the way depends on
  how deltas from different POs and orders interleave and are batched, which faults
  change. For them, no ``(exception_id, status)`` may appear twice, an id may not resolve
  before it opened, and at the end a position has an open ``OVERALLOCATION`` exactly when
  its reference ``available`` is negative.

Not a check but reported: the pauses in the output (:func:`output_pauses`), from the
Kafka timestamps of the ``inventory.positions`` records.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from supplyflow.app.settings import Settings
from supplyflow.app.topics import DLQ, EXCEPTIONS, POSITIONS
from supplyflow.codecs.quantity import parse_qty
from supplyflow.tables.order import OrderState
from supplyflow.tables.po import PoState
from supplyflow.tables.position import PositionState
from supplyflow.tables.reference import POSITION_FIELDS
from tests.integration.fault_input import Expected, entity_view, transition_key

__all__ = [
    "Pauses",
    "Report",
    "Row",
    "TopicTail",
    "Verifier",
    "milli_position",
    "output_pauses",
    "render_table",
]

_FETCH_BYTES: Final = 8 * 1024 * 1024
_FETCH_TIMEOUT_MS: Final = 500
#: Reading what a topic holds (a few 100k records at most) never takes this long.
_READ_S: Final = 120.0
_READ_ATTEMPTS: Final = 3
#: Problems listed per category in a failure message.
SHOWN: Final = 8


def milli_position(record: dict[str, Any]) -> dict[str, int]:
    return {name: parse_qty(record[name], signed=True) for name in POSITION_FIELDS}


class TopicTail:
    """All records of a topic: read from the start once, then only what was added.

    Each read uses a fresh consumer positioned where the previous read ended: a consumer
    kept across reads would sit on an event loop that does not run between them.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self._next: dict[TopicPartition, int] = {}

    async def read_new(self) -> list[Any]:
        """The records added since the last call, up to the end offsets at this call."""
        for attempt in range(1, _READ_ATTEMPTS + 1):
            try:
                return await asyncio.wait_for(self._read(), _READ_S)
            except TimeoutError:
                if attempt == _READ_ATTEMPTS:
                    raise AssertionError(
                        f"reading {self.topic} took over {_READ_S:.0f}s {attempt} times"
                    ) from None
        raise AssertionError("unreachable")

    async def _read(self) -> list[Any]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=_FETCH_BYTES,
        )
        await consumer.start()
        out: list[Any] = []
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, self._next.get(tp, 0))
            ends = await consumer.end_offsets(tps)
            fresh: dict[TopicPartition, int] = {}
            pending = [tp for tp in tps if self._next.get(tp, 0) < ends[tp]]
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=_FETCH_TIMEOUT_MS)
                for records in batch.values():
                    out.extend(records)
                for tp in pending:
                    fresh[tp] = await consumer.position(tp)
                pending = [tp for tp in pending if fresh[tp] < ends[tp]]
            self._next.update(fresh)
        finally:
            await consumer.stop()
        return out


@dataclass
class Report:
    """Problems found by one pass of the checks, per category (empty lists: exact)."""

    problems: dict[str, list[str]] = field(default_factory=dict)
    positions: int = 0
    dead_letters: int = 0
    transitions: int = 0

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def describe(self) -> str:
        parts = []
        for category, found in self.problems.items():
            if found:
                shown = "\n  ".join(found[:SHOWN])
                parts.append(f"{category}: {len(found)} problems, e.g.\n  {shown}")
        return "\n".join(parts) or "exact"


def _dead_letter_source(record: Any, prefix: str) -> tuple[tuple[str, int, int], str]:
    headers = {k: v.decode() for k, v in record.headers}
    topic = headers["supplyflow-source-topic"].removeprefix(prefix)
    where = (
        topic,
        int(headers["supplyflow-source-partition"]),
        int(headers["supplyflow-source-offset"]),
    )
    return where, headers["supplyflow-dlq-reason"]


def _unpack(value: bytes) -> Any:
    return msgpack.unpackb(value, strict_map_key=False)


class Verifier:
    """Reads the output topics and changelogs incrementally and checks them."""

    def __init__(self, settings: Settings, expected: Expected) -> None:
        self.settings = settings
        self.expected = expected
        self._runner = asyncio.Runner()
        # Every one of these topics has the configured partition count (tables included).
        names = {
            "positions": settings.topic(POSITIONS),
            "dlq": settings.topic(DLQ),
            "exceptions": settings.topic(EXCEPTIONS),
            **{t: f"{settings.app_id}-{t}-changelog" for t in ("po", "order", "position")},
        }
        self._tails = {
            kind: TopicTail(settings.bootstrap, topic, settings.partitions)
            for kind, topic in names.items()
        }
        self.positions: dict[str, dict[str, int]] = {}
        #: Kafka timestamp (ms) of every ``inventory.positions`` record, per partition
        self.output_times: dict[int, list[int]] = defaultdict(list)
        self.dead_letters: Counter[tuple[str, int, int]] = Counter()
        self.reasons: dict[tuple[str, int, int], str] = {}
        self.transitions: list[dict[str, Any]] = []
        self.states: dict[str, dict[str, Any]] = defaultdict(dict)

    def close(self) -> None:
        self._runner.close()

    def _read(self, name: str) -> list[Any]:
        return self._runner.run(self._tails[name].read_new())

    def check(self, *, full: bool = False) -> Report:
        """One pass; unless ``full``, stops after positions when they are not exact yet."""
        report = Report()
        for record in self._read("positions"):
            self.positions[record.key.decode()] = milli_position(orjson.loads(record.value))
            self.output_times[record.partition].append(record.timestamp)
        report.problems["positions"] = self._positions()
        report.positions = len(self.positions)
        if report.problems["positions"] and not full:
            return report
        for record in self._read("dlq"):
            where, reason = _dead_letter_source(record, self.settings.topic_prefix)
            self.dead_letters[where] += 1
            self.reasons[where] = reason
        report.problems["dead letters"] = self._dead_letters()
        report.dead_letters = sum(self.dead_letters.values())
        for name in ("po", "order", "position"):
            for record in self._read(name):
                key = _unpack(record.key)
                if not key.startswith("\x00"):  # progress markers live in the tables too
                    self.states[name][key] = _unpack(record.value)
        report.problems["applied"] = self._applied()
        self.transitions.extend(orjson.loads(r.value) for r in self._read("exceptions"))
        report.problems["exceptions"] = self._exceptions()
        report.transitions = len(self.transitions)
        return report

    def _positions(self) -> list[str]:
        expected, got = self.expected.positions, self.positions
        zero = dict.fromkeys(POSITION_FIELDS, 0)
        return [
            f"{key}: expected {expected.get(key, zero)}, got {got.get(key, zero)}"
            for key in sorted(expected.keys() | got.keys())
            if expected.get(key, zero) != got.get(key, zero)
        ]

    def _dead_letters(self) -> list[str]:
        problems = []
        wanted = self.expected.dead_letters
        for where in sorted(wanted.keys() | self.dead_letters.keys()):
            count = self.dead_letters.get(where, 0)
            if where not in wanted:
                problems.append(f"{where} dead-lettered ({self.reasons[where]}) but valid")
            elif count != 1:
                problems.append(f"{where} ({wanted[where]}) dead-lettered {count} times")
            elif self.reasons[where] != wanted[where]:
                problems.append(f"{where}: reason {self.reasons[where]}, not {wanted[where]}")
        return problems

    def _applied(self) -> list[str]:
        problems: list[str] = []
        for kind, wanted_states, decode in (
            ("po", self.expected.pos, PoState.from_wire),
            ("order", self.expected.orders, OrderState.from_wire),
        ):
            stored = self.states[kind]
            for key in sorted(wanted_states.keys() | stored.keys()):
                if key not in stored:
                    problems.append(f"{kind} {key}: not in state")
                    continue
                if key not in wanted_states:
                    problems.append(f"{kind} {key}: in state but never valid input")
                    continue
                state, wanted = decode(stored[key]), wanted_states[key]
                missing = set(wanted.event_ids) - set(state.event_ids)
                extra = set(state.event_ids) - set(wanted.event_ids)
                if missing or extra:
                    problems.append(
                        f"{kind} {key}: events not applied {sorted(missing)[:5]}, "
                        f"applied but not valid {sorted(extra)[:5]}"
                    )
                elif entity_view(kind, state) != entity_view(kind, wanted):
                    problems.append(
                        f"{kind} {key}: state {entity_view(kind, state)} "
                        f"!= oracle {entity_view(kind, wanted)}"
                    )
        stored = self.states["position"]
        for key in sorted(self.expected.inventory_ids.keys() | stored.keys()):
            ids = set(PositionState.from_wire(stored[key]).recent_ids) if key in stored else set()
            wanted_ids = self.expected.inventory_ids.get(key, set())
            if ids != wanted_ids:
                problems.append(
                    f"position {key}: inventory events not applied "
                    f"{sorted(wanted_ids - ids)[:5]}, not valid {sorted(ids - wanted_ids)[:5]}"
                )
        return problems

    def _exceptions(self) -> list[str]:
        problems = []
        seen = Counter((t["exception_id"], t["status"]) for t in self.transitions)
        problems += [f"{key} written {n} times" for key, n in seen.items() if n > 1]
        entities = [t for t in self.transitions if t["entity_type"] in ("po", "order")]
        got = Counter(transition_key(t) for t in entities)
        for found in sorted(got.keys() | self.expected.transitions.keys()):
            if got[found] != self.expected.transitions[found]:
                problems.append(
                    f"{found}: {got[found]} on the topic, oracle {self.expected.transitions[found]}"
                )
        open_now: dict[str, set[str]] = defaultdict(set)
        for t in self.transitions:
            if t["rule"] != "OVERALLOCATION":
                continue
            if t["status"] == "open":
                open_now[t["entity_id"]].add(t["exception_id"])
            elif t["exception_id"] in open_now[t["entity_id"]]:
                open_now[t["entity_id"]].discard(t["exception_id"])
            else:
                problems.append(f"OVERALLOCATION {t['exception_id']} resolved before it opened")
        for key, values in self.expected.positions.items():
            available, still_open = values["available"], sorted(open_now[key])
            if len(still_open) != int(available < 0):
                problems.append(f"{key}: available {available}, OVERALLOCATION open {still_open}")
        return problems


@dataclass(frozen=True)
class Pauses:
    """How long output stopped: the longest gap between consecutive output records (all
    partitions) and where it began (epoch s); for each restart, the seconds until every
    partition with output after it had produced again (None: another fault came first, or
    no partition had output after it)."""

    longest_s: float
    longest_at: float
    resumed_s: list[float | None]


def output_pauses(
    times_ms: dict[int, list[int]], restarts: list[float], faults: list[float]
) -> Pauses:
    """:class:`Pauses` from output record timestamps (ms, per partition, ascending), the
    restart times and the fault times (kills, stops, broker down; epoch s).

    The partitions the restarted worker owned resume last: the others never stopped, or
    stopped for a rebalance, which counts too.
    """
    every = sorted(t for times in times_ms.values() for t in times)
    gaps = [(b - a, a) for a, b in itertools.pairwise(every)]
    longest, at = max(gaps, default=(0, every[0] if every else 0))
    resumed: list[float | None] = []
    for restart in restarts:
        firsts = []
        for times in times_ms.values():
            i = bisect.bisect_right(times, restart * 1000)
            if i < len(times):
                firsts.append(times[i] / 1000)
        next_fault = min((f for f in faults if f > restart), default=None)
        resumed_at = max(firsts, default=None)
        if resumed_at is None or (next_fault is not None and resumed_at > next_fault):
            resumed.append(None)
        else:
            resumed.append(resumed_at - restart)
    return Pauses(longest / 1000, at / 1000, resumed)


@dataclass
class Row:
    """One line of the fault suite's summary table."""

    case: str
    seed: int
    sent: int = 0
    applied: int = 0
    dup_stale: int = 0
    dead_lettered: str = "-"
    faults: str = ""
    restarts: int = 0
    positions: str = "-"
    exceptions: str = "-"
    accounting: str = "-"
    seconds: float = 0.0
    #: the longest gap between output records, in seconds ("-" until verified)
    longest_gap: str = "-"
    #: per restart (of a worker or the broker), seconds until all output resumed ("-":
    #: the next fault came first)
    resumed: str = "-"
    result: str = "FAIL"
    #: what was done when (kills, joins, broker restarts), for the record
    notes: list[str] = field(default_factory=list)


_COLUMNS: Final = (
    ("case", "case"),
    ("seed", "seed"),
    ("sent", "events sent"),
    ("applied", "applied"),
    ("dup_stale", "dup/stale"),
    ("dead_lettered", "dead-lettered"),
    ("faults", "faults injected"),
    ("restarts", "restarts"),
    ("positions", "positions"),
    ("exceptions", "exceptions"),
    ("accounting", "every record once"),
    ("longest_gap", "longest output gap s"),
    ("resumed", "restart to output s"),
    ("seconds", "s"),
    ("result", "result"),
)


def render_table(rows: Iterable[Row]) -> str:
    """A plain text table, one row per case."""
    cells = [[title for _, title in _COLUMNS]]
    for row in rows:
        values = []
        for name, _ in _COLUMNS:
            value = getattr(row, name)
            values.append(f"{value:.0f}" if isinstance(value, float) else str(value))
        cells.append(values)
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
