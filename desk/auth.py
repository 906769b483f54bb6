"""Who may do what: users with passwords (sessions), API keys for machines, roles, rate limits.

Roles: agent_n1, agent_n2, supervisor, admin (admin passes every check). Every endpoint declares its roles:

    @router.get("/api/v1/tickets")
    async def list_tickets(who: Principal = Depends(require("agent_n1", "agent_n2", "supervisor"))): ...

Credentials, in order: `X-API-Key: <key>`, `Authorization: Bearer <session token or API key>`, cookie
`atiende_session` (the web pages). Only SHA-256 digests of session tokens and API keys are stored in Redis, so a
copy of the database does not let anyone in. API-key lookups are cached in-process for `KEY_CACHE_S` seconds (a
revoked key stops working on other processes within that time; at once on the one that revoked it).

Passwords are hashed with argon2id at OWASP's parameters (19 MiB, 2 passes, 1 lane: about 50 ms here) rather
than scrypt at today's recommended N=2^17 (128 MiB and about 1 s per hash on this 2-core machine): the same
resistance to GPU guessing for a seventh of the memory per concurrent login and a twentieth of the CPU on a box
that also paces calls. Older scrypt hashes still verify and are rehashed on the next login. Hashing runs in a
small dedicated thread pool, never on the event loop. Every login runs exactly one hash verification, against a
dummy hash with the same parameters when the username is unknown, malformed or disabled, so timing tells nothing.
Failed logins are counted per username (locked out with backoff, `desk.login_throttle`) and per address
(`rate_limits.login`).

Accounts: demo users and keys (config `desk.users` / `desk.api_keys`) exist only while `desk.demo` is true;
without it, the first `atiende run` with no admin creates one with a random password printed once (`prepare`).
A password change or a disabled user ends every session of that user at once.

    await desk.auth.create_user("ana", "Ana", ["agent_n1"], "secret-pass-2026", level=1, skills=["general"])
    session = await desk.auth.login("ana", "secret-pass-2026")   # {"token", "expires_at", "user"}
    await desk.auth.verify("ana", "secret-pass-2026")            # re-authentication: login's checks, no session
    key = await desk.auth.create_api_key("ivr-node-2", ["supervisor"])
    await desk.auth.set_password("ana", "...", actor=...); await desk.auth.set_active("ana", False, actor=...)
    await desk.auth.revoke_key("ivr-node-2", actor=...)
    await desk.limiter.check("status", client_ip)              # raises RateLimited (429) over the limit
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Literal, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel
from redis.exceptions import WatchError

from config.desk import DeskConfig
from core.clock import Clock
from core.errors import Conflict, InvalidInput, NotFound, RateLimited, Unauthorized
from core.store import Store
from desk.agents import AgentService
from desk.audit import AuditLog
from desk.models import Agent, Principal

log = logging.getLogger(__name__)

ROLES = ("agent_n1", "agent_n2", "supervisor", "admin")
AGENT_ROLES = ("agent_n1", "agent_n2")
KEY_CACHE_S = 5.0
SESSION_COOKIE = "atiende_session"
MIN_PASSWORD = 12
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# OWASP Password Storage Cheat Sheet (2023-): argon2id, m=19 MiB, t=2, p=1.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Two threads: one login hashing never waits behind the other core's, and memory stays bounded (2 x 19 MiB).
_HASH_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="password-hash")
_dummy_hash: str | None = None

T = TypeVar("T")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def _scrypt_verify(password: str, stored: str) -> bool:
    try:
        _algo, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32,
                             maxmem=2**28)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def check_password(password: str, stored: str) -> tuple[bool, bool]:
    """(matches, should be rehashed with today's parameters)."""
    if stored.startswith("scrypt$"):
        return _scrypt_verify(password, stored), True
    try:
        _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False, False
    return True, _HASHER.check_needs_rehash(stored)


def verify_password(password: str, stored: str) -> bool:
    return check_password(password, stored)[0]


def dummy_hash() -> str:
    """A hash with today's parameters that no password matches, verified when the user is unknown."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _HASHER.hash(secrets.token_urlsafe(24))
    return _dummy_hash


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-heavy hashing in the password pool: never on the event loop, which also paces call audio."""
    return await asyncio.get_running_loop().run_in_executor(_HASH_POOL, fn, *args)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def is_loopback(host: str) -> bool:
    """Whether an HTTP bind address is reachable from this machine only (demo accounts are allowed there)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class User(BaseModel):
    username: str
    name: str
    roles: list[str]
    password_hash: str
    agent_id: str | None = None
    active: bool = True
    demo: bool = False  # created by the demo switch: removed when it is off or the user leaves the config


class Session(BaseModel):
    token: str
    expires_at: str
    user: Principal


class KeyInfo(BaseModel):
    name: str
    roles: list[str]
    demo: bool = False
    created_at: str | None = None


class Credential(BaseModel):
    """A secret created at start-up, to be shown once on the console (never logged)."""

    kind: Literal["user", "key"]
    name: str
    roles: list[str]
    secret: str


def _check_roles(roles: list[str]) -> None:
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise InvalidInput(f"unknown or missing roles {bad}", {"roles": list(ROLES)})


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password: at least {MIN_PASSWORD} characters", {"password": "too short"})
    if len(password) > 256:
        raise InvalidInput("password: at most 256 characters", {"password": "too long"})


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
        self._created: list[Credential] = []

    # ---- users -------------------------------------------------------------------------------

    async def create_user(self, username: str, name: str, roles: list[str], password: str, *, level: int | None = None,
                          skills: list[str] | None = None, sip_uri: str | None = None, actor: str = "system",
                          exist_ok: bool = False, demo: bool = False) -> User:
        """A new user; agents (roles agent_n1/agent_n2 or a level) also get an Agent record with the same id."""
        if not _USERNAME.match(username):
            raise InvalidInput("username: 2-32 lower-case letters, digits, '.', '_' or '-'", {"username": username[:64]})
        _check_roles(roles)
        _check_password(password)
        is_agent = level is not None or any(r in AGENT_ROLES for r in roles)
        user = User(username=username, name=name, roles=roles, password_hash=await off_loop(hash_password, password),
                    agent_id=username if is_agent else None, demo=demo)
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
        await self.audit.record(actor, "user.create", username, {"roles": roles, "demo": demo})
        return user

    async def get_user(self, username: str) -> User:
        u = await self.store.get_model(self.store.keys.user(username), User) if _USERNAME.match(username) else None
        if u is None:
            raise NotFound(f"no user {username[:64]!r}", {"username": username[:64]})
        return u

    async def list_users(self) -> list[User]:
        names = sorted(str(n) for n in await self.store.redis.smembers(self.store.keys.users))
        raws = await self.store.redis.mget([self.store.keys.user(n) for n in names]) if names else []
        return [User.model_validate_json(r) for r in raws if r]

    async def _update_user(self, username: str, change: Callable[[User], None]) -> User:
        key = self.store.keys.user(username)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for _ in range(20):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(f"no user {username[:64]!r}", {"username": username[:64]})
                    u = User.model_validate_json(raw)
                    change(u)
                    pipe.multi()
                    pipe.set(key, u.model_dump_json())
                    await pipe.execute()
                    return u
                except WatchError:
                    continue
        raise Conflict("the user is being changed by others, try again", {"username": username})

    async def set_password(self, username: str, password: str, actor: str) -> None:
        """A new password; every session of the user ends."""
        _check_password(password)
        await self.get_user(username)
        digest = await off_loop(hash_password, password)

        def change(u: User) -> None:
            u.password_hash = digest

        await self._update_user(username, change)
        ended = await self.end_sessions(username)
        await self.store.redis.delete(self.store.keys.login_failures(self._throttle_id(username)),
                                      self.store.keys.login_lock(self._throttle_id(username)))
        await self.audit.record(actor, "user.password", username, {"sessions_ended": ended})

    async def set_active(self, username: str, active: bool, actor: str) -> User:
        """Disable (every session ends, logins refused) or enable a user."""

        def change(u: User) -> None:
            u.active = active

        u = await self._update_user(username, change)
        ended = 0 if active else await self.end_sessions(username)
        await self.audit.record(actor, "user.enable" if active else "user.disable", username, {"sessions_ended": ended})
        return u

    async def delete_user(self, username: str, actor: str) -> None:
        """Remove the user, its sessions and its agent record."""
        u = await self.get_user(username)
        await self.end_sessions(username)
        k = self.store.keys
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.delete(k.user(username))
            pipe.srem(k.users, username)
            await pipe.execute()
        if u.agent_id and await self.agents.find(u.agent_id) is not None:
            await self.agents.delete(u.agent_id, actor=actor)
        await self.audit.record(actor, "user.delete", username, {"demo": u.demo})

    async def end_sessions(self, username: str) -> int:
        k = self.store.keys
        digests = [str(d) for d in await self.store.redis.smembers(k.user_sessions(username))]
        async with self.store.redis.pipeline(transaction=True) as pipe:
            for d in digests:
                pipe.delete(k.session(d))
            pipe.delete(k.user_sessions(username))
            await pipe.execute()
        return len(digests)

    # ---- API keys ----------------------------------------------------------------------------

    async def create_api_key(self, name: str, roles: list[str], *, key: str | None = None, actor: str = "system",
                             demo: bool = False) -> str:
        """Returns the key (shown once); Redis keeps only its SHA-256. A new key for an existing name replaces it."""
        if not _KEY_NAME.match(name):
            raise InvalidInput("key name: 1-64 letters, digits, '.', '_' or '-'", {"name": name[:64]})
        _check_roles(roles)
        key = key or "atk_" + secrets.token_urlsafe(32)
        k = self.store.keys
        record = {"id": f"key:{name}", "name": name, "roles": roles, "demo": demo,
                  "created_at": self.clock.now().isoformat()}
        old = await self.store.redis.hget(k.api_keys, name)
        async with self.store.redis.pipeline(transaction=True) as pipe:
            if old and old != sha(key):
                pipe.delete(k.api_key(str(old)))
            # One record read both as the Principal (authenticate) and as KeyInfo (list_keys).
            pipe.set(k.api_key(sha(key)), json.dumps(record))
            pipe.hset(k.api_keys, name, sha(key))
            await pipe.execute()
        if old:
            self._key_cache.pop(str(old), None)
        await self.audit.record(actor, "apikey.create", name, {"roles": roles, "demo": demo, "replaced": bool(old)})
        return key

    async def list_keys(self) -> list[KeyInfo]:
        k = self.store.keys
        index: dict[str, str] = {str(n): str(d) for n, d in (await self.store.redis.hgetall(k.api_keys)).items()}
        names = sorted(index)
        raws = await self.store.redis.mget([k.api_key(index[n]) for n in names]) if names else []
        return [KeyInfo.model_validate_json(r) for r in raws if r]

    async def revoke_key(self, name: str, actor: str) -> None:
        k = self.store.keys
        digest = await self.store.redis.hget(k.api_keys, name)
        if digest is None:
            raise NotFound(f"no API key named {name[:64]!r}", {"name": name[:64]})
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.delete(k.api_key(str(digest)))
            pipe.hdel(k.api_keys, name)
            await pipe.execute()
        self._key_cache.pop(str(digest), None)
        await self.audit.record(actor, "apikey.revoke", name)

    async def revoke_api_key(self, key: str, actor: str) -> None:
        """Revoke by the key itself (when its name is not known)."""
        k = self.store.keys
        raw = await self.store.redis.get(k.api_key(sha(key)))
        if raw:
            await self.revoke_key(KeyInfo.model_validate_json(raw).name, actor)

    # ---- start-up: demo accounts and the first admin -------------------------------------------

    async def bootstrap(self) -> None:
        """Bring the demo accounts in line with the config (once per process): created while `demo` is on,
        removed (sessions included) when it is off or they leave the lists."""
        if self._bootstrapped:
            return
        async with self._bootstrap_lock:  # many first requests at once must not all hash every password
            if not self._bootstrapped:
                await self._sync_demo()
                self._bootstrapped = True

    async def prepare(self) -> list[Credential]:
        """For `atiende run` before it serves: the demo sync, then (without demo) an admin with a random password
        if there is no active admin. Returns the secrets created, for the console only."""
        await self.bootstrap()
        if not self.cfg.demo:
            await self._first_admin()
        created, self._created = self._created, []
        return created

    async def _sync_demo(self) -> None:
        wanted_users = {u.username: u for u in self.cfg.users} if self.cfg.demo else {}
        for u in await self.list_users():
            if u.demo and u.username not in wanted_users:
                await self.delete_user(u.username, actor="bootstrap")
                log.warning("demo user removed", extra={"fields": {"username": u.username}})
        for cu in wanted_users.values():
            if await self.store.redis.exists(self.store.keys.user(cu.username)):
                continue
            password = cu.password or new_password()
            try:
                await self.create_user(cu.username, cu.name, list(cu.roles), password, level=cu.level,
                                       skills=cu.skills or None, sip_uri=cu.sip_uri, actor="bootstrap", demo=True)
            except Conflict:
                continue  # another node created it first
            if cu.password is None:
                self._created.append(Credential(kind="user", name=cu.username, roles=list(cu.roles), secret=password))
            log.info("demo user created", extra={"fields": {"username": cu.username}})
        wanted_keys = {k.name: k for k in self.cfg.api_keys} if self.cfg.demo else {}
        existing = {k.name: k for k in await self.list_keys()}
        for name, info in existing.items():
            if info.demo and name not in wanted_keys:
                await self.revoke_key(name, actor="bootstrap")
                log.warning("demo API key revoked", extra={"fields": {"key": name}})
        for name, ck in wanted_keys.items():
            if name in existing:
                continue
            key = await self.create_api_key(name, list(ck.roles), key=ck.key, actor="bootstrap", demo=True)
            if ck.key is None:
                self._created.append(Credential(kind="key", name=name, roles=list(ck.roles), secret=key))

    async def _first_admin(self) -> None:
        if any(u.active and "admin" in u.roles for u in await self.list_users()):
            return
        name = "admin" if not await self.store.redis.exists(self.store.keys.user("admin")) else \
            f"admin-{secrets.token_hex(2)}"
        password = new_password()
        try:
            await self.create_user(name, "Administración", ["admin"], password, actor="first-start")
        except Conflict:
            return  # another node did it at the same moment
        self._created.append(Credential(kind="user", name=name, roles=["admin"], secret=password))
        log.warning("first admin created; its one-time password was printed on the console",
                    extra={"fields": {"username": name}})

    # ---- sessions ----------------------------------------------------------------------------

    @staticmethod
    def _throttle_id(username: str) -> str:
        # Counted per name as typed (bounded, hashed), whether the user exists or not: the lock is no oracle.
        return sha(username.strip().lower()[:64])[:32]

    async def _check_lock(self, tid: str) -> None:
        ttl = int(await self.store.redis.ttl(self.store.keys.login_lock(tid)))
        if ttl > 0:
            raise RateLimited(f"Demasiados intentos fallidos con este usuario; inténtelo de nuevo en {ttl} s.",
                              {"retry_after": ttl, "scope": "account"}, error_id="account-locked")

    async def _failed(self, tid: str) -> None:
        t = self.cfg.login_throttle
        k = self.store.keys
        n = int(await self.store.redis.incr(k.login_failures(tid)))
        over = n - t.max_failures
        lock_s = min(t.lockout_s * 2 ** min(over, 20), t.max_lockout_s) if over >= 0 else 0
        await self.store.redis.expire(k.login_failures(tid), max(t.window_s, 2 * lock_s))
        if lock_s:
            await self.store.redis.set(k.login_lock(tid), "1", ex=lock_s)

    async def _verify(self, username: str, password: str, failed_action: str) -> User:
        """The one password check behind login and verify: the per-username lock, exactly one hash verification
        in the password threads whoever asks, a failure counted toward the lock and audited as `failed_action`."""
        await self.bootstrap()
        tid = self._throttle_id(username)
        await self._check_lock(tid)
        u = await self.store.get_model(self.store.keys.user(username), User) if _USERNAME.match(username) else None
        # Exactly one verification whoever asks: against a dummy hash of the same cost for unknown users.
        stored = u.password_hash if u is not None else await off_loop(dummy_hash)
        ok, rehash = await off_loop(check_password, password[:256], stored)
        if u is None or not ok or not u.active:
            await self._failed(tid)
            await self.audit.record(f"user:{username[:32]}", failed_action, username[:32])
            raise Unauthorized("wrong username or password")
        await self.store.redis.delete(self.store.keys.login_failures(tid))
        if rehash:
            await self._rehash(u, password)
        return u

    async def login(self, username: str, password: str) -> Session:
        u = await self._verify(username, password, "auth.login-failed")
        principal = Principal(id=f"user:{u.username}", name=u.name, roles=u.roles, agent_id=u.agent_id)
        return await self.open_session(principal, u.username, "auth.login")

    async def verify(self, username: str, password: str) -> User:
        """Check a user's password without logging in (re-authentication, e.g. before a password change): the
        lock, timing and failure counting of `login`, but no session is opened and no login is audited (a failure
        is, as `auth.verify-failed`). Raises Unauthorized or RateLimited as `login` does."""
        return await self._verify(username, password, "auth.verify-failed")

    async def open_session(self, principal: Principal, username: str, action: str, audit: dict[str, Any] | None = None
                           ) -> Session:
        """A new session for an authenticated principal (a password login, or single sign-on in desk/oidc.py); it
        ends with the user's other sessions (`end_sessions(username)`)."""
        token = secrets.token_urlsafe(32)
        ttl = self.cfg.session_ttl_s
        k = self.store.keys
        async with self.store.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.session(sha(token)), principal.model_dump_json(), ex=ttl)
            pipe.sadd(k.user_sessions(username), sha(token))
            pipe.expire(k.user_sessions(username), ttl)
            await pipe.execute()
        await self.audit.record(principal.id, action, username, audit)
        expires = (self.clock.now() + timedelta(seconds=ttl)).isoformat()
        return Session(token=token, expires_at=expires, user=principal)

    async def _rehash(self, u: User, password: str) -> None:
        old = u.password_hash
        digest = await off_loop(hash_password, password)

        def change(cur: User) -> None:
            if cur.password_hash == old:  # a password set meanwhile wins over the rehash
                cur.password_hash = digest

        await self._update_user(u.username, change)
        await self.audit.record("system", "user.rehash", u.username)

    async def logout(self, token: str) -> None:
        k = self.store.keys
        raw = await self.store.redis.getdel(k.session(sha(token)))
        if raw:
            p = Principal.model_validate_json(raw)
            await self.store.redis.srem(k.user_sessions(p.id.split(":", 1)[-1]), sha(token))

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
