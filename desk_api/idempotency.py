"""`Idempotency-Key` on the API's creating POSTs (tickets, callbacks).

A client that got no answer, or a 503 (the store busy, or a write the replicas did not confirm: the durable-writes
middleware), retries; without a key the retry files a second ticket when the first one was in fact stored. With
the same key (per principal and kind, kept a day) the retry gets the first result back (`Idempotent-Replayed:
true`), a retry racing the first request gets 409 until it ends, and a failed first request leaves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import re

from fastapi import Request

from core.errors import Conflict, InvalidInput
from core.store import REDIS_ERRORS, Store

TTL_S = 24 * 3600
PENDING = "pending"
REPLAYED_HEADER = {"Idempotent-Replayed": "true"}
_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class Claim:
    """One request's hold on its key: `prior` is the id of what an earlier request with the key created."""

    def __init__(self, store: Store, key: str | None, prior: str | None) -> None:
        self.store, self.key, self.prior = store, key, prior

    async def done(self, result_id: str) -> None:
        if self.key is not None:
            await self.store.redis.set(self.key, result_id, ex=TTL_S)

    async def failed(self) -> None:
        if self.key is not None:
            with contextlib.suppress(*REDIS_ERRORS):  # the original error matters; the key expires anyway
                await self.store.redis.delete(self.key)


async def claim(store: Store, request: Request, principal: str, kind: str) -> Claim:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return Claim(store, None, None)
    if not _KEY.match(raw):
        raise InvalidInput("Idempotency-Key: de 8 a 128 letras, cifras o . _ : -", {"header": "Idempotency-Key"})
    key = store.keys.idempotency(kind, principal, hashlib.sha256(raw.encode()).hexdigest()[:32])
    if await store.redis.set(key, PENDING, nx=True, ex=TTL_S):
        return Claim(store, key, None)
    prior = await store.redis.get(key)
    if prior is None or prior == PENDING:
        raise Conflict("una petición con esta Idempotency-Key está en curso; repítala en unos segundos",
                       error_id="idempotency-in-progress")
    return Claim(store, None, str(prior))
