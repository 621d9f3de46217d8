"""What a fault run does to the system: produce in the background, stop and start the broker,
kill and restart workers, and watch the consumer group's progress to pick the moments."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from supplyflow.app import local_kafka
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import SampleRecord
from supplyflow.app.settings import Settings
from supplyflow.app.topics import EXCEPTIONS, INPUT_TOPICS, input_group

__all__ = [
    "SEED_ENV",
    "BackgroundProducer",
    "TransitionWatch",
    "broker_config",
    "committed_input",
    "fault_seeds",
    "input_end",
    "restart_broker",
    "wait_for",
]

#: ``n`` or ``n,m,...``: the seeds to run (a failed run's seeds repeat it).
SEED_ENV: Final = "SUPPLYFLOW_FAULTS_SEED"
#: Without ``SUPPLYFLOW_FAULTS_SEED``: how many random seeds each kill case runs with
#: (``make faults`` sets 3); every other case runs with the first.
ROUNDS_ENV: Final = "SUPPLYFLOW_FAULTS_ROUNDS"


@functools.cache
def fault_seeds() -> tuple[int, ...]:
    """The seeds of this run: from :data:`SEED_ENV`, else :data:`ROUNDS_ENV` random ones
    (at least one). Computed once per process, so collection and the report agree."""
    text = os.environ.get(SEED_ENV, "").strip()
    if text:
        try:
            return tuple(int(part) for part in text.split(","))
        except ValueError:
            raise ValueError(
                f"{SEED_ENV}={text!r}: give a seed or seeds, e.g. 78334,4711"
            ) from None
    rounds = max(1, int(os.environ.get(ROUNDS_ENV, "1") or "1"))
    rng = random.SystemRandom()
    return tuple(rng.randrange(1, 1_000_000) for _ in range(rounds))


#: A whole ``supplyflow kafka up`` (JVM start, log recovery) on a busy 2-core machine.
BROKER_CLI_S: Final = 240.0
_POLL_S: Final = 0.5


class TransitionWatch:
    """Watches ``exceptions`` from a thread; :meth:`wait` returns once an ``OVERALLOCATION``
    transition arrived after :meth:`arm`: the moment a worker has written a batch's
    outputs and is about to write its states."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._seen = threading.Event()
        self._armed = False
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="transition-watch", daemon=True)

    def __enter__(self) -> TransitionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def arm(self) -> None:
        self._seen.clear()
        self._armed = True

    def wait(self, timeout: float) -> bool:
        """True once a transition arrived after :meth:`arm` (False: none within timeout)."""
        seen = self._seen.wait(timeout)
        self._armed = False
        if self.error is not None:
            raise self.error
        return seen

    def _run(self) -> None:
        try:
            asyncio.run(self._watch())
        except BaseException as exc:  # noqa: BLE001  # re-raised in the test thread by wait()
            self.error = exc
            self._seen.set()

    async def _watch(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=None, fetch_max_wait_ms=50
        )
        await consumer.start()
        try:
            topic = self.settings.topic(EXCEPTIONS)
            tps = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                found = any(
                    b'"OVERALLOCATION"' in (r.value or b"") for rs in batch.values() for r in rs
                )
                if found and self._armed:
                    self._seen.set()
        finally:
            await consumer.stop()


class BackgroundProducer:
    """Produces records in chunks from a thread, pausing between chunks, in order."""

    def __init__(
        self, settings: Settings, records: Sequence[SampleRecord], chunk: int, pause_s: float
    ) -> None:
        self.settings = settings
        self.records = records
        self.chunk = chunk
        self.pause_s = pause_s
        self.produced = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fault-producer", daemon=True)

    def start(self) -> BackgroundProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for start in range(0, len(self.records), self.chunk):
                part = self.records[start : start + self.chunk]
                asyncio.run(produce_records(self.settings, part))
                self.produced = start + len(part)
                time.sleep(self.pause_s)
        except BaseException as exc:  # noqa: BLE001  # re-raised in the test thread by join()
            self.error = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> int:
        """Wait for the last chunk; re-raise a producer failure. Returns records produced."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"producer still running after {timeout:.0f}s ({self.produced})")
        if self.error is not None:
            raise self.error
        return self.produced


async def _committed(settings: Settings) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(input_group(settings))
    finally:
        await admin.close()
    names = {settings.topic(t) for t in INPUT_TOPICS}
    return sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic in names)


def committed_input(settings: Settings) -> int:
    """Input records the workers have committed (a lower bound of what they processed)."""
    return asyncio.run(_committed(settings))


async def _ends(settings: Settings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [
            TopicPartition(settings.topic(t), p)
            for t in INPUT_TOPICS
            for p in range(settings.partitions)
        ]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def input_end(settings: Settings) -> int:
    """Records in the input topics right now."""
    return asyncio.run(_ends(settings))


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> float:
    """Poll ``predicate`` until true; returns seconds waited; raises TimeoutError."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(_POLL_S)
    return time.monotonic() - started


def broker_config(bootstrap: str) -> local_kafka.LocalKafkaConfig:
    """The local broker serving ``bootstrap`` (its home from SUPPLYFLOW_KAFKA_HOME or cwd)."""
    port = bootstrap.rpartition(":")[2]
    if "," in bootstrap or not port.isdecimal():
        raise AssertionError(f"the broker restart case needs one local broker, not {bootstrap}")
    cfg = local_kafka.default_config(port=int(port))
    state = local_kafka.status(cfg)
    if not (state.running and state.ready):
        raise AssertionError(
            f"the broker at {bootstrap} is not the one `supplyflow kafka up --port {port}` runs "
            f"from {cfg.home} ({state.detail}): start it that way (make faults does)"
        )
    return cfg


def _kafka_cli(action: str, cfg: local_kafka.LocalKafkaConfig) -> str:
    command = [sys.executable, "-m", "supplyflow", "kafka", action]
    done = subprocess.run(
        [*command, "--home", str(cfg.home), "--port", str(cfg.port)],
        capture_output=True,
        text=True,
        timeout=BROKER_CLI_S,
        check=False,
        env=dict(os.environ),
    )
    if done.returncode != 0:
        raise AssertionError(f"kafka {action} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout.strip()


def restart_broker(cfg: local_kafka.LocalKafkaConfig, down_s: float) -> tuple[str, str]:
    """``supplyflow kafka down``, ``down_s`` seconds without a broker, ``kafka up``."""
    stopped = _kafka_cli("down", cfg)
    if local_kafka.wait_until_ready(cfg.bootstrap, 1.0):
        raise AssertionError(f"a broker still answers at {cfg.bootstrap} after down: {stopped}")
    time.sleep(down_s)
    return stopped, _kafka_cli("up", cfg)
