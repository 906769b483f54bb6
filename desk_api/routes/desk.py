"""REST API of the desk: auth, tickets, citizens, agents and presence, queues, citizen status lookup, reports, audit.

Every endpoint declares its roles with `require(...)` (admin passes all); citizen-facing ones are rate-limited.
Errors are `{"error_id", "message", "details"}` with the right status code (see atiende/errors.py).

Rights beyond the role, checked here on every action: agents see and act only on the tickets and citizens of their
queues (`Desk.queues_visible_to`: those of their agent record, as `Assignment.queues_for`, or of their level) and on
tickets assigned to them; they change a ticket only when it is theirs; through `/interactions` a person adds notes
only (a reply goes through `/reply`, a citizen's message comes from a channel, so a person cannot fake either); an
identity that belongs to another citizen (which would merge the two) is linked by supervisors only.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from core.errors import Forbidden, InvalidInput, NotFound
from desk import Desk
from desk.auth import SESSION_COOKIE, KeyInfo, User
from desk.models import Agent, Channel, Citizen, IdentityKind, Interaction, Principal, Ticket, TicketKind
from desk.tickets import Reply
from desk_api import idempotency
from desk_api.auth import client_of, credential_of, desk_of, is_https, rate_limited, require
from desk_api.deps import services_of
from desk_api.routes.operations import operations_of
from desk_api.scope import may_see, may_see_citizen, may_work, visible

router = APIRouter(prefix="/api/v1")

AGENTS = ("agent_n1", "agent_n2", "supervisor")
SUPERVISORS = ("supervisor",)
Ref = str


# ---- request and response bodies -----------------------------------------------------------------


class LoginIn(BaseModel):
    username: str = Field(..., min_length=1, max_length=64)
    password: str = Field(..., min_length=1, max_length=256)
    next: str | None = Field(None, max_length=2000, description="where the login page goes afterwards")


class SessionOut(BaseModel):
    token: str
    expires_at: str
    user: Principal
    next: str = Field("/desk", description="a same-site path: `next` if it was one, else /desk")


def safe_next(value: str | None, default: str = "/desk") -> str:
    r"""A path on this site to go to after login, or `default`. Browsers read `/\evil` and `/<tab>/evil` as
    `//evil` (another site), so a backslash, whitespace or control character anywhere refuses it; a value that
    does not start with exactly one `/` cannot be a path here (`//evil`, `https:`, `javascript:`)."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) <= 32 or ord(c) == 127 for c in value):
        return default
    return value


class PasswordIn(BaseModel):
    password: str = Field(..., min_length=12, max_length=256)


class OwnPasswordIn(BaseModel):
    current: str = Field(..., min_length=1, max_length=256)
    password: str = Field(..., min_length=12, max_length=256)


class Me(BaseModel):
    id: str
    username: str
    name: str
    roles: list[str]
    agent_id: str | None = None
    level: int | None = None
    presence: str | None = None
    skills: list[str] = Field(default_factory=list)


class IdentityIn(BaseModel):
    kind: IdentityKind
    value: str = Field(..., min_length=1, max_length=254)
    name: str | None = Field(None, max_length=200)


MAX_FREE_JSON = 16_384  # bytes of free-form `meta` / `data` a client may attach


def _bounded(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value, default=str)) > MAX_FREE_JSON:
        raise ValueError(f"at most {MAX_FREE_JSON} bytes of JSON")
    return value


class TicketIn(BaseModel):
    channel: Channel = "api"
    queue: str | None = Field(None, max_length=32, description="default: complaints queue for complaints, else N1")
    subject: str = Field(..., min_length=1, max_length=300)
    kind: TicketKind = "query"
    body: str = Field("", max_length=20000)
    citizen_id: str | None = Field(None, max_length=64)
    citizen: IdentityIn | None = Field(None, description="identify (or create) the citizen by this identity")
    intent: str | None = Field(None, max_length=64)
    trace_id: str | None = Field(None, max_length=128)
    due: AwareDatetime | None = Field(None, description="default: from the queue's calendar")
    meta: dict[str, Any] = Field(default_factory=dict)

    _meta = field_validator("meta")(_bounded)


