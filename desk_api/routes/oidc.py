"""Single sign-on over HTTP (desk/oidc.py does the checks):

    GET /api/v1/auth/oidc/config     {"enabled", "label"}: whether /login shows the corporate-account button
    GET /api/v1/auth/oidc/login      302 to the provider (PKCE, state, nonce); a browser-binding cookie
    GET /api/v1/auth/oidc/callback   the provider sends the browser back here: a desk session cookie and 303 to
                                     the page asked for, or a Spanish page saying what went wrong

The binding cookie is SameSite=Lax because the provider's redirect back is a cross-site top-level GET (a
Strict cookie would not come with it); it is HttpOnly, limited to the callback's path and lives 10 minutes.
The session cookie is the desk's usual one (HttpOnly, SameSite=Strict, Secure over HTTPS).
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from core.errors import AtiendeError
from desk.auth import SESSION_COOKIE
from desk.oidc import STATE_TTL_S, OidcService
from desk_api.auth import client_of, is_https
from desk_api.deps import services_of
from desk_api.routes.desk import safe_next

router = APIRouter(prefix="/api/v1/auth/oidc", tags=["auth"])
CALLBACK = "/api/v1/auth/oidc/callback"
BINDING_COOKIE = "atiende_oidc"


class OidcConfigOut(BaseModel):
    enabled: bool
    label: str = ""


def oidc_of(request: Request) -> OidcService:
    """This application's single sign-on service, built on first use from its `Services`."""
    svc = getattr(request.app.state, "oidc", None)
    if isinstance(svc, OidcService):
        return svc
    services = services_of(request)
    svc = OidcService(lambda: services.settings.desk.oidc, services.store, services.clock,
                      services.desk.auth.open_session)
    request.app.state.oidc = svc
    return svc


def _redirect_uri(request: Request) -> str:
    services = services_of(request)
    cfg = services.settings.desk.oidc
    if cfg.redirect_uri:
        return cfg.redirect_uri
    public = services.settings.http.public_url
    base = public.rstrip("/") if public else f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
    return base + CALLBACK


def _page(status: int, title: str, message: str) -> HTMLResponse:
    body = f"""<!doctype html>
<html lang="es">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Atiende · {html.escape(title)}</title><link rel="stylesheet" href="/static/common.css"></head>
<body><header class="top"><h1>Atiende</h1></header>
<main><section class="panel login"><h2>{html.escape(title)}</h2>
<p class="error" role="alert" data-testid="sso-error">{html.escape(message)}</p>
<p><a href="/login" data-testid="sso-back">Volver a la página de entrada</a></p></section></main>
</body></html>"""
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.get("/config", response_model=OidcConfigOut)
async def oidc_config(request: Request) -> OidcConfigOut:
    cfg = services_of(request).settings.desk.oidc
    return OidcConfigOut(enabled=cfg.enabled, label=cfg.button_label if cfg.enabled else "")


@router.get("/login")
async def oidc_login(request: Request, next: str | None = Query(None, max_length=2000)) -> Response:
    await services_of(request).desk.limiter.check("login", client_of(request))
    url, binding = await oidc_of(request).begin(_redirect_uri(request), safe_next(next))
    out = RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
    out.set_cookie(BINDING_COOKIE, binding, max_age=STATE_TTL_S, httponly=True, samesite="lax", path=CALLBACK,
                   secure=is_https(request))
    return out


@router.get("/callback")
async def oidc_callback(request: Request, code: str | None = Query(None, max_length=2000),
                        state: str | None = Query(None, max_length=200),
                        error: str | None = Query(None, max_length=200)) -> Response:
    svc = oidc_of(request)
    try:
        await services_of(request).desk.limiter.check("login", client_of(request))
        if error:
            return _page(400, "No se pudo entrar", f"El proveedor de identidad no autorizó la entrada ({error}).")
        if not code or not state:
            return _page(400, "No se pudo entrar", "Falta el código o el estado de la entrada. Vuelva a empezar desde la "
                                                    "página de entrada.")
        session, next_path = await svc.finish(code, state, request.cookies.get(BINDING_COOKIE))
    except AtiendeError as exc:
        title = "Sin acceso a Atiende" if exc.status_code == 403 else "No se pudo entrar"
        page = _page(exc.status_code, title, exc.message)
        page.delete_cookie(BINDING_COOKIE, path=CALLBACK, httponly=True, samesite="lax", secure=is_https(request))
        return page
    out = RedirectResponse(next_path, status_code=303, headers={"Cache-Control": "no-store"})
    out.set_cookie(SESSION_COOKIE, session.token, max_age=services_of(request).desk.cfg.session_ttl_s, httponly=True,
                   samesite="strict", path="/", secure=is_https(request))
    out.delete_cookie(BINDING_COOKIE, path=CALLBACK, httponly=True, samesite="lax", secure=is_https(request))
    return out
