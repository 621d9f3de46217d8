"""The actors' pure functions, driven as the agents drive them, equal the reference.

A small in-memory simulation of the pipeline: entity batches per partition, deltas sent
before states are written, positions applying deltas and adjustments. Crashes are
simulated by throwing away a batch's state writes after its deltas went out and
replaying the batch: the positions must still come out exact.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supplyflow.agents.runtime.keys import partition_for
from supplyflow.app.workload import DISTRIBUTOR, Scenario, generate
from supplyflow.codecs import DecodeError, decode_input
from supplyflow.codecs.events import EVENT_TYPE_TOPIC, InventoryAdjusted, InventorySnapshot
from supplyflow.codecs.quantity import parse_qty
from supplyflow.codecs.serializers import MsgpackCodec
from supplyflow.tables.batch import apply_entity_batch
from supplyflow.tables.common import Rejection
from supplyflow.tables.order import OrderState, apply_order_event
from supplyflow.tables.po import PoState, apply_po_event
from supplyflow.tables.position import (
    PositionState,
    apply_deltas,
    apply_inventory_event,
    position_record,
)
from supplyflow.tables.reference import POSITION_FIELDS, reference_positions

PARTITIONS = 3
CODEC = MsgpackCodec()


def pack(value: Any) -> bytes:
    return bytes(CODEC.dumps(value))


def unpack(data: bytes) -> Any:
    return CODEC.loads(data)


class Simulation:
    def __init__(self, rng: random.Random, crash_rate: float) -> None:
        self.rng = rng
        self.crash_rate = crash_rate
        # Values are stored encoded, as the RocksDB store and changelog hold them.
        self.tables: dict[str, dict[str, bytes]] = {"po": {}, "order": {}, "position": {}}
        self.deltas: list[tuple[str, str, list[list[int]]]] = []  # (pk, source, items)

    def entity_batch(
        self,
        kind: str,
        partition: int,
        batch: list[tuple[Any, int]],
        apply: Callable[..., Any],
        from_wire: Callable[[list[Any]], Any],
    ) -> list[str | Rejection]:
        table = self.tables[kind]

        def load(key: str) -> Any:
            wire = table.get(key)
            return None if wire is None else from_wire(unpack(wire))

        result = apply_entity_batch(
            [(e.data.entity_key, e, offset, "") for e, offset in batch], load, apply
        )
        for pk, items in result.deltas.get("", {}).items():
            self.deltas.append((pk, f"{kind}:{partition}", items))
        if self.rng.random() < self.crash_rate:
            return self.entity_batch(kind, partition, batch, apply, from_wire)  # replay
        for key, state in result.states.items():
            table[key] = pack(state.to_wire())
        return result.results

    def position_apply(self, pk: str, apply: Callable[[PositionState], Any]) -> None:
        table = self.tables["position"]
        while True:
            wire = table.get(pk)
            state = PositionState.new(pk) if wire is None else PositionState.from_wire(unpack(wire))
            apply(state)
            if self.rng.random() >= self.crash_rate:
                table[pk] = pack(state.to_wire())
                return
            # crashed before the write: the same input is delivered again


def _inventory(state: PositionState, *, event: Any, offset: int) -> None:
    apply_inventory_event(state, event, offset)


def _deltas(state: PositionState, *, source: str, items: list[list[int]]) -> None:
    apply_deltas(state, source, items)


def _decoded(shape: Scenario, seed: int) -> tuple[list[Any], dict[int, str]]:
    """The records the decoder accepts, and what each must become (``ok`` or a rejection).

    The decoder's own rejections (schema, invalid JSON, ...) are checked here and dropped:
    the worker dead-letters them before any actor sees them.
    """
    events, expect = [], {}
    for record in generate(seed, "p", shape):
        if record.expect not in ("ok", "unknown_entity", "line_mismatch"):
            with pytest.raises(DecodeError) as caught:
                decode_input(
                    record.topic, record.key, record.value, record.headers, max_bytes=1 << 20
                )
            assert caught.value.reason == record.expect, record
            continue
        event = decode_input(
            record.topic, record.key, record.value, record.headers, max_bytes=1 << 20
        )
        events.append(event)
        expect[id(event)] = record.expect
    return events, expect


def run(seed: int, crash_rate: float, shape: Scenario) -> None:
    rng = random.Random(seed)
    events, expect = _decoded(shape, seed)
    sim = Simulation(rng, crash_rate)
    # Each input topic partition has its own offsets; batches of random size.
    logs: dict[tuple[str, int], list[Any]] = {}
    for event in events:
        topic = EVENT_TYPE_TOPIC[event.type].split(".")[0]
        logs.setdefault((topic, partition_for(event.data.entity_key, PARTITIONS)), []).append(event)
    pending = {k: list(enumerate(v)) for k, v in logs.items()}
    while any(pending.values()):
        (topic, partition), queue = rng.choice([(k, v) for k, v in pending.items() if v])
        size = rng.randint(1, 40)
        batch = [(event, offset) for offset, event in queue[:size]]
        del queue[:size]
        if topic in ("po", "order"):
            apply, from_wire = (
                (apply_po_event, PoState.from_wire)
                if topic == "po"
                else (apply_order_event, OrderState.from_wire)
            )
            results = sim.entity_batch(topic, partition, batch, apply, from_wire)
            for (event, _), result in zip(batch, results, strict=True):
                # Records the generator made invalid for an actor are rejected with that reason.
                outcome = result.reason if isinstance(result, Rejection) else "ok"
                assert outcome == expect[id(event)], event
        else:
            for event, offset in batch:
                assert isinstance(event, InventoryAdjusted | InventorySnapshot)
                for _ in range(2):  # delivered twice: the watermark keeps one effect
                    sim.position_apply(
                        event.data.entity_key,
                        partial(_inventory, event=event, offset=offset),
                    )
    # Deltas reach positions in order per (source, position), sometimes twice.
    for pk, source, items in sim.deltas:
        for _ in range(rng.choice([1, 1, 2])):
            sim.position_apply(pk, partial(_deltas, source=source, items=items))

    expected = reference_positions(e for e in events if expect[id(e)] == "ok")
    got = {
        pk: position_record(PositionState.from_wire(unpack(w)), "")
        for pk, w in sim.tables["position"].items()
    }
    for pk in expected.keys() | got.keys():
        want = expected.get(pk, dict.fromkeys(POSITION_FIELDS, 0))
        have = got.get(pk)
        have_milli = (
            {f: parse_qty(have[f], signed=True) for f in POSITION_FIELDS}
            if have
            else dict.fromkeys(POSITION_FIELDS, 0)
        )
        assert have_milli == want, pk


SMALL = Scenario(pos=15, orders=40, skus=8, locations=2, adjustments=20, duplicate_rate=0.2)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10**6))
def test_positions_equal_reference_without_crashes(seed: int) -> None:
    run(seed, 0.0, SMALL)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10**6))
def test_positions_equal_reference_with_crashes_and_redelivery(seed: int) -> None:
    run(seed, 0.3, SMALL)


def test_full_size_scenario_is_exact() -> None:
    run(1, 0.1, Scenario())


#: The distributor profile (1% invalid records, closing snapshots) at unit-test size.
SMALL_DISTRIBUTOR = DISTRIBUTOR.scaled(0.01)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10**6))
def test_distributor_profile_with_invalid_records_equals_reference_of_valid_ones(
    seed: int,
) -> None:
    run(seed, 0.2, SMALL_DISTRIBUTOR)