class TicketList(BaseModel):
    tickets: list[Ticket]
    count: int


class TicketDetail(BaseModel):
    ticket: Ticket
    citizen: Citizen | None
    interactions: list[Interaction]


class TextIn(BaseModel):
    text: str = Field(..., min_length=1, max_length=20000)


class NoteIn(BaseModel):
    note: str = Field("", max_length=5000)
    disposition: str | None = Field(None, max_length=32, description="disposition code (GET /api/v1/dispositions)")


class EscalateIn(BaseModel):
    note: str = Field(..., min_length=1, max_length=5000)
    queue: str | None = Field(None, max_length=32)


class StatusIn(BaseModel):
    status: Literal["open", "resolved", "closed"]
    note: str = Field("", max_length=5000)
    disposition: str | None = Field(None, max_length=32, description="disposition code (GET /api/v1/dispositions)")


class AssignIn(BaseModel):
    agent_id: str | None = Field(None, max_length=64, description="null puts the ticket back in its queue")
    note: str = Field("", max_length=5000)


class InteractionIn(BaseModel):
    kind: Literal["call", "voicemail", "chat", "email", "note", "callback_attempt", "message"]
    channel: Channel = "api"
    direction: Literal["in", "out", "internal"] = "internal"
    text: str = Field("", max_length=20000)
    data: dict[str, Any] = Field(default_factory=dict)

    _data = field_validator("data")(_bounded)


class StatusView(BaseModel):
    ref: str
    status: str
    status_label: str
    kind: str
    created_at: str
    updated_at: str
    due: str | None
    text: str


class CitizenDetail(BaseModel):
    citizen: Citizen
    tickets: list[str]


class MergeIn(BaseModel):
    other_id: str = Field(..., min_length=1, max_length=64)


class PresenceIn(BaseModel):
    presence: Literal["available", "busy", "away", "offline"]


class AgentIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=200)
    level: int = Field(1, ge=1, le=2)
    skills: list[str] = Field(default_factory=list, max_length=20)
    sip_uri: str | None = Field(None, max_length=200)


class ReserveIn(BaseModel):
    item: str = Field("", max_length=128, description="call id or ticket ref the agent is reserved for")
    kind: Literal["call", "ticket", "callback"] = "call"


class ReserveOut(BaseModel):
    agent: Agent | None


class ClaimNextOut(BaseModel):
    ticket: Ticket | None


class QueueOut(BaseModel):
    id: str
    name: str
    level: int
    skills: list[str]
    waiting: int
    active: int
    agents_available: int


class QueuesOut(BaseModel):
    queues: list[QueueOut]


class UserIn(BaseModel):
    username: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]{1,31}$")
    name: str = Field(..., min_length=1, max_length=200)
    roles: list[Literal["agent_n1", "agent_n2", "supervisor", "admin"]] = Field(..., min_length=1, max_length=4)
    password: str = Field(..., min_length=12, max_length=256)
    level: int | None = Field(None, ge=1, le=2)
    skills: list[str] = Field(default_factory=list, max_length=20)
    sip_uri: str | None = Field(None, max_length=200)


class UserOut(BaseModel):
    username: str
    name: str
    roles: list[str]
    agent_id: str | None
    active: bool
    demo: bool = False


class KeyIn(BaseModel):
    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]{1,64}$")
    roles: list[Literal["agent_n1", "agent_n2", "supervisor", "admin"]] = Field(..., min_length=1, max_length=4)


class KeyOut(BaseModel):
    name: str
    roles: list[str]
    key: str


class AuditEntry(BaseModel):
    id: str
    at: str | None
    actor: str | None
    action: str | None
    target: str | None
    details: dict[str, Any]


class AuditOut(BaseModel):
    entries: list[AuditEntry]


def _user_out(u: User) -> UserOut:
    return UserOut(username=u.username, name=u.name, roles=u.roles, agent_id=u.agent_id, active=u.active, demo=u.demo)


# ---- permissions on one ticket -------------------------------------------------------------------


def _is_supervisor(p: Principal) -> bool:
    return p.has("supervisor")


