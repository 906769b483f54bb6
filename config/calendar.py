"""Calendars: weekly hours, seasonal hours, holidays, closures and special days."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
import zoneinfo
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, field_validator, model_validator

from config.base import Strict

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")
_MMDD = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Interval(Strict):
    start: str = Field(..., description="HH:MM local time")
    end: str = Field(..., description="HH:MM local time, after start; 24:00 allowed")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"{v!r} is not a time HH:MM")
        return v

    @model_validator(mode="after")
    def _order(self) -> Interval:
        if _minutes(self.end) <= _minutes(self.start):
            raise ValueError(f"interval ends ({self.end}) before it starts ({self.start})")
        return self

    @property
    def start_min(self) -> int:
        return _minutes(self.start)

    @property
    def end_min(self) -> int:
        return _minutes(self.end)


def check_intervals(intervals: list[Interval], where: str) -> list[Interval]:
    ordered = sorted(intervals, key=lambda i: i.start_min)
    for a, b in itertools.pairwise(ordered):
        if b.start_min < a.end_min:
            raise ValueError(f"{where}: intervals {a.start}-{a.end} and {b.start}-{b.end} overlap")
    return ordered


class WeeklyHours(Strict):
    mon: list[Interval] = Field(default_factory=list)
    tue: list[Interval] = Field(default_factory=list)
    wed: list[Interval] = Field(default_factory=list)
    thu: list[Interval] = Field(default_factory=list)
    fri: list[Interval] = Field(default_factory=list)
    sat: list[Interval] = Field(default_factory=list)
    sun: list[Interval] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_overlap(self) -> WeeklyHours:
        for day in WEEKDAYS:
            setattr(self, day, check_intervals(getattr(self, day), day))
        return self

    def for_weekday(self, weekday: int) -> list[Interval]:
        return list(getattr(self, WEEKDAYS[weekday]))


class Season(Strict):
    """Hours that replace the weekly ones between two dates (MM-DD, both included) every year."""

    name: str
    start: str = Field(..., description="MM-DD")
    end: str = Field(..., description="MM-DD, may wrap past new year")
    weekly: WeeklyHours

    @field_validator("start", "end")
    @classmethod
    def _mmdd(cls, v: str) -> str:
        if not _MMDD.match(v):
            raise ValueError(f"{v!r} is not a date MM-DD")
        try:
            dt.date(2000, int(v[:2]), int(v[3:]))  # a leap year, so 02-29 is allowed
        except ValueError:
            raise ValueError(f"{v!r} is not a day of the year") from None
        return v

    @property
    def start_md(self) -> tuple[int, int]:
        return int(self.start[:2]), int(self.start[3:])

    @property
    def end_md(self) -> tuple[int, int]:
        return int(self.end[:2]), int(self.end[3:])

    def covers(self, day: dt.date) -> bool:
        """Whether `day` falls in this season (both ends included; a season may wrap past new year)."""
        md = (day.month, day.day)
        a, b = self.start_md, self.end_md
        return a <= md <= b if a <= b else (md >= a or md <= b)


class DatedHoliday(Strict):
    date: dt.date
    name: str


class Closure(Strict):
    """A one-off closure: a whole day (`date`) or a span of instants (`start`..`end`, local time)."""

    date: dt.date | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    reason: str = "cierre"

    @model_validator(mode="after")
    def _shape(self) -> Closure:
        if self.date is None and (self.start is None or self.end is None):
            raise ValueError("a closure needs either date or both start and end")
        if self.date is not None and (self.start is not None or self.end is not None):
            raise ValueError("a closure has either date or start/end, not both")
        if self.start is not None and self.end is not None:
            if (self.start.tzinfo is None) != (self.end.tzinfo is None):
                raise ValueError("closure start and end must both carry a UTC offset or both be local time")
            if self.end <= self.start:
                raise ValueError(f"closure ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()})")
        return self

    @property
    def key(self) -> str:
        """How the admin API names this closure: its date, or its start as written."""
        return self.date.isoformat() if self.date is not None else self.start.isoformat()  # type: ignore[union-attr]


class SpecialDay(Strict):
    """Hours for one date that replace whatever would apply (e.g. 24 December, mornings only)."""

    date: dt.date
    intervals: list[Interval] = Field(default_factory=list)
    reason: str = "horario especial"

    @model_validator(mode="after")
    def _no_overlap(self) -> SpecialDay:
        self.intervals = check_intervals(self.intervals, str(self.date))
        return self


class PublicHolidays(Strict):
    enabled: bool = True
    country: str = "ES"
    subdivision: str | None = "EX"
    language: str | None = "es"


class CalendarModel(Strict):
    timezone: str = "Europe/Madrid"
    weekly: WeeklyHours = Field(default_factory=WeeklyHours)
    seasons: list[Season] = Field(default_factory=list)
    public_holidays: PublicHolidays = Field(default_factory=PublicHolidays)
    local_holidays: list[DatedHoliday] = Field(default_factory=list)
    closures: list[Closure] = Field(default_factory=list)
    special_days: list[SpecialDay] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown timezone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CalendarModel:
        if self.public_holidays.enabled:
            problem = _holiday_set_problem(self.public_holidays.country, self.public_holidays.subdivision)
            if problem:
                raise ValueError(problem)
        _no_duplicates([d.date for d in self.special_days], "special_days")
        _no_duplicates([h.date for h in self.local_holidays], "local_holidays")
        _no_duplicates([c.date for c in self.closures if c.date is not None], "closures")
        names = [s.name for s in self.seasons]
        _no_duplicates(names, "seasons (names)")
        for a, b in itertools.combinations(self.seasons, 2):
            day = next((d for d in _LEAP_YEAR_DAYS if a.covers(d) and b.covers(d)), None)
            if day is not None:
                raise ValueError(f"seasons {a.name!r} and {b.name!r} overlap (both cover {day:%m-%d})")
        tz = zoneinfo.ZoneInfo(self.timezone)
        spans = sorted(
            ((c.start if c.start.tzinfo else c.start.replace(tzinfo=tz), c.end if c.end.tzinfo else c.end.replace(tzinfo=tz), c)
             for c in self.closures if c.start is not None and c.end is not None),
            key=lambda t: t[0],
        )
        for (_, a_end, ca), (b_start, _, cb) in itertools.pairwise(spans):
            if b_start < a_end:
                raise ValueError(f"closures {ca.key} and {cb.key} overlap")
        return self


_LEAP_YEAR_DAYS = [dt.date(2000, 1, 1) + dt.timedelta(days=i) for i in range(366)]
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_RESERVED_NAMES = {"versions", "rollback"}


def _no_duplicates(values: Sequence[object], where: str) -> None:
    seen: set[object] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{where} lists {v} twice")
        seen.add(v)


@functools.lru_cache(maxsize=64)
def _holiday_set_problem(country: str, subdivision: str | None) -> str | None:
    import holidays

    try:
        holidays.country_holidays(country, subdiv=subdivision)
    except NotImplementedError as exc:  # unknown country or subdivision
        return f"public holidays: {exc}"
    except Exception as exc:  # the package raises ValueError for some inputs, by version
        return f"public holidays: {exc}"
    return None


class CalendarsConfig(Strict):
    default: str = "line"
    calendars: dict[str, CalendarModel] = Field(default_factory=lambda: {"line": CalendarModel()})

    @model_validator(mode="after")
    def _default_exists(self) -> CalendarsConfig:
        for name in self.calendars:
            if not _NAME.match(name) or name in _RESERVED_NAMES:
                raise ValueError(f"calendar name {name!r} must be lowercase letters, digits, - or _ (not versions, rollback)")
        if self.default not in self.calendars:
            raise ValueError(f"default calendar {self.default!r} is not defined in calendars")
        return self
