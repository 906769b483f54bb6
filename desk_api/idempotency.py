"""`Idempotency-Key` on the API's creating POSTs (tickets, callbacks).

A client that got no answer, or a 503 (the store busy, or a write the replicas did not confirm: the durable-writes
middleware), retries; without a key the retry files a second ticket when the first one was in fact stored. With
the same key (per principal and kind, kept a day) the retry gets the first result back (`Idempotent-Replayed:
true`), a retry racing the first request gets 409 until it ends, and a failed first request leaves nothing.

A request holds its key with a token of its own, and settles it (its result, or the key freed) with a
compare-and-set on that token. A ticket's creation records its result in the same script as the ticket (`marker`),
so "freed" can only happen when nothing was created; a callback's id is derived from the key, so a second creation
returns the first callback. When the store goes away under the request (a Redis failover), the settling is
retried in the background until the store is back (SETTLE_FOR_S): a key left held would refuse every retry with
409 for a day. A node that dies holding a key leaves it held for PENDING_TTL_S at most.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import uuid

from fastapi import Request

from core.errors import Conflict, InvalidInput
from core.store import REDIS_ERRORS, Store

log = logging.getLogger(__name__)
TTL_S = 24 * 3600
PENDING = "pending"
PENDING_TTL_S = 60  # far beyond a request's longest run (store retries ~3 s, WAIT 0.5 s)
SETTLE_FOR_S = 30.0  # a failover takes a few seconds; the store away longer than this leaves PENDING_TTL_S
SETTLE_RETRY_S = 0.5
REPLAYED_HEADER = {"Idempotent-Replayed": "true"}
_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")

# KEYS[1] the key; ARGV[1] the holder's token, ARGV[2] the result ('' = free the key), ARGV[3] the result's TTL.
_SETTLE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""

_settling: set[asyncio.Task[None]] = set()


class Claim:
    """One request's hold on its key: `prior` is the id of what an earlier request with the key created."""

    def __init__(self, store: Store, key: str | None, prior: str | None, token: str = "") -> None:
        self.store, self.key, self.prior, self.token = store, key, prior, token

    async def _settle(self, result: str) -> None:
        assert self.key is not None
        await self.store.redis.eval(_SETTLE_LUA, 1, self.key, self.token, result, str(TTL_S))

    async def done(self, result_id: str) -> None:
        """Record what the request created; with the store away the request fails (the client retries) and the
        result is recorded once the store is back, so that retry gets it instead of creating it again."""
        if self.key is not None:
            try:
                await self._settle(result_id)
            except REDIS_ERRORS:
                self._later(result_id)
                raise

    @property
    def marker(self) -> tuple[str, str, int] | None:
        """For a creation that records its result itself, atomically with what it creates (desk tickets): a request
        cut after its write cannot then free the key and let the retry create a second one."""
        return (self.key, self.token, TTL_S) if self.key is not None else None

    async def failed(self) -> None:
        """Free the key (nothing was created); with the store away, once it is back."""
        if self.key is not None:
            try:
                await self._settle("")
            except REDIS_ERRORS:  # the original error matters
                self._later("")

    def _later(self, result: str) -> None:
        task = asyncio.create_task(self._settle_later(result), name="idempotency-settle")
        _settling.add(task)
        task.add_done_callback(_settling.discard)

    async def _settle_later(self, result: str) -> None:
        deadline = time.monotonic() + SETTLE_FOR_S
        while time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_RETRY_S)
            try:
                await self._settle(result)
                return
            except REDIS_ERRORS:
                continue
        log.warning("idempotency key left held: it frees itself within %d s", PENDING_TTL_S)


def derived_id(request: Request, principal: str, kind: str) -> str | None:
    """An id for what the request creates, the same for every retry with the key (None without one): for
    resources whose id is internal (callbacks), the creation itself is then idempotent, whatever happened to the
    key's record across a failover. Never for ticket references, which citizens see and must not be guessable."""
    raw = request.headers.get("idempotency-key")
    if raw is None or not _KEY.match(raw):
        return None
    return "k" + hashlib.sha256(f"{kind}\n{principal}\n{raw}".encode()).hexdigest()[:19]


async def claim(store: Store, request: Request, principal: str, kind: str) -> Claim:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return Claim(store, None, None)
    if not _KEY.match(raw):
        raise InvalidInput("Idempotency-Key: de 8 a 128 letras, cifras o . _ : -", {"header": "Idempotency-Key"})
    key = store.keys.idempotency(kind, principal, hashlib.sha256(raw.encode()).hexdigest()[:32])
    held = Claim(store, key, None, f"{PENDING}:{uuid.uuid4().hex}")
    try:
        taken = await store.redis.set(key, held.token, nx=True, ex=PENDING_TTL_S)
    except REDIS_ERRORS:
        held._later("")  # the hold may have been taken before the store went away: free it once it is back
        raise
    if taken:
        return held
    prior = await store.redis.get(key)
    if prior == held.token:  # our own SET NX, retried by redis-py after its reply was lost: the hold is ours
        return held
    if prior is None or str(prior).startswith(PENDING):
        raise Conflict("una petición con esta Idempotency-Key está en curso; repítala en unos segundos",
                       error_id="idempotency-in-progress")
    return Claim(store, None, str(prior))
