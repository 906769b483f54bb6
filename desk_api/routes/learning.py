"""The learning loop for admins: what callers and chat users said that the IVR did not understand, or understood
only after asking "¿Quiere …?", grouped with counts, confidence and each contact's trace; the intents it confuses;
and one action that teaches an intent a phrase or a keyword (a new validated routing version, with the usual
rollback), and its «Deshacer», which undoes only that version (409 if another one was saved after it). Admins only
(the guard's /api/v1/admin/ prefix).

Everything is read from the call records (phone and chat contacts alike): each transcript of a gather that asks for
an intent is one utterance, and what follows it in the same record says what became of it: a confirmation answered
yes or no, the same question asked again, the keypad menu, or nothing (taken at once). A confirmation the
recogniser answered by comparing the audio with the expected answers (the transcript was no words or one, "C,"
for a "sí": `Transcript.chosen`) says so on its contact, with what was transcribed.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, model_validator

from config.routing import RoutingConfig
from core.errors import Conflict, InvalidInput, NotFound
from core.versioned import StaleVersion
from desk_api.auth import actor_of
from desk_api.deps import services_of
from desk_api.routes.routing import checked_routing, merged, rollback_routing

if TYPE_CHECKING:
    from ivr.contact import Session, Transcript
    from routing.router import Router

router = APIRouter(prefix="/api/v1/admin/learning", tags=["admin: learning"])

MAX_CONTACTS = 5000  # records read per request: a month of a small council's line; more is a report, not a page
EXAMPLES = 8  # contacts listed per group

Fate = Literal["not_understood", "confirmed", "denied"]


def _intent_gathers(flows: Any) -> set[str]:
    """Transcript names of the gathers that ask for an intent (`step.id`, else the engine's default "intent")."""
    names = {"intent"}
    for steps in flows.flows.values():
        for step in steps:
            if step.verb == "gather" and step.expect == "intent" and step.id:
                names.add(step.id)
    return names


def _answer(t: Transcript) -> bool | None:
    """A confirmation's answer: keys 1/2, a spoken yes/no (also as the phone recogniser garbles it), else None."""
    from ivr.engine import sounds_like_yes_no
    from routing.entities import parse_yes_no

    if t.kind == "dtmf":
        return {"1": True, "2": False}.get(t.digits[:1])
    yn = parse_yes_no(t.text)
    return yn if yn is not None else sounds_like_yes_no(t.text)


def utterances(rec: Session, gathers: set[str]) -> list[tuple[Transcript, Fate | None, Transcript | None]]:
    """Each intent utterance of a contact with its fate (None: taken at once, nothing to learn from) and the
    confirmation's answer when one was asked."""
    ts = rec.transcripts
    out: list[tuple[Transcript, Fate | None, Transcript | None]] = []
    for i, t in enumerate(ts):
        if t.step not in gathers or t.kind == "dtmf" or not t.text.strip():
            continue
        after = ts[i + 1] if i + 1 < len(ts) else None
        fate: Fate | None = None
        answer: Transcript | None = None
        if after is not None and after.step == "confirm":
            yn = _answer(after)
            fate = "confirmed" if yn else "denied"
            answer = after
        elif after is not None and (after.step == t.step or after.step == "dtmf_menu"):
            fate = "not_understood"
        elif after is None and rec.vars.get("gave_up") and not rec.intent:
            fate = "not_understood"
        out.append((t, fate, answer))
    return out


def _key(text: str) -> str:
    from routing.normalize import analyze

    norm = analyze(text)
    return norm.text or " ".join(text.lower().split())


def build_report(records: list[Session], gathers: set[str], router_: Router) -> dict[str, Any]:
    """The page's three lists. Blocking (routes every grouped utterance once with the router in force)."""
    groups: dict[tuple[Fate, str], dict[str, Any]] = {}
    confusions: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in records:
        for t, fate, answer in utterances(rec, gathers):
            if fate is None:
                continue
            g = groups.setdefault((fate, _key(t.text)), {"fate": fate, "texts": Counter(), "count": 0, "stt": [],
                                                          "contacts": [], "finals": Counter(), "channels": Counter(),
                                                          "chosen": 0})
            g["count"] += 1
            g["texts"][t.text.strip()] += 1
            g["channels"][rec.channel] += 1
            if rec.channel == "voice":
                g["stt"].append(t.confidence)
            if rec.intent:
                g["finals"][rec.intent] += 1
            # The yes or no picked from the expected answers by the audio, not transcribed ("C," for a "sí").
            chosen = answer.chosen.model_dump() if answer is not None and answer.chosen is not None else None
            g["chosen"] += chosen is not None
            if len(g["contacts"]) < EXAMPLES:
                g["contacts"].append({"call_id": rec.call_id, "trace_id": rec.trace_id, "channel": rec.channel,
                                      "at": t.at.isoformat(), "final_intent": rec.intent, "outcome": rec.outcome,
                                      "answer_chosen": chosen})
    out: dict[str, list[dict[str, Any]]] = {"not_understood": [], "confirmed": [], "denied": []}
    for (fate, _), g in groups.items():
        text = g["texts"].most_common(1)[0][0]
        now = router_.route(text, "voice" if g["channels"].get("voice") else "chat")
        suggested = g["finals"].most_common(1)[0][0] if g["finals"] else None
        item = {"text": text, "variants": [t for t, _ in g["texts"].most_common(5)], "count": g["count"],
                "channels": dict(g["channels"]),
                "speech_confidence": round(sum(g["stt"]) / len(g["stt"]), 3) if g["stt"] else None,
                "router_now": {"intent": now.intent, "confidence": now.confidence},
                "final_intent": suggested, "contacts": g["contacts"], "answers_chosen": g["chosen"]}
        out[fate].append(item)
        # A "no" to "¿Quiere X?" from a caller who then got Y: the router confuses X with Y for this wording.
        if fate == "denied" and now.intent and suggested and suggested != now.intent:
            c = confusions.setdefault((now.intent, suggested), {"proposed": now.intent, "wanted": suggested,
                                                                 "count": 0, "examples": []})
            c["count"] += g["finals"][suggested]
            if len(c["examples"]) < EXAMPLES:
                c["examples"].append(text)
    for items in out.values():
        items.sort(key=lambda x: (-x["count"], x["text"]))
    return {**out, "confusions": sorted(confusions.values(), key=lambda c: -c["count"])}


@router.get("", summary="What was not understood, confirmed or denied, grouped; and the confusions between intents")
async def learning(request: Request, days: int = Query(30, ge=1, le=366),
                   limit: int = Query(2000, ge=1, le=MAX_CONTACTS)) -> dict[str, Any]:
    rt = services_of(request)
    since = rt.clock.now() - timedelta(days=days)
    records = await rt.calls.list(since=since, limit=limit)
    _, flows = await rt.flows.current()
    router_ = await rt.router.get()
    report = await anyio.to_thread.run_sync(build_report, records, _intent_gathers(flows), router_)
    return {"since": since.isoformat(), "contacts": len(records), **report}


class TeachBody(BaseModel):
    intent: str = Field(..., max_length=40)
    phrase: str | None = Field(None, min_length=2, max_length=300, description="an example phrase to add")
    keyword: str | None = Field(None, min_length=2, max_length=80, description="a word or words to add as a keyword")
    weight: float = Field(0.5, gt=-1, lt=1, description="the keyword's weight (ignored for a phrase)")
    confirm_worse: bool = Field(False, description="save even when the dev set gets worse (the page asks first)")

    @model_validator(mode="after")
    def _one(self) -> TeachBody:
        if (self.phrase is None) == (self.keyword is None):
            raise ValueError("give exactly one of phrase or keyword")
        if self.keyword is not None and self.weight == 0:
            raise ValueError("a keyword's weight cannot be 0")
        return self


@router.post("/teach", summary="Add a phrase or a keyword to an intent: a new routing version, checked on the dev set")
async def teach(body: TeachBody, request: Request, actor: str = Depends(actor_of)) -> dict[str, Any]:
    """Made over the version in force and saved only if it still is; when another change got in first (another
    admin teaching at the same time), made again over that one: every phrase taught is kept."""
    rt = services_of(request)
    svc = rt.router

    async def change(base: int, cfg: RoutingConfig) -> dict[str, Any]:
        doc = cfg.model_dump(mode="json")
        intent = next((i for i in doc["intents"] if i["id"] == body.intent), None)
        if intent is None:
            raise NotFound(f"no intent {body.intent!r}", {"intent": body.intent})
        if body.phrase is not None:
            phrase = " ".join(body.phrase.split())
            if phrase.lower() in (p.lower() for p in intent["phrases"]):
                raise InvalidInput(f"{body.intent} already has the phrase {phrase!r}",
                                   [{"loc": "phrase", "reason": "duplicate"}])
            intent["phrases"].append(phrase)
            what = f"frase «{phrase}»"
        else:
            keyword = " ".join((body.keyword or "").lower().split())
            intent["keywords"][keyword] = body.weight
            what = f"palabra clave «{keyword}» ({body.weight:+.2f})"
        value, draft = await checked_routing(rt, doc)
        check = await svc.check_change(draft)
        if check["worse"] and not body.confirm_worse:
            raise Conflict("the change makes the dev set worse; confirm to save it anyway", {"check": check})
        version = await svc.section.put(value, actor, note=f"aprendizaje: {what} → {body.intent}", base=base)
        return {"version": version, "previous": base, "intent": body.intent, "added": what, "check": check,
                "at": rt.clock.now().isoformat()}

    return await merged(rt, change)


class UndoBody(BaseModel):
    version: int = Field(..., ge=1, description="the version «Añadir» created")


@router.post("/undo", summary="Undo one teach: its version's base made current again, only if it is still in force")
async def undo(body: UndoBody, request: Request, actor: str = Depends(actor_of)) -> dict[str, Any]:
    rt = services_of(request)
    info = await rt.router.section.info(body.version)
    if info.base is None or not info.note.startswith("aprendizaje:"):
        raise InvalidInput(f"La versión {body.version} de las intenciones no se creó con «Añadir»: vuelva a una "
                           "versión anterior desde «Versiones»", [{"loc": "version", "reason": "no es de aprendizaje"}])
    try:
        version = await rollback_routing(rt, info.base, actor, base=body.version)
    except StaleVersion as exc:
        raise Conflict(f"No se puede deshacer: después de este cambio se guardó la versión {exc.current} de las "
                       "intenciones, y deshacerlo la desharía también. Quite la frase desde el editor de intenciones.",
                       {"version": body.version, "current": exc.current}, error_id="stale-version") from None
    return {"version": version, "rolled_back_to": info.base, "undone": body.version}
