"""The checked-in OpenAPI document: valid OpenAPI 3.1, and exactly the routes a worker serves.

Live answers are checked against it in ``tests/integration/test_http_api.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from openapi_spec_validator import validate

from supplyflow.app.web import ROUTES, liveness, register_views


def _document() -> dict[str, Any]:
    text = resources.files("supplyflow.app").joinpath("static/openapi.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


@dataclass
class _Conf:
    id: str = "t"
    canonical_url: str = "http://worker-1:6066"


@dataclass
class _RecordingApp:
    """Records what ``register_views`` registers, like Faust's ``app.page``."""

    conf: _Conf = field(default_factory=_Conf)
    pages: list[str] = field(default_factory=list)
    crashed: bool = False
    should_stop: bool = False

    def page(self, path: str) -> Callable[[Any], Any]:
        def register(view: Any) -> Any:
            assert callable(view)
            self.pages.append(path)
            return view

        return register


def test_document_is_valid_openapi_3_1() -> None:
    document = _document()
    validate(document)
    assert document["openapi"].startswith("3.1")


def test_document_describes_every_route_a_worker_registers() -> None:
    app = _RecordingApp()
    register_views(app, metrics=None, tables=None, open_index=None, ensure_index=lambda: None)  # type: ignore[arg-type]  # the views are registered, never run
    assert sorted(app.pages) == sorted(ROUTES)
    assert len(set(app.pages)) == len(app.pages)
    assert set(_document()["paths"]) == set(ROUTES)


def test_every_operation_documents_its_answers() -> None:
    for path, item in _document()["paths"].items():
        operation = item["get"]
        assert operation.get("operationId"), path
        assert "200" in operation["responses"], path
        for name in (p["name"] for p in operation.get("parameters", []) if p["in"] == "path"):
            assert "{" + name + "}" in path, (path, name)
        if operation.get("security"):
            assert "401" in operation["responses"], f"{path} can answer 401"


def test_liveness_stays_up_while_recovering() -> None:
    class _Recovery:
        class completed:  # noqa: N801  # mimics an asyncio.Event attribute
            @staticmethod
            def is_set() -> bool:
                return True

    class _Tables:
        recovery = _Recovery()

    app = _RecordingApp()
    app.in_recovery = True  # type: ignore[attr-defined]  # Faust's flag
    app.tables = _Tables()  # type: ignore[attr-defined]
    assert liveness(app) == (200, "recovering")
    app.in_recovery = False  # type: ignore[attr-defined]
    assert liveness(app) == (200, "running")
    app.crashed = True
    assert liveness(app) == (503, "crashed")
    app.crashed, app.should_stop = False, True
    assert liveness(app) == (503, "stopping")
