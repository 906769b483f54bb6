"""Who may do what: users with passwords (sessions), API keys for machines, roles, rate limits.

Roles: agent_n1, agent_n2, supervisor, admin (admin passes every check). Every endpoint declares its roles:

    @router.get("/api/v1/tickets")
    async def list_tickets(who: Principal = Depends(require("agent_n1", "agent_n2", "supervisor"))): ...

Credentials, in order: `X-API-Key: <key>`, `Authorization: Bearer <session token or API key>`, cookie
`atiende_session` (the web pages). Passwords are hashed with scrypt (stdlib); only SHA-256 digests of session
tokens and API keys are stored in Redis, so a copy of the database does not let anyone in. API-key lookups are
cached in-process for `KEY_CACHE_S` seconds (a revoked key stops working within that time).

    await desk.auth.create_user("ana", "Ana", ["agent_n1"], "secret-pass", level=1, skills=["general"])
    session = await desk.auth.login("ana", "secret-pass")      # {"token", "expires_at", "user"}
    key = await desk.auth.create_api_key("ivr-node-2", ["supervisor"])
    await desk.limiter.check("status", client_ip)              # raises RateLimited (429) over the limit
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel

from config.desk import DeskConfig
from core.clock import Clock
from core.errors import Conflict, InvalidInput, NotFound, RateLimited, Unauthorized
from core.store import Store
from desk.agents import AgentService
from desk.audit import AuditLog
from desk.models import Agent, Principal

if TYPE_CHECKING:
    pass

ROLES = ("agent_n1", "agent_n2", "supervisor", "admin")
AGENT_ROLES = ("agent_n1", "agent_n2")
KEY_CACHE_S = 5.0
SESSION_COOKIE = "atiende_session"
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _algo, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class User(BaseModel):
    username: str
    name: str
    roles: list[str]
    password_hash: str
    agent_id: str | None = None
    active: bool = True


class Session(BaseModel):
    token: str
    expires_at: str
    user: Principal


def _check_roles(roles: list[str]) -> None:
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise InvalidInput(f"unknown or missing roles {bad}", {"roles": list(ROLES)})


class AuthService:
    def __init__(self, store: Store, clock: Clock, cfg: DeskConfig, agents: AgentService, audit: AuditLog) -> None:
        self.store = store
        self.clock = clock
        self.cfg = cfg
        self.agents = agents
        self.audit = audit
        self._key_cache: dict[str, tuple[float, Principal | None]] = {}
        self._bootstrapped = False
        self._bootstrap_lock = asyncio.Lock()

    # ---- users and keys ----------------------------------------------------------------------

    async def create_user(self, username: str, name: str, roles: list[str], password: str, *, level: int | None = None,
                          skills: list[str] | None = None, sip_uri: str | None = None, actor: str = "system",
                          exist_ok: bool = False) -> User:
        """A new user; agents (roles agent_n1/agent_n2 or a level) also get an Agent record with the same id."""
        if not _USERNAME.match(username):
            raise InvalidInput("username: 2-32 lower-case letters, digits, '.', '_' or '-'", {"username": username})
        _check_roles(roles)
        if len(password) < 8:
            raise InvalidInput("password: at least 8 characters", {"password": "too short"})
        is_agent = level is not None or any(r in AGENT_ROLES for r in roles)
        user = User(username=username, name=name, roles=roles, password_hash=await asyncio.to_thread(hash_password, password),
                    agent_id=username if is_agent else None)
        k = self.store.keys
        if not await self.store.redis.set(k.user(username), user.model_dump_json(), nx=True):
            if exist_ok:
                existing = await self.store.get_model(k.user(username), User)
                assert existing is not None
                return existing
            raise Conflict(f"user {username!r} exists", {"username": username})
        await self.store.redis.sadd(k.users, username)
        if is_agent:
            lvl = level or (2 if "agent_n2" in roles else 1)
            await self.agents.upsert(Agent(id=username, name=name, level=lvl, skills=skills or ["general"], sip_uri=sip_uri),
                                     actor=actor)
        await self.audit.record(actor, "user.create", username, {"roles": roles})
        return user

    async def get_user(self, username: str) -> User:
        u = await self.store.get_model(self.store.keys.user(username), User)
        if u is None:
            raise NotFound(f"no user {username!r}", {"username": username})
        return u

    async def list_users(self) -> list[User]:
        names = sorted(str(n) for n in await self.store.redis.smembers(self.store.keys.users))
        raws = await self.store.redis.mget([self.store.keys.user(n) for n in names]) if names else []
        return [User.model_validate_json(r) for r in raws if r]

    async def set_password(self, username: str, password: str, actor: str) -> None:
        if len(password) < 8:
            raise InvalidInput("password: at least 8 characters", {"password": "too short"})
        u = await self.get_user(username)
        u.password_hash = await asyncio.to_thread(hash_password, password)
        await self.store.set_model(self.store.keys.user(username), u)
        await self.audit.record(actor, "user.password", username)

    async def create_api_key(self, name: str, roles: list[str], *, key: str | None = None, actor: str = "system") -> str:
        """Returns the key (shown once); Redis keeps only its SHA-256."""
        _check_roles(roles)
        key = key or "atk_" + secrets.token_urlsafe(32)
        principal = Principal(id=f"key:{name}", name=name, roles=roles)
        await self.store.redis.set(self.store.keys.api_key(sha(key)), principal.model_dump_json())
        await self.audit.record(actor, "apikey.create", name, {"roles": roles})
        return key

    async def revoke_api_key(self, key: str, actor: str) -> None:
        await self.store.redis.delete(self.store.keys.api_key(sha(key)))
        self._key_cache.pop(sha(key), None)
        await self.audit.record(actor, "apikey.revoke", sha(key)[:12])

    async def bootstrap(self) -> None:
        """Create the configured users and keys that do not exist yet (once per process)."""
        if self._bootstrapped:
            return
        async with self._bootstrap_lock:  # many first requests at once must not all hash every password
            if not self._bootstrapped:
                await self._bootstrap()

    async def _bootstrap(self) -> None:
        for u in self.cfg.users:
            if not await self.store.redis.exists(self.store.keys.user(u.username)):
                await self.create_user(u.username, u.name, list(u.roles), u.password, level=u.level, skills=u.skills or None,
                                       sip_uri=u.sip_uri, actor="bootstrap", exist_ok=True)
        for key in self.cfg.api_keys:
            if not await self.store.redis.exists(self.store.keys.api_key(sha(key.key))):
                await self.create_api_key(key.name, list(key.roles), key=key.key, actor="bootstrap")
        self._bootstrapped = True

    # ---- sessions ----------------------------------------------------------------------------

    async def login(self, username: str, password: str) -> Session:
        await self.bootstrap()
        u = await self.store.get_model(self.store.keys.user(username), User) if _USERNAME.match(username) else None
        # Hash even for unknown users so timing does not tell which usernames exist.
        ok = await asyncio.to_thread(verify_password, password, u.password_hash if u else hash_password("x" * 8))
        if u is None or not ok or not u.active:
            await self.audit.record(f"user:{username[:32]}", "auth.login-failed", username[:32])
            raise Unauthorized("wrong username or password")
        token = secrets.token_urlsafe(32)
        principal = Principal(id=f"user:{u.username}", name=u.name, roles=u.roles, agent_id=u.agent_id)
        ttl = self.cfg.session_ttl_s
        await self.store.redis.set(self.store.keys.session(sha(token)), principal.model_dump_json(), ex=ttl)
        await self.audit.record(principal.id, "auth.login", u.username)
        expires = (self.clock.now() + timedelta(seconds=ttl)).isoformat()
        return Session(token=token, expires_at=expires, user=principal)

    async def logout(self, token: str) -> None:
        await self.store.redis.delete(self.store.keys.session(sha(token)))

    async def authenticate(self, token: str) -> Principal | None:
        """A session token or an API key -> who it is; None when neither."""
        digest = sha(token)
        hit = self._key_cache.get(digest)
        if hit is not None and time.monotonic() - hit[0] < KEY_CACHE_S:
            return hit[1]
        k = self.store.keys
        raw_key, raw_session = await self.store.redis.mget([k.api_key(digest), k.session(digest)])
        if raw_key:
            p = Principal.model_validate_json(raw_key)
            if len(self._key_cache) > 10_000:
                self._key_cache.clear()
            self._key_cache[digest] = (time.monotonic(), p)
            return p
        return Principal.model_validate_json(raw_session) if raw_session else None


class RateLimiter:
    """Fixed windows counted in Redis, shared by every worker and node, without a Redis write on the request path.

    With `appendfsync always` every Redis write waits for an fsync, so a limiter that INCRs per request would give
    every status lookup the latency of a disk flush. Instead each process counts locally and a background task adds
    its counts to Redis every `FLUSH_S` (INCRBY, one pipeline), reading back the global totals. A request is refused
    when (global total seen at the last flush) + (local count not yet flushed) exceeds the limit: exact within one
    process, and across processes late by at most one flush interval.
    """

    FLUSH_S = 0.05

    def __init__(self, store: Store, clock: Clock, cfg: DeskConfig) -> None:
        self.store = store
        self.clock = clock
        self.cfg = cfg
        self._pending: dict[str, int] = {}  # counted here, not yet sent
        self._inflight: dict[str, int] = {}  # sent, total not yet read back
        self._seen: dict[str, int] = {}  # global total read back at the last flush
        self._ttl: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def check(self, name: str, client: str) -> None:
        rule = self.cfg.rate_limits.get(name)
        if rule is None:
            return
        now = int(time.time())
        key = self.store.keys.rate(f"{name}:{client}:{now // rule.per_seconds}")
        pending = self._pending.get(key, 0)
        if self._seen.get(key, 0) + self._inflight.get(key, 0) + pending >= rule.requests:
            retry = rule.per_seconds - now % rule.per_seconds
            raise RateLimited(f"too many requests; try again in {retry} s",
                              {"limit": rule.requests, "per_seconds": rule.per_seconds, "retry_after": retry})
        self._pending[key] = pending + 1
        self._ttl[key] = rule.per_seconds + 1
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(self.FLUSH_S)
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, {}
        if not batch:
            return
        for key, n in batch.items():
            self._inflight[key] = self._inflight.get(key, 0) + n
        try:
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for key, n in batch.items():
                    pipe.incrby(key, n)
                    pipe.expire(key, self._ttl.get(key, 120))
                res = await pipe.execute()
        except Exception:  # Redis away: keep counting locally, retry on the next flush
            for key, n in batch.items():
                self._pending[key] = self._pending.get(key, 0) + n
                self._inflight[key] -= n
            return
        for i, (key, n) in enumerate(batch.items()):
            self._seen[key] = max(self._seen.get(key, 0), int(res[2 * i]))
            self._inflight[key] -= n
            if not self._inflight[key]:
                del self._inflight[key]
        if len(self._seen) > 50_000:  # old windows: forget them
            self._seen = {k: v for k, v in self._seen.items() if k in batch}