def _may_claim(desk: Desk, p: Principal, t: Ticket) -> str:
    if p.agent_id is None:
        raise Forbidden("only agents claim tickets", {"roles": p.roles}, error_id="not-an-agent")
    level = 2 if p.has("agent_n2") else 1
    if t.level > level and not _is_supervisor(p):
        raise Forbidden(f"ticket is for level {t.level} agents", {"ref": t.ref, "level": t.level}, error_id="wrong-level")
    return p.agent_id


# ---- the hot paths first: routes are matched in order, and every route tried costs ---------------


@router.get("/status/{ref}", tags=["citizens"],
            responses={200: {"model": StatusView}, 404: {"description": "unknown reference"},
                       429: {"description": "too many lookups"}})
async def status_lookup(ref: Ref, request: Request) -> Response:
    """For citizens (no login): where their query stands, in Spanish; no names or texts are shown.

    The hottest citizen-facing path: rate limit and lookup inline, JSON built once (no response-model pass)."""
    desk = desk_of(request)
    await desk.limiter.check("status", client_of(request))
    try:
        view = await desk.tickets.status_view(ref)
    except NotFound:
        raise NotFound(f"No encontramos ninguna consulta con la referencia {ref[:20]}. Revise que esté bien escrita.",
                       {"ref": ref[:20]}) from None
    return Response(json.dumps(view, ensure_ascii=False), media_type="application/json")


@router.post("/tickets", status_code=201, tags=["tickets"], responses={201: {"model": Ticket}})
async def create_ticket(body: TicketIn, request: Request, who: Principal = Depends(require(*AGENTS))) -> Response:
    """A ticket in a queue (the IVR, the channels and agents create them); its `ref` is what the citizen is told.

    A hot path: the stored ticket is returned as built (no second response-model pass)."""
    desk = desk_of(request)
    citizen_id = body.citizen_id
    if body.citizen is not None:
        citizen_id = (await desk.citizens.identify(body.citizen.kind, body.citizen.value, name=body.citizen.name)).id
    elif citizen_id is not None:
        try:
            citizen_id = (await desk.citizens.get(citizen_id)).id
        except NotFound:
            raise InvalidInput(f"unknown citizen {citizen_id!r}", {"citizen_id": citizen_id}) from None
    held = await idempotency.claim(services_of(request).store, request, who.id, "ticket")
    if held.prior is not None:
        return Response((await desk.tickets.get(held.prior)).model_dump_json(), status_code=201,
                        media_type="application/json", headers=idempotency.REPLAYED_HEADER)
    try:
        t = await desk.tickets.create(channel=body.channel, queue=body.queue, subject=body.subject, kind=body.kind,
                                      citizen_id=citizen_id, intent=body.intent, trace_id=body.trace_id,
                                      body=body.body, due=body.due, actor=who.id, meta=body.meta,
                                      marker=held.marker)
    except BaseException:
        await held.failed()  # frees the key only if the script did not record a ticket in it
        raise
    await held.done(t.ref)
    return Response(t.model_dump_json(), status_code=201, media_type="application/json")


# ---- auth ----------------------------------------------------------------------------------------


@router.post("/auth/login", response_model=SessionOut, tags=["auth"], dependencies=[Depends(rate_limited("login"))])
async def login(body: LoginIn, request: Request, response: Response) -> SessionOut:
    """A session: the token in the body for API clients, and for the pages an HttpOnly, SameSite=Strict cookie
    (Secure over HTTPS) that scripts cannot read."""
    desk = desk_of(request)
    s = await desk.auth.login(body.username, body.password)
    response.set_cookie(SESSION_COOKIE, s.token, max_age=desk.cfg.session_ttl_s, httponly=True, samesite="strict",
                        path="/", secure=is_https(request))
    return SessionOut(token=s.token, expires_at=s.expires_at, user=s.user, next=safe_next(body.next))


@router.post("/auth/logout", status_code=204, tags=["auth"])
async def logout(request: Request, response: Response, who: Principal = Depends(require(*AGENTS))) -> Response:
    token, _ = credential_of(request)
    if token and who.id.startswith("user:"):
        await desk_of(request).auth.logout(token)
    out = Response(status_code=204)
    out.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=is_https(request))
    return out


