"""No record can stop a partition: each hostile class, then a canary, through a real worker.

For every class the test sends the hostile record(s) to a partition, then a valid canary
to the same partition, and asserts that the canary is applied within
:data:`CANARY_S` (run with ``-s`` to see ``name: outcome; canary after X s`` per class),
that each hostile record is in ``dlq`` with the reason its class calls for (or applied,
where it is legal: then the positions it makes are exact, past 64 bits), and that no
dead letter is lost: ``dlq`` holds exactly the letters expected, once each.

A record that makes processing fail needs a bug to reach; there is none to use, so the
worker gets the test-only ``SUPPLYFLOW_TEST_FAIL_ON_ID`` (processing raises for that
``event_id``): the record must be dead-lettered ``processing_failed`` with the
exception's type and message.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Any, Final

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from supplyflow.agents.runtime.keys import partition_of
from supplyflow.agents.runtime.progress import marker_key
from supplyflow.app.kafka_clients import client_options
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import SampleRecord
from supplyflow.app.settings import Settings
from supplyflow.app.topics import read_topic
from supplyflow.codecs import parse_dead_letter
from supplyflow.codecs.dlq import TRUNCATED_HEADER

from .worker_http import http_json

pytestmark = pytest.mark.integration

WORKER_READY_S: Final = 90.0
#: The issue's bound: a canary behind a hostile record is applied within 10 s.
CANARY_S: Final = 10.0
DLQ_WAIT_S: Final = 60.0
PARTITIONS: Final = 4
LOC: Final = "DC9"
#: The largest quantity a record may carry (just under ``MAX_ABS_UNITS``), in thousandths.
MAX_MILLI: Final = 10**15 - 1
MAX_QTY: Final = "999999999999.999"
LINES: Final = 10_000
#: Maximal negative adjustments whose sum passes 2**63 thousandths.
ADJUSTMENTS: Final = 9_300
#: Events on one PO (event_ids kept per PO are bounded; the rest must still apply).
EVENTS_ON_ONE_PO: Final = 8_000


def _envelope(eid: str, type_: str, data: dict[str, Any], occurred_at: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": eid,
            "type": type_,
            "schema_version": 1,
            "source": "erp",
            "occurred_at": occurred_at,
            "data": data,
        }
    )


NOW: Final = "2026-11-27T10:15:00Z"


def _po(
    eid: str, po_id: str, lines: list[dict[str, Any]], *, occurred_at: str = NOW
) -> SampleRecord:
    data = {"po_id": po_id, "revision": 1, "supplier_id": "S", "location": LOC, "lines": lines}
    return SampleRecord(
        "po.events", po_id.encode(), _envelope(eid, "po.created", data, occurred_at)
    )


def _lines(sku: str | Callable[[int], str], qty: str = MAX_QTY) -> list[dict[str, Any]]:
    return [
        {"line_no": n, "sku": sku(n) if callable(sku) else sku, "qty": qty}
        for n in range(1, LINES + 1)
    ]


@dataclass
class Case:
    """One hostile class: what it sends and what must come of it."""

    name: str
    #: the input topic (contract name) and the partition hostile records and canary share
    topic: str
    partition: int
    #: key -> reasons a letter for that key may carry (empty: nothing dead-lettered)
    letters: dict[bytes, set[str]] = field(default_factory=dict)
    #: (sku, field) -> exact thousandths the position must show once applied
    positions: dict[tuple[str, str], int] = field(default_factory=dict)
    outcome: str = ""
    canary_s: float = 0.0


class Run:
    """Builds ids for one test run, the canaries, and sends records."""

    def __init__(self, settings: Settings, run: str, bootstrap: str) -> None:
        self.settings = settings
        self.run = run
        self.bootstrap = bootstrap
        self.seq = 0

    def id(self, what: str) -> str:
        self.seq += 1
        return f"{self.run}-{what}-{self.seq}"

    def key_in(self, partition: int, what: str) -> str:
        """A fresh id whose key's partition is ``partition``."""
        while True:
            candidate = self.id(what)
            if partition_of(candidate.encode(), PARTITIONS) == partition:
                return candidate

    def send(self, records: list[SampleRecord]) -> None:
        asyncio.run(produce_records(self.settings, records))

    def canary(self, worker: WorkerProcess, case: Case) -> float:
        """Send a valid canary to ``case``'s partition; seconds until it is applied."""
        if case.topic == "po.events":
            po_id = self.key_in(case.partition, "canary")
            self.send([_po(self.id("e"), po_id, [{"line_no": 1, "sku": "C", "qty": 1}])])
            path = f"/pos/{po_id}"
        else:
            sku = self.sku_in(case.partition, "canary")
            self.send([_adjust(self.id("e"), sku, "1")])
            path = f"/positions/{sku}/{LOC}"
        sent = time.monotonic()
        while time.monotonic() - sent < CANARY_S:
            status, _ = worker.get(path)
            if status == 200:
                return time.monotonic() - sent
            time.sleep(0.05)
        pytest.fail(f"{case.name}: the canary was not applied within {CANARY_S} s")

    def sku_in(self, partition: int, what: str) -> str:
        while True:
            sku = self.id(what)
            if partition_of(f"{sku}@{LOC}".encode(), PARTITIONS) == partition:
                return sku


