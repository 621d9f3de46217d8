"""Fault injection with real workers and the real broker, every case ending exact.

Each case produces a generated scenario (about 100,000 records, ~0.5% of them deliberately
bad) while it kills, restarts, adds or removes workers, deletes a data dir or stops the
broker, and then checks from the topics (see ``fault_checks``) that positions equal the
reference, that every record was applied once or dead-lettered once, and that exception
transitions equal a fault-free replay's. SLA settings are empty: no wall-clock deadline
rule fires, so the expected transitions do not depend on timing.

A seed drives the scenario and every random choice of a case (when to kill, which
worker, how long the broker stays down). The kill cases run once per seed of the run,
the others with the first (``fault_ops.fault_seeds``: ``SUPPLYFLOW_FAULTS_SEED=n[,m...]``,
else ``SUPPLYFLOW_FAULTS_ROUNDS`` random ones, 3 under ``make faults``); the seeds are
printed at the start and in the summary table, so a failure can be replayed. The table
also gives the pauses: the longest gap between ``inventory.positions`` records and, for
each restart, the time until every partition produced output again.
``make faults`` runs the ``faults`` cases and ``test_sigkill_bounded``, the short form
that ``make test`` runs too.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from supplyflow.app.exceptions import AppError
from supplyflow.app.processes import STOP_TIMEOUT_S, WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.settings import Settings
from supplyflow.app.topics import INPUT_TOPICS, ensure_topics, read_topic
from tests.integration.fault_checks import Report, Row, Verifier, milli_position, output_pauses
from tests.integration.fault_input import InputRecord, build_input, entity_view, replay
from tests.integration.fault_ops import (
    BackgroundProducer,
    TransitionWatch,
    broker_config,
    committed_input,
    fault_seeds,
    restart_broker,
    wait_for,
)
from tests.integration.worker_http import http_json

pytestmark = pytest.mark.integration

FULL_EVENTS: Final = 100_000
BOUNDED_EVENTS: Final = 20_000
#: The zero-crossing case: this much generated input, and hot positions crossing zero
#: all along (about 460 records each) mixed in.
CROSSING_EVENTS: Final = 40_000
HOT_POSITIONS: Final = 16
#: At most this many kills of both workers, each right after a transition was written.
CROSSING_KILLS: Final = 8
#: Waiting for the next transition (none comes once the input is done).
TRANSITION_S: Final = 30.0
#: Whole case, including producing 100k records and up to 6 rebalances on a busy machine.
CASE_TIMEOUT_S: Final = 2400
BOUNDED_TIMEOUT_S: Final = 600
WORKER_READY_S: Final = 180.0
#: From the end of the faults to exact output (processing the backlog included).
SETTLE_S: Final = 480.0
#: Once exact, the checks run again after this long: a late duplicate would show then.
RECHECK_AFTER_S: Final = 5.0
CHECK_EVERY_S: Final = 3.0
#: Waiting for the group to get past a point of the stream (a kill, a join...).
PROGRESS_S: Final = 600.0
PRODUCE_S: Final = 900.0
#: Once the output is exact, every running worker must also say it is running.
HEALTHY_AT_END_S: Final = 60.0
HTTP_SAMPLE: Final = 60
NO_SLA: Final = {
    "SUPPLYFLOW_SLA_PO_ACK": "",
    "SUPPLYFLOW_SLA_ORDER_ACK": "",
    "SUPPLYFLOW_SLA_INVOICE": "",
}

Factory = Callable[..., WorkerProcess]


class FaultRun:
    """One case: its input, its workers, its faults, and its row in the summary table."""

    def __init__(
        self,
        case: str,
        seed: int,
        events: int,
        bootstrap: str,
        names: dict[str, str],
        start_worker: Factory,
        row: Row,
        *,
        hot: int = 0,
        apply_order: str = "arrival",
    ) -> None:
        #: the workers' SUPPLYFLOW_APPLY_ORDER; the oracle applies the input the same way
        self.apply_order = apply_order
        self.settings = Settings(
            bootstrap=bootstrap, topic_prefix=names["prefix"], app_id=names["app_id"], partitions=4
        )
        self.records = build_input(seed, names["app_id"], events, hot=hot)
        self.rng = random.Random(seed)
        self.factory = start_worker
        self.workers: dict[int, WorkerProcess] = {}
        self.row = row
        row.sent = len(self.records)  # until verify() counts what Kafka holds
        #: wall clock (epoch s) of each fault (kill, stop, broker down) and each restart of
        #: a worker or the broker, for the pauses
        self.faults_at: list[float] = []
        self.restarted_at: list[float] = []
        self.started = time.monotonic()
        asyncio.run(ensure_topics(self.settings))

    def note(self, text: str) -> None:
        at = f"{time.monotonic() - self.started:6.1f}s ({_clock(time.time())})"
        self.row.notes.append(f"{at} {text}")

    def start(self, n: int, *, wait: bool = True) -> WorkerProcess:
        worker = self.factory(n, **NO_SLA, SUPPLYFLOW_APPLY_ORDER=self.apply_order)
        self.workers[n] = worker
        if wait:
            worker.wait_healthy(WORKER_READY_S)
        return worker

    def restart(self, n: int) -> WorkerProcess:
        self.row.restarts += 1
        self.restarted_at.append(time.time())
        return self.start(n, wait=False)

    def part(self, start: float, end: float) -> list[Any]:
        return self.records[int(len(self.records) * start) : int(len(self.records) * end)]

    def produce(self, start: float = 0.0, end: float = 1.0) -> None:
        asyncio.run(produce_records(self.settings, self.part(start, end)))

    def background(self, start: float = 0.0, end: float = 1.0) -> BackgroundProducer:
        """Produce in ~40 chunks with a pause after each: input keeps arriving for a while."""
        records = self.part(start, end)
        return BackgroundProducer(self.settings, records, max(500, len(records) // 40), 0.5).start()

    def wait_processed(self, fraction: float) -> int:
        """Until the group has committed ``fraction`` of all input; returns the count."""
        target = int(len(self.records) * fraction)
        committed = [0]

        def reached() -> bool:
            committed[0] = committed_input(self.settings)
            return committed[0] >= target

        wait_for(f"{fraction:.0%} of the input processed", reached, PROGRESS_S)
        return committed[0]

    def read_input(self) -> list[InputRecord]:
        """The input as Kafka holds it, in the order the workers apply it: per partition in
        offset order, or (timestamp order) by (timestamp, partition, offset) per topic."""
        out: list[tuple[tuple[Any, ...], InputRecord]] = []
        by_time = self.apply_order == "timestamp"
        for topic in INPUT_TOPICS:
            records = asyncio.run(read_topic(self.settings.bootstrap, self.settings.topic(topic)))
            for r in records:
                where = (r.timestamp, r.partition, r.offset) if by_time else (r.partition, r.offset)
                headers = list(r.headers or ())
                out.append(
                    (
                        (topic, *where),
                        InputRecord(topic, r.partition, r.offset, r.key, r.value, headers),
                    )
                )
        out.sort(key=lambda pair: pair[0])
        return [record for _, record in out]

    def verify(self, answering: WorkerProcess) -> None:
        """Wait until the output is exact (or time runs out) and fill in the row."""
        records = self.read_input()
        assert len(records) == len(self.records), "input topics do not hold what was produced"
        expected = replay(records)
        row = self.row
        row.sent = expected.sent
        row.applied = expected.outcomes["applied"]
        row.dup_stale = expected.outcomes["duplicate"] + expected.outcomes["stale"]
        assert expected.dead_letters, "the input must exercise the dead-letter path"
        verifier = Verifier(self.settings, expected)
        try:
            report = _settle(verifier)
            http = _http_problems(answering, expected, self.rng) if report.ok else []
        finally:
            verifier.close()
        pauses = output_pauses(verifier.output_times, self.restarted_at, self.faults_at)
        row.longest_gap = f"{pauses.longest_s:.1f}"
        row.resumed = "/".join("-" if r is None else f"{r:.1f}" for r in pauses.resumed_s) or "-"
        self.note(f"longest output gap {pauses.longest_s:.1f}s, from {_clock(pauses.longest_at)}")
        problems = report.problems
        row.positions = _verdict(problems["positions"], f"exact, {len(expected.positions)} keys")
        row.exceptions = _verdict(
            problems.get("exceptions", ["not reached"]), f"{report.transitions} as expected"
        )
        accounting = problems.get("applied", ["not reached"]) + problems.get("dead letters", [])
        row.accounting = _verdict(accounting, "yes")
        row.dead_lettered = f"{report.dead_letters}/{len(expected.dead_letters)}"
        row.seconds = time.monotonic() - self.started
        if not report.ok:
            pytest.fail(f"{row.case} (seed {row.seed}) not exact:\n{report.describe()}")
        assert http == [], "HTTP answers differ from the oracle:\n" + "\n".join(http[:10])
        self._check_workers()
        row.result = "PASS"

    def _check_workers(self) -> None:
        """Workers still meant to run run and answer ``running``; none exited on its own."""
        for n, worker in self.workers.items():
            code = None if worker.proc is None else worker.proc.poll()
            if code is None:
                try:
                    worker.wait_healthy(HEALTHY_AT_END_S)
                except AppError as exc:
                    raise AssertionError(f"worker {n} is stuck at the end: {exc}") from None
            elif code not in (0, -signal.SIGKILL):  # stopped or killed by the case itself
                raise AssertionError(f"worker {n} exited with {code} on its own")


def _clock(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch_s)) + f".{int(epoch_s * 10) % 10}"


def _stop_cleanly(worker: WorkerProcess, name: str) -> None:
    code = worker.stop()
    assert code == 0, f"{name} did not exit on SIGTERM within {STOP_TIMEOUT_S:.0f}s ({code})"


def _verdict(problems: list[str], good: str) -> str:
    return good if not problems else f"{len(problems)} WRONG"


def _settle(verifier: Verifier) -> Report:
    deadline = time.monotonic() + SETTLE_S
    while True:
        report = verifier.check()
        if report.ok:
            time.sleep(RECHECK_AFTER_S)
            report = verifier.check(full=True)
            if report.ok:
                return report
        if time.monotonic() > deadline:
            return verifier.check(full=True)
        time.sleep(CHECK_EVERY_S)


def _http_problems(worker: WorkerProcess, expected: Any, rng: random.Random) -> list[str]:
    """A seeded sample of POs, orders and positions over HTTP equals the oracle."""
    problems = []
    for kind, path, states in (("po", "pos", expected.pos), ("order", "orders", expected.orders)):
        for key in rng.sample(sorted(states), min(HTTP_SAMPLE, len(states))):
            status, body = http_json(worker, f"/{path}/{key}")
            body["open_exceptions"] = sorted(e["exception_id"] for e in body["open_exceptions"])
            want = orjson.loads(orjson.dumps(entity_view(kind, states[key])))
            if status != 200 or body != want:
                problems.append(f"/{path}/{key}: {status} {body} != {want}")
    keys = sorted(expected.positions)
    for key in rng.sample(keys, min(HTTP_SAMPLE, len(keys))):
        sku, location = key.split("@")
        status, body = http_json(worker, f"/positions/{sku}/{location}")
        if status != 200 or milli_position(body) != expected.positions[key]:
            problems.append(f"/positions/{sku}/{location}: {status} {body}")
    return problems


#: Each kill case runs once per seed of the run (see ``fault_ops.fault_seeds``).
every_seed = pytest.mark.parametrize("fault_seed", fault_seeds(), ids=lambda seed: f"seed{seed}")


@pytest.fixture
def fault_seed() -> int:
    """The other cases run with the first seed."""
    return fault_seeds()[0]


@pytest.fixture
def fault_run(
    request: pytest.FixtureRequest,
    fault_seed: int,
    bootstrap: str,
    names: dict[str, str],
    start_worker: Factory,
    fault_table: list[Row],
) -> Callable[..., FaultRun]:
    case = request.node.originalname.removeprefix("test_")

    def make(events: int, *, hot: int = 0) -> FaultRun:
        row = Row(case, fault_seed)
        fault_table.append(row)
        return FaultRun(case, fault_seed, events, bootstrap, names, start_worker, row, hot=hot)

    return make


@pytest.mark.faults
@pytest.mark.timeout(CASE_TIMEOUT_S)
def test_input_already_in_kafka(fault_run: Callable[..., FaultRun]) -> None:
    run = fault_run(FULL_EVENTS)
    run.produce()
    run.row.faults = "all input before workers"
    first = run.start(0)
    run.start(1)
    run.verify(first)


@pytest.mark.faults
@pytest.mark.timeout(CASE_TIMEOUT_S)
def test_started_while_producing(fault_run: Callable[..., FaultRun]) -> None:
    run = fault_run(FULL_EVENTS)
    producer = run.background()
    try:
        wait_for(
            "a quarter produced", lambda: producer.produced >= len(run.records) // 4, PRODUCE_S
        )
        run.note(f"workers start with {producer.produced} records produced")
        run.row.faults = "workers start mid-production"
        first = run.start(0)
        run.start(1)
    finally:
        producer.join(PRODUCE_S)
    run.verify(first)


def _sigkills(run: FaultRun, kills: int) -> None:
    """Two workers; SIGKILL one at ``kills`` seeded random points and restart it."""
    points = sorted(run.rng.uniform(0.05, 0.85) for _ in range(kills))
    producer = run.background()
    try:
        run.start(0)
        run.start(1)
        for i, point in enumerate(points, 1):
            victim, pause = run.rng.randrange(2), run.rng.uniform(0.0, 3.0)
            done = run.wait_processed(point)
            run.faults_at.append(time.time())
            run.workers[victim].kill()
            run.note(f"SIGKILL #{i} worker {victim} at {done} committed; restart in {pause:.1f}s")
            time.sleep(pause)
            run.restart(victim)
        run.row.faults = f"{kills}x SIGKILL"
    finally:
        producer.join(PRODUCE_S)
    for worker in run.workers.values():
        worker.wait_healthy(WORKER_READY_S)
    run.verify(run.workers[0])


@pytest.mark.faults
@pytest.mark.timeout(CASE_TIMEOUT_S)
@every_seed
def test_sigkill_and_restart_six_times(fault_run: Callable[..., FaultRun]) -> None:
    _sigkills(fault_run(FULL_EVENTS), kills=6)


@pytest.mark.faults
@pytest.mark.timeout(CASE_TIMEOUT_S)
@every_seed
def test_sigkill_while_positions_cross_zero(fault_run: Callable[..., FaultRun]) -> None:
    """Both workers SIGKILLed the moment an ``OVERALLOCATION`` transition reaches
    ``exceptions`` (a worker wrote a batch's outputs and is about to write its states),
    while hot positions cross zero at every record of the input: whether a batch ends
    below zero depends on where its boundaries fall, so the restarted workers, batching
    differently, may disagree with what the killed one wrote."""
    run = fault_run(CROSSING_EVENTS, hot=HOT_POSITIONS)
    run.start(0)
    run.start(1)
    total = len(run.records)
    producer = BackgroundProducer(run.settings, run.records, total // 20, 0.5).start()
    try:
        with TransitionWatch(run.settings) as watch:
            for i in range(1, CROSSING_KILLS + 1):
                for worker in run.workers.values():
                    worker.wait_healthy(WORKER_READY_S)
                time.sleep(run.rng.uniform(0.0, 1.0))
                done = committed_input(run.settings)
                if done >= total:
                    break
                watch.arm()
                if not watch.wait(TRANSITION_S):
                    break
                run.faults_at.append(time.time())
                for worker in run.workers.values():
                    worker.kill()
                pause = run.rng.uniform(0.0, 2.0)
                run.note(f"SIGKILL #{i} both workers after a transition, at {done} committed")
                time.sleep(pause)
                run.restarted_at.append(time.time())
                for n in run.workers:
                    run.row.restarts += 1
                    run.start(n, wait=False)
    finally:
        producer.join(PRODUCE_S)
    run.row.faults = f"{len(run.faults_at)}x SIGKILL of both, on output"
    for worker in run.workers.values():
        worker.wait_healthy(WORKER_READY_S)
    run.verify(run.workers[0])


@pytest.mark.faults_bounded  # in make test as well as make faults
@pytest.mark.timeout(BOUNDED_TIMEOUT_S)
@every_seed
def test_sigkill_bounded(fault_run: Callable[..., FaultRun]) -> None:
    """The short form of the SIGKILL case: 20k records, two SIGKILLs."""
    _sigkills(fault_run(BOUNDED_EVENTS), kills=2)


@pytest.mark.faults
@pytest.mark.timeout(CASE_TIMEOUT_S)
def test_broker_restart_keeps_data(bootstrap: str, fault_run: Callable[..., FaultRun]) -> None:
    cfg = broker_config(bootstrap)
    run = fault_run(FULL_EVENTS)
    workers = [run.start(0), run.start(1)]
    pids = [w.proc.pid for w in workers if w.proc is not None]
    run.produce(0.0, 0.6)
    done = run.wait_processed(0.15)
    down_s = run.rng.uniform(3.0, 10.0)
    run.faults_at.append(time.time())
    stopped, started = restart_broker(cfg, down_s)
    run.restarted_at.append(time.time())
    run.note(f"broker down at {done} committed for {down_s:.1f}s: {stopped} / {started}")
    run.row.faults = f"broker down {down_s:.0f}s"
    producer = run.background(0.6, 1.0)
    producer.join(PRODUCE_S)
    run.verify(workers[0])
    assert [w.proc.pid for w in workers if w.proc is not None and w.alive()] == pids


@pytest.mark.faults
@pytest.mark.timeout(CASE_TIMEOUT_S)
def test_second_worker_joins_first_leaves(fault_run: Callable[..., FaultRun]) -> None:
    run = fault_run(FULL_EVENTS)
    producer = run.background()
    try:
        first = run.start(0)
        join_at, leave_at = sorted(run.rng.uniform(0.1, 0.8) for _ in range(2))
        run.note(f"worker 1 joins at {run.wait_processed(join_at)} committed")
        second = run.start(1)
        run.note(f"worker 0 leaves at {run.wait_processed(leave_at)} committed")
        run.row.faults = "join + leave"
        _stop_cleanly(first, "worker 0")
    finally:
        producer.join(PRODUCE_S)
    run.verify(second)


@pytest.mark.faults
@pytest.mark.timeout(CASE_TIMEOUT_S)
def test_restart_with_data_dir_deleted(fault_run: Callable[..., FaultRun]) -> None:
    run = fault_run(FULL_EVENTS)
    producer = run.background()
    try:
        first = run.start(0)
        run.start(1)
        done = run.wait_processed(run.rng.uniform(0.2, 0.7))
        run.row.faults = "data dir deleted"
        run.faults_at.append(time.time())
        _stop_cleanly(run.workers[1], "worker 1")
        data_dir = Path(run.workers[1].env["SUPPLYFLOW_DATA_DIR"])
        shutil.rmtree(data_dir)
        run.note(f"worker 1 stopped at {done} committed, {data_dir} deleted, restarted")
        run.restart(1).wait_healthy(WORKER_READY_S)
    finally:
        producer.join(PRODUCE_S)
    run.verify(first)
