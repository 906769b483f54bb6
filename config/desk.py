"""Queues, agents, roles, bootstrap users and keys, rate limits and desk policies."""

from __future__ import annotations

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
    """A user created at start-up when it does not exist yet (later password changes are kept)."""

    username: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]{1,31}$")
    name: str
    roles: list[Role]
    password: str = Field(..., min_length=8)
    # When set, the user is also an agent with this level and these skills.
    level: int | None = Field(None, ge=1, le=2)
    skills: list[str] = Field(default_factory=list)
    sip_uri: str | None = None


class BootstrapKey(Strict):
    """An API key for a machine (IVR node, channel gateway); only its SHA-256 is stored in Redis."""

    name: str
    key: str = Field(..., min_length=16)
    roles: list[Role]


class RateLimit(Strict):
    requests: int = Field(..., ge=1)
    per_seconds: int = Field(..., ge=1)


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
    users: list[BootstrapUser] = Field(default_factory=list)
    api_keys: list[BootstrapKey] = Field(default_factory=list)
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=lambda: {
            "status": RateLimit(requests=30, per_seconds=60),
            "chat": RateLimit(requests=60, per_seconds=60),
            "login": RateLimit(requests=10, per_seconds=60),
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
        return self

    def queue(self, queue_id: str) -> Queue | None:
        return next((q for q in self.queues if q.id == queue_id), None)
