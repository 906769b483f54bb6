"""Holidays from an iCalendar file (RFC 5545) or URL: parse, expand recurrences, classify against a calendar.

Parsing is `icalendar`; recurrence expansion (RRULE, RDATE, EXDATE, moved occurrences with RECURRENCE-ID) is
`recurring-ical-events`, so yearly local festivities become one holiday per year in the window asked for.
An all-day event covers every date from DTSTART up to DTEND (exclusive); a timed event is not a day off and is
listed as skipped, so the admin sees it and nothing is silently lost.

A URL is fetched by `IcalFetcher`, which is the only code here that talks to the network. It refuses what an
attacker would use it for (server-side request forgery): schemes other than http/https, hosts that resolve to
loopback, private, link-local, multicast, reserved or unspecified addresses (checked on every redirect hop, and
the connection goes to the address that was checked, so a DNS answer that changes between check and connect
cannot reach an inside address), more than a few redirects, slow or large answers. A test may allow its own
local server only through the constructor (`allow_networks`), never through configuration or the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import time
from collections.abc import Callable, Collection, Iterable
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel

from core.errors import InvalidInput

MAX_BYTES = 1_048_576  # a town's calendar is a few KiB; a national one with years of events well under 1 MiB
MAX_OCCURRENCES = 2000  # dates one import may list (a DAILY rule without end is refused, not expanded forever)
MAX_YEARS = 5
MAX_REDIRECTS = 3
FETCH_TIMEOUT_S = 10.0
NAME_MAX = 120

Status = Literal["new", "exists", "conflict", "skipped"]


class IcalItem(BaseModel):
    """One row of the preview table."""

    date: dt.date
    name: str
    status: Status
    detail: str = ""  # Spanish, for the table: why it is not new


class IcalPreview(BaseModel):
    calendar: str
    source: str
    start: dt.date
    end: dt.date  # inclusive
    items: list[IcalItem]

    @property
    def new(self) -> list[IcalItem]:
        return [i for i in self.items if i.status == "new"]


class Occurrence(BaseModel):
    date: dt.date
    name: str
    timed: bool = False


def _clean_name(value: object) -> str:
    text = "".join(c if c.isprintable() else " " for c in str(value or "")).strip()
    return " ".join(text.split())[:NAME_MAX] or "Festivo"


def window(today: dt.date, years: int) -> tuple[dt.date, dt.date]:
    """From 1 January of `today`'s year to 31 December `years - 1` years later (both included)."""
    if not 1 <= years <= MAX_YEARS:
        raise InvalidInput(f"years: between 1 and {MAX_YEARS}", [{"loc": "years", "reason": "out of range"}])
    return dt.date(today.year, 1, 1), dt.date(today.year + years - 1, 12, 31)


