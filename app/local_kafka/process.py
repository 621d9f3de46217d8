"""Pid file, process identity and signalling of the local broker.

A pid is only trusted when the process's command line names ``kafka.Kafka`` *and* this
home's ``server.properties``: a pid file left behind by a crash or a reboot, whose number now
belongs to some other process, is detected as stale and removed, never signalled.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "KAFKA_MAIN_CLASS",
    "command_line",
    "find_our_pids",
    "is_alive",
    "is_our_broker",
    "read_pid_file",
    "register_child",
    "remove_pid_file",
    "stop_process",
    "write_pid_file",
]

logger = logging.getLogger(__name__)

KAFKA_MAIN_CLASS = "kafka.Kafka"
POLL_INTERVAL = 0.1
"""Seconds between two liveness checks while waiting for a process to exit."""
KILL_WAIT = 10.0
"""Seconds to wait for the process to vanish after SIGKILL."""
PS_TIMEOUT = 5.0
_PROC = Path("/proc")

# Brokers started by this Python process. Holding the Popen objects lets us reap them (no
# zombies, no "subprocess still running" ResourceWarning while the broker outlives up()).
_children: dict[int, subprocess.Popen[bytes]] = {}


def register_child(process: subprocess.Popen[bytes]) -> None:
    """Remember a broker we started, so that its exit can be reaped."""
    _children[process.pid] = process


@atexit.register
def _release_children() -> None:
    """Let brokers outlive this interpreter without a "still running" ResourceWarning.

    The broker is meant to keep running after ``up`` returns (e.g. a CLI call); dropping the
    Popen objects here, with that one warning silenced, is all "detaching" takes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        _children.clear()


def read_pid_file(pid_file: Path) -> int | None:
    """The pid recorded in ``pid_file``, or ``None`` when it is missing or not a number."""
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdecimal() and int(text) > 0 else None


def write_pid_file(pid_file: Path, pid: int) -> None:
    """Write ``pid`` atomically (a reader never sees a half-written file)."""
    scratch = pid_file.with_name(f".{pid_file.name}.{os.getpid()}")
    scratch.write_text(f"{pid}\n", encoding="ascii")
    scratch.replace(pid_file)


def remove_pid_file(pid_file: Path) -> None:
    """Delete the pid file if present."""
    pid_file.unlink(missing_ok=True)


def command_line(pid: int) -> list[str] | None:
    """The argv of ``pid`` (``None`` when it does not exist; ``[]`` for a zombie)."""
    if _PROC.is_dir():
        try:
            raw = (_PROC / str(pid) / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        except PermissionError:
            return []
        return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
    try:  # no /proc (macOS): ask ps; the argv comes back joined with spaces
        done = subprocess.run(
            ["ps", "-ww", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=PS_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.split() if done.returncode == 0 else None


def is_our_broker(pid: int, server_properties: Path) -> bool:
    """Whether ``pid`` is a live ``kafka.Kafka`` process started with ``server_properties``."""
    if not is_alive(pid):
        return False
    argv = command_line(pid)
    return _argv_matches(argv or [], server_properties)


def find_our_pids(server_properties: Path) -> list[int]:
    """Every live broker process started with ``server_properties`` (scans ``/proc``)."""
    if not _PROC.is_dir():
        return []
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdecimal():
            continue
        pid = int(entry.name)
        if pid != os.getpid() and is_our_broker(pid, server_properties):
            found.append(pid)
    return sorted(found)


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (reaping it when it is our child)."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return not _is_zombie(pid)


def stop_process(pid: int, timeout: float) -> str:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL its process group.

    Returns how it ended ("exited after SIGTERM in 2.1s" / "killed ..."), for the status line.
    """
    started = time.monotonic()
    _signal(pid, signal.SIGTERM, group=False)
    if _wait_gone(pid, timeout):
        return f"exited after SIGTERM in {time.monotonic() - started:.1f}s"
    logger.warning("broker pid %d ignored SIGTERM for %.0fs; sending SIGKILL", pid, timeout)
    _signal(pid, signal.SIGKILL, group=True)
    if _wait_gone(pid, KILL_WAIT):
        return f"killed with SIGKILL after {timeout:.0f}s without a clean shutdown"
    return f"still present {KILL_WAIT:.0f}s after SIGKILL"


def _argv_matches(argv: Sequence[str], server_properties: Path) -> bool:
    if KAFKA_MAIN_CLASS not in argv:
        return False
    wanted = str(server_properties)
    # the ps fallback splits a path that contains spaces; server.properties is the last arg
    return wanted in argv or " ".join(argv).endswith(f" {wanted}")


def _is_zombie(pid: int) -> bool:
    try:
        stat = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    # the state follows the parenthesised command name, which may itself contain ") "
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _signal(pid: int, signum: signal.Signals, *, group: bool) -> None:
    try:
        if group and _own_group(pid):
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        logger.debug("pid %d already gone before %s", pid, signum.name)


def _own_group(pid: int) -> bool:
    """Whether ``pid`` leads its own process group (started with start_new_session)."""
    try:
        return os.getpgid(pid) == pid and pid != os.getpgid(0)
    except ProcessLookupError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        child = _children.get(pid)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(min(POLL_INTERVAL, deadline - time.monotonic()), 0.0))
        if not is_alive(pid):
            _children.pop(pid, None)
            return True
        if time.monotonic() >= deadline:
            return False
        if child is None:
            time.sleep(POLL_INTERVAL)