@router.post("/auth/password", status_code=204, tags=["auth"])
async def change_own_password(body: OwnPasswordIn, request: Request,
                              who: Principal = Depends(require(*AGENTS))) -> Response:
    """A user changes their own password (the current one is checked); every session ends, this one included."""
    if not who.id.startswith("user:"):
        raise Forbidden("API keys have no password", {"principal": who.id})
    desk = desk_of(request)
    # Login's per-address limit too, counted once the caller is known (a stranger gets 401, not a spent limit).
    await desk.limiter.check("login", client_of(request))
    username = who.id.split(":", 1)[1]
    # The throttled, constant-time check of login, without opening a session or recording a login.
    await desk.auth.verify(username, body.current)
    await desk.auth.set_password(username, body.password, actor=who.id)
    return Response(status_code=204)


@router.get("/auth/me", response_model=Me, tags=["auth"])
async def me(request: Request, who: Principal = Depends(require(*AGENTS))) -> Me:
    out = Me(id=who.id, username=who.id.split(":", 1)[-1], name=who.name, roles=who.roles, agent_id=who.agent_id)
    if who.agent_id:
        a = await desk_of(request).agents.find(who.agent_id)
        if a is not None:
            out.level, out.presence, out.skills = a.level, a.presence, a.skills
    return out


@router.get("/users", response_model=list[UserOut], tags=["auth"])
async def list_users(request: Request, who: Principal = Depends(require())) -> list[UserOut]:
    return [_user_out(u) for u in await desk_of(request).auth.list_users()]


@router.post("/users", response_model=UserOut, status_code=201, tags=["auth"])
async def create_user(body: UserIn, request: Request, who: Principal = Depends(require())) -> UserOut:
    u = await desk_of(request).auth.create_user(body.username, body.name, list(body.roles), body.password, level=body.level,
                                                skills=body.skills or None, sip_uri=body.sip_uri, actor=who.id)
    return _user_out(u)


@router.put("/users/{username}/password", status_code=204, tags=["auth"])
async def set_user_password(username: str, body: PasswordIn, request: Request,
                            who: Principal = Depends(require())) -> Response:
    """Admins set a user's password; every session of that user ends."""
    await desk_of(request).auth.set_password(username, body.password, actor=who.id)
    return Response(status_code=204)


@router.post("/users/{username}/disable", response_model=UserOut, tags=["auth"])
async def disable_user(username: str, request: Request, who: Principal = Depends(require())) -> UserOut:
    """No more logins; every session of the user ends at once."""
    if who.id == f"user:{username}":
        raise InvalidInput("you cannot disable yourself", {"username": username})
    return _user_out(await desk_of(request).auth.set_active(username, False, actor=who.id))


@router.post("/users/{username}/enable", response_model=UserOut, tags=["auth"])
async def enable_user(username: str, request: Request, who: Principal = Depends(require())) -> UserOut:
    return _user_out(await desk_of(request).auth.set_active(username, True, actor=who.id))


@router.get("/api-keys", response_model=list[KeyInfo], tags=["auth"])
async def list_keys(request: Request, who: Principal = Depends(require())) -> list[KeyInfo]:
    return await desk_of(request).auth.list_keys()


@router.post("/api-keys", response_model=KeyOut, status_code=201, tags=["auth"])
async def create_key(body: KeyIn, request: Request, who: Principal = Depends(require())) -> KeyOut:
    key = await desk_of(request).auth.create_api_key(body.name, list(body.roles), actor=who.id)
    return KeyOut(name=body.name, roles=list(body.roles), key=key)


@router.delete("/api-keys/{name}", status_code=204, tags=["auth"])
async def revoke_key(name: str, request: Request, who: Principal = Depends(require())) -> Response:
    """The key stops working at once on this node, within a few seconds on the others."""
    await desk_of(request).auth.revoke_key(name, actor=who.id)
    return Response(status_code=204)


# ---- tickets -------------------------------------------------------------------------------------


