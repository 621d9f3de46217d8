"""The generated workloads: deterministic, lazy, valid per the contract, shaped as stated.

Every record is either valid or labelled with the dead-letter reason the worker must give
it; the closing snapshots agree with the reference computation of the valid events.
"""

from __future__ import annotations

import itertools
import statistics
import tracemalloc
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from supplyflow.app.sample import SampleRecord
from supplyflow.app.workload import (
    DISTRIBUTOR,
    MISMATCH_LABEL,
    Scenario,
    estimate_records,
    generate,
    iter_records,
)
from supplyflow.codecs import DecodeError, decode_input
from supplyflow.codecs.events import AnyEvent
from supplyflow.codecs.quantity import parse_qty
from supplyflow.tables.reference import reference_positions

#: The distributor profile small enough for unit tests (250 SKUs, 120 POs, 200 orders).
SMALL_DISTRIBUTOR = DISTRIBUTOR.scaled(0.01)
ACTOR_REASONS = ("unknown_entity", "line_mismatch")


def _decode(record: SampleRecord) -> AnyEvent:
    return decode_input(record.topic, record.key, record.value, record.headers, max_bytes=1 << 20)


def _bodies(records: list[SampleRecord]) -> list[dict[str, Any]]:
    """The valid events, each once (duplicates dropped)."""
    bodies = (orjson.loads(r.value) for r in records if r.expect == "ok")
    return list({body["event_id"]: body for body in bodies}.values())


@pytest.fixture(scope="module")
def distributor() -> list[SampleRecord]:
    return list(iter_records(3, "w", DISTRIBUTOR.scaled(0.05)))


def test_same_seed_same_records_other_seed_other_records() -> None:
    first = generate(5, "r", SMALL_DISTRIBUTOR)
    assert generate(5, "r", SMALL_DISTRIBUTOR) == first
    assert generate(6, "r", SMALL_DISTRIBUTOR) != first


def test_the_default_scenario_is_the_small_all_valid_one() -> None:
    records = generate(11, "t")
    assert len(records) > 6000
    assert {r.expect for r in records} == {"ok"}
    assert not any(r.label.startswith("inventory.snapshot") for r in records)
    for record in records:
        _decode(record)


def test_now_stamps_occurred_at_and_changes_nothing_else() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    ticks = itertools.count()

    def now() -> datetime:
        return start + timedelta(milliseconds=next(ticks))

    plain = generate(2, "n", SMALL_DISTRIBUTOR)
    stamped = list(iter_records(2, "n", SMALL_DISTRIBUTOR, now=now))
    assert len(plain) == len(stamped)
    stamps = []
    for a, b in zip(plain, stamped, strict=True):
        if a.expect == "invalid_json":
            continue
        body_a, body_b = orjson.loads(a.value), orjson.loads(b.value)
        stamps.append(body_b.pop("occurred_at"))
        body_a.pop("occurred_at")
        assert body_a == body_b
    first_new = [s for s in stamps if s.startswith("2030")]
    assert first_new[0] == "2030-01-01T00:00:00Z"
    assert len(first_new) > len(stamps) * 0.95  # duplicates keep their first stamp


def test_records_decode_or_carry_the_reason_they_are_dead_lettered(
    distributor: list[SampleRecord],
) -> None:
    reasons: Counter[str] = Counter()
    for record in distributor:
        if record.expect in ("ok", *ACTOR_REASONS):
            _decode(record)  # the actor, not the decoder, rejects unknown entities and lines
        else:
            with pytest.raises(DecodeError) as caught:
                _decode(record)
            assert caught.value.reason == record.expect, record
        reasons[record.expect] += 1
    invalid = sum(n for reason, n in reasons.items() if reason != "ok")
    assert 0.007 < invalid / len(distributor) < 0.013  # about 1%
    assert set(reasons) == {
        "ok",
        "schema",
        "invalid_json",
        "unknown_type",
        "wrong_topic",
        "key_mismatch",
        "unknown_entity",
        "line_mismatch",
    }


