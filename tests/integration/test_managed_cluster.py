"""Running against a cluster that forbids creating topics, and `kafka ping` with settings.

With ``SUPPLYFLOW_CREATE_TOPICS=false`` a worker only checks its topics: missing ones stop it
with instructions. Created as ``supplyflow topics plan --json`` says, and nothing else, the
worker runs and processes records, and creates no topic of its own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from supplyflow.app.processes import WorkerProcess, free_port
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import OK, sample_scenario
from supplyflow.app.settings import Settings

pytestmark = pytest.mark.integration

WORKER_READY_S: Final = 90.0
PROCESS_S: Final = 60.0
CLI_S: Final = 120.0


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supplyflow", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=CLI_S,
    )


async def _create(bootstrap: str, plan: dict[str, Any]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    t["name"],
                    num_partitions=t["partitions"],
                    replication_factor=plan["replication_factor"],
                    topic_configs=t["config"],
                )
                for t in plan["topics"]
            ]
        )
    finally:
        await admin.close()


async def _topics(bootstrap: str, prefixes: tuple[str, ...]) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if t.startswith(prefixes)}
    finally:
        await admin.close()


def test_worker_uses_pre_provisioned_topics_and_creates_none(
    start_worker: Callable[..., WorkerProcess],
    worker_env: dict[str, str],
    names: dict[str, str],
    tmp_path: Path,
) -> None:
    env = {**worker_env, "SUPPLYFLOW_CREATE_TOPICS": "false"}
    prefixes = (names["prefix"], f"{names['app_id']}-")
    bootstrap = env["SUPPLYFLOW_BOOTSTRAP"]

    refused = _cli(
        {
            **env,
            "SUPPLYFLOW_DATA_DIR": str(tmp_path / "refused"),
            "SUPPLYFLOW_WEB_PORT": str(free_port()),
        },
        "worker",
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "SUPPLYFLOW_CREATE_TOPICS is false" in refused.stderr
    assert "supplyflow topics plan" in refused.stderr
    assert f"{names['prefix']}po.events" in refused.stderr
    assert asyncio.run(_topics(bootstrap, prefixes)) == set(), "it created nothing"

    planned = _cli(env, "topics", "plan", "--json")
    assert planned.returncode == 0, planned.stderr
    plan = orjson.loads(planned.stdout)
    asyncio.run(_create(bootstrap, plan))
    wanted = {t["name"] for t in plan["topics"]}

    worker = start_worker(SUPPLYFLOW_CREATE_TOPICS="false")
    worker.wait_healthy(WORKER_READY_S)
    settings = Settings(
        bootstrap=bootstrap,
        topic_prefix=names["prefix"],
        app_id=names["app_id"],
        partitions=int(env["SUPPLYFLOW_PARTITIONS"]),
        create_topics=False,
    )
    records = sample_scenario(names["app_id"], max_record_bytes=settings.max_record_bytes)
    asyncio.run(produce_records(settings, records))
    good = sum(1 for r in records if r.expect == OK)
    deadline = time.monotonic() + PROCESS_S
    applied = 0
    while time.monotonic() < deadline:
        applied = sum(
            int(v)
            for (name, labels), v in worker.metrics().items()
            if name == "supplyflow_events_total" and dict(labels)["outcome"] == "applied"
        )
        if applied == good:
            break
        time.sleep(0.25)
    assert applied == good
    assert asyncio.run(_topics(bootstrap, prefixes)) == wanted, "the plan lists every topic"


def test_kafka_ping_answers_with_the_settings(worker_env: dict[str, str]) -> None:
    ok = _cli(worker_env, "kafka", "ping")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "answers" in ok.stdout
    nothing = _cli(
        {**worker_env, "SUPPLYFLOW_BOOTSTRAP": f"127.0.0.1:{free_port()}"}, "kafka", "ping"
    )
    assert nothing.returncode == 1
    assert "nothing listens" in nothing.stdout
