"""Who is calling the HTTP API: the FastAPI dependencies that authenticate a principal and check roles.

The desk's AuthService (desk/auth.py) decides who a token belongs to; this module only reads the
token from the request (session cookie, bearer token or X-API-Key) and applies the route's roles.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

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


async def current_principal(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
    api_key: str | None = Depends(_api_key),
    cookie: str | None = Depends(_cookie),
) -> Principal:
    token = api_key or (bearer.credentials if bearer else None) or cookie
    if not token:
        raise Unauthorized("log in or send an API key", {"schemes": ["Bearer", "X-API-Key", SESSION_COOKIE]})
    desk = desk_of(request)
    await desk.auth.bootstrap()
    principal = await desk.auth.authenticate(token)
    if principal is None:
        raise Unauthorized("the session has expired or the key is not valid")
    request.state.principal = principal
    return principal


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through principals with any of `roles` (admin always)."""
    wanted = tuple(roles)

    async def dep(principal: Principal = Depends(current_principal)) -> Principal:
        if not principal.has(*wanted):
            raise Forbidden("your role does not allow this", {"needs": list(wanted) or ["admin"], "roles": principal.roles})
        return principal

    return dep


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limited(name: str) -> Callable[..., Awaitable[None]]:
    """A dependency for citizen-facing endpoints: `name` is a key of desk.rate_limits."""

    async def dep(request: Request) -> None:
        await desk_of(request).limiter.check(name, client_of(request))

    return dep

