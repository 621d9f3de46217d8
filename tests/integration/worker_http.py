"""Asking a real worker over HTTP, through the rebalances and restarts a test causes."""

from __future__ import annotations

import time
from typing import Any, Final

import orjson

from supplyflow.app.processes import WorkerProcess

__all__ = ["HTTP_RETRY_S", "http_json"]

#: How long a 503 (the key's partition is moving or recovering) is retried.
HTTP_RETRY_S: Final = 30.0
_RETRY_EVERY_S: Final = 0.2


def http_json(worker: WorkerProcess, path: str, process: int = 0) -> tuple[int, Any]:
    """GET ``path`` as JSON (from one ``process`` of a supervised worker), retrying while
    the worker answers 503."""
    deadline = time.monotonic() + HTTP_RETRY_S
    while True:
        status, body = worker.get(path, process=process)
        if status != 503 or time.monotonic() > deadline:
            return status, orjson.loads(body)
        time.sleep(_RETRY_EVERY_S)
