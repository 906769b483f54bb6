"""Callbacks and voicemail audio: the desk's view of what the voicemail package owns.

A callback about a ticket, and a voicemail's audio, are that ticket's data: an agent sees them only for tickets
they may see (desk_api/scope.py: their queues, their own), like the ticket itself; every voicemail listen is
audited. Callbacks without a ticket (made by hand) are the callback team's work list, open to every agent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.errors import Conflict, Forbidden, NotFound
from desk.models import Principal
from desk_api import idempotency
from desk_api.auth import actor_of, principal_of
from desk_api.deps import services_of
from desk_api.scope import may_see, visible
from voicemail.callback_calls import CallbackCallState
from voicemail.callbacks import Callback, CallbackService, Outcome, VoicemailInfo

router = APIRouter(prefix="/api/v1", tags=["callbacks"])

CLAIM_CANDIDATES = 50  # due callbacks looked at for an agent's next one (the ones of their queues)


def _service(request: Request) -> CallbackService:
    return services_of(request).callbacks


class VoicemailOut(VoicemailInfo):
    path: str = Field("", exclude=True)  # where a node keeps the file: not the API's business


class CallbackOut(Callback):
    voicemail: VoicemailOut | None = None  # the same, without the server's path


def _out(cb: Callback) -> CallbackOut:
    return CallbackOut.model_validate(cb.model_dump())


def _response(cb: Callback, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_out(cb).model_dump_json(), status_code=status_code, media_type="application/json",
                    headers=headers)


async def _visible(request: Request, who: Principal, callbacks: list[Callback]) -> list[Callback]:
    desk = services_of(request).desk
    scope = await desk.queues_visible_to(who)
    if scope is None:
        return callbacks
    refs = sorted({cb.ticket_ref for cb in callbacks if cb.ticket_ref})
    tickets = {t.ref: t for t in await desk.tickets.get_many(refs)}
    return [cb for cb in callbacks
            if not cb.ticket_ref or ((t := tickets.get(cb.ticket_ref)) is not None and visible(scope, who, t))]


async def _may_see(request: Request, who: Principal, cb: Callback) -> Callback:
    if cb.ticket_ref:
        desk = services_of(request).desk
        try:
            ticket = await desk.tickets.get(cb.ticket_ref)
        except NotFound:
            if await desk.queues_visible_to(who) is not None:
                raise Forbidden("this callback's ticket is gone", {"id": cb.id}, error_id="not-your-queue") from None
            return cb
        await may_see(desk, who, ticket)
    return cb


class AttemptIn(BaseModel):
    outcome: Outcome
    note: str = Field("", max_length=2000)


class CallbackIn(BaseModel):
    phone: str = Field(..., min_length=3, max_length=40)
    ticket_ref: str | None = Field(None, max_length=20)
    reason: Literal["manual"] = "manual"


@router.get("/callbacks")
async def list_callbacks(request: Request, status: Literal["pending", "in_progress", "done", "failed"] | None = None,
                         ) -> list[CallbackOut]:
    return [_out(cb) for cb in await _visible(request, principal_of(request),
                                              await _service(request).query(status=status))]


@router.post("/callbacks", status_code=201, responses={201: {"model": CallbackOut}})
async def create_callback(request: Request, body: CallbackIn) -> Response:
    held = await idempotency.claim(services_of(request).store, request, actor_of(request), "callback")
    service = _service(request)
    if held.prior is not None:
        return _response(await service.get(held.prior), 201, idempotency.REPLAYED_HEADER)
    try:
        cb = await service.create(phone=body.phone, ticket_ref=body.ticket_ref, reason=body.reason,
                                  callback_id=idempotency.derived_id(request, actor_of(request), "callback"))
    except BaseException:
        await held.failed()
        raise
    await held.done(cb.id)
    return _response(cb, 201)


@router.get("/callbacks/{callback_id}")
async def get_callback(request: Request, callback_id: str) -> CallbackOut:
    return _out(await _may_see(request, principal_of(request), await _service(request).get(callback_id)))


@router.post("/callbacks/next")
async def claim_next(request: Request, actor: str = Depends(actor_of)) -> CallbackOut | None:
    """The next due callback this principal may work: for agents, of their queues' tickets (or of none)."""
    who = principal_of(request)
    service = _service(request)
    if await services_of(request).desk.queues_visible_to(who) is None:
        cb = await service.claim_next(actor)
        return _out(cb) if cb is not None else None
    rt = services_of(request)
    now = rt.clock.now()
    await service.reclaim(now)
    ids = await rt.store.redis.zrangebyscore(rt.store.keys.callbacks_due, "-inf", now.timestamp(), start=0,
                                             num=CLAIM_CANDIDATES)
    due: list[Callback] = []
    for cb_id in ids:
        try:
            due.append(await service.get(str(cb_id)))
        except NotFound:  # removed meanwhile (retention)
            continue
    for cb in await _visible(request, who, due):
        try:
            return _out(await service.claim(cb.id, actor))
        except Conflict:  # another agent took it meanwhile: the next one
            continue
    return None


