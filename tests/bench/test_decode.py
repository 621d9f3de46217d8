"""The decode benchmark's candidates decode exactly like the worker's decoder.

A candidate that did less work would look faster than it is: the msgspec candidate
(:mod:`bench.onepass`) must accept and reject the same records as the reference path
(orjson + pydantic), with identical events and identical dead-letter reasons, details and
event ids. Checked on the distributor workload, on the sample scenario, on deterministic
edge cases, and by hypothesis with the hostile-input generators of
``tests/codecs/test_decode_fuzz.py``.
"""

from __future__ import annotations

import importlib.util
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bench import decode as bench_decode
from bench.__main__ import main as bench_main
from bench.onepass import STRUCTS, decode_json_event
from supplyflow.app.sample import SampleRecord, sample_scenario
from supplyflow.app.workload import DISTRIBUTOR, iter_records
from supplyflow.codecs import DecodeError
from supplyflow.codecs.events import EVENT_TYPES


def _load_fuzz() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "codecs" / "test_decode_fuzz.py"
    spec = importlib.util.spec_from_file_location("decode_fuzz_generators", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ: Final[Any] = _load_fuzz()


def _fuzz(examples: int) -> settings:
    """As tests/codecs/test_decode_fuzz.py: no deadline, no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


CANDIDATE: Final = bench_decode.CANDIDATES["msgspec"]
REFERENCE: Final = bench_decode.CANDIDATES["reference"]


def _deep(value: Any) -> Any:
    """Everything validation leaves on an event, down to the lines, comparable with ==."""
    if isinstance(value, BaseModel):
        return (
            type(value),
            {name: _deep(v) for name, v in value.__dict__.items()},
            list(value.__dict__),
            value.__pydantic_fields_set__,
            value.__pydantic_extra__,
            value.__pydantic_private__,
        )
    if isinstance(value, tuple):
        return tuple(_deep(v) for v in value)
    if isinstance(value, datetime):
        return (value, repr(value))
    return (type(value), value)


def _outcome(decode: Any, record: SampleRecord) -> tuple[Any, ...]:
    try:
        event = decode(record)
    except DecodeError as error:
        return ("rejected", error.reason, error.detail, error.event_id)
    return ("ok", _deep(event))


def _same(record: SampleRecord) -> tuple[Any, ...]:
    expected = _outcome(REFERENCE, record)
    assert _outcome(CANDIDATE, record) == expected, record
    return expected


def test_structs_mirror_the_models_field_by_field() -> None:
    """Same event types, same data fields in the models' order (the __dict__ order)."""
    assert STRUCTS.keys() == EVENT_TYPES.keys()
    for type_, struct in STRUCTS.items():
        data_model: Any = EVENT_TYPES[type_].model_fields["data"].annotation
        assert struct.__struct_fields__ == tuple(data_model.model_fields), type_


def test_the_workload_and_the_sample_decode_identically() -> None:
    records = [*iter_records(3, "eq", DISTRIBUTOR.scaled(0.004)), *sample_scenario("eq")]
    outcomes = [_same(record) for record in records]
    accepted = sum(o[0] == "ok" for o in outcomes)
    taken = sum(not r.headers and decode_json_event(r.value) is not None for r in records)
    # Both kinds are exercised, and the fast path takes nearly every valid JSON record.
    assert 0 < accepted < len(records)
    assert taken >= accepted - sum(bool(r.headers) for r in records) - 5


def _po_created() -> dict[str, Any]:
    return next(body for _, body in FUZZ.VALID if body["type"] == "po.created")


def _with(body: dict[str, Any], **data: Any) -> bytes:
    return orjson.dumps({**body, "data": {**body["data"], **data}})


@pytest.mark.parametrize(
    "value",
    [
        # an escape, non-ASCII text, DEL: the fast path leaves these to the reference
        b'{"event_id": "e\\u0041", ',
        "non-ascii",
        "del",
        # duplicate keys: the last one counts, in both
        "duplicate-type",
        "duplicate-data",
        # what msgspec skips without looking in an unknown field, and orjson rejects
        b'"x": NaN, ',
        b'"x": 1e400, ',
        b'"x": 1' + b"0" * 400 + b", ",
        b'"x": "\xff", ',
        b'"x": "\xed\xa0\x80", ',
        b'"x": "\\ud800", ',
        b'"x": ' + b"[" * 1100 + b"]" * 1100 + b", ",
        b'"x": ' + b"[" * 900 + b"]" * 900 + b", ",
    ],
)
def test_edge_cases_decode_identically(value: bytes | str) -> None:
    body = _po_created()
    key = body["data"]["po_id"].encode()
    plain = orjson.dumps(body)
    if value == "non-ascii":
        raw = _with(body, supplier_id="Lieferant-\u00fc")
    elif value == "del":
        raw = _with(body, supplier_id="S\x7f1")
    elif value == "duplicate-type":
        raw = plain[:-1] + b', "type": "po.updated"}'
    elif value == "duplicate-data":
        raw = plain[:-1] + b', "data": {"po_id": "P", "revision": 1}}'
    elif isinstance(value, bytes) and value.startswith(b'{"event_id"'):
        raw = value + plain[plain.index(b'"type"') :]
    else:
        assert isinstance(value, bytes)
        raw = b"{" + value + plain[1:]
    _same(SampleRecord("po.events", key, raw))


_TEXTS: Final = ("DC 1", "DC@1", " DC1", "DC1\n", "DC\t1", "DC\u00a01", "D" * 64, "D" * 65, "")


@pytest.mark.parametrize("text", _TEXTS)
@pytest.mark.parametrize("field", ["location", "sku", "supplier_id", "po_id"])
def test_codes_and_ids_decode_identically(field: str, text: str) -> None:
    body = _po_created()
    key = body["data"]["po_id"].encode()
    if field == "sku":
        lines = body["data"]["lines"]
        raw = _with(body, lines=[{**lines[0], "sku": text}, *lines[1:]])
    else:
        raw = _with(body, **{field: text})
        key = text.encode() if field == "po_id" else key
    _same(SampleRecord("po.events", key, raw))


@_fuzz(1_500)
@given(FUZZ.mutated_records())
def test_mutated_records_decode_identically(record: tuple[Any, ...]) -> None:
    topic, key, value, headers = record
    _same(SampleRecord(topic, key, value, headers))


@_fuzz(1_000)
@given(st.sampled_from(FUZZ.VALID), st.data())
def test_flipped_bytes_decode_identically(
    valid: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    topic, body = valid
    raw = bytearray(orjson.dumps(body))
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    _same(SampleRecord(topic, FUZZ._expected_key(topic, body), bytes(raw)))


def test_run_decode_reports_every_candidate() -> None:
    part = bench_decode.run_decode(bench_decode.SMOKE_SCALE, 1, 7)
    assert part["records"] > 100
    assert set(part["results"]) == set(bench_decode.CANDIDATES)
    for result in part["results"].values():
        assert result["us_per_record_median"] > 0
    assert "| msgspec |" in bench_decode.markdown(part)


def test_the_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["decode", "--smoke"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("python -m bench decode --smoke")
    for name in bench_decode.CANDIDATES:
        assert f"| {name} |" in out
