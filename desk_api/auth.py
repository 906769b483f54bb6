"""Who is calling the HTTP API: one way to authenticate a request and check its roles, one source of the actor.

The desk's AuthService (desk/auth.py) decides who a token belongs to; this module reads the token from the
request (X-API-Key, bearer token or session cookie), checks roles, and leaves the principal in
`request.state.principal`. Two entry points share `authorize`: the ASGI guard (desk_api/app.py, by path prefix
for the other areas' staff resources) and `require(...)` (a route dependency for the desk's own routes). The
acting user recorded in audits and config versions is always `actor_of(request)`: the authenticated
principal's id, never something the client says.

Cross-site request forgery: a browser sends the session cookie with any request, so a write (any method but
GET/HEAD/OPTIONS) or a WebSocket authenticated by the cookie alone must come from a page of this site: its Origin
(or, without one, its Referer) must be this host or `http.public_url`. Headers (X-API-Key, Bearer) cannot be set
by another site, so requests that carry them need no such check. The cookie itself is HttpOnly, SameSite=Strict,
and Secure when the site is served over HTTPS (`is_https`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from core.errors import Forbidden, Unauthorized
from desk import Desk
from desk.auth import SESSION_COOKIE
from desk.models import Principal
from desk_api.deps import services_of

# ---- FastAPI dependencies ------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="session token from /api/v1/auth/login, or an API key")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key for machines")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="session cookie of the web pages")


def desk_of(request: Request) -> Desk:
    return services_of(request).desk


def credential_of(request: HTTPConnection) -> tuple[str | None, bool]:
    """(the credential a request carries: X-API-Key, then `Authorization: Bearer`, then the session cookie;
    whether it came from the cookie)."""
    key = request.headers.get("x-api-key")
    if key:
        return key, False
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), False
    return request.cookies.get(SESSION_COOKIE) or None, True


def token_of(request: HTTPConnection) -> str | None:
    return credential_of(request)[0]


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _trusted_proxy(request: HTTPConnection) -> bool:
    proxies = services_of(request).desk.cfg.trusted_proxies
    if not proxies or request.client is None:
        return False
    try:
        addr = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(p, strict=False) for p in proxies)


def is_https(request: HTTPConnection) -> bool:
    """Served over HTTPS: the request's own scheme, `X-Forwarded-Proto: https` from a trusted proxy, or an
    https `http.public_url`."""
    if request.url.scheme in ("https", "wss"):
        return True
    public = services_of(request).settings.http.public_url or ""
    if public.lower().startswith("https://"):
        return True
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return proto == "https" and _trusted_proxy(request)


def _origins(request: HTTPConnection) -> set[str]:
    """The origins this site is served under: the Host the browser used and the configured public URL."""
    out = set()
    host = request.headers.get("host")
    if host:
        out |= {f"http://{host}", f"https://{host}"}
    public = services_of(request).settings.http.public_url
    if public:
        u = urlsplit(public)
        out.add(f"{u.scheme}://{u.netloc}".lower())
    return {o.lower() for o in out}


def check_same_origin(request: HTTPConnection) -> None:
    """Refuse a cookie-authenticated write or WebSocket from another site (403 cross-site)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if origin is None and referer:
            u = urlsplit(referer)
            origin = f"{u.scheme}://{u.netloc}"
    if not origin or origin.lower() not in _origins(request):
        raise Forbidden("cross-site request refused: send it from the site's own pages or with an API key",
                        {"origin": (origin or "")[:100]}, error_id="cross-site")


async def authorize(request: HTTPConnection, roles: tuple[str, ...] | None) -> Principal:
    """Authenticate the request and check it has one of `roles` (admin always passes; None: any principal); the
    principal is kept in `request.state.principal` for `actor_of`. 401 without a valid credential, 403 without
    the role."""
    token, from_cookie = credential_of(request)
    if not token:
        raise Unauthorized("log in or send an API key", {"schemes": ["Bearer", "X-API-Key", SESSION_COOKIE]})
    if from_cookie and (request.scope["type"] == "websocket" or request.scope.get("method") not in SAFE_METHODS):
        check_same_origin(request)
    desk = services_of(request).desk
    await desk.auth.bootstrap()
    principal = await desk.auth.authenticate(token)
    if principal is None:
        raise Unauthorized("the session has expired or the key is not valid")
    if roles is not None and not principal.has(*roles):
        raise Forbidden("your role does not allow this", {"needs": list(roles) or ["admin"], "roles": principal.roles})
    request.state.principal = principal
    return principal


def principal_of(request: HTTPConnection) -> Principal:
    """The principal `authorize` let through (the guard or `require` ran before the handler)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise Unauthorized("log in or send an API key", {"schemes": ["Bearer", "X-API-Key", SESSION_COOKIE]})
    return principal


def actor_of(request: Request) -> str:
    """The acting user (a route dependency): the authenticated principal's id, for audits and version lists."""
    return principal_of(request).id


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through principals with any of `roles` (admin always)."""
    wanted = tuple(roles)

    async def dep(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
        api_key: str | None = Depends(_api_key),
        cookie: str | None = Depends(_cookie),
    ) -> Principal:
        return await authorize(request, wanted)

    return dep


def client_of(request: HTTPConnection) -> str:
    """The client's address: the peer, or the last X-Forwarded-For hop when the peer is a trusted proxy (a client
    can prepend whatever it likes, but the proxy appends the address it saw)."""
    peer = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and _trusted_proxy(request):
        last = forwarded.split(",")[-1].strip()
        if last:
            return last[:64]
    return peer


def rate_limited(name: str) -> Callable[..., Awaitable[None]]:
    """A dependency for citizen-facing endpoints: `name` is a key of desk.rate_limits."""

    async def dep(request: Request) -> None:
        await desk_of(request).limiter.check(name, client_of(request))

    return dep

