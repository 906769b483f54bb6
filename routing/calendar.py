"""A compiled calendar: is the line open at instant T, which rule decided, when does it next open,
and business-time arithmetic (callbacks due at the next opening, complaints due in N business days).

How a day's hours are chosen (first match wins):

1. a whole-day closure (`closures[].date`)            -> closed, rule "closure:<reason>"
2. a special day (`special_days[].date`)              -> its intervals, rule "special:<reason>"
3. a holiday (local ones, then the `holidays` package) -> closed, rule "holiday:<name>"
4. a season covering the date (e.g. summer)            -> the season's weekly hours, rule "season:<name>"
5. the weekly hours                                    -> rule "weekly:<mon..sun>"
   (a Saturday or Sunday without hours under 4 or 5 gets rule "weekend")

Span closures (`closures[].start..end`) are then cut out of the day's intervals; an instant inside
one reports rule "closure:<reason>".

Intervals are half-open, [start, end): open at 08:30:00, closed at 14:30:00. A local time HH:MM on a
date means the first instant of that date at which the local clock shows HH:MM or later; so an
edge inside a daylight-saving gap falls on the shift itself, and an ambiguous one (clocks going
back) on its first occurrence. Touching intervals (14:30-14:30, or 24:00 and the next 00:00) are
one opening: `next_open` never returns a start that merely continues an open period.

Business time: `add_business_hours` counts open time only; `add_business_days(at, n)` is the start of
the first opening of the n-th business day (a date with any opening) after `at`'s local date, and
`add_business_days(at, 0)` is `at` if open, else the next opening (a voicemail's callback due time).

Instants are handled in UTC inside; answers are given in the calendar's timezone (compare them with
`<`/`>` or in UTC: Python never finds an ambiguous local time with fold=1 `==` to an instant in
another zone, and adding a timedelta to a local time is wall-clock arithmetic). Each day's plan
is computed once and cached, and the public-holiday set is computed once per year and process.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from config.calendar import WEEKDAYS, CalendarModel, Interval, Season, WeeklyHours
from core.errors import AtiendeError

UTC = dt.UTC
ONE_DAY = dt.timedelta(days=1)
# How far ahead a search looks for an opening before it gives up (a closure may span months).
HORIZON_DAYS = 3 * 366
_DAY_CACHE_MAX = 20_000
# Instants outside these years are refused (ValueError): searches run years ahead and dates end at 9999.
MIN_YEAR, MAX_YEAR = 1971, 2199

DAY_NAMES = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
DAY_NAMES_PLURAL = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábados", "domingos")
MONTH_NAMES = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
               "noviembre", "diciembre")


class CalendarNeverOpens(AtiendeError):
    status_code = 409
    error_id = "calendar-never-opens"


class HoursStatus(BaseModel):
    at: dt.datetime  # the instant asked about, in the calendar's timezone
    open: bool
    rule: str  # what decided: "weekly:mon", "season:verano", "holiday:<name>", "closure:<why>", "special:<why>", "weekend"
    next_open: dt.datetime | None  # start of the first opening after `at` (strictly later); None if none within 3 years
    calendar: str
    holiday: str | None = None  # the day's holiday name, if it is one (even when a special day overrides it)
    closes_at: dt.datetime | None = None  # when open: the end of the current opening

    def public(self) -> dict[str, object]:
        """The object of `atiende hours --json` (ISO strings with offsets, as datetime.isoformat writes them)."""
        return {
            "at": self.at.isoformat(),
            "open": self.open,
            "next_open": self.next_open.isoformat() if self.next_open else None,
            "rule": self.rule,
            "calendar": self.calendar,
        }

    def full(self) -> dict[str, object]:
        """`public()` plus the day's holiday and when the current opening closes (GET /api/v1/hours)."""
        return {**self.public(), "holiday": self.holiday, "closes_at": self.closes_at.isoformat() if self.closes_at else None}


@functools.lru_cache(maxsize=512)
def public_holidays(country: str, subdivision: str | None, language: str | None, year: int) -> Mapping[dt.date, str]:
    """The `holidays` package's set for one year, computed once per process (it costs ~1 ms)."""
    import holidays

    found = holidays.country_holidays(country, subdiv=subdivision, years=year, language=language)
    return MappingProxyType({d: str(name) for d, name in found.items()})


