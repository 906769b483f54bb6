"""Liveness and readiness: is the store reachable, which config is served."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from core import __version__
from desk_api import metrics
from desk_api.deps import services_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    rt = services_of(request)
    redis_ok = await rt.store.ping()
    metrics.REDIS_UP.set(1 if redis_ok else 0)
    body = {
        "status": "ok" if redis_ok else "degraded",
        "version": __version__,
        "config_version": rt.config_version,
        "redis": "ok" if redis_ok else "unreachable",
        "config_reload_error": rt.last_reload_error,
        "node": rt.settings.service.node_id,
        "time": rt.clock.now().isoformat(),
    }
    return JSONResponse(body, status_code=200 if redis_ok else 503)