@router.get("/tickets", response_model=TicketList, tags=["tickets"])
async def list_tickets(
    request: Request,
    queue: str | None = Query(None, max_length=32),
    status: Literal["open", "assigned", "escalated", "resolved", "closed"] | None = None,
    assignee: str | None = Query(None, max_length=64),
    citizen_id: str | None = Query(None, max_length=64),
    waiting: bool = False,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10000),
    who: Principal = Depends(require(*AGENTS)),
) -> TicketList:
    desk = desk_of(request)
    scope = await desk.queues_visible_to(who)
    if scope is not None and queue is not None and queue not in scope:
        raise Forbidden("you do not work this queue", {"queue": queue, "queues": sorted(scope)}, error_id="not-your-queue")
    items = await desk.tickets.query(queue=queue, status=status, assignee=assignee, citizen_id=citizen_id,
                                     waiting=waiting, limit=limit, offset=offset,
                                     visible=None if scope is None else (lambda t: visible(scope, who, t)))
    return TicketList(tickets=items, count=len(items))


@router.post("/tickets/claim-next", response_model=ClaimNextOut, tags=["tickets"])
async def claim_next(request: Request, who: Principal = Depends(require("agent_n1", "agent_n2"))) -> ClaimNextOut:
    if who.agent_id is None:
        raise Forbidden("only agents claim tickets", {"roles": who.roles}, error_id="not-an-agent")
    return ClaimNextOut(ticket=await desk_of(request).assign.claim_next(who.agent_id, actor=who.id))


@router.get("/tickets/{ref}", response_model=TicketDetail, tags=["tickets"])
async def get_ticket(ref: Ref, request: Request, who: Principal = Depends(require(*AGENTS))) -> TicketDetail:
    desk = desk_of(request)
    t = await desk.tickets.get(ref)
    interactions = await desk.tickets.interactions(t.ref)
    await may_see(desk, who, t, interactions)
    return TicketDetail(ticket=t, citizen=await desk.citizens.of(t.citizen_id), interactions=interactions)


class TraceOut(BaseModel):
    trace_id: str
    entries: list[dict[str, Any]]
    tickets: list[Ticket]


@router.get("/traces/{trace_id}", response_model=TraceOut, tags=["tickets"])
async def get_trace(trace_id: str, request: Request, who: Principal = Depends(require(*AGENTS))) -> TraceOut:
    """One contact's whole path: every entry recorded under its trace id, and the tickets among them."""
    desk = desk_of(request)
    entries = await desk.tickets.trace(trace_id[:128])
    refs = [str(e["id"]) for e in entries if e.get("kind") == "ticket" and isinstance(e.get("id"), str)]
    tickets = await desk.tickets.get_many(refs)
    scope = await desk.queues_visible_to(who)
    if scope is not None:
        shown = [t for t in tickets if visible(scope, who, t)]
        if tickets and not shown:
            raise Forbidden("this contact has no ticket in your queues", {"trace_id": trace_id[:128]},
                            error_id="not-your-queue")
        tickets = shown
    return TraceOut(trace_id=trace_id[:128], entries=entries, tickets=tickets)


@router.get("/tickets/{ref}/interactions", response_model=list[Interaction], tags=["tickets"])
async def get_interactions(ref: Ref, request: Request, who: Principal = Depends(require(*AGENTS))) -> list[Interaction]:
    desk = desk_of(request)
    await may_see(desk, who, await desk.tickets.get(ref))
    return await desk.tickets.interactions(ref)


@router.post("/tickets/{ref}/interactions", response_model=Interaction, status_code=201, tags=["tickets"])
async def add_interaction(ref: Ref, body: InteractionIn, request: Request,
                          who: Principal = Depends(require(*AGENTS))) -> Interaction:
    """What happened on a ticket. People (sessions) add notes only: an internal note, never a citizen's message
    (which would reopen a closed ticket) nor an answer (which would set the first response); those come from the
    channels and from `/reply`. Machines (API keys: the IVR, gateways) record calls, messages and callbacks."""
    desk = desk_of(request)
    t = await desk.tickets.get(ref)
    await may_see(desk, who, t)
    if not who.id.startswith("key:"):
        if body.kind != "note" or body.direction != "internal":
            raise Forbidden("people add notes here; answer the citizen with /reply", {"kind": body.kind,
                            "direction": body.direction}, error_id="notes-only")
    elif body.kind != "note":
        may_work(who, t)
    it = Interaction.model_validate({**body.model_dump(), "actor": who.id})
    return await desk.tickets.add_interaction(t.ref, it, actor=who.id)


