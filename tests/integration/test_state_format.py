"""A worker meeting state written by a newer release stops, saying what to do.

The state of a PO in its table's changelog has format version ``PO_FORMAT.version + 1``,
as a newer supplyflow would write it. The worker restores it on start, and stops with
exit status 1 and the format error's message when it first reads it (the first tick
reads every PO of the partitions it owns, for the deadline index), instead of retrying
or dropping the state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

import pytest
from aiokafka import AIOKafkaProducer

from supplyflow.agents.runtime.keys import partition_for
from supplyflow.agents.runtime.table_io import encode
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.settings import Settings
from supplyflow.app.topics import changelog_topic_name, ensure_topics
from supplyflow.tables.po import PO_FORMAT

pytestmark = pytest.mark.integration

#: Start, restore one record and tick: seconds, even on a loaded machine.
STOP_WITHIN_S: Final = 90.0


async def _write_newer_po(settings: Settings, key: str) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
    await producer.start()
    try:
        newer = [PO_FORMAT.version + 1, key, 1, "SUP-1", "DC1"]
        await producer.send_and_wait(
            changelog_topic_name(settings, "po"),
            encode(newer),
            key=encode(key),
            partition=partition_for(key, settings.partitions),
        )
    finally:
        await producer.stop()


def test_state_of_a_newer_release_stops_the_worker_with_what_to_do(
    bootstrap: str, names: dict[str, str], start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = Settings(
        bootstrap=bootstrap, topic_prefix=names["prefix"], app_id=names["app_id"], partitions=4
    )
    asyncio.run(_write_newer_po(settings, "PO-FROM-THE-FUTURE"))
    worker = start_worker()
    deadline = time.monotonic() + STOP_WITHIN_S
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    log = worker.log_tail(400)
    assert not worker.alive(), f"the worker kept running:\n{log}"
    assert worker.proc is not None
    assert worker.proc.returncode == 1
    expected = (
        f"stored PO state has format version {PO_FORMAT.version + 1}, but this release of "
        f"supplyflow reads PO state up to version {PO_FORMAT.version}"
    )
    assert expected in log
    assert "SUPPLYFLOW_APP_ID" in log
