"""The benchmark harness's drain wait: a worker that answers late is busy, not done."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bench import harness
from supplyflow.app.processes import WorkerProcess

#: Shorter than the slow answer below, so that the first poll times out.
_SHORT_TIMEOUT_S = 0.2
_SLOW_ANSWER_S = 0.6


class _Metrics(BaseHTTPRequestHandler):
    """``/metrics`` of a worker that has processed ``events``; the first answer is slow."""

    events = 0
    slow_answers = 0

    def do_GET(self) -> None:
        if type(self).slow_answers > 0:
            type(self).slow_answers -= 1
            time.sleep(_SLOW_ANSWER_S)
        body = (
            "# TYPE supplyflow_events_total counter\n"
            f'supplyflow_events_total{{topic="po.events",type="po.created",outcome="applied"}} '
            f"{type(self).events}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):  # the client timed out meanwhile
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[type[_Metrics], int]]:
    handler = type("Handler", (_Metrics,), {"events": 0, "slow_answers": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Deployment:
    """What :func:`harness.wait_drained` uses of a deployment: live workers, no Kafka."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.workers = [worker]
        self.bootstrap = "127.0.0.1:1"
        self.outputs: list[str] = []

    def check_workers(self) -> None:
        pass


async def _no_offsets(bootstrap: str, topics: Any) -> dict[Any, int]:
    return {}


def test_processed_waits_as_long_as_it_is_told(
    metrics_server: tuple[type[_Metrics], int], tmp_path: Path
) -> None:
    handler, port = metrics_server
    handler.events, handler.slow_answers = 7, 2
    worker = WorkerProcess({}, tmp_path / "w.log", web_port=port)
    with pytest.raises(TimeoutError):
        harness.processed([worker], timeout=_SHORT_TIMEOUT_S)
    assert harness.processed([worker], timeout=_SLOW_ANSWER_S * 5) == 7


def test_wait_drained_counts_a_late_answer_as_not_done_yet(
    metrics_server: tuple[type[_Metrics], int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, port = metrics_server
    handler.events, handler.slow_answers = 5, 1
    monkeypatch.setattr(harness, "SCRAPE_TIMEOUT_S", _SHORT_TIMEOUT_S)
    monkeypatch.setattr(harness, "end_offsets", _no_offsets)
    deployment: Any = _Deployment(WorkerProcess({}, tmp_path / "w.log", web_port=port))
    assert harness.wait_drained(deployment, expected=5, timeout=10.0) is True
    assert handler.slow_answers == 0  # the slow answer was met, and outlived
