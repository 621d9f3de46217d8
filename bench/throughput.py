"""End-to-end throughput, side by side on the same input in one run.

1. Produce a generated workload (``supplyflow.app.workload``) to fresh topics.
2. Ceiling: a bare aiokafka consumer reading the three input topics and decoding every
   record with supplyflow's decoder.
3. The usual way: :mod:`bench.naive` (one Faust table write per event).
4. supplyflow: one worker process, from start until every input record is processed.

Each figure is events per second over the same records; the report gives the ratios,
which is what survives a shared, noisy machine.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer

from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.settings import Settings
from supplyflow.app.topics import INPUT_TOPICS, delete_topics, ensure_topics
from supplyflow.app.workload import Scenario, generate
from supplyflow.codecs import DecodeError, decode_input

__all__ = ["Result", "run"]

RESULTS: Final = Path(__file__).resolve().parent / "results"
#: Longest any one measurement may take before the benchmark gives up on it.
MEASURE_TIMEOUT_S: Final = 900.0
_POLL_S: Final = 0.2


@dataclass
class Result:
    name: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def _raw_consume(settings: Settings, expected: int) -> Result:
    consumer = AIOKafkaConsumer(
        *(settings.topic(t) for t in INPUT_TOPICS),
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    names = {settings.topic(t): t for t in INPUT_TOPICS}
    seen = 0
    started = time.perf_counter()
    try:
        while seen < expected and time.perf_counter() - started < MEASURE_TIMEOUT_S:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for record in records:
                    try:  # noqa: SIM105 - cheaper than contextlib.suppress in this loop
                        decode_input(
                            names[record.topic],
                            record.key,
                            record.value,
                            list(record.headers or ()),
                            max_bytes=settings.max_record_bytes,
                        )
                    except DecodeError:
                        pass
                    seen += 1
    finally:
        await consumer.stop()
    return Result("aiokafka consumer + decode (ceiling)", seen, time.perf_counter() - started)


def _naive(settings: Settings, expected: int, work: Path) -> Result:
    env = {
        **os.environ,
        "BENCH_BOOTSTRAP": settings.bootstrap,
        "BENCH_PREFIX": settings.topic_prefix,
        "BENCH_APP_ID": f"{settings.app_id}-naive",
        "BENCH_DATA_DIR": str(work / "naive"),
        "BENCH_PARTITIONS": str(settings.partitions),
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.naive"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # Faust's worker turns print() into log lines on stderr
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    processed = 0
    first_at: float | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "processed " in line:
                processed = int(line.rsplit("processed ", 1)[1].split()[0])
                if processed and first_at is None:
                    first_at = time.perf_counter()
                if processed >= expected or time.perf_counter() - started > MEASURE_TIMEOUT_S:
                    break
    finally:
        proc.terminate()
        proc.wait(30)
    begin = first_at if first_at is not None else started
    return Result(
        "naive Faust agent (table write per event)", processed, time.perf_counter() - begin
    )


def _supplyflow(settings: Settings, expected: int, work: Path) -> Result:
    env = {
        "SUPPLYFLOW_BOOTSTRAP": settings.bootstrap,
        "SUPPLYFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "SUPPLYFLOW_APP_ID": settings.app_id,
        "SUPPLYFLOW_DATA_DIR": str(work / "supplyflow"),
        "SUPPLYFLOW_PARTITIONS": str(settings.partitions),
        "SUPPLYFLOW_LOG_LEVEL": "WARNING",
    }
    worker = WorkerProcess(env, work / "worker.log")
    worker.start()
    try:
        worker.wait_healthy(MEASURE_TIMEOUT_S)
        first_at: float | None = None
        processed = 0.0
        deadline = time.perf_counter() + MEASURE_TIMEOUT_S
        while processed < expected and time.perf_counter() < deadline:
            samples = worker.metrics()
            processed = sum(
                v for (name, _), v in samples.items() if name == "supplyflow_events_total"
            )
            if processed and first_at is None:
                first_at = time.perf_counter()
            time.sleep(_POLL_S)
        begin = first_at if first_at is not None else time.perf_counter()
        return Result("supplyflow, 1 worker", int(processed), time.perf_counter() - begin)
    finally:
        worker.stop()


def run(bootstrap: str, scale: float, seed: int = 7) -> dict[str, Any]:
    """Run the throughput comparison; returns the report (also written to results/)."""
    run_id = "bench-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    settings = Settings(bootstrap=bootstrap, topic_prefix=f"{run_id}.", app_id=run_id, partitions=8)
    base = Scenario()
    shape = Scenario(
        pos=max(1, int(base.pos * scale)),
        orders=max(1, int(base.orders * scale)),
        skus=max(2, int(base.skus * max(1.0, scale))),
        locations=base.locations,
        adjustments=max(1, int(base.adjustments * scale)),
    )
    records = generate(seed, run_id, shape)
    work = Path(tempfile.mkdtemp(prefix=f"supplyflow-{run_id}-"))
    print(f"producing {len(records)} records to {settings.topic_prefix}* ...", flush=True)
    asyncio.run(ensure_topics(settings))
    asyncio.run(produce_records(settings, records))
    try:
        results = [
            asyncio.run(_raw_consume(settings, len(records))),
            _naive(settings, len(records), work),
            _supplyflow(settings, len(records), work),
        ]
    finally:
        asyncio.run(delete_topics(bootstrap, (settings.topic_prefix, f"{run_id}-")))
    ceiling, naive, ours = results
    report = {
        "date": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "events": len(records),
        "results": [asdict(r) | {"events_per_s": round(r.rate)} for r in results],
        "ratios": {
            "supplyflow_vs_naive": round(ours.rate / naive.rate, 2) if naive.rate else None,
            "supplyflow_vs_ceiling": round(ours.rate / ceiling.rate, 3) if ceiling.rate else None,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{run_id}-{platform.node()}.json"
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(markdown(report))
    print(f"\nwritten {out}")
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"{report['events']} events, {report['cpus']} CPUs, {report['date'][:19]}Z",
        "",
        "| pipeline | events | seconds | events/s |",
        "|---|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(f"| {r['name']} | {r['events']} | {r['seconds']:.1f} | {r['events_per_s']} |")
    ratios = report["ratios"]
    lines += [
        "",
        f"supplyflow / naive Faust: {ratios['supplyflow_vs_naive']}x; "
        f"supplyflow / ceiling: {ratios['supplyflow_vs_ceiling']}",
    ]
    return "\n".join(lines)
