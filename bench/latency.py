"""Latency from an event's ``occurred_at`` to the position it changed being emitted.

One worker runs (with ``--processes N``, one ``supplyflow worker --processes N``); for
each offered load (events/s, ascending) the distributor workload's records (without the
closing snapshot burst) are sent paced at that rate for the plan's duration, each stamped
with ``occurred_at`` = the moment it is sent (after an unmeasured warm-up at the first
load, :data:`_WARM_UP_S` at most). Then the part waits until the worker has processed
everything (the queue a saturated worker built up is part of the latency) and reads back
the ``inventory.positions`` records of the step.

Measured from outside the worker: for every position the step's events changed, the
sample is the Kafka timestamp of the last record emitted for it minus the ``occurred_at``
of the last event that changed it, so one sample per position, no attribution of records
to events needed. Events that change no position (acks, invoices, invalid records,
duplicates) are not followed. The worker's own histogram
(``supplyflow_event_to_position_seconds``, every change, bucketed) is reported beside it.

Where the time goes: a PO or order event reaches its positions in two hops, the entity
actor's deltas record, then the position actor's emitted record. For every position
whose last change came that way, the step splits the sample at the Kafka timestamp of
the last deltas record naming it. It also reports the worker's CPU share from the first
record sent until it drained, and how many position changelog records (state writes and
progress markers) it wrote per event sent.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgpack
import orjson
from aiokafka import AIOKafkaProducer

from bench.harness import (
    SCRAPE_TIMEOUT_S,
    BenchError,
    Deployment,
    Plan,
    cpu_seconds,
    end_offsets,
    read_since,
    wait_drained,
    wait_group,
)
from supplyflow.app.partitioners import partitioner
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.sample import SampleRecord
from supplyflow.app.topics import POSITIONS, changelog_topic_name
from supplyflow.app.workload import DISTRIBUTOR, estimate_records, iter_records

__all__ = ["percentile", "run_latency", "touched_positions"]

#: The generator stamps this; the sender replaces it with the send time.
_SENTINEL: Final = datetime(2099, 1, 1, tzinfo=UTC)
_SENTINEL_BYTES: Final = b'"occurred_at":"2099-01-01T00:00:00Z"'
_MAX_IN_FLIGHT: Final = 20_000
#: The sender's pace: every tick it sends what fell due since the last one.
_PACE_TICK_S: Final = 0.002
#: Head-room so the generated stream is never shorter than a step needs.
_STREAM_MARGIN: Final = 1.3
#: Longest warm-up at the first load, unmeasured: a fresh worker opens its RocksDB
#: databases and its clients fetch the output topics' metadata on first use, which held
#: the first second's positions up to a second (and so p99 at 1,000/s).
_WARM_UP_S: Final = 3.0
_HISTOGRAM: Final = "supplyflow_event_to_position_seconds_bucket"


@dataclass(frozen=True, slots=True)
class _Prepared:
    topic: str
    key: bytes | None
    value: bytes
    touches: tuple[str, ...]


def touched_positions(body: dict[str, Any], entities: dict[str, Any]) -> tuple[str, ...]:
    """The ``SKU@LOCATION`` keys a valid event may change (``entities`` remembers POs/orders).

    ``entities`` maps a PO or order id to its location and its lines' SKUs; creating events
    add to it.
    """
    type_, data = body["type"], body["data"]
    if type_ == "inventory.adjusted":
        zero = str(data["delta"]).strip("0.-") == ""
        return () if zero else (f"{data['sku']}@{data['location']}",)
    entity_id = data.get("po_id") or data.get("order_id")
    if type_ in ("po.created", "order.placed"):
        entities[entity_id] = (data["location"], {ln["line_no"]: ln["sku"] for ln in data["lines"]})
    known = entities.get(entity_id)
    if known is None or type_ in _NO_POSITION_CHANGE:
        return ()
    location, skus = known
    if type_ == "return.received" and not data["restock"]:
        return ()
    if type_ in ("po.updated", "po.cancelled", "order.cancelled"):
        for line in data.get("lines", ()):
            skus[line["line_no"]] = line["sku"]
        return tuple(f"{sku}@{location}" for sku in skus.values())
    keys = {f"{ln['sku']}@{location}" for ln in data["lines"]}
    if type_ == "goods.received" and data.get("location"):
        keys.update(f"{ln['sku']}@{data['location']}" for ln in data["lines"])
    return tuple(keys)


_NO_POSITION_CHANGE: Final = frozenset(
    {"po.acknowledged", "order.acknowledged", "order.invoiced", "inventory.snapshot"}
)


def _prepare(records: Iterable[SampleRecord]) -> list[_Prepared]:
    entities: dict[str, Any] = {}
    seen: set[str] = set()
    out = []
    for record in records:
        touches: tuple[str, ...] = ()
        if record.expect == "ok":
            body = orjson.loads(record.value)
            if body["event_id"] not in seen:
                seen.add(body["event_id"])
                touches = touched_positions(body, entities)
        out.append(_Prepared(record.topic, record.key, record.value, touches))
    return out


def _stamp(ms: int) -> bytes:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    text = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return b'"occurred_at":"' + text.encode() + b'"'


async def _paced(
    dep: Deployment, items: list[_Prepared], rate: float
) -> tuple[float, dict[str, int]]:
    """Send ``items`` at ``rate``/s; returns the achieved rate and each key's last touch."""
    # BENCH_PARTITIONER (crc32, round-robin, ...): produce as such a client would; the
    # default is murmur2, where every record already sits in the partition that owns it.
    name = os.environ.get("BENCH_PARTITIONER")
    extra = {} if not name else {"partitioner": partitioner(name)}
    producer = AIOKafkaProducer(
        bootstrap_servers=dep.bootstrap,
        linger_ms=5,
        acks="all",
        enable_idempotence=True,
        **extra,
    )
    await producer.start()
    last_touch: dict[str, int] = {}
    futures: deque[asyncio.Future[object]] = deque()
    topics = {item.topic: dep.topic(item.topic) for item in items}
    started = time.monotonic()
    sent = 0
    try:
        while sent < len(items):
            # Everything due by now goes out stamped with one clock reading; then sleep a
            # tick. A sleep per record cost the sender a whole core at 5,000/s, taken
            # from the worker it measures (they share the machine).
            due = min(len(items), int((time.monotonic() - started) * rate) + 1)
            if due > sent:
                now_ms = time.time_ns() // 1_000_000
                stamp = _stamp(now_ms)
                for item in items[sent:due]:
                    value = item.value.replace(_SENTINEL_BYTES, stamp, 1)
                    futures.append(
                        await producer.send(topics[item.topic], value=value, key=item.key)
                    )
                    for key in item.touches:
                        last_touch[key] = now_ms
                sent = due
                if len(futures) >= _MAX_IN_FLIGHT:
                    while len(futures) > _MAX_IN_FLIGHT // 2:
                        await futures.popleft()
            await asyncio.sleep(_PACE_TICK_S)
        elapsed = time.monotonic() - started
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(items) / elapsed if elapsed > 0 else 0.0, last_touch


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (``share`` in 0..1) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def _buckets(worker: WorkerProcess) -> dict[float, float]:
    """The worker's histogram buckets, summed over its processes (``--processes N``)."""
    buckets: dict[float, float] = {}
    for process in range(worker.processes):
        for (name, labels), value in worker.metrics(SCRAPE_TIMEOUT_S, process).items():
            if name == _HISTOGRAM:
                bound = float(dict(labels)["le"])
                buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def _histogram_percentile(
    before: dict[float, float], after: dict[float, float], share: float
) -> float | None:
    """Percentile (ms) from cumulative bucket counts, linear within a bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    target = share * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= target:
            if bound == float("inf"):
                return round(lower * 1000, 1)
            inside = cumulative - below
            fraction = (target - below) / inside if inside else 1.0
            return round((lower + (bound - lower) * fraction) * 1000, 1)
        lower, below = bound, cumulative
    return None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _step(
    dep: Deployment,
    worker: WorkerProcess,
    items: list[_Prepared],
    rate: int,
    *,
    total_sent: int,
    timeout: float,
) -> dict[str, Any]:
    positions, deltas = dep.topic(POSITIONS), dep.deltas_topic()
    changelog = changelog_topic_name(dep.settings, "position")
    starts = asyncio.run(end_offsets(dep.bootstrap, [positions, deltas, changelog]))
    hist_before = _buckets(worker)
    cpu_before, clock = cpu_seconds(worker), time.monotonic()
    achieved, last_touch = asyncio.run(_paced(dep, items, rate))
    drained = wait_drained(dep, total_sent, timeout)
    cpu_share = (cpu_seconds(worker) - cpu_before) / (time.monotonic() - clock)
    ends = asyncio.run(end_offsets(dep.bootstrap, [changelog]))
    emitted = _last_timestamps(asyncio.run(read_since(dep.bootstrap, positions, starts)))
    via = _deltas_timestamps(asyncio.run(read_since(dep.bootstrap, deltas, starts)))
    samples = [
        float(emitted[key] - touched)
        for key, touched in last_touch.items()
        if emitted.get(key, -1) >= touched
    ]
    first_hop, second_hop = [], []
    for key, touched in last_touch.items():
        through = via.get(key, -1)
        if through >= touched and emitted.get(key, -1) >= through:
            first_hop.append(float(through - touched))
            second_hop.append(float(emitted[key] - through))
    hist_after = _buckets(worker)
    written = sum(ends[tp] - starts.get(tp, 0) for tp in ends)
    return {
        "offered_per_s": rate,
        "achieved_per_s": round(achieved),
        "sent": len(items),
        "drained": drained,
        "positions_followed": len(last_touch),
        "samples": len(samples),
        "p50_ms": _ms(percentile(samples, 0.50)),
        "p99_ms": _ms(percentile(samples, 0.99)),
        "max_ms": _ms(max(samples) if samples else None),
        "worker_histogram_p50_ms": _histogram_percentile(hist_before, hist_after, 0.50),
        "worker_histogram_p99_ms": _histogram_percentile(hist_before, hist_after, 0.99),
        "via_deltas_samples": len(first_hop),
        "input_to_deltas_p50_ms": _ms(percentile(first_hop, 0.50)),
        "input_to_deltas_p99_ms": _ms(percentile(first_hop, 0.99)),
        "deltas_to_position_p50_ms": _ms(percentile(second_hop, 0.50)),
        "deltas_to_position_p99_ms": _ms(percentile(second_hop, 0.99)),
        "worker_cpu_share": round(cpu_share, 3),
        "position_changelog_per_event": round(written / len(items), 2),
    }


def _last_timestamps(records: Iterable[Any]) -> dict[str, int]:
    """Key -> Kafka timestamp of its last record."""
    last: dict[str, int] = {}
    for record in records:
        key = record.key.decode()
        last[key] = max(last.get(key, 0), record.timestamp)
    return last


def _deltas_timestamps(records: Iterable[Any]) -> dict[str, int]:
    """Position key -> Kafka timestamp of the last deltas record naming it."""
    last: dict[str, int] = {}
    for record in records:
        _source, entries = msgpack.unpackb(record.value)
        for key, _items in entries:
            last[key] = max(last.get(key, 0), record.timestamp)
    return last


def _warm_up(dep: Deployment, plan: Plan, *, base: Any, per_scale: int, seed: int) -> int:
    """Send the first load for up to :data:`_WARM_UP_S`, unmeasured; returns records sent."""
    rate = plan.loads[0]
    count = max(1, round(rate * min(_WARM_UP_S, plan.load_seconds)))
    shape = base.scaled(count * _STREAM_MARGIN / per_scale)
    records = iter_records(seed - 1, f"{dep.settings.app_id}-warm", shape, now=lambda: _SENTINEL)
    items = _prepare(itertools.islice(records, count))
    asyncio.run(_paced(dep, items, rate))
    if not wait_drained(dep, len(items), plan.timeout_s):
        raise BenchError(f"the warm-up of {len(items)} records did not drain:\n{dep.log_tails()}")
    return len(items)


def run_latency(
    plan: Plan, bootstrap: str, run_id: str, work: Path, seed: int, *, processes: int = 1
) -> dict[str, Any]:
    """Latency at each offered load of ``plan``, one ``supplyflow worker`` (with
    ``processes`` > 1: ``--processes N``); returns its part of the report."""
    base = replace(DISTRIBUTOR, snapshots=False)
    per_scale = estimate_records(base, seed)
    dep = Deployment(bootstrap, run_id, "latency", work)
    steps: list[dict[str, Any]] = []
    try:
        asyncio.run(dep.create_topics())
        (worker,) = dep.start_workers(1, processes)
        wait_group(dep.bootstrap, dep.settings.app_id, processes, plan.timeout_s)
        warm_up = total_sent = _warm_up(dep, plan, base=base, per_scale=per_scale, seed=seed)
        for i, rate in enumerate(plan.loads):
            count = max(1, round(rate * plan.load_seconds))
            shape = base.scaled(count * _STREAM_MARGIN / per_scale)
            records = iter_records(seed + i, f"{run_id}-l{i}", shape, now=lambda: _SENTINEL)
            items = _prepare(itertools.islice(records, count))
            total_sent += len(items)
            step = _step(dep, worker, items, rate, total_sent=total_sent, timeout=plan.timeout_s)
            steps.append(step)
            print(
                f"latency: {rate}/s offered, {step['achieved_per_s']}/s sent, "
                f"p50 {step['p50_ms']} ms, p99 {step['p99_ms']} ms",
                flush=True,
            )
            if not step["drained"]:
                print(f"latency: not drained after {plan.timeout_s:.0f}s; higher loads skipped")
                break
        if not steps or not steps[0]["samples"]:
            raise BenchError(f"no latency sample at {plan.loads[0]}/s:\n{dep.log_tails()}")
    finally:
        asyncio.run(dep.delete())
    return {
        "load_seconds": plan.load_seconds,
        "processes": processes,
        "warm_up_records": warm_up,
        "steps": steps,
    }
