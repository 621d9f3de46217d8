"""Quarantine through the real input agent and PO actor: a record that makes processing
fail is dead-lettered once (``processing_failed``), where it is applied, with no partial
writes, and every other record is applied; across a takeover its letter goes out once.

And the whole agent path fuzzed: valid-schema records at the edges through the real input
agents and PO/order actors never raise, and each ends applied or dead-lettered."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, Final

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from supplyflow.agents import dead_letters
from supplyflow.agents.dead_letters import SentLetters
from supplyflow.agents.entities import EntityActor, EntityKind
from supplyflow.agents.ingest import InputAgent
from supplyflow.agents.metrics import Metrics
from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.exceptions import StateWriteError
from supplyflow.agents.runtime.keys import partition_of
from supplyflow.agents.runtime.progress import ProgressMarkers
from supplyflow.agents.runtime.quarantine import RetryPolicy, process_or_isolate
from supplyflow.agents.runtime.records import Record
from supplyflow.agents.runtime.routing import ORIGIN_HEADER
from supplyflow.app.runtime_config import runtime_config
from supplyflow.app.sample import OK, sample_scenario
from supplyflow.app.settings import Settings
from supplyflow.app.topics import DLQ, PO_EVENTS
from supplyflow.app.worker import ORDER_KIND, PO_KIND
from supplyflow.codecs import REASONS, parse_dead_letter
from supplyflow.codecs.packing import pack, unpack
from supplyflow.tables.exceptions import Rules, Transition
from supplyflow.tables.po import PoState

POISON = "e-poison"
CONFIG = dataclasses.replace(
    runtime_config(Settings(bootstrap="unused:9092", topic_prefix="t.", app_id="t", partitions=4)),
    fail_on_event_id=POISON,
)
INPUT = CONFIG.topic(PO_EVENTS)
ROUTED = CONFIG.routed_topic(PO_EVENTS)
DLQ_TOPIC = CONFIG.topic(DLQ)
FAST = RetryPolicy(backoff_s=(0.0,))


class Store:
    """A table's local store and changelog (survive a crash), behind TableIO's interface."""

    def __init__(self) -> None:
        self.local: dict[tuple[int, str], bytes] = {}
        self.changelog: list[tuple[int, str, Any]] = []
        self.staged: dict[tuple[int, str], bytes] = {}
        #: raise this on the next changelog write (then cleared)
        self.fail_next: BaseException | None = None
        self.table = None

    def get(self, partition: int, key: str) -> Any:
        raw = self.staged.get((partition, key), self.local.get((partition, key)))
        return None if raw is None else unpack(raw)

    def put(self, partition: int, key: str, value: Any) -> None:
        self.staged[(partition, key)] = pack(value)

    def put_packed(self, partition: int, key: str, packed: bytes) -> None:
        self.staged[(partition, key)] = packed

    def discard(self) -> None:
        self.staged.clear()

    def take_staged(self) -> dict[tuple[int, str], bytes]:
        staged, self.staged = self.staged, {}
        return staged

    async def send_to_changelog(self, staged: dict[tuple[int, str], bytes]) -> dict[int, int]:
        error, self.fail_next = self.fail_next, None
        if error is not None:
            raise error
        self.changelog.extend((p, k, unpack(v)) for (p, k), v in staged.items())
        return {}

    def write_store(self, staged: dict[tuple[int, str], bytes], offsets: Any) -> None:
        self.local.update(staged)


class Kafka:
    """The output topics: what each worker's outbox flushed."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def topic(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.sent if r["topic"] == name]


class FakeOutbox:
    def __init__(self, kafka: Kafka) -> None:
        self.kafka = kafka
        self.queued: list[dict[str, Any]] = []

    def add(
        self,
        topic: str,
        partition: int,
        key: Any,
        value: Any,
        headers: Any = None,
        *,
        timestamp_ms: int | None = None,
        on_acked: Callable[[], None] | None = None,
    ) -> None:
        self.queued.append(
            {
                "topic": topic,
                "partition": partition,
                "key": key,
                "value": value,
                "headers": list(headers or ()),
                "on_acked": on_acked,
            }
        )

    def add_keyed(
        self, topic: str, partitions: int, key: Any, value: Any, headers: Any = None
    ) -> None:
        self.add(topic, 0, key, value, headers)

    def discard(self) -> None:
        self.queued.clear()

    async def flush(self) -> dict[tuple[str, int], int]:
        """Kafka takes everything queued: then each record's ``on_acked`` runs."""
        queued, self.queued = self.queued, []
        for record in queued:
            on_acked = record.pop("on_acked")
            self.kafka.sent.append(record)
            if on_acked is not None:
                on_acked()
        return {}


