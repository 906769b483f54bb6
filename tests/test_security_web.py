"""Issue 16, finding 8 (the web session) and the staff-only switches of finding 9, over real HTTP (ASGI)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from atiende.runtime import Runtime
from desk_api.routes.desk import safe_next
from tests.conftest import STAFF_PASSWORD

pytestmark = pytest.mark.anyio
WEB = Path(__file__).resolve().parent.parent / "desk_api" / "web"


def test_next_after_login_stays_on_this_site() -> None:
    for evil in ("//evil.example/x", "/\\evil.example/x", "/\\/evil.example", "https://evil.example", "javascript:alert(1)",
                 "/\t/evil.example", "/\n/evil.example", "evil.example", "", None, " /desk"):
        assert safe_next(evil) == "/desk", evil
    for good in ("/admin", "/reports?desde=2026-01-01", "/desk#K7M4PX"):
        assert safe_next(good) == good


def test_pages_never_hold_the_session_token() -> None:
    """The token lives in the HttpOnly cookie only: no script stores it or sets the cookie."""
    for name in ("common.js", "desk.js", "admin.js", "reports.js", "login.html"):
        text = (WEB / name).read_text()
        assert "localStorage.setItem" not in text and "document.cookie" not in text, name
        assert "Authorization" not in text, name


async def _login(client: httpx.AsyncClient, **extra: object) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"username": "ana", "password": STAFF_PASSWORD, **extra})


async def test_session_cookie_flags(client: httpx.AsyncClient, runtime: Runtime, staff: dict[str, str]) -> None:
    r = await _login(client, next="/\\evil.example/x")
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # plain http here
    assert r.json()["next"] == "/desk"
    # X-Forwarded-Proto from an untrusted peer changes nothing; from a trusted proxy it makes the cookie Secure
    r = await _login(client, next="/admin")
    assert r.json()["next"] == "/admin"
    r = await client.post("/api/v1/auth/login", headers={"X-Forwarded-Proto": "https"},
                          json={"username": "ana", "password": STAFF_PASSWORD})
    assert "secure" not in r.headers["set-cookie"].lower()
    runtime.desk.cfg.trusted_proxies = ["127.0.0.0/8"]
    r = await client.post("/api/v1/auth/login", headers={"X-Forwarded-Proto": "https"},
                          json={"username": "ana", "password": STAFF_PASSWORD})
    assert "secure" in r.headers["set-cookie"].lower()
    runtime.desk.cfg.trusted_proxies = []
    runtime.settings.http.public_url = "https://atiende.example.es"
    assert "secure" in (await _login(client)).headers["set-cookie"].lower()


async def test_cookie_writes_from_another_site_are_refused(client: httpx.AsyncClient, runtime: Runtime,
                                                          staff: dict[str, str]) -> None:
    await _login(client)  # the client now carries the session cookie, as a browser would
    assert (await client.get("/api/v1/auth/me")).status_code == 200  # reads need no Origin
    body = {"presence": "available"}
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Referer": "https://evil.example/page"}):
        r = await client.put("/api/v1/agents/me/presence", headers=headers, json=body)
        assert r.status_code == 403 and r.json()["error_id"] == "cross-site", headers
    r = await client.put("/api/v1/agents/me/presence", headers={"Origin": "http://test"}, json=body)
    assert r.status_code == 200
    r = await client.put("/api/v1/agents/me/presence", headers={"Referer": "http://test/desk"}, json=body)
    assert r.status_code == 200
    # staff paths guarded by prefix (desk_api.app.GUARDED) too
    r = await client.post("/api/v1/callbacks/next", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error_id"] == "cross-site"
    # a header credential cannot be sent by another site: no Origin needed
    client.cookies.clear()
    token = (await _login(client)).json()["token"]
    client.cookies.clear()
    r = await client.put("/api/v1/agents/me/presence", headers={"Authorization": f"Bearer {token}"}, json=body)
    assert r.status_code == 200


async def test_metrics_and_docs_can_be_staff_only(client: httpx.AsyncClient, runtime: Runtime,
                                                 staff: dict[str, str]) -> None:
    nobody = {"Authorization": "Bearer nope"}
    for path in ("/metrics", "/openapi.json", "/docs"):
        assert (await client.get(path)).status_code == 200, path
    runtime.settings.desk.staff_only.metrics = True
    runtime.settings.desk.staff_only.docs = True
    for path in ("/metrics", "/openapi.json", "/docs", "/redoc"):
        assert (await client.get(path)).status_code == 401, path
        assert (await client.get(path, headers=nobody)).status_code == 401, path
        assert (await client.get(path, headers={"X-API-Key": staff["ivr_key"]})).status_code == 200, path
