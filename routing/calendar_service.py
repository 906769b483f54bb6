"""`runtime.calendars`: the compiled calendars, their admin edits (validated, versioned in Redis) and rollback.

The whole `calendar` config section (every named calendar) is one versioned document, so a version
or a rollback always covers all calendars at once. An edit is read-modify-write under a Redis lock,
so two admins editing at the same time cannot lose each other's change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import LockError

from config.calendar import CalendarModel, CalendarsConfig, Closure, DatedHoliday, Season, SpecialDay, WeeklyHours
from core.errors import AtiendeError, InvalidInput, NotFound, Unavailable
from core.store import REDIS_ERRORS
from core.versioned import VersionedSection, VersionInfo
from routing.calendar import Calendar, public_holidays
from routing.ical_import import IcalFetcher, IcalItem, IcalPreview, Occurrence, classify, parse, window

if TYPE_CHECKING:
    from config.models import Settings
    from core.clock import Clock
    from core.store import Store

SECTION = "calendar"
_EDIT_LOCK = "cfg:calendar:edit"
Doc = dict[str, Any]  # a calendar document as JSON data


class CalendarService:
    def __init__(self, settings: Callable[[], Settings], store: Store | None, clock: Clock,
                 ical_fetcher: IcalFetcher | None = None) -> None:
        """`settings` reads the files' configuration as it is now (it changes on SIGHUP); without a store
        only the `*_offline` queries work. `ical_fetcher` downloads iCal URLs (default: public addresses only)."""
        self._settings = settings
        self._ical_fetcher = ical_fetcher or IcalFetcher()
        self._store = store
        self._clock = clock
        self._section: VersionedSection[CalendarsConfig] | None = None
        # name -> (the model it was compiled from, the calendar); a new model object means recompile.
        self._compiled: dict[str, tuple[CalendarModel, Calendar]] = {}

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("this command runs without a store")
        return self._store

    @property
    def section(self) -> VersionedSection[CalendarsConfig]:
        if self._section is None:
            self._section = VersionedSection(self.store, self._clock, SECTION, CalendarsConfig,
                                             lambda: self._settings().calendar)
        return self._section

    def invalidate(self) -> None:
        """The files changed: the next query re-reads the current version."""
        if self._section is not None:
            self._section.invalidate()

    # ---- queries -------------------------------------------------------------------------------

    def _compile(self, cfg: CalendarsConfig, name: str | None, version: int) -> Calendar:
        key = name or cfg.default
        model = cfg.calendars.get(key)
        if model is None:
            raise NotFound(f"no calendar named {key!r}", {"calendar": key, "known": sorted(cfg.calendars)})
        hit = self._compiled.get(key)
        if hit is not None and hit[0] is model and hit[1].version == version:
            return hit[1]
        cal = Calendar(key, model, version)
        self._compiled[key] = (model, cal)
        return cal

    async def get(self, name: str | None = None) -> Calendar:
        """The current version (admin edits in Redis, else the config files); None = the default calendar (the line)."""
        version, cfg = await self.section.current()
        return self._compile(cfg, name, version)

    def get_offline(self, name: str | None = None) -> Calendar:
        """From the config files only (CLI commands that run without Redis)."""
        return self._compile(self._settings().calendar, name, 0)

    async def config(self) -> tuple[int, CalendarsConfig]:
        return await self.section.current()

    # ---- admin edits ---------------------------------------------------------------------------

    async def edit(self, change: Callable[[Doc], None], actor: str, note: str) -> tuple[int, CalendarsConfig]:
        """Apply `change` to the current document (as JSON data), validate the result and store it as a new version.

        `change` raises InvalidInput/NotFound to refuse; a result that does not validate is refused with 422
        and nothing is stored, so the previous version keeps serving.
        """
        try:
            lock = self.store.redis.lock(self.store.keys.lock(_EDIT_LOCK), timeout=10, blocking_timeout=5)
            async with lock:
                self.section.invalidate()  # read the latest version, not a second-old cached one
                _, current = await self.section.current()
                draft: Doc = current.model_dump(mode="json")
                change(draft)
                try:
                    value = self.section.validate(draft)
                except InvalidInput as exc:  # name the first problem in the message, not just "invalid calendar"
                    first = exc.details[0] if isinstance(exc.details, list) and exc.details else {}
                    where = f" at {first['loc']}" if first.get("loc") else ""
                    reason = f"invalid calendar{where}: {first.get('reason', exc.message)}" if first else exc.message
                    raise InvalidInput(reason, exc.details) from None
                version = await self.section.put(value, actor, note)
        except AtiendeError:
            raise
        except (*REDIS_ERRORS, LockError) as exc:
            raise Unavailable("the store is not reachable; the change was not saved", {"reason": str(exc)}) from None
        return version, value

    @staticmethod
    def _calendar(doc: Doc, name: str) -> Doc:
        cal: Doc | None = doc["calendars"].get(name)
        if cal is None:
            raise NotFound(f"no calendar named {name!r}", {"calendar": name, "known": sorted(doc["calendars"])})
        return cal

    async def replace_all(self, cfg: CalendarsConfig, actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            doc.clear()
            doc.update(cfg.model_dump(mode="json"))

        return await self.edit(change, actor, "replace all calendars")

    async def put_calendar(self, name: str, model: CalendarModel, actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            doc["calendars"][name] = model.model_dump(mode="json")

        return await self.edit(change, actor, f"{name}: replace calendar")

    async def patch_calendar(self, name: str, fields: Doc, actor: str) -> tuple[int, CalendarsConfig]:
        """Replace some top-level fields (timezone, public_holidays, weekly...) of one calendar."""
        unknown = sorted(set(fields) - set(CalendarModel.model_fields))
        if unknown:
            raise InvalidInput(f"unknown calendar fields: {', '.join(unknown)}",
                               [{"loc": k, "reason": "unknown field"} for k in unknown])

        def change(doc: Doc) -> None:
            self._calendar(doc, name).update(fields)

        return await self.edit(change, actor, f"{name}: change {', '.join(sorted(fields))}")

    async def delete_calendar(self, name: str, actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            self._calendar(doc, name)
            if name == doc["default"]:
                raise InvalidInput(f"{name!r} is the default calendar and cannot be removed",
                                   [{"loc": "name", "reason": "default calendar"}])
            del doc["calendars"][name]

        return await self.edit(change, actor, f"{name}: remove calendar")

    async def set_weekly(self, name: str, weekly: WeeklyHours, actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            self._calendar(doc, name)["weekly"] = weekly.model_dump(mode="json")

        return await self.edit(change, actor, f"{name}: replace weekly hours")

    async def set_seasons(self, name: str, seasons: list[Season], actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            self._calendar(doc, name)["seasons"] = [s.model_dump(mode="json") for s in seasons]

        return await self.edit(change, actor, f"{name}: replace seasons")

    def _remove(self, doc: Doc, name: str, field: str, match: Callable[[Doc], bool], what: str) -> None:
        cal = self._calendar(doc, name)
        kept = [item for item in cal[field] if not match(item)]
        if len(kept) == len(cal[field]):
            raise NotFound(f"calendar {name!r} has no {what}", {"calendar": name, "field": field})
        cal[field] = kept

    async def add_holiday(self, name: str, holiday: DatedHoliday, actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            self._calendar(doc, name)["local_holidays"].append(holiday.model_dump(mode="json"))

        return await self.edit(change, actor, f"{name}: add holiday {holiday.date} {holiday.name}")

    async def remove_holiday(self, name: str, day: dt.date, actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            self._remove(doc, name, "local_holidays", lambda h: h["date"] == day.isoformat(), f"local holiday on {day}")

        return await self.edit(change, actor, f"{name}: remove holiday {day}")

    async def add_closure(self, name: str, closure: Closure, actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            self._calendar(doc, name)["closures"].append(closure.model_dump(mode="json"))

        return await self.edit(change, actor, f"{name}: add closure {closure.key} ({closure.reason})")

    async def remove_closure(self, name: str, key: str, actor: str) -> tuple[int, CalendarsConfig]:
        """`key` is the closure's date, or its start as an ISO instant, written as it was added."""
        try:
            when: dt.date | dt.datetime = dt.datetime.fromisoformat(key) if "T" in key else dt.date.fromisoformat(key)
        except ValueError:
            raise InvalidInput(f"{key!r} is neither a date nor an ISO instant",
                               [{"loc": "closure", "reason": "not a date"}]) from None

        def match(item: Doc) -> bool:
            c = Closure.model_validate(item)
            if isinstance(when, dt.datetime):
                return c.start is not None and (c.start.tzinfo is None) == (when.tzinfo is None) and c.start == when
            return c.date == when

        def change(doc: Doc) -> None:
            self._remove(doc, name, "closures", match, f"closure {key}")

        return await self.edit(change, actor, f"{name}: remove closure {key}")

    async def add_special_day(self, name: str, special: SpecialDay, actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            self._calendar(doc, name)["special_days"].append(special.model_dump(mode="json"))

        return await self.edit(change, actor, f"{name}: special hours on {special.date}")

    async def remove_special_day(self, name: str, day: dt.date, actor: str) -> tuple[int, CalendarsConfig]:
        def change(doc: Doc) -> None:
            self._remove(doc, name, "special_days", lambda s: s["date"] == day.isoformat(), f"special hours on {day}")

        return await self.edit(change, actor, f"{name}: remove special hours on {day}")

    # ---- iCalendar import: preview, then one new version -----------------------------------------------------

    @staticmethod
    def _indexes(cal: Doc) -> tuple[dict[dt.date, str], dict[dt.date, str], dict[dt.date, str]]:
        holidays = {dt.date.fromisoformat(h["date"]): h["name"] for h in cal["local_holidays"]}
        special = {dt.date.fromisoformat(s["date"]): s["reason"] for s in cal["special_days"]}
        closed = {dt.date.fromisoformat(c["date"]): c["reason"] for c in cal["closures"] if c.get("date")}
        return holidays, special, closed

    async def ical_preview(self, name: str, data: bytes, source: str, years: int = 2) -> IcalPreview:
        """What importing this iCalendar file would do to calendar `name`, date by date; nothing is stored."""
        start, end = window(self._clock.now().date(), years)
        occurrences = await asyncio.to_thread(parse, data, start, end)  # up to a second of CPU: off the loop
        _, cfg = await self.section.current()
        cal = self._calendar(cfg.model_dump(mode="json"), name)
        return IcalPreview(calendar=name, source=source[:300], start=start, end=end,
                           items=classify(occurrences, *self._indexes(cal), public=self._public(cfg, name)))

    @staticmethod
    def _public(cfg: CalendarsConfig, name: str) -> Callable[[dt.date], str | None]:
        """The calendar's national and regional holidays (the `holidays` package), by date."""
        ph = cfg.calendars[name].public_holidays

        def lookup(day: dt.date) -> str | None:
            if not ph.enabled:
                return None
            return public_holidays(ph.country, ph.subdivision, ph.language, day.year).get(day)

        return lookup

    async def ical_preview_url(self, name: str, url: str, years: int = 2) -> IcalPreview:
        self._calendar((await self.section.current())[1].model_dump(mode="json"), name)  # 404 before any download
        return await self.ical_preview(name, await self._ical_fetcher.fetch(url), url, years)

    async def ical_apply(self, name: str, items: list[DatedHoliday], actor: str,
                         source: str) -> tuple[int, CalendarsConfig, list[IcalItem]]:
        """Add the reviewed holidays as ONE new version (undone with `rollback`). Each is classified again against
        the calendar as it is inside the edit lock, so a holiday or special day added since the preview wins:
        only the still-new ones are added, the rest come back with their status. Nothing new: 422, no version."""
        outcome: list[IcalItem] = []

        def change(doc: Doc) -> None:
            cal = self._calendar(doc, name)
            model = CalendarsConfig.model_validate(doc)
            checked = classify([Occurrence(date=i.date, name=i.name) for i in items], *self._indexes(cal),
                               public=self._public(model, name))
            outcome[:] = checked
            fresh = [c for c in checked if c.status == "new"]
            if not fresh:
                raise InvalidInput("no hay festivos nuevos que importar", [{"loc": "items", "reason": "nothing new"}],
                                   error_id="nothing-to-import")
            cal["local_holidays"].extend({"date": c.date.isoformat(), "name": c.name} for c in fresh)
            cal["local_holidays"].sort(key=lambda h: h["date"])

        if not items:
            raise InvalidInput("no hay festivos que importar", [{"loc": "items", "reason": "empty"}],
                               error_id="nothing-to-import")
        version, cfg = await self.edit(change, actor, f"{name}: import holidays from iCal ({source[:120]})")
        return version, cfg, outcome

    # ---- versions --------------------------------------------------------------------------------

    async def versions(self) -> list[VersionInfo]:
        return await self.section.versions()

    async def version(self, version: int) -> CalendarsConfig:
        return await self.section.get(version)

    async def rollback(self, version: int, actor: str) -> tuple[int, CalendarsConfig]:
        new = await self.section.rollback(version, actor)
        _, cfg = await self.section.current()
        return new, cfg
