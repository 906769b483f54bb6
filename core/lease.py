"""Leases: a job that must run once across nodes (the callback worker, retention, SLA timers) runs only on the node
that holds its lease, and another node takes over within about one TTL when the holder dies or is cut off.

A lease is one Redis string `"<token> <holder>"` with a TTL (`Keys.lease`). Every acquisition takes a fencing token
from a counter (`Keys.lease_fence`, INCR), so tokens only grow: a holder that was paused past its TTL (GC, a frozen
VM) and wakes up still believing it holds the lease can be told apart from the new holder by its smaller token
(`Lease.check()`, or compare tokens where the job writes). Acquire, renew and release are Lua scripts, so "is it
still mine" and "extend it" are one atomic step.

The holder's local view is conservative: it counts the TTL from the moment it *sent* the last successful renewal,
minus a margin for clock drift, and stops the job when that runs out, even when Redis cannot be reached to say so;
the key in Redis outlives that local deadline, so two holders never run at once (with the fencing token as the
guard for what clocks cannot promise).

    runner = LeaseRunner(store, "callbacks", holder=node_id, ttl=10.0)
    task = asyncio.create_task(runner.run(job))   # job(lease) runs only while the lease is ours; cancelled on loss
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from core.store import REDIS_ERRORS, NotDurable, Store

log = logging.getLogger("atiende.lease")

# KEYS[1] lease, KEYS[2] fence; ARGV[1] holder, ARGV[2] ttl ms. Returns the new token, or 0 when someone holds it.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
"""
# KEYS[1] lease; ARGV[1] "<token> <holder>", ARGV[2] ttl ms. 1 = extended, 0 = no longer ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(RuntimeError):
    """The lease ran out or was taken over: the job must stop."""


@dataclass
class Lease:
    """One acquisition of a named lease; `token` is its fencing token."""

    store: Store
    name: str
    holder: str
    ttl: float
    token: int
    valid_until: float = field(default=0.0)  # time.monotonic() after which this holder must assume it lost the lease

    @property
    def value(self) -> str:
        return f"{self.token} {self.holder}"

    @property
    def held(self) -> bool:
        """The local, conservative view: True only while the last renewal is certainly still in force."""
        return time.monotonic() < self.valid_until

    async def check(self) -> bool:
        """Ask Redis: is the lease still this acquisition's? For a job to call before a step that must not be done
        twice (e.g. before placing a callback call)."""
        return self.held and await self.store.redis.get(self.store.keys.lease(self.name)) == self.value

    async def renew(self) -> bool:
        sent = time.monotonic()
        ok = bool(await self.store.redis.eval(_RENEW, 1, self.store.keys.lease(self.name), self.value,
                                              int(self.ttl * 1000)))
        if ok:
            self.valid_until = sent + self.ttl * (1 - DRIFT)
        else:
            self.valid_until = 0.0
        return ok

    async def release(self) -> bool:
        self.valid_until = 0.0
        return bool(await self.store.redis.eval(_RELEASE, 1, self.store.keys.lease(self.name), self.value))


DRIFT = 0.1  # the share of the TTL a holder gives up to clock drift and the renewal's own round trip


async def acquire(store: Store, name: str, holder: str, ttl: float) -> Lease | None:
    """Take the lease if nobody holds it; None otherwise. With `redis.min_replicas_ack`, the new token is on the
    replicas before the lease counts as taken, so a failover cannot hand out the same token twice."""
    if ttl <= 0:
        raise ValueError("a lease needs a positive TTL")
    since = await store.primary() if store.min_replicas_ack > 0 else None
    sent = time.monotonic()
    token = int(await store.redis.eval(_ACQUIRE, 2, store.keys.lease(name), store.keys.lease_fence(name), holder,
                                       int(ttl * 1000)))
    if token == 0:
        return None
    lease = Lease(store, name, holder, ttl, token, valid_until=sent + ttl * (1 - DRIFT))
    try:
        await store.durable(since)
    except NotDurable:
        with contextlib.suppress(*REDIS_ERRORS):
            await lease.release()
        raise
    return lease


