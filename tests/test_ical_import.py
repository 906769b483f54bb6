"""Holidays from iCalendar (issue 18.9): preview of a file or URL, apply as one version, rollback, bad input, SSRF.

Real parts: the app over ASGI on the real Redis, real .ics files (tests/data/ical/), a real HTTP server on
127.0.0.1 for the URL path, allowed only by the fetcher's constructor in the tests that need it.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from routing.calendar_service import CalendarService
from routing.ical_import import IcalFetcher

pytestmark = pytest.mark.anyio
DATA = Path(__file__).resolve().parent / "data" / "ical"
ADMIN = "/api/v1/admin/calendars"
FIESTAS = (DATA / "fiestas_villanueva.ics").read_bytes()
CIERRES = (DATA / "cierres_2026.ics").read_bytes()
ICS = {"Content-Type": "text/calendar"}


def rows(preview: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(i["date"], i["name"]): i["status"] for i in preview["items"]}


async def test_preview_file_expands_recurrences_and_classifies(client: httpx.AsyncClient) -> None:
    await client.post(f"{ADMIN}/line/holidays", json={"date": "2026-05-15", "name": "San Isidro"})
    await client.post(f"{ADMIN}/line/special-days", json={"date": "2026-12-24", "intervals": [{"start": "09:00",
                                                                                             "end": "13:00"}],
                                                         "reason": "Nochebuena"})
    version_before = (await client.get(ADMIN)).json()["version"]
    r = await client.post(f"{ADMIN}/line/ical/preview", content=FIESTAS, headers=ICS)
    assert r.status_code == 200, r.text
    p = r.json()
    assert (p["start"], p["end"]) == ("2026-01-01", "2027-12-31")  # the clock is 2026-11-23; two years by default
    assert rows(p) == {
        ("2026-05-15", "San Isidro Labrador"): "exists",  # already a local holiday
        ("2026-09-08", "Feria y Fiestas de Septiembre"): "exists",  # Día de Extremadura (the regional set)
        ("2026-12-08", "Inmaculada Concepción"): "exists",  # a national holiday already
        ("2027-05-15", "San Isidro Labrador"): "new",  # RRULE:FREQ=YEARLY
        ("2027-09-06", "Feria y Fiestas de Septiembre (traslado)"): "new",  # 2027-09-08 is an EXDATE
    }
    assert "Extremadura" in next(i["detail"] for i in p["items"] if i["date"] == "2026-09-08")
    r = await client.post(f"{ADMIN}/line/ical/preview", content=CIERRES, headers=ICS)
    items = {i["date"]: i for i in r.json()["items"]}
    assert items["2026-11-30"]["status"] == "new"  # a one-off closure day
    assert [items[d]["status"] for d in ("2026-12-28", "2026-12-29", "2026-12-30")] == ["new"] * 3  # multi-day, end exclusive
    assert "2026-12-31" not in items
    assert items["2026-12-16"]["status"] == "skipped" and "hora" in items["2026-12-16"]["detail"]  # a timed event
    assert items["2026-12-24"]["status"] == "conflict" and "horario especial" in items["2026-12-24"]["detail"]
    assert (await client.get(ADMIN)).json()["version"] == version_before  # a preview stores nothing
    # years=1: only this year's dates
    r = await client.post(f"{ADMIN}/line/ical/preview", params={"years": 1}, content=FIESTAS, headers=ICS)
    assert {i["date"][:4] for i in r.json()["items"]} == {"2026"}
    # the same file as a multipart upload
    r = await client.post(f"{ADMIN}/line/ical/preview", files={"file": ("fiestas.ics", FIESTAS, "text/calendar")})
    assert r.status_code == 200 and r.json()["source"] == "fiestas.ics" and len(r.json()["items"]) == 5


async def test_apply_is_one_version_with_rollback(client: httpx.AsyncClient, runtime: Runtime) -> None:
    p = (await client.post(f"{ADMIN}/line/ical/preview", content=CIERRES, headers=ICS)).json()
    new = [{"date": i["date"], "name": i["name"]} for i in p["items"] if i["status"] == "new"]
    assert len(new) == 5
    before = (await client.get(ADMIN)).json()["version"]
    assert (await client.get("/api/v1/hours", params={"at": "2026-12-29T10:00:00+01:00"})).json()["open"] is True
    r = await client.post(f"{ADMIN}/line/ical/apply", json={"items": new, "source": "cierres_2026.ics"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["version"] == before + 1 and len(out["added"]) == 5 and out["not_added"] == []
    h = (await client.get("/api/v1/hours", params={"at": "2026-12-29T10:00:00+01:00"})).json()
    assert (h["open"], h["rule"]) == (False, "holiday:Cierre de Navidad")
    versions = (await client.get(f"{ADMIN}/versions")).json()
    assert versions[-1]["actor"] == "key:test-admin" and "iCal" in versions[-1]["note"]
    # applying the same list again: nothing is new, nothing is stored
    r = await client.post(f"{ADMIN}/line/ical/apply", json={"items": new})
    assert r.status_code == 422 and r.json()["error_id"] == "nothing-to-import"
    assert (await client.get(ADMIN)).json()["version"] == before + 1
    # one rollback undoes the whole import
    r = await client.post(f"{ADMIN}/rollback", json={"version": before})
    assert r.status_code == 200
    assert (await client.get("/api/v1/hours", params={"at": "2026-12-29T10:00:00+01:00"})).json()["open"] is True
    assert (await runtime.calendars.get()).model.local_holidays == []


async def test_apply_rechecks_against_the_current_calendar(client: httpx.AsyncClient) -> None:
    """A special day added between preview and apply wins: that date is not added, the rest are."""
    items = [{"date": "2026-12-24", "name": "Nochebuena"}, {"date": "2026-12-28", "name": "Cierre de Navidad"}]
    await client.post(f"{ADMIN}/line/special-days", json={"date": "2026-12-24", "intervals": [], "reason": "cerrado"})
    r = await client.post(f"{ADMIN}/line/ical/apply", json={"items": items})
    assert r.status_code == 200
    assert [i["date"] for i in r.json()["added"]] == ["2026-12-28"]
    assert [(i["date"], i["status"]) for i in r.json()["not_added"]] == [("2026-12-24", "conflict")]
    bads: list[dict[str, Any]] = [{"items": []}, {"items": [{"date": "2026-02-30", "name": "x"}]},
                                  {"items": [{"date": "2026-03-01"}]}]
    for bad in bads:
        assert (await client.post(f"{ADMIN}/line/ical/apply", json=bad)).status_code == 422, bad
    assert (await client.post(f"{ADMIN}/nope/ical/apply", json={"items": items})).status_code == 404


@pytest.mark.parametrize(("body", "reason"), [
    (b"hola, esto no es un calendario", "BEGIN:VCALENDAR"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:2026XX01\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "no es válido"),
    (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\n" + b"".join(
        b"BEGIN:VEVENT\r\nUID:d%d\r\nDTSTART;VALUE=DATE:2020010%d\r\nRRULE:FREQ=DAILY\r\nSUMMARY:Diario\r\nEND:VEVENT\r\n"
        % (i, i) for i in (1, 2, 3)) + b"END:VCALENDAR\r\n", "más de 2000"),  # rules without end: cut, not expanded
    (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:y\r\nDTSTART:20260101T000000Z\r\nRRULE:FREQ=MINUTELY\r\n"
     b"SUMMARY:Cada minuto\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "cada hora"),
    (b"BEGIN:VCALENDAR\r\n" + b"X-RELLENO:" + b"a" * 1_100_000 + b"\r\nEND:VCALENDAR\r\n", "KiB"),
])
async def test_bad_files_are_refused_clearly(client: httpx.AsyncClient, body: bytes, reason: str) -> None:
    before = (await client.get(ADMIN)).json()["version"]
    r = await client.post(f"{ADMIN}/line/ical/preview", content=body, headers=ICS)
    assert r.status_code == 422, r.text
    assert reason in r.json()["message"]
    assert (await client.get(ADMIN)).json()["version"] == before


async def test_only_admins_import(client: httpx.AsyncClient, runtime: Runtime, staff: dict[str, str]) -> None:
    sup = (await runtime.desk.auth.login("supervisora", staff["password"])).token
    r = await client.post(f"{ADMIN}/line/ical/preview", content=FIESTAS,
                          headers={**ICS, "Authorization": f"Bearer {sup}"})
    assert r.status_code == 403
    # a cookie session from another site is refused before anything is read (CSRF)
    adm = (await runtime.desk.auth.login("admin", staff["password"])).token
    r = await client.post(f"{ADMIN}/line/ical/apply", json={"items": [{"date": "2026-12-28", "name": "x"}]},
                          headers={"Origin": "https://evil.example", "Cookie": f"atiende_session={adm}"})
    assert r.status_code == 403 and r.json()["error_id"] == "cross-site"


# ---- URLs --------------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        routes: dict[str, tuple[int, dict[str, str], bytes]] = {
            "/fiestas.ics": (200, {"Content-Type": "text/calendar"}, FIESTAS),
            "/mudado.ics": (302, {"Location": "/fiestas.ics"}, b""),
            "/a-fichero": (302, {"Location": "file:///etc/passwd"}, b""),
            "/a-otra-interna": (302, {"Location": "http://127.0.0.2:9/x.ics"}, b""),
            "/a-metadatos": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
            "/bucle": (302, {"Location": "/bucle"}, b""),
            "/enorme.ics": (200, {"Content-Type": "text/calendar"}, b"BEGIN:VCALENDAR\r\n" + b"X:" + b"a" * 1_200_000),
            "/no-hay": (404, {}, b"no"),
        }
        if self.path == "/lento.ics":
            time.sleep(1.5)
        status, headers, body = routes.get(self.path, (200, {}, FIESTAS))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if self.path != "/enorme.ics":  # chunk-less and length-less: the size cap must hold while reading
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ics_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def _allow_test_server(runtime: Runtime, timeout_s: float = 5.0) -> None:
    """The only way to reach 127.0.0.1: a fetcher built with that allowance, passed to the service's constructor."""
    svc = CalendarService(runtime.current_settings, runtime.store, runtime.clock,
                          ical_fetcher=IcalFetcher(allow_networks=("127.0.0.1/32",), timeout_s=timeout_s))
    runtime.__dict__["calendars"] = svc