def parse(data: bytes, start: dt.date, end: dt.date) -> list[Occurrence]:
    """Every event date between `start` and `end` (inclusive), recurrences expanded, sorted by date.

    Raises InvalidInput for what is not an iCalendar file, for a file with no events and for an expansion
    beyond MAX_OCCURRENCES."""
    import icalendar
    import recurring_ical_events

    if len(data) > MAX_BYTES:
        raise InvalidInput(f"el fichero iCalendar supera {MAX_BYTES // 1024} KiB", [{"loc": "file", "reason": "too large"}])
    text = data.decode("utf-8-sig", errors="replace")
    if "BEGIN:VCALENDAR" not in text.upper():
        raise InvalidInput("no es un fichero iCalendar (falta BEGIN:VCALENDAR)", [{"loc": "file", "reason": "not iCalendar"}])
    out: list[Occurrence] = []
    try:
        cal = icalendar.Calendar.from_ical(text)
        for ev in cal.walk("VEVENT"):
            rule = ev.get("RRULE")
            rules = rule if isinstance(rule, list) else [rule] if rule is not None else []
            for r in rules:
                if str((r.get("FREQ") or [""])[0]).upper() in ("SECONDLY", "MINUTELY", "HOURLY"):
                    raise InvalidInput("una regla de repetición cada hora o más a menudo no describe festivos",
                                       [{"loc": "file", "reason": "sub-daily RRULE"}])
        query = recurring_ical_events.of(cal)
        # A month at a time, so that a rule without end stops at MAX_OCCURRENCES instead of being expanded whole.
        month = start.replace(day=1)
        while month <= end and len(out) <= MAX_OCCURRENCES:
            following = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            for ev in query.between(month, following):
                first = ev.get("DTSTART")
                if first is None:
                    continue
                begin = first.dt
                day0 = begin.date() if isinstance(begin, dt.datetime) else begin
                if day0 >= following or (day0 < month and month > start):
                    continue  # a multi-day event that began in an earlier month of the window was counted there
                name = _clean_name(ev.get("SUMMARY"))
                if isinstance(begin, dt.datetime):
                    if start <= day0 <= end:
                        out.append(Occurrence(date=day0, name=name, timed=True))
                    continue
                last = ev.get("DTEND")
                stop = last.dt if last is not None and not isinstance(last.dt, dt.datetime) else begin + dt.timedelta(days=1)
                day = begin
                while day < max(stop, begin + dt.timedelta(days=1)) and day <= end and len(out) <= MAX_OCCURRENCES:
                    if day >= start:
                        out.append(Occurrence(date=day, name=name))
                    day += dt.timedelta(days=1)
            month = following
            if len(out) > MAX_OCCURRENCES:
                raise InvalidInput(f"el calendario da más de {MAX_OCCURRENCES} días en el periodo; revise sus reglas "
                                   "de repetición o importe menos años", [{"loc": "file", "reason": "too many occurrences"}])
    except InvalidInput:
        raise
    except Exception as exc:  # both libraries raise ValueError, KeyError, their own errors... for broken input
        raise InvalidInput(f"el fichero iCalendar no es válido: {str(exc)[:200]}",
                           [{"loc": "file", "reason": str(exc)[:200]}]) from None
    return sorted(out, key=lambda o: (o.date, o.timed, o.name))


def classify(occurrences: Iterable[Occurrence], local_holidays: dict[dt.date, str], special_days: dict[dt.date, str],
             closures: dict[dt.date, str], public: Callable[[dt.date], str | None] = lambda _d: None) -> list[IcalItem]:
    """Each occurrence against the calendar as it is: new, already there, conflicting with a special day, or
    skipped (a timed event). A date listed twice is new only the first time."""
    seen: set[dt.date] = set()
    items: list[IcalItem] = []
    for o in occurrences:
        if o.timed:
            items.append(IcalItem(date=o.date, name=o.name, status="skipped",
                                  detail="evento con hora, no de día completo: no se importa"))
        elif o.date in seen:
            items.append(IcalItem(date=o.date, name=o.name, status="exists", detail="repetido en el fichero"))
        elif o.date in local_holidays:
            items.append(IcalItem(date=o.date, name=o.name, status="exists",
                                  detail=f"ya es festivo local: {local_holidays[o.date]}"))
        elif o.date in special_days:
            items.append(IcalItem(date=o.date, name=o.name, status="conflict",
                                  detail=f"ese día tiene horario especial ({special_days[o.date]}), que prevalece; "
                                         "quítelo primero si debe ser festivo"))
        elif public(o.date):
            items.append(IcalItem(date=o.date, name=o.name, status="exists",
                                  detail=f"ya es festivo nacional o autonómico: {public(o.date)}"))
        elif o.date in closures:
            items.append(IcalItem(date=o.date, name=o.name, status="exists", detail=f"ya está cerrado: {closures[o.date]}"))
        else:
            items.append(IcalItem(date=o.date, name=o.name, status="new"))
        if not o.timed:
            seen.add(o.date)
    return items


# ---- fetching a URL ------------------------------------------------------------------------------------------