@router.post("/callbacks/{callback_id}/claim")
async def claim(request: Request, callback_id: str, actor: str = Depends(actor_of)) -> CallbackOut:
    service = _service(request)
    await _may_see(request, principal_of(request), await service.get(callback_id))
    return _out(await service.claim(callback_id, actor))


@router.post("/callbacks/{callback_id}/attempts")
async def record_attempt(request: Request, callback_id: str, body: AttemptIn,
                         actor: str = Depends(actor_of)) -> CallbackOut:
    service = _service(request)
    await _may_see(request, principal_of(request), await service.get(callback_id))
    return _out(await service.record_attempt(callback_id, body.outcome, actor, body.note))


@router.post("/callbacks/{callback_id}/call", status_code=202)
async def call_citizen(request: Request, callback_id: str, actor: str = Depends(actor_of)) -> CallbackCallState:
    """Call the callback's citizen from your own phone: Atiende rings your phone (your agent record's SIP URI, or
    the desk's softphone), and once you answer dials the number stored on the callback (never one from the
    request) through the trunk and bridges you. The agent holding the callback's claim, or a supervisor for a
    callback in progress they may see; one such call per agent and per callback at a time. The call runs in the
    background: follow it with `GET /api/v1/callbacks/{id}/call` or the desk's live events (`callback.call`).
    Audited (`callback.call`)."""
    who = principal_of(request)
    services = services_of(request)
    cb = await _may_see(request, who, await _service(request).get(callback_id))
    if cb.status != "in_progress":
        raise Conflict("Tome antes esta devolución de llamada.", {"id": cb.id, "status": cb.status},
                       error_id="callback-not-claimed")
    if cb.claimed_by != actor and not who.has("supervisor"):
        raise Forbidden("Esta devolución de llamada la tiene otra persona.", {"id": cb.id},
                        error_id="not-your-callback")
    if who.agent_id is None:
        raise Conflict("Solo quien tiene ficha de agente (y un teléfono) puede llamar.", error_id="no-phone")
    st = await services.callback_calls.start(cb, agent_id=who.agent_id, actor=actor)
    await services.desk.audit.record(actor, "callback.call", cb.id, {"call_id": st.id, "agent": who.agent_id,
                                                                     "ticket": cb.ticket_ref})
    return st


@router.get("/callbacks/{callback_id}/call")
async def callback_call(request: Request, callback_id: str) -> CallbackCallState:
    """The latest call placed from the desk about this callback, and how it stands (`ringing_agent`,
    `dialing_citizen`, `connected`, `ended` with its `outcome` and, when it ended short, an `ending`:
    `agent_no_answer` and `failed` made no attempt, `agent_hung_up` a `no_answer` one)."""
    services = services_of(request)
    await _may_see(request, principal_of(request), await _service(request).get(callback_id))
    st = await services.callback_calls.state(callback_id)
    if st is None:
        raise NotFound("No se ha llamado desde el escritorio por esta devolución.", {"id": callback_id},
                       error_id="no-call")
    return st


@router.get("/voicemails/{call_id}/audio", response_class=Response)
async def voicemail_audio(request: Request, call_id: str) -> Response:
    """The recording as WAV, from the shared store, so any node plays what any node recorded; only to who may see
    the ticket it was filed on (a voicemail not filed yet: supervisors only), and every listen is audited."""
    safe = Path(call_id).name
    # agent-call recordings share the store but are heard through /api/v1/recordings/{id}/audio (supervisors, audited)
    if safe != call_id or safe.startswith("rec-"):
        raise NotFound(f"no voicemail recording for call {call_id}", {"call_id": call_id})
    rt = services_of(request)
    who = principal_of(request)
    raw = await rt.store.redis.get(rt.store.keys.voicemail(safe))
    try:
        ref = json.loads(raw).get("ticket") if raw else None
    except (ValueError, AttributeError):
        ref = None
    if ref:
        await may_see(rt.desk, who, await rt.desk.tickets.get(str(ref)))
    wav = await rt.recordings.get(safe)
    if wav is None:
        raise NotFound(f"no voicemail recording for call {call_id}", {"call_id": call_id})
    if not ref and await rt.desk.queues_visible_to(who) is not None:
        raise Forbidden("this voicemail is not on a ticket you may see", {"call_id": call_id},
                        error_id="not-your-queue")
    await rt.desk.audit.record(who.id, "voicemail.listened", safe, {"ticket": ref})
    return Response(wav, media_type="audio/wav", headers={"Content-Disposition": f'inline; filename="{safe}.wav"',
                                                           "Cache-Control": "private, no-store"})
