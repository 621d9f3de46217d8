import gc

import orjson

from supplyflow.agents.ingest import decode_batch
from supplyflow.agents.runtime.records import Record
from supplyflow.app.sample import OK, sample_scenario


def _record(
    key: bytes | None,
    value: bytes | None,
    partition: int,
    offset: int,
    headers: list[tuple[str, bytes]] | None = None,
) -> Record:
    return Record("t.topic", partition, offset, key, value, headers or [], 1_700_000_000.0)


def test_batch_keeps_good_records_in_order_around_bad_ones() -> None:
    records = [r for r in sample_scenario("b") if r.topic == "order.events"]
    messages = [
        _record(r.key, r.value, partition=0, offset=i, headers=list(r.headers))
        for i, r in enumerate(records)
    ]
    accepted, rejected = decode_batch("order.events", messages, max_bytes=1024 * 1024)
    assert [a.offset for a in accepted] == [i for i, r in enumerate(records) if r.expect == OK]
    assert [(r.offset, r.error.reason) for r in rejected] == [
        (i, r.expect) for i, r in enumerate(records) if r.expect != OK
    ]
    assert all(a.timestamp_ms == 1_700_000_000_000 for a in accepted)
    # the rejected record carries what the dead-letter topic needs
    first_bad = rejected[0]
    assert first_bad.value == records[first_bad.offset].value
    assert first_bad.key == records[first_bad.offset].key


def test_empty_value_is_rejected_not_raised() -> None:
    accepted, rejected = decode_batch("po.events", [_record(b"PO-1", None, 1, 7)], max_bytes=1024)
    assert accepted == []
    assert rejected[0].error.reason == "invalid_json"
    assert orjson.dumps(rejected[0].offset) == b"7"


def test_a_rejected_record_leaves_no_reference_cycle() -> None:
    records = [r for r in sample_scenario("c") if r.topic == "order.events"]
    assert any(r.expect != OK for r in records)
    messages = [
        _record(r.key, r.value, partition=0, offset=i, headers=list(r.headers))
        for i, r in enumerate(records)
    ]
    gc.collect()
    gc.disable()
    try:
        accepted, rejected = decode_batch("order.events", messages, max_bytes=1024 * 1024)
        assert rejected
        del accepted, rejected, messages
        # Everything is freed by reference counting: nothing left for the cycle collector.
        assert gc.collect() == 0
    finally:
        gc.enable()
