"""The API token check of the HTTP views, without a server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import SecretStr

from supplyflow.app.web import auth_problem, forward_headers, protected

TOKEN = SecretStr("0123456789abcdef-token")


@dataclass
class FakeRequest:
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeResponse:
    body: bytes
    status: int
    headers: dict[str, str]


class FakeWeb:
    def bytes(
        self, value: bytes, *, content_type: str, status: int = 200, headers: Any = None
    ) -> FakeResponse:
        assert content_type == "application/json"
        return FakeResponse(value, status, dict(headers or {}))


def test_no_token_configured_lets_everything_through() -> None:
    assert auth_problem(FakeRequest(), None) is None


def test_missing_wrong_and_right_tokens() -> None:
    assert "Authorization: Bearer" in str(auth_problem(FakeRequest(), TOKEN))
    assert auth_problem(FakeRequest({"Authorization": "Basic abc"}), TOKEN)
    wrong = auth_problem(FakeRequest({"Authorization": "Bearer 0123456789abcdef-tokeX"}), TOKEN)
    assert wrong is not None
    assert "SUPPLYFLOW_API_TOKEN" in wrong
    right = FakeRequest({"Authorization": "bearer  0123456789abcdef-token "})
    assert auth_problem(right, TOKEN) is None


async def test_protected_view_answers_401_json_without_running_the_view() -> None:
    ran: list[str] = []

    @protected(TOKEN)
    async def view(web: Any, request: Any, po_id: str) -> str:
        ran.append(po_id)
        return "ok"

    denied = await view(FakeWeb(), FakeRequest(), po_id="PO-1")
    assert isinstance(denied, FakeResponse)
    assert denied.status == 401
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in orjson.loads(denied.body)
    assert TOKEN.get_secret_value().encode() not in denied.body
    assert ran == []
    allowed = FakeRequest({"Authorization": f"Bearer {TOKEN.get_secret_value()}"})
    assert await view(FakeWeb(), allowed, po_id="PO-1") == "ok"
    assert ran == ["PO-1"]


def test_forwarded_requests_carry_the_token() -> None:
    assert forward_headers("http://a:1", None) == {"x-supplyflow-forwarded": "http://a:1"}
    headers = forward_headers("http://a:1", TOKEN)
    assert headers["Authorization"] == f"Bearer {TOKEN.get_secret_value()}"
