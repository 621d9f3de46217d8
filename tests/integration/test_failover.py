"""Static group membership with real workers and the real broker: fast failover, one
worker per instance id, and leaving the group on request.

These tests run with the production session timeout (``SUPPLYFLOW_BROKER_SESSION_TIMEOUT``
60s; the other integration tests use 10s so that a killed worker is noticed fast): the
failover must come from static membership, not from a short timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Callable
from typing import Final

import pytest

from supplyflow.app.membership import FENCED_EXIT_CODE, group_members
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.settings import Settings
from supplyflow.app.topics import INPUT_TOPICS, ensure_topics, read_topic
from tests.integration.fault_checks import Verifier, output_pauses
from tests.integration.fault_input import InputRecord, build_input, replay
from tests.integration.fault_ops import BackgroundProducer, committed_input, fault_seeds, wait_for

pytestmark = pytest.mark.integration

Factory = Callable[..., WorkerProcess]

#: The production default, not the 10s of the other integration tests.
SESSION: Final = {"SUPPLYFLOW_BROKER_SESSION_TIMEOUT": "60s"}
#: About the input of the measurement in issue 17 (11,700 generated records).
EVENTS: Final = 11_700
RESTART_AFTER_S: Final = 3.0
#: The longest gap between consecutive inventory.positions records it may cause.
MAX_GAP_S: Final = 10.0
WORKER_READY_S: Final = 180.0
EXACT_S: Final = 300.0
EXIT_S: Final = 60.0


def _settings(bootstrap: str, names: dict[str, str]) -> Settings:
    return Settings(
        bootstrap=bootstrap, topic_prefix=names["prefix"], app_id=names["app_id"], partitions=4
    )


def _read_input(settings: Settings) -> list[InputRecord]:
    out = []
    for topic in INPUT_TOPICS:
        records = asyncio.run(read_topic(settings.bootstrap, settings.topic(topic)))
        out += [
            InputRecord(topic, r.partition, r.offset, r.key, r.value, list(r.headers or ()))
            for r in records
        ]
    return sorted(out, key=lambda r: (r.topic, r.partition, r.offset))


def _partition_gaps(times_ms: dict[int, list[int]]) -> dict[int, float]:
    return {
        p: max((b - a for a, b in itertools.pairwise(times)), default=0) / 1000
        for p, times in sorted(times_ms.items())
    }


def test_a_worker_killed_and_restarted_3s_later_stalls_no_output(
    bootstrap: str, names: dict[str, str], start_worker: Factory
) -> None:
    """Two workers, input streaming, one SIGKILLed and restarted on its data dir 3 s later:
    it takes its own place back (no rebalance), the other never stops."""
    settings = _settings(bootstrap, names)
    asyncio.run(ensure_topics(settings))
    seed = fault_seeds()[0]
    records = build_input(seed, names["app_id"], EVENTS)
    workers = [start_worker(0, **SESSION), start_worker(1, **SESSION)]
    for worker in workers:
        worker.wait_healthy(WORKER_READY_S)
    producer = BackgroundProducer(settings, records, max(200, len(records) // 40), 0.5).start()
    try:
        wait_for("a third processed", lambda: committed_input(settings) >= len(records) // 3, 120)
        killed_at = time.time()
        workers[1].kill()
        time.sleep(RESTART_AFTER_S)
        restarted_at = time.time()
        restarted = start_worker(1, **SESSION)
    finally:
        producer.join(300)
    restarted.wait_healthy(WORKER_READY_S)
    expected = replay(_read_input(settings))
    verifier = Verifier(settings, expected)
    try:
        deadline = time.monotonic() + EXACT_S
        report = verifier.check()
        while not report.ok and time.monotonic() < deadline:
            time.sleep(2)
            report = verifier.check()
        report = verifier.check(full=True)
        pauses = output_pauses(verifier.output_times, [restarted_at], [killed_at])
        per_partition = _partition_gaps(verifier.output_times)
    finally:
        verifier.close()
    print(
        f"seed {seed}: longest gap between inventory.positions records {pauses.longest_s:.1f}s "
        f"(from {pauses.longest_at - killed_at:+.1f}s after the kill); per partition "
        f"{per_partition}; restart to output of every partition {pauses.resumed_s}"
    )
    assert report.ok, report.describe()
    assert pauses.longest_s < MAX_GAP_S, (pauses, per_partition)
    assert workers[0].alive()
    assert restarted.alive()


def _exit_code(worker: WorkerProcess, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    return None if worker.proc is None else worker.proc.poll()


def _instances(settings: Settings) -> set[str | None]:
    return {m.instance_id for m in asyncio.run(group_members(settings))}


def test_a_second_live_worker_with_the_same_instance_id_is_refused_at_start(
    bootstrap: str, names: dict[str, str], start_worker: Factory
) -> None:
    same = {**SESSION, "SUPPLYFLOW_INSTANCE_ID": f"{names['app_id']}-one"}
    first = start_worker(0, **same)
    first.wait_healthy(WORKER_READY_S)
    second = start_worker(1, **same)  # its own data dir and port, the same id
    assert _exit_code(second, EXIT_S) == 2, second.log_tail()
    assert "SUPPLYFLOW_INSTANCE_ID" in second.log_tail()
    assert first.alive()
    first.wait_healthy(10)


def test_a_worker_whose_place_was_taken_stops_instead_of_taking_it_back(
    bootstrap: str, names: dict[str, str], start_worker: Factory
) -> None:
    """The start check cannot see a frozen worker (no ticks): the new one takes its place;
    the frozen one, thawed, finds its id held by another member and exits."""
    settings = _settings(bootstrap, names)
    same = {**SESSION, "SUPPLYFLOW_INSTANCE_ID": f"{names['app_id']}-one"}
    frozen = start_worker(0, **same)
    frozen.wait_healthy(WORKER_READY_S)
    assert frozen.proc is not None
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.0)  # its last tick is older than the check looks back
        newcomer = start_worker(1, **same)
        newcomer.wait_healthy(WORKER_READY_S)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    assert _exit_code(frozen, EXIT_S) == FENCED_EXIT_CODE, frozen.log_tail()
    assert "SUPPLYFLOW_INSTANCE_ID" in frozen.log_tail()
    newcomer.wait_healthy(10)
    assert _instances(settings) == {same["SUPPLYFLOW_INSTANCE_ID"]}


def test_a_stopped_worker_keeps_its_place_unless_it_leaves(
    bootstrap: str, names: dict[str, str], start_worker: Factory
) -> None:
    settings = _settings(bootstrap, names)
    stays = {**SESSION, "SUPPLYFLOW_INSTANCE_ID": f"{names['app_id']}-stays"}
    leaves = {
        **SESSION,
        "SUPPLYFLOW_INSTANCE_ID": f"{names['app_id']}-leaves",
        "SUPPLYFLOW_LEAVE_GROUP_ON_STOP": "true",
    }
    staying, leaving = start_worker(0, **stays), start_worker(1, **leaves)
    for worker in (staying, leaving):
        worker.wait_healthy(WORKER_READY_S)
    wait_for(
        "both in the group",
        lambda: (
            _instances(settings)
            == {stays["SUPPLYFLOW_INSTANCE_ID"], leaves["SUPPLYFLOW_INSTANCE_ID"]}
        ),
        60,
    )
    assert leaving.stop() == 0
    assert _instances(settings) == {stays["SUPPLYFLOW_INSTANCE_ID"]}  # left at once
    records = build_input(fault_seeds()[0], names["app_id"], 2000)
    asyncio.run(produce_records(settings, records))
    started = time.monotonic()
    wait_for("all input processed", lambda: committed_input(settings) >= len(records), 50)
    print(f"input after the leave processed in {time.monotonic() - started:.1f}s")
    assert staying.stop() == 0
    assert _instances(settings) == {stays["SUPPLYFLOW_INSTANCE_ID"]}  # kept for a restart