def _adjust(eid: str, sku: str, delta: str) -> SampleRecord:
    data = {"sku": sku, "location": LOC, "delta": delta, "reason": "count"}
    return SampleRecord(
        "inventory.events", f"{sku}@{LOC}".encode(), _envelope(eid, "inventory.adjusted", data, NOW)
    )


def _kcat(
    bootstrap: str, topic: str, partition: int, key: bytes, header: bytes, value: bytes
) -> None:
    """Produce one record whose header key is ``header`` (bytes no Python client sends)."""
    subprocess.run(
        [b"kcat", b"-P", b"-b", bootstrap.encode(), b"-t", topic.encode(),
         b"-p", str(partition).encode(), b"-k", key, b"-H", header + b"=v"],
        input=value,
        check=True,
        timeout=30,
    )  # fmt: skip


def _too_large_for_dlq(run: Run) -> tuple[Case, Callable[[], None]]:
    """An invalid record with a 2 MB header: its letter is larger than ``dlq`` takes."""
    po_id = run.id("PO")
    big = SampleRecord("po.events", po_id.encode(), b"{not json", [("x-blob", b"b" * 2_000_000)])
    case = Case(
        "invalid record with a 2 MB header", "po.events", partition_of(big.key or b"", PARTITIONS)
    )
    case.letters[po_id.encode()] = {"too_large"}
    return case, partial(run.send, [big])


def _cases(run: Run, fail_on: str) -> list[tuple[Case, Callable[[], None]]]:
    """Every hostile class: the case and how to send its hostile records."""
    out: list[tuple[Case, Callable[[], None]]] = []

    def po_case(name: str, reasons: set[str], record: SampleRecord) -> None:
        assert record.key is not None
        case = Case(name, "po.events", partition_of(record.key, PARTITIONS))
        case.letters[record.key] = reasons
        out.append((case, partial(run.send, [record])))

    po_id = run.id("PO")
    po_case(
        "occurred_at 9999-12-31T23:59:59-14:00",
        {"schema"},
        _po(run.id("e"), po_id, _lines("X")[:1], occurred_at="9999-12-31T23:59:59-14:00"),
    )
    marker = marker_key(run.settings.topic("po.events"))
    po_case("po_id = progress marker key", {"schema"}, _po(run.id("e"), marker, _lines("X")[:1]))
    po_case(
        "record that makes processing raise",
        {"processing_failed"},
        _po(fail_on, run.id("PO"), _lines("X")[:1]),
    )

    # A header key that is not UTF-8.
    bad_header_po = run.id("PO")
    case = Case(
        "header key not UTF-8", "po.events", partition_of(bad_header_po.encode(), PARTITIONS)
    )
    case.letters[bad_header_po.encode()] = {"invalid_header"}
    record = _po(run.id("e"), bad_header_po, _lines("X")[:1])
    send = partial(
        _kcat,
        run.bootstrap,
        run.settings.topic("po.events"),
        case.partition,
        bad_header_po.encode(),
        b"\xff\xfe-origin",
        record.value,
    )
    out.append((case, send))

    # Sums past 64 bits: legal, applied, positions exact.
    sku = run.id("SKU")
    first = run.id("PO")
    partition = partition_of(first.encode(), PARTITIONS)
    two = [_po(run.id("e"), po, _lines(sku)) for po in (first, run.key_in(partition, "PO"))]
    case = Case("two 10,000-line POs at the largest quantity", "po.events", partition)
    case.positions[(sku, "inbound")] = 2 * LINES * MAX_MILLI
    out.append((case, partial(run.send, two)))

    sku = run.id("SKU")
    po_id = run.id("PO")
    cancelled = [
        _po(run.id("e"), po_id, _lines(sku)),
        SampleRecord(
            "po.events",
            po_id.encode(),
            _envelope(run.id("e"), "po.cancelled", {"po_id": po_id, "revision": 2}, NOW),
        ),
    ]
    case = Case(
        "maximal PO then its cancellation", "po.events", partition_of(po_id.encode(), PARTITIONS)
    )
    case.positions[(sku, "inbound")] = 0
    out.append((case, partial(run.send, cancelled)))

    sku = run.id("SKU")
    adjustments = [_adjust(run.id("e"), sku, f"-{MAX_QTY}") for _ in range(ADJUSTMENTS)]
    case = Case(
        f"{ADJUSTMENTS:,} maximal negative adjustments",
        "inventory.events",
        partition_of(f"{sku}@{LOC}".encode(), PARTITIONS),
    )
    case.positions[(sku, "on_hand")] = -ADJUSTMENTS * MAX_MILLI
    out.append((case, partial(run.send, adjustments)))

    # Many events on one PO: event ids kept per PO are bounded, all of them apply.
    po_id = run.id("PO")
    events = [_po(run.id("e"), po_id, [{"line_no": 1, "sku": "E", "qty": 1}])]
    events += [
        SampleRecord(
            "po.events",
            po_id.encode(),
            _envelope(
                run.id("e"),
                "po.acknowledged",
                {"po_id": po_id, "revision": 1, "system": "erp", "status": "accepted"},
                NOW,
            ),
        )
        for _ in range(EVENTS_ON_ONE_PO)
    ]
    case = Case(
        f"{EVENTS_ON_ONE_PO:,} events on one PO",
        "po.events",
        partition_of(po_id.encode(), PARTITIONS),
    )
    out.append((case, partial(run.send, events)))

    # One 10,000-line PO with long codes: the record fits the input topic (about 860 KB),
    # its state would not fit MAX_STATE_BYTES (about 1.23 MB stored).
    po_id = run.id("PO")
    big = _po(run.id("e"), po_id, _lines(lambda n: f"{'S' * 44}{n:06d}", qty="1"))
    assert len(big.value) < 1_000_000
    case = Case(
        "10,000-line PO with long codes", "po.events", partition_of(po_id.encode(), PARTITIONS)
    )
    case.letters[po_id.encode()] = {"entity_too_large"}
    out.append((case, partial(run.send, [big])))

    out.append(_too_large_for_dlq(run))
    return out


