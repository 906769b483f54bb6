"""Live agent calls for supervisors: listen, whisper or barge on their own phone; the recording of agent calls,
paused and resumed by the agent, listened to by supervisors with every listen audited.

The node that bridges a call publishes it in the store (`Keys.call_live`, refreshed while it lasts) and polls
what these routes ask (`Keys.call_supervise`, `Keys.call_recording_state`) about twice a second, so any node
serves these requests (ivr/distribution.py, ivr/conference.py). The supervisor's phone is the one on their own
agent record (their SIP URI, or the desk's softphone): a request never names where to ring.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.store import Store
from desk.models import Principal
from desk_api.auth import desk_of, require
from desk_api.deps import services_of
from ivr.conference import RECORDING_PREFIX

router = APIRouter(prefix="/api/v1", tags=["supervision"])

SUPERVISE_TTL_S = 4 * 3600  # a request outlives no call: the bridging node deletes it when the call ends
RECORDING_STATE_TTL_S = 4 * 3600
_CALL_ID = re.compile(r"^[A-Za-z0-9._@:+-]{1,200}$")
_RECORDING_ID = re.compile(r"^rec-[0-9a-f]{20}$")
STAFF = ("agent_n1", "agent_n2", "supervisor")
_CAS_ATTEMPTS = 5
# Compare-and-set (or delete, with no new value) of a supervision request: only when the key still holds what
# the caller read (nothing, as ''), so a read-check-write never overwrites or deletes a request written meanwhile.
_SWAP = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 1
"""


class SuperviseIn(BaseModel):
    mode: Literal["listen", "whisper", "barge", "off"] = Field(
        ..., description="listen: hear both, heard by nobody; whisper: heard by the agent only; barge: all three; "
                         "off: leave the call")


class RecordingIn(BaseModel):
    action: Literal["pause", "resume"]


def _check_call_id(call_id: str) -> None:
    if not _CALL_ID.match(call_id):
        raise InvalidInput("not a call id", {"call_id": call_id[:80]})


async def _live(request: Request, call_id: str) -> dict[str, Any]:
    _check_call_id(call_id)
    store = services_of(request).store
    raw = await store.redis.get(store.keys.call_live(call_id))
    if not raw:
        raise NotFound("no agent is on this call now", {"call_id": call_id}, error_id="call-not-live")
    doc = json.loads(raw)
    return doc if isinstance(doc, dict) else {}


@router.get("/calls/live")
async def live_calls(request: Request, who: Principal = Depends(require("supervisor"))) -> dict[str, Any]:
    """The agent calls being bridged now, on every node: agent, queue, since, supervisor and mode, recording."""
    store = services_of(request).store
    r, k = store.redis, store.keys
    ids = [str(i) for i in await r.zrange(k.calls_live, 0, 499)]
    docs = await r.mget([k.call_live(i) for i in ids]) if ids else []
    calls: list[dict[str, Any]] = []
    stale: list[str] = []
    for call_id, raw in zip(ids, docs, strict=True):
        if raw is None:
            stale.append(call_id)  # its node stopped refreshing it (ended, or the node died)
            continue
        doc = json.loads(raw)
        doc.pop("since_ts", None)
        calls.append(doc)
    if stale:
        await r.zrem(k.calls_live, *stale)
    return {"calls": calls}


def _phone_of(request: Request, agent: Any) -> str | None:
    softphone = services_of(request).settings.agents.softphone
    if agent.phone == "browser":
        return f"sip:{agent.id}@{softphone.domain}" if softphone.enabled else None
    return str(agent.sip_uri) if agent.sip_uri else None


@router.post("/calls/{call_id}/supervise", status_code=202)
async def supervise(call_id: str, body: SuperviseIn, request: Request,
                    who: Principal = Depends(require("supervisor"))) -> dict[str, Any]:
    """Join a live agent call on your own phone (listen, whisper, barge), change the mode, or leave it (off).
    The node serving the call rings your phone within a second; a change of mode takes effect as quickly."""
    live = await _live(request, call_id)
    services = services_of(request)
    store, desk = services.store, desk_of(request)
    key = store.keys.call_supervise(call_id)
    for _ in range(_CAS_ATTEMPTS):
        current_raw = await store.redis.get(key)
        current = json.loads(current_raw) if current_raw else None
        is_admin = "admin" in who.roles
        if current and current.get("supervisor") != who.id and not is_admin:
            raise Conflict("another supervisor is on this call", {"supervisor": current.get("supervisor")},
                           error_id="already-supervised")
        if body.mode == "off":
            # Only the request just read (the caller's own, or any for an admin) goes: one written meanwhile by
            # someone else stays, and the next round refuses this `off` as above.
            if current_raw is not None and not await _swap(store, key, current_raw, None):
                continue
            await desk.audit.record(who.id, "call.supervise", call_id, {"mode": "off", "agent": live.get("agent")})
            return {"call_id": call_id, "mode": "off", "status": "requested"}
        if who.agent_id is None:
            raise Conflict("only a supervisor with an agent record (and a phone) can join a call", error_id="no-phone")
        if who.agent_id == live.get("agent"):
            raise Forbidden("you are the agent on this call", {"call_id": call_id}, error_id="own-call")
        agent = await desk.agents.get(who.agent_id)
        uri = _phone_of(request, agent)
        if not uri:
            raise Conflict("your agent record has no phone to ring (a SIP URI, or the softphone)", error_id="no-phone")
        same = bool(current and current.get("supervisor") == who.id)
        doc = {"id": uuid.uuid4().hex, "mode": body.mode, "supervisor": who.id, "agent_id": who.agent_id,
               "uri": (current or {}).get("uri") if same else uri,
               "at": services.clock.now().isoformat()}
        # Written only over the request just read (or none): of two supervisors joining at once, one wins and
        # the other reads the winner's request on the next round (409).
        if not await _swap(store, key, current_raw, json.dumps(doc)):
            continue
        await desk.audit.record(who.id, "call.supervise", call_id, {"mode": body.mode, "agent": live.get("agent"),
                                                                     "queue": live.get("queue")})
        return {"call_id": call_id, "mode": body.mode, "status": "requested"}
    raise Conflict("La supervisión de esta llamada cambió mientras se pedía; vuelva a intentarlo.", {"call_id": call_id},
                   error_id="supervision-busy")


