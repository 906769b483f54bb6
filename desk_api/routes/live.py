"""`GET /desk/api/events`: the desk's live events as Server-Sent Events, from this process's hub (desk_api/live.py).

The session cookie authenticates it (EventSource cannot send headers). `Last-Event-ID` (the header EventSource sends
when it reconnects, or `?last_event_id=` for a page that opens a new EventSource) resumes after that event: the
missed events the principal may see are replayed from the store first. A refused stream (too many per user or per
address) is one `event: limit` with the message in Spanish, and the page stops reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import Response

from core.errors import InvalidInput, Unavailable
from desk import Desk
from desk.events import EventView, parse_id
from desk.models import Principal
from desk_api.auth import authorize, client_of
from desk_api.deps import services_of
from desk_api.live import LiveResponse, TooManyStreams, hub_for, refused

router = APIRouter(include_in_schema=False)

READY_WAIT_S = 2.0


async def view_of(desk: Desk, who: Principal) -> EventView:
    """What this principal may see (`Desk.queues_visible_to`, as the desk's lists): supervisors (and admins)
    everything; an agent their queues and their own."""
    queues = await desk.queues_visible_to(who)
    if queues is None:
        return EventView(everything=True, principal=who.id)
    return EventView(everything=False, principal=who.id, agent=who.agent_id, queues=queues)


# Streams being opened at once (authentication, the principal's view). A thousand desks reconnect together after a
# restart; unbounded, their store lookups queue for the pool's connections and ordinary requests wait behind them
# past the pool timeout (measured: 754 of 1,000 simultaneous opens answered 503). Queued here they hold nothing.
OPENING = 8
OPEN_WAIT_S = 20.0
ROLES = ("agent_n1", "agent_n2", "supervisor")
_opening: dict[int, asyncio.Semaphore] = {}


def _gate() -> asyncio.Semaphore:
    loop_id = id(asyncio.get_running_loop())
    gate = _opening.get(loop_id)
    if gate is None:
        _opening.clear()  # one event loop per process in service; a test's new loop starts a new gate
        gate = _opening[loop_id] = asyncio.Semaphore(OPENING)
    return gate


@router.get("/desk/api/events")
async def events(request: Request) -> Response:
    """Desk events as SSE: `id` is the stream id, `data` the event JSON. Heartbeat comments keep proxies open.
    Agents, supervisors and admins (`authorize`, called here, inside the opening gate)."""
    rt = services_of(request)
    gate = _gate()
    try:
        await asyncio.wait_for(gate.acquire(), OPEN_WAIT_S)
    except TimeoutError:
        raise Unavailable("too many desks are connecting at once, try again", {"retry_after_s": 2}) from None
    try:
        who = await authorize(request, ROLES)
        view = await view_of(rt.desk, who)
    finally:
        gate.release()
    raw = (request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "").strip()
    if raw and parse_id(raw) is None:
        raise InvalidInput("Last-Event-ID is not an event id", {"last_event_id": raw[:64], "expected": "<ms>-<seq>"})
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
