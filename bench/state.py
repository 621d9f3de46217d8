"""What state costs: memory, disk, restart and rebuild of one worker holding it.

The distributor workload at the plan's state scale (10 in the full run: 1,000,000
SKU-locations, 120,000 POs of which about 100,000 stay open, 200,000 sales orders) is
produced and processed by one worker. Then:

- the worker's resident memory (``VmRSS``) right after and at rest (once a memory trim
  ran, ``supplyflow.app.memory``), and the bytes of its data dir;
- restart: the worker is stopped (SIGTERM) and started again on the same data dir; the
  time from process start to ``/health`` answering 200 (local state kept);
- rebuild: stopped again, the data dir deleted, started: the time until ``/health`` is
  200 again, which includes restoring every table from its changelog.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import orjson
from tqdm import tqdm

from bench.harness import (
    SCRAPE_TIMEOUT_S,
    WORKER_READY_S,
    BenchError,
    Deployment,
    Plan,
    dir_bytes,
    edge_timestamps,
    rss_bytes,
    wait_drained,
)
from supplyflow.app.memory import TRIM_INTERVAL_S
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.sample import SampleRecord
from supplyflow.app.topics import PO_EVENTS
from supplyflow.app.workload import DISTRIBUTOR, estimate_records, iter_records
from supplyflow.codecs.quantity import parse_qty

__all__ = ["OpenPurchaseOrders", "run_state"]


class OpenPurchaseOrders:
    """Counts the POs left open (a line not fully received, not cancelled) by a stream."""

    def __init__(self) -> None:
        #: po_id -> [revision, cancelled, {line_no: ordered}, {line_no: received}]
        self.pos: dict[str, list[Any]] = {}
        self.seen: set[str] = set()

    def add(self, record: SampleRecord) -> None:
        if record.topic != PO_EVENTS or record.expect != "ok":
            return
        body = orjson.loads(record.value)
        if body["event_id"] in self.seen:
            return
        self.seen.add(body["event_id"])
        type_, data = body["type"], body["data"]
        if type_ == "po.created":
            ordered = {ln["line_no"]: parse_qty(ln["qty"]) for ln in data["lines"]}
            self.pos[data["po_id"]] = [data["revision"], False, ordered, {}]
            return
        po = self.pos.get(data["po_id"])
        if po is None:
            return
        if type_ in ("po.updated", "po.cancelled") and data["revision"] > po[0]:
            po[0] = data["revision"]
            if type_ == "po.cancelled":
                po[1] = True
            else:
                po[2] = dict.fromkeys(po[2], 0) | {
                    ln["line_no"]: parse_qty(ln["qty"]) for ln in data["lines"]
                }
        elif type_ == "goods.received":
            for ln in data["lines"]:
                po[3][ln["line_no"]] = po[3].get(ln["line_no"], 0) + parse_qty(ln["qty"])

    @property
    def open(self) -> int:
        return sum(
            1
            for _, cancelled, ordered, received in self.pos.values()
            if not cancelled and any(q > received.get(n, 0) for n, q in ordered.items())
        )


#: Beyond one memory-trim interval, so at least one trim ran after the work was done.
_REST_MARGIN_S: Final = 3.0


def _table_keys(worker: WorkerProcess) -> dict[str, int]:
    return {
        dict(labels)["table"]: int(value)
        for (name, labels), value in worker.metrics(SCRAPE_TIMEOUT_S).items()
        if name == "supplyflow_table_keys"
    }


def _rss_at_rest(worker: WorkerProcess) -> int:
    """RSS once the worker, idle, has returned its free heap pages (``app.memory``)."""
    time.sleep(TRIM_INTERVAL_S + _REST_MARGIN_S)
    return rss_bytes(worker)


def _time_to_ready(dep: Deployment) -> tuple[float, WorkerProcess]:
    started = time.monotonic()
    worker = dep.start_worker(0)
    worker.wait_healthy(WORKER_READY_S * 5)
    return time.monotonic() - started, worker


def run_state(plan: Plan, bootstrap: str, run_id: str, work: Path, seed: int) -> dict[str, Any]:
    """Memory, disk, restart and rebuild for the plan's state; its part of the report."""
    shape = DISTRIBUTOR.scaled(plan.state_scale)
    dep = Deployment(bootstrap, run_id, "state", work)
    tracker = OpenPurchaseOrders()

    def tracked() -> Iterator[SampleRecord]:
        for record in iter_records(seed, run_id, shape):
            tracker.add(record)
            yield record

    try:
        total = estimate_records(shape, seed)
        with tqdm(total=total, unit=" records", unit_scale=True, file=sys.stderr) as bar:
            print(f"state: producing about {total} records", flush=True)

            def progress(count: int) -> None:
                bar.update(count)

            sent = asyncio.run(dep.produce(tracked(), on_progress=progress))
        (worker,) = dep.start_workers(1)
        if not wait_drained(dep, sent, plan.timeout_s):
            raise BenchError(
                f"the worker did not process {sent} records in {plan.timeout_s:.0f}s:\n"
                + dep.log_tails()
            )
        first, last = asyncio.run(
            edge_timestamps(dep.bootstrap, [*dep.outputs, dep.deltas_topic()])
        )
        data_dir = dep.data_dir(0)
        result: dict[str, Any] = {
            "scale": plan.state_scale,
            "records": sent,
            "sku_locations": shape.positions,
            "pos": shape.pos,
            "open_pos": tracker.open,
            "orders": shape.orders,
            "ingest_seconds": round((last - first) / 1000, 3) if first and last else None,
            "rss_bytes": rss_bytes(worker),
            "disk_bytes": dir_bytes(data_dir),
            "table_keys": _table_keys(worker),
            "rss_rest_bytes": _rss_at_rest(worker),
        }
        print(
            f"state: {result['rss_bytes'] >> 20} MiB RSS ({result['rss_rest_bytes'] >> 20} MiB "
            f"at rest), {result['disk_bytes'] >> 20} MiB disk",
            flush=True,
        )
        dep.stop_workers()
        result["restart_seconds"], worker = _time_to_ready(dep)
        result["restart_table_keys"] = _table_keys(worker)
        dep.stop_workers()
        shutil.rmtree(data_dir)
        result["rebuild_seconds"], worker = _time_to_ready(dep)
        result["rebuild_table_keys"] = _table_keys(worker)
        result["rebuild_rss_bytes"] = rss_bytes(worker)
        result["rebuild_rss_rest_bytes"] = _rss_at_rest(worker)
        result["rebuild_disk_bytes"] = dir_bytes(data_dir)
        print(
            f"state: restart {result['restart_seconds']:.1f}s, "
            f"rebuild {result['rebuild_seconds']:.1f}s",
            flush=True,
        )
    finally:
        asyncio.run(dep.delete())
    return result