def local_edge(day: dt.date, minute: int, tz: ZoneInfo) -> dt.datetime:
    """The first instant (UTC) of `day` at which the local clock shows `minute` minutes after midnight or later.

    `minute` may be 1440 (24:00 = the next day's 00:00).
    """
    if minute >= 1440:
        day, minute = day + ONE_DAY, minute - 1440
    naive = dt.datetime(day.year, day.month, day.day, minute // 60, minute % 60)
    first = naive.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the first reading of an ambiguous time
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # `naive` does not exist (clocks jumped forward over it): find the jump itself, to the second.
    a = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = int(min(a, first).timestamp()), int(max(a, first).timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return dt.datetime.fromtimestamp(hi, UTC)


@dataclass(frozen=True, slots=True)
class DayPlan:
    day: dt.date
    starts: tuple[dt.datetime, ...]  # UTC, ascending, merged, span closures cut out
    ends: tuple[dt.datetime, ...]
    rule: str
    holiday: str | None
    reason: str | None  # why closed or special (for describe_day)
    special: bool


def _merge(edges: list[tuple[dt.datetime, dt.datetime]]) -> list[tuple[dt.datetime, dt.datetime]]:
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for s, e in sorted(edges):
        if e <= s:
            continue  # an interval swallowed by a daylight-saving gap
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _hhmm(local: dt.datetime, day: dt.date) -> str:
    if local.date() > day and local.hour == 0 and local.minute == 0:
        return "24:00"
    return f"{local.hour}:{local.minute:02d}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " y " + parts[-1]


def _intervals_text(intervals: list[Interval]) -> str:
    merged: list[list[int]] = []
    for i in sorted(intervals, key=lambda i: i.start_min):
        if merged and i.start_min <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], i.end_min)
        else:
            merged.append([i.start_min, i.end_min])
    return _join([f"de {a // 60}:{a % 60:02d} a {b // 60}:{b % 60:02d}" for a, b in merged])


def _days_parts(days: list[int]) -> list[str]:
    """[0..4] -> ["de lunes a viernes"]; [0, 2] -> ["lunes", "miércoles"]; [5, 6] -> ["sábados", "domingos"]."""
    runs: list[list[int]] = []
    for d in days:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    parts: list[str] = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"de {DAY_NAMES[run[0]]} a {DAY_NAMES[run[-1]]}")
        else:
            parts.extend(DAY_NAMES_PLURAL[d] for d in run)
    return parts


def _weekly_text(weekly: WeeklyHours) -> tuple[str, list[int]]:
    """Spanish text for the open days of a week, and the list of closed weekdays."""
    groups: dict[str, list[int]] = {}
    closed: list[int] = []
    for wd in range(7):
        intervals = weekly.for_weekday(wd)
        if intervals:
            groups.setdefault(_intervals_text(intervals), []).append(wd)
        else:
            closed.append(wd)
    text = "; ".join(f"{_join(_days_parts(days))}, {hours}" for hours, days in groups.items())
    return text, closed


def _md_text(md: tuple[int, int]) -> str:
    return f"{md[1]} de {MONTH_NAMES[md[0] - 1]}"