def test_distributor_profile_has_the_stated_shape(distributor: list[SampleRecord]) -> None:
    shape = DISTRIBUTOR.scaled(0.05)
    bodies = _bodies(distributor)
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in bodies:
        by_type[body["type"]].append(body["data"])
    created = {d["po_id"]: d for d in by_type["po.created"]}
    assert len(created) == shape.pos
    assert all(5 <= len(d["lines"]) <= 20 for d in created.values())
    revised = {d["po_id"] for d in by_type["po.updated"]}
    assert 0.06 < len(revised) / shape.pos < 0.14  # 10% revised
    placed = by_type["order.placed"]
    assert len(placed) == shape.orders
    assert 4.5 < statistics.mean(len(d["lines"]) for d in placed) < 5.5  # about 5 lines
    returned = {d["order_id"] for d in by_type["return.received"]}
    assert 0.01 < len(returned) / shape.orders < 0.03  # about 2% returns
    for kind in ("asn.issued", "order.allocated", "order.shipped", "order.invoiced"):
        assert len(by_type[kind]) > shape.pos / 2, kind
    assert len(by_type["inventory.adjusted"]) == shape.adjustments

    # About 20% of POs received in part, some completely, the rest still open.
    received: dict[str, int] = defaultdict(int)
    for d in by_type["goods.received"]:
        received[d["po_id"]] += sum(parse_qty(ln["qty"]) for ln in d["lines"])
    partial = full = 0
    for po_id, total in received.items():
        ordered = sum(parse_qty(ln["qty"]) for ln in created[po_id]["lines"])
        full += total >= ordered
        partial += total < ordered
    assert 0.15 < partial / shape.pos < 0.25
    assert 0.05 < full / shape.pos < 0.25

    # Zipf-like popularity: the top 1% of SKUs carry a large share of all lines.
    per_sku = Counter(ln["sku"] for d in created.values() for ln in d["lines"])
    per_sku.update(ln["sku"] for d in placed for ln in d["lines"])
    top = sum(n for _, n in per_sku.most_common(shape.skus // 100))
    assert top / sum(per_sku.values()) > 0.15


def test_a_closing_snapshot_for_every_position(distributor: list[SampleRecord]) -> None:
    shape = DISTRIBUTOR.scaled(0.05)
    snapshot_keys = [r.key for r in distributor if r.label.startswith("inventory.snapshot")]
    assert len(snapshot_keys) == len(set(snapshot_keys)) == shape.positions
    first = next(i for i, r in enumerate(distributor) if r.label.startswith("inventory.snapshot"))
    tail = distributor[first:]
    assert all(r.label.startswith(("inventory.snapshot", "invalid:")) for r in tail)


def test_snapshots_agree_with_the_reference_of_the_valid_events(
    distributor: list[SampleRecord],
) -> None:
    """The generator's own on-hand bookkeeping and the reference agree, position by position."""
    valid = [_decode(r) for r in distributor if r.expect == "ok"]
    expected = reference_positions(valid)
    mismatches = 0
    for record in distributor:
        if not record.label.startswith("inventory.snapshot") or record.expect != "ok":
            continue
        data = orjson.loads(record.value)["data"]
        key = f"{data['sku']}@{data['location']}"
        computed = expected[key]["on_hand"] if key in expected else 0
        reported = parse_qty(data["on_hand"], signed=True)
        if record.label == MISMATCH_LABEL:
            mismatches += 1
            assert reported == computed + 1000, key
        else:
            assert reported == computed, key
    assert mismatches > 0


def test_records_the_actors_reject_leave_the_reference_unchanged(
    distributor: list[SampleRecord],
) -> None:
    valid = [_decode(r) for r in distributor if r.expect == "ok"]
    with_rejected = [_decode(r) for r in distributor if r.expect in ("ok", *ACTOR_REASONS)]
    assert len(with_rejected) > len(valid)
    assert reference_positions(with_rejected) == reference_positions(valid)


def test_estimate_is_close_to_the_real_count() -> None:
    shape = DISTRIBUTOR.scaled(0.2)
    actual = sum(1 for _ in iter_records(7, "e", shape))
    assert abs(estimate_records(shape) - actual) / actual < 0.03


def test_memory_stays_flat_however_many_records_are_drawn() -> None:
    """A lazy generator: drawing 4x the records must not need 4x the memory."""

    def peak(count: int) -> int:
        tracemalloc.start()
        try:
            for _ in itertools.islice(iter_records(1, "m", DISTRIBUTOR), count):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(5_000), peak(20_000)
    assert large < small * 1.5, (small, large)


def test_scaled_multiplies_volumes_and_keeps_rates() -> None:
    double = DISTRIBUTOR.scaled(2)
    assert (double.pos, double.orders, double.skus) == (24_000, 40_000, 50_000)
    assert double.positions == 200_000
    assert double.invalid_rate == DISTRIBUTOR.invalid_rate
    tiny = Scenario().scaled(0.001)
    assert tiny.pos == tiny.orders == 1
    assert tiny.skus >= Scenario().po_lines[1]
    with pytest.raises(ValueError, match="positive"):
        DISTRIBUTOR.scaled(0)
