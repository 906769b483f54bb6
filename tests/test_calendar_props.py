"""Property tests over random instants of 2026-2028, checked against a slow, independent oracle.

The oracle reads the calendar model directly (no caches, no merging tricks): a day's intervals come from
closures / special days / holidays (straight from the `holidays` package) / seasons / weekly hours, and
an edge HH:MM is found by stepping minute by minute to the first instant whose local clock shows HH:MM
or later. Instants are drawn uniformly and, on purpose, at interval edges (±1 µs), on DST change days,
on the first and last days of summer, on holiday eves and on holidays that fall on weekends.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import zoneinfo
from typing import Any

import holidays
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.calendar import CalendarModel
from config.loader import load
from routing.calendar import Calendar

UTC = dt.UTC
US = dt.timedelta(microseconds=1)
YEARS = (2026, 2027, 2028)
# CALENDAR_PROPS_EXAMPLES=5000 for a deeper search than the one `make test` affords.
PROPS = settings(max_examples=int(os.environ.get("CALENDAR_PROPS_EXAMPLES", "150")), deadline=None,
                 database=None, suppress_health_check=[HealthCheck.too_slow])

LINE_MODEL = load(None, env={}).settings.calendar.calendars["line"]
DAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAYS = {d: [{"start": "08:30", "end": "14:30"}, {"start": "16:00", "end": "18:00"}] for d in DAY_KEYS[:5]}
# A calendar that uses every feature, with edges inside DST changes and touching intervals across midnight.
BUSY_MODEL = CalendarModel.model_validate({
    "timezone": "Europe/Madrid",
    "weekly": {**_WEEKDAYS, "sat": [{"start": "10:00", "end": "13:00"}, {"start": "20:00", "end": "24:00"}],
               "sun": [{"start": "00:00", "end": "01:00"}, {"start": "02:30", "end": "04:00"}]},
    "seasons": [
        {"name": "verano", "start": "06-16", "end": "09-15", "weekly": {d: [{"start": "08:30", "end": "14:30"}] for d in
                                                                       ("mon", "tue", "wed", "thu", "fri")}},
        {"name": "navidad", "start": "12-22", "end": "01-07", "weekly": {"mon": [{"start": "09:00", "end": "12:00"}],
                                                                        "wed": [{"start": "02:00", "end": "03:00"}]}},
    ],
    "local_holidays": [{"date": "2026-05-15", "name": "San Isidro"}, {"date": "2027-11-15", "name": "Fiesta local"},
                       {"date": "2028-02-29", "name": "Bisiesto"}],
    "closures": [
        {"date": "2026-11-30", "reason": "mudanza"},
        {"start": "2026-03-28T12:00:00", "end": "2026-03-29T03:15:00", "reason": "cambio de hora"},
        {"start": "2027-10-30T21:00:00+02:00", "end": "2027-10-31T02:45:00+01:00", "reason": "mantenimiento"},
        {"start": "2028-06-20T09:00:00", "end": "2028-06-20T10:00:00", "reason": "simulacro"},
        {"start": "2026-12-23T10:00:00", "end": "2027-01-05T00:00:00", "reason": "vacaciones"},
    ],
    "special_days": [
        {"date": "2026-12-24", "intervals": [{"start": "09:00", "end": "13:00"}], "reason": "Nochebuena"},
        {"date": "2027-12-08", "intervals": [{"start": "10:00", "end": "11:00"}], "reason": "apertura"},
        {"date": "2027-05-01", "intervals": [], "reason": "cerrado todo el día"},
        {"date": "2028-03-26", "intervals": [{"start": "01:30", "end": "02:30"}, {"start": "03:00", "end": "05:00"}]},
    ],
})
CALENDARS = {"line": Calendar("line", LINE_MODEL), "busy": Calendar("busy", BUSY_MODEL)}
SPANS: dict[int, list[tuple[dt.datetime, dt.datetime]]] = {}


# ---- the oracle -------------------------------------------------------------------------------


@functools.cache
def _public(year: int) -> dict[dt.date, str]:
    return dict(holidays.country_holidays("ES", subdiv="EX", years=year, language="es"))


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:])


def _covers(season: Any, day: dt.date) -> bool:
    a = (int(season.start[:2]), int(season.start[3:]))
    b = (int(season.end[:2]), int(season.end[3:]))
    md = (day.month, day.day)
    return a <= md <= b if a <= b else md >= a or md <= b


def _oracle_minutes(model: CalendarModel, day: dt.date) -> list[tuple[int, int]]:
    if any(c.date == day for c in model.closures):
        return []
    for s in model.special_days:
        if s.date == day:
            return [(_minutes(i.start), _minutes(i.end)) for i in s.intervals]
    if any(h.date == day for h in model.local_holidays) or (model.public_holidays.enabled and day in _public(day.year)):
        return []
    weekly = model.weekly
    for season in model.seasons:
        if _covers(season, day):
            weekly = season.weekly
            break
    return [(_minutes(i.start), _minutes(i.end)) for i in getattr(weekly, DAY_KEYS[day.weekday()])]


@functools.cache
def _first_showing(tzname: str, day: dt.date, minute: int) -> dt.datetime:
    """Step minute by minute to the first instant at which the local clock shows `day` `minute` or later."""
    tz = zoneinfo.ZoneInfo(tzname)
    target = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
    t = (target - dt.timedelta(hours=4)).replace(tzinfo=UTC)  # Madrid is never more than 2 h ahead of UTC
    while t.astimezone(tz).replace(tzinfo=None, fold=0) < target:
        t += dt.timedelta(minutes=1)
    return t


def _spans(model: CalendarModel) -> list[tuple[dt.datetime, dt.datetime]]:
    tz = zoneinfo.ZoneInfo(model.timezone)
    out = []
    for c in model.closures:
        if c.start is not None and c.end is not None:
            s = c.start if c.start.tzinfo else c.start.replace(tzinfo=tz)
            e = c.end if c.end.tzinfo else c.end.replace(tzinfo=tz)
            out.append((s.astimezone(UTC), e.astimezone(UTC)))
    return out


def oracle_intervals(model: CalendarModel, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
    """The day's open instants as (start, end) pairs, span closures removed (not merged)."""
    out = []
    for a, b in _oracle_minutes(model, day):
        s, e = _first_showing(model.timezone, day, a), _first_showing(model.timezone, day, b)
        pieces = [(s, e)] if s < e else []
        for cs, ce in SPANS[id(model)]:
            pieces = [p for ps, pe in pieces for p in ((ps, min(pe, cs)), (max(ps, ce), pe)) if p[0] < p[1]]
        out.extend(pieces)
    return out


