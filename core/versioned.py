"""Admin-editable configuration sections, versioned in Redis.

Version 0 is what the config files say; each admin change stores a new full document as
version N+1 and points `current` at it. Rolling back to N stores a copy of N as a new
version, so history only grows and "who changed what" stays readable. Every node reads
the `current` pointer at most once a second, so an edit on one node is live everywhere
within a second, and at once on the node that made it.

A change is a whole new document made from the one its author read: a write names that version (`base`) and is
refused (`StaleVersion`, 409) when another change became current meanwhile, so no edit silently undoes another.
The check, the new version number, the document and the `current` pointer are one Lua script: atomic, and
`current` only ever moves forward.
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
from core.errors import Conflict, InvalidInput, NotFound, Unavailable
from core.store import REDIS_ERRORS, Store

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


# KEYS: seq, versions, meta, current. ARGV: base ("" = whatever is current), document, meta.
# Returns {1, new version} or {0, current version} when `current` is not `base`.
_PUT = """
local cur = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
if ARGV[1] ~= '' and cur ~= tonumber(ARGV[1]) then
  return {0, cur}
end
local v = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], tostring(v), ARGV[2])
redis.call('HSET', KEYS[3], tostring(v), ARGV[3])
if v > cur then
  redis.call('SET', KEYS[4], tostring(v))
end
return {1, v}
"""


class StaleVersion(Conflict):
    """The change was made from a version that is no longer the current one."""

    error_id = "stale-version"

    def __init__(self, section: str, base: int, current: int) -> None:
        super().__init__(
            f"La configuración ({section}) ha cambiado mientras la editaba: está en uso la versión {current} y su "
            f"cambio se hizo sobre la {base}. Vuelva a cargarla y repita su cambio.",
            {"section": section, "base": base, "current": current},
        )
        self.base = base
        self.current = current


class VersionInfo(BaseModel):
    version: int
    actor: str
    at: datetime | None
    note: str = ""
    active: bool = False
    base: int | None = None  # the version this one was made from, when its writer said


def _info(version: int, raw: str | bytes, current: int) -> VersionInfo:
    m = json.loads(raw)
    return VersionInfo(version=version, actor=m["actor"], at=m["at"], note=m.get("note", ""), active=version == current,
                       base=m.get("base"))


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

    async def fresh(self) -> tuple[int, M]:
        """`current()` read from the store now, not this node's copy of up to `refresh_s` ago (that copy is
        still what a store outage falls back to)."""
        self._checked_at = 0.0
        return await self.current()

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

    async def put(self, data: Any, actor: str, note: str = "", base: int | None = None) -> int:
        """Store `data` as the new current version. With `base`, only if `base` is still the current version
        (StaleVersion, 409, otherwise): the caller read `base` and made this document from it."""
        value = self.validate(data)
        k = self.store.keys
        meta: dict[str, Any] = {"actor": actor, "at": self.clock.now().isoformat(), "note": note}
        if base is not None:
            meta["base"] = base
        try:
            ok, version = await self.store.redis.eval(
                _PUT, 4, k.config_seq(self.section), k.config_versions(self.section), k.config_meta(self.section),
                k.config_current(self.section), "" if base is None else str(base), value.model_dump_json(),
                json.dumps(meta, ensure_ascii=False))
        except REDIS_ERRORS as exc:
            raise Unavailable("the store is not reachable; the change was not saved", {"reason": str(exc)}) from None
        if not int(ok):
            self._checked_at = 0.0  # another version is current: the next `current()` reads it
            raise StaleVersion(self.section, base if base is not None else 0, int(version))
        self._cached = (int(version), value)
        self._checked_at = time.monotonic()
        return int(version)

    async def versions(self) -> list[VersionInfo]:
        k = self.store.keys
        metas = await self.store.redis.hgetall(k.config_meta(self.section))
        current, _ = await self.current()
        out = [VersionInfo(version=0, actor="config-files", at=None, note="configuration files", active=current == 0)]
        for ver in sorted(metas, key=int):
            out.append(_info(int(ver), metas[ver], current))
        return out

    async def info(self, version: int) -> VersionInfo:
        """Who stored one version, when, why, and from which one (404 when there is no such version)."""
        if version == 0:
            current, _ = await self.current()
            return VersionInfo(version=0, actor="config-files", at=None, note="configuration files", active=current == 0)
        raw = await self.store.redis.hget(self.store.keys.config_meta(self.section), str(version))
        if raw is None:
            raise NotFound(f"{self.section} has no version {version}", {"version": version})
        current, _ = await self.current()
        return _info(version, raw, current)

    async def get(self, version: int) -> M:
        if version == 0:
            return self.file_default()
        raw = await self.store.redis.hget(self.store.keys.config_versions(self.section), str(version))
        if raw is None:
            raise NotFound(f"{self.section} has no version {version}", {"version": version})
        return self.model.model_validate_json(raw)

    async def rollback(self, version: int, actor: str, base: int | None = None,
                       check: Callable[[M], None] | None = None) -> int:
        """Store a copy of `version` as the new current one; `check` may refuse it (what it names, such as queues,
        must still exist: it raises InvalidInput); with `base`, only if `base` is still current."""
        value = await self.get(version)
        if check is not None:
            check(value)
        return await self.put(value, actor, note=f"rollback to version {version}", base=base)
