"""What operators of a contact center expect (issue 18): disposition codes, canned replies, SLA alerts and call
detail records, over the services in desk/dispositions.py, desk/canned.py, desk/sla.py and ivr/cdr.py.

Agents read the codes and the canned replies of their queues, set a disposition on a ticket they work or a call
they took, and insert canned replies filled on the server; supervisors see the tickets at risk, the dispositions
report and export CDRs; admins edit the two lists (`/api/v1/admin/...`, versioned, audited; page
`/admin/operaciones`). The actor is always the authenticated principal.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from config.desk import CannedReply, Disposition
from config.models import Settings
from core.clock import Clock
from core.errors import Forbidden, InvalidInput
from core.store import Store
from core.versioned import VersionInfo
from desk import Desk
from desk.canned import CannedService, canned_section
from desk.dispositions import DispositionService, dispositions_section
from desk.models import Principal, Ticket
from desk.sla import SlaService, SlaState
from desk_api.auth import actor_of, desk_of, require
from desk_api.deps import services_of
from desk_api.routes.pages import WEB
from desk_api.scope import may_work
from ivr.cdr import CallDetail, CdrService, ExportSlot
from ivr.records import CallRecords
from routing.calendar_service import CalendarService

router = APIRouter()
STAFF = ("agent_n1", "agent_n2", "supervisor")
SUPERVISORS = ("supervisor",)


@dataclass
class Operations:
    dispositions: DispositionService
    canned: CannedService
    sla: SlaService
    cdr: CdrService

    async def close(self) -> None:
        await self.sla.close()
        await self.cdr.close()


def build_operations(settings: Callable[[], Settings], store: Store, clock: Clock, desk: Desk,
                     calendars: CalendarService | None, calls: CallRecords) -> Operations:
    """The four services over the desk's; the composition root (atiende/components.py) and the HTTP layer
    (`operations_of`) build theirs with this one function."""

    async def next_open(queue: str, now: datetime) -> datetime | None:
        q = settings().desk.queue(queue)
        name = q.calendar if q else None
        if calendars is None:
            return None
        return (await calendars.get(name)).next_open(now)

    return Operations(
        dispositions=DispositionService(dispositions_section(store, clock, settings), store, clock, desk.tickets,
                                        desk.audit, desk.tz),
        canned=CannedService(canned_section(store, clock, settings), clock, desk.audit, desk.tz, next_open),
        sla=SlaService(settings, store, clock, desk.tickets, desk.events, calendars, desk.tz),
        cdr=CdrService(calls, store, clock, lambda: settings().desk.cdr),
    )


def operations_of(request: Request) -> Operations:
    """This application's operations services, built on first use from its `Services`."""
    ops = getattr(request.app.state, "operations", None)
    if isinstance(ops, Operations):
        return ops
    services = services_of(request)
    ops = build_operations(lambda: services.settings, services.store, services.clock, services.desk,
                           services.calendars, services.calls)
    request.app.state.operations = ops
    return ops


# ---- bodies ---------------------------------------------------------------------------------------------


class CodeIn(BaseModel):
    code: str = Field(..., min_length=1, max_length=32)


class DispositionsOut(BaseModel):
    required: bool
    codes: list[Disposition]


class CallDispositionOut(BaseModel):
    call_id: str
    disposition: dict[str, Any]


class RenderedOut(BaseModel):
    id: str
    text: str


class AtRiskOut(BaseModel):
    tickets: list[SlaState]
    count: int
    warn_at: float
    first_response_business_hours: float


class SectionOut(BaseModel):
    version: int
    document: dict[str, Any]


class PutOut(BaseModel):
    version: int


class RollbackIn(BaseModel):
    version: int = Field(..., ge=0)


# ---- dispositions -------------------------------------------------------------------------------------


@router.get("/api/v1/dispositions", response_model=DispositionsOut, tags=["operations"])
async def list_dispositions(request: Request, queue: str | None = Query(None, max_length=32),
                            who: Principal = Depends(require(*STAFF))) -> DispositionsOut:
    """The active disposition codes (of `queue`, when given) and whether closing a ticket needs one."""
    svc = operations_of(request).dispositions
    return DispositionsOut(required=(await svc.current()).required, codes=await svc.codes(queue))


