"""Suite-wide guards: no test may leave environment changes or threads behind."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    env_before = dict(os.environ)
    threads_before = set(threading.enumerate())
    yield
    changed = {
        k
        for k in set(env_before) | set(os.environ)
        if env_before.get(k) != os.environ.get(k) and k != "PYTEST_CURRENT_TEST"
    }
    if changed:
        for name in changed:
            if name in env_before:
                os.environ[name] = env_before[name]
            else:
                del os.environ[name]
        pytest.fail(f"test changed environment variables {sorted(changed)}; use monkeypatch")
    leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    if leaked:
        pytest.fail(f"test left threads running: {[t.name for t in leaked]}")


def pytest_report_header() -> str:
    """Which build of the domain the run tests (`make compile`: supplyflow.compiled)."""
    from supplyflow.compiled import compiled_in_use

    return "domain: " + ("compiled (mypyc)" if compiled_in_use() else "pure Python")
