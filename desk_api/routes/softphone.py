"""The desk's softphone: short-lived SIP credentials derived from the agent's desk session, and presence that
follows the page (closing the tab makes the agent unavailable for calls).

Kamailio checks the credentials with auth_ephemeral (deploy/kamailio/softphone.cfg): the username is
"<expiry>:<agent id>", the password base64(HMAC-SHA256(secret, username)). Nothing to store, nothing a
stolen page can use for long, and no second password for agents to remember.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from desk.models import Principal
from desk_api.auth import desk_of, require
from desk_api.deps import services_of

router = APIRouter(tags=["softphone"])
TRANSFER_TTL_S = 30
AGENTS = ("agent_n1", "agent_n2", "supervisor")


class Credentials(BaseModel):
    ws_url: str
    uri: str
    username: str
    password: str
    realm: str
    expires_at: int
    ice_servers: list[str]


def ephemeral_password(secret: str, username: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha256).digest()).decode()


@router.get("/api/v1/softphone/credentials", response_model=Credentials)
async def credentials(request: Request, who: Principal = Depends(require(*AGENTS))) -> Credentials:
    """SIP credentials for this agent's page, valid `agents.softphone.ttl_s` seconds (the page renews them)."""
    cfg = services_of(request).settings.agents.softphone
    if not cfg.enabled:
        raise Unavailable("the softphone is not enabled on this service (agents.softphone)", error_id="softphone-off")
    if not cfg.secret:
        raise Unavailable("the softphone has no secret shared with Kamailio (agents.softphone.secret)",
                          error_id="softphone-off")
    agent_id = who.agent_id
    if agent_id is None:
        raise Conflict("only agents have a softphone", error_id="not-an-agent")
    agent = await desk_of(request).agents.get(agent_id)
    if agent.phone != "browser":
        raise Conflict("this agent answers on a SIP phone, not in the browser", error_id="not-a-browser-agent")
    expires = int(time.time()) + cfg.ttl_s
    username = f"{expires}:{agent.id}"
    host = cfg.domain.rsplit(":", 1)[0] if cfg.domain.count(":") == 1 else cfg.domain
    return Credentials(ws_url=cfg.ws_url, uri=f"sip:{agent.id}@{host}", username=username,
                       password=ephemeral_password(cfg.secret, username), realm=host, expires_at=expires,
                       ice_servers=cfg.ice_servers)


@router.post("/api/v1/softphone/offline", status_code=204)
async def offline(request: Request, who: Principal = Depends(require(*AGENTS))) -> Response:
    """The page is closing (a beacon) or its registration ended: no more calls ring there."""
    if who.agent_id is not None:
        desk = desk_of(request)
        agent = await desk.agents.get(who.agent_id)
        if agent.phone == "browser" and agent.presence == "available":
            await desk.agents.set_presence(agent.id, "away", actor=who.id)
    return Response(status_code=204)


class TransferIn(BaseModel):
    # A queue only: the node bridging the call reads the request as a queue to put the caller in (at its head,
    # ivr/distribution.py); it has no way to ring an agent or a number directly.
    queue: str = Field(..., min_length=1, max_length=64, description="the queue the caller goes to (at its head)")


# Call ids are the SIP Call-ID of the caller's INVITE (chosen by the caller's side) or an IVR id (16 hex digits):
# the characters of both, as desk_api/routes/supervision.py accepts them; anything else names no call and must not
# reach a store key.
_CALL_ID = re.compile(r"^[A-Za-z0-9._@:+-]{1,200}$")


@router.post("/api/v1/calls/{call_id}/transfer", status_code=202)
async def transfer(call_id: str, body: TransferIn, request: Request,
                   who: Principal = Depends(require(*AGENTS))) -> dict[str, str]:
    """The agent on this call hands the caller to another queue; the node serving the call acts within a second.
    Works the same whether the agent answered in the desk or on a SIP phone. Supervisors may transfer any call
    an agent is on now. Audited."""
    if not _CALL_ID.match(call_id):
        raise InvalidInput("not a call id", {"call_id": call_id[:80]})
    services = services_of(request)
    if services.settings.desk.queue(body.queue) is None:
        raise InvalidInput(f"no queue {body.queue!r}", {"queue": body.queue})
    desk = desk_of(request)
    store = services.store
    if who.has("supervisor"):
        # Not their call: it must be one an agent is on now (its node publishes it while bridged), so a request
        # for a made-up or finished call is refused rather than left in the store.
        raw = await store.redis.get(store.keys.call_live(call_id))
        if raw is None:
            raise NotFound("no agent is on this call now", {"call_id": call_id}, error_id="call-not-live")
        live = json.loads(raw)
        on_call = str(live.get("agent") or "") if isinstance(live, dict) else ""
    else:
        agent = await desk.agents.find(who.agent_id) if who.agent_id else None
        if agent is None or agent.current != f"call:{call_id}":
            raise Forbidden("you are not on this call", {"call_id": call_id})
        on_call = agent.id
    await store.redis.set(store.keys.call_transfer(call_id), body.queue, ex=TRANSFER_TTL_S)
    await desk.audit.record(who.id, "call.transfer", call_id, {"queue": body.queue, "agent": on_call})
    return {"call_id": call_id, "queue": body.queue, "status": "requested"}
