"""`supplyflow kafka up|down|status` against a second, throwaway broker on a free port."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from supplyflow.app import local_kafka
from supplyflow.app.processes import free_port
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import SampleRecord
from supplyflow.app.settings import Settings
from supplyflow.app.topics import ensure_topics, read_topic

pytestmark = pytest.mark.integration

#: The broker's first answer takes ~3 s here; the jars are already cached by `make test`.
CLI_TIMEOUT_S: Final = 180


def kafka(action: str, home: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "supplyflow",
            "kafka",
            action,
            "--home",
            str(home),
            "--port",
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def broker_pids(home: Path) -> list[int]:
    """Processes whose command line names this home's server.properties."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and str(home).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_up_twice_starts_one_broker_and_down_leaves_none(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    port = free_port(span=2)  # the client port and the controller port after it
    try:
        first = kafka("up", home, port)
        assert first.returncode == 0, first.stderr
        assert local_kafka.wait_until_ready(f"127.0.0.1:{port}", 5)
        pids = broker_pids(home)
        assert len(pids) == 1

        second = kafka("up", home, port)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        assert broker_pids(home) == pids

        status = kafka("status", home, port)
        assert status.returncode == 0
        assert str(pids[0]) in status.stdout
    finally:
        down = kafka("down", home, port)
    assert down.returncode == 0, down.stderr
    assert broker_pids(home) == []
    stopped = kafka("status", home, port)
    assert stopped.returncode == 1
    assert "stopped" in stopped.stdout
    assert not local_kafka.wait_until_ready(f"127.0.0.1:{port}", 1)


def test_down_and_up_keep_topics_and_records(tmp_path: Path) -> None:
    """The fault suite stops the broker mid-stream and relies on its log dir surviving."""
    home = tmp_path / "kafka"
    port = free_port(span=2)  # the client port and the controller port after it
    address = f"127.0.0.1:{port}"
    settings = Settings(bootstrap=address, topic_prefix="kept.", app_id="kept", partitions=2)
    records = [
        SampleRecord("po.events", f"PO-{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(50)
    ]
    try:
        assert kafka("up", home, port).returncode == 0
        asyncio.run(ensure_topics(settings))
        asyncio.run(produce_records(settings, records))
        down = kafka("down", home, port)
        assert down.returncode == 0, down.stderr
        assert "data kept" in down.stdout
        assert not local_kafka.wait_until_ready(address, 1)
        again = kafka("up", home, port)
        assert again.returncode == 0, again.stderr
        kept = asyncio.run(read_topic(address, settings.topic("po.events"), wait_s=60))
    finally:
        kafka("down", home, port)
    assert sorted(r.value for r in kept) == sorted(r.value for r in records)
