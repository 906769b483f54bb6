"""Single sign-on with OpenID Connect (issue 18.10) against a real provider on 127.0.0.1 (tests/oidc_op.py):
the whole code flow with PKCE, then the attacks: bad state, another browser's state, replayed code, wrong nonce,
wrong audience, expired token, wrong issuer, a key the provider does not publish, an unmapped role."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from atiende.runtime import Runtime
from config.desk import Oidc
from tests.conftest import STAFF_PASSWORD
from tests.oidc_op import CLIENT_ID, CLIENT_SECRET, TestProvider

pytestmark = pytest.mark.anyio
CALLBACK = "http://test/api/v1/auth/oidc/callback"
ROLE_MAP = {"atiende-agentes-n1": ["agent_n1"], "atiende-supervision": ["supervisor"], "atiende-admin": ["admin"]}


@pytest.fixture
def op() -> Iterator[TestProvider]:
    provider = TestProvider(redirect_uris=[CALLBACK]).start()
    yield provider
    provider.stop()


@pytest.fixture
def sso(runtime: Runtime, op: TestProvider) -> TestProvider:
    runtime.settings.desk.oidc = Oidc(enabled=True, issuer=op.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                      roles_claim="groups", role_map=ROLE_MAP)
    runtime.settings.http.public_url = "http://test"  # the callback address is configured, never the Host header
    return op


async def consent(op: TestProvider, authorize_url: str) -> str:
    """What the person does at the provider: open the page and press «Autorizar». Returns the callback URL."""
    async with httpx.AsyncClient() as browser:
        page = await browser.get(authorize_url)
        assert page.status_code == 200, page.text
        q = parse_qs(urlsplit(authorize_url).query)
        form = {k: q[k][0] for k in ("redirect_uri", "state", "nonce", "code_challenge")}
        r = await browser.post(f"{op.issuer}/authorize", data=form)
        assert r.status_code == 302
        return r.headers["location"]


async def start(client: httpx.AsyncClient, next_path: str = "/admin") -> str:
    r = await client.get("/api/v1/auth/oidc/login", params={"next": next_path})
    assert r.status_code == 302, r.text
    q = parse_qs(urlsplit(r.headers["location"]).query)
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert q["client_id"] == [CLIENT_ID] and q["redirect_uri"] == [CALLBACK] and q["nonce"] and q["state"]
    assert "HttpOnly" in r.headers["set-cookie"] and "samesite=lax" in r.headers["set-cookie"].lower()
    return r.headers["location"]


async def callback(client: httpx.AsyncClient, url: str) -> httpx.Response:
    return await client.get(url.replace("http://test", ""))


async def test_code_flow_gives_a_desk_session(client: httpx.AsyncClient, sso: TestProvider, runtime: Runtime) -> None:
    assert (await client.get("/api/v1/auth/oidc/config")).json() == {"enabled": True,
                                                                     "label": "Entrar con la cuenta corporativa"}
    sso.user["groups"] = ["atiende-supervision", "otra-cosa"]
    r = await callback(client, await consent(sso, await start(client)))
    assert r.status_code == 303 and r.headers["location"] == "/admin", r.text
    cookie = r.headers["set-cookie"]
    assert "atiende_session=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    me = await client.get("/api/v1/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["id"] == "user:oidc:marta.garcia" and me.json()["roles"] == ["supervisor"]
    assert me.json()["name"] == "Marta García"
    # a normal session: logout ends it on the server
    r = await client.post("/api/v1/auth/logout", headers={"Origin": "http://test"})
    assert r.status_code == 204
    token = cookie.split("atiende_session=")[1].split(";")[0]
    assert await runtime.desk.auth.authenticate(token) is None
    audit = [e for e in await runtime.desk.audit.entries() if e["action"] == "auth.sso-login"]
    assert audit and audit[0]["actor"] == "user:oidc:marta.garcia"
    # a provider's "admin" (another person there) is never the local admin
    sso.user.update(sub="u-1002", preferred_username="admin", groups=["atiende-agentes-n1"])
    client.cookies.clear()
    await callback(client, await consent(sso, await start(client)))
    me = (await client.get("/api/v1/auth/me")).json()
    assert me["id"] == "user:oidc:admin" and me["roles"] == ["agent_n1"]


async def test_local_users_still_log_in(client: httpx.AsyncClient, sso: TestProvider, staff: dict[str, str]) -> None:
    r = await client.post("/api/v1/auth/login", json={"username": "ana", "password": STAFF_PASSWORD})
    assert r.status_code == 200 and r.json()["user"]["id"] == "user:ana"


async def test_off_unless_configured(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/auth/oidc/config")).json() == {"enabled": False, "label": ""}
    assert (await client.get("/api/v1/auth/oidc/login")).status_code == 404
    assert (await client.get("/api/v1/auth/oidc/callback", params={"code": "x", "state": "y"})).status_code == 404


async def test_bad_state(client: httpx.AsyncClient, sso: TestProvider) -> None:
    back = await consent(sso, await start(client))
    forged = back.replace("state=", "state=x")
    r = await callback(client, forged)
    assert r.status_code == 400 and "ya se usó" in r.text and "atiende_session=" not in r.headers.get("set-cookie", "")
    r = await callback(client, back.split("&state=")[0] if "&state=" in back else back.split("state=")[0])
    assert r.status_code == 400 and "Falta el código" in r.text
    # the right state in another browser (an attacker's link to a victim): refused, and the state is gone
    back = await consent(sso, await start(client))
    async with httpx.AsyncClient(transport=client._transport, base_url="http://test") as other:
        r = await callback(other, back)
    assert r.status_code == 400 and "otro navegador" in r.text
    assert (await callback(client, back)).status_code == 400
    assert (await client.get("/api/v1/auth/me")).status_code == 401


async def test_replayed_code(client: httpx.AsyncClient, sso: TestProvider) -> None:
    back = await consent(sso, await start(client))
    assert (await callback(client, back)).status_code == 303
    r = await callback(client, back)  # the same callback again: its state was used
    assert r.status_code == 400
    # the code with a fresh state of the attacker's own: the provider refuses the used code
    fresh = await start(client)
    state = parse_qs(urlsplit(fresh).query)["state"][0]
    code = parse_qs(urlsplit(back).query)["code"][0]
    before = sso.token_requests
    r = await client.get("/api/v1/auth/oidc/callback", params={"code": code, "state": state})
    assert r.status_code == 400 and "caducado o ya usado" in r.text and sso.token_requests == before + 1


@pytest.mark.parametrize(("tamper", "problem"), [
    ({"nonce": "otro-nonce"}, "nonce"),
    ({"aud": "otra-aplicacion"}, "audience"),
    ({"aud": [CLIENT_ID, "otra-aplicacion"]}, "audience"),  # several audiences and no azp of ours
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    ({"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}, "issued in the future"),
    ({"iss": "http://127.0.0.1:1"}, "issuer"),
])
async def test_bad_id_tokens_are_refused(client: httpx.AsyncClient, sso: TestProvider, tamper: dict[str, object],
                                         problem: str) -> None:
    sso.tamper = tamper
    r = await callback(client, await consent(sso, await start(client)))
    assert r.status_code == 400 and problem in r.text, r.text
    assert "atiende_session=" not in r.headers.get("set-cookie", "")
    assert (await client.get("/api/v1/auth/me")).status_code == 401


async def test_signature_from_another_key(client: httpx.AsyncClient, sso: TestProvider) -> None:
    sso.foreign_key = True
    r = await callback(client, await consent(sso, await start(client)))
    assert r.status_code == 400 and "firma" in r.text


async def test_unmapped_role_is_refused(client: httpx.AsyncClient, sso: TestProvider) -> None:
    sso.user["groups"] = ["personal-biblioteca"]
    r = await callback(client, await consent(sso, await start(client)))
    assert r.status_code == 403 and "Sin acceso a Atiende" in r.text and "ningún perfil" in r.text
    assert "atiende_session=" not in r.headers.get("set-cookie", "")
    sso.user.pop("groups")
    r = await callback(client, await consent(sso, await start(client)))
    assert r.status_code == 403


async def test_provider_error_and_open_redirect(client: httpx.AsyncClient, sso: TestProvider) -> None:
    r = await client.get("/api/v1/auth/oidc/callback", params={"error": "access_denied", "state": "x"})
    assert r.status_code == 400 and "access_denied" in r.text
    sso.user["groups"] = ["atiende-agentes-n1"]
    r = await callback(client, await consent(sso, await start(client, "//evil.example/robar")))
    assert r.status_code == 303 and r.headers["location"] == "/desk"


async def sign_in(client: httpx.AsyncClient, op: TestProvider) -> httpx.Response:
    client.cookies.clear()
    return await callback(client, await consent(op, await start(client)))


async def test_accounts_are_keyed_on_issuer_and_subject(client: httpx.AsyncClient, sso: TestProvider,
                                                        runtime: Runtime, staff: dict[str, str]) -> None:
    """Review: the account came from preferred_username, so another person with the same name (at another
    provider, or one reassigned the name at this one) signed in as the same account. Now (iss, sub) is linked."""
    limits = runtime.settings.desk.rate_limits  # many sign-ins from one address here; the limit has its own test
    limits["login"] = limits["login"].model_copy(update={"requests": 1000})
    sso.user.update(groups=["atiende-supervision"])
    assert (await sign_in(client, sso)).status_code == 303
    assert (await client.get("/api/v1/auth/me")).json()["id"] == "user:oidc:marta.garcia"
    # the same person renamed at the provider keeps her account
    sso.user.update(preferred_username="marta.garcia.lopez")
    assert (await sign_in(client, sso)).status_code == 303
    assert (await client.get("/api/v1/auth/me")).json()["id"] == "user:oidc:marta.garcia"
    # another subject now called marta.garcia at the provider: refused, not merged into Marta's account
    sso.user.update(sub="u-2002", preferred_username="marta.garcia", name="Otra Marta")
    r = await sign_in(client, sso)
    assert r.status_code == 403 and "Ya existe en Atiende otra cuenta" in r.text, r.text
    assert "atiende_session=" not in r.headers.get("set-cookie", "")
    assert (await client.get("/api/v1/auth/me")).status_code == 401
    # the same sub from another issuer is another person too
    other = TestProvider(redirect_uris=[CALLBACK]).start()
    try:
        runtime.settings.desk.oidc = runtime.settings.desk.oidc.model_copy(update={"issuer": other.issuer})
        other.user.update(sub="u-1001", preferred_username="marta.garcia", groups=["atiende-admin"])
        r = await sign_in(client, other)
        assert r.status_code == 403 and "otra cuenta" in r.text
    finally:
        other.stop()
        runtime.settings.desk.oidc = runtime.settings.desk.oidc.model_copy(update={"issuer": sso.issuer})
    # a local user's name is refused too (only an admin can tell whether it is the same person)
    sso.user.update(sub="u-3003", preferred_username="ana", name="Ana de la provincia")
    r = await sign_in(client, sso)
    assert r.status_code == 403 and "«ana»" in r.text
    # unless an admin links the subject explicitly
    admin = {"Authorization": f"Bearer {(await runtime.desk.auth.login('admin', STAFF_PASSWORD)).token}"}
    ana = {"Authorization": f"Bearer {(await runtime.desk.auth.login('ana', STAFF_PASSWORD)).token}"}
    body = {"sub": "u-3003", "account": "ana"}
    assert (await client.put("/api/v1/auth/oidc/links", json=body, headers=ana)).status_code == 403
    r = await client.put("/api/v1/auth/oidc/links", json=body, headers=admin)
    assert r.status_code == 200 and r.json()["linked_by"] == "user:admin" and r.json()["issuer"] == sso.issuer, r.text
    assert (await sign_in(client, sso)).status_code == 303
    me = (await client.get("/api/v1/auth/me")).json()
    assert me["id"] == "user:oidc:ana" and me["roles"] == ["supervisor"]  # an SSO account (its provider roles), never
    assert me["agent_id"] is None  # the local user ana
    token = client.cookies["atiende_session"]
    r = await client.delete("/api/v1/auth/oidc/links", params={"sub": "u-3003"}, headers=admin)
    assert r.status_code == 204
    assert await runtime.desk.auth.authenticate(token) is None  # unlinking ends the account's sessions
    assert (await sign_in(client, sso)).status_code == 403  # and the name is a conflict again
    actions = [(e["action"], e["target"]) for e in await runtime.desk.audit.entries(count=200)]
    assert ("oidc.link", "oidc:ana") in actions and ("oidc.unlink", "oidc:ana") in actions
    assert ("oidc.link", "oidc:marta.garcia") in actions


async def test_the_callback_address_never_comes_from_the_host_header(client: httpx.AsyncClient, sso: TestProvider,
                                                                     runtime: Runtime) -> None:
    """Review: the redirect_uri was built from the Host header, which the client sets: with a forged Host the
    provider (if lenient about registered addresses) would send the code to another site."""
    r = await client.get("/api/v1/auth/oidc/login", headers={"Host": "evil.example"})
    assert r.status_code == 302
    assert parse_qs(urlsplit(r.headers["location"]).query)["redirect_uri"] == [CALLBACK]  # http.public_url's
    runtime.settings.desk.oidc = runtime.settings.desk.oidc.model_copy(
        update={"redirect_uri": "https://atiende.example.es/api/v1/auth/oidc/callback"})
    r = await client.get("/api/v1/auth/oidc/login", headers={"Host": "evil.example"})
    assert parse_qs(urlsplit(r.headers["location"]).query)["redirect_uri"] == [
        "https://atiende.example.es/api/v1/auth/oidc/callback"]
    # neither set: the sign-in does not start, and the page says what is missing
    runtime.settings.desk.oidc = runtime.settings.desk.oidc.model_copy(update={"redirect_uri": ""})
    runtime.settings.http.public_url = None
    r = await client.get("/api/v1/auth/oidc/login")
    assert r.status_code == 503 and "http.public_url" in r.text and "location" not in r.headers
    assert "atiende_oidc=" not in r.headers.get("set-cookie", "")
