"""IVR resources: call records, the admin-editable flows (versions, rollback), flow simulation, and what the admin
page's editors need: a dry-run validation located on each step, the prompts with their placeholders filled and their
audio, side-by-side diffs of versions, and drafts a supervisor proposes and an admin publishes.

Roles are checked by the guard (`desk_api.app.GUARDED`): records for staff, changes under /api/v1/admin for admins,
simulation and the editors' read-only helpers and drafts (/api/v1/editor) for supervisors.

A flows document (saved, proposed, validated, simulated or rolled back to) is checked against the desk too: an
enqueue or voicemail step naming a queue the desk does not have is refused (422), or it would fail on every call.
"""

from __future__ import annotations

import asyncio
import difflib
import io
import json
import re
import uuid
import wave
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import yaml
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, model_validator

from config.flows import Gather, locate_problems
from core.errors import Conflict, InvalidInput, NotFound, Unavailable
from core.versioned import VersionedSection, VersionInfo
from desk_api.auth import actor_of, require
from desk_api.deps import services_of
from desk_api.schemas import RollbackRequest, draft_size, known_queues

if TYPE_CHECKING:
    from config.ivr import IvrConfig
    from desk_api.context import Services
    from ivr.records import CallRecord
    from routing.router import Router

router = APIRouter(tags=["ivr"])

# Call records hold callers' numbers and what they said in every queue: supervisors read them (agents see the call
# they are on through the desk's live events, and act on it through the POST routes under /api/v1/calls/{id}).
_RECORDS_READERS = [Depends(require("supervisor"))]


