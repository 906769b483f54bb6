"""The compiled calendar: the scenario's evaluation lines, rules, descriptions, business time, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from atiende.cli import main
from config.calendar import CalendarModel, CalendarsConfig
from config.loader import Loaded
from routing.calendar import Calendar, CalendarNeverOpens, local_edge
from tests.conftest import MADRID, REPO, SHARED, SHARED_ABSENT, shared_file

EVAL = SHARED / "eval" / "calendar_dev.tsv"


def _eval_lines() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    if not EVAL.is_file():
        return rows
    for line in EVAL.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            at, state, nxt = line.split("\t")[:3]
            rows.append((at.strip(), state.strip(), nxt.strip()))
    return rows


@pytest.fixture(scope="module")
def line(loaded: Loaded) -> Calendar:
    return Calendar("line", loaded.settings.calendar.calendars["line"])


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(("instant", "state", "next_open"), _eval_lines() or [
    pytest.param("", "", "", marks=pytest.mark.skip(reason=f"{SHARED_ABSENT}: eval/calendar_dev.tsv"))])
def test_eval_line(line: Calendar, instant: str, state: str, next_open: str) -> None:
    st = line.status(at(instant))
    assert ("open" if st.open else "closed") == state
    assert st.next_open is not None and st.next_open.isoformat() == next_open
    assert line.next_open(at(instant)).isoformat() == next_open


def test_eval_file_has_lines() -> None:
    shared_file("eval/calendar_dev.tsv")
    assert len(_eval_lines()) >= 20


@pytest.mark.parametrize(("instant", "rule", "holiday"), [
    ("2026-11-23T10:00:00+01:00", "weekly:mon", None),
    ("2026-11-28T10:00:00+01:00", "weekend", None),
    ("2026-07-01T10:00:00+02:00", "season:verano", None),
    ("2026-07-04T10:00:00+02:00", "weekend", None),
    ("2026-12-08T10:00:00+01:00", "holiday:Inmaculada Concepción", "Inmaculada Concepción"),
    ("2026-08-15T10:00:00+02:00", "holiday:Asunción de la Virgen", "Asunción de la Virgen"),  # a Saturday
    ("2026-09-08T10:00:00+02:00", "holiday:Día de Extremadura", "Día de Extremadura"),
])
def test_rules(line: Calendar, instant: str, rule: str, holiday: str | None) -> None:
    st = line.status(at(instant))
    assert (st.rule, st.holiday) == (rule, holiday)


def test_status_fields(line: Calendar) -> None:
    st = line.status(at("2026-11-23T09:00:00Z"))  # UTC in, Madrid out
    assert st.at.isoformat() == "2026-11-23T10:00:00+01:00"
    assert st.open and st.closes_at is not None and st.closes_at.isoformat() == "2026-11-23T14:30:00+01:00"
    assert st.public() == {"at": "2026-11-23T10:00:00+01:00", "open": True, "next_open": "2026-11-23T16:00:00+01:00",
                           "rule": "weekly:mon", "calendar": "line"}
    closed = line.status(datetime(2026, 11, 23, 15, 0))  # naive = Madrid local time
    assert not closed.open and closed.closes_at is None and closed.at.isoformat() == "2026-11-23T15:00:00+01:00"


def test_edges_are_half_open(line: Calendar) -> None:
    assert line.is_open(at("2026-11-23T08:30:00+01:00"))
    assert not line.is_open(at("2026-11-23T08:29:59.999999+01:00"))
    assert line.is_open(at("2026-11-23T14:29:59.999999+01:00"))
    assert not line.is_open(at("2026-11-23T14:30:00+01:00"))
    assert line.next_open(at("2026-11-23T08:30:00+01:00")).isoformat() == "2026-11-23T16:00:00+01:00"  # strictly after


def test_intervals_and_remaining(line: Calendar) -> None:
    iv = line.intervals_on(date(2026, 11, 23))
    assert [(s.isoformat(), e.isoformat()) for s, e in iv] == [
        ("2026-11-23T08:30:00+01:00", "2026-11-23T14:30:00+01:00"), ("2026-11-23T16:00:00+01:00", "2026-11-23T18:00:00+01:00")]
    rest = line.remaining_today(at("2026-11-23T12:00:00+01:00"))
    assert [(s.strftime("%H:%M"), e.strftime("%H:%M")) for s, e in rest] == [("12:00", "14:30"), ("16:00", "18:00")]
    assert line.remaining_today(at("2026-11-23T18:00:00+01:00")) == []
    assert line.intervals_on(date(2026, 12, 8)) == []
    # DST days keep local hours: 08:30 is +01:00 before the change and +02:00 after it.
    assert line.intervals_on(date(2026, 3, 30))[0][0].isoformat() == "2026-03-30T08:30:00+02:00"
    assert line.intervals_on(date(2026, 10, 26))[0][0].isoformat() == "2026-10-26T08:30:00+01:00"


def test_descriptions(line: Calendar) -> None:
    assert line.describe_day(date(2026, 11, 23)) == "de 8:30 a 14:30 y de 16:00 a 18:00"
    assert line.describe_day(date(2026, 7, 1)) == "de 8:30 a 14:30"
    assert line.describe_day(date(2026, 12, 8)) == "cerrado (Inmaculada Concepción)"
    assert line.describe_day(date(2026, 11, 28)) == "cerrado"
    text = line.describe_hours()
    assert text.startswith("de lunes a viernes, de 8:30 a 14:30 y de 16:00 a 18:00")
    assert "del 16 de junio al 15 de septiembre" in text and text.endswith("sábados, domingos y festivos, cerrado")


def test_describe_status(line: Calendar) -> None:
    def say(text: str) -> str:
        return line.describe_status(at(text))

    assert say("2026-11-23T10:00:00+01:00") == ("Ahora estamos abiertos hasta las 14:30. "
                                                "Hoy atendemos de 8:30 a 14:30 y de 16:00 a 18:00.")
    assert say("2026-11-23T15:00:00+01:00") == "Ahora estamos cerrados. Volvemos a atender hoy a las 16:00."
    assert say("2026-11-23T19:00:00+01:00") == "Ahora estamos cerrados. Volvemos a atender mañana a las 8:30."
    assert say("2026-11-27T19:00:00+01:00") == "Ahora estamos cerrados. Volvemos a atender el lunes 30 de noviembre a las 8:30."
    assert say("2026-12-08T10:00:00+01:00") == ("Hoy es festivo (Inmaculada Concepción) y estamos cerrados. "
                                                "Volvemos a atender mañana a las 8:30.")


def test_business_days(line: Calendar) -> None:
    # "within N business days": the start of the first opening of the N-th business day after the day of `at`.
    assert line.add_business_days(at("2026-11-23T10:00:00+01:00"), 1).isoformat() == "2026-11-24T08:30:00+01:00"
    assert line.add_business_days(at("2026-11-27T19:00:00+01:00"), 1).isoformat() == "2026-11-30T08:30:00+01:00"
    assert line.add_business_days(at("2026-12-04T19:00:00+01:00"), 1).isoformat() == "2026-12-09T08:30:00+01:00"
    assert line.add_business_days(at("2026-11-23T10:00:00+01:00"), 5).isoformat() == "2026-11-30T08:30:00+01:00"
    # 0 days: `at` when open, else the next opening (a voicemail's callback due time)
    assert line.add_business_days(at("2026-11-23T10:00:00+01:00"), 0).isoformat() == "2026-11-23T10:00:00+01:00"
    assert line.add_business_days(at("2026-11-27T19:00:00+01:00"), 0).isoformat() == "2026-11-30T08:30:00+01:00"
    assert line.business_day(at("2026-12-31T12:00:00+01:00"), 2) == date(2027, 1, 5)
    with pytest.raises(ValueError):
        line.add_business_days(at("2026-11-23T10:00:00+01:00"), -1)


def test_business_hours(line: Calendar) -> None:
    assert line.add_business_hours(at("2026-11-23T10:00:00+01:00"), 4).isoformat() == "2026-11-23T14:00:00+01:00"
    assert line.add_business_hours(at("2026-11-23T10:00:00+01:00"), 5).isoformat() == "2026-11-23T16:30:00+01:00"
    assert line.add_business_hours(at("2026-11-23T08:30:00+01:00"), 6).isoformat() == "2026-11-23T14:30:00+01:00"
    assert line.add_business_hours(at("2026-11-27T19:00:00+01:00"), 1.5).isoformat() == "2026-11-30T10:00:00+01:00"
    assert line.add_business_hours(at("2026-11-23T15:00:00+01:00"), 0).isoformat() == "2026-11-23T15:00:00+01:00"
    assert line.add_business_hours(at("2026-11-23T17:00:00+01:00"), 8).isoformat() == "2026-11-24T17:00:00+01:00"
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            line.add_business_hours(at("2026-11-23T10:00:00+01:00"), bad)


def _model(**kw: Any) -> CalendarModel:
    base: dict[str, Any] = {"weekly": {d: [{"start": "09:00", "end": "14:00"}] for d in ("mon", "tue", "wed", "thu", "fri")}}
    base.update(kw)
    return CalendarModel.model_validate(base)


def test_closures_special_days_local_holidays() -> None:
    cal = Calendar("x", _model(
        local_holidays=[{"date": "2026-11-24", "name": "Fiesta local"}],
        closures=[{"date": "2026-11-25", "reason": "mudanza"},
                  {"start": "2026-11-26T11:00:00", "end": "2026-11-26T12:30:00", "reason": "simulacro"}],
        special_days=[{"date": "2026-12-24", "intervals": [{"start": "09:00", "end": "12:00"}], "reason": "Nochebuena"},
                      {"date": "2026-12-08", "intervals": [{"start": "10:00", "end": "11:00"}], "reason": "apertura"}],
    ))
    assert cal.status(at("2026-11-24T10:00:00+01:00")).rule == "holiday:Fiesta local"
    assert cal.status(at("2026-11-25T10:00:00+01:00")).rule == "closure:mudanza"
    st = cal.status(at("2026-11-26T11:30:00+01:00"))
    assert (st.open, st.rule) == (False, "closure:simulacro")
    assert st.next_open is not None and st.next_open.isoformat() == "2026-11-26T12:30:00+01:00"
    assert cal.status(at("2026-11-26T10:00:00+01:00")).closes_at.isoformat() == "2026-11-26T11:00:00+01:00"  # type: ignore[union-attr]
    assert cal.describe_day(date(2026, 11, 26)) == "de 9:00 a 11:00 y de 12:30 a 14:00"
    assert cal.status(at("2026-12-24T11:00:00+01:00")).rule == "special:Nochebuena"
    assert cal.describe_day(date(2026, 12, 24)) == "de 9:00 a 12:00 (Nochebuena)"
    assert not cal.is_open(at("2026-12-24T12:00:00+01:00"))
    holiday_opening = cal.status(at("2026-12-08T10:30:00+01:00"))  # a special day wins over a holiday
    assert holiday_opening.open and holiday_opening.holiday == "Inmaculada Concepción"
    assert cal.describe_day(date(2026, 11, 25)) == "cerrado (mudanza)"


def test_touching_intervals_are_one_opening() -> None:
    weekly = {"mon": [{"start": "08:00", "end": "12:00"}, {"start": "12:00", "end": "24:00"}],
              "tue": [{"start": "00:00", "end": "10:00"}]}
    cal = Calendar("x", _model(weekly=weekly, public_holidays={"enabled": False}))
    st = cal.status(at("2026-11-23T09:00:00+01:00"))
    assert st.closes_at is not None and st.closes_at.isoformat() == "2026-11-24T10:00:00+01:00"
    assert st.next_open is not None and st.next_open.isoformat() == "2026-11-30T08:00:00+01:00"
    assert cal.describe_day(date(2026, 11, 23)) == "de 8:00 a 24:00"
    assert cal.describe_hours().startswith("lunes, de 8:00 a 24:00; martes, de 0:00 a 10:00; de miércoles a domingo, cerrado")


def test_season_wrapping_new_year_and_dst_gap() -> None:
    cal = Calendar("x", _model(
        public_holidays={"enabled": False},
        weekly={"sun": [{"start": "02:30", "end": "04:00"}]},
        seasons=[{"name": "invierno", "start": "12-20", "end": "01-10",
                  "weekly": {"mon": [{"start": "10:00", "end": "11:00"}]}}],
    ))
    assert cal.status(at("2026-12-28T10:30:00+01:00")).rule == "season:invierno"
    assert cal.status(at("2027-01-04T10:30:00+01:00")).open
    assert not cal.status(at("2027-01-11T10:30:00+01:00")).open
    # 02:30 does not exist on 29 March 2026 in Madrid: the interval starts when clocks jump to 03:00.
    iv = cal.intervals_on(date(2026, 3, 29))
    assert [(s.isoformat(), e.isoformat()) for s, e in iv] == [("2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00")]
    # On 25 October 02:30 happens twice: the interval starts at the first one.
    iv = cal.intervals_on(date(2026, 10, 25))
    assert [(s.isoformat(), e.isoformat()) for s, e in iv] == [("2026-10-25T02:30:00+02:00", "2026-10-25T04:00:00+01:00")]
    assert local_edge(date(2026, 3, 29), 150, MADRID).isoformat() == "2026-03-29T01:00:00+00:00"


def test_never_opens() -> None:
    cal = Calendar("x", _model(closures=[{"start": "2026-01-01T00:00:00", "end": "2030-01-01T00:00:00"}]))
    st = cal.status(at("2026-06-01T10:00:00+02:00"))
    assert not st.open and st.next_open is None and st.rule == "closure:cierre"
    with pytest.raises(CalendarNeverOpens):
        cal.next_open(at("2026-06-01T10:00:00+02:00"))
    with pytest.raises(ValueError):
        cal.status(datetime(9999, 12, 31, 23, 0))


@pytest.mark.parametrize(("data", "reason"), [
    ({"weekly": {"mon": [{"start": "10:00", "end": "09:00"}]}}, "before it starts"),
    ({"weekly": {"mon": [{"start": "09:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]}}, "overlap"),
    ({"weekly": {"mon": [{"start": "9:00", "end": "12:00"}]}}, "not a time"),
    ({"timezone": "Mars/Olympus"}, "unknown timezone"),
    ({"timezone": "../etc/passwd"}, "unknown timezone"),
    ({"seasons": [{"name": "a", "start": "02-30", "end": "03-01", "weekly": {}}]}, "not a day of the year"),
    ({"seasons": [{"name": "a", "start": "06-01", "end": "07-01", "weekly": {}},
                  {"name": "b", "start": "07-01", "end": "08-01", "weekly": {}}]}, "overlap"),
    ({"closures": [{"start": "2026-12-24T14:00:00", "end": "2026-12-24T12:00:00"}]}, "before it starts"),
    ({"closures": [{"start": "2026-12-24T10:00:00", "end": "2026-12-24T12:00:00+01:00"}]}, "both"),
    ({"closures": [{"start": "2026-12-24T10:00:00", "end": "2026-12-24T12:00:00"},
                   {"start": "2026-12-24T11:00:00", "end": "2026-12-24T13:00:00"}]}, "overlap"),
    ({"closures": [{"reason": "x"}]}, "either date"),
    ({"local_holidays": [{"date": "2026-05-15", "name": "a"}, {"date": "2026-05-15", "name": "b"}]}, "twice"),
    ({"public_holidays": {"country": "ES", "subdivision": "XX"}}, "subdivision"),
    ({"public_holidays": {"country": "QQ"}}, "QQ"),
    ({"weekly": {"mon": []}, "extra": 1}, "Extra inputs"),
])
def test_invalid_calendars_are_refused(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as exc:
        CalendarModel.model_validate(data)
    assert reason in str(exc.value)


def test_calendar_names() -> None:
    with pytest.raises(ValidationError):
        CalendarsConfig.model_validate({"default": "versions", "calendars": {"versions": {}}})
    with pytest.raises(ValidationError):
        CalendarsConfig.model_validate({"default": "x", "calendars": {"line": {}}})


# ---- CLI -----------------------------------------------------------------------------------------


def test_cli_at(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hours", "--json", "--at", "2026-12-08T10:00:00+01:00", "--at", "2026-11-23T10:00", "--at", "nope"]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert out[0] == {"at": "2026-12-08T10:00:00+01:00", "open": False, "next_open": "2026-12-09T08:30:00+01:00",
                      "rule": "holiday:Inmaculada Concepción", "calendar": "line"}
    assert out[1]["open"] is True and out[1]["at"] == "2026-11-23T10:00:00+01:00"
    assert out[2]["line"] == 3 and "error" in out[2] and out[2]["input"] == "nope"


def test_cli_file_matches_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _eval_lines()
    f = tmp_path / "in.txt"
    f.write_text("\n".join([r[0] for r in rows] + ["2026-13-01T10:00:00+01:00", "", "2026-11-23T09:00:00Z"]) + "\n")
    assert main(["hours", "--json", "--file", str(f)]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(out) == len(rows) + 3
    for (instant, state, nxt), obj in zip(rows, out, strict=False):
        assert (obj["at"], obj["open"], obj["next_open"]) == (instant, state == "open", nxt)
    assert "error" in out[-3] and "error" in out[-2] and out[-1]["open"] is True


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["hours", "--calendar", "nope"]) == 2
    assert main(["hours", "--file", str(tmp_path / "missing.txt")]) == 2
    assert main(["hours", "--at", "2026-11-23T10:00:00+01:00", "--describe"]) == 0
    out = capsys.readouterr().out
    assert "abierto" in out and "de lunes a viernes" in out


def test_cli_subprocess_stdin() -> None:
    start = datetime(2026, 1, 1, tzinfo=MADRID)
    text = "".join((start + timedelta(minutes=97 * i)).isoformat() + "\n" for i in range(500))
    proc = subprocess.run([sys.executable, "-m", "atiende.cli", "hours", "--json", "--file", "-"], input=text,
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 500 and all("error" not in json.loads(x) for x in lines)