async def test_url_from_a_real_server(client: httpx.AsyncClient, runtime: Runtime, ics_server: str) -> None:
    _allow_test_server(runtime)
    r = await client.post(f"{ADMIN}/line/ical/preview", json={"url": f"{ics_server}/fiestas.ics"})
    assert r.status_code == 200, r.text
    assert r.json()["source"] == f"{ics_server}/fiestas.ics" and len(r.json()["items"]) == 5
    r = await client.post(f"{ADMIN}/line/ical/preview", json={"url": f"{ics_server}/mudado.ics", "years": 1})
    assert r.status_code == 200 and len(r.json()["items"]) == 3  # a same-host redirect is followed (and re-checked)
    assert (await client.post(f"{ADMIN}/nope/ical/preview", json={"url": f"{ics_server}/fiestas.ics"})).status_code == 404


@pytest.mark.parametrize(("path", "reason"), [
    ("/a-fichero", "http:// o https://"),
    ("/a-otra-interna", "dirección interna"),
    ("/a-metadatos", "dirección interna"),
    ("/bucle", "demasiadas redirecciones"),
    ("/enorme.ics", "KiB"),
    ("/no-hay", "404"),
    ("/lento.ics", "no respondió"),
])
async def test_url_bounds(client: httpx.AsyncClient, runtime: Runtime, ics_server: str, path: str, reason: str) -> None:
    _allow_test_server(runtime, timeout_s=0.5)
    r = await client.post(f"{ADMIN}/line/ical/preview", json={"url": ics_server + path})
    assert r.status_code == 422, r.text
    assert r.json()["error_id"] == "ical-url-refused" and reason in r.json()["message"], r.json()


