"""The domain benchmark (``python -m bench domain``) drives the real domain exactly.

Its positions after the workload must equal the reference model's: a loop that skipped
work would look faster than the worker. ``--compare`` needs a build and says so.
"""

from __future__ import annotations

import pytest

from bench import domain as bench_domain
from bench.__main__ import main as bench_main
from supplyflow.app.workload import DISTRIBUTOR, iter_records
from supplyflow.codecs import DecodeError, decode_input
from supplyflow.codecs.packing import unpack
from supplyflow.codecs.quantity import parse_qty
from supplyflow.compiled import compiled_in_use
from supplyflow.errors import SupplyflowError
from supplyflow.tables.exceptions import Rules
from supplyflow.tables.position import PositionState, position_record
from supplyflow.tables.reference import POSITION_FIELDS, reference_positions

SCALE = bench_domain.SMOKE_SCALE
ZERO = dict.fromkeys(POSITION_FIELDS, 0)


def test_the_bench_loop_computes_the_reference_positions() -> None:
    decoded = []  # (event, what the generator made it: ok, unknown_entity, line_mismatch)
    for r in iter_records(3, "domain", DISTRIBUTOR.scaled(SCALE)):
        try:
            decoded.append(
                (decode_input(r.topic, r.key, r.value, r.headers, max_bytes=1 << 20), r.expect)
            )
        except DecodeError:
            continue
    items = bench_domain._events(SCALE, 3)
    assert [e.event_id for _, e, _ in items] == [e.event_id for e, _ in decoded]
    assert len(items) > 400

    positions = bench_domain._run(items, Rules())

    expected = reference_positions(e for e, expect in decoded if expect == "ok")
    got = {}
    for pk, raw in positions.items():
        record = position_record(PositionState.from_wire(unpack(raw)), "")
        got[pk] = {f: parse_qty(record[f], signed=True) for f in POSITION_FIELDS}
    assert {pk: v for pk, v in got.items() if v != ZERO} == {
        pk: v for pk, v in expected.items() if v != ZERO
    }


def test_one_build_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["domain", "--smoke"]) == 0
    out = capsys.readouterr().out
    build = "compiled" if compiled_in_use() else "pure"
    assert f"| {build} |" in out
    assert "valid events, 2 rounds" in out


def test_compare_without_a_build_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_domain, "compiled_in_use", lambda: False)  # as after uncompile
    with pytest.raises(SupplyflowError, match="make compile"):
        bench_domain.run_domain(SCALE, 1, 7, compare=True)