class FakeEmitter:
    async def send(self, partition: int, transitions: list[Transition], outbox: Any) -> None:
        return None


def _worker(
    store: Store, kafka: Kafka, letters: SentLetters | None = None, config: Any = CONFIG
) -> InputAgent:
    """A (re)started worker on ``store``: a fresh agent, actor and outbox."""
    checkpoint = Checkpoint(
        FakeOutbox(kafka),  # type: ignore[arg-type]  # Outbox's interface
        store,  # type: ignore[arg-type]  # TableIO's interface
        ProgressMarkers(store, CONFIG.kafka),
    )
    actor = EntityActor(
        kind=PO_KIND,
        checkpoint=checkpoint,
        deltas_topic="t-position-deltas",
        emitter=FakeEmitter(),  # type: ignore[arg-type]  # sends nothing: no rules fire
        rules=Rules(),
        partitions=CONFIG.partitions,
        metrics=Metrics(CollectorRegistry(), app_id="t", version="0"),
    )
    return InputAgent(
        config,
        topic=PO_EVENTS,
        handler=actor,
        metrics=actor.metrics,
        checkpoint=checkpoint,
        letters=letters,
    )


def _created(partition: int, offset: int, po_id: str, eid: str) -> Record:
    lines = [{"line_no": 1, "sku": "SKU-1", "qty": 10}]
    value = orjson.dumps(
        {
            "event_id": eid,
            "type": "po.created",
            "schema_version": 1,
            "source": "erp",
            "occurred_at": "2026-11-27T10:00:00Z",
            "data": {
                "po_id": po_id,
                "revision": 1,
                "supplier_id": "S-1",
                "location": "DC1",
                "lines": lines,
            },
        }
    )
    return Record(INPUT, partition, offset, po_id.encode(), value, [], 1.0)


async def _run(agent: InputAgent, records: list[Record]) -> int:
    """As the reader drives the agent: a fresh start drops what was queued."""
    agent.discard()
    return await process_or_isolate(
        records,
        agent.process_batch,
        discard=agent.discard,
        quarantine=agent.quarantine,
        policy=FAST,
    )


def _letters(kafka: Kafka) -> list[tuple[int, Any]]:
    return [(r["partition"], parse_dead_letter(r["value"])) for r in kafka.topic(DLQ_TOPIC)]


def _source(letter: dict[str, Any]) -> tuple[str, int, int]:
    source = letter["source"]
    return source["topic"], source["partition"], source["offset"]


def _event_ids(store: Store, partition: int, po_id: str) -> list[str]:
    return list(PoState.from_wire(store.get(partition, po_id)).event_ids)


def _counter(agent: InputAgent, name: str, **labels: str) -> float:
    value = agent.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_the_failing_record_is_dead_lettered_and_the_rest_applied() -> None:
    store, kafka = Store(), Kafka()
    agent = _worker(store, kafka)
    batch = [
        _created(2, 0, "PO-1", "e-0"),
        _created(2, 1, "PO-3", POISON),
        _created(2, 2, "PO-4", "e-2"),
        _created(2, 3, "PO-3", "e-3"),  # the same PO, valid: applied after the poison
    ]
    assert await _run(agent, batch) == 1
    ((partition, letter),) = _letters(kafka)
    assert partition == 2
    assert letter["reason"] == "processing_failed"
    assert letter["detail"] == f"InjectedFaultError: injected failure for event_id {POISON!r}"
    assert _source(letter) == (INPUT, 2, 1)
    assert _event_ids(store, 2, "PO-1") == ["e-0"]
    assert _event_ids(store, 2, "PO-3") == ["e-3"]
    assert _event_ids(store, 2, "PO-4") == ["e-2"]
    assert agent.markers.last(INPUT, 2) == 3
    # No failed attempt left a write: the changelog never saw the poison's event.
    assert all(
        POISON not in PoState.from_wire(v).event_ids
        for _, k, v in store.changelog
        if not k.startswith("\x00")
    )
    assert _counter(agent, "supplyflow_records_quarantined_total", topic=PO_EVENTS) == 1
    assert (
        _counter(
            agent, "supplyflow_dead_letters_total", topic=PO_EVENTS, reason="processing_failed"
        )
        == 1
    )
    # Deltas only for what was applied: PO-1, PO-4, PO-3 (e-3).
    deltas = kafka.topic("t-position-deltas")
    assert deltas
    assert all(POISON.encode() not in d["value"] for d in deltas)


