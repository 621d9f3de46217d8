"""What every benchmark part shares: plans, isolated deployments, workers, Kafka read-backs.

A :class:`Deployment` is one supplyflow installation on the broker (its own topic prefix,
app id and work folder), so the parts of one run never see each other's records. Times
come from Kafka record timestamps where they can (the worker stamps each record it
sends), so polling intervals do not blur them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from supplyflow.app.exceptions import AppError
from supplyflow.app.partitioners import Partitioner
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import SampleRecord
from supplyflow.app.settings import Settings
from supplyflow.app.topics import (
    DLQ,
    EXCEPTIONS,
    INPUT_TOPICS,
    POSITIONS,
    delete_topics,
    deltas_topic_name,
    ensure_topics,
)

__all__ = [
    "PLANS",
    "SCRAPE_TIMEOUT_S",
    "BenchError",
    "Deployment",
    "Plan",
    "dir_bytes",
    "edge_timestamps",
    "end_offsets",
    "prime",
    "processed",
    "read_since",
    "rss_bytes",
    "wait_drained",
]

#: Partitions of every benchmark topic (the worker's default).
PARTITIONS: Final = 8
#: A worker joining a group and finishing recovery takes ~5 s on an idle machine.
WORKER_READY_S: Final = 180.0
#: Outputs count as complete when their end offsets have not moved for this long.
QUIET_S: Final = 0.5
_POLL_S: Final = 0.25
#: How long a drain poll waits for a worker's ``/metrics``. A worker working off millions
#: of records stops answering for seconds at a time: in the state part (scale 10) its full
#: garbage collections took 2.1 s at 1.7M records processed, and a scrape that met one
#: together with an agent batch passed the 5 s default. The polls count records; they do
#: not measure how fast the worker answers.
SCRAPE_TIMEOUT_S: Final = 60.0
_FETCH_BYTES: Final = 8 * 1024 * 1024
#: What Faust logs when an agent's loop raised: the agent stops consuming.
_AGENT_CRASHED: Final = b"Crashed reason="


class BenchError(AppError):
    """A benchmark part could not finish; the message says what to look at."""


@dataclass(frozen=True)
class Plan:
    """How big each part of a run is."""

    mode: str
    #: x the distributor workload, all pre-produced, for the throughput comparison
    throughput_scale: float
    #: offered loads (events/s) of the latency part, each for ``load_seconds``
    loads: tuple[int, ...]
    load_seconds: float
    #: x the distributor workload held as state (10 = 1,000,000 SKU-locations)
    state_scale: float
    #: longest wait for any one part to drain before it is reported as failed
    timeout_s: float


PLANS: Final = {
    "full": Plan("full", 1.0, (1_000, 5_000, 20_000), 30.0, 10.0, 7200.0),
    "quick": Plan("quick", 0.05, (1_000, 5_000, 20_000), 2.0, 0.05, 300.0),
    # The CI smoke run: a few seconds per part, to prove the harness works, not to measure.
    "smoke": Plan("smoke", 0.005, (300, 1_000), 2.0, 0.005, 120.0),
}


class Deployment:
    """One isolated supplyflow installation: topic prefix, app id, work folder."""

    def __init__(self, bootstrap: str, run_id: str, name: str, work: Path) -> None:
        self.name = name
        self.settings = Settings(
            bootstrap=bootstrap,
            topic_prefix=f"{run_id}-{name}.",
            app_id=f"{run_id}-{name}",
            partitions=PARTITIONS,
        )
        self.work = work / name
        self.work.mkdir(parents=True, exist_ok=True)
        self.workers: list[WorkerProcess] = []
        self._log_read: dict[Path, int] = {}

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    @property
    def outputs(self) -> list[str]:
        """Topics the workers write to because of input: what "emitted" is measured on."""
        return [self.topic(POSITIONS), self.topic(EXCEPTIONS), self.topic(DLQ)]

    def data_dir(self, index: int | str) -> Path:
        return self.work / f"worker-{index}"

    async def create_topics(self) -> None:
        """Create the topics and wait until every partition has a leader."""
        await ensure_topics(self.settings)
        names = [self.topic(t) for t in INPUT_TOPICS]
        deadline = time.monotonic() + WORKER_READY_S
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                described = await admin.describe_topics(names)
            finally:
                await admin.close()
            leaders = [p["leader"] for t in described for p in t.get("partitions", ())]
            if len(leaders) == len(names) * self.settings.partitions and min(leaders) >= 0:
                return
            await asyncio.sleep(_POLL_S)
        raise BenchError(f"the topics of {self.settings.topic_prefix}* have no leaders")

    async def produce(
        self,
        records: Iterable[SampleRecord],
        on_progress: Callable[[int], None] | None = None,
        partitioner: Partitioner | None = None,
    ) -> int:
        await self.create_topics()
        return await produce_records(
            self.settings, records, on_progress=on_progress, partitioner=partitioner
        )

    def start_worker(self, index: int | str, processes: int = 1) -> WorkerProcess:
        """A ``supplyflow worker`` (with ``processes`` > 1: a supervisor and its processes)."""
        env = {
            "SUPPLYFLOW_BOOTSTRAP": self.settings.bootstrap,
            "SUPPLYFLOW_TOPIC_PREFIX": self.settings.topic_prefix,
            "SUPPLYFLOW_APP_ID": self.settings.app_id,
            "SUPPLYFLOW_PARTITIONS": str(self.settings.partitions),
            "SUPPLYFLOW_DATA_DIR": str(self.data_dir(index)),
            "SUPPLYFLOW_LOG_LEVEL": "WARNING",
        }
        worker = WorkerProcess(env, self.work / f"worker-{index}.log", processes=processes)
        worker.start()
        self.workers.append(worker)
        return worker

    def start_workers(self, count: int, processes: int = 1) -> list[WorkerProcess]:
        started = [self.start_worker(i, processes) for i in range(count)]
        for worker in started:
            worker.wait_healthy(WORKER_READY_S)
        return started

    def stop_workers(self, *, graceful: bool = True) -> None:
        """Stop every worker: SIGTERM to all at once and wait, or SIGKILL (state unwanted)."""
        for worker in self.workers:
            if graceful and worker.proc is not None and worker.alive():
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            if not graceful:
                worker.kill()
            worker.stop()
        self.workers = []

    def check_workers(self) -> None:
        """Raise if a worker exited or one of its agents crashed (it would never drain)."""
        for worker in self.workers:
            if not worker.alive():
                raise BenchError(f"a worker exited during the run:\n{self.log_tails()}")
            offset = self._log_read.get(worker.log_path, 0)
            try:
                with worker.log_path.open("rb") as log:
                    log.seek(offset)
                    new = log.read()
            except OSError:
                continue
            self._log_read[worker.log_path] = offset + len(new)
            if _AGENT_CRASHED in new:
                raise BenchError(
                    f"an agent of worker {worker.log_path.stem} crashed; its log says:\n"
                    f"{worker.log_tail(60)}"
                )

    def log_tails(self) -> str:
        return "\n".join(f"--- {w.log_path} ---\n{w.log_tail(30)}" for w in self.workers)

    async def delete(self) -> None:
        """Remove the deployment's topics from the broker and its local state."""
        self.stop_workers(graceful=False)
        await delete_topics(
            self.bootstrap, (self.settings.topic_prefix, f"{self.settings.app_id}-")
        )
        shutil.rmtree(self.work, ignore_errors=True)

    def deltas_topic(self) -> str:
        return deltas_topic_name(self.settings)


