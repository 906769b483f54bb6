"""Holidays imported from iCalendar: preview (a file or a URL), then apply the reviewed list as one new version.

    POST /api/v1/admin/calendars/{name}/ical/preview   body: the .ics file (text/calendar, or multipart field
                                                       `file`), or JSON {"url": "https://...", "years": 2}
    POST /api/v1/admin/calendars/{name}/ical/apply     JSON {"items": [{"date", "name"}...], "source": "..."}

Admins only (the /api/v1/admin/ guard); the version records the authenticated principal. Apply is an ordinary
calendar version, undone with POST /api/v1/admin/calendars/rollback like any other edit.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from config.calendar import DatedHoliday
from core.errors import InvalidInput
from desk_api.auth import actor_of
from desk_api.deps import services_of
from routing.ical_import import MAX_BYTES, IcalItem, IcalPreview

router = APIRouter(prefix="/api/v1/admin/calendars", tags=["admin: calendars"])


class UrlIn(BaseModel):
    url: str = Field(..., min_length=1, max_length=2000)
    years: int = Field(2, ge=1, le=5)


class ApplyIn(BaseModel):
    items: list[DatedHoliday] = Field(..., max_length=2000)
    source: str = Field("iCal", max_length=300)


class ApplyOut(BaseModel):
    version: int
    added: list[IcalItem]
    not_added: list[IcalItem]


async def _body(request: Request) -> bytes:
    """The request body, refused past MAX_BYTES (+ room for multipart framing) without reading the rest."""
    limit = MAX_BYTES + 64 * 1024
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InvalidInput(f"el fichero supera {MAX_BYTES // 1024} KiB", [{"loc": "file", "reason": "too large"}])
    out = bytearray()
    async for chunk in request.stream():
        out += chunk
        if len(out) > limit:
            raise InvalidInput(f"el fichero supera {MAX_BYTES // 1024} KiB", [{"loc": "file", "reason": "too large"}])
    return bytes(out)


@router.post("/{name}/ical/preview", response_model=IcalPreview)
async def ical_preview(request: Request, name: str,
                       years: int = Query(2, ge=1, le=5, description="years expanded from 1 January of this year")
                       ) -> IcalPreview:
    """What the import would do, date by date (new, exists, conflict with a special day, skipped); stores nothing."""
    cals = services_of(request).calendars
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            body = UrlIn.model_validate_json(await _body(request))
        except ValueError as exc:
            raise InvalidInput("se esperaba {\"url\": \"https://...\"}", [{"loc": "body", "reason": str(exc)[:200]}]) from None
        return await cals.ical_preview_url(name, body.url, body.years)
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=5, max_part_size=MAX_BYTES + 1)
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise InvalidInput("falta el fichero (campo «file»)", [{"loc": "file", "reason": "missing"}])
            data = await upload.read(MAX_BYTES + 1)
            filename = upload.filename or "fichero"
        finally:
            await form.close()
        return await cals.ical_preview(name, data, filename, years)
    return await cals.ical_preview(name, await _body(request), "fichero", years)


@router.post("/{name}/ical/apply", response_model=ApplyOut)
async def ical_apply(request: Request, name: str, body: ApplyIn, actor: str = Depends(actor_of)) -> ApplyOut:
    """Add the reviewed holidays as one new calendar version; those no longer new come back in `not_added`."""
    version, _, outcome = await services_of(request).calendars.ical_apply(name, body.items, actor, body.source)
    return ApplyOut(version=version, added=[i for i in outcome if i.status == "new"],
                    not_added=[i for i in outcome if i.status != "new"])
