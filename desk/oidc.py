"""Single sign-on for staff with OpenID Connect: authorization code flow with PKCE (S256), state and nonce.

    url, binding = await oidc.begin(redirect_uri, next_path)   # send the browser to `url`, `binding` in a cookie
    session, next_path = await oidc.finish(code, state, binding) # a normal desk session (desk.auth.open_session)

What is checked, and why:
- `state` is random, stored in Redis for 10 minutes and deleted on first use (GETDEL): a replayed or forged
  callback finds nothing. It is also bound to the browser that started the sign-in (a random value in an
  HttpOnly cookie whose SHA-256 is stored with the state), so an attacker cannot log a victim into the
  attacker's account by sending a callback link.
- PKCE S256: the code is worthless without the verifier, which never leaves this server.
- The ID token: RS256 only (no `none`, no HMAC with a public key as secret), signature verified against the
  provider's JWKS (fetched again once when a `kid` is unknown, for key rotation), `iss` equal to the configured
  issuer, `aud` containing our client id (and `azp` ours when there are several), `exp`/`iat` within
  `leeway_s` of this machine's real time (tokens come from another machine's clock, not the service's injectable
  clock), `nonce` equal to the one sent.
- Roles: the values of `roles_claim` mapped by `role_map`; none mapped means refused, never a default role.

Accounts: a person at the provider is (issuer, sub), never a name: `preferred_username` is chosen or reassigned
at the provider, and two providers (or two people over time) may both say "marta.garcia". The first sign-in of a
subject derives an account name from the claims and links the subject to it (stored, keyed on a digest of
(issuer, sub)); later sign-ins use the link whatever the claims say then. A name already taken, by a local user
or by another subject's account, is refused (`sso-account-conflict`) unless an admin links the subject to it
explicitly (`link`, e.g. when the organisation moves to another provider). The principal is
`user:oidc:<account>`: the colon cannot appear in a local username, so a provider's "admin" never becomes the
local `admin`. Its sessions end with `end_sessions("oidc:<account>")` like anyone's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel

from config.desk import Oidc
from core.clock import Clock
from core.errors import AtiendeError, Forbidden, InvalidInput, NotFound, Unavailable
from core.store import Store
from desk.audit import AuditLog
from desk.auth import Session, sha
from desk.models import Principal

STATE_TTL_S = 600
_CACHE_S = 3600.0
_REFETCH_S = 60.0  # an unknown kid refetches the JWKS at most once a minute (a flood of bad tokens costs one GET)
_SLUG = re.compile(r"[^a-z0-9._-]+")
ACCOUNT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # what a derived name can be, and what an admin may link to


class SignInFailed(AtiendeError):
    """The sign-in cannot go on (state, code, token): 400, shown to the person as a Spanish page."""

    status_code = 400
    error_id = "sso-failed"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_challenge(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode()).digest())


def subject_digest(issuer: str, sub: str) -> str:
    """One key for a person at a provider: `sub` is unique and stable only within its issuer."""
    return sha(f"{issuer}\n{sub}")


class Link(BaseModel):
    """A provider's subject and the Atiende account it signs in as."""

    issuer: str
    sub: str
    account: str
    linked_by: str  # "sign-in" (first sign-in, name from the claims) or the admin who linked it
    at: str


class OidcAccount(BaseModel):
    """Who first claimed an account name: a later subject deriving the same name is refused, not merged in."""

    owner: str  # subject_digest of the first subject


