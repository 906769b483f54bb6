"""Issue 16, findings 1 and 7: no usable default credentials, accounts that can be changed and closed, and a login
that tells nothing by its timing, never hashes on the event loop and locks a guessed account.

Each test is an attack (or the operator's remedy) against a real Redis."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

import desk.auth as auth_mod
from atiende.cli import main
from atiende.runtime import Runtime
from config.loader import Loaded, load
from core.clock import FixedClock
from core.redis_server import PrivateRedis
from core.store import Store
from tests.conftest import STAFF_PASSWORD

pytestmark = pytest.mark.anyio


def _runtime(store: Store, clock: FixedClock, tmp_path: Path, env: dict[str, str]) -> Runtime:
    loaded = load(None, env=env)
    loaded.settings.service.data_dir = tmp_path / "var"
    return Runtime(Loaded(settings=loaded.settings, version=loaded.version, document=loaded.document), store=store,
                   clock=clock)


DEMO_ENV = {"ATIENDE_DESK__DEMO": "true"}


def test_the_shipped_configuration_holds_no_usable_secret(loaded: Loaded) -> None:
    """Finding 1: config/defaults/desk.yaml names demo accounts but no password or key, and demo is off."""
    desk = loaded.settings.desk
    assert desk.demo is False
    assert all(u.password is None for u in desk.users) and all(k.key is None for k in desk.api_keys)
    text = (Path(__file__).resolve().parent.parent / "config/defaults/desk.yaml").read_text()
    for old in ("admin-demo-2026", "ana-demo-2026", "ivr-demo-key-change-me-2026"):
        assert old not in text


async def test_first_start_creates_one_admin_with_a_one_time_password(store: Store, clock: FixedClock, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    rt = _runtime(store, clock, tmp_path, {})
    auth = rt.desk.auth
    await auth.bootstrap()
    assert await auth.list_users() == []  # no demo accounts without the switch
    caplog.set_level(logging.INFO)
    created = await auth.prepare()
    assert [(c.kind, c.name, c.roles) for c in created] == [("user", "admin", ["admin"])]
    secret = created[0].secret
    assert len(secret) >= 20
    assert secret not in caplog.text and "first admin created" in caplog.text  # logged as created, never the password
    assert (await auth.login("admin", secret)).user.roles == ["admin"]
    rt2 = _runtime(store, clock, tmp_path, {})
    assert await rt2.desk.auth.prepare() == []  # an admin exists: nothing more, nothing printed


async def test_demo_accounts_vanish_when_the_config_drops_them(store: Store, clock: FixedClock, tmp_path: Path) -> None:
    """Finding 1's attack: after ATIENDE_DESK__USERS='[]' the demo admin and key no longer work, sessions included."""
    demo = _runtime(store, clock, tmp_path, DEMO_ENV)
    created = {c.name: c for c in await demo.desk.auth.prepare()}
    assert {"admin", "ana", "luis", "supervisora", "ivr"} <= set(created)
    session = await demo.desk.auth.login("admin", created["admin"].secret)
    key = created["ivr"].secret
    assert await demo.desk.auth.authenticate(key) is not None
    # The operator empties the lists (the README's advice) and restarts: nothing of the demo survives.
    after = _runtime(store, clock, tmp_path, {**DEMO_ENV, "ATIENDE_DESK__USERS": "[]", "ATIENDE_DESK__API_KEYS": "[]"})
    await after.desk.auth.prepare()
    with pytest.raises(Exception, match="wrong username or password"):
        await after.desk.auth.login("admin", created["admin"].secret)
    assert await after.desk.auth.authenticate(session.token) is None
    assert await after.desk.auth.authenticate(key) is None
    assert await after.desk.agents.find("ana") is None
    # Demo off altogether: the same, and a first admin (not the demo one) is created instead.
    demo2 = _runtime(store, clock, tmp_path, DEMO_ENV)
    again = {c.name: c for c in await demo2.desk.auth.prepare()}
    off = _runtime(store, clock, tmp_path, {})
    first = await off.desk.auth.prepare()
    assert [c.name for c in first] == ["admin"] and first[0].secret != again["admin"].secret
    with pytest.raises(Exception, match="wrong username or password"):
        await off.desk.auth.login("ana", again["ana"].secret)
    users = {u.username: u for u in await off.desk.auth.list_users()}
    assert set(users) == {"admin"} and not users["admin"].demo


