"""Calendars: weekly hours, seasonal hours, holidays, closures and special days."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import zoneinfo
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
        return v


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
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("closure ends before it starts")
        return self


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
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _holidays_known(self) -> CalendarModel:
        if self.public_holidays.enabled:
            import holidays

            try:
                holidays.country_holidays(self.public_holidays.country, subdiv=self.public_holidays.subdivision)
            except NotImplementedError:
                raise ValueError(f"the holidays package has no country {self.public_holidays.country!r}") from None
            except Exception as exc:  # the package raises NotImplementedError or ValueError by version
                raise ValueError(f"public holidays: {exc}") from None
        dates = [d.date for d in self.special_days]
        if len(dates) != len(set(dates)):
            raise ValueError("special_days lists the same date twice")
        return self


class CalendarsConfig(Strict):
    default: str = "line"
    calendars: dict[str, CalendarModel] = Field(default_factory=lambda: {"line": CalendarModel()})

    @model_validator(mode="after")
    def _default_exists(self) -> CalendarsConfig:
        if self.default not in self.calendars:
            raise ValueError(f"default calendar {self.default!r} is not defined in calendars")
        return self
