"""Call detail records: one flat row per call, built from its call record (ivr/records.py) and its disposition,
for the CSV export and a signed webhook per finished call (the council's CRM).

Also the signed webhook sender the desk's SLA alerts use (`WebhookSender`): bodies are JSON, signed with
HMAC-SHA256 over the exact bytes sent (`X-Atiende-Signature: sha256=<hex>`), queued in memory (bounded: the
oldest is dropped when full, never the caller blocked) and posted by one worker task with bounded retries and
doubling backoff. The worker exists only while there is something to send, so an idle sender holds no task and no
connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import hashlib
import hmac
import io
import json
import logging
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel

from config.desk import Cdr as CdrConfig
from config.desk import Webhook
from core.clock import Clock
from core.errors import RateLimited
from core.store import Store
from ivr.contact import Session
from ivr.records import CallRecords

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Atiende-Signature"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`: receivers compute the same and compare in constant time."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(sign(secret, body), str(header))


class WebhookSender:
    """Posts signed JSON events to the webhook `config()` names at send time (so a reload applies)."""

    def __init__(self, config: Callable[[], Webhook], clock: Clock, name: str) -> None:
        self.config = config
        self.clock = clock
        self.name = name
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._worker: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self.config().url)

    def submit(self, event: str, payload: dict[str, Any]) -> bool:
        """Queue one event (never waits); False when the webhook is off. The body carries a unique `id` and
        `sent_at` so a receiver can drop retries it already has and refuse old replays."""
        cfg = self.config()
        if not cfg.url:
            return False
        body = json.dumps({"id": secrets.token_hex(12), "event": event, "sent_at": self.clock.now().isoformat(),
                           "data": payload}, ensure_ascii=False, default=str, separators=(",", ":")).encode()
        self._queue.append((event, body))
        while len(self._queue) > cfg.queue_max:
            self._queue.popleft()
            self.dropped += 1
            log.warning("webhook %s: queue full, the oldest event was dropped", self.name)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"webhook:{self.name}")
        return True

    @property
    def pending(self) -> int:
        return len(self._queue) + (1 if self._worker is not None and not self._worker.done() else 0)

    async def _run(self) -> None:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            while self._queue:
                event, body = self._queue.popleft()
                await self._deliver(client, event, body)

    async def _deliver(self, client: httpx.AsyncClient, event: str, body: bytes) -> bool:
        cfg = self.config()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(cfg.secret, body),
                   "X-Atiende-Event": event, "User-Agent": "Atiende-webhook"}
        delay = cfg.backoff_s
        for attempt in range(1, cfg.attempts + 1):
            try:
                resp = await client.post(cfg.url, content=body, headers=headers, timeout=cfg.timeout_s)
                if 200 <= resp.status_code < 300:
                    self.sent += 1
                    return True
                # A 4xx other than 408/429 will not get better by repeating the same body.
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    log.warning("webhook %s refused %s: HTTP %s", self.name, event, resp.status_code)
                    break
                reason = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if attempt < cfg.attempts:
                log.info("webhook %s: %s failed (%s), retry %d in %.1f s", self.name, event, reason, attempt, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 300.0)
        self.failed += 1
        log.warning("webhook %s: %s not delivered after %d attempt(s)", self.name, event, cfg.attempts)
        return False

    async def drain(self, within: float) -> bool:
        """Wait until everything queued was delivered or given up (tests, shutdown); False when `within` s pass."""
        worker = self._worker
        if worker is None:
            return True
        done, _ = await asyncio.wait({worker}, timeout=within)
        return bool(done) and not self._queue

    async def close(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._queue.clear()


# ---- records ----------------------------------------------------------------------------------------

_DIGIT = re.compile(r"\d")


def mask_caller(value: str | None, keep: int = 3) -> str:
    """The caller as a CDR may show it: every digit hidden but the last `keep` (`••••••123`); a SIP URI's
    user part only (its host can name the citizen's provider); anything without digits hidden whole."""
    if not value:
        return ""
    raw = str(value)
    if raw.lower().startswith(("sip:", "sips:", "tel:")):
        raw = raw.split(":", 1)[1].partition("@")[0].split(";", 1)[0]
    digits = "".join(_DIGIT.findall(raw))
    if not digits:
        return "•" * min(len(raw), 12)
    keep = min(keep, max(0, len(digits) - 3))  # a short number keeps less than it hides
    return "•" * (len(digits) - keep) + (digits[-keep:] if keep else "")


class CallDetail(BaseModel):
    call_id: str
    trace_id: str
    channel: str
    caller: str  # masked
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    ivr_path: list[str]
    intent: str | None
    queue: str | None
    agent: str | None
    outcome: str | None
    ended_by: str
    ticket_ref: str | None
    disposition: str | None
    disposition_label: str | None
    survey: int | None
    wait_s: float | None = None  # queued until an agent answered
    estimated_wait_s: int | None = None  # what the caller was told
    supervised_by: list[str] = []
    recordings: list[str] = []


CSV_FIELDS = list(CallDetail.model_fields)


def call_detail(rec: Session, disposition: dict[str, Any] | None, keep_digits: int) -> CallDetail:
    path = [f"{p.flow}:{p.verb}" + (f":{p.id}" if p.id else "") for p in rec.path]
    agent = rec.vars.get("agent")
    return CallDetail(
        call_id=rec.call_id, trace_id=rec.trace_id, channel=rec.channel, caller=mask_caller(rec.caller, keep_digits),
        started_at=rec.started_at, ended_at=rec.ended_at,
        duration_s=round((rec.ended_at - rec.started_at).total_seconds(), 1) if rec.ended_at else None,
        ivr_path=path, intent=rec.intent, queue=rec.queue, agent=str(agent) if agent else None, outcome=rec.outcome,
        ended_by=rec.ended_by, ticket_ref=rec.ticket_ref,
        disposition=str(disposition["code"]) if disposition else None,
        disposition_label=str(disposition.get("label") or "") or None if disposition else None,
        survey=rec.survey, wait_s=_number(rec.vars.get("waited_s")), estimated_wait_s=_int(rec.vars.get("estimated_wait_s")),
        supervised_by=[str(x) for x in rec.vars.get("supervised_by") or []],
        recordings=[str(x) for x in rec.vars.get("recordings") or []])


def _number(value: Any) -> float | None:
    return round(float(value), 1) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cell(value: Any, field: str = "") -> str:
    """A CSV cell that a spreadsheet will not run: text starting with = + - @ (or a tab/CR) gets a leading
    apostrophe, so a caller's words or a crafted disposition label cannot become a formula (CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, list):
        text = (" > " if field == "ivr_path" else "; ").join(str(v) for v in value)  # a path, or a set
    elif isinstance(value, datetime):
        text = value.isoformat()
    else:
        text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


PAGE = 500  # records read (and parsed in one thread hop) at a time by the export
EXPORTS_AT_ONCE = 1  # CSV exports a node streams at once; another one is refused (429) meanwhile


def _parse_page(raws: list[Any], disps: list[Any], keep: int, left: int) -> list[CallDetail]:
    """The CDRs of one page of call records (with their disposition values), at most `left`. CPU only: run it
    in a thread."""
    out: list[CallDetail] = []
    for raw, d in zip(raws, disps, strict=True):
        if len(out) >= left:
            break
        if raw is None:
            continue
        rec = Session.model_validate_json(raw)
        if rec.channel != "voice" or rec.ended_at is None:
            continue  # chats are contacts, not calls; a call in progress has its CDR when it ends
        try:
            dv = json.loads(d) if d else None
        except ValueError:
            dv = None
        out.append(call_detail(rec, dv if isinstance(dv, dict) and "code" in dv else None, keep))
    return out


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def _csv_page(page: list[CallDetail]) -> str:
    return _csv_text([[_cell(getattr(row, f), f) for f in CSV_FIELDS] for row in page])


class ExportSlot:
    """A node's export slot, held from the request until its response is done; `release` may be called more
    than once (the body's end and the response's end both call it)."""

    def __init__(self, done: Callable[[], None]) -> None:
        self._done: Callable[[], None] | None = done

    def release(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()


class CdrService:
    """Builds CDRs from call records and disposition keys; exports CSV; sends the per-call webhook."""

    def __init__(self, calls: CallRecords, store: Store, clock: Clock, config: Callable[[], CdrConfig]) -> None:
        self.calls = calls
        self.store = store
        self.config = config
        self.webhook = WebhookSender(lambda: config().webhook, clock, "cdr")
        self._building: set[asyncio.Task[None]] = set()
        self._exports = 0

    async def disposition(self, call_id: str) -> dict[str, Any] | None:
        raw = await self.store.redis.get(self.store.keys.call_disposition(call_id))
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            return None
        return value if isinstance(value, dict) and "code" in value else None

    async def detail(self, call_id: str) -> CallDetail:
        rec = await self.calls.get(call_id)
        return call_detail(rec, await self.disposition(call_id), self.config().keep_digits)

    def export_slot(self) -> ExportSlot:
        """Take this node's export slot, or refuse (429) while another export runs here: each export reads and
        parses up to `max_export` records, and two at once would only halve each one's speed."""
        if self._exports >= EXPORTS_AT_ONCE:
            raise RateLimited("Ya hay una exportación de CDR en curso en este nodo. Espere a que termine y "
                              "vuelva a intentarlo.", {"exports_at_once": EXPORTS_AT_ONCE},
                              error_id="export-in-progress")
        self._exports += 1
        return ExportSlot(self._export_done)

    def _export_done(self) -> None:
        self._exports -= 1

    async def pages(self, since: datetime | None, until: datetime | None) -> AsyncIterator[list[CallDetail]]:
        """Oldest first within [since, until], at most `max_export`, a page at a time so memory stays flat. Each
        page is parsed in a thread: 500 records are tens of ms of CPU, which must not stall the loop that paces
        the calls' audio."""
        k = self.store.keys
        lo = since.timestamp() if since else "-inf"
        hi = until.timestamp() if until else "+inf"
        keep, left, start = self.config().keep_digits, self.config().max_export, 0
        while left > 0:
            ids = [str(i) for i in await self.store.redis.zrangebyscore(k.calls, lo, hi, start=start, num=min(PAGE, left))]
            if not ids:
                break
            start += len(ids)
            raws = await self.store.redis.mget([k.call(i) for i in ids])
            disp = await self.store.redis.mget([k.call_disposition(i) for i in ids])
            page = await asyncio.to_thread(_parse_page, raws, disp, keep, left)
            left -= len(page)
            if page:
                yield page

    async def rows(self, since: datetime | None, until: datetime | None) -> AsyncIterator[CallDetail]:
        async for page in self.pages(since, until):
            for row in page:
                yield row

    async def csv(self, since: datetime | None, until: datetime | None) -> AsyncGenerator[str, None]:
        """The CSV a page at a time (header first), each page formatted in a thread like it was parsed."""
        yield _csv_text([CSV_FIELDS])
        async for page in self.pages(since, until):
            yield await asyncio.to_thread(_csv_page, page)

    def call_ended(self, record: Session) -> None:
        """The IVR is done with a call: send its CDR (never waits; the disposition, if already set, is read
        from the store in the background)."""
        if record.channel != "voice" or not self.webhook.enabled:
            return
        task = asyncio.get_running_loop().create_task(self._send(record, "call.ended"))
        self._building.add(task)
        task.add_done_callback(self._building.discard)

    def disposition_set(self, record: Session) -> None:
        """A disposition arrived after the call's CDR went out: the CRM gets the completed CDR."""
        if record.channel != "voice" or not self.webhook.enabled:
            return
        task = asyncio.get_running_loop().create_task(self._send(record, "call.disposition"))
        self._building.add(task)
        task.add_done_callback(self._building.discard)

    async def _send(self, record: Session, event: str) -> None:
        try:
            disp = await asyncio.wait_for(self.disposition(record.call_id), 2.0)
        except Exception as exc:  # the store is away: the CDR goes without a disposition rather than not at all
            log.info("cdr %s: disposition unreadable (%s)", record.call_id, exc)
            disp = None
        cdr = call_detail(record, disp, self.config().keep_digits)
        self.webhook.submit(event, cdr.model_dump(mode="json"))

    async def drain(self, within: float) -> bool:
        if self._building:
            await asyncio.wait(set(self._building), timeout=within)
        return await self.webhook.drain(within)

    async def close(self) -> None:
        for task in list(self._building):
            task.cancel()
        await asyncio.gather(*self._building, return_exceptions=True)
        await self.webhook.close()