async def test_operator_accounts_are_never_touched_by_the_demo_switch(store: Store, clock: FixedClock,
                                                                     tmp_path: Path) -> None:
    rt = _runtime(store, clock, tmp_path, {})
    await rt.desk.auth.create_user("ana", "Ana de verdad", ["agent_n1"], "la-clave-de-ana-2026")
    demo = _runtime(store, clock, tmp_path, DEMO_ENV)
    created = {c.name for c in await demo.desk.auth.prepare()}
    assert "ana" not in created  # the real ana stays as she is
    assert (await demo.desk.auth.login("ana", "la-clave-de-ana-2026")).user.name == "Ana de verdad"
    await _runtime(store, clock, tmp_path, {}).desk.auth.prepare()
    assert (await rt.desk.auth.get_user("ana")).active


def test_demo_is_refused_on_a_non_loopback_bind(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    for k in [k for k in __import__("os").environ if k.startswith("ATIENDE_")]:
        monkeypatch.delenv(k)
    assert main(["run", "--demo", "--no-sip", "--http", "0.0.0.0:18999"]) == 2
    assert "refused" in capsys.readouterr().err
    assert auth_mod.is_loopback("127.0.0.1") and auth_mod.is_loopback("::1") and auth_mod.is_loopback("localhost")
    assert not auth_mod.is_loopback("0.0.0.0") and not auth_mod.is_loopback("192.168.1.10")


async def test_password_change_disable_and_revoke_end_access_at_once(client: httpx.AsyncClient, runtime: Runtime,
                                                                     staff: dict[str, str]) -> None:
    auth = runtime.desk.auth
    ana = (await auth.login("ana", STAFF_PASSWORD)).token
    ana2 = (await auth.login("ana", STAFF_PASSWORD)).token
    admin = {"Authorization": f"Bearer {(await auth.login('admin', STAFF_PASSWORD)).token}"}
    as_ana = {"Authorization": f"Bearer {ana}"}
    # an agent may not do any of it
    assert (await client.put("/api/v1/users/luis/password", headers=as_ana,
                             json={"password": "otra-clave-larga-1"})).status_code == 403
    assert (await client.post("/api/v1/users/luis/disable", headers=as_ana)).status_code == 403
    assert (await client.delete("/api/v1/api-keys/ivr", headers=as_ana)).status_code == 403
    # the admin changes ana's password: both of her sessions end
    r = await client.put("/api/v1/users/ana/password", headers=admin, json={"password": "nueva-clave-de-ana-1"})
    assert r.status_code == 204, r.text
    assert (await client.get("/api/v1/auth/me", headers=as_ana)).status_code == 401
    assert (await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {ana2}"})).status_code == 401
    with pytest.raises(Exception, match="wrong username"):
        await auth.login("ana", STAFF_PASSWORD)
    ana3 = {"Authorization": f"Bearer {(await auth.login('ana', 'nueva-clave-de-ana-1')).token}"}
    # disabled: the session ends and the right password no longer opens one
    r = await client.post("/api/v1/users/ana/disable", headers=admin)
    assert r.status_code == 200 and r.json()["active"] is False
    assert (await client.get("/api/v1/auth/me", headers=ana3)).status_code == 401
    with pytest.raises(Exception, match="wrong username"):
        await auth.login("ana", "nueva-clave-de-ana-1")
    assert (await client.post("/api/v1/users/ana/enable", headers=admin)).json()["active"] is True
    await auth.login("ana", "nueva-clave-de-ana-1")
    # own password: needs the current one
    mine = {"Authorization": f"Bearer {(await auth.login('luis', STAFF_PASSWORD)).token}"}
    r = await client.post("/api/v1/auth/password", headers=mine, json={"current": "no-es-esta", "password": "x" * 14})
    assert r.status_code == 401
    r = await client.post("/api/v1/auth/password", headers=mine, json={"current": STAFF_PASSWORD,
                                                                      "password": "luis-nueva-clave-1"})
    assert r.status_code == 204 and (await client.get("/api/v1/auth/me", headers=mine)).status_code == 401
    # keys: listed without the secret, revoked by name
    keys = (await client.get("/api/v1/api-keys", headers=admin)).json()
    assert {"ivr", "test-admin"} <= {k["name"] for k in keys} and all("key" not in k for k in keys)
    ivr = {"X-API-Key": staff["ivr_key"]}
    assert (await client.get("/api/v1/queues", headers=ivr)).status_code == 200
    assert (await client.delete("/api/v1/api-keys/ivr", headers=admin)).status_code == 204
    assert (await client.get("/api/v1/queues", headers=ivr)).status_code == 401
    audit = {e["action"] for e in (await client.get("/api/v1/audit", headers=admin, params={"count": 200})).json()["entries"]}
    assert {"user.password", "user.disable", "user.enable", "apikey.revoke"} <= audit


def test_cli_manages_passwords_users_and_keys(redis_server: PrivateRedis, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ATIENDE_REDIS__PREFIX", f"cli{uuid.uuid4().hex[:6]}")
    url = ["--redis-url", redis_server.url]
    monkeypatch.setattr("sys.stdin", io.StringIO("una-clave-larga-1\n"))
    assert main(["desk", "create-user", "rosa", "--role", "agent_n1", "--password-stdin", *url]) == 0
    monkeypatch.setenv("NEW_PASS", "otra-clave-larga-2")
    capsys.readouterr()
    assert main(["desk", "set-password", "rosa", "--password-env", "NEW_PASS", *url]) == 0
    assert json.loads(capsys.readouterr().out)["sessions"] == "ended"
    monkeypatch.setenv("NEW_PASS", "corta")
    assert main(["desk", "set-password", "rosa", "--password-env", "NEW_PASS", *url]) == 1
    assert "at least 12" in capsys.readouterr().err
    assert main(["desk", "disable-user", "rosa", *url]) == 0
    assert main(["desk", "list-users", *url]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {r["username"]: r["active"] for r in rows}["rosa"] is False
    assert main(["desk", "enable-user", "rosa", *url]) == 0
    assert main(["desk", "create-key", "gw", "--role", "supervisor", *url]) == 0
    capsys.readouterr()
    assert main(["desk", "list-keys", *url]) == 0
    assert [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()] == ["gw"]
    assert main(["desk", "revoke-key", "gw", *url]) == 0
    assert main(["desk", "revoke-key", "gw", *url]) == 1
    assert main(["desk", "disable-user", "nadie", *url]) == 1


async def test_login_hashes_once_off_the_loop_whoever_asks(runtime: Runtime, staff: dict[str, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 7: one verification per login, in the password threads, against a dummy hash of the same cost for
    unknown, malformed and disabled users (no username oracle, no hashing on the loop that paces calls)."""
    calls: list[tuple[str, str]] = []
    real = auth_mod.check_password

    def spy(password: str, stored: str) -> tuple[bool, bool]:
        calls.append((threading.current_thread().name, stored.split("$")[1] + stored.split("$")[3]))
        return real(password, stored)

    monkeypatch.setattr(auth_mod, "check_password", spy)
    auth = runtime.desk.auth
    await auth.set_active("luis", False, actor="test")
    for name in ("ana", "nadie", "NO VALE", "luis"):
        with pytest.raises(Exception, match="wrong username or password"):
            await auth.login(name, "not-the-password")
    await auth.login("ana", STAFF_PASSWORD)
    assert len(calls) == 5
    assert {c[0].split("_")[0] for c in calls} == {"password-hash"}
    assert {c[1] for c in calls} == {"argon2idm=19456,t=2,p=1"}  # same algorithm and cost for everyone


async def test_guessing_one_account_locks_it_with_backoff(runtime: Runtime, staff: dict[str, str]) -> None:
    """Finding 7: failures are counted per username, whichever address they come from, existing or not."""
    auth = runtime.desk.auth
    limit = runtime.settings.desk.login_throttle.max_failures
    for name in ("ana", "fantasma"):
        for _ in range(limit):
            with pytest.raises(Exception, match="wrong username or password"):
                await auth.login(name, "guess")
        with pytest.raises(Exception, match="Demasiados intentos") as exc:
            await auth.login(name, STAFF_PASSWORD)  # even the right password waits out the lock
        assert getattr(exc.value, "error_id", "") == "account-locked"
    k = runtime.store.keys
    tid = auth._throttle_id("ana")
    first = await runtime.store.redis.ttl(k.login_lock(tid))
    await runtime.store.redis.delete(k.login_lock(tid))
    with pytest.raises(Exception, match="wrong username"):
        await auth.login("ana", "guess")
    assert await runtime.store.redis.ttl(k.login_lock(tid)) > first  # each further failure doubles the lock
    await runtime.store.redis.delete(k.login_lock(tid))
    await auth.login("ana", STAFF_PASSWORD)  # after the lock, the right password works and the count restarts
    assert not await runtime.store.redis.exists(k.login_failures(tid))
    await auth.login("luis", STAFF_PASSWORD)  # other accounts were never affected


async def test_old_scrypt_hashes_are_rehashed_on_login(runtime: Runtime) -> None:
    import hashlib
    import secrets

    auth = runtime.desk.auth
    await auth.create_user("vieja", "Cuenta vieja", ["supervisor"], "clave-de-antes-2020")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(b"clave-de-antes-2020", salt=salt, n=2**14, r=8, p=1, dklen=32)
    u = await auth.get_user("vieja")
    u.password_hash = f"scrypt${2**14}$8$1${salt.hex()}${digest.hex()}"
    await runtime.store.set_model(runtime.store.keys.user("vieja"), u)
    await auth.login("vieja", "clave-de-antes-2020")
    assert (await auth.get_user("vieja")).password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    await auth.login("vieja", "clave-de-antes-2020")


async def test_changing_ones_password_checks_it_without_logging_in(client: httpx.AsyncClient, runtime: Runtime,
                                                                    staff: dict[str, str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: the current password was checked by a full login, which opened a throwaway session and wrote a
    false "auth.login" entry. It is now checked by `verify`: no session, no login entry, the same lockout."""
    auth, store = runtime.desk.auth, runtime.store
    session = await auth.login("ana", STAFF_PASSWORD)
    mine = {"Authorization": f"Bearer {session.token}"}
    sessions = store.keys.user_sessions("ana")
    assert await store.redis.scard(sessions) == 1

    def logins(entries: list[dict[str, object]]) -> list[dict[str, object]]:
        return [e for e in entries if e["action"] == "auth.login" and e["target"] == "ana"]

    before = logins(await runtime.desk.audit.entries(count=500))
    opened: list[str] = []
    real_open = auth.open_session

    async def spy_open(principal: Any, username: str, action: str, audit: Any = None) -> Any:
        opened.append(username)
        return await real_open(principal, username, action, audit)

    monkeypatch.setattr(auth, "open_session", spy_open)
    old_hash = (await auth.get_user("ana")).password_hash
    # A wrong current password: refused, and it counts toward the account's lock like a failed login. (Few
    # requests over HTTP: the route shares login's per-address limit, `rate_limits.login`.)
    wrong = {"current": "no-es-esta", "password": "ana-nueva-clave-1"}
    r = await client.post("/api/v1/auth/password", headers=mine, json=wrong)
    assert r.status_code == 401, r.text
    failures = store.keys.login_failures(auth._throttle_id("ana"))
    assert int(await store.redis.get(failures)) == 1
    # verify opens nothing, right or wrong; a right password resets the count as a login does
    assert (await auth.verify("ana", STAFF_PASSWORD)).username == "ana"
    assert not await store.redis.exists(failures)
    assert await store.redis.scard(sessions) == 1
    limit = runtime.settings.desk.login_throttle.max_failures
    for _ in range(limit - 1):
        with pytest.raises(Exception, match="wrong username or password"):
            await auth.verify("ana", "no-es-esta")
    r = await client.post("/api/v1/auth/password", headers=mine, json=wrong)
    assert r.status_code == 401, r.text
    r = await client.post("/api/v1/auth/password", headers=mine, json={"current": STAFF_PASSWORD,
                                                                      "password": "ana-nueva-clave-1"})
    assert r.status_code == 429 and r.json()["error_id"] == "account-locked"  # locked, even with the right one
    assert (await auth.get_user("ana")).password_hash == old_hash  # and the password did not change
    assert await store.redis.scard(sessions) == 1
    await store.redis.delete(store.keys.login_lock(auth._throttle_id("ana")))
    # The right current password: changed, this session ended, no new session opened, no login recorded.
    r = await client.post("/api/v1/auth/password", headers=mine, json={"current": STAFF_PASSWORD,
                                                                      "password": "ana-nueva-clave-1"})
    assert r.status_code == 204, r.text
    assert not await store.redis.exists(sessions)
    assert (await client.get("/api/v1/auth/me", headers=mine)).status_code == 401
    entries = await runtime.desk.audit.entries(count=500)
    assert logins(entries) == before and opened == []
    actions = [e["action"] for e in entries if e["target"] == "ana"]
    assert "user.password" in actions and actions.count("auth.verify-failed") == limit + 1
    assert (await auth.login("ana", "ana-nueva-clave-1")).user.id == "user:ana"
