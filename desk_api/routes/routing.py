"""Routing over HTTP: `POST /api/v1/route` and the admin API under `/api/v1/admin/routing`.

Handlers stay thin: `runtime.router` validates, versions, compiles and routes. Every admin edit
is a new version of the whole routing section (422 with reasons when invalid; the old version
keeps serving). The guard lets only admins through; the acting user is the authenticated principal.

Every document is also checked against the desk: an intent handing over to a queue the desk does not have is
refused (422), on a save, a draft, a check, a try and a rollback alike. A save may name the version it was made
from (`base`): when another change became current meanwhile it is refused (409 stale-version), never written over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, Field

from config.routing import Intent, RoutingConfig
from core.errors import NotFound
from core.versioned import StaleVersion, VersionInfo
from desk_api.auth import actor_of, rate_limited
from desk_api.deps import services_of
from desk_api.schemas import EditResult, RollbackRequest, draft_size
from routing.router import Router
from routing.router_service import MAX_TEXT

if TYPE_CHECKING:
    from desk_api.context import Services

T = TypeVar("T")

router = APIRouter()
admin = APIRouter(prefix="/api/v1/admin/routing", tags=["admin: routing"])
# What the intents editor needs besides saving: supervisors use it too (they propose drafts an admin publishes).
editor = APIRouter(prefix="/api/v1/editor/routing", tags=["editor: routing"])

# ---- what every routing write goes through ---------------------------------------------------------------

MERGE_ATTEMPTS = 8  # a merge of one phrase or intent is redone over a newer version at most this many times


async def checked_routing(rt: Services, data: Any) -> tuple[RoutingConfig, Router]:
    """A routing document validated (its size, the model, the desk's queues: 422) and compiled; nothing saved."""
    if isinstance(data, dict):
        draft_size(data, "routing")
    return await rt.router.compile_draft(data)


async def save_routing(rt: Services, data: Any, actor: str, note: str = "", base: int | None = None) -> int:
    """Checked as `checked_routing` (it compiles before it is live), stored as the new current version; with `base`,
    only if that version is still current (409 stale-version otherwise)."""
    if isinstance(data, dict):
        draft_size(data, "routing")
    return await rt.router.put(data, actor, note, base=base)


async def merged(rt: Services, change: Callable[[int, RoutingConfig], Awaitable[T]]) -> T:
    """`change(version, config)` made over the current version and saved with it as its base; redone over the newer
    one when another change got in first. For changes that merge one thing (a phrase, an intent): safe to redo."""
    section = rt.router.section
    for attempt in range(MERGE_ATTEMPTS):
        # After a refusal: what is current now, not this node's copy of up to a second ago.
        version, cfg = await (section.fresh() if attempt else section.current())
        try:
            return await change(version, cfg)
        except StaleVersion:
            if attempt == MERGE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class RouteRequest(BaseModel):
    text: str = Field(..., max_length=MAX_TEXT, examples=["quiero pagar la tasa de la itv"])
    channel: str = Field("chat", max_length=32, description="voice, chat, whatsapp, telegram, email...")


class AlternativeView(BaseModel):
    intent: str
    confidence: float


class RouteView(BaseModel):
    """The same object as `atiende route --json`, plus `needs_confirmation` and the `confirm` question."""

    text: str
    intent: str | None
    confidence: float
    queue: str | None
    entities: dict[str, Any]
    alternatives: list[AlternativeView]
    needs_confirmation: bool
    confirm: str | None = None


class RoutingView(BaseModel):
    version: int
    config: RoutingConfig


@router.post("/api/v1/route", response_model=RouteView, tags=["routing"], dependencies=[Depends(rate_limited("route"))])
async def route(request: Request, body: RouteRequest) -> RouteView:
    """Intent, confidence, queue, entities and alternatives of one utterance (null intent = out of scope)."""
    svc = services_of(request).router
    result = await svc.route(body.text, body.channel)
    view = RouteView.model_validate(result.model_dump())
    if result.intent is not None and result.needs_confirmation:
        view.confirm = (await svc.get()).confirm_question(result.intent)
    return view


@router.get("/api/v1/route/dtmf/{menu}/{key}", tags=["routing"])
async def dtmf(request: Request, menu: str, key: str) -> dict[str, Any]:
    """The intent a key of a DTMF menu stands for."""
    intent = (await services_of(request).router.get()).dtmf(menu, key)
    if intent is None:
        raise NotFound(f"menu {menu!r} has no key {key!r}", {"menu": menu, "key": key})
    return {"menu": menu, "key": key, "intent": intent}


# ---- admin ----------------------------------------------------------------------------------


@admin.get("", response_model=RoutingView)
async def get_routing(request: Request) -> RoutingView:
    version, cfg = await services_of(request).router.config()
    return RoutingView(version=version, config=cfg)


@admin.put("", response_model=EditResult)
async def put_routing(request: Request, body: dict[str, Any] = Body(..., examples=[{"threshold": 0.5, "intents": []}]),
                      base: int | None = Query(None, ge=0, description="the version this document was made from: "
                                                                        "409 if another one is current now"),
                      actor: str = Depends(actor_of)) -> EditResult:
    """Replace the whole routing config (same shape as `routing.yaml`); 422 with reasons when invalid."""
    return EditResult(version=await save_routing(services_of(request), body, actor, base=base))


@admin.get("/intents/{intent_id}", response_model=Intent)
async def get_intent(request: Request, intent_id: str) -> Intent:
    _, cfg = await services_of(request).router.config()
    for intent in cfg.intents:
        if intent.id == intent_id:
            return intent
    raise NotFound(f"no intent {intent_id!r}", {"intent": intent_id})


@admin.put("/intents/{intent_id}", response_model=EditResult)
async def put_intent(request: Request, intent_id: str, body: dict[str, Any] = Body(...),
                     actor: str = Depends(actor_of)) -> EditResult:
    """Add or replace one intent (its id is the path's); the rest of the config is kept, as it is when the change
    is saved (redone over a version saved meanwhile, so no other change is lost)."""
    rt = services_of(request)
    draft_size(body, "routing")

    async def change(version: int, cfg: RoutingConfig) -> int:
        doc = cfg.model_dump()
        new = {**body, "id": intent_id}
        ids = [i["id"] for i in doc["intents"]]
        if intent_id in ids:
            doc["intents"][ids.index(intent_id)] = new
        else:
            doc["intents"].append(new)
        return await save_routing(rt, doc, actor, note=f"intent {intent_id}", base=version)

    return EditResult(version=await merged(rt, change))


@admin.post("/explain")
async def explain_route(request: Request, body: RouteRequest) -> dict[str, Any]:
    """Why an utterance routes where it does: normalised text, matched keywords and phrase scores per intent."""
    from routing.router import explain

    router_ = await services_of(request).router.get()
    result = router_.route(body.text, body.channel)
    return {**result.public(), "needs_confirmation": result.needs_confirmation, "explain": explain(router_, body.text)}


@admin.get("/versions", response_model=list[VersionInfo])
async def versions(request: Request) -> list[VersionInfo]:
    return await services_of(request).router.versions()


@admin.get("/versions/{version}", response_model=RoutingConfig)
async def get_version(request: Request, version: int) -> RoutingConfig:
    return await services_of(request).router.version(version)


@admin.post("/rollback", response_model=EditResult)
async def rollback(request: Request, body: RollbackRequest, actor: str = Depends(actor_of)) -> EditResult:
    """A copy of an older version made current again: 422 when it hands over to a queue the desk no longer has."""
    return EditResult(version=await rollback_routing(services_of(request), body.version, actor))


async def rollback_routing(rt: Services, version: int, actor: str, base: int | None = None) -> int:
    return await rt.router.rollback(version, actor, base=base)


# ---- the intents editor ------------------------------------------------------------------------


class TryRequest(RouteRequest):
    config: dict[str, Any] | None = Field(None, description="a draft routing document to try instead of the one in force")


class CheckRequest(BaseModel):
    config: dict[str, Any] = Field(..., description="the routing document as it would be saved")


async def _router_for(request: Request, draft: dict[str, Any] | None) -> Router:
    rt = services_of(request)
    if draft is None:
        return await rt.router.get()
    return (await checked_routing(rt, draft))[1]


def _scored(router_: Router, text: str, channel: str) -> dict[str, Any]:
    """Every intent's score for the utterance, best first, with the keywords and phrase that counted. Blocking."""
    from routing.router_service import explain_words

    _, scores, _ = router_.scores(text)
    why = explain_words(router_, text)
    result = router_.route(text, channel)
    ranked = sorted(range(len(router_.intents)), key=lambda i: -float(scores[i]))
    return {**result.public(), "needs_confirmation": result.needs_confirmation, "normalized": why["normalized"],
            "threshold": router_.config.threshold,
            "scores": [{"intent": router_.intents[i], "score": round(float(scores[i]), 4),
                        "keywords": why["intents"].get(router_.intents[i], {}).get("keywords", []),
                        "phrase": why["intents"].get(router_.intents[i], {}).get("phrase", 0.0)} for i in ranked]}


@editor.get("")
async def editor_routing(request: Request) -> dict[str, Any]:
    """The routing document in force as its author wrote it (version 0: the YAML file's keys only)."""
    version, cfg = await services_of(request).router.config()
    return {"version": version, "document": cfg.model_dump(mode="json", exclude_unset=True)}


@editor.post("/try")
async def try_route(request: Request, body: TryRequest) -> dict[str, Any]:
    """«Probar»: the scores of every intent for an utterance and which words counted, with the draft if given."""
    router_ = await _router_for(request, body.config)
    return await anyio.to_thread.run_sync(_scored, router_, body.text, body.channel)


@editor.post("/check")
async def check_change(request: Request, body: CheckRequest) -> dict[str, Any]:
    """The shipped dev set scored before (in force) and after (this document): accuracy and what moved."""
    rt = services_of(request)
    _, draft = await checked_routing(rt, body.config)
    return await rt.router.check_change(draft)


router.include_router(admin)
router.include_router(editor)
