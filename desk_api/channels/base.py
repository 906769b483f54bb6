"""What every channel shares: the message shapes, the channel settings, webhook secrets and de-duplication."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import weakref
from typing import Any, Literal

import httpx
from fastapi import Request
from pydantic import BaseModel, Field

from config.channels import ChannelsConfig
from core.errors import AtiendeError, Forbidden, InvalidInput, NotFound, Unauthorized
from desk_api.context import Services

ChannelName = Literal["webchat", "telegram", "whatsapp", "email"]


class ChannelDeliveryFailed(AtiendeError):
    """The channel's provider refused or did not answer; nothing was recorded as sent."""

    status_code = 502
    error_id = "channel-delivery-failed"


class Contact(BaseModel):
    """Where a conversation lives and where replies go. Stored per ticket (`Keys.ticket_contact`)."""

    channel: ChannelName
    address: str  # web-chat session, Telegram chat id, WhatsApp wa_id, e-mail address
    name: str | None = None
    # Channel addressing details: Telegram chat id, WhatsApp phone_number_id, e-mail subject and Message-IDs.
    data: dict[str, Any] = Field(default_factory=dict)


class Inbound(BaseModel):
    contact: Contact
    text: str
    message_id: str | None = None
    # Conversation keys to find an open ticket this message continues (first one is this conversation's own).
    threads: list[str] = Field(default_factory=list)
    trace_id: str | None = None
    # Files kept with the message (media.store): name, content type, size, sha256, path; or why one was refused.
    attachments: list[dict[str, Any]] = Field(default_factory=list)


class Reply(BaseModel):
    """What the assistant did with one inbound message, and what to say back (None: say nothing)."""

    text: str | None
    action: Literal["answered", "asked", "ticket", "appended", "ignored"]
    ref: str | None = None
    intent: str | None = None
    answer_id: str | None = None  # the ticket interaction holding `text`, to record its delivery on


_HTTP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def http_client() -> httpx.AsyncClient:
    """One outbound client per event loop: building one costs tens of milliseconds (its TLS context).
    Without keep-alive, so no connection outlives its request (the providers' APIs are called a few times
    a second at most; a closed loop leaves nothing open behind)."""
    loop = asyncio.get_running_loop()
    client = _HTTP.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), headers={"User-Agent": "Atiende"})
        _HTTP[loop] = client
    return client


def channels_config(runtime: Services) -> ChannelsConfig:
    """The `channels` config section; `runtime.channels_override` (set by tests and embedders) wins."""
    override = runtime.channels_override
    if isinstance(override, ChannelsConfig):
        return override
    cfg = getattr(runtime.settings, "channels", None)
    return cfg if isinstance(cfg, ChannelsConfig) else ChannelsConfig()


def check_secret(given: str | None, expected: str, channel: str, header: str) -> None:
    """Constant-time comparison of a shared secret; an unset secret refuses everything."""
    if not expected:  # nothing can authenticate: refused like a wrong secret (4xx, not a server fault)
        raise Forbidden(f"{channel} is not configured: set its secret first", {"channel": channel},
                        error_id="channel-not-configured")
    if not given:
        raise Unauthorized(f"missing {header}", {"header": header})
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Forbidden(f"{header} does not match", {"header": header})


def require_enabled(enabled: bool, channel: str) -> None:
    if not enabled:
        raise NotFound(f"the {channel} channel is disabled", {"channel": channel})


MAX_WEBHOOK_BYTES = 1_000_000  # Telegram updates and WhatsApp notifications are a few kB


async def read_body(request: Request, limit: int = MAX_WEBHOOK_BYTES) -> bytes:
    """The request body, refused past `limit` bytes without reading it all into memory."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge("the body is too large", {"max_bytes": limit})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge("the body is too large", {"max_bytes": limit})
        chunks.append(chunk)
    return b"".join(chunks)


class PayloadTooLarge(AtiendeError):
    status_code = 413
    error_id = "payload-too-large"


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("the body is not JSON", {"reason": str(exc)}) from None


_SPACES = re.compile(r"\s+")


def clean_text(text: str, limit: int) -> str:
    return _SPACES.sub(" ", text or "").strip()[:limit]


_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut between paragraphs, else between sentences, else between
    words (a hard cut only for a word longer than `limit`)."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    units: list[tuple[str, str]] = []  # (separator before it, text)
    for p_index, block in enumerate(b.strip() for b in text.split("\n\n")):
        if not block:
            continue
        first_sep = "\n\n" if p_index else ""
        parts = [block] if len(block) <= limit else _SENTENCE_END.split(block)
        for s_index, sentence in enumerate(parts):
            sep = first_sep if s_index == 0 else " "
            if len(sentence) <= limit:
                units.append((sep, sentence))
                continue
            for w_index, word in enumerate(sentence.split(" ")):
                for c_index in range(0, max(len(word), 1), limit):
                    units.append((sep if w_index == 0 and c_index == 0 else " " if c_index == 0 else "",
                                  word[c_index:c_index + limit]))
    pieces: list[str] = []
    current = ""
    for sep, unit in units:
        if current and len(current) + len(sep) + len(unit) <= limit:
            current += sep + unit
        else:
            if current:
                pieces.append(current)
            current = unit
    if current:
        pieces.append(current)
    return pieces


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(value: str, limit: int) -> str:
    """A header-safe value: a CR/LF or other control character inside a decoded header (an encoded-word can
    carry them) would make the reply's header raise, or inject another header."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", value or "")).strip()[:limit]
