"""``supplyflow worker --processes 2`` against the real broker: one command, two members.

Both worker processes join the group under their own instance ids and web ports, the
sample input ends in exact positions, every look-up answers the same from both ports; a
SIGKILLed process is started again by the supervisor, takes its place back and the output
resumes; SIGTERM to the supervisor stops every process cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from supplyflow.app.membership import group_members, instance_id
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import OK, SampleRecord, sample_scenario
from supplyflow.app.settings import Settings
from supplyflow.app.topics import read_topic
from supplyflow.codecs import decode_input
from supplyflow.codecs.quantity import parse_qty
from supplyflow.tables.reference import POSITION_FIELDS, reference_positions
from tests.integration.worker_http import http_json

pytestmark = pytest.mark.integration

#: Two workers starting at once on a busy two-core machine.
READY_S: Final = 120.0
#: The group settles, the input is processed, a killed process is back.
SETTLE_S: Final = 120.0
PARTITIONS: Final = 4
#: Sample scenarios produced per round (each its own POs and orders: keys over partitions).
RUNS: Final = 3
_POLL_S: Final = 0.25


def _settings(worker_env: dict[str, str], data_dir: Path) -> Settings:
    return Settings(
        bootstrap=worker_env["SUPPLYFLOW_BOOTSTRAP"],
        topic_prefix=worker_env["SUPPLYFLOW_TOPIC_PREFIX"],
        app_id=worker_env["SUPPLYFLOW_APP_ID"],
        partitions=PARTITIONS,
        data_dir=data_dir,
    )


def _produce(settings: Settings, round_: str) -> list[SampleRecord]:
    records = [
        record
        for run in range(RUNS)
        for record in sample_scenario(
            f"{settings.app_id}-{round_}{run}", max_record_bytes=settings.max_record_bytes
        )
    ]
    asyncio.run(produce_records(settings, records))
    return records


def _reference(records: Iterable[SampleRecord]) -> dict[str, dict[str, int]]:
    return reference_positions(
        decode_input(r.topic, r.key, r.value, r.headers, max_bytes=1 << 20)
        for r in records
        if r.expect == OK
    )


def _milli(record: dict[str, Any]) -> dict[str, int]:
    return {field: parse_qty(record[field], signed=True) for field in POSITION_FIELDS}


def _wait(condition: Callable[[], bool], what: str, timeout: float = SETTLE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(_POLL_S)


def _wait_exact(settings: Settings, expected: dict[str, dict[str, int]]) -> None:
    def exact() -> bool:
        records = asyncio.run(
            read_topic(settings.bootstrap, settings.topic("inventory.positions"), wait_s=10)
        )
        latest = {m.key.decode(): _milli(orjson.loads(m.value)) for m in records}
        return latest == expected

    _wait(exact, "the last position per key equals the reference")


def _members(settings: Settings) -> dict[str, str | None]:
    """Instance id -> advertised URL of each member that has an assignment."""
    members = asyncio.run(group_members(settings))
    return {m.instance_id or m.member_id: m.url for m in members if m.assignment}


def _assert_lookups(worker: WorkerProcess, expected: dict[str, dict[str, int]]) -> None:
    """Every position answers the same, exact, from both processes' ports."""
    for key, want in sorted(expected.items()):
        sku, location = key.split("@")
        for process in range(worker.processes):
            status, body = http_json(worker, f"/positions/{sku}/{location}", process)
            assert status == 200, (key, process, body)
            assert _milli(body) == want, (key, process)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_two_processes_are_two_members_exact_restarted_and_stopped_together(
    start_worker: Callable[..., WorkerProcess], worker_env: dict[str, str], tmp_path: Path
) -> None:
    worker = start_worker(processes=2, SUPPLYFLOW_PARTITIONS=str(PARTITIONS))
    worker.wait_healthy(READY_S)
    settings = _settings(worker_env, tmp_path / "worker-0" / "data")
    base = instance_id(settings)
    urls = {f"{base}-p{i}": f"http://127.0.0.1:{worker.web_port + i}" for i in range(2)}
    _wait(lambda: _members(settings) == urls, f"members {urls}")
    children = worker.child_pids()
    assert len(children) == 2
    for i in range(2):  # each process keeps its state in its own folder
        assert (tmp_path / "worker-0" / "data" / f"p{i}").is_dir()

    first = _produce(settings, "a")
    expected = _reference(first)
    _wait_exact(settings, expected)
    _assert_lookups(worker, expected)

    # A crash of one process: the supervisor starts it again on the same port, data dir
    # and instance id, it takes its place back, and the output resumes.
    os.kill(children[1], signal.SIGKILL)
    _wait(lambda: _gone(children[1]), "the killed process is gone")
    _wait(
        lambda: len(worker.child_pids()) == 2 and children[1] not in worker.child_pids(),
        "the supervisor restarted the killed process",
    )
    assert children[0] in worker.child_pids()  # the other one never stopped
    assert "p1 died after" in worker.log_path.read_text(errors="replace")
    worker.wait_healthy(READY_S)
    _wait(lambda: _members(settings) == urls, f"members {urls} again")
    expected = _reference([*first, *_produce(settings, "b")])
    _wait_exact(settings, expected)
    _assert_lookups(worker, expected)

    # SIGTERM to the supervisor stops every process cleanly.
    survivors = worker.child_pids()
    assert worker.stop() == 0
    assert all(_gone(pid) for pid in survivors)