def _forbidden_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_reserved
            or addr.is_unspecified or not addr.is_global)


class IcalFetcher:
    """GET an iCalendar URL with the bounds above. `allow_networks` (tests only, by constructor) lets through
    addresses in those networks that would otherwise be refused, e.g. ("127.0.0.1/32",) for a test's server."""

    def __init__(self, *, allow_networks: Collection[str] = (), timeout_s: float = FETCH_TIMEOUT_S,
                 max_bytes: int = MAX_BYTES) -> None:
        self._allowed = [ipaddress.ip_network(n) for n in allow_networks]
        self._timeout = timeout_s
        self._max = max_bytes

    @staticmethod
    def _refuse(message: str, reason: str) -> InvalidInput:
        return InvalidInput(message, [{"loc": "url", "reason": reason}], error_id="ical-url-refused")

    async def _address(self, host: str, port: int) -> str:
        """The one address to connect to, after checking every address the name resolves to."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise self._refuse(f"no se puede resolver el servidor {host!r}", f"dns: {exc}") from None
        addrs = []
        for info in infos:
            raw = str(info[4][0]).split("%", 1)[0]
            addr = ipaddress.ip_address(raw)
            if _forbidden_address(addr) and not any(addr in n for n in self._allowed):
                raise self._refuse(f"la URL apunta a una dirección interna ({addr}); solo se admiten servidores públicos",
                                   "private address")
            addrs.append(raw)
        if not addrs:
            raise self._refuse(f"no se puede resolver el servidor {host!r}", "dns: no address")
        return addrs[0]

    def _check_url(self, url: str) -> tuple[str, str, int]:
        if len(url) > 2000:
            raise self._refuse("la URL es demasiado larga", "too long")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise self._refuse("la URL no es válida", "malformed") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise self._refuse("solo se admiten URL http:// o https://", f"scheme {parts.scheme!r}")
        if not parts.hostname:
            raise self._refuse("la URL no tiene servidor", "no host")
        if parts.username or parts.password:
            raise self._refuse("la URL no puede llevar usuario ni contraseña", "credentials in URL")
        return parts.scheme.lower(), parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80)

    async def fetch(self, url: str) -> bytes:
        deadline = time.monotonic() + self._timeout
        async with httpx.AsyncClient(follow_redirects=False, timeout=self._timeout, trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                scheme, host, port = self._check_url(url)
                ip = await self._address(host, port)
                parts = urlsplit(url.strip())
                netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
                pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
                host_header = parts.netloc.rsplit("@", 1)[-1]
                try:
                    async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                        request = client.build_request("GET", pinned, headers={"Host": host_header,
                                                                               "Accept": "text/calendar, */*;q=0.5"},
                                                       extensions={"sni_hostname": host})
                        resp = await client.send(request, stream=True)
                        try:
                            if resp.is_redirect:
                                location = resp.headers.get("location", "")
                                url = str(httpx.URL(url).join(location))
                                continue
                            if resp.status_code != 200:
                                raise self._refuse(f"el servidor respondió {resp.status_code}", f"status {resp.status_code}")
                            declared = resp.headers.get("content-length")
                            if declared and declared.isdigit() and int(declared) > self._max:
                                raise self._refuse(f"el fichero supera {self._max // 1024} KiB", "too large")
                            body = bytearray()
                            async for chunk in resp.aiter_bytes():
                                body += chunk
                                if len(body) > self._max:
                                    raise self._refuse(f"el fichero supera {self._max // 1024} KiB", "too large")
                            return bytes(body)
                        finally:
                            await resp.aclose()
                except TimeoutError:
                    raise self._refuse(f"el servidor no respondió en {self._timeout:g} s", "timeout") from None
                except httpx.HTTPError as exc:
                    raise self._refuse(f"no se pudo descargar la URL: {type(exc).__name__}", str(exc)[:200]) from None
        raise self._refuse(f"demasiadas redirecciones (más de {MAX_REDIRECTS})", "redirects")
