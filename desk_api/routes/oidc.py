"""Single sign-on over HTTP (desk/oidc.py does the checks):

    GET /api/v1/auth/oidc/config     {"enabled", "label"}: whether /login shows the corporate-account button
    GET /api/v1/auth/oidc/login      302 to the provider (PKCE, state, nonce); a browser-binding cookie
    GET /api/v1/auth/oidc/callback   the provider sends the browser back here: a desk session cookie and 303 to
                                     the page asked for, or a Spanish page saying what went wrong
    PUT /api/v1/auth/oidc/links      admins: link a provider's subject to an account name explicitly
    DELETE /api/v1/auth/oidc/links   admins: remove a subject's link (?sub=...&issuer=...)

The callback address sent to the provider is `desk.oidc.redirect_uri`, or `http.public_url` + the callback path;
never one built from the request's Host header, which the client chooses (a forged Host would send the code to
another site). Without either, the sign-in does not start and says why.

The binding cookie is SameSite=Lax because the provider's redirect back is a cross-site top-level GET (a
Strict cookie would not come with it); it is HttpOnly, limited to the callback's path and lives 10 minutes.
The session cookie is the desk's usual one (HttpOnly, SameSite=Strict, Secure over HTTPS).
"""

from __future__ import annotations

import html
import logging

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from config.desk import Oidc
from core.errors import AtiendeError
from desk.auth import SESSION_COOKIE
from desk.models import Principal
from desk.oidc import STATE_TTL_S, Link, OidcService
from desk_api.auth import client_of, is_https, require
from desk_api.deps import services_of
from desk_api.routes.desk import safe_next

log = logging.getLogger(__name__)
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
                      services.desk.auth.open_session, services.desk.audit, services.desk.auth.end_sessions)
    request.app.state.oidc = svc
    return svc


class SsoNotConfigured(AtiendeError):
    status_code = 503
    error_id = "sso-not-configured"


def _redirect_uri(request: Request, cfg: Oidc) -> str:
    if cfg.redirect_uri:
        return cfg.redirect_uri
    public = services_of(request).settings.http.public_url
    if not public:
        raise SsoNotConfigured("La entrada con la cuenta corporativa no está completa: falta la dirección pública del "
                               "servicio (http.public_url o desk.oidc.redirect_uri). Avise a la administración.",
                               {"settings": ["http.public_url", "desk.oidc.redirect_uri"]})
    return public.rstrip("/") + CALLBACK


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
    svc = oidc_of(request)
    try:
        redirect_uri = _redirect_uri(request, svc.cfg)  # svc.cfg: 404 while single sign-on is off
    except SsoNotConfigured as exc:
        log.error("single sign-on cannot start: set http.public_url or desk.oidc.redirect_uri")
        return _page(exc.status_code, "No se pudo entrar", exc.message)
    url, binding = await svc.begin(redirect_uri, safe_next(next))
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


class LinkIn(BaseModel):
    sub: str = Field(..., min_length=1, max_length=255, description="the provider's subject (`sub` claim)")
    account: str = Field(..., min_length=1, max_length=64, description="the account name (principal user:oidc:<account>)")
    issuer: str | None = Field(None, max_length=500, description="default: the configured desk.oidc.issuer")


@router.put("/links", response_model=Link)
async def link_subject(body: LinkIn, request: Request, who: Principal = Depends(require())) -> Link:
    """Admins link a subject to an account explicitly: the way to give a name already taken (by a local user or
    another subject) to a person, e.g. after moving to another provider."""
    return await oidc_of(request).link(body.sub, body.account, actor=who.id, issuer=body.issuer)


@router.delete("/links", status_code=204)
async def unlink_subject(request: Request, sub: str = Query(..., min_length=1, max_length=255),
                         issuer: str | None = Query(None, max_length=500),
                         who: Principal = Depends(require())) -> Response:
    await oidc_of(request).unlink(sub, actor=who.id, issuer=issuer)
    return Response(status_code=204)