async def _swap(store: Store, key: str, expected: str | bytes | None, new: str | None) -> bool:
    return bool(await store.redis.eval(_SWAP, 1, key, expected or "", new or "", SUPERVISE_TTL_S))


@router.post("/calls/{call_id}/recording", status_code=202)
async def recording(call_id: str, body: RecordingIn, request: Request,
                    who: Principal = Depends(require(*STAFF))) -> dict[str, Any]:
    """Pause the recording while the caller gives sensitive data, and resume it: the agent on the call (or a
    supervisor). Nothing is recorded while paused; the pause is noted in the recording's record."""
    live = await _live(request, call_id)
    if not who.has("supervisor") and (who.agent_id is None or who.agent_id != live.get("agent")):
        raise Forbidden("you are not on this call", {"call_id": call_id})
    if not live.get("recording"):
        raise Conflict("this call is not being recorded", {"call_id": call_id}, error_id="not-recorded")
    store = services_of(request).store
    state = "paused" if body.action == "pause" else "recording"
    await store.redis.set(store.keys.call_recording_state(call_id), state, ex=RECORDING_STATE_TTL_S)
    await desk_of(request).audit.record(who.id, f"call.recording.{body.action}", call_id,
                                        {"recording": live.get("recording_id")})
    return {"call_id": call_id, "recording": state, "status": "requested"}


async def _recording_meta(request: Request, recording_id: str) -> dict[str, Any]:
    if not _RECORDING_ID.match(recording_id):
        raise InvalidInput("not a recording id", {"recording_id": recording_id[:80]})
    store = services_of(request).store
    raw = await store.redis.get(store.keys.call_recording(recording_id))
    if not raw:
        raise NotFound(f"no recording {recording_id}", {"recording_id": recording_id})
    doc = json.loads(raw)
    return doc if isinstance(doc, dict) else {}


@router.get("/calls/{call_id}/recordings")
async def call_recordings(call_id: str, request: Request,
                          who: Principal = Depends(require("supervisor"))) -> dict[str, Any]:
    """The recordings of one call (one per agent who took it), each with its pauses and where to listen."""
    _check_call_id(call_id)
    store = services_of(request).store
    ids = [str(i) for i in await store.redis.lrange(store.keys.call_recordings_of(call_id), 0, 49)]
    raws = await store.redis.mget([store.keys.call_recording(i) for i in ids]) if ids else []
    out = []
    for raw in raws:
        if raw:
            doc = json.loads(raw)
            if not doc.get("deleted"):
                doc["audio"] = f"/api/v1/recordings/{doc['id']}/audio"
            out.append(doc)
    return {"call_id": call_id, "recordings": out}


@router.get("/recordings/{recording_id}", response_model=None)
async def recording_meta(recording_id: str, request: Request,
                         who: Principal = Depends(require("supervisor"))) -> dict[str, Any]:
    return await _recording_meta(request, recording_id)


@router.get("/recordings/{recording_id}/audio", response_class=Response)
async def recording_audio(recording_id: str, request: Request,
                          who: Principal = Depends(require("supervisor"))) -> Response:
    """The recording as WAV (caller and agent mixed). Every listen is audited with who asked, before the audio
    leaves."""
    meta = await _recording_meta(request, recording_id)
    if meta.get("deleted"):
        raise NotFound("the recording was deleted (retention)", {"recording_id": recording_id},
                       error_id="recording-deleted")
    if not recording_id.startswith(RECORDING_PREFIX):  # pragma: no cover - the pattern above already says so
        raise InvalidInput("not a recording id", {"recording_id": recording_id})
    services = services_of(request)
    await desk_of(request).audit.record(who.id, "recording.listened", recording_id,
                                        {"call_id": meta.get("call_id"), "agent": meta.get("agent")})
    wav = await services.recordings.get(recording_id)
    if wav is None:
        raise NotFound(f"the audio of recording {recording_id} is not available", {"recording_id": recording_id})
    return Response(wav, media_type="audio/wav",
                    headers={"Content-Disposition": f'inline; filename="{recording_id}.wav"',
                             "Cache-Control": "private, no-store"})
