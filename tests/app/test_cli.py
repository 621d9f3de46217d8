"""The CLI stops with one clear message (exit 2) on a bad setting; no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SUPPLYFLOW_SLA_PO_ACK", "erp=soon"),
        ("SUPPLYFLOW_SLA_INVOICE", "4 hours"),
        ("SUPPLYFLOW_PARTITIONS", "-1"),
    ],
)
def test_worker_with_a_bad_setting_names_it_and_exits_2(variable: str, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLYFLOW_")}
    env[variable] = value
    result = subprocess.run(
        [sys.executable, "-m", "supplyflow", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supplyflow", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for command in ("worker", "kafka", "produce", "demo", "schemas", "dlq"):
        assert command in result.stdout


@pytest.mark.parametrize("scale", ["0", "-2"])
def test_produce_load_with_a_bad_scale_says_so_and_exits_2(scale: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supplyflow", "produce", "load", "--scale", scale],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--scale must be a positive number" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_leave_flag_sets_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from supplyflow.app import cli, worker
    from supplyflow.app.settings import Settings

    started: list[Settings] = []

    def run(settings: Settings) -> int:
        started.append(settings)
        return 0

    monkeypatch.setattr(worker, "run_worker", run)
    for argv in (["worker", "--leave"], ["worker"]):  # not main(): it patches aiokafka
        assert cli._cmd_worker(cli._parser().parse_args(argv)) == 0
    assert [s.leave_group_on_stop for s in started] == [True, False]
