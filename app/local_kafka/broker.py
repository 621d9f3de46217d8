"""Starting, checking and stopping the local single-node KRaft broker.

``up`` is idempotent: it returns the status of the broker this home already runs instead of
starting a second one, and refuses to start when something else holds the ports. ``down``
shuts the broker down cleanly (SIGTERM), falls back to SIGKILL of its process group, and
leaves no process behind. The data in ``<home>/data`` survives ``down``/``up`` cycles.
"""

from __future__ import annotations

import errno
import logging
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from supplyflow.app.local_kafka.config import ENV_BOOTSTRAP, BrokerStatus, LocalKafkaConfig
from supplyflow.app.local_kafka.exceptions import LocalKafkaError
from supplyflow.app.local_kafka.home import (
    ERROR_LOG_LINES,
    add_scram_users,
    ensure_cluster_id,
    file_tail,
    java_command,
    prepare_home,
    settings_drift,
)
from supplyflow.app.local_kafka.process import (
    find_our_pids,
    is_our_broker,
    read_pid_file,
    register_child,
    remove_pid_file,
    stop_process,
    write_pid_file,
)
from supplyflow.app.local_kafka.protocol import RETRY_INTERVAL, probe, wait_until_ready
from supplyflow.app.local_kafka.tooling import fetch, find_java, java_major_version

__all__ = ["DOWN_TIMEOUT", "UP_TIMEOUT", "down", "log_tail", "status", "up"]

logger = logging.getLogger(__name__)

UP_TIMEOUT = 90.0
"""Seconds ``up`` waits for a started broker to answer a metadata request."""
DOWN_TIMEOUT = 30.0
"""Seconds ``down`` waits for a clean shutdown after SIGTERM before it sends SIGKILL."""
STATUS_PROBE_TIMEOUT = 2.0
"""Seconds ``status`` waits for a Kafka answer."""
PORT_PROBE_TIMEOUT = 1.0
"""Seconds ``up`` waits for a Kafka answer from a port that is already taken."""
MAX_STOP_ROUNDS = 3


def status(cfg: LocalKafkaConfig) -> BrokerStatus:
    """Whether this home's broker runs and answers (a stale pid file is removed)."""
    pid = _locate(cfg)
    if pid is None:
        return _stopped(cfg, f"stopped (home {cfg.home})")
    drift = settings_drift(cfg)
    if drift:
        return BrokerStatus(
            running=True,
            pid=pid,
            bootstrap=cfg.bootstrap,
            home=cfg.home,
            detail=f"running (pid {pid}) with other settings than asked: {'; '.join(drift)}",
            ready=False,
        )
    if probe(cfg.host, cfg.port, STATUS_PROBE_TIMEOUT).ready:
        return _running(cfg, pid, "running")
    return BrokerStatus(
        running=True,
        pid=pid,
        bootstrap=cfg.bootstrap,
        home=cfg.home,
        detail=(
            f"starting or stuck (pid {pid}): not answering on {cfg.bootstrap} yet, "
            f"logs: {cfg.paths.server_log}"
        ),
        ready=False,
    )


def up(
    cfg: LocalKafkaConfig,
    timeout: float = UP_TIMEOUT,
    *,
    scram_users: Mapping[str, str] | None = None,
) -> BrokerStatus:
    """Start the broker (fetching jars and formatting storage on first use) and wait for it.

    ``timeout`` bounds the wait for the broker's first metadata answer; the first-time jar
    download is not counted. Returns the running status; raises :class:`LocalKafkaError`
    with the log tail when the broker exits or does not answer in time (it is then stopped).
    ``scram_users`` (name -> password) are created for the secure listener, also when the
    broker already runs.
    """
    if scram_users and cfg.secure_port is None:
        raise LocalKafkaError("SCRAM users need the secure listener: give --secure-port")
    status = _up(cfg, timeout)
    if scram_users:
        java = find_java()
        add_scram_users(cfg, java, fetch(cfg), scram_users)
    return status


