"""Calendar over HTTP: `GET /api/v1/hours` and the admin API under `/api/v1/admin/calendars`.

Handlers stay thin: `runtime.calendars` validates, versions and applies. Every admin edit is a new
version of the whole calendar section (422 with reasons when invalid; the old version keeps serving).
The guard (desk_api/app.py) lets only admins through; the acting user recorded in each version is the
authenticated principal (`desk_api.auth.actor_of`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel

from config.calendar import CalendarModel, CalendarsConfig, Closure, DatedHoliday, Season, SpecialDay, WeeklyHours
from core.errors import InvalidInput
from core.versioned import VersionInfo
from desk_api.auth import actor_of
from desk_api.deps import services_of
from desk_api.schemas import EditResult, RollbackRequest
from routing.calendar import Calendar

router = APIRouter()
admin = APIRouter(prefix="/api/v1/admin/calendars", tags=["admin: calendars"])


class HoursView(BaseModel):
    """The same object as `atiende hours --json`, plus `holiday`, `closes_at` and a Spanish sentence for people."""

    at: str
    open: bool
    next_open: str | None
    rule: str
    calendar: str
    holiday: str | None = None
    closes_at: str | None = None
    text: str = ""  # "Ahora estamos cerrados. Volvemos a atender mañana a las 8:30."


class CalendarView(BaseModel):
    name: str
    version: int
    default: bool
    calendar: CalendarModel
    hours_text: str  # Spanish summary, as prompts say it


class CalendarsView(BaseModel):
    version: int
    default: str
    calendars: dict[str, CalendarModel]


class CalendarEditResult(EditResult):
    calendar: CalendarView | None = None


def _view(cal: Calendar, default: str) -> CalendarView:
    return CalendarView(name=cal.name, version=cal.version, default=cal.name == default, calendar=cal.model,
                        hours_text=cal.describe_hours())


async def _result(request: Request, name: str | None, version: int) -> CalendarEditResult:
    cals = services_of(request).calendars
    if name is None:
        return CalendarEditResult(version=version)
    _, cfg = await cals.config()
    return CalendarEditResult(version=version, calendar=_view(await cals.get(name), cfg.default))


# ---- queries ------------------------------------------------------------------------------------


@router.get("/api/v1/hours", response_model=HoursView, tags=["calendar"])
async def hours(
    request: Request,
    at: str | None = Query(None, description="ISO-8601 instant; without offset it is the calendar's local time; default now"),
    calendar: str | None = Query(None, description="calendar name; default the line's"),
) -> HoursView:
    rt = services_of(request)
    cal = await rt.calendars.get(calendar)
    try:
        when = dt.datetime.fromisoformat(at.strip()) if at else rt.clock.now()
        return HoursView.model_validate({**cal.status(when).full(), "text": cal.describe_status(when)})
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"invalid instant: {exc}", [{"loc": "query.at", "reason": str(exc)}]) from None


@router.get("/api/v1/hours/{day}", tags=["calendar"])
async def day_hours(request: Request, day: dt.date, calendar: str | None = None) -> dict[str, Any]:
    """One date's opening intervals and their Spanish description."""
    cal = await services_of(request).calendars.get(calendar)
    try:
        intervals = cal.intervals_on(day)
        text = cal.describe_day(day)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"invalid date: {exc}", [{"loc": "path.day", "reason": str(exc)}]) from None
    return {"calendar": cal.name, "date": day.isoformat(), "text": text, "rule": cal.plan(day).rule,
            "intervals": [{"start": s.isoformat(), "end": e.isoformat()} for s, e in intervals]}


# ---- admin: whole section, versions ------------------------------------------------------------


@admin.get("", response_model=CalendarsView)
async def list_calendars(request: Request) -> CalendarsView:
    version, cfg = await services_of(request).calendars.config()
    return CalendarsView(version=version, default=cfg.default, calendars=cfg.calendars)


