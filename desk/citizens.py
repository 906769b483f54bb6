"""Citizens: identify by phone / e-mail / Telegram / WhatsApp / web-chat id, merge when recognised as one person.

    c = await desk.citizens.identify("phone", "+34 600 12 34 56", name="Marta")   # get or create, atomic
    c = await desk.citizens.link(c.id, "email", "marta@example.org")             # adds it; merges if it was someone else's
    c = await desk.citizens.merge(keep_id, other_id, actor="user:ana")
    c = await desk.citizens.get(citizen_id)   # follows merges: a merged id returns the citizen it went into

Identity values are normalised (phones to +34... E.164, e-mails lower-case) so the same person is recognised
whichever way the number or address is written.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from redis.exceptions import WatchError

from core.clock import Clock
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from core.store import Store
from desk.audit import AuditLog
from desk.events import EventBus, encode
from desk.models import IDENTITY_KINDS, Citizen, Identity

_NON_DIGIT = re.compile(r"\D")

# get-or-create in one step: two first messages from one number must not create two citizens.
_IDENTIFY = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return ARGV[1]
"""


def normalize_identity(kind: str, value: str) -> str:
    v = (value or "").strip()
    if kind not in IDENTITY_KINDS:
        raise InvalidInput(f"unknown identity kind {kind!r}", {"kinds": list(IDENTITY_KINDS)})
    if kind in ("phone", "whatsapp"):
        if v.lower().startswith(("sip:", "sips:", "tel:")):
            v = v.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
        plus = v.startswith("+") or v.startswith("00")
        digits = _NON_DIGIT.sub("", v)
        if digits.startswith("00"):
            digits = digits[2:]
        if not plus and len(digits) == 9 and digits[0] in "6789":
            digits = "34" + digits  # a Spanish national number
        if not 6 <= len(digits) <= 15:
            raise InvalidInput(f"{value!r} is not a phone number", {"kind": kind, "value": value})
        return "+" + digits
    if kind == "email":
        v = v.lower()
        if v.count("@") != 1 or not v.split("@")[0] or "." not in v.split("@")[1] or len(v) > 254:
            raise InvalidInput(f"{value!r} is not an e-mail address", {"kind": kind, "value": value})
        return v
    if not v or len(v) > 200:
        raise InvalidInput(f"empty or too long {kind} id", {"kind": kind})
    return v


