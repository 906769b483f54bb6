"""Whether this node takes new calls: not while it drains (an operator's decision) nor while the store is away.

Kamailio's dispatcher learns it from the answers to its OPTIONS probes (503 when not ready) and stops sending
new calls within a probe interval; `/healthz` says the same to HTTP load balancers. Calls in progress go on
either way. The store is probed in the background, so a SIP answer never waits on a Redis round trip.

A shared store that stops answering makes the node not ready only after STORE_GRACE_S: a Sentinel failover
(1-8 s) takes the store away from every node at once, and all of them reporting not ready would leave the
dispatcher nowhere to send a call (503 to the carrier: the citizen gets a failure tone). During the grace new
calls get the degraded IVR (an apology, a voicemail kept on disk); past it the store is out for this node only
as far as it can tell, and the dispatcher prefers the nodes that still reach theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from core import logs
from core.store import Store

log = logging.getLogger(__name__)
PROBE_S = 1.0
STORE_GRACE_S = 15.0


class NodeState:
    def __init__(self, store: Store | None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._monotonic = monotonic
        self.draining = False
        self.store_ok = store is not None
        self._down_since: float | None = None
        self._probe: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return not self.draining and self.store_ok

    def reasons(self) -> list[str]:
        out = []
        if self.draining:
            out.append("draining")
        if not self.store_ok:
            out.append("store unreachable")
        return out

    def store_state(self, up: bool) -> None:
        """The private redis-server's supervisor says it died (False) or answers again (True)."""
        if up != self.store_ok:
            log.warning("store back" if up else "private redis-server died: restarting it; this node reports not ready")
        self.store_ok = up

    def drain(self, on: bool = True) -> None:
        if on != self.draining:
            log.warning("node draining: no new calls" if on else "node takes new calls again")
        self.draining = on

    async def check_store(self) -> bool:
        """Probe the store; True when it answered. Readiness follows after the grace (module docstring)."""
        answered = self._store is not None and await self._store.ping(within=0.5)
        if answered:
            if self._down_since is not None and self.store_ok:
                log.warning("store reachable again after %.1f s", self._monotonic() - self._down_since)
            self._down_since = None
        elif self._down_since is None:
            self._down_since = self._monotonic()
            log.warning("store unreachable: calls get the degraded IVR; this node reports not ready after %.0f s",
                        STORE_GRACE_S)
        ok = answered or (self._monotonic() - (self._down_since or 0.0)) < STORE_GRACE_S
        if ok != self.store_ok:
            log.warning("store reachable again" if ok else "store still unreachable: this node reports not ready",
                        extra=logs.fields(ready=ok and not self.draining))
        self.store_ok = ok
        return answered

    def start(self) -> None:
        self._probe = asyncio.create_task(self._loop(), name="node-probe")

    async def _loop(self) -> None:
        while True:
            await self.check_store()
            await asyncio.sleep(PROBE_S)

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
