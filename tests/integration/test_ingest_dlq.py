"""Two real workers against the real broker: good records reach the agents, bad ones the DLQ."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

import msgpack
import orjson
import pytest

from supplyflow.app.processes import WorkerProcess
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import OK, sample_scenario
from supplyflow.app.settings import Settings
from supplyflow.app.topics import INPUT_TOPICS, read_topic
from supplyflow.codecs import parse_dead_letter

pytestmark = pytest.mark.integration

#: A worker joining a group and finishing recovery takes ~5 s on an idle machine.
WORKER_READY_S: Final = 90.0
#: Processing the sample scenario takes well under a second once workers are ready.
PROCESS_S: Final = 60.0
DRAIN_S: Final = 60.0
PROMTOOL: Final = shutil.which("promtool") or "/usr/bin/promtool"


def _outcomes(workers: list[WorkerProcess]) -> Counter[tuple[str, str, str]]:
    totals: Counter[tuple[str, str, str]] = Counter()
    for worker in workers:
        for (name, labels), value in worker.metrics().items():
            if name == "supplyflow_events_total":
                tags = dict(labels)
                totals[(tags["topic"], tags["type"], tags["outcome"])] += int(value)
    return totals


def test_two_workers_apply_good_records_and_dead_letter_each_bad_one(
    bootstrap: str, names: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = Settings(
        bootstrap=bootstrap, topic_prefix=names["prefix"], app_id=names["app_id"], partitions=4
    )
    workers = [start_worker(SUPPLYFLOW_LOG_FORMAT="json"), start_worker()]
    for worker in workers:
        worker.wait_healthy(WORKER_READY_S)

    records = sample_scenario(names["app_id"], max_record_bytes=settings.max_record_bytes)
    # Interleave a second copy of the good records behind the bad ones (new event ids).
    records += [r for r in sample_scenario(names["app_id"] + "x") if r.expect == OK]
    asyncio.run(produce_records(settings, records))

    deadline = time.monotonic() + PROCESS_S
    while sum(_outcomes(workers).values()) < len(records) and time.monotonic() < deadline:
        time.sleep(0.25)
    outcomes = _outcomes(workers)

    good = [r for r in records if r.expect == OK]
    bad = [r for r in records if r.expect != OK]
    expected_applied: Counter[tuple[str, str, str]] = Counter()
    for r in good:
        expected_applied[(r.topic, _type_of(r.value, r.headers), "applied")] += 1
    applied = Counter({k: v for k, v in outcomes.items() if k[2] == "applied"})
    assert applied == expected_applied
    dead = sum(v for k, v in outcomes.items() if k[2] == "dead_lettered")
    assert dead == len(bad)

    # Both workers took part: the group split the partitions between them.
    per_worker = [sum(_outcomes([w]).values()) for w in workers]
    assert all(n > 0 for n in per_worker), per_worker

    letters = asyncio.run(
        read_topic(bootstrap, settings.topic("dlq"), expected=len(bad), wait_s=DRAIN_S)
    )
    assert len(letters) == len(bad)
    by_value = {r.value: r for r in bad}
    inputs = {
        (m.topic, m.partition, m.offset): m.value
        for topic in INPUT_TOPICS
        for m in asyncio.run(read_topic(bootstrap, settings.topic(topic), wait_s=DRAIN_S))
    }
    assert len(inputs) == len(records)
    seen = set()
    for letter in letters:
        body = parse_dead_letter(letter.value)
        original = by_value[body["value"]]
        assert body["reason"] == original.expect, original.label
        assert letter.key == original.key
        assert body["key"] == original.key
        assert dict(letter.headers)["supplyflow-dlq-reason"] == original.expect.encode()
        for name, value in original.headers:
            assert (name, value) in letter.headers
        source = body["source"]
        assert source["topic"] == settings.topic(original.topic)
        assert inputs[(source["topic"], source["partition"], source["offset"])] == original.value
        seen.add(original.label)
    assert seen == {r.label for r in bad}

    # Metrics count every dead letter by reason, and the scrape is valid for promtool.
    reasons: Counter[str] = Counter()
    for worker in workers:
        for (series, tags), count in worker.metrics().items():
            if series == "supplyflow_dead_letters_total":
                reasons[dict(tags)["reason"]] += int(count)
    assert reasons == Counter(r.expect for r in bad)
    for worker in workers:
        _, scrape = worker.get("/metrics")
        check = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=scrape, capture_output=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert not (check.stdout + check.stderr).strip(), check.stdout + check.stderr

    # The JSON-logging worker wrote one JSON warning per record it dead-lettered, with ids.
    warnings = [
        orjson.loads(line)
        for line in workers[0].log_path.read_text().splitlines()
        if line.startswith("{") and '"dead-lettered' in line
    ]
    assert len(warnings) == sum(
        int(v)
        for (name, _), v in workers[0].metrics().items()
        if name == "supplyflow_dead_letters_total"
    )
    for warning in warnings:
        assert warning["level"] == "WARNING"
        assert {"event_id", "entity_id", "topic", "partition", "offset", "reason"} <= set(warning)


def _type_of(value: bytes, headers: list[tuple[str, bytes]]) -> str:
    if ("content-type", b"application/msgpack") in headers:
        return str(msgpack.unpackb(value)["type"])
    return str(orjson.loads(value)["type"])