class OidcService:
    def __init__(self, cfg: Callable[[], Oidc], store: Store, clock: Clock,
                 open_session: Callable[[Principal, str, str, dict[str, Any]], Awaitable[Session]],
                 audit: AuditLog, end_sessions: Callable[[str], Awaitable[int]]) -> None:
        """`cfg` reads the `desk.oidc` section as it is now; `open_session` and `end_sessions` are desk.auth's."""
        self._cfg = cfg
        self._store = store
        self._clock = clock
        self._open_session = open_session
        self._audit = audit
        self._end_sessions = end_sessions
        self._discovery: tuple[float, str, dict[str, Any]] | None = None
        self._jwks: tuple[float, str, KeySet] | None = None

    @property
    def cfg(self) -> Oidc:
        cfg = self._cfg()
        if not cfg.enabled:
            raise NotFound("single sign-on is not configured", {"setting": "desk.oidc.enabled"})
        return cfg

    def _client(self, cfg: Oidc) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=cfg.timeout_s, follow_redirects=False, trust_env=False)

    async def _get_json(self, cfg: Oidc, url: str) -> dict[str, Any]:
        try:
            async with self._client(cfg) as client:
                r = await client.get(url, headers={"Accept": "application/json"})
                r.raise_for_status()
                value = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable("the identity provider is not reachable", {"url": url, "reason": str(exc)[:200]},
                              error_id="sso-provider-unavailable") from None
        if not isinstance(value, dict):
            raise Unavailable("the identity provider answered something else than a JSON object", {"url": url},
                              error_id="sso-provider-unavailable")
        return value

    async def discovery(self) -> dict[str, Any]:
        cfg = self.cfg
        hit = self._discovery
        if hit is not None and hit[1] == cfg.issuer and time.monotonic() - hit[0] < _CACHE_S:
            return hit[2]
        doc = await self._get_json(cfg, cfg.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if doc.get("issuer") != cfg.issuer:  # OpenID Connect Discovery 1.0, section 4.3
            raise Unavailable("the provider's discovery document names another issuer",
                              {"expected": cfg.issuer, "got": str(doc.get("issuer"))[:200]},
                              error_id="sso-provider-unavailable")
        for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(field), str):
                raise Unavailable(f"the provider's discovery document has no {field}", {},
                                  error_id="sso-provider-unavailable")
        self._discovery = (time.monotonic(), cfg.issuer, doc)
        return doc

    async def _keys(self, refresh: bool = False) -> KeySet:
        doc = await self.discovery()
        hit = self._jwks
        fresh_enough = hit is not None and hit[1] == doc["jwks_uri"]
        if hit is not None and fresh_enough and (time.monotonic() - hit[0] < (_REFETCH_S if refresh else _CACHE_S)):
            return hit[2]
        raw = await self._get_json(self.cfg, doc["jwks_uri"])
        try:
            rsa = [k for k in raw.get("keys", []) if isinstance(k, dict) and k.get("kty") == "RSA"]
            keys = KeySet.import_key_set({"keys": rsa})
        except (JoseError, ValueError, TypeError) as exc:
            raise Unavailable("the provider's JWKS is not valid", {"reason": str(exc)[:200]},
                              error_id="sso-provider-unavailable") from None
        self._jwks = (time.monotonic(), doc["jwks_uri"], keys)
        return keys

    # ---- the flow ------------------------------------------------------------------------------------------

    async def begin(self, redirect_uri: str, next_path: str) -> tuple[str, str]:
        """(the provider's authorization URL, the browser binding to keep in an HttpOnly cookie)."""
        cfg = self.cfg
        doc = await self.discovery()
        state, nonce, verifier, binding = (secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                                           secrets.token_urlsafe(64), secrets.token_urlsafe(32))
        pending = {"nonce": nonce, "verifier": verifier, "binding": sha(binding), "redirect_uri": redirect_uri,
                   "next": next_path}
        await self._store.redis.set(self._store.keys.oidc_state(sha(state)), json.dumps(pending), ex=STATE_TTL_S)
        query = urlencode({"response_type": "code", "client_id": cfg.client_id, "redirect_uri": redirect_uri,
                           "scope": " ".join(cfg.scopes), "state": state, "nonce": nonce,
                           "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"})
        endpoint = doc["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", binding

    async def finish(self, code: str, state: str, binding: str | None) -> tuple[Session, str]:
        """Check the callback, exchange the code, verify the ID token, map roles, open a session."""
        cfg = self.cfg
        raw = await self._store.redis.getdel(self._store.keys.oidc_state(sha(state[:200])))
        if raw is None:
            raise SignInFailed("La solicitud de entrada no es válida o ya se usó. Vuelva a empezar desde la página de "
                               "entrada.", {"reason": "unknown or used state"})
        pending = json.loads(raw)
        if not binding or not secrets.compare_digest(sha(binding), pending["binding"]):
            raise SignInFailed("La entrada se empezó en otro navegador. Vuelva a empezar desde la página de entrada.",
                               {"reason": "state not bound to this browser"})
        tokens = await self._exchange(cfg, code, pending)
        claims = await self.verify_id_token(str(tokens.get("id_token", "")), pending["nonce"])
        principal, username = await self._principal(cfg, claims)
        session = await self._open_session(principal, f"oidc:{username}", "auth.sso-login",
                                           {"issuer": cfg.issuer, "sub": str(claims.get("sub"))[:200]})
        return session, str(pending["next"])

    # ---- accounts: (issuer, sub) -> account name -------------------------------------------------------------

    def _link_key(self, digest: str) -> str:
        return self._store.keys.oidc_subject(digest)

    def _account_key(self, account: str) -> str:
        return self._store.keys.oidc_account(account)

    async def linked(self, issuer: str, sub: str) -> Link | None:
        return await self._store.get_model(self._link_key(subject_digest(issuer, sub)), Link)

    async def link(self, sub: str, account: str, actor: str, issuer: str | None = None) -> Link:
        """An admin links a provider's subject to an account name explicitly: it may be a name already taken (the
        same person at a new provider, or a local user's name acknowledged as the same person's). The subject's
        sessions under a previous link end."""
        issuer = issuer or self.cfg.issuer
        if not ACCOUNT.match(account):
            raise InvalidInput("account: 1-64 lower-case letters, digits, '.', '_' or '-'", {"account": account[:64]})
        if not sub or len(sub) > 255 or not issuer or len(issuer) > 500:
            raise InvalidInput("sub (1-255 characters) and issuer are required", {"sub": sub[:64]})
        digest = subject_digest(issuer, sub)
        previous = await self.linked(issuer, sub)
        link = Link(issuer=issuer, sub=sub, account=account, linked_by=actor, at=self._clock.now().isoformat())
        await self._store.set_model(self._link_key(digest), link)
        await self._store.redis.set(self._account_key(account), OidcAccount(owner=digest).model_dump_json(), nx=True)
        if previous is not None and previous.account != account:
            await self._end_sessions(f"oidc:{previous.account}")
        await self._audit.record(actor, "oidc.link", f"oidc:{account}",
                                 {"issuer": issuer, "sub": sub[:200],
                                  "previous": previous.account if previous is not None else None})
        return link

    async def unlink(self, sub: str, actor: str, issuer: str | None = None) -> None:
        """The subject no longer signs in as its account (its next sign-in is a first one again; the name stays
        claimed, so it cannot silently take it back). The account's sessions end."""
        issuer = issuer or self.cfg.issuer
        link = await self.linked(issuer, sub)
        if link is None:
            raise NotFound("no link for this subject", {"issuer": issuer[:200], "sub": sub[:200]})
        await self._store.redis.delete(self._link_key(subject_digest(issuer, sub)))
        await self._end_sessions(f"oidc:{link.account}")
        await self._audit.record(actor, "oidc.unlink", f"oidc:{link.account}", {"issuer": issuer, "sub": sub[:200]})

    async def _account_for(self, issuer: str, sub: str, wanted: str) -> str:
        """The subject's account: its link, or on its first sign-in the name from the claims if nobody has it."""
        digest = subject_digest(issuer, sub)
        link = await self.linked(issuer, sub)
        if link is not None:
            return link.account
        conflict = Forbidden(
            f"Ya existe en Atiende otra cuenta con el nombre «{wanted}». Pida a la administración que vincule su "
            "cuenta corporativa.", {"account": wanted, "issuer": issuer[:200], "sub": sub[:200]},
            error_id="sso-account-conflict")
        if await self._store.redis.exists(self._store.keys.user(wanted)):
            raise conflict  # a local user's name: the same person or not, only an admin can tell
        claim = OidcAccount(owner=digest).model_dump_json()
        if not await self._store.redis.set(self._account_key(wanted), claim, nx=True):
            owner = await self._store.get_model(self._account_key(wanted), OidcAccount)
            if owner is None or owner.owner != digest:  # another subject's account: never merged by a name
                raise conflict
        new = Link(issuer=issuer, sub=sub, account=wanted, linked_by="sign-in", at=self._clock.now().isoformat())
        if not await self._store.redis.set(self._link_key(digest), new.model_dump_json(), nx=True):
            link = await self.linked(issuer, sub)  # the same subject's other sign-in won the race: its link holds
            if link is not None:
                return link.account
        await self._audit.record("system", "oidc.link", f"oidc:{wanted}", {"issuer": issuer, "sub": sub[:200],
                                                                        "previous": None, "by": "sign-in"})
        return wanted

    async def _exchange(self, cfg: Oidc, code: str, pending: dict[str, Any]) -> dict[str, Any]:
        doc = await self.discovery()
        form = {"grant_type": "authorization_code", "code": code[:2000], "redirect_uri": pending["redirect_uri"],
                "code_verifier": pending["verifier"], "client_id": cfg.client_id}
        auth: httpx.Auth = httpx.BasicAuth(cfg.client_id, cfg.client_secret) if cfg.client_secret else httpx.Auth()
        try:
            async with self._client(cfg) as client:
                r = await client.post(doc["token_endpoint"], data=form, auth=auth, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise Unavailable("the identity provider is not reachable", {"reason": str(exc)[:200]},
                              error_id="sso-provider-unavailable") from None
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code != 200 or not isinstance(body, dict):
            err = str(body.get("error", r.status_code)) if isinstance(body, dict) else str(r.status_code)
            raise SignInFailed("El proveedor de identidad no aceptó el código de entrada (caducado o ya usado). Vuelva a "
                               "empezar desde la página de entrada.", {"reason": f"token endpoint: {err}"[:200]})
        return body

    async def verify_id_token(self, token: str, nonce: str) -> dict[str, Any]:
        cfg = self.cfg
        if not token:
            raise SignInFailed("El proveedor de identidad no envió la identificación.", {"reason": "no id_token"})
        try:
            header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
            kid = header.get("kid") if isinstance(header, dict) else None
        except (ValueError, IndexError):
            raise SignInFailed("La identificación recibida no es válida.", {"reason": "malformed id_token"}) from None
        keys = await self._keys()
        if isinstance(kid, str) and not _has_kid(keys, kid):  # the provider may have rotated its keys
            keys = await self._keys(refresh=True)
        try:
            decoded = jwt.decode(token, keys, algorithms=["RS256"])
        except (JoseError, ValueError) as exc:
            raise SignInFailed("La firma de la identificación no es válida.", {"reason": f"signature: {exc}"[:200]}) from None
        claims = dict(decoded.claims)
        now = time.time()
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        problems = []
        if claims.get("iss") != cfg.issuer:
            problems.append("issuer")
        if cfg.client_id not in auds or (len(auds) > 1 and claims.get("azp") != cfg.client_id):
            problems.append("audience")
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or exp + cfg.leeway_s < now:
            problems.append("expired")
        if not isinstance(iat, int | float) or iat - cfg.leeway_s > now:
            problems.append("issued in the future")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(str(claims["nonce"]), nonce):
            problems.append("nonce")
        if not claims.get("sub"):
            problems.append("no subject")
        if problems:
            raise SignInFailed("La identificación recibida no es válida para este servicio (" + ", ".join(problems) + ").",
                               {"reason": "id_token: " + ", ".join(problems)})
        return claims

    async def _principal(self, cfg: Oidc, claims: dict[str, Any]) -> tuple[Principal, str]:
        values = claims.get(cfg.roles_claim)
        listed = [values] if isinstance(values, str) else [str(v) for v in values] if isinstance(values, list) else []
        roles = sorted({r for v in listed for r in cfg.role_map.get(v, [])})
        raw_name = claims.get(cfg.username_claim) or claims.get("email") or claims.get("sub")
        wanted = _SLUG.sub("-", str(raw_name).lower()).strip("-._")[:64] or sha(str(claims.get("sub")))[:16]
        if not roles:
            raise Forbidden("Su cuenta corporativa no tiene ningún perfil de Atiende asignado. Pida a la administración "
                            "que le asigne uno.", {"claim": cfg.roles_claim, "values": listed[:20], "username": wanted},
                            error_id="sso-no-role")
        # The claims' issuer was checked equal to cfg.issuer; sub is present (verify_id_token).
        username = await self._account_for(cfg.issuer, str(claims["sub"]), wanted)
        name = str(claims.get(cfg.name_claim) or username)[:120]
        return Principal(id=f"user:oidc:{username}", name=name, roles=roles, agent_id=None), username


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


