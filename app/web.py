"""HTTP views of a worker: health, metrics, its OpenAPI document, and queries for any key.

``/health`` answers 200 once the worker runs (503 while starting or recovering), with
``status`` ``degraded`` and the stalled partitions while any is (see ``app.health``);
``/health/live`` answers 200 while the process works, recovery included (a liveness
probe), ``/health/ready`` like ``/health`` (a readiness probe). Both also name the URL the
worker advertises to the others (``SUPPLYFLOW_ADVERTISED_URL``). ``/openapi.json`` is the
checked-in ``static/openapi.json``, which describes every route of :data:`ROUTES`.

``/positions/{sku}/{location}``, ``/pos/{po_id}`` and ``/orders/{order_id}`` read the
owning worker's table: the key's partition is computed as producers compute it (murmur2
of the UTF-8 key), and a worker that does not own it forwards the request to the one that
does (one hop; a forwarded request that misses answers 503 so clients retry). Only routes
registered here are served (see :mod:`supplyflow.agents.runtime.faust.web`).

With ``SUPPLYFLOW_API_TOKEN`` set, the data routes answer 401 unless the request carries
``Authorization: Bearer <token>``; ``/health``, ``/metrics`` (no entity ids, no
quantities) and the static status page stay open for probes and Prometheus. A worker
forwarding a request to another adds the token itself.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

import aiohttp
import orjson
from pydantic import SecretStr

from supplyflow.agents.exceptions_out import OpenExceptions, book_from_wire
from supplyflow.agents.metrics import Metrics
from supplyflow.agents.runtime.keys import partition_for
from supplyflow.agents.runtime.progress import is_marker
from supplyflow.agents.state import StateTables
from supplyflow.app.metrics import CONTENT_TYPE
from supplyflow.tables.order import OrderState, order_view
from supplyflow.tables.po import PoState, po_view
from supplyflow.tables.position import PositionState, position_record

__all__ = [
    "ROUTES",
    "auth_problem",
    "forward_headers",
    "health_state",
    "liveness",
    "protected",
    "register_views",
]

log = logging.getLogger(__name__)

_UNAVAILABLE: Final = 503
_NOT_FOUND: Final = 404
_UNAUTHORIZED: Final = 401
_FORWARDED: Final = "x-supplyflow-forwarded"
#: How long a worker waits for the owner of a key when it forwards a query.
_FORWARD_TIMEOUT: Final = aiohttp.ClientTimeout(total=10.0)  # type: ignore[call-arg]


def health_state(app: Any) -> str:
    """``starting``, ``recovering`` or ``running``, from the Faust app's flags."""
    if getattr(app, "in_recovery", False) or getattr(app, "rebalancing", False):
        return "recovering"
    recovery = app.tables.recovery
    if not recovery.completed.is_set():
        return "starting"
    return "running"


def _json(web: Any, body: Any, status: int = 200) -> Any:
    return web.bytes(orjson.dumps(body), content_type="application/json", status=status)


def auth_problem(request: Any, token: SecretStr | None) -> str | None:
    """Why ``request`` may not use a protected route, or None when it may."""
    if token is None:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return "this API needs a token: send the header 'Authorization: Bearer <token>'"
    if not hmac.compare_digest(value.strip().encode(), token.get_secret_value().encode()):
        return "the bearer token is not this deployment's SUPPLYFLOW_API_TOKEN"
    return None


View = Callable[..., Awaitable[Any]]