def _up(cfg: LocalKafkaConfig, timeout: float) -> BrokerStatus:
    pid = _locate(cfg)
    if pid is not None:
        drift = settings_drift(cfg)
        if drift:
            raise LocalKafkaError(
                f"the broker of {cfg.home} (pid {pid}) already runs with other settings: "
                f"{'; '.join(drift)}. Run `down` first to restart it with the new settings"
            )
        if wait_until_ready(cfg.bootstrap, timeout):
            logger.info(
                "kafka already running (pid %d) at %s; not starting another", pid, cfg.bootstrap
            )
            return _running(cfg, pid, "already running")
        raise LocalKafkaError(
            f"our broker (pid {pid}) runs but did not answer on {cfg.bootstrap} within "
            f"{timeout:.0f}s; see {cfg.paths.server_log}: {_diagnostics(cfg)}\n"
            "Stop it with `down` and start it again."
        )
    _check_ports_free(cfg)
    if cfg.secure_port is not None and _port_in_use(cfg.host, cfg.secure_port):
        raise LocalKafkaError(
            f"port {cfg.secure_port} (the secure listener) is in use on {cfg.host}: stop what "
            "holds it or choose another --secure-port"
        )
    java = find_java()
    java_major_version(java)
    libs = fetch(cfg)
    prepare_home(cfg)
    ensure_cluster_id(cfg, java, libs)
    started = time.monotonic()
    process = _spawn(cfg, java, libs)
    logger.info(
        "started kafka (pid %d) at %s; waiting up to %.0fs for it to answer",
        process.pid,
        cfg.bootstrap,
        timeout,
    )
    _wait_started(cfg, process, timeout)
    logger.info(
        "kafka (pid %d) answers at %s after %.1fs",
        process.pid,
        cfg.bootstrap,
        time.monotonic() - started,
    )
    return _running(cfg, process.pid, "running")


def down(cfg: LocalKafkaConfig, timeout: float = DOWN_TIMEOUT) -> BrokerStatus:
    """Stop this home's broker: SIGTERM, wait ``timeout`` s, then SIGKILL its group.

    Idempotent: when nothing runs it only removes a stale pid file. Keeps the data.
    """
    outcomes: list[str] = []
    for _ in range(MAX_STOP_ROUNDS):
        pid = _locate(cfg)
        if pid is None:
            break
        logger.info("stopping kafka (pid %d) at %s", pid, cfg.bootstrap)
        outcome = stop_process(pid, timeout)
        logger.info("kafka pid %d %s", pid, outcome)
        outcomes.append(f"pid {pid} {outcome}")
        if is_our_broker(pid, cfg.paths.server_properties):
            raise LocalKafkaError(
                f"broker pid {pid} is {outcome}; it may be stuck in the kernel (state D): "
                f"check `ps -o pid,stat,cmd -p {pid}` and stop it by hand"
            )
        remove_pid_file(cfg.paths.pid_file)
    remove_pid_file(cfg.paths.pid_file)
    detail = f"stopped ({'; '.join(outcomes)})" if outcomes else "already stopped"
    return _stopped(cfg, f"{detail}; data kept in {cfg.paths.data}")


def log_tail(cfg: LocalKafkaConfig, lines: int = 80) -> str:
    """The last ``lines`` lines of ``<home>/logs/server.log`` ("" when there is none yet)."""
    return file_tail(cfg.paths.server_log, lines)


def _locate(cfg: LocalKafkaConfig) -> int | None:
    """Our broker's pid from the pid file (stale ones removed), else from a process scan."""
    paths = cfg.paths
    pid = read_pid_file(paths.pid_file)
    if pid is not None and is_our_broker(pid, paths.server_properties):
        return pid
    if paths.pid_file.exists():
        logger.info(
            "removing stale pid file %s (pid %s is not this home's broker)", paths.pid_file, pid
        )
        remove_pid_file(paths.pid_file)
    found = find_our_pids(paths.server_properties)
    if not found:
        return None
    if len(found) > 1:
        logger.warning("several brokers run with %s: %s", paths.server_properties, found)
    logger.warning("kafka pid %d runs without a pid file; writing %s", found[0], paths.pid_file)
    write_pid_file(paths.pid_file, found[0])
    return found[0]