@pytest.mark.parametrize(("url", "reason"), [
    ("http://127.0.0.1:1/fiestas.ics", "dirección interna"),  # the default: loopback refused
    ("http://localhost/x.ics", "dirección interna"),
    ("http://[::1]/x.ics", "dirección interna"),
    ("http://[::ffff:127.0.0.1]/x.ics", "dirección interna"),
    ("http://10.1.2.3/x.ics", "dirección interna"),
    ("http://192.168.1.1/x.ics", "dirección interna"),
    ("http://169.254.169.254/latest/meta-data/", "dirección interna"),
    ("http://224.0.0.1/x.ics", "dirección interna"),
    ("http://0.0.0.0/x.ics", "dirección interna"),
    ("file:///etc/passwd", "http:// o https://"),
    ("ftp://example.org/x.ics", "http:// o https://"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "http:// o https://"),
    ("http://user:pw@example.org/x.ics", "usuario"),
    ("http:///x.ics", "servidor"),
    ("http://example.org:99999/x.ics", "no es válida"),
])
async def test_ssrf_refused_by_default(client: httpx.AsyncClient, url: str, reason: str) -> None:
    """With the service as the runtime builds it, nothing inside is reachable: refused before any connection."""
    r = await client.post(f"{ADMIN}/line/ical/preview", json={"url": url})
    assert r.status_code == 422, r.text
    assert r.json()["error_id"] == "ical-url-refused" and reason in r.json()["message"], r.json()
