"""Queues, agents, roles, bootstrap users and keys, rate limits and desk policies."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from config.base import Strict

Role = Literal["agent_n1", "agent_n2", "supervisor", "admin"]


class Queue(Strict):
    id: str
    name: str
    level: int = Field(1, ge=1, le=2)
    skills: list[str] = Field(default_factory=list)
    calendar: str | None = None


class BootstrapUser(Strict):
    """A demo user, created only with `desk.demo: true` (`atiende run --demo`) when it does not exist yet, and
    removed (with its sessions) as soon as the demo switch is off or the user leaves this list."""

    username: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]{1,31}$")
    name: str
    roles: list[Role]
    # None: a random password, printed once on the console of the `atiende run` that creates the user.
    password: str | None = Field(None, min_length=12)
    # When set, the user is also an agent with this level and these skills.
    level: int | None = Field(None, ge=1, le=2)
    skills: list[str] = Field(default_factory=list)
    sip_uri: str | None = None


class BootstrapKey(Strict):
    """A demo API key (same life as the demo users); only its SHA-256 is stored in Redis. Real machines get
    theirs from `atiende desk create-key`."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]{1,64}$")
    key: str | None = Field(None, min_length=16)  # None: random, printed once like the demo passwords
    roles: list[Role]


class LoginThrottle(Strict):
    """Failed logins per username (whether it exists or not, so the lock tells nothing): after `max_failures`
    within `window_s` the account is locked for `lockout_s`, doubling with each further failure up to
    `max_lockout_s`. Per-address limits are `rate_limits.login`."""

    max_failures: int = Field(5, ge=1)
    window_s: int = Field(900, ge=1)
    lockout_s: int = Field(60, ge=1)
    max_lockout_s: int = Field(3600, ge=1)


class Retention(Strict):
    """Days each kind of personal data is kept (0 = forever); `atiende run` enforces them every `interval_s`.

    Tickets are anonymised (kept for statistics without text, contact or citizen) `tickets_days` after they were
    resolved or closed; citizens are erased once they have no active ticket and no activity for `citizens_days`;
    call records lose caller, transcripts and entities after `calls_days`; voicemail recordings are deleted after
    `recordings_days`; audit entries older than `audit_days` are dropped."""

    tickets_days: int = Field(1825, ge=0)
    citizens_days: int = Field(1825, ge=0)
    calls_days: int = Field(365, ge=0)
    recordings_days: int = Field(90, ge=0)
    audit_days: int = Field(2190, ge=0)
    interval_s: int = Field(3600, ge=10)
    batch: int = Field(500, ge=1, le=10_000)


class StaffOnly(Strict):
    """Public by default for Prometheus and API readers; set true to require any staff credential."""

    metrics: bool = False
    docs: bool = False  # /docs, /redoc and /openapi.json


class RateLimit(Strict):
    requests: int = Field(..., ge=1)
    per_seconds: int = Field(..., ge=1)


# ---- operations (issue 18: dispositions, canned replies, SLA alerts, call detail records) --------------------

PLACEHOLDERS = ("nombre", "referencia", "proxima_apertura")  # what a canned reply may say in braces: {nombre}...


class Disposition(Strict):
    """A disposition (wrap-up) code an agent sets when ending a call or closing a ticket."""

    code: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    label: str = Field(..., min_length=1, max_length=80)
    queues: list[str] = Field(default_factory=list)  # empty: every queue
    active: bool = True  # retired codes stay readable in reports and CDRs


class Dispositions(Strict):
    """Admin-editable (versioned section `dispositions`); this is its version 0."""

    required: bool = False  # true: closing or resolving a ticket needs a disposition (422 without one)
    codes: list[Disposition] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Dispositions:
        codes = [c.code for c in self.codes]
        if len(set(codes)) != len(codes):
            raise ValueError(f"disposition codes repeat: {sorted(c for c in set(codes) if codes.count(c) > 1)}")
        if self.required and not any(c.active for c in self.codes):
            raise ValueError("dispositions are required but no code is active")
        return self


