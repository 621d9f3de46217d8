"""`supplyflow demo` end to end against the running broker: it reports and cleans up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from supplyflow.app.sample import OK, sample_scenario

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S: Final = 300


def test_demo_runs_end_to_end(bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPLYFLOW_")}
    env["SUPPLYFLOW_BOOTSTRAP"] = bootstrap
    result = subprocess.run(
        [sys.executable, "-m", "supplyflow", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"Kafka answers at {bootstrap}" in out
    assert "Demo complete." in out
    bad = [r for r in sample_scenario("x") if r.expect != OK]
    for reason in {r.expect for r in bad}:
        assert reason in out
    assert "Dead-lettered to demo-" in out
    assert demo_workers(bootstrap) == []


def demo_workers(bootstrap: str) -> list[int]:
    """Worker processes a demo on ``bootstrap`` started (their app id starts with ``demo-``).

    Only this broker's: on a shared machine other checkouts run demos against their own.
    """
    broker = f"SUPPLYFLOW_BOOTSTRAP={bootstrap}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if (
            b"supplyflow\0worker" in cmdline
            and b"SUPPLYFLOW_APP_ID=demo-" in environ
            and broker in environ + b"\0"
        ):
            found.append(int(proc.name))
    return found
