"""The HTTP API as deployed: workers bound to every interface, and answers as documented.

In a container or a pod each worker binds ``0.0.0.0`` and must advertise a URL the others
can reach: here two real workers bind ``0.0.0.0`` (on distinct ports, as two hosts would),
advertise the default derived from the host name, and every look-up answers the same from
both, forwarded or not. Then every answer of a real worker (200s, 400, 401, 404, 503) is
validated against the checked-in ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Final

import orjson
import pytest
from jsonschema import Draft202012Validator

from supplyflow.agents.runtime.keys import partition_for
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import OK, SampleRecord, sample_scenario
from supplyflow.app.settings import Settings

pytestmark = pytest.mark.integration

WORKER_READY_S: Final = 90.0
PROCESS_S: Final = 60.0
PARTITIONS: Final = 4
TOKEN: Final = "http-api-token-0123456789abcdef"
#: Sample scenarios produced (each adds 2 POs and 3 orders under its own ids).
RUNS: Final = 4


def _settings(worker_env: dict[str, str]) -> Settings:
    return Settings(
        bootstrap=worker_env["SUPPLYFLOW_BOOTSTRAP"],
        topic_prefix=worker_env["SUPPLYFLOW_TOPIC_PREFIX"],
        app_id=worker_env["SUPPLYFLOW_APP_ID"],
        partitions=PARTITIONS,
    )


def _produce_samples(worker_env: dict[str, str]) -> list[SampleRecord]:
    settings = _settings(worker_env)
    records = [
        record
        for run in range(RUNS)
        for record in sample_scenario(
            f"{settings.app_id}-{run}", max_record_bytes=settings.max_record_bytes
        )
    ]
    asyncio.run(produce_records(settings, records))
    return records


def _applied(worker: WorkerProcess) -> int:
    return sum(
        int(value)
        for (name, labels), value in worker.metrics().items()
        if name == "supplyflow_events_total" and dict(labels)["outcome"] == "applied"
    )


def _wait_applied(workers: list[WorkerProcess], expected: int) -> None:
    deadline = time.monotonic() + PROCESS_S
    while sum(_applied(w) for w in workers) < expected and time.monotonic() < deadline:
        time.sleep(0.25)
    assert sum(_applied(w) for w in workers) == expected


def _owned(worker: WorkerProcess, topic: str) -> set[int]:
    """The input partitions ``worker`` reads (its lag gauge has a series for each)."""
    return {
        int(dict(labels)["partition"])
        for (name, labels), _ in worker.metrics().items()
        if name == "supplyflow_consumer_lag_records" and dict(labels)["topic"] == topic
    }


def _keys(records: list[SampleRecord], topic: str) -> list[str]:
    keys = {r.key for r in records if r.expect == OK and r.topic == topic}
    return sorted(key.decode() for key in keys if key)


def _wait_readable(worker: WorkerProcess, paths: list[str]) -> None:
    """Wait until each path answers 200: a state is written just after its outputs."""
    deadline = time.monotonic() + PROCESS_S
    for path in paths:
        while worker.get(path)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)


def _get_json(worker: WorkerProcess, path: str) -> tuple[int, Any]:
    """GET ``path``, retrying a 503 (a partition moving) for a while."""
    deadline = time.monotonic() + PROCESS_S
    while True:
        status, body = worker.get(path)
        if status != 503 or time.monotonic() > deadline:
            return status, orjson.loads(body)
        time.sleep(0.2)


def test_two_workers_bound_to_all_interfaces_answer_every_lookup(
    start_worker: Callable[..., WorkerProcess], worker_env: dict[str, str]
) -> None:
    env = {"SUPPLYFLOW_WEB_HOST": "0.0.0.0", "SUPPLYFLOW_PARTITIONS": str(PARTITIONS)}
    workers = [start_worker(**env), start_worker(**env)]
    for worker in workers:
        worker.wait_healthy(WORKER_READY_S)
    records = _produce_samples(worker_env)
    _wait_applied(workers, sum(1 for r in records if r.expect == OK))

    # Each advertises its host name, never the wildcard it binds.
    host = socket.gethostname()
    for worker in workers:
        status, live = _get_json(worker, "/health/live")
        assert status == 200, live
        assert live["url"] == f"http://{host}:{worker.web_port}", live
        assert "0.0.0.0" not in live["url"]

    pos, orders = _keys(records, "po.events"), _keys(records, "order.events")
    positions = [k for k in _keys(records, "inventory.events") if "@" in k]
    routes = [f"/pos/{k}" for k in pos] + [f"/orders/{k}" for k in orders]
    routes += [f"/positions/{k.replace('@', '/')}" for k in positions]
    # Both workers are asked for keys they do not own: those answers are forwarded.
    owners = [_owned(w, "po.events") | _owned(w, "order.events") for w in workers]
    assert all(owners), f"both workers should own input partitions: {owners}"
    for owned in owners:
        foreign = [k for k in pos + orders if partition_for(k, PARTITIONS) not in owned]
        assert foreign, f"no key outside partitions {owned}: nothing would be forwarded"

    _wait_readable(workers[0], routes)
    for route in routes:
        answers = [_get_json(worker, route) for worker in workers]
        assert all(status == 200 for status, _ in answers), (route, answers)
        assert answers[0][1] == answers[1][1], (route, answers)
    for worker in workers:
        status, body = _get_json(worker, "/exceptions?status=all")
        assert status == 200, body
        assert "incomplete" not in body, body
        assert body["count"] == len(body["exceptions"]) > 0
    counts = {_get_json(w, "/exceptions?status=all")[1]["count"] for w in workers}
    assert len(counts) == 1, f"the workers merged different exception sets: {counts}"


# -- the OpenAPI document against live answers --------------------------------------------


def _document() -> dict[str, Any]:
    text = resources.files("supplyflow.app").joinpath("static/openapi.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


class _Checker:
    """Validates answers against the document and remembers which (route, status) it saw."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.document = _document()
        self.seen: set[tuple[str, str]] = set()

    def check(
        self, route: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        status, body = self.worker.get(path, headers=headers)
        responses = self.document["paths"][route]["get"]["responses"]
        assert str(status) in responses, f"{path} answered {status}, undocumented: {body!r}"
        content = responses[str(status)]["content"]
        self.seen.add((route, str(status)))
        if "application/json" in content:
            schema = content["application/json"]["schema"]
            validator = Draft202012Validator({**schema, "components": self.document["components"]})
            errors = sorted(validator.iter_errors(orjson.loads(body)), key=str)
            assert not errors, f"{path} ({status}): " + "; ".join(e.message for e in errors[:5])
        else:
            assert "text/plain" in content or "text/html" in content, content
        return status, body


def test_openapi_document_matches_live_answers(
    start_worker: Callable[..., WorkerProcess], worker_env: dict[str, str]
) -> None:
    worker = start_worker(SUPPLYFLOW_PARTITIONS=str(PARTITIONS), SUPPLYFLOW_API_TOKEN=TOKEN)
    checker = _Checker(worker)
    # The probes while the worker starts (503) and once it runs (200).
    deadline = time.monotonic() + WORKER_READY_S
    while time.monotonic() < deadline:
        try:
            status, _ = checker.check("/health/ready", "/health/ready")
        except OSError:
            time.sleep(0.1)
            continue
        checker.check("/health", "/health")
        checker.check("/health/live", "/health/live")
        if status == 200:
            break
        time.sleep(0.1)
    worker.wait_healthy(WORKER_READY_S)
    records = _produce_samples(worker_env)
    _wait_applied([worker], sum(1 for r in records if r.expect == OK))

    po, order = _keys(records, "po.events")[0], _keys(records, "order.events")[0]
    _wait_readable(worker, ["/positions/SKU-A/DC1", f"/pos/{po}", f"/orders/{order}"])
    found = {
        "/positions/{sku}/{location}": ["/positions/SKU-A/DC1", "/positions/NOPE/DC1"],
        "/pos/{po_id}": [f"/pos/{po}", "/pos/PO-NOPE"],
        "/orders/{order_id}": [f"/orders/{order}", "/orders/SO-NOPE"],
        "/exceptions": [
            "/exceptions",
            "/exceptions?status=all",
            "/exceptions?status=resolved&entity_type=po",
            "/exceptions?status=bogus",
        ],
    }
    for route, paths in found.items():
        for path in paths:
            checker.check(route, path)
        checker.check(route, paths[0], headers={})  # no token: 401
    for route in ("/", "/metrics", "/openapi.json"):
        status, body = checker.check(route, route, headers={})
        assert status == 200
    assert orjson.loads(worker.get("/openapi.json")[1]) == checker.document
    status, body = worker.get(f"/pos/{po}")
    assert orjson.loads(body)["lines"], body

    statuses = {route: {s for r, s in checker.seen if r == route} for route in found}
    assert all({"200", "401"} <= seen for seen in statuses.values()), statuses
    assert all("404" in statuses[r] for r in found if r != "/exceptions"), statuses
    assert "400" in statuses["/exceptions"]
    documented = set(checker.document["paths"])
    assert {route for route, _ in checker.seen} == documented, "every route was checked"
