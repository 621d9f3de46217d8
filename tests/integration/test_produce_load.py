"""``supplyflow produce load`` against the real broker and a real worker.

Every deliberately invalid record of the distributor workload is dead-lettered with the
reason the generator labelled it with, and the positions equal the reference computation
of the valid records.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import orjson
import pytest

from supplyflow.app.processes import WorkerProcess
from supplyflow.app.topics import read_topic
from supplyflow.app.workload import DISTRIBUTOR, iter_records
from supplyflow.codecs import decode_input, parse_dead_letter
from supplyflow.codecs.quantity import parse_qty
from supplyflow.tables.reference import POSITION_FIELDS, reference_positions

pytestmark = pytest.mark.integration

SCALE: Final = 0.01
SEED: Final = 4
WORKER_READY_S: Final = 90.0
#: About 2,600 records: a few seconds of processing.
PROCESS_S: Final = 120.0
PRODUCE_S: Final = 120.0


def _positions(records: list[Any]) -> dict[str, dict[str, int]]:
    latest = {m.key.decode(): orjson.loads(m.value) for m in records}
    return {
        key: {f: parse_qty(value[f], signed=True) for f in POSITION_FIELDS}
        for key, value in latest.items()
    }


def _at(positions: dict[str, dict[str, int]], key: str) -> dict[str, int]:
    """A position, all zero if never emitted (the reference lists every key it touched)."""
    return positions.get(key) or dict.fromkeys(POSITION_FIELDS, 0)


def test_produce_load_dead_letters_the_invalid_records_and_positions_are_exact(
    bootstrap: str,
    names: dict[str, str],
    worker_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    run_id = names["app_id"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "supplyflow",
            "produce",
            "load",
            f"--scale={SCALE}",
            f"--seed={SEED}",
            f"--run-id={run_id}",
        ],
        env={**os.environ, **worker_env},
        capture_output=True,
        text=True,
        timeout=PRODUCE_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = list(iter_records(SEED, run_id, DISTRIBUTOR.scaled(SCALE)))
    assert f"produced {len(records)} records" in result.stdout
    assert "100%" in result.stderr  # the progress bar ran to its end

    invalid = Counter(r.expect for r in records if r.expect != "ok")
    assert invalid.total() > 10
    valid = [
        decode_input(r.topic, r.key, r.value, r.headers, max_bytes=1 << 20)
        for r in records
        if r.expect == "ok"
    ]
    expected = reference_positions(valid)

    worker = start_worker()
    worker.wait_healthy(WORKER_READY_S)
    dlq = asyncio.run(
        read_topic(bootstrap, f"{names['prefix']}dlq", expected=invalid.total(), wait_s=PROCESS_S)
    )
    reasons = Counter(parse_dead_letter(m.value)["reason"] for m in dlq)
    assert reasons == invalid

    deadline = time.monotonic() + PROCESS_S
    wrong: list[str] = []
    while time.monotonic() < deadline:
        positions = asyncio.run(
            read_topic(bootstrap, f"{names['prefix']}inventory.positions", wait_s=30)
        )
        got = _positions(positions)
        wrong = [k for k in expected.keys() | got.keys() if _at(expected, k) != _at(got, k)]
        if not wrong:
            break
        time.sleep(1.0)
    assert not wrong, f"{len(wrong)} positions differ, e.g. {sorted(wrong)[:5]}"
