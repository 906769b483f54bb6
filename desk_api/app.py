"""The FastAPI application: thin HTTP resources over the services the composition root passes in."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from core import __version__
from core.errors import AtiendeError
from core.store import REDIS_ERRORS, PoolExhausted
from desk_api import live, metrics
from desk_api.auth import authorize
from desk_api.context import Services
from desk_api.deps import services_of

log = logging.getLogger(__name__)

# Each module exposes `router` (an APIRouter). A package adds its module here.
ROUTE_MODULES = [
    "desk_api.routes.health",
    "desk_api.routes.desk",  # first: the hottest routes (ticket creation, status lookup) match without trying others
    "desk_api.routes.calendar",
    "desk_api.routes.calendar_import",
    "desk_api.routes.oidc",
    "desk_api.routes.routing",
    "desk_api.routes.supervision",  # before ivr: /api/v1/calls/live is not a call id
    "desk_api.routes.ivr",
    "desk_api.routes.learning",
    "desk_api.routes.voicemail",
    "desk_api.routes.channels",
    "desk_api.routes.softphone",
    "desk_api.routes.wallboard",
    "desk_api.routes.operations",
    "desk_api.routes.live",
    "desk_api.routes.pages",
]


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": ".".join(str(x) for x in e.get("loc", ())), "reason": e.get("msg", "")} for e in exc.errors()]


class _CountRequests:
    """Requests by route and status for /metrics. Plain ASGI: BaseHTTPMiddleware's per-request task
    and body streaming cost about a third of a simple request's CPU (measured in bench/bench_desk.py)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def _send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            metrics.HTTP_REQUESTS.labels(getattr(route, "path", "unmatched"), str(status["code"])).inc()


# Paths served to staff only, by prefix: the roles allowed (admin always passes). The desk's own routes declare
# their roles themselves; these cover the other areas' admin and back-office resources in one place.
GUARDED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/api/v1/admin/", ("admin",)),
    ("/api/v1/simulate", ("supervisor",)),
    ("/api/v1/editor/", ("supervisor",)),  # the admin page's editors: supervisors try changes and propose drafts
    ("/api/v1/calls", ("supervisor", "agent_n1", "agent_n2")),
    ("/api/v1/callbacks", ("supervisor", "agent_n1", "agent_n2")),
    ("/api/v1/voicemails/", ("supervisor", "agent_n1", "agent_n2")),
)


# Served to anyone unless `desk.staff_only` says otherwise (then any staff credential): path -> that setting.
STAFF_ONLY = {"/metrics": "metrics", "/docs": "docs", "/docs/oauth2-redirect": "docs", "/redoc": "docs",
              "/openapi.json": "docs"}
STAFF = ("agent_n1", "agent_n2", "supervisor")


class _DurableWrites:
    """With `redis.min_replicas_ack` > 0, a write request (POST/PUT/PATCH/DELETE) is acknowledged only once that many
    replicas hold it (`Store.durable`: WAIT), so a primary failover cannot lose what the API said it stored. The
    response's start is held until then; when the replicas do not confirm in time the client gets 503 instead and
    retries (the writes are idempotent or deduplicated). Plain ASGI and a no-op at 0, the single-node default."""

    WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in self.WRITES or self.services.store.min_replicas_ack <= 0:
            await self.app(scope, receive, send)
            return
        store = self.services.store
        try:
            # Before the app writes: the WAIT must run on the primary that took those writes (Store.durable).
            since = await store.primary()
        except REDIS_ERRORS:
            since = ""  # unknown: a 2xx cannot be confirmed, the store answers the app itself meanwhile
        state: dict[str, Any] = {"start": None, "failed": False}

        async def _send(message: Any) -> None:
            if state["failed"]:
                return  # the client got a 503 instead; the rest of the original response is dropped
            if message["type"] == "http.response.start" and message["status"] < 300:
                state["start"] = message  # not yet: first make what this request wrote durable
                return
            if state["start"] is not None and message["type"] == "http.response.body":
                start, state["start"] = state["start"], None
                try:
                    await store.durable(since)
                except REDIS_ERRORS as exc:
                    log.warning("write not confirmed by the replicas: %s", exc)
                    state["failed"] = True
                    body = {"error_id": "store-not-durable", "message": "the store could not confirm the write, retry",
                            "details": {}}
                    await JSONResponse(body, status_code=503, headers={"Retry-After": "1"})(scope, receive, send)
                    return
                await send(start)
            await send(message)

        await self.app(scope, receive, _send)