def oracle_open(model: CalendarModel, t: dt.datetime) -> bool:
    day = t.astimezone(zoneinfo.ZoneInfo(model.timezone)).date()
    return any(s <= t < e for s, e in oracle_intervals(model, day))


def oracle_next_open(model: CalendarModel, t: dt.datetime) -> dt.datetime:
    day = t.astimezone(zoneinfo.ZoneInfo(model.timezone)).date() - dt.timedelta(days=1)
    spans: list[tuple[dt.datetime, dt.datetime]] = []
    for k in range(60):
        spans.extend(oracle_intervals(model, day + dt.timedelta(days=k)))
    spans.sort()
    ends = {e for _, e in spans}
    return next(s for s, _ in spans if s > t and s not in ends)  # a start that continues an interval is no opening


SPANS.update({id(LINE_MODEL): _spans(LINE_MODEL), id(BUSY_MODEL): _spans(BUSY_MODEL)})


# ---- instants worth drawing ---------------------------------------------------------------------


def _interesting_days() -> list[dt.date]:
    days: set[dt.date] = set()
    for y in YEARS:
        for m, d in ((3, 29), (3, 28), (3, 26), (3, 27), (10, 25), (10, 31), (10, 29), (10, 26), (11, 1), (10, 30),
                     (6, 15), (6, 16), (9, 15), (9, 16), (12, 22), (1, 7), (1, 8), (12, 31), (1, 1)):
            days.add(dt.date(y, m, d))
        for h in _public(y):
            days.update({h - dt.timedelta(days=1), h, h + dt.timedelta(days=1)})  # eves, holidays on weekends too
    for c in BUSY_MODEL.closures:
        for v in (c.date, c.start, c.end):
            if v is not None:
                days.add(v if isinstance(v, dt.date) and not isinstance(v, dt.datetime) else v.date())  # type: ignore[union-attr]
    days.update(s.date for s in BUSY_MODEL.special_days)
    days.update(h.date for h in BUSY_MODEL.local_holidays)
    return sorted(d for d in days if d.year in YEARS)


