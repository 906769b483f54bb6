"""Callbacks and voicemail audio: the desk's view of what the voicemail package owns."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.errors import NotFound
from desk_api import idempotency
from desk_api.auth import actor_of
from desk_api.deps import services_of
from voicemail.callbacks import Callback, CallbackService, Outcome

router = APIRouter(prefix="/api/v1", tags=["callbacks"])


def _service(request: Request) -> CallbackService:
    return services_of(request).callbacks


class AttemptIn(BaseModel):
    outcome: Outcome
    note: str = Field("", max_length=2000)


class CallbackIn(BaseModel):
    phone: str = Field(..., min_length=3, max_length=40)
    ticket_ref: str | None = Field(None, max_length=20)
    reason: Literal["manual"] = "manual"


@router.get("/callbacks")
async def list_callbacks(request: Request, status: Literal["pending", "in_progress", "done", "failed"] | None = None,
                         ) -> list[Callback]:
    return await _service(request).query(status=status)


@router.post("/callbacks", status_code=201, responses={201: {"model": Callback}})
async def create_callback(request: Request, body: CallbackIn) -> Response:
    held = await idempotency.claim(services_of(request).store, request, actor_of(request), "callback")
    service = _service(request)
    if held.prior is not None:
        return Response((await service.get(held.prior)).model_dump_json(), status_code=201,
                        media_type="application/json", headers=idempotency.REPLAYED_HEADER)
    try:
        cb = await service.create(phone=body.phone, ticket_ref=body.ticket_ref, reason=body.reason)
    except BaseException:
        await held.failed()
        raise
    await held.done(cb.id)
    return Response(cb.model_dump_json(), status_code=201, media_type="application/json")


@router.get("/callbacks/{callback_id}")
async def get_callback(request: Request, callback_id: str) -> Callback:
    return await _service(request).get(callback_id)


@router.post("/callbacks/next")
async def claim_next(request: Request, actor: str = Depends(actor_of)) -> Callback | None:
    return await _service(request).claim_next(actor)


@router.post("/callbacks/{callback_id}/claim")
async def claim(request: Request, callback_id: str, actor: str = Depends(actor_of)) -> Callback:
    return await _service(request).claim(callback_id, actor)


@router.post("/callbacks/{callback_id}/attempts")
async def record_attempt(request: Request, callback_id: str, body: AttemptIn, actor: str = Depends(actor_of)) -> Callback:
    return await _service(request).record_attempt(callback_id, body.outcome, actor, body.note)


@router.get("/voicemails/{call_id}/audio", response_class=Response)
async def voicemail_audio(request: Request, call_id: str) -> Response:
    """The recording as WAV, from the shared store, so any node plays what any node recorded."""
    safe = Path(call_id).name
    # agent-call recordings share the store but are heard through /api/v1/recordings/{id}/audio (supervisors, audited)
    wav = await services_of(request).recordings.get(safe) if safe == call_id and not safe.startswith("rec-") else None
    if wav is None:
        raise NotFound(f"no voicemail recording for call {call_id}", {"call_id": call_id})
    return Response(wav, media_type="audio/wav", headers={"Content-Disposition": f'inline; filename="{safe}.wav"',
                                                           "Cache-Control": "private, no-store"})