@router.post("/tickets/{ref}/notes", response_model=Interaction, status_code=201, tags=["tickets"])
async def add_note(ref: Ref, body: TextIn, request: Request, who: Principal = Depends(require(*AGENTS))) -> Interaction:
    desk = desk_of(request)
    await may_see(desk, who, await desk.tickets.get(ref))
    return await desk.tickets.note(ref, body.text, actor=who.id)


@router.post("/tickets/{ref}/reply", response_model=Reply, tags=["tickets"])
async def reply(ref: Ref, body: TextIn, request: Request, who: Principal = Depends(require(*AGENTS))) -> Reply:
    desk = desk_of(request)
    t = await desk.tickets.get(ref)
    may_work(who, t)
    if t.status not in ("open", "assigned", "escalated"):
        raise InvalidInput(f"ticket is {t.status}; reopen it to reply", {"status": t.status})
    return await desk.tickets.reply(t.ref, body.text, actor=who.id)


@router.post("/tickets/{ref}/claim", response_model=Ticket, tags=["tickets"])
async def claim(ref: Ref, request: Request, who: Principal = Depends(require("agent_n1", "agent_n2"))) -> Ticket:
    desk = desk_of(request)
    t = await desk.tickets.get(ref)
    agent_id = _may_claim(desk, who, t)
    await may_see(desk, who, t)
    return await desk.tickets.claim(t.ref, agent_id, actor=who.id)


@router.post("/tickets/{ref}/assign", response_model=Ticket, tags=["tickets"])
async def assign(ref: Ref, body: AssignIn, request: Request, who: Principal = Depends(require(*SUPERVISORS))) -> Ticket:
    desk = desk_of(request)
    if body.agent_id is not None:
        await desk.agents.get(body.agent_id)
    return await desk.tickets.assign(ref, body.agent_id, actor=who.id, note=body.note)


@router.post("/tickets/{ref}/escalate", response_model=Ticket, tags=["tickets"])
async def escalate(ref: Ref, body: EscalateIn, request: Request,
                   who: Principal = Depends(require("agent_n1", "supervisor"))) -> Ticket:
    desk = desk_of(request)
    t = await desk.tickets.get(ref)
    if t.status == "assigned" or not _is_supervisor(who):
        may_work(who, t)
    return await desk.tickets.escalate(t.ref, actor=who.id, note=body.note, queue=body.queue)


@router.post("/tickets/{ref}/status", response_model=Ticket, tags=["tickets"])
async def set_status(ref: Ref, body: StatusIn, request: Request, who: Principal = Depends(require(*AGENTS))) -> Ticket:
    desk = desk_of(request)
    t = await desk.tickets.get(ref)
    may_work(who, t)
    await operations_of(request).dispositions.before_close(t.ref, body.status, body.disposition, actor=who.id)
    return await desk.tickets.set_status(t.ref, body.status, actor=who.id, note=body.note)


@router.post("/tickets/{ref}/close", response_model=Ticket, tags=["tickets"])
async def close(ref: Ref, body: NoteIn, request: Request, who: Principal = Depends(require(*AGENTS))) -> Ticket:
    desk = desk_of(request)
    t = await desk.tickets.get(ref)
    may_work(who, t)
    await operations_of(request).dispositions.before_close(t.ref, "closed", body.disposition, actor=who.id)
    return await desk.tickets.close(t.ref, actor=who.id, note=body.note)


# ---- citizens ------------------------------------------------------------------------------------


@router.get("/citizens", response_model=list[Citizen], tags=["citizens"])
async def list_citizens(request: Request, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=100000),
                        who: Principal = Depends(require(*AGENTS))) -> list[Citizen]:
    """Newest first. Agents get only the citizens with a ticket in their queues (newest tickets first)."""
    desk = desk_of(request)
    scope = await desk.queues_visible_to(who)
    if scope is None:
        return await desk.citizens.recent(limit=limit, offset=offset)
    ids: list[str] = []
    for t in await desk.tickets.query(limit=min(5000, 10 * (limit + offset)), visible=lambda t: visible(scope, who, t)):
        if t.citizen_id and t.citizen_id not in ids:
            ids.append(t.citizen_id)
    out = []
    for cid in ids[offset:offset + limit]:
        try:
            out.append(await desk.citizens.get(cid))
        except NotFound:
            continue
    return out