@router.post("/api/v1/tickets/{ref}/disposition", response_model=Ticket, tags=["operations"])
async def set_ticket_disposition(ref: str, body: CodeIn, request: Request,
                                 who: Principal = Depends(require(*STAFF))) -> Ticket:
    t = await desk_of(request).tickets.get(ref)
    may_work(who, t)
    return await operations_of(request).dispositions.set_on_ticket(t.ref, body.code, actor=who.id)


@router.post("/api/v1/calls/{call_id}/disposition", response_model=CallDispositionOut, tags=["operations"])
async def set_call_disposition(call_id: str, body: CodeIn, request: Request,
                               who: Principal = Depends(require(*STAFF))) -> CallDispositionOut:
    """The agent who took the call (or a supervisor) sets its disposition, during the call or after it."""
    services = services_of(request)
    record = await services.calls.get(call_id[:128])
    # During the call its record is saved only as each IVR step ends, and the queue step lasts the whole agent
    # call: who took it and from which queue is in the live entry the bridging node keeps.
    live: dict[str, Any] = {}
    if record.ended_at is None:
        raw = await services.store.redis.get(services.store.keys.call_live(record.call_id))
        doc = json.loads(raw) if raw else {}
        live = doc if isinstance(doc, dict) else {}
    agent = record.vars.get("agent") or live.get("agent")
    if not who.has("supervisor") and (who.agent_id is None or agent != who.agent_id):
        raise Forbidden("only the agent who took this call (or a supervisor) sets its disposition",
                        {"call_id": record.call_id}, error_id="not-your-call")
    ops = operations_of(request)
    queue = record.queue or (str(live["queue"]) if live.get("queue") else None)
    value = await ops.dispositions.set_on_call(record.call_id, body.code, queue, actor=who.id)
    if record.ended_at is not None:
        ops.cdr.disposition_set(record)  # the CDR already went out at the end of the call: send the completed one
    return CallDispositionOut(call_id=record.call_id, disposition=value)


@router.get("/api/v1/reports/dispositions", tags=["reports"])
async def dispositions_report(request: Request, start: date | None = None, end: date | None = None,
                              who: Principal = Depends(require(*SUPERVISORS))) -> dict[str, Any]:
    today = services_of(request).clock.now().astimezone(desk_of(request).tz).date()
    end = end or today
    start = start or end - timedelta(days=13)
    return await operations_of(request).dispositions.counts(start, end)


# ---- canned replies -----------------------------------------------------------------------------------


@router.get("/api/v1/canned", response_model=list[CannedReply], tags=["operations"])
async def list_canned(request: Request, queue: str | None = Query(None, max_length=32),
                      who: Principal = Depends(require(*STAFF))) -> list[CannedReply]:
    return await operations_of(request).canned.replies(queue)


@router.post("/api/v1/tickets/{ref}/canned/{reply_id}/render", response_model=RenderedOut, tags=["operations"])
async def render_canned(ref: str, reply_id: str, request: Request,
                        who: Principal = Depends(require(*STAFF))) -> RenderedOut:
    """The reply with the ticket's citizen name, reference and the queue's next opening filled in."""
    desk = desk_of(request)
    t = await desk.tickets.get(ref)
    may_work(who, t)
    citizen = await desk.citizens.of(t.citizen_id)
    text = await operations_of(request).canned.render(reply_id[:64], t, citizen)
    return RenderedOut(id=reply_id[:64], text=text)


# ---- SLA ------------------------------------------------------------------------------------------------


@router.get("/api/v1/sla/at-risk", response_model=AtRiskOut, tags=["reports"])
async def sla_at_risk(request: Request, limit: int = Query(200, ge=1, le=2000),
                      who: Principal = Depends(require(*SUPERVISORS))) -> AtRiskOut:
    """Active tickets past `warn_at` of their first-response or resolution time (business time), or past due."""
    cfg = services_of(request).settings.desk.sla
    items = await operations_of(request).sla.at_risk(limit)
    return AtRiskOut(tickets=items, count=len(items), warn_at=cfg.warn_at,
                     first_response_business_hours=cfg.first_response_business_hours)


# ---- call detail records --------------------------------------------------------------------------------


def _instant(value: str | None, tz: ZoneInfo, *, end: bool) -> datetime | None:
    """A day (`2026-11-23`: its local start, or its end for `until`) or an ISO instant with its offset."""
    if not value:
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day + timedelta(days=1) if end else day, time(0), tz)
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput("Fecha no válida: use AAAA-MM-DD o un instante ISO con zona horaria.",
                           {"value": value[:40]}) from None
    if at.tzinfo is None:
        raise InvalidInput("El instante necesita su zona horaria (p. ej. +01:00 o Z).", {"value": value[:40]})
    return at


