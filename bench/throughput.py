"""Sustained end-to-end throughput, side by side on the same pre-produced input.

The distributor workload (:data:`supplyflow.app.workload.DISTRIBUTOR` x the plan's scale)
is produced, in full, before anything reads it, once per deployment that needs its own
topics. Then, one after the other:

1. ceiling: a bare aiokafka consumer reading the three input topics and decoding every
   record with supplyflow's decoder, nothing else;
2. the usual way: :mod:`bench.naive` (one Faust table write per event);
3. supplyflow, one worker process; 4. supplyflow, two worker processes;
5. supplyflow, one worker, on a copy produced with librdkafka's default partitioner
   (CRC32, as kcat and confluent-kafka): most records arrive in a partition that does
   not own their key and take the routing hop; beside 3, that is the hop's cost;
6. supplyflow, one ``supplyflow worker --processes 2`` (a supervisor and two worker
   processes): beside 4, what the supervisor costs; beside 3, what one command gains.

A supplyflow run is timed from the first record its workers wrote (a position delta,
position, exception or dead letter) to the last one they emitted, from Kafka timestamps,
over all the input. Workers started together do not join the group at the same moment:
the report says how many records the first one processed before the group was complete
(the time includes that and the rebalance, as it would in a real start). The last
position per key is then compared with the reference computation of the valid input: a
run that is not exact is reported as such.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer

from bench.harness import (
    BenchError,
    Deployment,
    Plan,
    cpu_seconds,
    edge_timestamps,
    processed,
    read_since,
    wait_drained,
    wait_group,
)
from supplyflow.agents.runtime.keys import partition_of
from supplyflow.app.partitioners import partitioner
from supplyflow.app.sample import SampleRecord
from supplyflow.app.topics import INPUT_TOPICS, POSITIONS
from supplyflow.app.workload import DISTRIBUTOR, iter_records
from supplyflow.codecs import DecodeError, decode_input
from supplyflow.codecs.events import AnyEvent
from supplyflow.codecs.quantity import parse_qty
from supplyflow.tables.reference import POSITION_FIELDS, reference_positions

__all__ = ["run_supervised", "run_throughput", "valid_reference"]

_MAX_BYTES: Final = 1 << 20
#: A 30-day backfill of the mid-size (distributor) profile, as the benchmark targets count
#: it: about 4.5M events, to replay in under 3 minutes.
BACKFILL_EVENTS: Final = 4_500_000
_ROOT: Final = Path(__file__).resolve().parents[1]


def _result(key: str, name: str, events: int, seconds: float, **extra: Any) -> dict[str, Any]:
    rate = events / seconds if seconds > 0 else 0.0
    return {
        "key": key,
        "name": name,
        "events": events,
        "seconds": round(seconds, 6),
        "events_per_s": round(rate),
        **extra,
    }


async def _ceiling(dep: Deployment, expected: int, limit_s: float) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        *(dep.topic(t) for t in INPUT_TOPICS),
        bootstrap_servers=dep.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    names = {dep.topic(t): t for t in INPUT_TOPICS}
    seen = 0
    started = time.perf_counter()
    try:
        while seen < expected and time.perf_counter() - started < limit_s:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for record in records:
                    try:  # noqa: SIM105 - cheaper than contextlib.suppress in this loop
                        decode_input(
                            names[record.topic],
                            record.key,
                            record.value,
                            list(record.headers or ()),
                            max_bytes=_MAX_BYTES,
                        )
                    except DecodeError:
                        pass
                    seen += 1
    finally:
        await consumer.stop()
    elapsed = time.perf_counter() - started
    return _result("ceiling", "aiokafka consumer + decode (ceiling)", seen, elapsed)


def _naive(dep: Deployment, expected: int, timeout: float) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_BOOTSTRAP": dep.bootstrap,
        "BENCH_PREFIX": dep.settings.topic_prefix,
        "BENCH_APP_ID": f"{dep.settings.app_id}-naive",
        "BENCH_DATA_DIR": str(dep.work / "naive"),
        "BENCH_PARTITIONS": str(dep.settings.partitions),
    }
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.naive"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # Faust's worker turns print() into log lines on stderr
        text=True,
        cwd=_ROOT,
    )
    processed_count = 0
    first_at: float | None = None
    tail: list[str] = []
    try:
        if proc.stdout is None:  # pragma: no cover - stdout=PIPE always gives a pipe
            raise BenchError("no pipe from the naive agent")
        for line in proc.stdout:
            tail = [*tail[-20:], line]
            if "processed " in line:
                processed_count = int(line.rsplit("processed ", 1)[1].split()[0])
                if processed_count and first_at is None:
                    first_at = time.perf_counter()
                if processed_count >= expected or time.perf_counter() - started > timeout:
                    break
    finally:
        proc.kill()  # its state is not needed
        proc.wait(30)
    if first_at is None:
        raise BenchError("the naive Faust agent processed nothing:\n" + "".join(tail))
    return _result(
        "naive",
        "naive Faust agent (table write per event)",
        processed_count,
        time.perf_counter() - first_at,
    )


def _latest_positions(dep: Deployment) -> dict[str, dict[str, int]]:
    records = asyncio.run(read_since(dep.bootstrap, dep.topic(POSITIONS)))
    latest = {m.key.decode(): orjson.loads(m.value) for m in records}
    return {
        key: {f: parse_qty(value[f], signed=True) for f in POSITION_FIELDS}
        for key, value in latest.items()
    }


def _differences(expected: dict[str, dict[str, int]], got: dict[str, dict[str, int]]) -> int:
    zero = dict.fromkeys(POSITION_FIELDS, 0)
    return sum(
        1 for key in expected.keys() | got.keys() if expected.get(key, zero) != got.get(key, zero)
    )


def _supplyflow(
    dep: Deployment,
    workers: int,
    expected: int,
    reference: dict[str, dict[str, int]],
    timeout: float,
    *,
    routed: float | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    started = dep.start_workers(workers, processes)
    members = workers * processes
    try:
        wait_group(dep.bootstrap, dep.settings.app_id, members, timeout)
        stable_ms = time.time() * 1000
        before = processed(started)
        cpu_before = sum(cpu_seconds(worker) for worker in started)
        if not wait_drained(dep, expected, timeout):
            raise BenchError(
                f"{workers} worker(s) did not process {expected} records in {timeout:.0f}s "
                f"(got {processed(started)}):\n{dep.log_tails()}"
            )
        cpu_used = sum(cpu_seconds(worker) for worker in started) - cpu_before
        first, _ = asyncio.run(edge_timestamps(dep.bootstrap, [*dep.outputs, dep.deltas_topic()]))
        _, last = asyncio.run(edge_timestamps(dep.bootstrap, dep.outputs))
    finally:
        dep.stop_workers(graceful=False)  # the state is not needed any more
    if first is None or last is None:
        raise BenchError(f"{workers} worker(s) emitted nothing")
    wrong = _differences(reference, _latest_positions(dep))
    plural = "s" if workers > 1 else ""
    extra: dict[str, Any] = {
        "exact": wrong == 0,
        "positions_wrong": wrong,
        "processed_before_group_complete": before if first < stable_ms else 0,
        # CPU (user + system) of the worker processes per record processed after the
        # group formed: the cost of a record, whatever the machine's other load.
        "worker_cpu_us_per_event": round(cpu_used / max(1, expected - before) * 1e6, 1),
    }
    if members > 1 and first < stable_ms and before > expected * 0.01:
        extra["note"] = (
            f"{before:,} of {expected:,} records were processed before all {members} worker "
            "processes were in the group; the time includes that and the rebalance"
        )
    key, name = f"supplyflow_{workers}", f"supplyflow, {workers} worker{plural}"
    if processes > 1:
        key, name = f"{key}x{processes}", f"{name} with --processes {processes}"
    if routed is not None:
        key = f"{key}_routed"
        name = f"{name}, input partitioned by CRC32 ({routed:.0%} of records routed)"
        extra["routed_share"] = round(routed, 4)
    return _result(key, name, expected, (last - first) / 1000, **extra)


def _routed_share(records: Iterator[SampleRecord], partitions: int) -> float:
    """The share of ``records`` a CRC32 partitioner puts outside their key's partition."""
    crc32 = partitioner("crc32")
    every = list(range(partitions))
    total = moved = 0
    for record in records:
        total += 1
        if record.key is not None:
            moved += crc32(record.key, every, every) != partition_of(record.key, partitions)
    return moved / total if total else 0.0


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    return round(a["events_per_s"] / b["events_per_s"], 3) if b["events_per_s"] else None