def prime(bootstrap: str, run_id: str, work: Path, names: Iterable[str]) -> None:
    """Start and stop one worker per deployment before any input exists, all at once.

    A worker's first start creates its changelog topics; a worker that processes input
    while they are that new can crash its position agent (see docs/benchmarks.md,
    "Running them"). Priming makes the measured starts ordinary restarts of the deployment.
    """
    deployments = [Deployment(bootstrap, run_id, name, work) for name in names]
    try:
        for dep in deployments:
            asyncio.run(dep.create_topics())
            dep.start_worker("prime")
        for dep in deployments:
            for worker in dep.workers:
                worker.wait_healthy(WORKER_READY_S)
    finally:
        for dep in deployments:  # SIGTERM: each leaves the group, so none is waited for
            for worker in dep.workers:
                if worker.proc is not None and worker.alive():
                    worker.proc.send_signal(signal.SIGTERM)
        for dep in deployments:
            dep.stop_workers()
            shutil.rmtree(dep.data_dir("prime"), ignore_errors=True)


def processed(workers: Iterable[WorkerProcess], timeout: float = SCRAPE_TIMEOUT_S) -> int:
    """Input records the workers (each of their processes) have finished (applied,
    duplicate, stale or dead-lettered)."""
    total = 0.0
    for worker in workers:
        for process in range(worker.processes):
            for (name, _), value in worker.metrics(timeout, process).items():
                if name == "supplyflow_events_total":
                    total += value
    return int(total)


