"""HTTP views of a worker: ``/health`` and ``/metrics`` (more routes join with later parts).

Only routes registered here are served (see :mod:`supplyflow.app.faust_patches`).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from supplyflow.app.metrics import CONTENT_TYPE, Metrics

__all__ = ["health_state", "register_views"]

_UNAVAILABLE: Final = 503


def health_state(app: Any) -> str:
    """``starting``, ``recovering`` or ``running``, from the Faust app's flags."""
    if getattr(app, "in_recovery", False) or getattr(app, "rebalancing", False):
        return "recovering"
    recovery = app.tables.recovery
    if not recovery.completed.is_set():
        return "starting"
    return "running"


def register_views(app: Any, metrics: Metrics) -> None:
    """Register the worker's HTTP routes on ``app``'s web server."""

    @app.page("/health")  # type: ignore[untyped-decorator]  # faust ships no types
    async def health(web: Any, request: Any) -> Any:
        state = health_state(app)
        body = orjson.dumps({"status": state, "app_id": app.conf.id})
        status = 200 if state == "running" else _UNAVAILABLE
        return web.bytes(body, content_type="application/json", status=status)

    @app.page("/metrics")  # type: ignore[untyped-decorator]  # faust ships no types
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE.split(";")[0])