@router.get("/api/v1/calls", summary="Call records, newest first", dependencies=_RECORDS_READERS)
async def list_calls(request: Request, since: datetime | None = None, until: datetime | None = None,
                     outcome: Literal["self_service", "queued", "transferred", "voicemail", "abandoned"] | None = None,
                     limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> dict[str, Any]:
    rt = services_of(request)
    records = await rt.calls.list(since=since, until=until, outcome=outcome, limit=limit, offset=offset)
    return {"calls": [r.model_dump(mode="json", exclude={"said", "vars"}) for r in records], "count": len(records)}


# The reports over call records read a window of them: without one they read every call ever recorded.
REPORT_DEFAULT_DAYS = 31  # no `since`: the month up to `until` (default now)
REPORT_MAX_DAYS = 366  # a year (a leap one) at most per request
REPORT_MAX_CALLS = 100_000  # records read at most (newest first), whatever the window holds
_REPORT_CHUNK = 1000


def report_window(rt: Services, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """The window a report reads: defaulted and bounded (422 past REPORT_MAX_DAYS or reversed). A time without
    an offset is the service's local time, as the simulator reads it."""
    now = rt.clock.now()
    since, until = (t.replace(tzinfo=now.tzinfo) if t is not None and t.tzinfo is None else t for t in (since, until))
    hi = until or now
    lo = since or hi - timedelta(days=REPORT_DEFAULT_DAYS)
    if lo > hi:
        raise InvalidInput("El periodo empieza después de terminar",
                           [{"loc": "since", "reason": "since es posterior a until"}])
    if hi - lo > timedelta(days=REPORT_MAX_DAYS):
        raise InvalidInput(f"El periodo no puede pasar de {REPORT_MAX_DAYS} días: pida el informe por partes",
                           [{"loc": "since", "reason": f"más de {REPORT_MAX_DAYS} días entre since y until"}])
    return lo, hi


async def _walk_calls(rt: Services, lo: datetime, hi: datetime, pick: Callable[[CallRecord], Any]) -> list[Any]:
    """What `pick` keeps of each call record that started in [lo, hi], newest first, at most REPORT_MAX_CALLS.
    Records are read a chunk at a time and validated in a thread: tens of thousands of them are seconds of CPU,
    which must not stall the loop that paces the calls' audio."""
    from ivr.records import CallRecord

    def parse(raws: list[Any]) -> list[Any]:
        out = []
        for raw in raws:
            if raw is not None:
                kept = pick(CallRecord.model_validate_json(raw))
                if kept is not None:
                    out.append(kept)
        return out

    r, k = rt.store.redis, rt.store.keys
    picked: list[Any] = []
    for start in range(0, REPORT_MAX_CALLS, _REPORT_CHUNK):
        ids = await r.zrevrangebyscore(k.calls, hi.timestamp(), lo.timestamp(), start=start, num=_REPORT_CHUNK)
        if not ids:
            break
        picked += await asyncio.to_thread(parse, await r.mget([k.call(str(i)) for i in ids]))
        if len(ids) < _REPORT_CHUNK:
            break
    return picked


@router.get("/api/v1/calls/containment", dependencies=_RECORDS_READERS,
            summary="Share of self-service among calls whose intent has a self-service answer")
async def containment_report(request: Request, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    """Over `since`..`until` (default: the last 31 days; at most 366)."""
    from ivr.records import CallRecord, containment

    rt = services_of(request)
    lo, hi = report_window(rt, since, until)
    # Only what the share needs is kept of each record (a slim record, not the whole path and transcripts). Calls
    # the desk placed to callbacks' citizens (voicemail/callback_calls.py) are no contacts the IVR served.
    records = await _walk_calls(rt, lo, hi, lambda rec: None if rec.vars.get("callback") else CallRecord.model_construct(
        call_id=rec.call_id, trace_id=rec.trace_id, started_at=rec.started_at, intent=rec.intent, outcome=rec.outcome))
    return containment(records, await rt.ivr.self_service_intents())


@router.get("/api/v1/calls/surveys", dependencies=_RECORDS_READERS,
            summary="Post-contact survey answers (1-5) by who served the contact")
async def surveys_report(request: Request, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    """Over `since`..`until` (default: the last 31 days; at most 366)."""
    from ivr.records import survey_summary

    rt = services_of(request)
    lo, hi = report_window(rt, since, until)
    answered = await _walk_calls(rt, lo, hi, lambda rec: rec if rec.survey is not None else None)
    return survey_summary(answered)


@router.get("/api/v1/calls/{call_id}", dependencies=_RECORDS_READERS,
            summary="One call record: path with timings, transcripts, intent, outcome")
async def get_call(call_id: str, request: Request) -> dict[str, Any]:
    rec = await services_of(request).calls.get(call_id)
    return rec.model_dump(mode="json")


# ---- admin: flows -------------------------------------------------------------------------------------


@router.get("/api/v1/admin/ivr/flows", summary="The flows in force (version and document)")
async def get_flows(request: Request) -> dict[str, Any]:
    version, doc = await services_of(request).flows.current()
    return {"version": version, "flows": doc.model_dump(mode="json", exclude_none=True),
            "document": _as_written(doc)}


def _as_written(doc: IvrConfig) -> Any:
    """The document with only the keys its author wrote (version 0: the YAML file as it is), for the editors: what
    goes in comes out, so YAML -> editor -> YAML leaves it unchanged. Keys come in the model's order (a step's verb
first), which is the order of config/defaults/ivr.yaml. Stored versions hold every key."""
    out: dict[str, Any] = doc.model_dump(mode="json", exclude_unset=True)
    # A step reads best verb first ({verb: say, prompt: welcome}); the model declares `id` before it.
    for name, steps in out.get("flows", {}).items():
        out["flows"][name] = [{"verb": s["verb"], **{k: v for k, v in s.items() if k != "verb"}} for s in steps]
    return _plain_numbers(out)


def _plain_numbers(value: Any) -> Any:
    """300.0 -> 300: float fields hold what the author wrote as 300, and JSON in the browser drops the '.0' anyway."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


@router.put("/api/v1/admin/ivr/flows", summary="Store a new version of the flows (422 with the reasons if invalid)")
async def put_flows(body: dict[str, Any], request: Request, note: str = Query("", max_length=500),
                    base: int | None = Query(None, ge=0, description="the version this document was made from: 409 "
                                                                      "(stale-version) if another one is current now"),
                    actor: str = Depends(actor_of)) -> dict[str, Any]:
    rt = services_of(request)
    version = await rt.flows.put(checked_flows(rt, body), actor=actor, note=note, base=base)
    return {"version": version}


@router.get("/api/v1/admin/ivr/flows/versions", summary="Every stored version of the flows")
async def flow_versions(request: Request) -> dict[str, Any]:
    versions = await services_of(request).flows.versions()
    return {"versions": [v.model_dump(mode="json") for v in versions]}


@router.get("/api/v1/admin/ivr/flows/versions/{version}", summary="One stored version of the flows")
async def flow_version(version: int, request: Request) -> dict[str, Any]:
    doc = await services_of(request).flows.get(version)
    return {"version": version, "flows": doc.model_dump(mode="json", exclude_none=True)}


@router.post("/api/v1/admin/ivr/flows/rollback", summary="Make an older version current again (stored as a new version)")
async def rollback_flows(body: RollbackRequest, request: Request, actor: str = Depends(actor_of)) -> dict[str, Any]:
    """422 when that version hands over to a queue the desk no longer has."""
    rt = services_of(request)
    version = await rt.flows.rollback(body.version, actor=actor)  # the section checks the desk's queues
    return {"version": version, "rolled_back_to": body.version}


# ---- simulation -------------------------------------------------------------------------------------


class SimInput(BaseModel):
    say: str | None = Field(None, max_length=2000)
    dtmf: str | None = Field(None, pattern=r"^[0-9*#]{1,32}$")

    @model_validator(mode="after")
    def _one(self) -> SimInput:
        if (self.say is None) == (self.dtmf is None):
            raise ValueError("each input is either {say: text} or {dtmf: keys}")
        return self


class SimulateBody(BaseModel):
    at: datetime | None = Field(None, description="instant of the call (with offset); default now")
    inputs: list[SimInput] = Field(default_factory=list, max_length=50)
    channel: Literal["voice", "chat"] = "voice"
    flows: dict[str, Any] | None = Field(None, description="a draft flows document to run instead of the one in force")
    routing: dict[str, Any] | None = Field(None, description="a draft routing document to route with instead")
    stop_when_waiting: bool = Field(False, description="end when the inputs run out and the IVR waits for an answer "
                                                       "(step by step in the admin page) instead of simulating silence")


def checked_flows(rt: Services, data: Any) -> IvrConfig:
    """A flows document validated (its size, the model and its structure, the desk's queues: 422); not saved."""
    if isinstance(data, dict):
        draft_size(data, "flows")
    return rt.flows.validate(data)  # the section checks the desk's queues


@router.post("/api/v1/simulate", summary="Run the flows in force, or a draft, on a scripted caller; nothing is stored")
async def simulate(body: SimulateBody, request: Request) -> dict[str, Any]:
    rt = services_of(request)
    inputs: list[tuple[Any, str]] = [("say", i.say) if i.say is not None else ("dtmf", i.dtmf or "") for i in body.inputs]
    at = body.at
    if at is not None and at.tzinfo is None:
        from zoneinfo import ZoneInfo

        at = at.replace(tzinfo=ZoneInfo("Europe/Madrid"))
    if body.flows is None and body.routing is None and not body.stop_when_waiting:
        session, out = await rt.ivr.simulate(inputs, at=at, channel=body.channel, dry_run=True)
        waiting = False
    else:
        session, out, waiting = await _simulate_draft(rt, body, inputs, at)
    return {"outcome": session.outcome, "intent": session.intent, "confidence": session.confidence,
            "calendar": session.calendar_state, "flows_version": session.flows_version, "ticket": session.ticket_ref,
            "draft": body.flows is not None or body.routing is not None, "waiting": waiting,
            "messages": [m.public() for m in out], "path": [p.model_dump(mode="json") for p in session.path],
            "transcripts": [t.model_dump(mode="json") for t in session.transcripts]}


async def _simulate_draft(rt: Services, body: SimulateBody, inputs: list[tuple[Any, str]],
                          at: datetime | None) -> tuple[Any, list[Any], bool]:
    """The engine `IvrService.simulate` builds, with the draft documents swapped in (validated first: 422)."""
    from core.clock import FixedClock
    from desk_api.routes.routing import checked_routing
    from ivr.answers import Answers
    from ivr.contact import CallerGone
    from ivr.engine import Engine
    from ivr.hooks import DryRunHooks
    from ivr.textio import ScriptedIO

    doc = checked_flows(rt, body.flows) if body.flows is not None else None
    draft_router: Router | None = (await checked_routing(rt, body.routing))[1] if body.routing is not None else None
    clock = FixedClock(at) if at is not None else None
    hooks = DryRunHooks.make(reader=rt.ivr.hooks.tickets, queues=known_queues(rt))
    eng = await rt.ivr.engine(clock=clock, save=False, hooks=hooks)
    if draft_router is not None:
        eng.deps.router = draft_router
    if doc is not None:
        eng = Engine(doc, eng.deps, eng.version, answers=Answers)

    class StepIO(ScriptedIO):
        waiting = False

        def _next(self) -> tuple[Any, str] | None:
            if not self.inputs and body.stop_when_waiting:
                self.waiting = True
                self._ended = True
                raise CallerGone()
            return super()._next()

    io = StepIO(inputs, channel=body.channel, caller="+34600000000", clock=clock or rt.clock)
    session = await eng.run(io, eng.new_session(io))
    return session, io.out, io.waiting


# ---- the editors: dry-run validation, prompts, drafts --------------------------------------------------


@router.post("/api/v1/editor/flows/validate", summary="Dry run: every problem of a flows document, located on its step")
@router.post("/api/v1/admin/ivr/flows/validate", summary="Dry run: every problem of a flows document, located on its step")
async def validate_flows(request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    draft_size(body, "flows")
    problems = locate_problems(body, known_queues(services_of(request)))
    return {"ok": not problems, "problems": [p._asdict() for p in problems]}


@router.get("/api/v1/editor/flows", summary="The flows in force, for the editors (supervisors propose drafts of it)")
async def editor_flows(request: Request) -> dict[str, Any]:
    version, doc = await services_of(request).flows.current()
    return {"version": version, "document": _as_written(doc)}


PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
EXAMPLE_REFERENCE = "K7M-4PX"
MAX_PROMPT = 1000  # characters a listen renders; the longest prompt of the reference scenario has 170


async def placeholder_values(rt: Services, doc: IvrConfig) -> dict[str, str]:
    """The values the engine fills in now (`Engine._refresh_calendar`), plus examples for the per-turn ones."""
    from ivr import speak

    cal = await rt.calendars.get()
    now = rt.clock.now()
    st = cal.status(now)
    svc = rt.settings.service
    nxt = st.next_open if st.next_open is not None else (None if st.open else cal.next_open(now))
    first_intent = next(iter(doc.labels), "")
    first_key = next((o.key for opts in doc.menus.values() for o in opts), "1")
    return {"name": svc.name, "institution": svc.institution, "line_name": svc.line_name, "line_number": svc.line_number,
            "hours": cal.describe_hours(), "today": cal.describe_day(now.astimezone(cal.tz).date()),
            "next_open": speak.when_phrase(nxt.astimezone(cal.tz), now) if nxt else "el siguiente día hábil",
            "closed_reason": f" por ser festivo, {st.holiday}" if st.holiday else "",
            "label": doc.labels.get(first_intent, "hablar con una persona"), "key": first_key,
            "reference": EXAMPLE_REFERENCE}


def fill(text: str, values: dict[str, str]) -> tuple[str, list[str]]:
    """The text with its placeholders filled, and the placeholders nothing fills (shown to the admin)."""
    unknown: list[str] = []

    def one(m: re.Match[str]) -> str:
        if m.group(1) in values:
            return values[m.group(1)]
        unknown.append(m.group(1))
        return m.group(0)

    return PLACEHOLDER.sub(one, text), unknown


@router.get("/api/v1/editor/prompts", summary="Every text the IVR says: named prompts and texts written in steps")
async def prompts(request: Request) -> dict[str, Any]:
    rt = services_of(request)
    version, doc = await rt.flows.current()
    values = await placeholder_values(rt, doc)
    used: dict[str, list[dict[str, Any]]] = {k: [] for k in doc.prompts}
    inline: list[dict[str, Any]] = []
    for name, steps in doc.flows.items():
        for i, step in enumerate(steps):
            names = [getattr(step, "prompt", None)]
            if isinstance(step, Gather):  # its policy's retry prompts, its own or the document's
                pol = doc.policy_of(step)
                names += [pol.no_input_prompt, pol.no_match_prompt]
            for p in names:
                if isinstance(p, str) and p in used:
                    used[p].append({"flow": name, "step": i})
            text = getattr(step, "text", None)
            if isinstance(text, str):
                preview, unknown = fill(text, values)
                inline.append({"flow": name, "step": i, "verb": step.verb, "text": text, "preview": preview,
                               "unknown": unknown})
    items = []
    for key, text in doc.prompts.items():
        preview, unknown = fill(text, values)
        items.append({"key": key, "text": text, "preview": preview, "unknown": unknown,
                      "placeholders": PLACEHOLDER.findall(text), "used_by": used[key]})
    return {"version": version, "prompts": items, "inline": inline, "values": values}


class PreviewBody(BaseModel):
    text: str = Field(..., min_length=1, max_length=MAX_PROMPT)


@router.post("/api/v1/editor/prompts/preview", summary="A prompt's text with its placeholders filled with today's values")
async def preview_prompt(body: PreviewBody, request: Request) -> dict[str, Any]:
    rt = services_of(request)
    _, doc = await rt.flows.current()
    preview, unknown = fill(body.text, await placeholder_values(rt, doc))
    return {"text": body.text, "preview": preview, "unknown": unknown}


def _flow_texts(doc: IvrConfig) -> set[str]:
    """The texts the line says as written in the flows in force: named prompts and texts written in steps."""
    texts = set(doc.prompts.values())
    for steps in doc.flows.values():
        texts |= {t for t in (getattr(step, "text", None) for step in steps) if isinstance(t, str)}
    return texts


def _preview_gate(request: Request) -> asyncio.Semaphore:
    """One preview render at a time per node: they share the TTS workers with the calls in progress. Kept on the
    app (created on its loop), not at module level (a module-level one would outlive the loop it was bound to)."""
    state = request.app.state
    gate: asyncio.Semaphore | None = getattr(state, "prompt_preview_gate", None)
    if gate is None:
        gate = state.prompt_preview_gate = asyncio.Semaphore(1)
    return gate


@router.get("/api/v1/editor/prompts/audio", summary="A prompt as the line says it: WAV, 8 kHz, the configured voice",
            response_class=Response, responses={200: {"content": {"audio/wav": {}}}})
async def prompt_audio(request: Request, text: str = Query(..., min_length=1, max_length=MAX_PROMPT)) -> Response:
    """Placeholders are filled as in `preview`. A text of the flows in force comes from the prompt cache (rendered
    once per text and voice), so listening to it also warms the cache the line plays it from; any other text (a
    prompt being edited) is rendered for this answer only: the persistent cache holds what the line says, and a
    text anyone with the editors can type would otherwise fill its disk and push the line's prompts out of it."""
    rt = services_of(request)
    _, doc = await rt.flows.current()
    spoken, _ = fill(text, await placeholder_values(rt, doc))
    if not spoken.strip():
        raise InvalidInput("nothing to say", [{"loc": "text", "reason": "empty after filling placeholders"}])
    from core.audio import RATE

    speech = rt.speech
    try:
        if text in _flow_texts(doc):
            frames = await speech.prompt(spoken)
        else:
            known = speech.cache.peek(spoken) if speech.cfg.prompt_cache else None  # memory only, no disk
            if known is not None:
                frames = known
            else:
                async with _preview_gate(request):
                    frames = [f async for f in speech.synth_uncached(spoken)]
    except OSError as exc:
        raise Unavailable("the voice could not render this text", {"reason": str(exc)}) from None
    pcm = b"".join(frames)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    duration = len(pcm) / 2 / RATE
    return Response(buf.getvalue(), media_type="audio/wav",
                    headers={"X-Duration-S": f"{duration:.2f}", "Cache-Control": "private, max-age=300"})


# ---- versions side by side ------------------------------------------------------------------------------

DiffSection = Literal["flows", "prompts", "routing", "calendar"]


async def _version_doc(rt: Services, section: DiffSection, version: int) -> dict[str, Any]:
    if section in ("flows", "prompts"):
        doc = await rt.flows.get(version)
        if section == "prompts":
            return {"prompts": doc.prompts, "labels": doc.labels}
        return _as_written(doc) if version == 0 else doc.model_dump(mode="json", exclude_none=True)
    if section == "routing":
        cfg = await rt.router.version(version)
        return cfg.model_dump(mode="json", exclude_unset=version == 0)
    cal = await rt.calendars.section.get(version)
    return cal.model_dump(mode="json", exclude_unset=version == 0)


async def _version_list(rt: Services, section: DiffSection) -> list[VersionInfo]:
    if section in ("flows", "prompts"):
        return await rt.flows.versions()
    if section == "routing":
        return await rt.router.versions()
    return await rt.calendars.section.versions()


def _yaml_lines(doc: dict[str, Any]) -> list[str]:
    text: str = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)
    return text.splitlines()


@router.get("/api/v1/admin/versions/{section}", summary="The versions of an editable section (who, when, note)")
async def section_versions(section: DiffSection, request: Request) -> dict[str, Any]:
    versions = await _version_list(services_of(request), section)
    return {"section": section, "versions": [v.model_dump(mode="json") for v in versions]}


@router.get("/api/v1/admin/versions/{section}/diff", summary="Two versions side by side, line by line (YAML)")
async def section_diff(section: DiffSection, request: Request, a: int = Query(..., ge=0),
                       b: int = Query(..., ge=0)) -> dict[str, Any]:
    rt = services_of(request)
    infos = {v.version: v for v in await _version_list(rt, section)}
    for v in (a, b):
        if v not in infos:
            raise NotFound(f"{section} has no version {v}", {"version": v})
    left, right = _yaml_lines(await _version_doc(rt, section, a)), _yaml_lines(await _version_doc(rt, section, b))
    rows: list[dict[str, Any]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, left, right, autojunk=False).get_opcodes():
        for k in range(max(i2 - i1, j2 - j1)):
            li, rj = i1 + k, j1 + k
            rows.append({"op": op, "a_line": li + 1 if li < i2 else None, "a": left[li] if li < i2 else None,
                         "b_line": rj + 1 if rj < j2 else None, "b": right[rj] if rj < j2 else None})
    changed = sum(1 for r in rows if r["op"] != "equal")
    return {"section": section, "a": infos[a].model_dump(mode="json"), "b": infos[b].model_dump(mode="json"),
            "changed": changed, "rows": rows}


# ---- drafts: a supervisor proposes, an admin publishes ---------------------------------------------------

DraftSection = Literal["ivr", "routing"]


class DraftBody(BaseModel):
    document: dict[str, Any]
    note: str = Field("", max_length=500)


async def _validate_section(rt: Services, section: DraftSection, document: dict[str, Any]) -> None:
    from desk_api.routes.routing import checked_routing

    if section == "ivr":
        checked_flows(rt, document)
    else:
        await checked_routing(rt, document)


@router.post("/api/v1/editor/drafts/{section}", summary="Propose a draft (validated, not in force until an admin publishes it)")
async def propose_draft(section: DraftSection, body: DraftBody, request: Request,
                        actor: str = Depends(actor_of)) -> dict[str, Any]:
    rt = services_of(request)
    await _validate_section(rt, section, body.document)
    base = (await rt.flows.current())[0] if section == "ivr" else (await rt.router.config())[0]
    draft_id = uuid.uuid4().hex[:12]
    draft: dict[str, Any] = {"id": draft_id, "section": section, "author": actor, "at": rt.clock.now().isoformat(),
             "note": body.note, "base_version": base, "document": body.document}
    if not await rt.store.put_draft(section, draft_id, json.dumps(draft, ensure_ascii=False)):
        raise InvalidInput("too many drafts wait for an admin; publish or drop some first",
                           [{"loc": "section", "reason": "draft limit reached"}])
    return {k: v for k, v in draft.items() if k != "document"}


@router.get("/api/v1/editor/drafts/{section}", summary="Drafts waiting for an admin, oldest first")
async def list_drafts(section: DraftSection, request: Request) -> dict[str, Any]:
    raws = await services_of(request).store.drafts(section)
    drafts = sorted((json.loads(r) for r in raws), key=lambda d: str(d.get("at", "")))
    return {"drafts": [{k: v for k, v in d.items() if k != "document"} for d in drafts]}


async def _draft(rt: Services, section: DraftSection, draft_id: str) -> dict[str, Any]:
    raw = await rt.store.draft(section, draft_id)
    if raw is None:
        raise NotFound(f"no draft {draft_id!r} of {section}", {"draft": draft_id})
    out: dict[str, Any] = json.loads(raw)
    return out


@router.get("/api/v1/editor/drafts/{section}/{draft_id}", summary="One draft with its document")
async def get_draft(section: DraftSection, draft_id: str, request: Request) -> dict[str, Any]:
    return await _draft(services_of(request), section, draft_id)


@router.post("/api/v1/admin/drafts/{section}/{draft_id}/publish", summary="Put a draft in force as a new version")
async def publish_draft(section: DraftSection, draft_id: str, request: Request,
                        force: bool = Query(False, description="publish even though another version was saved after "
                                                               "the one the draft was made from (it is replaced)"),
                        confirm_worse: bool = Query(False, description="publish a routing draft even though the dev "
                                                                       "set gets worse (the intents editor asks first)"),
                        actor: str = Depends(actor_of)) -> dict[str, Any]:
    """Checked as the editors check it: the document (422), the dev set for routing (409 dev-set-worse unless
    confirm_worse), and the version it was made from: 409 draft-outdated when another one is current now, unless
    force (a draft is a whole document: publishing it replaces whatever was saved since)."""
    from desk_api.routes.routing import checked_routing

    rt = services_of(request)
    draft = await _draft(rt, section, draft_id)
    note = f"borrador de {draft['author']}" + (f": {draft['note']}" if draft.get("note") else "")
    sec: VersionedSection[Any] = rt.flows if section == "ivr" else rt.router.section
    current, _ = await sec.fresh()
    base = int(draft.get("base_version") or 0)
    if current != base and not force:
        raise Conflict(f"El borrador se hizo sobre la versión {base} y ahora está en uso la {current}: publicarlo "
                       f"desharía los cambios guardados después. Ábralo en el editor sobre la versión actual, o "
                       f"publíquelo de todos modos.", {"base_version": base, "current": current},
                       error_id="draft-outdated")
    check: dict[str, Any] | None = None
    if section == "ivr":
        value: Any = checked_flows(rt, draft["document"])
    else:
        value, compiled = await checked_routing(rt, draft["document"])
        check = await rt.router.check_change(compiled)
        if check["worse"] and not confirm_worse:
            raise Conflict("El borrador empeora el acierto con el conjunto de frases; confirme para publicarlo igualmente",
                           {"check": check}, error_id="dev-set-worse")
    version = await sec.put(value, actor, note=note, base=current)  # 409 if yet another one got in meanwhile
    await rt.store.delete_draft(section, draft_id)
    return {"version": version, "published": draft_id, "author": draft["author"], "replaced": current,
            "check": check}


@router.delete("/api/v1/admin/drafts/{section}/{draft_id}", summary="Drop a draft")
async def drop_draft(section: DraftSection, draft_id: str, request: Request) -> dict[str, Any]:
    if not await services_of(request).store.delete_draft(section, draft_id):
        raise NotFound(f"no draft {draft_id!r} of {section}", {"draft": draft_id})
    return {"dropped": draft_id}
