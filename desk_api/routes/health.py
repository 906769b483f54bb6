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
    """Readiness: 200 while the node takes new work, 503 (with the reasons) while it drains or the store is
    away. Calls in progress go on either way."""
    rt = services_of(request)
    redis_ok = await rt.store.ping()
    metrics.REDIS_UP.set(1 if redis_ok else 0)
    node = rt.node
    ready = redis_ok and not node.draining
    reasons = [r for r in node.reasons() if r != "store unreachable"] + ([] if redis_ok else ["store unreachable"])
    body = {
        "status": "ok" if ready else ("draining" if node.draining else "degraded"),
        "ready": ready,
        "draining": node.draining,
        "reasons": reasons,
        "version": __version__,
        "config_version": rt.config_version,
        "redis": "ok" if redis_ok else "unreachable",
        "config_reload_error": rt.last_reload_error,
        "node": rt.settings.service.node_id,
        "time": rt.clock.now().isoformat(),
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/livez")
async def livez() -> JSONResponse:
    """Liveness: the process answers (a supervisor restarts it when this fails, not when the store is away)."""
    return JSONResponse({"status": "alive", "version": __version__})