@router.get("/api/v1/cdr.csv", tags=["reports"], response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}}, "description": "one row per call, oldest first"}})
async def cdr_csv(request: Request, since: str | None = Query(None, max_length=40),
                  until: str | None = Query(None, max_length=40),
                  who: Principal = Depends(require(*SUPERVISORS))) -> StreamingResponse:
    tz = desk_of(request).tz
    lo, hi = _instant(since, tz, end=False), _instant(until, tz, end=True)
    if lo is not None and hi is not None and hi < lo:
        raise InvalidInput("«hasta» es anterior a «desde».", {"since": since, "until": until})
    cdr = operations_of(request).cdr
    slot = cdr.export_slot()  # 429 while another export runs on this node
    try:
        await desk_of(request).audit.record(who.id, "cdr.export", "cdr", {"since": since, "until": until})
    except BaseException:
        slot.release()
        raise
    name = f"cdr-{(since or 'inicio')[:10]}-{(until or 'hoy')[:10]}.csv"
    return _HeldStream(cdr.csv(lo, hi), slot, media_type="text/csv; charset=utf-8",
                       headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


class _HeldStream(StreamingResponse):
    """A streamed body that holds `slot` until the response is over, however it ends (sent whole, the client
    gone mid-way, or before the first byte), and closes the body's generator then."""

    def __init__(self, content: AsyncGenerator[str, None], slot: ExportSlot, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._body = content
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._body.aclose()
            finally:
                self._slot.release()


@router.get("/api/v1/calls/{call_id}/cdr", response_model=CallDetail, tags=["reports"])
async def call_cdr(call_id: str, request: Request, who: Principal = Depends(require(*SUPERVISORS))) -> CallDetail:
    return await operations_of(request).cdr.detail(call_id[:128])


# ---- admin: the two lists, versioned -------------------------------------------------------------------


@router.get("/api/v1/admin/dispositions", response_model=SectionOut, tags=["admin"])
async def get_dispositions(request: Request) -> SectionOut:
    version, doc = await operations_of(request).dispositions.section.current()
    return SectionOut(version=version, document=doc.model_dump(mode="json"))


@router.put("/api/v1/admin/dispositions", response_model=PutOut, tags=["admin"])
async def put_dispositions(body: dict[str, Any], request: Request, note: str = Query("", max_length=500),
                           actor: str = Depends(actor_of)) -> PutOut:
    return PutOut(version=await operations_of(request).dispositions.update(body, actor, note))


@router.get("/api/v1/admin/dispositions/versions", response_model=list[VersionInfo], tags=["admin"])
async def dispositions_versions(request: Request) -> list[VersionInfo]:
    return await operations_of(request).dispositions.versions()


@router.post("/api/v1/admin/dispositions/rollback", response_model=PutOut, tags=["admin"])
async def rollback_dispositions(body: RollbackIn, request: Request, actor: str = Depends(actor_of)) -> PutOut:
    return PutOut(version=await operations_of(request).dispositions.rollback(body.version, actor))


@router.get("/api/v1/admin/canned", response_model=SectionOut, tags=["admin"])
async def get_canned(request: Request) -> SectionOut:
    version, doc = await operations_of(request).canned.section.current()
    return SectionOut(version=version, document=doc.model_dump(mode="json"))


@router.put("/api/v1/admin/canned", response_model=PutOut, tags=["admin"])
async def put_canned(body: dict[str, Any], request: Request, note: str = Query("", max_length=500),
                     actor: str = Depends(actor_of)) -> PutOut:
    return PutOut(version=await operations_of(request).canned.update(body, actor, note))


@router.get("/api/v1/admin/canned/versions", response_model=list[VersionInfo], tags=["admin"])
async def canned_versions(request: Request) -> list[VersionInfo]:
    return await operations_of(request).canned.versions()


@router.post("/api/v1/admin/canned/rollback", response_model=PutOut, tags=["admin"])
async def rollback_canned(body: RollbackIn, request: Request, actor: str = Depends(actor_of)) -> PutOut:
    return PutOut(version=await operations_of(request).canned.rollback(body.version, actor))


@router.get("/admin/operaciones", include_in_schema=False)
async def admin_page() -> FileResponse:
    return FileResponse(WEB / "admin-operaciones.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