async def test_a_record_is_forwarded_or_dead_lettered_never_both() -> None:
    """A failing record that arrives in a partition that does not own its key is
    forwarded there (it fails nowhere else), and dead-lettered by its owner, in the
    owner's dlq partition, with the partition and offset it was produced at."""
    store, kafka = Store(), Kafka()
    assert await _run(_worker(store, kafka), [_created(0, 0, "PO-1", POISON)]) == 0
    (forward,) = kafka.topic(ROUTED)
    assert forward["partition"] == 2
    assert _letters(kafka) == []
    routed = Record(ROUTED, 2, 0, forward["key"], forward["value"], forward["headers"], 1.0)
    owner = _worker(Store(), kafka)
    canary = _created(2, 0, "PO-3", "e-canary")
    assert await _run(owner, [routed, canary]) == 1
    ((partition, letter),) = _letters(kafka)
    assert partition == 2  # the owner's
    assert _source(letter) == (INPUT, 0, 0)
    assert len(kafka.topic(ROUTED)) == 1  # forwarded once
    assert owner.markers.last(ROUTED, 2) == 0
    assert owner.markers.last(INPUT, 2) == 0
    assert dict(forward["headers"])[ORIGIN_HEADER] == b"0:0"


@pytest.fixture
def dlq_tail(monkeypatch: pytest.MonkeyPatch) -> Kafka:
    """The dead-letter read-back sees what the workers sent to ``dlq``."""
    kafka = Kafka()

    async def read_tail(
        options: Mapping[str, Any],
        topic: str,
        partition: int,
        each: Callable[[Any], None],
        **_: Any,
    ) -> None:
        for record in kafka.topic(topic):
            if record["partition"] == partition:
                each(SimpleNamespace(headers=record["headers"]))

    monkeypatch.setattr(dead_letters, "read_tail", read_tail)
    return kafka


async def test_a_worker_killed_mid_quarantine_leaves_one_letter(dlq_tail: Kafka) -> None:
    """The letter is sent, then the changelog write fails (the worker dies there): the
    next owner isolates the same record again and finds its letter in ``dlq``."""
    store, kafka = Store(), dlq_tail
    batch = [_created(2, 0, "PO-1", "e-0"), _created(2, 1, "PO-3", POISON)]
    first = _worker(store, kafka, SentLetters(CONFIG))
    await _run(first, batch[:1])

    original = first.quarantine

    async def dies_after_the_letter(record: Record, error: BaseException) -> None:
        store.fail_next = ConnectionResetError("killed")
        await original(record, error)

    first.quarantine = dies_after_the_letter  # type: ignore[method-assign]  # the crash
    with pytest.raises(StateWriteError):
        await _run(first, batch[1:])
    assert len(_letters(kafka)) == 1
    assert first.markers.last(INPUT, 2) == 0  # the marker did not move past it

    successor = _worker(store, kafka, SentLetters(CONFIG))
    assert await _run(successor, [*batch[1:], _created(2, 2, "PO-4", "e-2")]) == 1
    assert len(_letters(kafka)) == 1  # not sent again
    assert successor.markers.last(INPUT, 2) == 2
    assert _event_ids(store, 2, "PO-4") == ["e-2"]


# --- the whole agent path, fuzzed -------------------------------------------------------

#: One valid body per event type of the PO and order topics (the sample scenario's).
_TEMPLATES: Final = {
    body["type"]: (record.topic, body)
    for record in sample_scenario("fz")
    if record.expect == OK and record.topic != "inventory.events"
    for body in [
        msgpack.unpackb(record.value)
        if ("content-type", b"application/msgpack") in record.headers
        else orjson.loads(record.value)
    ]
}
_IDS: Final = ["P", "x" * 128, "Ω" * 128, "PO-é-1", "a.b:c/d"]
_SKUS: Final = ["S", "s" * 64, "Ü" * 64, "SKU-A"]
_QTYS: Final = [0, 1, "0.001", "999999999999.999", 999_999_999_999, "500000000000.5"]
_INTS: Final = [0, 1, 2, 2**31 - 1, 2**53 + 1, 2**63 - 1, 2**63, 10**30]
_TIMES: Final = [
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:00:00.001+00:00",
    "8999-12-31T23:59:59.999Z",
    "8999-12-31T09:59:59-14:00",
    "2026-11-27T10:15:00Z",
    "2000-02-29T12:00:00+14:00",
]


