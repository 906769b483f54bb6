"""The desk's one model for every contact, whatever the channel.

- `Citizen`: a person, known by one or more identities (phone, e-mail, Telegram/WhatsApp/web-chat ids).
  When two citizens turn out to be the same person they are merged: the loser keeps `merged_into`.
- `Ticket`: a query, complaint, suggestion, voicemail or callback, with a short reference a person can read
  aloud and key in (`ref`: 6 characters from `REF_ALPHABET`, no 0/O/1/I; shown as "K7M-4PX" by `display_ref`).
  Status moves open -> assigned -> escalated -> assigned -> resolved -> closed (see `TRANSITIONS`).
- `Interaction`: one thing that happened on a ticket (a call with its IVR path, a voicemail, a chat message,
  an e-mail, a note, a status change...), each with time, channel, actor, text and free `data`.
- `Agent`: a person answering, with level (1 = N1, 2 = N2), skills, presence and a SIP URI for calls.

All instants are timezone-aware; the JSON form is what the REST API returns.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from core.refs import display_ref

# Channels: "phone" covers every voice contact (the IVR may say "voice"/"call"; they are normalised).
Channel = Literal["phone", "webchat", "email", "whatsapp", "telegram", "office", "api"]
CHANNELS: tuple[str, ...] = ("phone", "webchat", "email", "whatsapp", "telegram", "office", "api")
_CHANNEL_ALIASES = {"voice": "phone", "call": "phone", "ivr": "phone", "sip": "phone", "chat": "webchat", "web": "webchat",
                    "mail": "email", "e-mail": "email", "in_person": "office"}

TicketKind = Literal["query", "complaint", "suggestion", "voicemail", "callback"]
TicketStatus = Literal["open", "assigned", "escalated", "resolved", "closed"]
ACTIVE_STATUSES: tuple[str, ...] = ("open", "assigned", "escalated")

# Which status may follow which: anything active may be resolved or closed; resolved may reopen.
TRANSITIONS: dict[str, set[str]] = {
    "open": {"assigned", "escalated", "resolved", "closed"},
    "assigned": {"open", "assigned", "escalated", "resolved", "closed"},
    "escalated": {"assigned", "resolved", "closed"},
    "resolved": {"open", "closed"},
    "closed": {"open"},
}

InteractionKind = Literal[
    "call", "voicemail", "chat", "email", "note", "status_change", "escalation", "callback_attempt", "message"
]
Presence = Literal["available", "busy", "away", "offline"]
IdentityKind = Literal["phone", "email", "telegram", "whatsapp", "webchat"]
IDENTITY_KINDS: tuple[str, ...] = ("phone", "email", "telegram", "whatsapp", "webchat")



def normalize_channel(value: str) -> str:
    v = value.strip().lower()
    return _CHANNEL_ALIASES.get(v, v)


class Identity(BaseModel):
    kind: IdentityKind
    value: str


class Citizen(BaseModel):
    id: str
    name: str | None = None
    identities: list[Identity] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    merged_into: str | None = None  # set on the citizen that lost a merge

    def identity(self, kind: str) -> str | None:
        return next((i.value for i in self.identities if i.kind == kind), None)


class Interaction(BaseModel):
    id: str = Field(default_factory=lambda: secrets.token_hex(6))
    kind: InteractionKind
    at: datetime | None = None  # filled with the service clock when omitted
    channel: str = "api"
    actor: str = "system"  # "citizen", "ivr", "agent:<id>", "system", "key:<name>"
    direction: Literal["in", "out", "internal"] = "internal"
    text: str = ""
    # IVR path, transcript, recording link, e-mail Message-ID, chat message id, old/new status...
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        return normalize_channel(v)


class Ticket(BaseModel):
    ref: str
    kind: TicketKind = "query"
    status: TicketStatus = "open"
    channel: str
    queue: str
    level: int = 1
    subject: str
    body: str = ""
    citizen_id: str | None = None
    intent: str | None = None
    trace_id: str | None = None
    assignee: str | None = None  # agent id
    created_at: datetime
    updated_at: datetime
    due: datetime | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    created_by: str = "system"
    # Channel-specific addressing for replies (chat id, e-mail Message-ID, web-chat session...), free-form.
    meta: dict[str, Any] = Field(default_factory=dict)
    version: int = 1

    @property
    def display_ref(self) -> str:
        return display_ref(self.ref)


class Agent(BaseModel):
    id: str
    name: str
    level: int = Field(1, ge=1, le=2)  # 1 = N1, 2 = N2
    skills: list[str] = Field(default_factory=list)
    presence: Presence = "offline"
    sip_uri: str | None = None
    phone: Literal["sip", "browser"] = "sip"  # browser: the desk's softphone (agents.softphone), else sip_uri
    idle_since: datetime | None = None
    current: str | None = None  # ticket ref or call id the agent is handling


class Principal(BaseModel):
    """Who is calling the API: a logged-in user or a machine's API key."""

    id: str  # "user:<name>" or "key:<name>"
    name: str
    roles: list[str]
    agent_id: str | None = None

    def has(self, *roles: str) -> bool:
        return "admin" in self.roles or any(r in self.roles for r in roles)