DAYS = st.one_of(st.sampled_from(_interesting_days()), st.dates(dt.date(2026, 1, 1), dt.date(2028, 12, 31)))
EDGE_TIMES = [dt.time(h, m) for h, m in ((0, 0), (1, 59), (2, 0), (2, 30), (3, 0), (8, 29), (8, 30), (14, 29), (14, 30),
                                          (16, 0), (17, 59), (18, 0), (23, 59))]
TIMES = st.one_of(st.sampled_from(EDGE_TIMES), st.times())
ZONES = st.sampled_from(["local", "local-fold", "utc", "naive"])


@st.composite
def instants(draw: st.DrawFn, name: str) -> dt.datetime:
    """Any instant of 2026-2028, biased to interesting days, edge times and interval edges ±1 µs."""
    cal = CALENDARS[name]
    day = draw(DAYS)
    if draw(st.booleans()):
        edges = [x for pair in oracle_intervals(cal.model, day) for x in pair]
        if edges:
            return draw(st.sampled_from(edges)) + draw(st.sampled_from([-US, dt.timedelta(0), US]))
    naive = dt.datetime.combine(day, draw(TIMES))
    how = draw(ZONES)
    if how == "naive":
        return naive
    local = naive.replace(tzinfo=cal.tz, fold=1 if how == "local-fold" else 0)
    return local.astimezone(UTC) if how == "utc" else local


def _before(t: dt.datetime) -> dt.datetime:
    """One microsecond earlier, in real time (aware local arithmetic is wall-clock arithmetic in Python)."""
    return t.astimezone(UTC) - US


def _utc(cal: Calendar, t: dt.datetime) -> dt.datetime:
    return (t if t.tzinfo else t.replace(tzinfo=cal.tz)).astimezone(UTC)


# ---- properties ---------------------------------------------------------------------------------


def _check_instant(name: str, t: dt.datetime) -> None:
    cal = CALENDARS[name]
    tu = _utc(cal, t)
    status = cal.status(t)
    assert status.open == oracle_open(cal.model, tu), (t, status)
    nxt = status.next_open
    assert nxt is not None and nxt.tzinfo is not None
    assert nxt > tu, "next_open is strictly after T"
    # (compared in UTC: an ambiguous local time with fold=1 never compares equal across zones, PEP 495)
    assert nxt.astimezone(UTC) == oracle_next_open(cal.model, tu)
    assert cal.is_open(nxt) and oracle_open(cal.model, nxt.astimezone(UTC)), "next_open is open"
    assert not cal.is_open(_before(nxt)), "next_open is an opening, not a continuation"
    if not status.open:
        day = tu.astimezone(cal.tz).date()
        while day <= nxt.date():
            for s, e in oracle_intervals(cal.model, day):
                assert not (s < nxt and e > tu), f"open between {t} and next_open {nxt}"
            day += dt.timedelta(days=1)
        assert status.closes_at is None
    else:
        assert status.closes_at is not None and tu < status.closes_at <= nxt
        assert not cal.is_open(status.closes_at) and cal.is_open(_before(status.closes_at))
    assert status.rule.split(":")[0] in {"weekly", "season", "holiday", "closure", "special", "weekend"}
    if status.holiday and not status.rule.startswith(("closure:", "special:")):
        assert status.rule == f"holiday:{status.holiday}"
    assert cal.next_open(t) == nxt


