"""Running worker processes from Python: the demo, the benchmark and the tests use this.

A :class:`WorkerProcess` is a real ``supplyflow worker`` child process with its own
environment (topic prefix, app id, data dir, web port) and log file; with ``processes=N``
it is a supervisor whose N worker processes answer on ``web_port`` to ``web_port + N - 1``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Final

from prometheus_client.parser import text_string_to_metric_families

from supplyflow.app.exceptions import AppError

__all__ = ["HTTP_TIMEOUT_S", "WorkerProcess", "free_port", "scrape"]

#: How long a worker may take to stop cleanly on SIGTERM before it is killed.
STOP_TIMEOUT_S: Final = 30.0
_POLL_S: Final = 0.2
#: Default wait for one HTTP answer of a worker (health checks, look-ups, scrapes).
HTTP_TIMEOUT_S: Final = 5.0


def free_port(span: int = 1) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, nor on the ``span - 1``
    ports after it (a local broker needs its client port and the next one)."""
    for _ in range(_FREE_PORT_TRIES):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + span - 1 <= _MAX_PORT and all(_bindable(port + i) for i in range(span)):
            return port
    raise OSError(f"no {span} consecutive free ports found on 127.0.0.1")


_FREE_PORT_TRIES = 50
_MAX_PORT = 65535


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = HTTP_TIMEOUT_S
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(
    url: str, timeout: float = HTTP_TIMEOUT_S
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Read a Prometheus endpoint into ``{(sample name, sorted labels): value}``.

    Raises ``OSError`` if the worker does not answer (``TimeoutError`` when it accepted
    the connection but sent nothing for ``timeout`` seconds).
    """
    status, body = _get(url, timeout=timeout)
    if status != 200:
        raise AppError(f"{url} answered {status}")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class WorkerProcess:
    """One ``supplyflow worker`` child process."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        web_port: int | None = None,
        processes: int = 1,
    ):
        self.processes = processes
        self.web_port = web_port or free_port(span=processes)
        self.env = {**os.environ, **env, "SUPPLYFLOW_WEB_PORT": str(self.web_port)}
        self.env.setdefault("SUPPLYFLOW_WEB_HOST", "127.0.0.1")
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return self.process_url(0)

    def process_url(self, process: int) -> str:
        """The URL of worker process ``process`` (0 when there is no supervisor)."""
        return f"http://127.0.0.1:{self.web_port + process}"

    def child_pids(self) -> list[int]:
        """The supervisor's worker processes (Linux ``/proc``), oldest first."""
        if self.proc is None:
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[1]) == self.proc.pid:  # the parent's pid
                children.append((int(fields[19]), int(stat.parent.name)))  # start time
        return [pid for _, pid in sorted(children)]

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supplyflow", "worker", *self._processes_flag()],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _processes_flag(self) -> list[str]:
        return ["--processes", str(self.processes)] if self.processes > 1 else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, process: int = 0
    ) -> tuple[int, bytes]:
        """GET ``path``; without ``headers``, with the worker's API token if it has one."""
        if headers is None:
            token = self.env.get("SUPPLYFLOW_API_TOKEN", "").strip()
            headers = {"Authorization": f"Bearer {token}"} if token else {}
        return _get(self.process_url(process) + path, headers)

    def wait_healthy(self, timeout: float) -> None:
        """Wait until ``/health`` of every process answers 200; raise with the log tail if
        they do not."""
        deadline = time.monotonic() + timeout
        waiting = list(range(self.processes))
        while time.monotonic() < deadline:
            if not self.alive():
                raise AppError(f"worker exited early:\n{self.log_tail()}")
            try:
                status, _ = self.get("/health", process=waiting[0])
            except OSError:
                status = 0
            if status == 200:
                waiting.pop(0)
                if not waiting:
                    return
                continue
            time.sleep(_POLL_S)
        raise AppError(f"worker not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    def metrics(
        self, timeout: float = HTTP_TIMEOUT_S, process: int = 0
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.process_url(process) + "/metrics", timeout)

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc is not None and self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