async def group_members(bootstrap: str, group_id: str) -> int:
    """Members of a consumer group once it is stable (0 while it rebalances or is empty)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group_id])
        (group,) = response.to_object()["groups"]
        stable = group["state"] == "Stable"
        return len(group["members"]) if stable else 0
    finally:
        await admin.close()


def wait_group(bootstrap: str, group_id: str, members: int, timeout: float) -> None:
    """Until the consumer group is stable with ``members`` members."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if asyncio.run(group_members(bootstrap, group_id)) == members:
            return
        time.sleep(_POLL_S)
    raise BenchError(
        f"consumer group {group_id} did not settle with {members} members in {timeout:.0f}s"
    )


async def _partitions(bootstrap: str, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` (which must exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [
        TopicPartition(t["topic"], p["partition"])
        for t in described
        if t.get("error_code", 0) == 0
        for p in sorted(t["partitions"], key=lambda p: p["partition"])
    ]


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=_FETCH_BYTES,
        fetch_max_bytes=_FETCH_BYTES * 4,
    )


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> dict[TopicPartition, int]:
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        partitions = await _partitions(bootstrap, topics)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends
    finally:
        await consumer.stop()


async def edge_timestamps(bootstrap: str, topics: Iterable[str]) -> tuple[int | None, int | None]:
    """Timestamps (ms) of the first and the last record over all partitions of ``topics``."""
    consumer = _consumer(bootstrap)
    await consumer.start()
    first: int | None = None
    last: int | None = None
    try:
        partitions = await _partitions(bootstrap, topics)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            if ends[tp] <= starts[tp]:
                continue
            consumer.assign([tp])
            consumer.seek(tp, starts[tp])
            record = await consumer.getone(tp)
            first = record.timestamp if first is None else min(first, record.timestamp)
            consumer.seek(tp, ends[tp] - 1)
            record = await consumer.getone(tp)
            last = record.timestamp if last is None else max(last, record.timestamp)
    finally:
        await consumer.stop()
    return first, last


async def read_since(
    bootstrap: str, topic: str, start: dict[TopicPartition, int] | None = None
) -> list[Any]:
    """Records of ``topic`` from ``start`` (default: the beginning) up to its end now."""
    consumer = _consumer(bootstrap)
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = await _partitions(bootstrap, [topic])
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, (start or {}).get(tp, 0))
        todo = {tp for tp in partitions if ends[tp] > (start or {}).get(tp, 0)}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, messages in batch.items():
                records.extend(m for m in messages if m.offset < ends[tp])
                if messages and messages[-1].offset >= ends[tp] - 1:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return records


def wait_drained(
    deployment: Deployment, expected: int, timeout: float, *, progress: bool = False
) -> bool:
    """Until the workers have processed ``expected`` input records and the outputs are quiet.

    Returns False if that did not happen within ``timeout`` seconds; raises if a worker died.
    A poll the workers do not answer within :data:`SCRAPE_TIMEOUT_S` counts as not done yet.
    """
    deadline = time.monotonic() + timeout
    # Outputs only: what users see (the deltas topic is internal).
    topics = list(deployment.outputs)
    done = 0
    while time.monotonic() < deadline:
        deployment.check_workers()
        try:
            done = processed(deployment.workers, min(SCRAPE_TIMEOUT_S, _remaining(deadline)))
        except TimeoutError:
            continue  # busy; check_workers above tells a dead worker from a slow one
        if done >= expected:
            break
        time.sleep(_POLL_S)
    else:
        return False
    before = sum(asyncio.run(end_offsets(deployment.bootstrap, topics)).values())
    while time.monotonic() < deadline:
        time.sleep(QUIET_S)
        deployment.check_workers()
        now = sum(asyncio.run(end_offsets(deployment.bootstrap, topics)).values())
        if now == before:
            return True
        before = now
    return False


def _remaining(deadline: float) -> float:
    return max(_POLL_S, deadline - time.monotonic())


def rss_bytes(worker: WorkerProcess) -> int:
    """Resident memory of a worker (Linux ``/proc``), 0 if it is not running or unreadable."""
    try:
        status = Path(f"/proc/{worker.proc.pid}/status").read_text() if worker.proc else ""
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(worker: WorkerProcess) -> float:
    """CPU time (user + system) a worker used so far (Linux ``/proc``), 0 if not readable;
    with ``--processes N``, its supervisor's and every worker process's."""
    if worker.proc is None:
        return 0.0
    pids = [worker.proc.pid, *(worker.child_pids() if worker.processes > 1 else ())]
    return sum(_process_cpu_seconds(pid) for pid in pids)


def _process_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total
