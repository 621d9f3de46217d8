"""Integration fixtures: the real local broker, isolated names, real worker processes.

The broker is the one ``make test`` starts (``supplyflow kafka up``), found through
``SUPPLYFLOW_BOOTSTRAP``. Without it these tests fail; they never skip. Each test gets its
own topic prefix, app id and data dir; worker and broker logs are printed when it fails.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeAlias

import pytest

from supplyflow.app import local_kafka
from supplyflow.app.processes import WorkerProcess
from supplyflow.app.topics import delete_topics
from tests.integration.fault_checks import Row, render_table
from tests.integration.fault_ops import SEED_ENV, fault_seeds

#: How long the broker may take to answer before the run is declared broken.
BROKER_CHECK_S: Final = 15.0
WorkerFactory: TypeAlias = Callable[..., WorkerProcess]

pytestmark = pytest.mark.integration
_FAULT_ROWS = pytest.StashKey[list[Row]]()


@pytest.fixture
def fault_table(request: pytest.FixtureRequest) -> list[Row]:
    """The fault cases' summary rows, printed at the end of the run."""
    return request.config.stash.setdefault(_FAULT_ROWS, [])


def _seed_line() -> str:
    seeds = ",".join(map(str, fault_seeds()))
    return f"fault seeds: {seeds} (kill cases run with each; repeat with {SEED_ENV}={seeds})"


def pytest_report_header(config: pytest.Config) -> str:
    return _seed_line()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_FAULT_ROWS, [])
    if not rows:
        return
    terminalreporter.section("fault injection summary")
    terminalreporter.write_line(_seed_line())
    terminalreporter.write_line(render_table(rows))
    for row in rows:
        for note in row.notes:
            terminalreporter.write_line(f"{row.case} (seed {row.seed}): {note}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]  # pluggy's result object
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def bootstrap() -> str:
    address = os.environ.get("SUPPLYFLOW_BOOTSTRAP", "127.0.0.1:9092")
    if not local_kafka.wait_until_ready(address, BROKER_CHECK_S):
        pytest.fail(
            f"no Kafka broker answers at {address}: integration tests need the real broker. "
            "Run `make test` (it starts one), or `supplyflow kafka up` first."
        )
    return address


@pytest.fixture
def names() -> dict[str, str]:
    """A unique topic prefix and app id for one test."""
    run = f"it-{uuid.uuid4().hex[:10]}"
    return {"prefix": f"{run}.", "app_id": run}


@pytest.fixture
def worker_env(bootstrap: str, names: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        "SUPPLYFLOW_BOOTSTRAP": bootstrap,
        "SUPPLYFLOW_TOPIC_PREFIX": names["prefix"],
        "SUPPLYFLOW_APP_ID": names["app_id"],
        "SUPPLYFLOW_PARTITIONS": "4",
        # Fault tests kill workers: the group must notice within seconds, not a minute.
        "SUPPLYFLOW_BROKER_SESSION_TIMEOUT": "10s",
    }


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest, worker_env: dict[str, str], tmp_path: Path
) -> Iterator[WorkerFactory]:
    """Start a real ``supplyflow worker`` process; all are stopped (and logs shown) after.

    Worker ``n`` started again (a restart) gets the same data dir and web port, as a
    restarted service would: with static group membership the others learn a worker's
    address only at rebalances, and a restart within the session timeout causes none.
    """
    started: list[WorkerProcess] = []
    ports: dict[int, int] = {}

    def start(n: int | None = None, processes: int = 1, **extra_env: str) -> WorkerProcess:
        index = len(started) if n is None else n
        env = {
            **worker_env,
            "SUPPLYFLOW_DATA_DIR": str(tmp_path / f"worker-{index}" / "data"),
            **extra_env,
        }
        worker = WorkerProcess(
            env, tmp_path / f"worker-{index}.log", web_port=ports.get(index), processes=processes
        )
        ports[index] = worker.web_port
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for i, worker in enumerate(started):
            print(f"\n----- worker {i} log ({worker.log_path}) -----\n{worker.log_tail(120)}")
        print(f"\n----- broker log -----\n{local_kafka.log_tail(local_kafka.default_config())}")


@pytest.fixture(autouse=True)
def _delete_test_topics(bootstrap: str, names: dict[str, str]) -> Iterator[None]:
    """Tests leave no topics behind on the shared broker (SUPPLYFLOW_KEEP_TOPICS=1 keeps)."""
    yield
    if os.environ.get("SUPPLYFLOW_KEEP_TOPICS") == "1":
        print(f"kept topics of {names['prefix']} / {names['app_id']}")
        return
    asyncio.run(delete_topics(bootstrap, (names["prefix"], f"{names['app_id']}-")))
