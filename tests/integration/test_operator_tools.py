"""``supplyflow dlq list|show|replay`` against the real broker and a real worker.

Dead letters are listed and filtered, shown with their original value decoded, replayed
after correction or by reason, and a re-run sends nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import OK, SampleRecord, sample_scenario
from supplyflow.app.settings import Settings
from supplyflow.app.topics import read_topic

pytestmark = pytest.mark.integration

WORKER_READY_S: Final = 90.0
PROCESS_S: Final = 60.0
CLI_S: Final = 120.0
Factory = Callable[..., WorkerProcess]


def _settings(bootstrap: str, names: dict[str, str], **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "bootstrap": bootstrap,
        "topic_prefix": names["prefix"],
        "app_id": names["app_id"],
        "partitions": 4,
        **changes,
    }
    return Settings(**values)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SUPPLYFLOW_BOOTSTRAP": settings.bootstrap,
        "SUPPLYFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "SUPPLYFLOW_APP_ID": settings.app_id,
        "SUPPLYFLOW_PARTITIONS": str(settings.partitions),
    }
    return subprocess.run(
        [sys.executable, "-m", "supplyflow", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=CLI_S,
    )


def _event(run: str, seq: int, type_: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{run}-x{seq}",
            "type": type_,
            "schema_version": 1,
            "source": "erp",
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": data,
        }
    )


def _po_created(run: str, seq: int, po_id: str, qty: Any) -> bytes:
    data = {
        "po_id": po_id,
        "revision": 1,
        "supplier_id": "SUP-1",
        "location": "DC1",
        "lines": [{"line_no": 1, "sku": "SKU-Z", "qty": qty}],
    }
    return _event(run, seq, "po.created", data)


def _wait(what: str, check: Callable[[], bool], timeout: float = PROCESS_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _po(worker: WorkerProcess, po_id: str) -> Any:
    """The PO over HTTP; None while unknown or while the worker answers 503."""
    status, body = worker.get(f"/pos/{po_id}")
    return orjson.loads(body) if status == 200 else None


def test_dlq_list_show_and_replay_after_correction(
    bootstrap: str, names: dict[str, str], start_worker: Factory, tmp_path: Path
) -> None:
    settings = _settings(bootstrap, names)
    worker = start_worker()
    worker.wait_healthy(WORKER_READY_S)
    run = names["app_id"]
    fix_po, late_po = f"{run}-PO-FIX", f"{run}-PO-LATE"
    records = sample_scenario(run, max_record_bytes=settings.max_record_bytes)
    records += [
        SampleRecord("po.events", fix_po.encode(), _po_created(run, 1, fix_po, -4), [], "schema"),
        SampleRecord(
            "po.events",
            late_po.encode(),
            _event(
                run,
                2,
                "asn.issued",
                {
                    "po_id": late_po,
                    "asn_id": "ASN-L",
                    "lines": [{"line_no": 1, "sku": "SKU-Z", "qty": 3}],
                },
            ),
            [],
            "unknown_entity",
        ),
    ]
    bad = [r for r in records if r.expect != OK]
    asyncio.run(produce_records(settings, records))
    dlq = settings.topic("dlq")
    letters = asyncio.run(read_topic(bootstrap, dlq, expected=len(bad), wait_s=PROCESS_S))
    assert len(letters) == len(bad)

    # list: every dead letter, one line each; filters by reason and topic; JSON lines.
    listed = cli(settings, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == len(bad)
    assert f"{len(bad)} dead letters" in listed.stderr
    schema = cli(settings, "dlq", "list", "--reason", "schema", "--json")
    rows = [orjson.loads(line) for line in schema.stdout.splitlines()]
    assert len(rows) == sum(1 for r in bad if r.expect == "schema")
    assert {row["reason"] for row in rows} == {"schema"}
    on_inventory = cli(settings, "dlq", "list", "--topic", "inventory.events", "--json")
    topics = {orjson.loads(line)["source"]["topic"] for line in on_inventory.stdout.splitlines()}
    assert topics == {settings.topic("inventory.events")}
    fix_row = next(row for row in rows if row["key"] == fix_po)

    # show: the original value decoded, the reason, the provenance.
    shown = cli(settings, "dlq", "show", fix_row["address"])
    assert shown.returncode == 0, shown.stderr
    detail = orjson.loads(shown.stdout)
    assert detail["reason"] == "schema"
    assert "must not be negative" in detail["detail"]
    assert detail["value"]["data"]["po_id"] == fix_po
    assert detail["source"]["topic"] == settings.topic("po.events")
    assert detail["key"] == fix_po
    missing = cli(settings, "dlq", "show", "0/999999")
    assert missing.returncode == 2
    assert "no dead letter at dlq/0/999999" in missing.stderr

    # replay one after correction; a second run sends nothing.
    corrected = tmp_path / "fixed.json"
    corrected.write_bytes(_po_created(run, 1, fix_po, "7.5"))
    first = cli(settings, "dlq", "replay", fix_row["address"], "--value-file", str(corrected))
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"replayed {fix_row['address']} -> {settings.topic('po.events')}/" in first.stdout
    again = cli(settings, "dlq", "replay", fix_row["address"], "--value-file", str(corrected))
    assert again.returncode == 0
    assert "already replayed" in again.stdout
    assert "0 replayed, 1 already replayed" in again.stderr
    _wait("the corrected PO", lambda: _po(worker, fix_po) is not None)
    assert _po(worker, fix_po)["lines"][0]["ordered"] == 7.5

    # replay all unknown_entity letters once the PO exists; the rest of a reason that is
    # still invalid is reported and not sent.
    asyncio.run(
        produce_records(
            settings,
            [SampleRecord("po.events", late_po.encode(), _po_created(run, 3, late_po, 10))],
        )
    )
    _wait("the late PO", lambda: _po(worker, late_po) is not None)
    late = cli(settings, "dlq", "replay", "--reason", "unknown_entity")
    assert late.returncode == 0, late.stdout + late.stderr
    assert "1 replayed, 0 already replayed, 0 not replayed" in late.stderr
    assert (
        "0 replayed, 1 already replayed"
        in cli(settings, "dlq", "replay", "--reason", "unknown_entity").stderr.splitlines()[-1]
    )
    _wait(
        "the replayed ASN",
        lambda: (_po(worker, late_po) or {"lines": [{}]})["lines"][0].get("asn_qty") == 3,
    )
    still = cli(settings, "dlq", "replay", "--reason", "schema", "--dry-run")
    assert still.returncode == 1
    assert "still invalid" in still.stdout

    # Exactly one copy of each replay reached the source topic, marked with its origin.
    replays = [
        dict(m.headers)["supplyflow-replayed-from"].decode()
        for m in asyncio.run(read_topic(bootstrap, settings.topic("po.events"), wait_s=10))
        if "supplyflow-replayed-from" in dict(m.headers)
    ]
    assert sorted(replays) == sorted({*replays})
    assert len(replays) == 2
    assert fix_row["address"] in replays
    # The replayed records were applied, not dead-lettered again.
    time.sleep(1.0)
    after = asyncio.run(read_topic(bootstrap, dlq, wait_s=10))
    assert len(after) == len(bad)