def run_supervised(
    dep: Deployment,
    processes: int,
    expected: int,
    reference: dict[str, dict[str, int]],
    timeout: float,
) -> dict[str, Any]:
    """One ``supplyflow worker --processes N`` over the deployment's input (see run_throughput)."""
    return _supplyflow(dep, 1, expected, reference, timeout, processes=processes)


def valid_reference(seed: int, run_id: str, scale: float) -> tuple[int, dict[str, dict[str, int]]]:
    """How many records the workload at ``scale`` has, and the positions its valid ones give."""
    shape = DISTRIBUTOR.scaled(scale)
    count = 0

    def valid_events() -> Iterator[AnyEvent]:
        nonlocal count
        for record in iter_records(seed, run_id, shape):
            count += 1
            if record.expect == "ok":
                yield decode_input(
                    record.topic, record.key, record.value, record.headers, max_bytes=_MAX_BYTES
                )

    reference = reference_positions(valid_events())
    return count, reference


def run_throughput(
    plan: Plan, bootstrap: str, run_id: str, work: Path, seed: int
) -> dict[str, Any]:
    """The throughput comparison; returns its part of the report."""
    shape = DISTRIBUTOR.scaled(plan.throughput_scale)
    one = Deployment(bootstrap, run_id, "tp1", work)
    two = Deployment(bootstrap, run_id, "tp2", work)
    crc = Deployment(bootstrap, run_id, "tpc", work)
    sup = Deployment(bootstrap, run_id, "tpp", work)
    try:
        count, reference = valid_reference(seed, run_id, plan.throughput_scale)
        print(
            f"throughput: producing {count} records 4 times (one copy per deployment)", flush=True
        )
        spread = {crc: partitioner("crc32")}
        for dep in (one, two, crc, sup):
            records = iter_records(seed, run_id, shape)
            sent = asyncio.run(dep.produce(records, partitioner=spread.get(dep)))
            if sent != count:
                raise BenchError(f"produced {sent} records, expected {count}")
        share = _routed_share(iter_records(seed, run_id, shape), crc.settings.partitions)
        results = [asyncio.run(_ceiling(one, count, plan.timeout_s))]
        print(f"throughput: ceiling {results[-1]['events_per_s']} events/s", flush=True)
        results.append(_naive(one, count, plan.timeout_s))
        print(f"throughput: naive Faust {results[-1]['events_per_s']} events/s", flush=True)
        results.append(_supplyflow(one, 1, count, reference, plan.timeout_s))
        print(f"throughput: 1 worker {results[-1]['events_per_s']} events/s", flush=True)
        results.append(_supplyflow(two, 2, count, reference, plan.timeout_s))
        print(f"throughput: 2 workers {results[-1]['events_per_s']} events/s", flush=True)
        results.append(_supplyflow(crc, 1, count, reference, plan.timeout_s, routed=share))
        print(
            f"throughput: 1 worker, CRC32 input {results[-1]['events_per_s']} events/s", flush=True
        )
        results.append(run_supervised(sup, 2, count, reference, plan.timeout_s))
        print(
            f"throughput: 1 worker, --processes 2 {results[-1]['events_per_s']} events/s",
            flush=True,
        )
    finally:
        for dep in (one, two, crc, sup):
            asyncio.run(dep.delete())
    ceiling, naive, sf1, sf2, sf1_routed, sf1x2 = results
    return {
        "scale": plan.throughput_scale,
        "records": count,
        "sku_locations": shape.positions,
        "results": results,
        "ratios": {
            "supplyflow_1_vs_ceiling": _ratio(sf1, ceiling),
            "supplyflow_1_vs_naive": _ratio(sf1, naive),
            "supplyflow_2_vs_1": _ratio(sf2, sf1),
            "supplyflow_2_vs_ceiling": _ratio(sf2, ceiling),
            "routed_vs_murmur2": _ratio(sf1_routed, sf1),
            "supplyflow_1x2_vs_1": _ratio(sf1x2, sf1),
        },
        # minutes a 30-day backfill takes at each supplyflow pipeline's rate of this run
        "backfill_events": BACKFILL_EVENTS,
        "backfill_minutes": {
            r["name"]: round(BACKFILL_EVENTS / r["events_per_s"] / 60, 1)
            for r in (sf1, sf2, sf1_routed, sf1x2)
            if r["events_per_s"]
        },
    }
