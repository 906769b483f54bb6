"""Desk events for live pages: a capped Redis stream (`Keys.events`), readable from any node.

Event types: ticket.created, ticket.updated (status/assignee/queue changes), ticket.assigned, ticket.interaction,
ticket.escalated, ticket.closed, agent.presence, call.offered, citizen.merged. Each event is a flat dict with at
least `type` and `at` (ISO instant); ticket events carry `ref`, `queue`, `status`.

    await desk.events.publish({"type": "call.offered", "call_id": ..., "agent": ...})
    batch = await desk.events.read(after="$" or last_id, block_ms=15000)   # [(stream id, event dict), ...]
"""

from __future__ import annotations

import json
from typing import Any

from core.clock import Clock
from core.store import Store


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
        res: Any = await self.store.redis.xread({self.store.keys.events: after}, count=count, block=block_ms)
        out: list[tuple[str, dict[str, Any]]] = []
        for _stream, entries in res or []:
            for sid, fields in entries:
                out.append((str(sid), json.loads(fields.get("data", "{}"))))
        return out

    async def recent(self, count: int = 50) -> list[tuple[str, dict[str, Any]]]:
        entries: Any = await self.store.redis.xrevrange(self.store.keys.events, count=count)
        return [(str(sid), json.loads(f.get("data", "{}"))) for sid, f in reversed(entries)]