async def holder_of(store: Store, name: str) -> tuple[int, str] | None:
    """(token, holder) of the current lease, for /healthz and the operations guide; None when free."""
    raw = await store.redis.get(store.keys.lease(name))
    if not raw:
        return None
    token, _, holder = str(raw).partition(" ")
    return int(token), holder


class LeaseRunner:
    """Runs `job(lease)` only while this node holds the lease `name`; tries to take it every `retry` seconds
    (default ttl/3) while another node has it, renews it every ttl/3 while the job runs, and cancels the job as soon
    as the lease is lost or its local deadline passes without a successful renewal (Redis unreachable), so the job
    stops within the TTL. A job that returns by itself gives the lease back; the runner then waits `retry` and
    competes again (jobs are usually endless loops)."""

    def __init__(self, store: Store, name: str, *, holder: str, ttl: float = 10.0, retry: float | None = None,
                 on_change: Callable[[Lease | None], None] | None = None) -> None:
        if ttl <= 0:
            raise ValueError("a lease needs a positive TTL")
        self.store = store
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.retry = retry if retry is not None else ttl / 3
        self.on_change = on_change
        self.lease: Lease | None = None
        self.acquisitions = 0

    @property
    def leading(self) -> bool:
        return self.lease is not None and self.lease.held

    def _set(self, lease: Lease | None) -> None:
        self.lease = lease
        if self.on_change is not None:
            self.on_change(lease)

    async def run(self, job: Callable[[Lease], Coroutine[Any, Any, None]]) -> None:
        """Until cancelled. Cancelling it cancels the job and releases the lease (best effort)."""
        while True:
            try:
                lease = await acquire(self.store, self.name, self.holder, self.ttl)
            except (*REDIS_ERRORS, TimeoutError) as exc:
                log.debug("lease %s: cannot reach the store to acquire: %s", self.name, exc)
                lease = None
            if lease is None:
                await asyncio.sleep(self.retry)
                continue
            self.acquisitions += 1
            self._set(lease)
            log.info("lease %s taken", self.name, extra={"token": lease.token, "holder": self.holder})
            try:
                finished = await self._hold(lease, job)
            finally:
                self._set(None)
                with contextlib.suppress(*REDIS_ERRORS, TimeoutError):
                    await asyncio.wait_for(asyncio.shield(lease.release()), 1.0)
            if finished:
                await asyncio.sleep(self.retry)

    async def _hold(self, lease: Lease, job: Callable[[Lease], Coroutine[Any, Any, None]]) -> bool:
        """True when the job ended by itself, False when the lease was lost."""
        task = asyncio.create_task(job(lease), name=f"lease:{self.name}")
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.ttl / 3)
                if done:
                    if not task.cancelled() and (exc := task.exception()) is not None:
                        # A crashing job must not take the runner down: log it, give the lease back, compete again.
                        if isinstance(exc, LeaseLost):  # the job's own fenced write found the lease gone
                            log.warning("lease %s lost (seen by its job): %s", self.name, exc)
                        else:
                            log.error("lease %s: job failed", self.name, exc_info=exc)
                    return True
                if not await self._renew(lease):
                    log.warning("lease %s lost: stopping its job", self.name, extra={"token": lease.token})
                    return False
        finally:
            if not task.done():
                task.cancel()
                # The job had until the local deadline; it gets what is left of the TTL to unwind, no more.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, max(0.05, self.ttl * DRIFT))

    async def _renew(self, lease: Lease) -> bool:
        """Renew, retrying lost connections until the local deadline; False once the lease is certainly not ours."""
        while True:
            remaining = lease.valid_until - time.monotonic()
            if remaining <= 0:
                return False
            try:
                return await asyncio.wait_for(lease.renew(), remaining)
            except (*REDIS_ERRORS, TimeoutError) as exc:
                log.debug("lease %s: renewal failed (%s), retrying", self.name, exc)
                await asyncio.sleep(min(0.2, max(0.0, lease.valid_until - time.monotonic())))