class Calendar:
    """One named calendar compiled for fast queries. Treat it as immutable: an edit compiles a new one."""

    def __init__(self, name: str, model: CalendarModel, version: int = 0) -> None:
        self.name = name
        self.model = model
        self.version = version
        self.tz = ZoneInfo(model.timezone)
        ph = model.public_holidays
        self._public = (ph.country, ph.subdivision, ph.language) if ph.enabled else None
        self._local_holidays = {h.date: h.name for h in model.local_holidays}
        self._closed_days = {c.date: c.reason for c in model.closures if c.date is not None}
        self._special = {s.date: s for s in model.special_days}
        spans = []
        for c in model.closures:
            if c.start is not None and c.end is not None:
                start = c.start if c.start.tzinfo else c.start.replace(tzinfo=self.tz)
                end = c.end if c.end.tzinfo else c.end.replace(tzinfo=self.tz)
                spans.append((start.astimezone(UTC), end.astimezone(UTC), c.reason))
        spans.sort()
        self._spans = spans
        self._span_starts = [s for s, _, _ in spans]
        self._days: dict[dt.date, DayPlan] = {}

    def __repr__(self) -> str:
        return f"Calendar({self.name!r}, version={self.version}, tz={self.model.timezone})"

    # ---- the day plans --------------------------------------------------------------------

    def holiday_name(self, day: dt.date) -> str | None:
        name = self._local_holidays.get(day)
        if name is None and self._public is not None:
            name = public_holidays(*self._public, day.year).get(day)
        return name

    def season_of(self, day: dt.date) -> Season | None:
        return next((s for s in self.model.seasons if s.covers(day)), None)

    def plan(self, day: dt.date) -> DayPlan:
        found = self._days.get(day)
        if found is None:
            if len(self._days) >= _DAY_CACHE_MAX:
                self._days.clear()
            found = self._days[day] = self._compile_day(day)
        return found

    def _compile_day(self, day: dt.date) -> DayPlan:
        wd = day.weekday()
        holiday = self.holiday_name(day)
        reason: str | None = None
        special = False
        intervals: list[Interval] = []
        if day in self._closed_days:
            reason = self._closed_days[day]
            rule = f"closure:{reason}"
        elif day in self._special:
            sd = self._special[day]
            intervals, reason, special = list(sd.intervals), sd.reason, True
            rule = f"special:{sd.reason}"
        elif holiday is not None:
            rule, reason = f"holiday:{holiday}", holiday
        else:
            season = self.season_of(day)
            intervals = (season.weekly if season else self.model.weekly).for_weekday(wd)
            if not intervals and wd >= 5:
                rule = "weekend"
            elif season is not None:
                rule = f"season:{season.name}"
            else:
                rule = f"weekly:{WEEKDAYS[wd]}"
        edges = _merge([(local_edge(day, i.start_min, self.tz), local_edge(day, i.end_min, self.tz)) for i in intervals])
        if self._spans and edges:
            edges = self._cut_spans(edges)
        return DayPlan(day, tuple(s for s, _ in edges), tuple(e for _, e in edges), rule, holiday, reason, special)

    def _cut_spans(self, edges: list[tuple[dt.datetime, dt.datetime]]) -> list[tuple[dt.datetime, dt.datetime]]:
        for cs, ce, _ in self._spans:
            out = []
            for s, e in edges:
                if ce <= s or cs >= e:
                    out.append((s, e))
                    continue
                if s < cs:
                    out.append((s, cs))
                if ce < e:
                    out.append((ce, e))
            edges = out
        return edges

    def _span_reason(self, t: dt.datetime) -> str | None:
        i = bisect.bisect_right(self._span_starts, t) - 1
        if i >= 0 and t < self._spans[i][1]:
            return self._spans[i][2]
        return None

    # ---- instants --------------------------------------------------------------------------

    def localize(self, at: dt.datetime) -> dt.datetime:
        """An aware instant in this calendar's timezone; a naive one is read as local time."""
        if at.tzinfo is None:
            return at.replace(tzinfo=self.tz).astimezone(UTC).astimezone(self.tz)
        return at.astimezone(self.tz)

    def _utc(self, at: dt.datetime) -> tuple[dt.datetime, dt.date]:
        if not MIN_YEAR <= at.year <= MAX_YEAR:
            raise ValueError(f"{at.isoformat()} is outside the years the calendar answers for ({MIN_YEAR}-{MAX_YEAR})")
        if at.tzinfo is None:
            at = at.replace(tzinfo=self.tz)
        t = at.astimezone(UTC)
        return t, t.astimezone(self.tz).date()

    def _openings(self, t: dt.datetime, day: dt.date) -> Iterator[tuple[dt.datetime, dt.datetime]]:
        """Intervals from `day` on, touching ones merged, ending after `t`; stops after HORIZON_DAYS without one."""
        prev = self.plan(day - ONE_DAY)
        cur: tuple[dt.datetime, dt.datetime] | None = (prev.starts[-1], prev.ends[-1]) if prev.starts else None
        idle = 0
        while idle < HORIZON_DAYS:
            p = self.plan(day)
            idle = 0 if p.starts else idle + 1
            for s, e in zip(p.starts, p.ends, strict=True):
                if cur is not None and s == cur[1]:
                    cur = (cur[0], e)
                    continue
                if cur is not None and cur[1] > t:
                    yield cur
                cur = (s, e)
            day += ONE_DAY
        if cur is not None and cur[1] > t:
            yield cur

    def _next_open_utc(self, t: dt.datetime, day: dt.date) -> dt.datetime:
        for s, _ in self._openings(t, day):
            if s > t:
                return s
        raise CalendarNeverOpens(f"calendar {self.name!r} does not open in the {HORIZON_DAYS} days after {t.isoformat()}",
                                 {"calendar": self.name, "at": t.isoformat()})

    def is_open(self, at: dt.datetime) -> bool:
        t, day = self._utc(at)
        p = self.plan(day)
        i = bisect.bisect_right(p.starts, t) - 1
        return i >= 0 and t < p.ends[i]

    def status(self, at: dt.datetime) -> HoursStatus:
        t, day = self._utc(at)
        p = self.plan(day)
        i = bisect.bisect_right(p.starts, t) - 1
        is_open = i >= 0 and t < p.ends[i]
        rule = p.rule
        if self._spans:
            span = self._span_reason(t)
            if span is not None:
                rule = f"closure:{span}"
        closes_at = None
        if is_open:
            closes_at = next(e for s, e in self._openings(t, day) if s <= t).astimezone(self.tz)
        try:
            nxt: dt.datetime | None = self._next_open_utc(t, day).astimezone(self.tz)
        except CalendarNeverOpens:
            nxt = None
        return HoursStatus.model_construct(at=t.astimezone(self.tz), open=is_open, rule=rule, next_open=nxt,
                                           calendar=self.name, holiday=p.holiday, closes_at=closes_at)

    def next_open(self, at: dt.datetime) -> dt.datetime:
        """The start of the first opening strictly after `at` (when open now: the next one, not the current)."""
        t, day = self._utc(at)
        return self._next_open_utc(t, day).astimezone(self.tz)

    def intervals_on(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        p = self.plan(day)
        return [(s.astimezone(self.tz), e.astimezone(self.tz)) for s, e in zip(p.starts, p.ends, strict=True)]

    def remaining_today(self, at: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
        """What is left of `at`'s local day: intervals ending after `at`, the current one starting at `at`."""
        t, day = self._utc(at)
        p = self.plan(day)
        return [(max(s, t).astimezone(self.tz), e.astimezone(self.tz))
                for s, e in zip(p.starts, p.ends, strict=True) if e > t]

    def is_business_day(self, day: dt.date) -> bool:
        return bool(self.plan(day).starts)

    # ---- business time ---------------------------------------------------------------------

    def add_business_hours(self, at: dt.datetime, hours: float) -> dt.datetime:
        """`at` plus `hours` of open time: closed time does not count.

        The answer is the instant at which the last of those hours is used up; when that is the end of
        an interval, the answer is that end (08:30 + 6 h on a 08:30-14:30 day is 14:30 the same day).
        0 hours gives `at` itself.
        """
        if not math.isfinite(hours) or hours < 0:
            raise ValueError(f"business hours must be a finite number >= 0, not {hours!r}")
        t, day = self._utc(at)
        left = dt.timedelta(hours=hours)
        if not left:
            return t.astimezone(self.tz)
        for s, e in self._openings(t, day):
            s = max(s, t)
            if left <= e - s:
                return (s + left).astimezone(self.tz)
            left -= e - s
        raise CalendarNeverOpens(f"calendar {self.name!r} has no {hours} business hours after {at.isoformat()}",
                                 {"calendar": self.name, "at": at.isoformat()})

    def business_day(self, at: dt.datetime, days: int) -> dt.date:
        """The `days`-th business day (a date with at least one opening) after `at`'s local date."""
        if days < 1:
            raise ValueError(f"business days must be >= 1, not {days!r}")
        _, day = self._utc(at)
        count = idle = 0
        while idle < HORIZON_DAYS:
            day += ONE_DAY
            if self.plan(day).starts:
                count, idle = count + 1, 0
                if count == days:
                    return day
            else:
                idle += 1
        raise CalendarNeverOpens(f"calendar {self.name!r} has no {days} business days after {at.isoformat()}",
                                 {"calendar": self.name, "at": at.isoformat()})

    def add_business_days(self, at: dt.datetime, days: int) -> dt.datetime:
        """The start of the first opening of the `days`-th business day after `at`'s local date.

        Whatever the time of `at` on its day, that day never counts: Monday 10:00 + 1 -> Tuesday 08:30,
        Friday 19:00 + 1 -> Monday 08:30 (Tuesday if Monday is a holiday). 0 days gives `at` when open,
        else the next opening ("due at the next opening").
        """
        if days < 0:
            raise ValueError(f"business days must be >= 0, not {days!r}")
        if days == 0:
            t, day = self._utc(at)
            return t.astimezone(self.tz) if self.is_open(t) else self._next_open_utc(t, day).astimezone(self.tz)
        return self.plan(self.business_day(at, days)).starts[0].astimezone(self.tz)

    # ---- Spanish descriptions (prompts, chat answers) ----------------------------------------

    def describe_day(self, day: dt.date) -> str:
        """"de 8:30 a 14:30 y de 16:00 a 18:00", "cerrado (Inmaculada Concepción)", "cerrado"."""
        p = self.plan(day)
        if not p.starts:
            return f"cerrado ({p.reason})" if p.reason else "cerrado"
        text = _join([f"de {_hhmm(s.astimezone(self.tz), day)} a {_hhmm(e.astimezone(self.tz), day)}"
                      for s, e in zip(p.starts, p.ends, strict=True)])
        return f"{text} ({p.reason})" if p.special and p.reason else text

    def describe_hours(self) -> str:
        """A lowercase phrase for prompts, e.g. "de lunes a viernes, de 8:30 a 14:30 y de 16:00 a 18:00; del 16 de
        junio al 15 de septiembre (horario de verano), de lunes a viernes, de 8:30 a 14:30; sábados, domingos y
        festivos, cerrado"."""
        text, closed = _weekly_text(self.model.weekly)
        parts = [text] if text else []
        for season in self.model.seasons:
            s_text, _ = _weekly_text(season.weekly)
            when = f"del {_md_text(season.start_md)} al {_md_text(season.end_md)} (horario de {season.name})"
            parts.append(f"{when}, {s_text}" if s_text else f"{when}, cerrado")
        closed_names = _days_parts(closed)
        if self._public is not None or self._local_holidays:
            closed_names.append("festivos")
        if closed_names:
            parts.append(f"{_join(closed_names)}, cerrado")
        return "; ".join(parts) if parts else "cerrado"

    def describe_when(self, when: dt.datetime, now: dt.datetime) -> str:
        """"hoy a las 16:00", "mañana a las 8:30", "el lunes 30 de noviembre a las 8:30" (seen from `now`)."""
        local, today = self.localize(when), self.localize(now).date()
        clock = "a la" if local.hour == 1 else "a las"
        hour = f"{clock} {local.hour}:{local.minute:02d}"
        if local.date() == today:
            return f"hoy {hour}"
        if local.date() == today + ONE_DAY:
            return f"mañana {hour}"
        return f"el {DAY_NAMES[local.weekday()]} {local.day} de {MONTH_NAMES[local.month - 1]} {hour}"

    def describe_status(self, at: dt.datetime) -> str:
        """One or two Spanish sentences for a caller: open until when and today's hours, or closed and when it reopens."""
        st = self.status(at)
        if st.open and st.closes_at is not None:
            end = st.closes_at
            until = f"{'la' if end.hour == 1 else 'las'} {end.hour}:{end.minute:02d}"
            if end.hour == 0 and end.minute == 0:
                until = "medianoche"
            return f"Ahora estamos abiertos hasta {until}. Hoy atendemos {self.describe_day(st.at.date())}."
        first = "Ahora estamos cerrados."
        if st.rule.startswith("holiday:"):
            first = f"Hoy es festivo ({st.holiday}) y estamos cerrados."
        elif st.rule.startswith("closure:"):
            first = f"Ahora estamos cerrados ({st.rule.split(':', 1)[1]})."
        return f"{first} Volvemos a atender {self.describe_when(st.next_open, st.at)}." if st.next_open else first
