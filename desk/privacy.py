"""Citizens' rights over their data (GDPR arts. 15 and 17, LOPDGDD): export everything held about one citizen, and
erase it; the retention job (retention.py) uses the same anonymisation.

    doc = await desk.privacy.export(citizen_id, actor="user:marta")   # JSON-able dict; audited
    summary = await desk.privacy.erase(citizen_id, actor="user:marta") # audited, without personal data
    await desk.privacy.anonymise_ticket(ref)                           # keep the ticket as an anonymous statistic

What erasure keeps: each ticket's kind, queue, channel, status and times (reports and the duty to account for
the service need them), the audit trail of who did what (without the texts), and counters. What goes: the
citizen record and every identity index, ticket subjects, bodies and channel addressing, every interaction's
text and data (messages, transcripts, notes), the web-chat log, the call records' caller, transcripts and entities,
the callbacks' number, the voicemail recordings and the recordings of agent calls (the file on this node's disk,
the shared copy in Redis or in the shared directory; the recording's record stays, marked deleted, so the call
still says it was recorded), and the files the citizen sent (ticket attachments and the files still waiting for a
ticket). The summary and the audit entry count what was deleted.

Attachments are content-addressed (desk_api/channels/media.py): the same bytes sent on two tickets in one month are
one file. Erasure deletes it all the same: keeping a citizen's file because someone else might have sent identical
bytes would make the erasure depend on other people; the other ticket then says its file is gone (404).

Call records and callbacks are not indexed by citizen; they are found by the tickets' trace ids, references and
the citizen's phone numbers among those that started within a day before each ticket (`WINDOW_S`), so an erasure
reads a bounded slice of them, not all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.clock import Clock
from core.store import Store
from desk.audit import AuditLog
from desk.citizens import CitizenService
from desk.models import Citizen, Interaction, Ticket
from desk.tickets import TicketService
from ivr.conference import RECORDING_PREFIX

ERASED = "[suprimido]"
WINDOW_S = 86_400
_SAFE_ID = re.compile(r"^[A-Za-z0-9._@-]{1,200}$")
_RECORDING_ID = re.compile(r"^" + re.escape(RECORDING_PREFIX) + r"[0-9a-f]{20}$")
# What a deletion tally counts (erasure summary, retention round): voicemails, agent-call recordings, files.
RECORDINGS, CALL_RECORDINGS, ATTACHMENTS = "recordings", "call_recordings", "attachments"


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
                 data_dir: Callable[[], Path], shared_dir: Callable[[], Path | None] = lambda: None) -> None:
        """`shared_dir`: the directory every node mounts when `voicemail.storage` is shared_dir (None otherwise),
        where finished recordings are copied (voicemail/storage.py) and must be deleted too."""
        self.store = store
        self.clock = clock
        self.citizens = citizens
        self.tickets = tickets
        self.audit = audit
        self.data_dir = data_dir
        self.shared_dir = shared_dir

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

    async def anonymise_ticket(self, ref: str, tally: Counter[str] | None = None) -> bool:
        """Strip a ticket of everything personal, keeping what statistics need; False if it was already done.
        The recordings of its calls and the files sent on it are deleted, counted in `tally` when given."""
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
        # Read before the interactions lose their data: afterwards nothing says where the files are.
        files = [a for i in items for a in (i.data.get("attachments") or []) if isinstance(a, dict)]
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
        tally = tally if tally is not None else Counter()
        for call_id in call_ids:
            tally[RECORDINGS] += await self.delete_recording(call_id)
            tally[CALL_RECORDINGS] += await self.delete_call_recordings(call_id)
        tally[ATTACHMENTS] += await self.delete_attachments(files)
        return True

    async def _delete_audio(self, name: str) -> bool:
        """A recording's audio wherever it is kept: this node's disk, the shared copy in Redis, the shared directory.
        True if any copy was there."""
        local = self.data_dir() / "voicemail" / f"{name}.wav"
        shared_root = self.shared_dir()
        paths = [local, local.with_name(local.name + ".part")]  # .part: cut by a crash, not recovered yet
        if shared_root is not None:
            paths.append(shared_root / f"{name}.wav")

        def unlink_all() -> bool:
            gone = False
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    gone = True
            return gone

        removed = await asyncio.to_thread(unlink_all)
        return bool(await self.store.redis.delete(self.store.keys.voicemail_audio(name))) or removed

    async def delete_recording(self, call_id: str) -> bool:
        """A voicemail's audio (every copy); its record stays, without the caller, marked deleted."""
        if not _SAFE_ID.match(call_id) or call_id.startswith("."):
            return False
        removed = await self._delete_audio(call_id)
        k = self.store.keys
        raw = await self.store.redis.get(k.voicemail(call_id))
        if raw:
            doc = json.loads(raw)
            doc.update({"path": "", "deleted": True, "caller": ""})
            await self.store.redis.set(k.voicemail(call_id), json.dumps(doc))
        return removed

    async def delete_call_recordings(self, call_id: str) -> int:
        """The recordings of one agent call (one per agent leg); how many were deleted now."""
        ids = await self.store.redis.lrange(self.store.keys.call_recordings_of(call_id), 0, -1)
        done = 0
        for rid in ids:
            done += await self.delete_call_recording(str(rid))
        return done

    async def delete_call_recording(self, recording_id: str) -> bool:
        """An agent call's recording: its audio (every copy) goes; its record stays, marked deleted, so the call
        still says it was recorded; it leaves the retention index. False if it was already deleted."""
        r, k = self.store.redis, self.store.keys
        if not _RECORDING_ID.match(recording_id):
            await r.zrem(k.call_recordings, recording_id)  # never a recording: no file to look for, no rescan
            return False
        removed = await self._delete_audio(recording_id)
        raw = await r.get(k.call_recording(recording_id))
        doc: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            loaded = json.loads(raw) if raw else {}
            doc = loaded if isinstance(loaded, dict) else {}
        newly = bool(raw) and not doc.get("deleted")
        async with r.pipeline(transaction=True) as pipe:
            if newly:
                pipe.set(k.call_recording(recording_id),
                         json.dumps({**doc, "deleted": True, "deleted_at": self.clock.now().isoformat()},
                                    ensure_ascii=False))
            pipe.zrem(k.call_recordings, recording_id)
            await pipe.execute()
        return removed or newly

    async def delete_attachments(self, items: list[dict[str, Any]]) -> int:
        """The files behind attachment entries ({"path": "attachments/...", ...}); how many were deleted. A path
        that leaves the attachments directory is ignored: it comes from stored data, never trusted as a path."""
        root = self.data_dir()
        rels = {str(a["path"]) for a in items if isinstance(a.get("path"), str)}
        if not rels:
            return 0

        def unlink_all() -> int:
            base = (root / "attachments").resolve()
            done = 0
            for rel in rels:
                path = (root / rel).resolve()
                if base not in path.parents:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    done += 1
            return done

        return await asyncio.to_thread(unlink_all)

    async def erase(self, citizen_id: str, *, actor: str) -> dict[str, Any]:
        """Erase a citizen (and the citizens merged into them): see the module's docstring for what is kept."""
        c = await self.citizens.get(citizen_id)
        k = self.store.keys
        tickets = await self._tickets_of(c)
        phones = {_digits(i.value) for i in c.identities if i.kind in ("phone", "whatsapp")}
        calls = await self._calls(tickets, phones)
        callbacks = await self._callbacks(tickets, phones)
        tally: Counter[str] = Counter()
        done = 0
        for t in tickets:
            done += await self.anonymise_ticket(t.ref, tally)
        for cid, raw in calls:
            await self.store.redis.set(k.call(cid), anonymous_call(raw))
            tally[CALL_RECORDINGS] += await self.delete_call_recordings(cid)
            tally[RECORDINGS] += await self.delete_recording(cid)
        for cid, raw in callbacks:
            doc = json.loads(raw)
            doc["phone"] = ""
            vm = doc.get("voicemail")
            if isinstance(vm, dict):
                vm.update({"transcript": "", "path": ""})
                tally[RECORDINGS] += await self.delete_recording(str(vm.get("call_id", "")))
            await self.store.redis.set(k.callback(cid), json.dumps(doc, ensure_ascii=False))
        merged = await self._merged_into(c.id)
        people = [c, *merged]
        for person in people:  # files sent before any ticket existed, kept per channel address for a while
            for ident in person.identities:
                for address in _channel_addresses(ident.kind, ident.value):
                    waiting = await self.store.redis.lrange(k.channel_attachments(ident.kind, address), 0, -1)
                    tally[ATTACHMENTS] += await self.delete_attachments(_json_dicts(waiting))
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for person in people:
                for ident in person.identities:
                    pipe.delete(k.citizen_by_identity(ident.kind, ident.value))
                    for address in _channel_addresses(ident.kind, ident.value):
                        pipe.delete(k.channel_attachments(ident.kind, address))
                        # replies held for the channel's window (their text) and the window's template claim
                        pipe.delete(k.channel_pending(ident.kind, address),
                                    k.channel_pending_template(ident.kind, address))
                pipe.delete(k.citizen(person.id))
                pipe.delete(k.citizen_tickets(person.id))
                pipe.zrem(k.citizens, person.id)
            await pipe.execute()
        summary = {"citizen_id": c.id, "tickets_anonymised": done, "calls_anonymised": len(calls),
                   "callbacks_anonymised": len(callbacks), "merged_erased": len(merged),
                   "recordings_deleted": tally[RECORDINGS], "call_recordings_deleted": tally[CALL_RECORDINGS],
                   "attachments_deleted": tally[ATTACHMENTS]}
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


def _channel_addresses(kind: str, value: str) -> set[str]:
    """The channel addresses an identity stands for: identities are normalised (+34600...) while a channel keys
    its waiting files by the provider's address (WhatsApp's wa_id has no '+')."""
    return {value, value.lstrip("+")} if kind in ("phone", "whatsapp") else {value}


def _json_dicts(raws: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for raw in raws:
        with contextlib.suppress(ValueError):
            doc = json.loads(raw)
            if isinstance(doc, dict):
                out.append(doc)
    return out


def _digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value or ""))[-9:] or "-"