class _Guard:
    """Checks GUARDED prefixes before routing. Plain ASGI, so the other routes pay one prefix test, not a
    dependency resolution per request. The principal is left in `request.state.principal`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.prefixes = tuple(p for p, _ in GUARDED)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in STAFF_ONLY:
            request = Request(scope, receive)
            if getattr(services_of(request).settings.desk.staff_only, STAFF_ONLY[scope["path"]]):
                try:
                    await authorize(request, STAFF)
                except AtiendeError as exc:
                    await JSONResponse(exc.to_dict(), status_code=exc.status_code)(scope, receive, send)
                    return
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            request = Request(scope, receive)
            try:
                await self._check(request)
            except AtiendeError as exc:
                await JSONResponse(exc.to_dict(), status_code=exc.status_code)(scope, receive, send)
                return
            except REDIS_ERRORS:
                body = {"error_id": "store-unavailable", "message": "the store is not reachable, try again", "details": {}}
                await JSONResponse(body, status_code=503, headers={"Retry-After": "1"})(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _check(request: Request) -> None:
        await authorize(request, next(r for p, r in GUARDED if request.url.path.startswith(p)))


_frozen = False


def freeze_startup_objects() -> None:
    """Move everything alive at start-up (modules, configuration, models, routes: ~140,000 objects) out of the
    garbage collector's reach, once per process. Without it every full collection walks them all: measured
    stalls of up to 100 ms of a worker's event loop under load, which was the desk's p99 (bench/bench_desk.py)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    freeze_startup_objects()
    hub = live.hub_for(app.state, app.state.services)  # one live-event reader per worker process
    await hub.start()
    try:
        yield
    finally:
        await hub.stop()


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        title="Atiende",
        version=__version__,
        description="Contact center API: calendar, routing, tickets, calls, callbacks.",
        # Metrics are Prometheus (/metrics). FastAPI's native OpenTelemetry, on by default in recent versions, looks
        # up the global providers on every request (3 % of a status lookup's CPU) although none is configured.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.services = services
    metrics.track_pool(services.store.pool_stats)

    @app.exception_handler(AtiendeError)
    async def _domain_error(request: Request, exc: AtiendeError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = {"error_id": "invalid-input", "message": "the request is not valid", "details": _validation_details(exc)}
        return JSONResponse(body, status_code=422)

    for exc_type in REDIS_ERRORS:

        @app.exception_handler(exc_type)
        async def _store_down(request: Request, exc: Exception) -> JSONResponse:
            if isinstance(exc, PoolExhausted):  # overload, not an outage: counted, not logged per request
                metrics.REDIS_POOL_EXHAUSTED.inc()
                body = {"error_id": "store-busy", "message": "el servicio está saturado, inténtelo de nuevo en unos "
                        "segundos", "details": {}}
                return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
            log.warning("store unavailable: %s", exc)
            body = {"error_id": "store-unavailable", "message": "the store is not reachable, try again", "details": {}}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    app.add_middleware(_Guard)
    app.add_middleware(_DurableWrites, services=services)
    app.add_middleware(_CountRequests)

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> PlainTextResponse:
        body, content_type = metrics.render()
        return PlainTextResponse(body, media_type=content_type)

    for name in ROUTE_MODULES:
        app.include_router(importlib.import_module(name).router)
    # No app.dependency_overrides here: with any override FastAPI rebuilds each dependency's signature on every
    # request (measured: a fifth of a ticket creation's CPU). The admin routes take the principal from
    # request.state themselves (desk_api.auth.actor_of).
    return app