@admin.put("", response_model=CalendarEditResult)
async def replace_all(request: Request, body: CalendarsConfig, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.replace_all(body, actor)
    return await _result(request, None, version)


@admin.get("/versions", response_model=list[VersionInfo])
async def versions(request: Request) -> list[VersionInfo]:
    return await services_of(request).calendars.versions()


@admin.get("/versions/{version}", response_model=CalendarsConfig)
async def get_version(request: Request, version: int) -> CalendarsConfig:
    return await services_of(request).calendars.version(version)


@admin.post("/rollback", response_model=CalendarEditResult)
async def rollback(request: Request, body: RollbackRequest, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.rollback(body.version, actor)
    return await _result(request, None, version)


# ---- admin: one calendar -----------------------------------------------------------------------


@admin.get("/{name}", response_model=CalendarView)
async def get_calendar(request: Request, name: str) -> CalendarView:
    cals = services_of(request).calendars
    _, cfg = await cals.config()
    return _view(await cals.get(name), cfg.default)


@admin.put("/{name}", response_model=CalendarEditResult)
async def put_calendar(request: Request, name: str, body: CalendarModel, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.put_calendar(name, body, actor)
    return await _result(request, name, version)


@admin.patch("/{name}", response_model=CalendarEditResult)
async def patch_calendar(request: Request, name: str, body: dict[str, Any] = Body(..., examples=[{"timezone": "UTC"}]),
                         actor: str = Depends(actor_of)) -> CalendarEditResult:
    """Replace some top-level fields of one calendar (timezone, public_holidays, weekly, seasons...)."""
    version, _ = await services_of(request).calendars.patch_calendar(name, body, actor)
    return await _result(request, name, version)


@admin.delete("/{name}", response_model=CalendarEditResult)
async def delete_calendar(request: Request, name: str, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.delete_calendar(name, actor)
    return await _result(request, None, version)


@admin.put("/{name}/weekly", response_model=CalendarEditResult)
async def put_weekly(request: Request, name: str, body: WeeklyHours, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.set_weekly(name, body, actor)
    return await _result(request, name, version)


@admin.put("/{name}/seasons", response_model=CalendarEditResult)
async def put_seasons(request: Request, name: str, body: list[Season], actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.set_seasons(name, body, actor)
    return await _result(request, name, version)


@admin.post("/{name}/holidays", response_model=CalendarEditResult, status_code=201)
async def add_holiday(request: Request, name: str, body: DatedHoliday, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.add_holiday(name, body, actor)
    return await _result(request, name, version)


@admin.delete("/{name}/holidays/{day}", response_model=CalendarEditResult)
async def remove_holiday(request: Request, name: str, day: dt.date, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.remove_holiday(name, day, actor)
    return await _result(request, name, version)


@admin.post("/{name}/closures", response_model=CalendarEditResult, status_code=201)
async def add_closure(request: Request, name: str, body: Closure, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.add_closure(name, body, actor)
    return await _result(request, name, version)


@admin.delete("/{name}/closures/{key}", response_model=CalendarEditResult)
async def remove_closure(request: Request, name: str, key: str, actor: str = Depends(actor_of)) -> CalendarEditResult:
    """`key`: the closure's date (2026-12-24), or its start as it was added (2026-12-24T12:00:00)."""
    version, _ = await services_of(request).calendars.remove_closure(name, key, actor)
    return await _result(request, name, version)


@admin.post("/{name}/special-days", response_model=CalendarEditResult, status_code=201)
async def add_special_day(request: Request, name: str, body: SpecialDay, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.add_special_day(name, body, actor)
    return await _result(request, name, version)


@admin.delete("/{name}/special-days/{day}", response_model=CalendarEditResult)
async def remove_special_day(request: Request, name: str, day: dt.date, actor: str = Depends(actor_of)) -> CalendarEditResult:
    version, _ = await services_of(request).calendars.remove_special_day(name, day, actor)
    return await _result(request, name, version)


router.include_router(admin)
