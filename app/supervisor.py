"""One ``supplyflow worker`` that uses the machine: N worker processes under a supervisor.

``supplyflow worker --processes N`` (``SUPPLYFLOW_PROCESSES``) starts N ordinary worker
processes, each one member of the consumer group, and watches them. Child ``i`` (``p<i>``)
gets its own state folder ``<SUPPLYFLOW_DATA_DIR>/p<i>``, web port ``SUPPLYFLOW_WEB_PORT +
i`` (the advertised URL's port moves with it) and static-membership instance id
``<instance id>-p<i>``: a restarted child takes its own place in the group back.

The supervisor forwards SIGTERM and SIGINT to the children and exits once they have
stopped; it restarts a child that dies (after 1 s, doubling up to 30 s, reset once a child
has run for 2 minutes), but not one that stopped on a configuration error, and gives up
when a child dies within 30 s of its start 5 times in a row. On Linux the children get
SIGTERM if the supervisor itself dies (``PR_SET_PDEATHSIG``). With one process there is no
supervisor: ``supplyflow worker`` is the worker.
"""

from __future__ import annotations

import ctypes
import logging
import logging.config
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final
from urllib.parse import urlsplit

from supplyflow.app import membership
from supplyflow.app.exceptions import USAGE_EXIT_CODE, SettingsError
from supplyflow.app.logs import logging_config
from supplyflow.app.settings import ENV_PREFIX, Settings

__all__ = [
    "NO_RESTART_EXIT_CODES",
    "ChildSpec",
    "RestartPolicy",
    "Supervisor",
    "child_specs",
    "run_supervisor",
]

log = logging.getLogger(__name__)

#: Exit codes of a child that starting it again cannot fix: a bad setting (or a missing
#: broker, a refused instance id: the CLI's usage error) and a fenced static member (another
#: process holds its instance id). The supervisor stops the others and exits with the code.
NO_RESTART_EXIT_CODES: Final = frozenset({USAGE_EXIT_CODE, membership.FENCED_EXIT_CODE})
#: The longest instance id a setting accepts (see Settings._check_app_id).
_MAX_INSTANCE_ID: Final = 100
_MAX_PORT: Final = 65535
#: How often the supervisor looks at its children: a restart or a stop waits at most this.
_POLL_S: Final = 0.1
#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG: Final = 1
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead child is started again, and when the supervisor stops trying."""

    #: Wait before the first restart; each further failure in a row doubles it ...
    first_delay_s: float = 1.0
    #: ... up to this.
    max_delay_s: float = 30.0
    #: A child that ran this long was healthy: its next failure waits first_delay_s again.
    stable_s: float = 120.0
    #: A child that dies within this long of its start failed fast ...
    fast_failure_s: float = 30.0
    #: ... and this many fast failures in a row stop the supervisor.
    give_up_after: int = 5

    def delay(self, failures: int) -> float:
        """Wait before restarting a child that failed ``failures`` times in a row (>= 1)."""
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** max(0, failures - 1)))


@dataclass(frozen=True)
class ChildSpec:
    """What makes child ``index`` a worker of its own."""

    index: int
    web_port: int
    data_dir: Path
    instance_id: str
    #: The URL the other workers forward look-ups to.
    advertised_url: str
    #: ``SUPPLYFLOW_*`` variables the child gets on top of the supervisor's environment.
    env: Mapping[str, str]

    @property
    def name(self) -> str:
        return f"p{self.index}"


def _shift_port(url: str, by: int) -> str:
    """``url`` (scheme, host and an explicit port, as the settings accept) with port + by."""
    parts = urlsplit(url)
    host, _, port = parts.netloc.rpartition(":")
    return f"{parts.scheme}://{host}:{int(port) + by}"


def child_specs(settings: Settings) -> list[ChildSpec]:
    """Each child's port, data dir, instance id and URL; SettingsError if one has none."""
    count = settings.processes
    base_id = membership.instance_id(settings)
    longest = f"{base_id}-p{count - 1}"
    if len(longest) > _MAX_INSTANCE_ID:
        raise SettingsError(
            f"{ENV_PREFIX}INSTANCE_ID: with {ENV_PREFIX}PROCESSES={count} process {count - 1} "
            f"would be {longest!r}, longer than {_MAX_INSTANCE_ID} characters: set a shorter "
            f"{ENV_PREFIX}INSTANCE_ID (or {ENV_PREFIX}APP_ID)"
        )
    port = settings.web_port
    if port and port + count - 1 > _MAX_PORT:
        raise SettingsError(
            f"{ENV_PREFIX}WEB_PORT: process {count - 1} would listen on {port + count - 1}: "
            f"with {ENV_PREFIX}PROCESSES={count} use a port up to {_MAX_PORT - count + 1}"
        )
    specs = []
    for index in range(count):
        child_port = port + index if port else 0  # 0: each child takes any free port
        env = {
            f"{ENV_PREFIX}PROCESSES": "1",
            f"{ENV_PREFIX}DATA_DIR": str(settings.data_dir / f"p{index}"),
            f"{ENV_PREFIX}WEB_PORT": str(child_port),
            f"{ENV_PREFIX}INSTANCE_ID": f"{base_id}-p{index}",
            f"{ENV_PREFIX}LEAVE_GROUP_ON_STOP": str(settings.leave_group_on_stop).lower(),
        }
        if settings.advertised_url is not None:
            url = _shift_port(settings.advertised_url, index)
            env[f"{ENV_PREFIX}ADVERTISED_URL"] = url
        else:
            url = settings.model_copy(update={"web_port": child_port}).web_advertised_url
        specs.append(
            ChildSpec(
                index=index,
                web_port=child_port,
                data_dir=settings.data_dir / f"p{index}",
                instance_id=f"{base_id}-p{index}",
                advertised_url=url,
                env=env,
            )
        )
    return specs


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when the supervisor dies; None
    where that is not available (best effort)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    failures: int = 0
    fast_failures: int = 0
    exit_codes: list[int] = field(default_factory=list)


