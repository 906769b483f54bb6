"""Audit trail: who changed what, when. A Redis stream (`Keys.audit`), capped very high, never rewritten.

Entries: {"at", "actor", "action", "target", "details"}. Ticket changes write their audit entry in the
same MULTI/Lua call as the change itself, so a change without its audit entry cannot exist.
"""

from __future__ import annotations

import json
from typing import Any

from core.clock import Clock
from core.errors import InvalidInput
from core.store import Store


class AuditLog:
    def __init__(self, store: Store, clock: Clock, maxlen: int) -> None:
        self.store = store
        self.clock = clock
        self.maxlen = maxlen

    def entry(self, actor: str, action: str, target: str, details: dict[str, Any] | None = None) -> dict[str, str]:
        return {
            "at": self.clock.now().isoformat(),
            "actor": actor,
            "action": action,
            "target": target,
            "details": json.dumps(details or {}, ensure_ascii=False, default=str),
        }

    async def record(self, actor: str, action: str, target: str, details: dict[str, Any] | None = None) -> str:
        sid = await self.store.redis.xadd(
            self.store.keys.audit, self.entry(actor, action, target, details),  # type: ignore[arg-type]
            maxlen=self.maxlen, approximate=True,
        )
        return str(sid)

    async def entries(self, count: int = 100, before: str | None = None, actor: str | None = None,
                   target: str | None = None) -> list[dict[str, Any]]:
        """Newest first; `before` is a stream id for paging."""
        if before is not None:
            try:
                ms, seq = (int(x) for x in before.split("-"))
            except ValueError:
                raise InvalidInput("before: a stream id like 1700000000000-0", {"before": before}) from None
            if not (0 <= ms < 2**64 and 0 <= seq < 2**64):
                raise InvalidInput("before: a stream id like 1700000000000-0", {"before": before})
            if ms == 0 and seq == 0:
                return []
        end = f"({before}" if before else "+"
        out: list[dict[str, Any]] = []
        cursor = end
        # Filters are applied while paging back, bounded to a few pages so a rare actor cannot stall a request.
        for _ in range(20):
            entries: Any = await self.store.redis.xrevrange(self.store.keys.audit, max=cursor, min="-", count=max(count, 200))
            if not entries:
                break
            for sid, f in entries:
                if (actor and f.get("actor") != actor) or (target and f.get("target") != target):
                    continue
                out.append({"id": sid, "at": f.get("at"), "actor": f.get("actor"), "action": f.get("action"),
                            "target": f.get("target"), "details": json.loads(f.get("details") or "{}")})
                if len(out) >= count:
                    return out
            cursor = f"({entries[-1][0]}"
        return out
