"""A small but real OpenID Connect provider for the tests: discovery, JWKS, authorize (a consent page a person or
a browser submits), token (PKCE S256 checked, codes single use), ID tokens signed RS256 with a real 2048-bit key.

It runs under uvicorn in a thread on 127.0.0.1. `user` is who signs in next (claims merged into the ID token);
`tamper` overrides ID-token claims (aud, exp, nonce, iss...) to play a misbehaving or compromised provider, and
`foreign_key` signs with a key the JWKS does not publish.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import secrets
import socket
import threading
import time
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from joserfc import jwt
from joserfc.jwk import RSAKey

CLIENT_ID = "atiende-desk"
CLIENT_SECRET = "secreto-de-pruebas-0123456789"


class TestProvider:
    __test__ = False  # not a pytest class

    def __init__(self, redirect_uris: list[str] | None = None) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "op-key-1", "use": "sig", "alg": "RS256"})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "op-key-1", "use": "sig", "alg": "RS256"})
        self.redirect_uris = redirect_uris or []
        self.user: dict[str, Any] = {"sub": "u-1001", "preferred_username": "marta.garcia", "name": "Marta García",
                                     "email": "marta.garcia@ayto.example.es", "groups": ["atiende-agentes-n1"]}
        self.tamper: dict[str, Any] = {}
        self.foreign_key = False
        self.codes: dict[str, dict[str, Any]] = {}
        self.used_codes: set[str] = set()
        self.token_requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.app = self._build()

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> dict[str, Any]:
            return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                    "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                    "response_types_supported": ["code"], "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic"]}

        @app.get("/jwks")
        async def jwks() -> dict[str, Any]:
            return {"keys": [self.key.as_dict(private=False)]}

        @app.get("/authorize")
        async def authorize(request: Request) -> HTMLResponse:
            q = request.query_params
            problems = []
            if q.get("client_id") != CLIENT_ID:
                problems.append("unknown client")
            if q.get("redirect_uri") not in self.redirect_uris:
                problems.append("redirect_uri not registered")
            if q.get("response_type") != "code" or "openid" not in (q.get("scope") or "").split():
                problems.append("not an OpenID Connect code request")
            if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
                problems.append("PKCE S256 required")
            if problems:
                return HTMLResponse(f"<p>{html.escape(', '.join(problems))}</p>", status_code=400)
            hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in q.items() if k in ("redirect_uri", "state", "nonce", "code_challenge"))
            return HTMLResponse(f"""<!doctype html><html lang="es"><head><meta charset="utf-8">
<title>Proveedor de identidad de pruebas</title></head><body><main><h1>Proveedor de identidad</h1>
<p>Entrar en Atiende como {html.escape(str(self.user.get('name')))}</p>
<form method="post" action="/authorize">{hidden}<button type="submit" id="consent">Autorizar</button></form>
</main></body></html>""")

        @app.post("/authorize")
        async def consent(redirect_uri: str = Form(...), state: str = Form(...), nonce: str = Form(...),
                          code_challenge: str = Form(...)) -> RedirectResponse:
            code = secrets.token_urlsafe(24)
            self.codes[code] = {"redirect_uri": redirect_uri, "nonce": nonce, "challenge": code_challenge,
                                "user": dict(self.user), "at": time.time()}
            return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}", status_code=302)

        @app.post("/token")
        async def token(request: Request) -> JSONResponse:
            self.token_requests += 1
            form = await request.form()
            auth = request.headers.get("authorization", "")
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if not secrets.compare_digest(auth, expected):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            code = str(form.get("code", ""))
            grant = self.codes.pop(code, None)
            if code in self.used_codes or grant is None or time.time() - grant["at"] > 60:
                self.used_codes.add(code)
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            self.used_codes.add(code)
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if form.get("grant_type") != "authorization_code" or form.get("redirect_uri") != grant["redirect_uri"] \
                    or not secrets.compare_digest(challenge, grant["challenge"]):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            now = int(time.time())
            claims = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "auth_time": now,
                      "nonce": grant["nonce"], **grant["user"], **self.tamper}
            key = self.other_key if self.foreign_key else self.key
            id_token = jwt.encode({"alg": "RS256", "kid": "op-key-1", "typ": "JWT"}, claims, key)
            return JSONResponse({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 300,
                                 "id_token": id_token}, headers={"Cache-Control": "no-store"})

        return app

    def start(self) -> TestProvider:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test OpenID provider did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.sock.close()