class CannedReply(Strict):
    """A reply agents insert from the desk; `{nombre}`, `{referencia}` and `{proxima_apertura}` are filled in."""

    id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    title: str = Field(..., min_length=1, max_length=80)
    text: str = Field(..., min_length=1, max_length=5000)
    queues: list[str] = Field(default_factory=list)  # empty: every queue

    @model_validator(mode="after")
    def _placeholders(self) -> CannedReply:
        import re

        unknown = sorted({m for m in re.findall(r"\{([^{}]*)\}", self.text) if m not in PLACEHOLDERS})
        if unknown:
            raise ValueError(f"unknown placeholders {unknown}; use {list(PLACEHOLDERS)}")
        return self


class CannedReplies(Strict):
    """Admin-editable (versioned section `canned`); this is its version 0."""

    replies: list[CannedReply] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> CannedReplies:
        ids = [r.id for r in self.replies]
        if len(set(ids)) != len(ids):
            raise ValueError(f"canned reply ids repeat: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
        return self


class Webhook(Strict):
    """An outgoing signed webhook: the JSON body's HMAC-SHA256 with `secret` in `X-Atiende-Signature:
    sha256=<hex>`. Sent off the caller's path, from a bounded in-memory queue; a failed delivery is retried
    `attempts` times with doubling backoff from `backoff_s`. Empty `url`: off."""

    url: str = Field("", pattern=r"^(https?://[^\s]+)?$", max_length=2000)
    secret: str = Field("", max_length=256)
    timeout_s: float = Field(5.0, gt=0, le=60)
    attempts: int = Field(5, ge=1, le=10)
    backoff_s: float = Field(1.0, ge=0, le=300)
    queue_max: int = Field(1000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _secret(self) -> Webhook:
        if self.url and len(self.secret) < 16:
            raise ValueError("a webhook needs a secret of at least 16 characters to sign its bodies")
        return self


class Sla(Strict):
    """Service levels in business time (the queue's calendar): a first response within
    `first_response_business_hours`, resolution by the ticket's due date. A warning when `warn_at` of the time is
    used, a breach when it is over; each once per ticket, to supervisors (desk event) and to `webhook`."""

    enabled: bool = True
    first_response_business_hours: float = Field(4.0, gt=0, le=2000)
    warn_at: float = Field(0.8, gt=0, lt=1)
    interval_s: int = Field(60, ge=5, le=86_400)
    max_scan: int = Field(20_000, ge=100, le=1_000_000)  # active tickets looked at per round
    webhook: Webhook = Field(default_factory=Webhook)


class Cdr(Strict):
    """Call detail records: the caller keeps its last `keep_digits` digits; `webhook` gets one per finished call
    (and again when a disposition is set afterwards)."""

    keep_digits: int = Field(3, ge=0, le=6)
    webhook: Webhook = Field(default_factory=Webhook)
    max_export: int = Field(100_000, ge=1, le=10_000_000)  # rows in one CSV export


class Oidc(Strict):
    """Single sign-on for staff with OpenID Connect (authorization code + PKCE S256). Off unless `enabled`. The
    provider's roles claim (`roles_claim`, a string or a list) is mapped to Atiende roles by `role_map`; a person
    with no mapped value is refused (never a default role). Local users keep logging in with their passwords.
    `client_secret` may come from ATIENDE_DESK__OIDC__CLIENT_SECRET; empty: a public client (PKCE only)."""

    enabled: bool = False
    issuer: str = Field("", max_length=500)  # https://...; http only for a provider on this machine (loopback)
    client_id: str = Field("", max_length=200)
    client_secret: str = Field("", max_length=500)
    # empty: http.public_url + the callback path; with neither, sign-in is refused (never built from the Host header)
    redirect_uri: str = Field("", max_length=500)
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    roles_claim: str = Field("groups", min_length=1, max_length=100)
    role_map: dict[str, list[Role]] = Field(default_factory=dict)  # claim value -> Atiende roles
    username_claim: str = Field("preferred_username", min_length=1, max_length=100)
    name_claim: str = Field("name", min_length=1, max_length=100)
    button_label: str = Field("Entrar con la cuenta corporativa", min_length=1, max_length=80)
    timeout_s: float = Field(10.0, gt=0, le=60)
    leeway_s: int = Field(60, ge=0, le=600)  # clock skew allowed on exp/iat

    @model_validator(mode="after")
    def _complete(self) -> Oidc:
        if not self.enabled:
            return self
        from urllib.parse import urlsplit

        u = urlsplit(self.issuer)
        local = (u.hostname or "") in ("localhost", "127.0.0.1", "::1")
        if u.scheme != "https" and not (u.scheme == "http" and local):
            raise ValueError("oidc.issuer must be an https:// URL (http only for a provider on this machine)")
        if not self.client_id:
            raise ValueError("oidc.client_id is required when oidc is enabled")
        if not self.role_map:
            raise ValueError("oidc.role_map is required when oidc is enabled: which claim values give which roles")
        if "openid" not in self.scopes:
            raise ValueError("oidc.scopes must include openid")
        return self


class DeskConfig(Strict):
    queues: list[Queue] = Field(
        default_factory=lambda: [
            Queue(id="N1", name="Informadores (nivel 1)", level=1, skills=["general"]),
            Queue(id="N2", name="Especialistas (nivel 2)", level=2, skills=["quejas"]),
        ]
    )
    default_queue: str = "N1"
    escalation_queue: str = "N2"
    complaints_queue: str = "N2"
    complaint_due_business_days: int = Field(10, ge=1)
    ticket_due_business_hours: int = Field(16, ge=1)
    session_ttl_s: int = Field(12 * 3600, ge=60)
    # Demo accounts (`users`, `api_keys`) exist only while this is true; `atiende run` refuses it unless HTTP
    # listens on a loopback address. Without it, the first start with no admin creates one with a random
    # password printed once on the console.
    demo: bool = False
    users: list[BootstrapUser] = Field(default_factory=list)
    api_keys: list[BootstrapKey] = Field(default_factory=list)
    login_throttle: LoginThrottle = Field(default_factory=LoginThrottle)
    # Addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (exact IPs or CIDRs).
    trusted_proxies: list[str] = Field(default_factory=list)
    retention: Retention = Field(default_factory=Retention)
    staff_only: StaffOnly = Field(default_factory=StaffOnly)
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=lambda: {
            "status": RateLimit(requests=30, per_seconds=60),
            "chat": RateLimit(requests=60, per_seconds=60),
            "login": RateLimit(requests=10, per_seconds=60),
            "route": RateLimit(requests=120, per_seconds=60),  # public POST /api/v1/route: a few ms of CPU each
        }
    )
    events_maxlen: int = Field(10_000, ge=100)
    audit_maxlen: int = Field(1_000_000, ge=1000)
    # Live event streams (/desk/api/events) one node serves: per user (tabs), per client address (an office behind
    # one NAT address has many agents), and each stream's buffer before a client that does not read is cut.
    live_streams_per_user: int = Field(10, ge=1, le=10_000)
    live_streams_per_address: int = Field(300, ge=1, le=100_000)
    live_buffer_events: int = Field(1000, ge=10, le=100_000)
    live_buffer_bytes: int = Field(1_048_576, ge=16_384, le=64 * 1_048_576)
    dispositions: Dispositions = Field(default_factory=Dispositions)
    canned: CannedReplies = Field(default_factory=CannedReplies)
    sla: Sla = Field(default_factory=Sla)
    cdr: Cdr = Field(default_factory=Cdr)
    oidc: Oidc = Field(default_factory=Oidc)

    @model_validator(mode="after")
    def _queues_known(self) -> DeskConfig:
        ids = [q.id for q in self.queues]
        if len(set(ids)) != len(ids):
            raise ValueError(f"queue ids repeat: {ids}")
        for field in ("default_queue", "escalation_queue", "complaints_queue"):
            if getattr(self, field) not in ids:
                raise ValueError(f"{field} {getattr(self, field)!r} is not one of the queues {ids}")
        names = [u.username for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("bootstrap usernames repeat")
        keys = [k.name for k in self.api_keys]
        if len(set(keys)) != len(keys):
            raise ValueError("demo API key names repeat")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {proxy!r} is not an IP address or network") from None
        return self

    def queue(self, queue_id: str) -> Queue | None:
        return next((q for q in self.queues if q.id == queue_id), None)