def _exit_status(code: int) -> int:
    """A shell's view of a child's return code (killed by signal n: 128 + n)."""
    return 128 - code if code < 0 else code


class Supervisor:
    """Runs one child process per spec until a stop signal, restarting those that die."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        command: Sequence[str],
        base_env: Mapping[str, str],
        policy: RestartPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        poll_s: float = _POLL_S,
    ) -> None:
        self.children = [_Child(spec) for spec in specs]
        self.command = list(command)
        self.base_env = dict(base_env)
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.poll_s = poll_s
        self.stopping: signal.Signals | None = None
        self.exit_code = 0
        self._preexec = _die_with_parent()

    def run(self) -> int:
        """Start every child; return once all have stopped (the supervisor's exit code)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        try:
            for child in self.children:
                self._start(child)
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._terminate_left()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop every child with ``sig`` (what SIGTERM/SIGINT to the supervisor do)."""
        if self.stopping is None:
            log.info("%s: stopping %d worker processes", sig.name, len(self.children))
        self.stopping = sig
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(sig)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop(signal.Signals(signum))

    def _start(self, child: _Child) -> None:
        child.proc = subprocess.Popen(
            self.command,
            env={**self.base_env, **child.spec.env},
            preexec_fn=self._preexec,  # noqa: PLW1509 - the supervisor starts no threads
        )
        child.started_at = self.clock()
        log.info(
            "%s started (pid %d): web port %d, data dir %s, instance id %s",
            child.spec.name,
            child.proc.pid,
            child.spec.web_port,
            child.spec.data_dir,
            child.spec.instance_id,
        )
        if self.stopping is not None:  # a stop signal came while it started
            child.proc.send_signal(self.stopping)

    def _watch(self) -> int:
        while True:
            for child in self.children:
                code = child.proc.poll() if child.proc is not None else None
                if code is not None:
                    child.proc = None
                    child.exit_codes.append(code)
                    self._exited(child, code)
                if (
                    child.proc is None
                    and self.stopping is None
                    and self.clock() >= child.restart_at
                ):
                    self._start(child)
            if self.stopping is not None and all(c.proc is None for c in self.children):
                return self.exit_code
            time.sleep(self.poll_s)

    def _exited(self, child: _Child, code: int) -> None:
        name = child.spec.name
        if self.stopping is not None:
            if code not in (0, -signal.SIGTERM, -signal.SIGINT) and self.exit_code == 0:
                self.exit_code = _exit_status(code)
            return
        ran = self.clock() - child.started_at
        if code in NO_RESTART_EXIT_CODES:
            log.error(
                "%s stopped with exit code %d (a setting, the broker or its instance id: see "
                "its message above); not restarting it: stopping the others",
                name,
                code,
            )
            self.exit_code = code
            self.stop()
            return
        child.failures = 1 if ran >= self.policy.stable_s else child.failures + 1
        child.fast_failures = child.fast_failures + 1 if ran < self.policy.fast_failure_s else 0
        if child.fast_failures >= self.policy.give_up_after:
            log.error(
                "%s died within %.0f s of its start %d times in a row (last exit code %d); "
                "giving up: stopping the others. Its log lines above say why",
                name,
                self.policy.fast_failure_s,
                child.fast_failures,
                code,
            )
            self.exit_code = 1
            self.stop()
            return
        delay = self.policy.delay(child.failures)
        child.restart_at = self.clock() + delay
        log.warning(
            "%s died after %.1f s (exit code %d); restarting it in %.0f s", name, ran, code, delay
        )

    def _terminate_left(self) -> None:
        """Children still running when run() ends abnormally are stopped, not orphaned."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.terminate()
                child.proc.wait()


def _configure_logging(settings: Settings) -> None:
    config = logging_config(settings.log_format, settings.log_level)
    if config is None:
        logging.basicConfig(
            level=settings.log_level,
            format="[%(asctime)s] [%(process)s] [%(levelname)s] %(name)s: %(message)s",
            stream=sys.stderr,
        )
    else:
        logging.config.dictConfig(config)


def run_supervisor(settings: Settings, config_file: Path | None = None) -> int:
    """Run ``settings.processes`` workers until SIGTERM/SIGINT; the exit code."""
    specs = child_specs(settings)
    _configure_logging(settings)
    if settings.processes > settings.partitions:
        log.warning(
            "%d processes for %d partitions: some will have nothing to do",
            settings.processes,
            settings.partitions,
        )
    config = ["--config", str(config_file)] if config_file is not None else []
    command = [sys.executable, "-m", "supplyflow", *config, "worker"]
    return Supervisor(specs, command, os.environ).run()