def _thousandths(value: Any) -> int:
    return int(Decimal(str(value)) * 1000)


def _position_when(worker: WorkerProcess, sku: str, name: str, milli: int) -> dict[str, Any]:
    """The position of ``sku`` once its ``name`` is ``milli`` (or after ``CANARY_S``)."""
    deadline = time.monotonic() + CANARY_S
    while True:
        status, body = worker.get(f"/positions/{sku}/{LOC}")
        # Sums past 15 digits are exact number text: parsed as decimals, not floats.
        position = json.loads(body, parse_float=Decimal)
        done = status == 200 and _thousandths(position[name]) == milli
        if done or time.monotonic() > deadline:
            assert status == 200, position
            return dict(position)
        time.sleep(0.1)


def _settings(bootstrap: str, names: dict[str, str]) -> Settings:
    return Settings(
        bootstrap=bootstrap,
        topic_prefix=names["prefix"],
        app_id=names["app_id"],
        partitions=PARTITIONS,
    )


def _check(
    worker: WorkerProcess, settings: Settings, cases: list[tuple[Case, Callable[[], None]]]
) -> None:
    """Send each case and its canary; then every letter once, positions exact."""
    run = Run(settings, settings.app_id, settings.bootstrap)
    for case, send in cases:
        send()
        case.canary_s = run.canary(worker, case)

    expected = {key: case for case, _ in cases for key in case.letters}
    asyncio.run(
        read_topic(
            settings.bootstrap, settings.topic("dlq"), expected=len(expected), wait_s=DLQ_WAIT_S
        )
    )
    time.sleep(1.0)  # a letter sent twice would be there by now: read again, to the end
    raw = asyncio.run(read_topic(settings.bootstrap, settings.topic("dlq"), wait_s=DLQ_WAIT_S))
    letters: dict[bytes, list[tuple[dict[str, Any], dict[str, bytes]]]] = {}
    for message in raw:
        letters.setdefault(message.key, []).append(
            (parse_dead_letter(message.value), dict(message.headers))
        )
    assert set(letters) == set(expected), "a letter is missing or unexpected"

    for case, _ in cases:
        outcomes = []
        for key, reasons in case.letters.items():
            ((body, headers),) = letters[key]  # exactly once
            assert body["reason"] in reasons, (case.name, body["reason"], body["detail"])
            assert body["source"]["topic"] == settings.topic(case.topic)
            assert body["source"]["partition"] == case.partition
            outcomes.append(f"dead-lettered {body['reason']}")
            if body["reason"] == "processing_failed":
                assert body["detail"].startswith("InjectedFaultError: "), body["detail"]
            if TRUNCATED_HEADER in headers:
                outcomes[-1] += " (truncated)"
        for (sku, name), milli in case.positions.items():
            position = _position_when(worker, sku, name, milli)
            assert _thousandths(position[name]) == milli, (case.name, name, position)
            outcomes.append(f"applied, {name} {position[name]} exact")
        case.outcome = "; ".join(outcomes) or "applied"
        print(f"{case.name}: {case.outcome}; canary after {case.canary_s:.2f} s")


