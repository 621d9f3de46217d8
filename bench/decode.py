"""Decode micro-benchmark: CPU per record of each way to turn input bytes into an event.

No broker: the distributor workload (:data:`supplyflow.app.workload.DISTRIBUTOR` x
``scale``, valid and invalid records as produced) is generated once, then every candidate
decodes all of it, in alternating rounds (the order rotates each round) so that a busy
neighbour on a shared machine slows all candidates alike. Reports the median and the best
round per candidate, in microseconds per record.

Candidates (every one takes the same records and falls back to the reference path for a
record it does not take, so all of them dead-letter the same records):

- ``reference``: what the worker runs, orjson.loads + pydantic ``validate_python``;
- ``pydantic_json``: pydantic-core ``validate_json`` straight from the bytes (measured
  only: it also accepts NaN, Infinity and numbers beyond a double in ignored fields,
  which the reference rejects);
- ``msgspec``: msgspec Structs from the bytes, then the same pydantic event objects
  (:mod:`bench.onepass`; checked against the reference by ``tests/bench/test_decode.py``);
- ``msgspec_structs``: the msgspec decode alone, without building the pydantic objects
  the domain consumes: the floor, not a drop-in decoder.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
from pydantic import ValidationError

from bench.onepass import DECODER, decode_json_event
from supplyflow.app.sample import SampleRecord
from supplyflow.app.workload import DISTRIBUTOR, iter_records
from supplyflow.codecs import EVENT_ADAPTER, EVENT_TYPE_TOPIC, DecodeError, decode_input
from supplyflow.codecs.events import AnyEvent

__all__ = ["CANDIDATES", "DEFAULT_SCALE", "SMOKE_SCALE", "markdown", "run_decode"]

_MAX_BYTES: Final = 1 << 20
#: x the distributor workload: about 13,000 records, ~10 s a round on a 2-core machine.
DEFAULT_SCALE: Final = 0.05
SMOKE_SCALE: Final = 0.002
Decoder = Callable[[SampleRecord], Any]


def _reference(r: SampleRecord) -> AnyEvent:
    return decode_input(r.topic, r.key, r.value, r.headers, max_bytes=_MAX_BYTES)


def _fast_checks(r: SampleRecord, event: Any) -> bool:
    """What decode_input checks around validation: headers (none: JSON), size, topic, key."""
    return (
        len(r.value) + len(r.key or b"") <= _MAX_BYTES
        and EVENT_TYPE_TOPIC[event.type] == r.topic
        and r.key == event.data.entity_key.encode()
    )


def _pydantic_json(r: SampleRecord) -> AnyEvent:
    if not r.headers and r.value:
        try:
            event = EVENT_ADAPTER.validate_json(r.value)
        except ValidationError:
            pass
        else:
            if _fast_checks(r, event):
                return event
    return _reference(r)


def _msgspec(r: SampleRecord) -> AnyEvent:
    if not r.headers and r.value:
        event = decode_json_event(r.value)
        if event is not None and _fast_checks(r, event):
            return event
    return _reference(r)


def _msgspec_structs(r: SampleRecord) -> Any:
    if not r.headers and r.value:
        try:
            event = DECODER.decode(r.value)
        except msgspec.DecodeError:
            pass
        else:
            if _fast_checks(r, _StructView(event)):
                return event
    return _reference(r)


class _StructView:
    """``type`` and ``data.entity_key`` of a decoded Struct, as the checks read them."""

    __slots__ = ("data", "type")

    def __init__(self, event: Any) -> None:
        self.type = type(event).__struct_config__.tag
        data = event.data
        self.data = _Key(
            getattr(data, "po_id", None)
            or getattr(data, "order_id", None)
            or f"{data.sku}@{data.location}"
        )


class _Key:
    __slots__ = ("entity_key",)

    def __init__(self, key: str) -> None:
        self.entity_key = key


CANDIDATES: Final[dict[str, Decoder]] = {
    "reference": _reference,
    "pydantic_json": _pydantic_json,
    "msgspec": _msgspec,
    "msgspec_structs": _msgspec_structs,
}


def _round(decode: Decoder, records: list[SampleRecord]) -> float:
    gc.collect()
    started = time.process_time_ns()
    for record in records:
        try:  # noqa: SIM105 - a with block per record would be timed too
            decode(record)
        except DecodeError:
            pass
    return (time.process_time_ns() - started) / 1000 / len(records)


def run_decode(scale: float, rounds: int, seed: int) -> dict[str, Any]:
    """Times every candidate on the workload; returns the report part."""
    records = list(iter_records(seed, "decode", DISTRIBUTOR.scaled(scale)))
    valid = sum(r.expect == "ok" for r in records)
    lines = sum(r.value.count(b'"line_no"') for r in records)
    names = list(CANDIDATES)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            times[name].append(_round(CANDIDATES[name], records))
    results: dict[str, dict[str, Any]] = {
        name: {
            "us_per_record_median": round(statistics.median(ts), 3),
            "us_per_record_best": round(min(ts), 3),
            "rounds_us": [round(t, 3) for t in ts],
        }
        for name, ts in times.items()
    }
    base = results["reference"]["us_per_record_median"]
    for result in results.values():
        result["speedup_vs_reference"] = round(base / result["us_per_record_median"], 2)
    return {
        "records": len(records),
        "valid": valid,
        "lines_per_record": round(lines / len(records), 2),
        "bytes_per_record": round(sum(len(r.value) for r in records) / len(records)),
        "rounds": rounds,
        "results": results,
    }


def markdown(part: dict[str, Any]) -> str:
    """The result as a small Markdown table."""
    rows = [
        f"{part['records']} records ({part['valid']} valid, {part['lines_per_record']} lines "
        f"and {part['bytes_per_record']} bytes per record on average), {part['rounds']} "
        "alternating rounds, CPU time per record:",
        "",
        "| candidate | median µs/record | best µs/record | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for name, r in part["results"].items():
        rows.append(
            f"| {name} | {r['us_per_record_median']} | {r['us_per_record_best']} "
            f"| {r['speedup_vs_reference']}x |"
        )
    return "\n".join(rows)
