"""Patches 1 and 2: the web server serves no built-in view."""

from __future__ import annotations

from pathlib import Path

from supplyflow.agents.runtime.faust.web import QuietWeb, SupplyflowApp


def test_web_serves_no_builtin_views(tmp_path: Path) -> None:
    app = SupplyflowApp("p", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    web = app.web
    assert isinstance(web, QuietWeb)
    assert web.blueprints._enabled == []