@router.post("/citizens", response_model=Citizen, tags=["citizens"])
async def identify_citizen(body: IdentityIn, request: Request, who: Principal = Depends(require(*AGENTS))) -> Citizen:
    return await desk_of(request).citizens.identify(body.kind, body.value, name=body.name)


@router.get("/citizens/{citizen_id}", response_model=CitizenDetail, tags=["citizens"])
async def get_citizen(citizen_id: str, request: Request, who: Principal = Depends(require(*AGENTS))) -> CitizenDetail:
    desk = desk_of(request)
    c = await desk.citizens.get(citizen_id)
    await may_see_citizen(desk, who, c.id)
    return CitizenDetail(citizen=c, tickets=await desk.citizens.tickets(c.id))


@router.post("/citizens/{citizen_id}/identities", response_model=Citizen, tags=["citizens"])
async def link_identity(citizen_id: str, body: IdentityIn, request: Request,
                        who: Principal = Depends(require(*AGENTS))) -> Citizen:
    """Add an identity. If it is someone else's, the two citizens merge: supervisors only."""
    desk = desk_of(request)
    c = await desk.citizens.get(citizen_id)
    await may_see_citizen(desk, who, c.id)
    return await desk.citizens.link(c.id, body.kind, body.value, actor=who.id, may_merge=_is_supervisor(who))


@router.get("/citizens/{citizen_id}/export", tags=["citizens"])
async def export_citizen(citizen_id: str, request: Request, who: Principal = Depends(require())) -> dict[str, Any]:
    """Everything held about a citizen (right of access, GDPR art. 15), as JSON; the export is audited."""
    return await desk_of(request).privacy.export(citizen_id, actor=who.id)


@router.post("/citizens/{citizen_id}/erase", tags=["citizens"])
async def erase_citizen(citizen_id: str, request: Request, who: Principal = Depends(require())) -> dict[str, Any]:
    """Right to erasure (GDPR art. 17): identities, names, texts, transcripts and recordings go; tickets stay as
    anonymous statistics. Audited without personal data."""
    return await desk_of(request).privacy.erase(citizen_id, actor=who.id)


@router.post("/citizens/{citizen_id}/merge", response_model=Citizen, tags=["citizens"])
async def merge_citizens(citizen_id: str, body: MergeIn, request: Request,
                         who: Principal = Depends(require(*SUPERVISORS))) -> Citizen:
    return await desk_of(request).citizens.merge(citizen_id, body.other_id, actor=who.id)


# ---- agents, presence, queues --------------------------------------------------------------------


@router.get("/agents", response_model=list[Agent], tags=["agents"])
async def list_agents(request: Request, who: Principal = Depends(require(*AGENTS))) -> list[Agent]:
    return await desk_of(request).agents.all()


@router.get("/agents/me", response_model=Agent, tags=["agents"])
async def my_agent(request: Request, who: Principal = Depends(require(*AGENTS))) -> Agent:
    if who.agent_id is None:
        raise NotFound("you are not an agent", {"user": who.id})
    return await desk_of(request).agents.get(who.agent_id)


@router.put("/agents/me/presence", response_model=Agent, tags=["agents"])
async def my_presence(body: PresenceIn, request: Request, who: Principal = Depends(require(*AGENTS))) -> Agent:
    if who.agent_id is None:
        raise NotFound("you are not an agent", {"user": who.id})
    return await desk_of(request).agents.set_presence(who.agent_id, body.presence, actor=who.id)


@router.put("/agents/{agent_id}/presence", response_model=Agent, tags=["agents"])
async def agent_presence(agent_id: str, body: PresenceIn, request: Request,
                         who: Principal = Depends(require(*AGENTS))) -> Agent:
    if who.agent_id != agent_id and not _is_supervisor(who):
        raise Forbidden("you may only change your own presence", {"agent_id": agent_id})
    return await desk_of(request).agents.set_presence(agent_id, body.presence, actor=who.id)