def _check_ports_free(cfg: LocalKafkaConfig) -> None:
    """Refuse to start when the client or controller port is taken (saying by what)."""
    cport = cfg.resolved_controller_port
    for port in (cfg.port, cport):
        if not _port_in_use(cfg.host, port):
            continue
        address = f"{cfg.host}:{port}"
        if probe(cfg.host, port, PORT_PROBE_TIMEOUT).ready:
            raise LocalKafkaError(
                f"a Kafka broker that this home ({cfg.home}) did not start already answers on "
                f"{address}: use it with {ENV_BOOTSTRAP}={address}, stop it, or choose "
                "another port"
            )
        raise LocalKafkaError(
            f"port {port} is in use by another process on {cfg.host}: stop it or choose "
            f"another port (the broker needs {cfg.port} for clients and {cport} for its "
            "controller)"
        )


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise LocalKafkaError(f"cannot listen on {host}:{port} ({exc}): check host") from exc
    return False


def _spawn(cfg: LocalKafkaConfig, java: Path, libs: Path) -> subprocess.Popen[bytes]:
    paths = cfg.paths
    command = java_command(cfg, java, libs)
    logger.debug("starting %s", " ".join(command))
    try:
        with paths.stdout_log.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=paths.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        raise LocalKafkaError(f"could not start {java}: {exc}") from exc
    register_child(process)
    write_pid_file(paths.pid_file, process.pid)
    return process


def _wait_started(cfg: LocalKafkaConfig, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            remove_pid_file(cfg.paths.pid_file)
            raise LocalKafkaError(
                f"the broker exited with code {code} during startup; see "
                f"{cfg.paths.server_log}: {_diagnostics(cfg)}"
            )
        if probe(cfg.host, cfg.port, STATUS_PROBE_TIMEOUT).ready:
            return
        if time.monotonic() >= deadline:
            outcome = stop_process(process.pid, DOWN_TIMEOUT)
            remove_pid_file(cfg.paths.pid_file)
            raise LocalKafkaError(
                f"broker did not answer on {cfg.bootstrap} within {timeout:.0f}s and was "
                f"stopped ({outcome}); see {cfg.paths.server_log}: {_diagnostics(cfg)}"
            )
        time.sleep(RETRY_INTERVAL)


def _running(cfg: LocalKafkaConfig, pid: int, state: str) -> BrokerStatus:
    secure = f" and SASL_SSL at {cfg.secure_bootstrap}" if cfg.secure_bootstrap else ""
    return BrokerStatus(
        running=True,
        pid=pid,
        bootstrap=cfg.bootstrap,
        home=cfg.home,
        detail=f"{state} (pid {pid}) at {cfg.bootstrap}{secure}, logs: {cfg.paths.server_log}",
        ready=True,
    )


def _stopped(cfg: LocalKafkaConfig, detail: str) -> BrokerStatus:
    return BrokerStatus(
        running=False, pid=None, bootstrap=cfg.bootstrap, home=cfg.home, detail=detail
    )


def _diagnostics(cfg: LocalKafkaConfig) -> str:
    """The tails of server.log and of the JVM's own output, for error messages."""
    parts = []
    server = file_tail(cfg.paths.server_log, ERROR_LOG_LINES)
    if server:
        parts.append(server)
    jvm = file_tail(cfg.paths.stdout_log, ERROR_LOG_LINES)
    if jvm:
        parts.append(f"--- {cfg.paths.stdout_log}:\n{jvm}")
    return "\n" + "\n".join(parts) if parts else "(no log output yet)"