def test_no_hostile_record_stops_its_partition(
    bootstrap: str, names: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = _settings(bootstrap, names)
    fail_on = f"{names['app_id']}-fail"
    worker = start_worker(SUPPLYFLOW_TEST_FAIL_ON_ID=fail_on)
    worker.wait_healthy(WORKER_READY_S)
    cases = _cases(Run(settings, names["app_id"], bootstrap), fail_on)
    _check(worker, settings, cases)
    (too_large,) = [case for case, _ in cases if "2 MB header" in case.name]
    assert too_large.outcome.endswith("(truncated)"), too_large.outcome

    metrics = worker.metrics()
    quarantined = sum(
        v for (name, _), v in metrics.items() if name == "supplyflow_records_quarantined_total"
    )
    assert quarantined == 1
    stalled = [k for k, v in metrics.items() if k[0] == "supplyflow_partition_stalled" and v]
    assert stalled == []
    status, health = http_json(worker, "/health")
    assert (status, health["status"], health["degraded"]) == (200, "running", [])


#: How long a stall must last before /health says degraded, in the stall test.
STALL_AFTER_S: Final = 2
#: Bound on seeing the stall (threshold + retries) and on the recovery after the fix.
STALL_SEEN_S: Final = 30.0


async def _positions_topic(settings: Settings, max_message_bytes: int, *, create: bool) -> None:
    """Create ``inventory.positions`` with a record limit, or set the limit of it."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        name = settings.topic("inventory.positions")
        config = {"max.message.bytes": str(max_message_bytes)}
        if create:
            await admin.create_topics(
                [
                    NewTopic(
                        name, PARTITIONS, 1, topic_configs={**config, "cleanup.policy": "compact"}
                    )
                ]
            )
        else:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, config)])
    finally:
        await admin.close()


def _stalled(worker: WorkerProcess, topic: str, partition: int) -> float | None:
    labels = (("partition", str(partition)), ("topic", topic))
    return worker.metrics().get(("supplyflow_partition_stalled", labels))


def test_a_partition_kafka_refuses_to_take_is_degraded_then_recovers(
    bootstrap: str, names: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    """An infrastructure fault (an output topic configured too small for positions): the
    record is not dead-lettered but retried; after SUPPLYFLOW_STALL_AFTER the partition is
    degraded on /health and in the gauge, while the probes stay 200; once the topic takes
    the records, the position is applied and the partition is healthy again."""
    settings = _settings(bootstrap, names)
    asyncio.run(_positions_topic(settings, 64, create=True))
    worker = start_worker(SUPPLYFLOW_STALL_AFTER=f"{STALL_AFTER_S}s")
    worker.wait_healthy(WORKER_READY_S)
    run = Run(settings, names["app_id"], bootstrap)
    sku = run.id("SKU")
    partition = partition_of(f"{sku}@{LOC}".encode(), PARTITIONS)
    run.send([_adjust(run.id("e"), sku, "5")])

    deadline = time.monotonic() + STALL_SEEN_S
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, health = http_json(worker, "/health")
        if health["status"] == "degraded":
            break
        time.sleep(0.2)
    assert (status, health["status"]) == (200, "degraded"), health
    (stall,) = health["degraded"]
    assert (stall["topic"], stall["partition"]) == ("inventory.events", partition)
    assert stall["last_error"]["type"] == "MessageSizeTooLargeError", stall
    assert stall["stall_after_s"] == STALL_AFTER_S
    # Probes do not restart or unroute a worker whose broker refuses its writes.
    assert worker.get("/health/live")[0] == 200
    assert worker.get("/health/ready")[0] == 200
    assert _stalled(worker, "inventory.events", partition) == 1
    page = worker.get("/")[1].decode()
    assert 'id="degraded"' in page
    # Not the record's fault: nothing dead-lettered.
    assert asyncio.run(read_topic(bootstrap, settings.topic("dlq"), wait_s=2)) == []

    asyncio.run(_positions_topic(settings, 1024 * 1024, create=False))
    deadline = time.monotonic() + STALL_SEEN_S
    while time.monotonic() < deadline:
        if worker.get(f"/positions/{sku}/{LOC}")[0] == 200:
            break
        time.sleep(0.2)
    position = _position_when(worker, sku, "on_hand", 5000)
    assert _thousandths(position["on_hand"]) == 5000
    status, health = http_json(worker, "/health")
    assert (status, health["status"], health["degraded"]) == (200, "running", [])
    assert _stalled(worker, "inventory.events", partition) == 0
    print(f"stalled partition inventory.events[{partition}]: degraded, then recovered")
