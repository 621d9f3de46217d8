"""The supervisor of ``supplyflow worker --processes N``, with small fake child commands.

Each fake child is a Python one-liner that appends ``start <monotonic time>`` to its own
file, waits for the file of ``FAKE_AFTER`` (another child) if set, then behaves as its
``FAKE_P<i>`` variable says; on SIGTERM or SIGINT it appends
``signal <n>`` and exits 0, as a worker does.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from supplyflow.app import cli
from supplyflow.app.exceptions import SettingsError
from supplyflow.app.membership import FENCED_EXIT_CODE
from supplyflow.app.settings import ENV_PREFIX, Settings, load_settings
from supplyflow.app.supervisor import ChildSpec, RestartPolicy, Supervisor, child_specs

#: Bounds every wait for a fake child or the supervisor.
WAIT_S: Final = 20.0
_POLL_S: Final = 0.02
#: Restarts fast enough for a unit test, with the shape of the real policy.
QUICK: Final = RestartPolicy(
    first_delay_s=0.05, max_delay_s=0.2, stable_s=5.0, fast_failure_s=3.0, give_up_after=5
)

FAKE_CHILD: Final = textwrap.dedent(
    """
    import os, pathlib, signal, sys, time
    name = pathlib.Path(os.environ["SUPPLYFLOW_DATA_DIR"]).name
    log = pathlib.Path(os.environ["FAKE_DIR"]) / name
    def note(line):
        with log.open("a") as f:
            f.write(line + "\\n")
    def on_signal(sig, frame):
        note(f"signal {sig}")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    note(f"start {time.monotonic()}")
    starts = sum(1 for line in log.read_text().splitlines() if line.startswith("start"))
    how = os.environ.get("FAKE_" + name.upper(), "run").split(":")
    after = pathlib.Path(os.environ["FAKE_DIR"]) / os.environ.get("FAKE_AFTER", name)
    while not after.exists():
        time.sleep(0.01)
    if how[0] == "exit":
        sys.exit(int(how[1]))
    if how[0] == "fail-once" and starts == 1:
        sys.exit(1)
    if how[0] == "live":
        time.sleep(float(how[1]))
        sys.exit(1)
    while True:
        time.sleep(1)
    """
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", **values)


def _specs(tmp_path: Path, processes: int = 2) -> list[ChildSpec]:
    return child_specs(_settings(tmp_path, processes=processes, instance_id="w"))


def _supervisor(tmp_path: Path, processes: int = 2, **fake: str) -> Supervisor:
    env = {
        **os.environ,
        "FAKE_DIR": str(tmp_path),
        **{f"FAKE_{k.upper()}": v for k, v in fake.items()},
    }
    return Supervisor(
        _specs(tmp_path, processes), [sys.executable, "-c", FAKE_CHILD], env, QUICK, poll_s=_POLL_S
    )


def _lines(tmp_path: Path, child: str) -> list[str]:
    try:
        return (tmp_path / child).read_text().splitlines()
    except FileNotFoundError:
        return []


def _starts(tmp_path: Path, child: str) -> list[float]:
    return [float(line.split()[1]) for line in _lines(tmp_path, child) if line.startswith("start")]


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S}s: {what}")
        time.sleep(_POLL_S)


@pytest.fixture
def stop_when() -> Iterator[Callable[[Supervisor, Callable[[], bool]], None]]:
    """Stop a supervisor (as SIGTERM does) from another thread once a condition holds."""
    threads: list[threading.Thread] = []

    def start(supervisor: Supervisor, condition: Callable[[], bool]) -> None:
        def watch() -> None:
            deadline = time.monotonic() + WAIT_S
            while not condition() and time.monotonic() < deadline:
                time.sleep(_POLL_S)
            supervisor.stop()

        thread = threading.Thread(target=watch, name="stop-when")
        thread.start()
        threads.append(thread)

    yield start
    for thread in threads:
        thread.join(WAIT_S)


# --- what each child gets --------------------------------------------------------------


def test_each_child_gets_its_own_port_data_dir_and_instance_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, processes=3, web_port=7000, instance_id="dc1-w")
    specs = child_specs(settings)
    assert [s.name for s in specs] == ["p0", "p1", "p2"]
    assert [s.web_port for s in specs] == [7000, 7001, 7002]
    assert [s.data_dir for s in specs] == [tmp_path / "data" / f"p{i}" for i in range(3)]
    assert [s.instance_id for s in specs] == ["dc1-w-p0", "dc1-w-p1", "dc1-w-p2"]
    assert [s.advertised_url for s in specs] == [
        f"http://127.0.0.1:{p}" for p in (7000, 7001, 7002)
    ]
    for spec in specs:
        # What the child process loads from its environment is that spec, as one worker.
        with monkeypatch.context() as env:
            for name, value in spec.env.items():
                env.setenv(name, value)
            child = load_settings()
        assert child.processes == 1
        assert child.web_port == spec.web_port
        assert child.data_dir == spec.data_dir
        assert child.instance_id == spec.instance_id
        assert child.web_advertised_url == spec.advertised_url
        assert child.leave_group_on_stop is False


def test_derived_instance_ids_extend_the_supervisors(tmp_path: Path) -> None:
    from supplyflow.app.membership import instance_id

    settings = _settings(tmp_path, processes=2, app_id="shop")
    assert [s.instance_id for s in child_specs(settings)] == [
        f"{instance_id(settings)}-p0",
        f"{instance_id(settings)}-p1",
    ]


def test_an_advertised_url_moves_with_each_childs_port(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, processes=2, web_host="0.0.0.0", advertised_url="http://worker-1.shop:6066"
    )
    specs = child_specs(settings)
    assert [s.advertised_url for s in specs] == [
        "http://worker-1.shop:6066",
        "http://worker-1.shop:6067",
    ]
    assert [s.env[f"{ENV_PREFIX}ADVERTISED_URL"] for s in specs] == [
        s.advertised_url for s in specs
    ]


def test_ipv6_advertised_url_keeps_its_brackets(tmp_path: Path) -> None:
    settings = _settings(tmp_path, processes=2, advertised_url="http://[fd00::7]:6066")
    assert child_specs(settings)[1].advertised_url == "http://[fd00::7]:6067"


def test_leave_and_any_port_carry_over(tmp_path: Path) -> None:
    specs = child_specs(_settings(tmp_path, processes=2, web_port=0, leave_group_on_stop=True))
    assert [s.web_port for s in specs] == [0, 0]
    assert {s.env[f"{ENV_PREFIX}LEAVE_GROUP_ON_STOP"] for s in specs} == {"true"}


def test_an_instance_id_too_long_for_the_children_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SUPPLYFLOW_INSTANCE_ID"):
        child_specs(_settings(tmp_path, processes=2, instance_id="w" * 98))


def test_ports_past_65535_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SUPPLYFLOW_WEB_PORT"):
        child_specs(_settings(tmp_path, processes=2, web_port=65535))


@pytest.mark.parametrize("value", ["0", "-1", "65", "two"])
def test_a_bad_process_count_names_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(f"{ENV_PREFIX}PROCESSES", value)
    with pytest.raises(SettingsError, match="SUPPLYFLOW_PROCESSES"):
        load_settings()


def test_one_process_runs_the_worker_itself_and_more_a_supervisor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from supplyflow.app import supervisor, worker

    ran: list[tuple[str, int]] = []

    def fake_worker(settings: Settings) -> int:
        ran.append(("worker", settings.processes))
        return 0

    def fake_supervisor(settings: Settings, config_file: Path | None) -> int:
        ran.append(("supervisor", settings.processes))
        return 0

    monkeypatch.setattr(worker, "run_worker", fake_worker)
    monkeypatch.setattr(supervisor, "run_supervisor", fake_supervisor)
    assert cli.main(["worker"]) == 0
    assert cli.main(["worker", "--processes", "2"]) == 0
    monkeypatch.setenv(f"{ENV_PREFIX}PROCESSES", "3")
    assert cli.main(["worker"]) == 0
    assert cli.main(["worker", "--processes", "1"]) == 0
    assert ran == [("worker", 1), ("supervisor", 2), ("supervisor", 3), ("worker", 1)]


def test_restart_delays_double_up_to_the_cap() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


# --- running fake children ---------------------------------------------------------------


def test_a_dead_child_is_restarted_and_the_others_keep_running(
    tmp_path: Path, stop_when: Callable[..., None]
) -> None:
    supervisor = _supervisor(tmp_path, p0="fail-once")
    stop_when(supervisor, lambda: len(_starts(tmp_path, "p0")) == 2)
    assert supervisor.run() == 0
    first, second = _starts(tmp_path, "p0")
    assert second - first >= QUICK.first_delay_s
    assert len(_starts(tmp_path, "p1")) == 1  # never restarted
    for child in ("p0", "p1"):  # both stopped by the forwarded SIGTERM
        assert _lines(tmp_path, child)[-1] == f"signal {int(signal.SIGTERM)}"


def test_fast_failures_back_off_then_the_supervisor_gives_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = _supervisor(tmp_path, p0="exit:1")
    assert supervisor.run() == 1
    starts = _starts(tmp_path, "p0")
    assert len(starts) == QUICK.give_up_after
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    for failures, gap in enumerate(gaps, start=1):
        assert gap >= QUICK.delay(failures)
    assert _lines(tmp_path, "p1")[-1] == f"signal {int(signal.SIGTERM)}"
    assert "p0 died within 3 s of its start 5 times in a row" in caplog.text
    assert "giving up" in caplog.text


def test_a_child_that_ran_a_while_is_never_given_up(
    tmp_path: Path, stop_when: Callable[..., None]
) -> None:
    policy = RestartPolicy(first_delay_s=0.05, fast_failure_s=0.2, give_up_after=2)
    env = {**os.environ, "FAKE_DIR": str(tmp_path), "FAKE_P0": "live:0.4"}
    supervisor = Supervisor(
        _specs(tmp_path, 1), [sys.executable, "-c", FAKE_CHILD], env, policy, poll_s=_POLL_S
    )
    stop_when(supervisor, lambda: len(_starts(tmp_path, "p0")) >= 4)
    assert supervisor.run() == 0
    assert len(_starts(tmp_path, "p0")) >= 4


@pytest.mark.parametrize("code", [2, FENCED_EXIT_CODE])
def test_a_configuration_error_is_not_retried(
    tmp_path: Path, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = _supervisor(tmp_path, p1=f"exit:{code}", after="p0")
    assert supervisor.run() == code
    assert len(_starts(tmp_path, "p1")) == 1
    assert _lines(tmp_path, "p0")[-1] == f"signal {int(signal.SIGTERM)}"
    assert f"p1 stopped with exit code {code}" in caplog.text


# --- the supervisor as a process: signals -------------------------------------------------

SUPERVISOR: Final = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from supplyflow.app.settings import Settings
    from supplyflow.app.supervisor import RestartPolicy, Supervisor, child_specs
    specs = child_specs(Settings(data_dir=Path(sys.argv[1]), processes=2, instance_id="w"))
    policy = RestartPolicy(first_delay_s=0.05)
    sys.exit(Supervisor(specs, [sys.executable, "-c", sys.argv[2]], os.environ, policy).run())
    """
)


def _start_supervisor(tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FAKE_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path / "data"), FAKE_CHILD], env=env
    )
    _wait(lambda: all(_starts(tmp_path, c) for c in ("p0", "p1")), "both children started")
    return proc


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return found


def _gone(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] == "Z"  # a zombie: dead, waiting for a parent's wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_is_forwarded_to_every_child(tmp_path: Path, sig: signal.Signals) -> None:
    proc = _start_supervisor(tmp_path)
    try:
        proc.send_signal(sig)
        assert proc.wait(WAIT_S) == 0
    finally:
        proc.kill()
        proc.wait()
    for child in ("p0", "p1"):
        assert _lines(tmp_path, child)[-1] == f"signal {int(sig)}"
        assert len(_starts(tmp_path, child)) == 1  # a stop is not a death: no restart


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_die_with_the_supervisor(tmp_path: Path) -> None:
    proc = _start_supervisor(tmp_path)
    children = _children_of(proc.pid)
    assert len(children) == 2
    proc.kill()
    proc.wait()
    _wait(lambda: all(_gone(pid) for pid in children), "children gone after the supervisor")
    for child in ("p0", "p1"):
        assert _lines(tmp_path, child)[-1] == f"signal {int(signal.SIGTERM)}"
