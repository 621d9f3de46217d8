"""``supplyflow demo``: Kafka (if none answers), a worker, the sample scenario, a report.

Everything the demo starts it stops again, also on Ctrl-C or failure. Each run uses its
own topic prefix and app id, so runs never see each other's records.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from supplyflow.app import local_kafka
from supplyflow.app.exceptions import AppError
from supplyflow.app.kafka_clients import client_options
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import OK, SampleRecord, sample_scenario
from supplyflow.app.settings import Settings
from supplyflow.app.topics import (
    DLQ,
    EXCEPTIONS,
    INVENTORY_EVENTS,
    PO_EVENTS,
    POSITIONS,
    delete_topics,
    ensure_topics,
    read_topic,
)
from supplyflow.codecs import parse_dead_letter
from supplyflow.tables.reference import POSITION_FIELDS

__all__ = ["run_demo"]

_KAFKA_CHECK_S: Final = 3.0
_WORKER_READY_S: Final = 90.0
_DRAIN_S: Final = 60.0
_POLL_S: Final = 0.5
_EVENTS_METRIC: Final = "supplyflow_events_total"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _processed(worker: WorkerProcess) -> float:
    return sum(v for (name, _), v in worker.metrics().items() if name == _EVENTS_METRIC)


_LIVE_PAUSE_S: Final = 0.15
_QUIET_S: Final = 1.5
_SHOWN_FIELDS: Final = POSITION_FIELDS


async def _tail_positions(settings: Settings, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic(POSITIONS),
        **client_options(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for message in messages:
                    p = orjson.loads(message.value)
                    values = "  ".join(f"{f} {p[f]:>6}" for f in _SHOWN_FIELDS)
                    _say(f"  {p['sku']}@{p['location']:<5} {values}")
    finally:
        await consumer.stop()


async def _produce_live(settings: Settings, records: list[SampleRecord]) -> None:
    """Produce the records one by one while printing every position the worker emits."""
    stop = asyncio.Event()
    tail = asyncio.create_task(_tail_positions(settings, stop))
    try:
        await produce_records(settings, records, pause_s=_LIVE_PAUSE_S)
        await asyncio.sleep(_QUIET_S)
    finally:
        stop.set()
        await tail


def _final_state(worker: WorkerProcess, records: list[SampleRecord]) -> None:
    keys = {
        r.key.decode() for r in records if r.expect == OK and r.topic == INVENTORY_EVENTS and r.key
    }
    _say("\nPositions now (GET /positions/{sku}/{location}):")
    for key in sorted(keys | {"SKU-A@DC1", "SKU-B@DC1", "SKU-C@DC1"}):
        sku, location = key.split("@")
        status, body = worker.get(f"/positions/{sku}/{location}")
        if status == 200:
            p = orjson.loads(body)
            _say(f"  {key:<10} " + "  ".join(f"{f} {p[f]}" for f in _SHOWN_FIELDS))
    po_ids = sorted(
        {r.key.decode() for r in records if r.topic == PO_EVENTS and r.expect == OK and r.key}
    )
    for po_id in po_ids[:1]:
        status, body = worker.get(f"/pos/{po_id}")
        if status == 200:
            po = orjson.loads(body)
            _say(f"\nGET /pos/{po_id}: revision {po['revision']}, acks {po['acks']}")
            for line in po["lines"]:
                _say(
                    f"  line {line['line_no']} {line['sku']}: ordered {line['ordered']}, "
                    f"received {line['received']}, open {line['open']}, "
                    f"in transit {line['in_transit']}"
                )


def _report(worker: WorkerProcess, settings: Settings, records: list[SampleRecord]) -> bool:
    """Wait for the worker to take every record, then print what happened to them."""
    bad = [r for r in records if r.expect != OK]
    deadline = time.monotonic() + _DRAIN_S
    while _processed(worker) < len(records) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    samples = worker.metrics()
    applied: Counter[str] = Counter()
    for (name, labels), value in samples.items():
        tags = dict(labels)
        if name == _EVENTS_METRIC and tags.get("outcome") == "applied":
            applied[tags["type"]] += int(value)
    _say(f"\nAccepted by the entity agents ({sum(applied.values())}):")
    for type_, count in sorted(applied.items()):
        _say(f"  {type_:<22} {count}")

    letters = asyncio.run(
        read_topic(settings, settings.topic(DLQ), expected=len(bad), wait_s=_DRAIN_S)
    )
    _say(f"\nDead-lettered to {settings.topic(DLQ)} ({len(letters)}):")
    for message in letters:
        body = parse_dead_letter(message.value)
        source = body["source"]
        _say(
            f"  {body['reason']:<24} {source['topic']}[{source['partition']}]"
            f"@{source['offset']}: {body['detail'][:90]}"
        )
    _final_state(worker, records)
    _exceptions(worker, settings)
    ok = len(letters) == len(bad) and sum(applied.values()) == len(records) - len(bad)
    _say("\nDemo complete." if ok else "\nDemo finished, but counts differ: see the log.")
    return ok


#: SLAs short enough to see deadlines fire during the demo (unless settings give others).
_DEMO_SLAS: Final = {
    "SUPPLYFLOW_SLA_PO_ACK": "erp=4s,wms=4s",
    "SUPPLYFLOW_SLA_ORDER_ACK": "erp=4s",
    "SUPPLYFLOW_SLA_INVOICE": "6s",
    "SUPPLYFLOW_DEADLINE_GRACE": "1s",
}
#: Long enough for the demo's deadlines to fall due after the last record.
_DEADLINE_WAIT_S: Final = 8.0


def _demo_slas(base: Settings) -> dict[str, str]:
    if base.sla_po_ack or base.sla_order_ack or base.sla_invoice:
        dumped = base.model_dump(mode="json")
        return {
            f"SUPPLYFLOW_{name.upper()}": str(dumped[name] or "")
            for name in ("sla_po_ack", "sla_order_ack", "sla_invoice", "deadline_grace")
        }
    return dict(_DEMO_SLAS)


def _exceptions(worker: WorkerProcess, settings: Settings) -> None:
    _say(f"\nWaiting {_DEADLINE_WAIT_S:.0f}s for acknowledgment and invoice deadlines...")
    time.sleep(_DEADLINE_WAIT_S)
    records = asyncio.run(read_topic(settings, settings.topic(EXCEPTIONS), wait_s=10))
    _say(f"\nException transitions on {settings.topic(EXCEPTIONS)} ({len(records)}):")
    for message in records:
        t = orjson.loads(message.value)
        _say(f"  {t['status']:<8} {t['rule']:<26} {t['entity_id']:<28} {t['message']}")
    status, body = worker.get("/exceptions?status=open")
    if status == 200:
        _say(f"\nGET /exceptions?status=open: {orjson.loads(body)['count']} open")


def run_demo(base: Settings) -> int:
    """Run the demo end to end; returns the process exit code."""
    started_kafka: local_kafka.LocalKafkaConfig | None = None
    run_id = "demo-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    work = Path(tempfile.mkdtemp(prefix=f"supplyflow-{run_id}-"))
    settings = base.model_copy(
        update={"topic_prefix": f"{run_id}.", "app_id": run_id, "data_dir": work / "data"}
    )
    worker: WorkerProcess | None = None
    try:
        if local_kafka.wait_until_ready(settings.bootstrap, _KAFKA_CHECK_S):
            _say(f"Kafka answers at {settings.bootstrap}; using it.")
        else:
            host, _, port = settings.bootstrap.split(",")[0].rpartition(":")
            if host not in ("localhost", "127.0.0.1"):
                raise AppError(f"no Kafka answers at {settings.bootstrap}")
            _say(f"Starting a local Kafka on port {port} (jars from Maven Central, cached)...")
            started_kafka = local_kafka.default_config(port=int(port))
            _say(local_kafka.up(started_kafka).detail)
        asyncio.run(ensure_topics(settings))
        env = {
            "SUPPLYFLOW_BOOTSTRAP": settings.bootstrap,
            "SUPPLYFLOW_TOPIC_PREFIX": settings.topic_prefix,
            "SUPPLYFLOW_APP_ID": settings.app_id,
            "SUPPLYFLOW_DATA_DIR": str(settings.data_dir),
            "SUPPLYFLOW_PARTITIONS": str(settings.partitions),
            **_demo_slas(base),
        }
        worker = WorkerProcess(env, work / "worker.log")
        _say(f"Starting a worker (app id {run_id}, logs {worker.log_path})...")
        worker.start()
        worker.wait_healthy(_WORKER_READY_S)
        _say(f"Worker ready: {worker.url}/health, {worker.url}/metrics")

        records = sample_scenario(run_id, max_record_bytes=settings.max_record_bytes)
        bad = [r for r in records if r.expect != OK]
        _say(
            f"\nProducing {len(records)} sample records ({len(bad)} deliberately invalid); "
            f"live positions from {settings.topic(POSITIONS)}:"
        )
        asyncio.run(_produce_live(settings, records))

        ok = _report(worker, settings, records)
        if not ok:
            _say(f"\n--- worker log tail ---\n{worker.log_tail(80)}")
        return 0 if ok else 1
    finally:
        if worker is not None:
            worker.stop()
        try:
            asyncio.run(delete_topics(settings, (settings.topic_prefix, f"{settings.app_id}-")))
        except (OSError, AppError, KafkaError) as exc:
            _say(f"(could not delete demo topics: {exc})")
        if started_kafka is not None:
            _say(local_kafka.down(started_kafka).detail)
        shutil.rmtree(work, ignore_errors=True)