class CitizenService:
    def __init__(self, store: Store, clock: Clock, events: EventBus, audit: AuditLog) -> None:
        self.store = store
        self.clock = clock
        self.events = events
        self.audit = audit
        self._identify = store.redis.register_script(_IDENTIFY)

    async def identify(self, kind: str, value: str, name: str | None = None) -> Citizen:
        """The citizen with this identity, created on first contact."""
        value = normalize_identity(kind, value)
        k = self.store.keys
        now = self.clock.now()
        new = Citizen(id="C" + secrets.token_hex(6), name=name, identities=[Identity(kind=kind, value=value)],
                      created_at=now, updated_at=now)
        cid = await self._identify(keys=[k.citizen_by_identity(kind, value), k.citizen(new.id), k.citizens],
                                   args=[new.id, new.model_dump_json(), now.timestamp()])
        if cid == new.id:
            return new
        citizen = await self.get(str(cid))
        if name and not citizen.name:
            citizen = await self._save_name(citizen.id, name)
        return citizen

    async def find(self, kind: str, value: str) -> Citizen | None:
        cid = await self.store.redis.get(self.store.keys.citizen_by_identity(kind, normalize_identity(kind, value)))
        return await self.get(str(cid)) if cid else None

    async def of(self, citizen_id: str | None) -> Citizen | None:
        """A ticket's citizen, or None when it has none (anonymous) or it is gone (erased)."""
        if not citizen_id:
            return None
        try:
            return await self.get(citizen_id)
        except NotFound:
            return None

    async def get(self, citizen_id: str) -> Citizen:
        for _ in range(5):  # follow merges (chains are short: each merge repoints identities)
            c = await self.store.get_model(self.store.keys.citizen(citizen_id), Citizen)
            if c is None:
                raise NotFound(f"citizen {citizen_id} not found", {"citizen_id": citizen_id})
            if c.merged_into is None:
                return c
            citizen_id = c.merged_into
        raise Conflict("citizen merge chain too long", {"citizen_id": citizen_id})

    async def recent(self, limit: int = 50, offset: int = 0) -> list[Citizen]:
        ids: Any = await self.store.redis.zrevrange(self.store.keys.citizens, offset, offset + limit - 1)
        raws = await self.store.redis.mget([self.store.keys.citizen(i) for i in ids]) if ids else []
        out = [Citizen.model_validate_json(r) for r in raws if r]
        return [c for c in out if c.merged_into is None]

    async def tickets(self, citizen_id: str, limit: int = 100) -> list[str]:
        refs = await self.store.redis.zrevrange(self.store.keys.citizen_tickets(citizen_id), 0, limit - 1)
        return [str(r) for r in refs]

    async def _save_name(self, citizen_id: str, name: str) -> Citizen:
        key = self.store.keys.citizen(citizen_id)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for _ in range(20):
                try:
                    await pipe.watch(key)
                    c = Citizen.model_validate_json(str(await pipe.get(key)))
                    c.name = c.name or name
                    c.updated_at = self.clock.now()
                    pipe.multi()
                    pipe.set(key, c.model_dump_json())
                    await pipe.execute()
                    return c
                except WatchError:
                    continue
        raise Unavailable("citizen is being changed by others, try again")

    async def link(self, citizen_id: str, kind: str, value: str, actor: str = "system", *,
                   may_merge: bool = True) -> Citizen:
        """Add an identity; if it already belongs to someone else, that someone is merged into this citizen
        (when `may_merge`; otherwise Forbidden and nothing changes)."""
        value = normalize_identity(kind, value)
        citizen = await self.get(citizen_id)
        k = self.store.keys
        if not may_merge:
            owner_now = await self.store.redis.get(k.citizen_by_identity(kind, value))
            if owner_now is not None and (await self.get(str(owner_now))).id != citizen.id:
                raise Forbidden("this identity belongs to another citizen; merging them is for supervisors",
                                {"kind": kind}, error_id="merge-needs-supervisor")
        owner = await self.store.redis.set(k.citizen_by_identity(kind, value), citizen.id, nx=True, get=True)
        if owner is not None and owner != citizen.id:
            other = await self.get(str(owner))
            if other.id != citizen.id:
                if not may_merge:  # claimed between the check and the set: still not this caller's merge
                    raise Forbidden("this identity belongs to another citizen; merging them is for supervisors",
                                    {"kind": kind}, error_id="merge-needs-supervisor")
                return await self.merge(citizen.id, other.id, actor=actor)
        key = k.citizen(citizen.id)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for _ in range(20):
                try:
                    await pipe.watch(key)
                    c = Citizen.model_validate_json(str(await pipe.get(key)))
                    if not any(i.kind == kind and i.value == value for i in c.identities):
                        c.identities.append(Identity(kind=kind, value=value))
                    c.updated_at = self.clock.now()
                    pipe.multi()
                    pipe.set(key, c.model_dump_json())
                    pipe.xadd(k.audit, self.audit.entry(actor, "citizen.link", c.id, {"kind": kind, "value": value}))  # type: ignore[arg-type]
                    await pipe.execute()
                    return c
                except WatchError:
                    continue
        raise Unavailable("citizen is being changed by others, try again")

    async def merge(self, keep_id: str, other_id: str, actor: str = "system") -> Citizen:
        """Fold `other` into `keep`: identities and tickets move; `other` remains as a pointer (merged_into)."""
        keep, other = await self.get(keep_id), await self.get(other_id)
        if keep.id == other.id:
            return keep
        k = self.store.keys
        ka, kb = k.citizen(keep.id), k.citizen(other.id)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for _ in range(20):
                try:
                    await pipe.watch(ka, kb)
                    a = Citizen.model_validate_json(str(await pipe.get(ka)))
                    b = Citizen.model_validate_json(str(await pipe.get(kb)))
                    if b.merged_into is not None:
                        raise Conflict("citizen already merged", {"citizen_id": b.id, "merged_into": b.merged_into})
                    now = self.clock.now()
                    for ident in b.identities:
                        if not any(i.kind == ident.kind and i.value == ident.value for i in a.identities):
                            a.identities.append(ident)
                    a.name = a.name or b.name
                    a.updated_at = now
                    b.merged_into, b.updated_at = a.id, now
                    pipe.multi()
                    pipe.set(ka, a.model_dump_json())
                    pipe.set(kb, b.model_dump_json())
                    for ident in b.identities:
                        pipe.set(k.citizen_by_identity(ident.kind, ident.value), a.id)
                    mine, theirs = k.citizen_tickets(a.id), k.citizen_tickets(b.id)
                    pipe.zunionstore(mine, [mine, theirs], aggregate="MAX")
                    pipe.zrem(k.citizens, b.id)
                    pipe.xadd(k.audit, self.audit.entry(actor, "citizen.merge", a.id, {"merged": b.id}))  # type: ignore[arg-type]
                    pipe.xadd(k.events, encode(self.events.stamp({"type": "citizen.merged", "citizen_id": a.id,  # type: ignore[arg-type]
                                                                  "merged": b.id})),
                              maxlen=self.events.maxlen, approximate=True)
                    await pipe.execute()
                    return a
                except WatchError:
                    continue
        raise Unavailable("citizen is being changed by others, try again")