@PROPS
@given(instants("line"))
def test_line_matches_oracle(t: dt.datetime) -> None:
    _check_instant("line", t)


@PROPS
@given(instants("busy"))
def test_busy_calendar_matches_oracle(t: dt.datetime) -> None:
    _check_instant("busy", t)


@PROPS
@given(st.sampled_from(sorted(CALENDARS)), DAYS)
def test_interval_edges(name: str, day: dt.date) -> None:
    cal = CALENDARS[name]
    intervals = cal.intervals_on(day)
    assert [(s.astimezone(UTC), e.astimezone(UTC)) for s, e in intervals] == _merged(oracle_intervals(cal.model, day))
    for s, e in intervals:
        assert s < e and s.tzinfo is not None and s.astimezone(cal.tz).date() == day
        assert cal.status(s).open, "open at an interval's start"
        assert cal.is_open(_before(e))
        touching = any(s2.astimezone(UTC) == e.astimezone(UTC) for s2, _ in cal.intervals_on(day + dt.timedelta(days=1)))
        assert cal.status(e).open is touching, "closed at an interval's end (unless the next day continues it)"
    assert cal.describe_day(day)
    if intervals:
        s0, e0 = intervals[0][0].astimezone(UTC), intervals[0][1].astimezone(UTC)
        mid = s0 + (e0 - s0) / 2
        rest = [(a.astimezone(UTC), b.astimezone(UTC)) for a, b in cal.remaining_today(mid)]
        assert rest == [(mid, e0)] + [(a.astimezone(UTC), b.astimezone(UTC)) for a, b in intervals[1:]]


def _merged(pairs: list[tuple[dt.datetime, dt.datetime]]) -> list[tuple[dt.datetime, dt.datetime]]:
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for s, e in sorted(pairs):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _open_time(cal: Calendar, a: dt.datetime, b: dt.datetime) -> dt.timedelta:
    total = dt.timedelta(0)
    day = a.astimezone(cal.tz).date()
    while day <= b.astimezone(cal.tz).date():
        for s, e in oracle_intervals(cal.model, day):
            lo, hi = max(s, a), min(e, b)
            if hi > lo:
                total += hi - lo
        day += dt.timedelta(days=1)
    return total


@PROPS
@given(st.sampled_from(sorted(CALENDARS)), st.data(), st.integers(0, 40 * 60))
def test_add_business_hours(name: str, data: st.DataObject, minutes: int) -> None:
    cal = CALENDARS[name]
    t = _utc(cal, data.draw(instants(name)))
    due = cal.add_business_hours(t, minutes / 60)
    assert due >= t and _open_time(cal, t, due.astimezone(UTC)) == dt.timedelta(minutes=minutes)
    if minutes:
        assert cal.is_open(_before(due)), "the last counted microsecond was open time"


@PROPS
@given(st.sampled_from(sorted(CALENDARS)), st.data(), st.integers(0, 12))
def test_add_business_days(name: str, data: st.DataObject, n: int) -> None:
    cal = CALENDARS[name]
    t = _utc(cal, data.draw(instants(name)))
    due = cal.add_business_days(t, n)
    if n == 0:
        assert due.astimezone(UTC) == (t if cal.is_open(t) else cal.next_open(t).astimezone(UTC))
        return
    day, due_day = t.astimezone(cal.tz).date(), due.astimezone(cal.tz).date()
    assert due_day > day and due == cal.intervals_on(due_day)[0][0]
    business = [day + dt.timedelta(days=k) for k in range(1, (due_day - day).days + 1)
                if oracle_intervals(cal.model, day + dt.timedelta(days=k))]
    assert len(business) == n and business[-1] == due_day
