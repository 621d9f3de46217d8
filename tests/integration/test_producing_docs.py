"""The producer examples of docs/operations.md ("Producing events") work, as written.

Each example is taken from the page, pointed at this test's broker and topic prefix,
and run with the real client: the kcat command (murmur2), the confluent-kafka snippet as
written (murmur2) and without its ``partitioner`` line (librdkafka's default CRC32: its
records land in partitions that do not own their keys and are routed), and the Java
snippet compiled against the broker's own kafka-clients jar. A worker must apply all
of it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import orjson
import pytest

from supplyflow.app import local_kafka
from supplyflow.app.processes import WorkerProcess
from tests.integration.worker_http import http_json

pytestmark = pytest.mark.integration

DOCS: Final = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
WORKER_READY_S: Final = 90.0
APPLIED_S: Final = 60.0


def _blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the "Producing events" section."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Producing events", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def _point(code: str, bootstrap: str, prefix: str) -> str:
    code = code.replace("localhost:9092", bootstrap)
    return re.sub(r"\b(po|order|inventory)\.events\b", rf"{prefix}\1.events", code)


def _until(worker: WorkerProcess, path: str, ready: Callable[[dict[str, object]], bool]) -> None:
    deadline = time.monotonic() + APPLIED_S
    while True:
        status, body = http_json(worker, path)
        if status == 200 and ready(body):
            return
        assert time.monotonic() < deadline, f"{path}: {status} {body}"
        time.sleep(0.3)


def test_the_documented_producers_work(
    bootstrap: str,
    names: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    worker = start_worker()
    worker.wait_healthy(WORKER_READY_S)
    prefix = names["prefix"]
    (kcat,) = _blocks("sh")
    (python,) = _blocks("python")
    (java,) = _blocks("java")

    subprocess.run(["bash", "-c", _point(kcat, bootstrap, prefix)], check=True, timeout=60)
    _until(worker, "/pos/PO-1001", lambda po: po["revision"] == 1)

    snippet = _point(python, bootstrap, prefix)
    crc32 = re.sub(r'\n\s*"partitioner": "murmur2_random",.*', "", snippet)
    assert "partitioner" in snippet
    assert "partitioner" not in crc32
    crc32 = crc32.replace('"e-2"', '"e-2b"').replace('"wms"', '"erp"')
    for code in (snippet, crc32):
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    _until(
        worker,
        "/pos/PO-1001",
        lambda po: (
            po["acks"]
            == {
                "erp": {"revision": 1, "status": "accepted"},
                "wms": {"revision": 1, "status": "accepted"},
            }
        ),
    )

    jars = local_kafka.default_config().paths.libs  # the broker's own jars
    source = tmp_path / "Produce.java"
    source.write_text(
        "import java.util.Properties;\nimport org.apache.kafka.clients.producer.*;\n"
        "public class Produce {\n  public static void main(String[] args) throws Exception {\n"
        + _point(java, bootstrap, prefix)
        + "  }\n}\n",
        encoding="utf-8",
    )
    classpath = f"{jars}/*"
    javac = shutil.which("javac")
    assert javac, "javac (JDK 17) is needed, as for the local broker"
    subprocess.run([javac, "-cp", classpath, "-d", str(tmp_path), str(source)], check=True)
    subprocess.run(["java", "-cp", f"{classpath}:{tmp_path}", "Produce"], check=True, timeout=60)
    _until(
        worker,
        "/positions/SKU-A/DC1",
        lambda position: position["on_hand"] == -2 and position["inbound"] == 100,
    )
    # the CRC32 records (and kcat's murmur2 ones) were routed or applied in place: either
    # way one entity, one state
    status, body = worker.get("/pos/PO-1001")
    assert status == 200
    assert orjson.loads(body)["events"] == 3