def protected(token: SecretStr | None) -> Callable[[View], View]:
    """Wrap a view so that it answers 401 (JSON) without the right bearer token."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        async def guarded(web: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            problem = auth_problem(request, token)
            if problem is not None:
                return web.bytes(
                    orjson.dumps({"error": problem}),
                    content_type="application/json",
                    status=_UNAUTHORIZED,
                    headers={"WWW-Authenticate": 'Bearer realm="supplyflow"'},
                )
            return await view(web, request, *args, **kwargs)

        return guarded

    return wrap


def forward_headers(me: str, token: SecretStr | None) -> dict[str, str]:
    """Headers of a request one worker forwards to another."""
    headers = {_FORWARDED: me}
    if token is not None:
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    return headers


class KeyRouter:
    """Finds the worker owning a table key and reads or forwards."""

    def __init__(self, app: Any, token: SecretStr | None = None) -> None:
        self.app = app
        self.token = token

    def owner_url(self, table: Any, key: str) -> str | None:
        topic = table.changelog_topic.get_topic_name()
        partition = partition_for(key, table.partitions or self.app.conf.topic_partitions)
        for url, assignment in self.app.assignor.table_metadata(topic).items():
            if partition in assignment.get(topic, ()):
                return str(url)
        return None

    async def answer(
        self,
        web: Any,
        request: Any,
        *,
        table: Any,
        key: str,
        render: Callable[[list[Any]], dict[str, Any]],
        what: str,
    ) -> Any:
        if health_state(self.app) != "running":
            return _json(web, {"error": "worker is not ready; retry shortly"}, _UNAVAILABLE)
        owner = self.owner_url(table, key)
        me = str(self.app.conf.canonical_url)
        if owner is None or owner.rstrip("/") == me.rstrip("/"):
            wire = table.get(key)
            if wire is None:
                return _json(web, {"error": f"{what} {key!r} is not known"}, _NOT_FOUND)
            return _json(web, render(wire))
        if request.headers.get(_FORWARDED):
            return _json(web, {"error": "ownership is moving; retry shortly"}, _UNAVAILABLE)
        url = owner.rstrip("/") + request.path_qs
        try:
            async with (
                aiohttp.ClientSession(timeout=_FORWARD_TIMEOUT) as session,
                session.get(url, headers=forward_headers(me, self.token)) as response,
            ):
                body = await response.read()
                return web.bytes(body, content_type="application/json", status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("forwarding %s to %s failed: %s", request.path, owner, exc)
            return _json(web, {"error": f"owner {owner} did not answer; retry"}, _UNAVAILABLE)


_EXCEPTION_FILTERS: Final = ("rule", "entity_type", "entity_id")


def local_exceptions(
    tables: StateTables, query: dict[str, str], open_index: OpenExceptions
) -> list[dict[str, Any]]:
    """Exceptions in this worker's state matching ``query`` (status, rule, entity...).

    Open ones come from the in-memory index; resolved ones need a pass over the tables.
    """
    status = query.get("status", "open")
    wanted = {k: query[k] for k in _EXCEPTION_FILTERS if query.get(k)}
    if status == "open":
        return [r for r in open_index.records() if all(r[k] == v for k, v in wanted.items())]
    found: list[dict[str, Any]] = []
    for entity_type, table in (
        ("po", tables.po),
        ("order", tables.order),
        ("position", tables.position),
    ):
        if wanted.get("entity_type", entity_type) != entity_type:
            continue
        if "entity_id" in wanted:
            wire = table.get(wanted["entity_id"])
            wires = [] if wire is None else [wire]
        else:
            wires = [w for k, w in table.items() if not is_marker(k)]
        for wire in wires:
            book = book_from_wire(entity_type, wire)
            for record in book.latest(open_only=status == "open"):
                if status == "resolved" and record["status"] != "resolved":
                    continue
                if all(record[k] == v for k, v in wanted.items()):
                    found.append(record)
    return found


async def _gather_exceptions(
    app: Any, request: Any, local: list[dict[str, Any]], token: SecretStr | None
) -> Any:
    """Ask every other worker for its part (one hop) and merge, newest first."""
    me = str(app.conf.canonical_url).rstrip("/")
    peers = {str(url).rstrip("/") for url in app.assignor.tables_metadata()} - {me}
    merged = list(local)
    missing = []
    async with aiohttp.ClientSession(timeout=_FORWARD_TIMEOUT) as session:
        for peer in sorted(peers):
            try:
                async with session.get(
                    peer + request.path_qs, headers=forward_headers(me, token)
                ) as response:
                    body = orjson.loads(await response.read())
                    merged.extend(body["exceptions"])
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, KeyError):
                missing.append(peer)
    merged.sort(key=lambda r: (r["raised_at"], r["exception_id"]), reverse=True)
    return merged, missing


#: Every route a worker serves; ``app/static/openapi.json`` describes each of them.
ROUTES: Final = (
    "/",
    "/health",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/positions/{sku}/{location}",
    "/pos/{po_id}",
    "/orders/{order_id}",
    "/exceptions",
)


def liveness(app: Any) -> tuple[int, str]:
    """``/health/live``: 200 while the process works (recovering included), else 503.

    A worker rebuilding its state from the changelogs is alive: a liveness probe must not
    restart it (a rebuild at a million positions takes about 40 s). Only a crashed or
    stopping app is not.
    """
    if getattr(app, "crashed", False):
        return _UNAVAILABLE, "crashed"
    if getattr(app, "should_stop", False):
        return _UNAVAILABLE, "stopping"
    return 200, health_state(app)


def register_views(
    app: Any,
    metrics: Metrics,
    tables: StateTables,
    open_index: OpenExceptions,
    ensure_index: Callable[[], None],
    *,
    api_token: SecretStr | None = None,
    degraded: Callable[[], list[dict[str, Any]]] = list,
) -> None:
    """Register the worker's HTTP routes (:data:`ROUTES`) on ``app``'s web server."""
    router = KeyRouter(app, api_token)
    guard = protected(api_token)

    static = resources.files("supplyflow.app").joinpath("static")
    page = static.joinpath("status.html").read_bytes()
    openapi = static.joinpath("openapi.json").read_bytes()

    def _health(web: Any, status: int, state: str) -> Any:
        url = str(app.conf.canonical_url)
        return _json(web, {"status": state, "app_id": app.conf.id, "url": url}, status)

    async def status_page(web: Any, request: Any) -> Any:
        return web.bytes(page, content_type="text/html")

    async def health(web: Any, request: Any) -> Any:
        state = health_state(app)
        status = 200 if state == "running" else _UNAVAILABLE
        stalled = degraded() if state == "running" else []
        if stalled:
            # Still 200: a probe on /health must not restart a worker retrying a broker
            # outage, nor take it out of service (docs/guarantees.md, "degraded").
            state = "degraded"
        body = {"status": state, "app_id": app.conf.id, "degraded": stalled}
        return _json(web, body, status)

    async def health_live(web: Any, request: Any) -> Any:
        return _health(web, *liveness(app))

    async def health_ready(web: Any, request: Any) -> Any:
        state = health_state(app)
        return _health(web, 200 if state == "running" else _UNAVAILABLE, state)

    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE.split(";")[0])

    async def openapi_document(web: Any, request: Any) -> Any:
        return web.bytes(openapi, content_type="application/json")

    @guard
    async def position(web: Any, request: Any, sku: str, location: str) -> Any:
        def render(wire: list[Any]) -> dict[str, Any]:
            state = PositionState.from_wire(wire)
            return position_record(state, state.updated_at)

        key = f"{sku}@{location}"
        return await router.answer(
            web, request, table=tables.position, key=key, render=render, what="position"
        )

    @guard
    async def exceptions(web: Any, request: Any) -> Any:
        query = dict(request.query)
        if query.get("status", "open") not in ("open", "resolved", "all"):
            return _json(web, {"error": "status must be open, resolved or all"}, 400)
        if health_state(app) != "running":
            return _json(web, {"error": "worker is not ready; retry shortly"}, _UNAVAILABLE)
        ensure_index()
        local = local_exceptions(tables, query, open_index)
        if request.headers.get(_FORWARDED):
            return _json(web, {"exceptions": local})
        merged, missing = await _gather_exceptions(app, request, local, api_token)
        body: dict[str, Any] = {"count": len(merged), "exceptions": merged}
        if missing:
            body["incomplete"] = missing
        return _json(web, body)

    @guard
    async def purchase_order(web: Any, request: Any, po_id: str) -> Any:
        def render(wire: list[Any]) -> dict[str, Any]:
            return po_view(PoState.from_wire(wire))

        return await router.answer(
            web, request, table=tables.po, key=po_id, render=render, what="PO"
        )

    @guard
    async def sales_order(web: Any, request: Any, order_id: str) -> Any:
        def render(wire: list[Any]) -> dict[str, Any]:
            return order_view(OrderState.from_wire(wire))

        return await router.answer(
            web, request, table=tables.order, key=order_id, render=render, what="order"
        )

    views: dict[str, View] = {
        "/": status_page,
        "/health": health,
        "/health/live": health_live,
        "/health/ready": health_ready,
        "/metrics": prometheus,
        "/openapi.json": openapi_document,
        "/positions/{sku}/{location}": position,
        "/pos/{po_id}": purchase_order,
        "/orders/{order_id}": sales_order,
        "/exceptions": exceptions,
    }
    for path in ROUTES:
        app.page(path)(views[path])
