"""Who is calling the HTTP API: one way to authenticate a request and check its roles, one source of the actor.

The desk's AuthService (desk/auth.py) decides who a token belongs to; this module reads the token from the
request (X-API-Key, bearer token or session cookie), checks roles, and leaves the principal in
`request.state.principal`. Two entry points share `authorize`: the ASGI guard (desk_api/app.py, by path prefix
for the other areas' staff resources) and `require(...)` (a route dependency for the desk's own routes). The
acting user recorded in audits and config versions is always `actor_of(request)`: the authenticated
principal's id, never something the client says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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


def token_of(request: HTTPConnection) -> str | None:
    """The credential a request carries: X-API-Key, then `Authorization: Bearer`, then the session cookie."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(SESSION_COOKIE) or None


async def authorize(request: HTTPConnection, roles: tuple[str, ...] | None) -> Principal:
    """Authenticate the request and check it has one of `roles` (admin always passes; None: any principal); the
    principal is kept in `request.state.principal` for `actor_of`. 401 without a valid credential, 403 without
    the role."""
    token = token_of(request)
    if not token:
        raise Unauthorized("log in or send an API key", {"schemes": ["Bearer", "X-API-Key", SESSION_COOKIE]})
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


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limited(name: str) -> Callable[..., Awaitable[None]]:
    """A dependency for citizen-facing endpoints: `name` is a key of desk.rate_limits."""

    async def dep(request: Request) -> None:
        await desk_of(request).limiter.check(name, client_of(request))

    return dep

