"""Admin-editable configuration sections, versioned in Redis.

Version 0 is what the config files say; each admin change stores a new full document as
version N+1 and points `current` at it. Rolling back to N stores a copy of N as a new
version, so history only grows and "who changed what" stays readable. Every node reads
the `current` pointer at most once a second, so an edit on one node is live everywhere
within a second, and at once on the node that made it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from core.clock import Clock
from core.errors import InvalidInput, NotFound, Unavailable
from core.store import REDIS_ERRORS, Store

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


class VersionInfo(BaseModel):
    version: int
    actor: str
    at: datetime | None
    note: str = ""
    active: bool = False


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": ".".join(str(x) for x in e["loc"]), "reason": e["msg"]} for e in exc.errors()]


class VersionedSection(Generic[M]):
    def __init__(
        self,
        store: Store,
        clock: Clock,
        section: str,
        model: type[M],
        file_default: Callable[[], M],
        check: Callable[[M], None] | None = None,
        refresh_s: float = 1.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.section = section
        self.model = model
        self.file_default = file_default
        self.check = check
        self.refresh_s = refresh_s
        self._cached: tuple[int, M] | None = None
        self._checked_at = 0.0

    def validate(self, data: Any) -> M:
        try:
            value = data if isinstance(data, self.model) else self.model.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(f"invalid {self.section}", validation_details(exc)) from None
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as exc:
                raise InvalidInput(f"invalid {self.section}: {exc}", [{"loc": "", "reason": str(exc)}]) from None
        return value

    def invalidate(self) -> None:
        self._cached = None

    async def current(self) -> tuple[int, M]:
        """(version, value); falls back to the last good value (or the files) while Redis is away."""
        now = time.monotonic()
        if self._cached is not None and now - self._checked_at < self.refresh_s:
            return self._cached
        k = self.store.keys
        try:
            raw_ver = await self.store.redis.get(k.config_current(self.section))
            version = int(raw_ver) if raw_ver else 0
            if self._cached is None or self._cached[0] != version:
                if version == 0:
                    self._cached = (0, self.file_default())
                else:
                    raw = await self.store.redis.hget(k.config_versions(self.section), str(version))
                    self._cached = (version, self.model.model_validate_json(raw)) if raw else (0, self.file_default())
        except REDIS_ERRORS as exc:
            if self._cached is None:
                log.warning("redis unavailable, %s served from config files: %s", self.section, exc)
                self._cached = (0, self.file_default())
        self._checked_at = now
        return self._cached

    async def put(self, data: Any, actor: str, note: str = "") -> int:
        value = self.validate(data)
        k = self.store.keys
        try:
            version = int(await self.store.redis.incr(k.config_seq(self.section)))
            meta = {"actor": actor, "at": self.clock.now().isoformat(), "note": note}
            async with self.store.redis.pipeline(transaction=True) as pipe:
                pipe.hset(k.config_versions(self.section), str(version), value.model_dump_json())
                pipe.hset(k.config_meta(self.section), str(version), json.dumps(meta, ensure_ascii=False))
                pipe.set(k.config_current(self.section), str(version))
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise Unavailable("the store is not reachable; the change was not saved", {"reason": str(exc)}) from None
        self._cached = (version, value)
        self._checked_at = time.monotonic()
        return version

    async def versions(self) -> list[VersionInfo]:
        k = self.store.keys
        metas = await self.store.redis.hgetall(k.config_meta(self.section))
        current, _ = await self.current()
        out = [VersionInfo(version=0, actor="config-files", at=None, note="configuration files", active=current == 0)]
        for ver in sorted(metas, key=int):
            m = json.loads(metas[ver])
            out.append(
                VersionInfo(version=int(ver), actor=m["actor"], at=m["at"], note=m.get("note", ""), active=int(ver) == current)
            )
        return out

    async def get(self, version: int) -> M:
        if version == 0:
            return self.file_default()
        raw = await self.store.redis.hget(self.store.keys.config_versions(self.section), str(version))
        if raw is None:
            raise NotFound(f"{self.section} has no version {version}", {"version": version})
        return self.model.model_validate_json(raw)

    async def rollback(self, version: int, actor: str) -> int:
        value = await self.get(version)
        return await self.put(value, actor, note=f"rollback to version {version}")
