"""Desk events for live pages: a capped Redis stream (`Keys.events`), readable from any node.

Event types: ticket.created, ticket.updated (status/assignee/queue changes), ticket.assigned, ticket.interaction,
ticket.escalated, ticket.closed, agent.presence, call.offered, citizen.merged. Each event is a flat dict with at
least `type` and `at` (ISO instant); ticket events carry `ref`, `queue`, `status`.

    await desk.events.publish({"type": "call.offered", "call_id": ..., "agent": ...})
    batch = await desk.events.read(after="$" or last_id, block_ms=15000)   # [(stream id, event dict), ...]

Who may see an event is decided here (`EventView`, `visible`), so every live channel applies one rule: staff who
supervise see everything; an agent sees the ticket events of the queues they work, events about tickets assigned
to them, events addressed to them (offers, their calls, their presence) and the events of their own actions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from core.clock import Clock
from core.store import Store

_ID_RE = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})$")
# Events addressed to one agent (the `agent` field): only that agent (and supervisors) may see them.
_ADDRESSED = "agent"


def parse_id(sid: str) -> tuple[int, int] | None:
    """A stream id ("1733212345678-0") as a comparable pair; None when it is not one."""
    m = _ID_RE.match(sid)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True, slots=True)
class EventView:
    """What one principal may see of the event stream."""

    everything: bool
    principal: str
    agent: str | None = None
    queues: frozenset[str] = frozenset()

    @property
    def key(self) -> tuple[bool, str, str | None, frozenset[str]]:
        return (self.everything, self.principal, self.agent, self.queues)


def visible(view: EventView, event: dict[str, Any]) -> bool:
    """Whether `view` may receive `event` (deny by default: an event type nobody thought of reaches supervisors only)."""
    if view.everything:
        return True
    if event.get("actor") == view.principal:
        return True
    addressed = event.get(_ADDRESSED)
    if addressed is not None:
        return view.agent is not None and addressed == view.agent
    if not str(event.get("type", "")).startswith("ticket."):
        return False
    if view.agent is not None and event.get("assignee") == view.agent:
        return True
    queue = event.get("queue")
    return isinstance(queue, str) and queue in view.queues


def encode(event: dict[str, Any]) -> dict[str, str]:
    return {"type": str(event.get("type", "event")), "data": json.dumps(event, ensure_ascii=False, default=str)}


class EventBus:
    def __init__(self, store: Store, clock: Clock, maxlen: int) -> None:
        self.store = store
        self.clock = clock
        self.maxlen = maxlen

    def stamp(self, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("at", self.clock.now().isoformat())
        return event

    async def publish(self, event: dict[str, Any]) -> str:
        """Append an event; returns its stream id."""
        sid = await self.store.redis.xadd(
            self.store.keys.events, encode(self.stamp(event)), maxlen=self.maxlen, approximate=True  # type: ignore[arg-type]
        )
        return str(sid)

    async def last_id(self) -> str:
        info = await self.store.redis.xrevrange(self.store.keys.events, count=1)
        return str(info[0][0]) if info else "0-0"

    async def read(self, after: str = "$", block_ms: int | None = None, count: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Events after stream id `after` ("$" = only new ones; "0" = from the start); waits up to block_ms."""
        return [(sid, json.loads(raw)) for sid, raw in await self.read_raw(after, block_ms, count)]

    async def read_raw(self, after: str = "$", block_ms: int | None = None, count: int = 100,
                       client: aioredis.Redis | None = None) -> list[tuple[str, str]]:
        """Like `read`, with each event's JSON text as stored. A blocking read should pass a `client` of its own
        (`Store.dedicated()`): a pooled connection held for block_ms is one fewer for requests."""
        redis = client if client is not None else self.store.redis
        res: Any = await redis.xread({self.store.keys.events: after}, count=count, block=block_ms)
        return [(str(sid), str(fields.get("data", "{}"))) for _stream, entries in res or [] for sid, fields in entries]

    async def after(self, sid: str, count: int = 500) -> list[tuple[str, str]]:
        """Up to `count` stored events after `sid` (exclusive), oldest first, JSON text as stored: a reconnecting
        client's missed events."""
        entries: Any = await self.store.redis.xrange(self.store.keys.events, min=f"({sid}", count=count)
        return [(str(i), str(f.get("data", "{}"))) for i, f in entries]

    async def first_id(self) -> str | None:
        """The oldest event still kept (the stream is capped): a resume from before it has lost events."""
        entries: Any = await self.store.redis.xrange(self.store.keys.events, count=1)
        return str(entries[0][0]) if entries else None

    async def recent(self, count: int = 50) -> list[tuple[str, dict[str, Any]]]:
        entries: Any = await self.store.redis.xrevrange(self.store.keys.events, count=count)
        return [(str(sid), json.loads(f.get("data", "{}"))) for sid, f in reversed(entries)]