@router.get("/agents/{agent_id}", response_model=Agent, tags=["agents"])
async def get_agent(agent_id: str, request: Request, who: Principal = Depends(require(*AGENTS))) -> Agent:
    return await desk_of(request).agents.get(agent_id)


@router.put("/agents/{agent_id}", response_model=Agent, tags=["agents"])
async def put_agent(agent_id: str, body: AgentIn, request: Request, who: Principal = Depends(require())) -> Agent:
    if not agent_id or len(agent_id) > 64:
        raise InvalidInput("agent id: 1-64 characters", {"agent_id": agent_id[:64]})
    return await desk_of(request).agents.upsert(Agent(id=agent_id, **body.model_dump()), actor=who.id)


@router.delete("/agents/{agent_id}", status_code=204, tags=["agents"])
async def delete_agent(agent_id: str, request: Request, who: Principal = Depends(require())) -> Response:
    await desk_of(request).agents.delete(agent_id, actor=who.id)
    return Response(status_code=204)


@router.post("/agents/{agent_id}/release", response_model=Agent, tags=["agents"])
async def release_agent(agent_id: str, request: Request, who: Principal = Depends(require(*SUPERVISORS))) -> Agent:
    desk = desk_of(request)
    await desk.agents.get(agent_id)
    return await desk.assign.release(agent_id, actor=who.id)


@router.get("/queues", response_model=QueuesOut, tags=["agents"])
async def queues(request: Request, who: Principal = Depends(require(*AGENTS))) -> QueuesOut:
    desk = desk_of(request)
    store = services_of(request).store
    k = store.keys
    out = []
    async with store.redis.pipeline(transaction=False) as pipe:
        for q in desk.cfg.queues:
            pipe.zcard(k.queue_items(q.id))
            pipe.zcard(k.tickets_queue(q.id))
            pipe.zcard(k.agents_idle(desk.assign.skill_of(q.id)))
        counts = await pipe.execute()
    for i, q in enumerate(desk.cfg.queues):
        out.append(QueueOut(id=q.id, name=q.name, level=q.level, skills=q.skills, waiting=int(counts[3 * i]),
                            active=int(counts[3 * i + 1]), agents_available=int(counts[3 * i + 2])))
    return QueuesOut(queues=out)


@router.post("/queues/{queue}/reserve", response_model=ReserveOut, tags=["agents"])
async def reserve_agent(queue: str, body: ReserveIn, request: Request,
                        who: Principal = Depends(require(*SUPERVISORS))) -> ReserveOut:
    """For the IVR and other machines: atomically take the longest-idle available agent of the queue."""
    return ReserveOut(agent=await desk_of(request).assign.reserve(queue, item=body.item, kind=body.kind, actor=who.id))


# ---- reports and audit ---------------------------------------------------------------------------


@router.get("/reports/summary", tags=["reports"])
async def report_summary(request: Request, start: date | None = None, end: date | None = None,
                         who: Principal = Depends(require(*SUPERVISORS))) -> dict[str, Any]:
    """Interactions by channel and day, containment, waiting times, abandoned calls, open tickets past due."""
    return await desk_of(request).reports.summary(start, end)


@router.get("/reports/overdue", response_model=TicketList, tags=["reports"])
async def report_overdue(request: Request, limit: int = Query(100, ge=1, le=1000),
                         who: Principal = Depends(require(*SUPERVISORS))) -> TicketList:
    desk = desk_of(request)
    items = await desk.tickets.get_many(await desk.tickets.overdue(limit=limit))
    return TicketList(tickets=items, count=len(items))


@router.get("/audit", response_model=AuditOut, tags=["reports"])
async def audit(request: Request, count: int = Query(100, ge=1, le=1000),
                before: str | None = Query(None, pattern=r"^\d{1,20}-\d{1,20}$"),
                actor: str | None = Query(None, max_length=100), target: str | None = Query(None, max_length=100),
                who: Principal = Depends(require(*SUPERVISORS))) -> AuditOut:
    entries = await desk_of(request).audit.entries(count=count, before=before, actor=actor, target=target)
    return AuditOut(entries=[AuditEntry(**e) for e in entries])


__all__ = ["client_of", "router"]
