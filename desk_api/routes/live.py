"""`GET /desk/api/events`: the desk's live events as Server-Sent Events, from this process's hub (desk_api/live.py).

The session cookie authenticates it (EventSource cannot send headers). `Last-Event-ID` (the header EventSource sends
when it reconnects, or `?last_event_id=` for a page that opens a new EventSource) resumes after that event: the
missed events the principal may see are replayed from the store first. A refused stream (too many per user or per
address) is one `event: limit` with the message in Spanish, and the page stops reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from core.errors import InvalidInput
from desk import Desk
from desk.events import EventView, parse_id
from desk.models import Principal
from desk_api.auth import client_of, require
from desk_api.deps import services_of
from desk_api.live import LiveResponse, TooManyStreams, hub_for, refused

router = APIRouter(include_in_schema=False)

READY_WAIT_S = 2.0


async def view_of(desk: Desk, who: Principal) -> EventView:
    """What this principal may see: supervisors (and admins) everything; an agent their queues and their own."""
    if who.has("supervisor"):
        return EventView(everything=True, principal=who.id)
    agent = await desk.agents.find(who.agent_id) if who.agent_id else None
    queues = frozenset(desk.assign.queues_for(agent)) if agent is not None else frozenset()
    return EventView(everything=False, principal=who.id, agent=who.agent_id, queues=queues)


@router.get("/desk/api/events")
async def events(
    request: Request, who: Principal = Depends(require("agent_n1", "agent_n2", "supervisor"))
) -> Response:
    """Desk events as SSE: `id` is the stream id, `data` the event JSON. Heartbeat comments keep proxies open."""
    rt = services_of(request)
    raw = (request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "").strip()
    if raw and parse_id(raw) is None:
        raise InvalidInput("Last-Event-ID is not an event id", {"last_event_id": raw[:64], "expected": "<ms>-<seq>"})
    view = await view_of(rt.desk, who)
    hub = hub_for(request.app.state, rt)
    hub.ensure_started()
    if not raw:  # a new stream starts at the reader's position: wait for it on a just-started node
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.ready.wait(), READY_WAIT_S)
    try:
        sub = hub.open(view, who.id, client_of(request))
    except TooManyStreams as exc:
        return Response(refused(exc), media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Atiende-Stream-Limit": exc.scope})
    return LiveResponse(hub, sub, raw or None)
