"""IVR resources: call records, the admin-editable flows (versions, rollback) and flow simulation.

Roles are checked by the guard (`desk_api.app.GUARDED`): records for staff, flows for admins, simulation for
supervisors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, model_validator

from desk_api.auth import actor_of
from desk_api.deps import services_of
from desk_api.schemas import RollbackRequest

router = APIRouter(tags=["ivr"])



@router.get("/api/v1/calls", summary="Call records, newest first")
async def list_calls(request: Request, since: datetime | None = None, until: datetime | None = None,
                     outcome: Literal["self_service", "queued", "transferred", "voicemail", "abandoned"] | None = None,
                     limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> dict[str, Any]:
    rt = services_of(request)
    records = await rt.calls.list(since=since, until=until, outcome=outcome, limit=limit, offset=offset)
    return {"calls": [r.model_dump(mode="json", exclude={"said", "vars"}) for r in records], "count": len(records)}


@router.get("/api/v1/calls/containment", summary="Share of self-service among calls whose intent has a self-service answer")
async def containment_report(request: Request, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    from ivr.records import containment

    rt = services_of(request)
    records = await rt.calls.list(since=since, until=until, limit=100_000)
    return containment(records, await rt.ivr.self_service_intents())


@router.get("/api/v1/calls/{call_id}", summary="One call record: path with timings, transcripts, intent, outcome")
async def get_call(call_id: str, request: Request) -> dict[str, Any]:
    rec = await services_of(request).calls.get(call_id)
    return rec.model_dump(mode="json")


# ---- admin: flows -------------------------------------------------------------------------------------


@router.get("/api/v1/admin/ivr/flows", summary="The flows in force (version and document)")
async def get_flows(request: Request) -> dict[str, Any]:
    version, doc = await services_of(request).flows.current()
    return {"version": version, "flows": doc.model_dump(mode="json", exclude_none=True)}


@router.put("/api/v1/admin/ivr/flows", summary="Store a new version of the flows (422 with the reasons if invalid)")
async def put_flows(body: dict[str, Any], request: Request, note: str = "",
                    actor: str = Depends(actor_of)) -> dict[str, Any]:
    version = await services_of(request).flows.put(body, actor=actor, note=note)
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
    version = await services_of(request).flows.rollback(body.version, actor=actor)
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


@router.post("/api/v1/simulate", summary="Run the current flows on a scripted caller; nothing is stored")
async def simulate(body: SimulateBody, request: Request) -> dict[str, Any]:
    rt = services_of(request)
    inputs: list[tuple[Any, str]] = [("say", i.say) if i.say is not None else ("dtmf", i.dtmf or "") for i in body.inputs]
    at = body.at
    if at is not None and at.tzinfo is None:
        from zoneinfo import ZoneInfo

        at = at.replace(tzinfo=ZoneInfo("Europe/Madrid"))
    session, out = await rt.ivr.simulate(inputs, at=at, channel=body.channel, dry_run=True)
    return {"outcome": session.outcome, "intent": session.intent, "calendar": session.calendar_state,
            "flows_version": session.flows_version, "ticket": session.ticket_ref,
            "messages": [m.public() for m in out], "path": [p.model_dump(mode="json") for p in session.path],
            "transcripts": [t.model_dump(mode="json") for t in session.transcripts]}