@st.composite
def _extreme_record(draw: st.DrawFn, offset: int) -> tuple[str, bytes, bytes]:
    """(topic, key, value) of a record of any PO or order type, its values at the edges
    of what the schema takes (and now and then just past them)."""
    type_ = draw(st.sampled_from(sorted(_TEMPLATES)))
    topic, template = _TEMPLATES[type_]
    body = copy.deepcopy(template)
    data = body["data"]
    entity = draw(st.sampled_from(_IDS))
    data["po_id" if topic == "po.events" else "order_id"] = entity
    if "revision" in data:
        data["revision"] = draw(st.sampled_from(_INTS))
    if "lines" in data:
        count = draw(st.integers(1, 30))
        same_sku = draw(st.booleans())
        data["lines"] = [
            {
                **data["lines"][0],
                "line_no": draw(st.sampled_from(_INTS[1:])) if n == 0 else n + 1,
                "sku": _SKUS[0] if same_sku else draw(st.sampled_from(_SKUS)),
                "qty": draw(st.sampled_from(_QTYS)),
            }
            for n in range(count)
        ]
    body["occurred_at"] = draw(st.sampled_from(_TIMES))
    body["event_id"] = draw(st.sampled_from(["e-1", "e-2", f"e-{offset}", "é" * 128]))
    # (json, not orjson: revisions past 64 bits must reach the decoder as sent)
    return topic, entity.encode(), json.dumps(body, ensure_ascii=False).encode()


def _agent(kind: EntityKind, topic: str, store: Store, kafka: Kafka) -> InputAgent:
    checkpoint = Checkpoint(
        FakeOutbox(kafka),  # type: ignore[arg-type]  # Outbox's interface
        store,  # type: ignore[arg-type]  # TableIO's interface
        ProgressMarkers(store, CONFIG.kafka),
    )
    actor = EntityActor(
        kind=kind,
        checkpoint=checkpoint,
        deltas_topic="t-position-deltas",
        emitter=FakeEmitter(),  # type: ignore[arg-type]  # sends nothing: no rules fire
        rules=Rules(),
        partitions=CONFIG.partitions,
        metrics=Metrics(CollectorRegistry(), app_id="t", version="0"),
    )
    return InputAgent(
        CONFIG, topic=topic, handler=actor, metrics=actor.metrics, checkpoint=checkpoint
    )


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_extreme_valid_records_are_applied_or_dead_lettered_never_raise(
    data: st.DataObject,
) -> None:
    """Valid-schema records at the edges (ids of 128 characters, quantities at the bound,
    10**30 revisions, 2**63 line numbers, the first and last accepted instants, repeated
    event ids) through the real input agents and PO/order actors: nothing escapes, and
    every record is applied (or a duplicate, or stale) or dead-lettered with a reason."""
    count = data.draw(st.integers(1, 20))
    records = [data.draw(_extreme_record(offset)) for offset in range(count)]
    kafka = Kafka()
    agents = {
        "po.events": _agent(PO_KIND, "po.events", Store(), kafka),
        "order.events": _agent(ORDER_KIND, "order.events", Store(), kafka),
    }
    sent: Counter[str] = Counter()
    offsets: Counter[tuple[str, int]] = Counter()
    batches: dict[str, list[list[Record]]] = {topic: [[]] for topic in agents}
    for topic, key, value in records:
        partition = partition_of(key, CONFIG.partitions)
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] += 1
        if data.draw(st.booleans()):
            batches[topic].append([])  # a batch ends here
        batches[topic][-1].append(
            Record(CONFIG.topic(topic), partition, offset, key, value, [], 1.0)
        )
        sent[topic] += 1

    for topic, agent in agents.items():
        for batch in batches[topic]:
            asyncio.run(agent.process_batch(batch))
        counted = sum(
            sample.value
            for family in agent.metrics.registry.collect()
            if family.name == "supplyflow_events"
            for sample in family.samples
            if sample.name.endswith("_total")
        )
        assert counted == sent[topic]  # every record once: applied, duplicate, stale or dlq
    for _, letter in _letters(kafka):
        assert letter["reason"] in REASONS
        assert letter["reason"] != "processing_failed"
        assert letter["detail"]


def test_timestamp_order_reads_a_failed_batch_again_instead_of_isolating() -> None:
    """In timestamp order the records a batch applies are not (only) the batch's own:
    isolating within the batch would forget records held back, so none is quarantined."""
    assert _worker(Store(), Kafka()).isolates_failures
    timestamp = dataclasses.replace(CONFIG, apply_order="timestamp")
    assert not _worker(Store(), Kafka(), config=timestamp).isolates_failures
