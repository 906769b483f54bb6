"""Citizens' rights over their data (GDPR arts. 15 and 17, LOPDGDD): export everything held about one citizen, and
erase it; the retention job (retention.py) uses the same anonymisation.

    doc = await desk.privacy.export(citizen_id, actor="user:marta")   # JSON-able dict; audited
    summary = await desk.privacy.erase(citizen_id, actor="user:marta") # audited, without personal data
    await desk.privacy.anonymise_ticket(ref)                           # keep the ticket as an anonymous statistic

What erasure keeps: each ticket's kind, queue, channel, status and times (reports and the duty to account for
the service need them), the audit trail of who did what (without the texts), and counters. What goes: the
citizen record and every identity index, ticket subjects, bodies and channel addressing, every interaction's
text and data (messages, transcripts, notes), the web-chat log, the call records' caller, transcripts and entities,
the callbacks' number, and the voicemail recordings on disk.

Call records and callbacks are not indexed by citizen; they are found by the tickets' trace ids, references and
the citizen's phone numbers among those that started within a day before each ticket (`WINDOW_S`), so an erasure
reads a bounded slice of them, not all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.clock import Clock
from core.store import Store
from desk.audit import AuditLog
from desk.citizens import CitizenService
from desk.models import Citizen, Interaction, Ticket
from desk.tickets import TicketService

ERASED = "[suprimido]"
WINDOW_S = 86_400
_SAFE_ID = re.compile(r"^[A-Za-z0-9._@-]{1,200}$")


def anonymous_call(raw: str) -> str:
    """A call record without the person: caller, transcripts, entities, variables, what was said, step details."""
    rec = json.loads(raw)
    rec.update({"caller": "", "transcripts": [], "entities": {}, "vars": {}, "said": []})
    for entry in rec.get("path") or []:
        if isinstance(entry, dict):
            entry["detail"] = {}
    rec["anonymised"] = True
    return json.dumps(rec, ensure_ascii=False)


class PrivacyService:
    def __init__(self, store: Store, clock: Clock, citizens: CitizenService, tickets: TicketService, audit: AuditLog,
                 data_dir: Callable[[], Path]) -> None:
        self.store = store
        self.clock = clock
        self.citizens = citizens
        self.tickets = tickets
        self.audit = audit
        self.data_dir = data_dir

    # ---- what belongs to a citizen -------------------------------------------------------------

    async def _tickets_of(self, c: Citizen) -> list[Ticket]:
        return await self.tickets.get_many(await self.citizens.tickets(c.id, limit=10_000))

    async def _related(self, index: str, key: Callable[[str], str], tickets: list[Ticket], phones: set[str],
                       match: Callable[[dict[str, Any], set[str], set[str], set[str]], bool]) -> list[tuple[str, str]]:
        """(id, raw JSON) of the call records / callbacks that started near the tickets and belong to them."""
        refs = {t.ref for t in tickets}
        traces = {t.trace_id for t in tickets if t.trace_id}
        ids: set[str] = set()
        for t in tickets:
            lo = t.created_at.timestamp() - WINDOW_S
            ids |= {str(i) for i in await self.store.redis.zrangebyscore(index, lo, t.created_at.timestamp() + 3600)}
        found: list[tuple[str, str]] = []
        ordered = sorted(ids)
        for i in range(0, len(ordered), 200):
            chunk = ordered[i:i + 200]
            for cid, raw in zip(chunk, await self.store.redis.mget([key(x) for x in chunk]), strict=True):
                if raw is None:
                    continue
                try:
                    doc = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(doc, dict) and match(doc, refs, traces, phones):
                    found.append((cid, str(raw)))
        return found

    async def _calls(self, tickets: list[Ticket], phones: set[str]) -> list[tuple[str, str]]:
        def match(d: dict[str, Any], refs: set[str], traces: set[str], phones: set[str]) -> bool:
            return d.get("ticket_ref") in refs or d.get("trace_id") in traces or _digits(d.get("caller")) in phones

        return await self._related(self.store.keys.calls, self.store.keys.call, tickets, phones, match)

    async def _callbacks(self, tickets: list[Ticket], phones: set[str]) -> list[tuple[str, str]]:
        def match(d: dict[str, Any], refs: set[str], traces: set[str], phones: set[str]) -> bool:
            return d.get("ticket_ref") in refs or d.get("trace_id") in traces or _digits(d.get("phone")) in phones

        return await self._related(self.store.keys.callbacks_all, self.store.keys.callback, tickets, phones, match)

    # ---- export ---------------------------------------------------------------------------------

    async def export(self, citizen_id: str, *, actor: str) -> dict[str, Any]:
        c = await self.citizens.get(citizen_id)
        tickets = await self._tickets_of(c)
        phones = {_digits(i.value) for i in c.identities if i.kind in ("phone", "whatsapp")}
        out_tickets = []
        for t in tickets:
            out_tickets.append({"ticket": t.model_dump(mode="json"),
                                "interactions": [i.model_dump(mode="json") for i in await self.tickets.interactions(t.ref)]})
        calls = [json.loads(raw) for _, raw in await self._calls(tickets, phones)]
        callbacks = [json.loads(raw) for _, raw in await self._callbacks(tickets, phones)]
        await self.audit.record(actor, "citizen.export", c.id, {"tickets": len(tickets), "calls": len(calls)})
        return {"exported_at": self.clock.now().isoformat(), "citizen": c.model_dump(mode="json"), "tickets": out_tickets,
                "calls": calls, "callbacks": callbacks}

    # ---- erasure and anonymisation --------------------------------------------------------------

    async def anonymise_ticket(self, ref: str) -> bool:
        """Strip a ticket of everything personal, keeping what statistics need; False if it was already done."""
        k = self.store.keys
        key = k.ticket(ref)
        raw = await self.store.redis.get(key)
        if raw is None:
            return False
        t = Ticket.model_validate_json(raw)
        if t.meta.get("anonymised"):
            return False
        voicemail = t.meta.get("voicemail")
        t.subject, t.body, t.citizen_id = ERASED, "", None
        t.meta = {"anonymised": True}
        items = [Interaction.model_validate_json(x) for x in await self.store.redis.lrange(k.ticket_interactions(ref), 0, -1)]
        call_ids = {str(i.data.get("call_id")) for i in items if i.data.get("call_id")}
        if isinstance(voicemail, str):
            call_ids.add(voicemail)
        sessions = {str(v) for v in (json.loads(raw).get("meta") or {}).values() if isinstance(v, str)}
        for it in items:
            it.text = ERASED if it.text else ""
            it.data = {}
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, t.model_dump_json())  # updated_at untouched: retention cursors follow it
            pipe.delete(k.ticket_interactions(ref))
            if items:
                pipe.rpush(k.ticket_interactions(ref), *[i.model_dump_json() for i in items])
            pipe.delete(k.ticket_contact(ref))
            for s in sessions:
                if _SAFE_ID.match(s):
                    pipe.delete(k.webchat_log(s))
            await pipe.execute()
        for call_id in call_ids:
            await self.delete_recording(call_id)
        return True

    async def delete_recording(self, call_id: str) -> bool:
        if not _SAFE_ID.match(call_id) or call_id.startswith("."):
            return False
        path = self.data_dir() / "voicemail" / f"{call_id}.wav"
        removed = False
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)
            removed = True
        k = self.store.keys
        raw = await self.store.redis.get(k.voicemail(call_id))
        if raw:
            doc = json.loads(raw)
            doc.update({"path": "", "deleted": True, "caller": ""})
            await self.store.redis.set(k.voicemail(call_id), json.dumps(doc))
        return removed

    async def erase(self, citizen_id: str, *, actor: str) -> dict[str, Any]:
        """Erase a citizen (and the citizens merged into them): see the module's docstring for what is kept."""
        c = await self.citizens.get(citizen_id)
        k = self.store.keys
        tickets = await self._tickets_of(c)
        phones = {_digits(i.value) for i in c.identities if i.kind in ("phone", "whatsapp")}
        calls = await self._calls(tickets, phones)
        callbacks = await self._callbacks(tickets, phones)
        done = 0
        for t in tickets:
            done += await self.anonymise_ticket(t.ref)
        for cid, raw in calls:
            await self.store.redis.set(k.call(cid), anonymous_call(raw))
        for cid, raw in callbacks:
            doc = json.loads(raw)
            doc["phone"] = ""
            vm = doc.get("voicemail")
            if isinstance(vm, dict):
                vm.update({"transcript": "", "path": ""})
                await self.delete_recording(str(vm.get("call_id", "")))
            await self.store.redis.set(k.callback(cid), json.dumps(doc, ensure_ascii=False))
        merged = await self._merged_into(c.id)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for person in [c, *merged]:
                for ident in person.identities:
                    pipe.delete(k.citizen_by_identity(ident.kind, ident.value))
                pipe.delete(k.citizen(person.id))
                pipe.delete(k.citizen_tickets(person.id))
                pipe.zrem(k.citizens, person.id)
            await pipe.execute()
        summary = {"citizen_id": c.id, "tickets_anonymised": done, "calls_anonymised": len(calls),
                   "callbacks_anonymised": len(callbacks), "merged_erased": len(merged)}
        await self.audit.record(actor, "citizen.erase", c.id, summary)
        return summary

    async def _merged_into(self, citizen_id: str) -> list[Citizen]:
        """Citizens that lost a merge into this one (they keep their identities in their record)."""
        out: list[Citizen] = []
        prefix = self.store.keys.citizen("")
        async for key in self.store.redis.scan_iter(match=prefix + "C*", count=1000):
            rest = str(key)[len(prefix):]
            if ":" in rest:
                continue
            raw = await self.store.redis.get(key)
            if raw and json.loads(raw).get("merged_into") == citizen_id:
                out.append(Citizen.model_validate_json(raw))
        return out


def _digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value or ""))[-9:] or "-"
