"""The wallboard: per queue, who waits and for how long, agents by state, service level, abandon rate, and the
callbacks due; for supervisors, refreshed live by the page (`/wallboard`, `?grande` for a wall screen)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from desk.models import Principal
from desk_api.auth import desk_of, require
from desk_api.deps import services_of
from desk_api.routes.pages import WEB
from ivr.queue_stats import queue_stats

router = APIRouter()
SUPERVISORS = ("supervisor",)


def _state(presence: str, current: str | None) -> str:
    if presence == "busy":
        # a supervisor listening to a call is on that call too
        return "on_call" if (current or "").startswith(("call:", "supervise:")) else "wrap_up"
    return presence  # available, away, offline


@router.get("/api/v1/wallboard", tags=["reports"], summary="Live figures per queue for the wallboard")
async def wallboard(request: Request, who: Principal = Depends(require(*SUPERVISORS))) -> dict[str, Any]:
    services = services_of(request)
    settings, desk = services.settings, desk_of(request)
    cfg = settings.agents
    agents = await desk.agents.all()
    queues = []
    for q in settings.desk.queues:
        stats = await queue_stats(services.store, services.clock, q.id, window_s=cfg.stats_window_s,
                                  target_s=cfg.service_level_s)
        skill = desk.assign.skill_of(q.id)
        states: dict[str, int] = {"available": 0, "on_call": 0, "wrap_up": 0, "away": 0, "offline": 0}
        for a in agents:
            if skill in a.skills and (a.level >= q.level):
                states[_state(a.presence, a.current)] = states.get(_state(a.presence, a.current), 0) + 1
        queues.append({"id": q.id, "name": q.name, **stats.model_dump(exclude={"queue"}), "agents": states})
    r, k = services.store.redis, services.store.keys
    due = int(await r.zcount(k.callbacks_due, "-inf", services.clock.now().timestamp()))
    return {"at": services.clock.now().isoformat(), "queues": queues, "callbacks_due": due,
            "service_level_s": cfg.service_level_s, "window_s": cfg.stats_window_s}


@router.get("/wallboard", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(WEB / "wallboard.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
