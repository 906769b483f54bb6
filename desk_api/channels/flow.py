"""The one webhook flow every provider plugs into (Telegram, WhatsApp, e-mail):

    authenticate -> parse into typed events -> drop replays -> claim each event's id -> process it
    idempotently -> mark it done only once it is stored -> answer the citizen -> 200

Each channel brings a `ChannelPlug`: its verifier, its parser (raw body -> `Event`s) and its sender. The
flow owns what used to be copied per channel: de-duplication, replay window, storing attachments,
transcribing voice notes, the assistant, holding answers, delivery statuses.

De-duplication is a claim, not a mark: `processing` while an event is handled, `stored` once the desk has
it, `done` once answered. A failure before `stored` releases the claim and answers 500, so the provider's
retry is processed (nothing lost); a retry after `stored` is not processed twice (no second ticket); a
retry while another node still processes it gets 503 and comes back later.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, Field

from core.errors import AtiendeError, InvalidInput, Unavailable
from desk_api.channels import assistant, deskport, media
from desk_api.channels.base import ChannelName, Contact, Inbound, Reply, channels_config, read_body, require_enabled
from desk_api.channels.media import MediaRef, Refused
from desk_api.context import Services

log = logging.getLogger(__name__)

CLAIM_S = 300  # a node that dies while processing frees the event for the provider's retry after this
OUTBOUND_TTL_S = 30 * 86400  # statuses and bounces come within days
NOTICE_ONCE_S = 30 * 86400
UNSUPPORTED = ("De momento solo puedo leer mensajes de texto, fotos, documentos y notas de voz. "
               "Escríbame su consulta, por favor.")
FILE_ONLY = ("He recibido su archivo. Para tramitarlo, escríbame en pocas palabras qué necesita, por favor; "
             "lo uniré a su consulta.")
PENDING_FILES_S = 86400


class InboundMessage(BaseModel):
    """A citizen's message for the assistant."""

    type: Literal["message"] = "message"
    id: str  # the provider's id: what retries repeat
    contact: Contact
    text: str = ""
    media: list[MediaRef] = Field(default_factory=list)
    sent_at: datetime | None = None
    threads: list[str] = Field(default_factory=list)
    ref_hint: str | None = None
    start: bool = False  # Telegram's /start: greet, nothing to route


class Notice(BaseModel):
    """Something that is not a citizen's request (a reaction, an edit, a group message, an auto-reply...):
    ignored quietly, or answered with one fixed text (at most once per `once_key` when given)."""

    type: Literal["notice"] = "notice"
    id: str | None = None
    reason: str
    contact: Contact | None = None
    answer: str | None = None
    once_key: str | None = None
    sent_at: datetime | None = None


class StatusUpdate(BaseModel):
    """The provider's word on one of our messages (WhatsApp statuses, an e-mail bounce)."""

    type: Literal["status"] = "status"
    id: str
    message_ids: list[str]  # our message's provider id (a bounce may name several candidates)
    status: Literal["sent", "delivered", "read", "failed"]
    reason: str | None = None
    sent_at: datetime | None = None


Event = InboundMessage | Notice | StatusUpdate


class ChannelPlug(ABC):
    """What one channel brings to the flow."""

    name: ChannelName

    @abstractmethod
    def enabled(self, rt: Services) -> bool: ...

    def max_body(self, rt: Services) -> int:
        from desk_api.channels.base import MAX_WEBHOOK_BYTES

        return MAX_WEBHOOK_BYTES

    @abstractmethod
    def authenticate(self, rt: Services, request: Request, body: bytes) -> None:
        """Raise Unauthorized/Forbidden unless the request comes from the provider."""

    @abstractmethod
    def parse(self, rt: Services, body: bytes) -> list[Event]:
        """The body as events; InvalidInput for a body that is not the provider's format."""

    @abstractmethod
    async def send(self, rt: Services, contact: Contact, text: str, ref: str | None) -> list[str]:
        """Answer the citizen (split as the channel needs); the provider's ids of what was sent."""

    async def fetch(self, rt: Services, ref: MediaRef) -> tuple[bytes, str | None]:
        """A file's bytes and content type (channels whose messages carry the bytes need not override)."""
        if ref.content is None:
            raise Refused("archivo no disponible")
        return ref.content, ref.content_type

    def replay_window_s(self, rt: Services) -> int:
        return channels_config(rt).replay_window_s

    # False: the sender's timestamp is not checked against the replay window (de-duplication alone stops replays).
    refuse_stale = True

    # True: an answer to a message that made no ticket is sent before the message counts as stored, and a failure
    # to send it answers 503 for the sender to retry (e-mail: the MTA keeps it queued).
    retry_unanswered = False

    def retry_after_failure(self, exc: Exception) -> bool:
        """Whether this failure to send is worth the sender's retry (not, e.g., a deliberate limit)."""
        return True

    async def before_message(self, rt: Services, message: InboundMessage) -> None:
        """Called for each citizen message before the assistant (WhatsApp opens its reply window here)."""
        return None


# ---- de-duplication claims ------------------------------------------------------------------------------


def _seen_key(rt: Services, channel: str, event_id: str) -> str:
    return rt.store.keys.channel_seen(channel, event_id)


def _dedupe_ttl(plug: ChannelPlug, rt: Services) -> int:
    return plug.replay_window_s(rt) + 86400


async def claim(rt: Services, plug: ChannelPlug, event_id: str) -> str | None:
    """None when this node may process the event; else its state elsewhere ("stored", "done", "processing")."""
    key = _seen_key(rt, plug.name, event_id)
    if await rt.store.redis.set(key, "processing", nx=True, ex=CLAIM_S):
        return None
    state = await rt.store.redis.get(key)
    return str(state) if state else "done"


async def _mark(rt: Services, plug: ChannelPlug, event_id: str, state: str) -> None:
    await rt.store.redis.set(_seen_key(rt, plug.name, event_id), state, ex=_dedupe_ttl(plug, rt))


async def _release(rt: Services, plug: ChannelPlug, event_id: str) -> None:
    key = _seen_key(rt, plug.name, event_id)
    if await rt.store.redis.get(key) == "processing":
        await rt.store.redis.delete(key)


# ---- the flow -------------------------------------------------------------------------------------------


async def handle_webhook(rt: Services, plug: ChannelPlug, request: Request) -> dict[str, Any]:
    require_enabled(plug.enabled(rt), plug.name)
    body = await read_body(request, plug.max_body(rt))
    plug.authenticate(rt, request, body)
    try:
        # Parsing is CPU-bound (an e-mail's MIME tree, a megabyte of JSON): off the event loop, so one hostile body
        # cannot stall every call and chat on this node; each plug bounds its parser's work.
        events = await asyncio.to_thread(plug.parse, rt, body)
    except InvalidInput as exc:
        # Refused for good (4xx: the provider or MTA does not retry it); kept in the log for the operators.
        log.warning("%s delivery refused: %s", plug.name, exc.message,
                    extra={"fields": {"channel": plug.name, "error_id": exc.error_id, "bytes": len(body)}})
        raise
    results = [await process(rt, plug, event) for event in events]
    out: dict[str, Any] = {"ok": True, "results": results}
    if len(results) == 1:  # one event (Telegram, e-mail): its outcome at the top as well
        out.update({k: v for k, v in results[0].items() if k != "id"})
    return out


def _stale(rt: Services, plug: ChannelPlug, sent_at: datetime | None) -> bool:
    return (plug.refuse_stale and sent_at is not None
            and rt.clock.now() - sent_at > timedelta(seconds=plug.replay_window_s(rt)))


async def process(rt: Services, plug: ChannelPlug, event: Event) -> dict[str, Any]:
    if _stale(rt, plug, event.sent_at):
        return {"id": event.id, "action": "stale"}
    if event.id is None:  # nothing a retry could repeat harmfully (a quiet notice)
        return await _process(rt, plug, event)
    state = await claim(rt, plug, event.id)
    if state == "processing":
        raise Unavailable("this delivery is being processed, retry later", {"id": event.id}, error_id="in-progress")
    if state is not None:
        return {"id": event.id, "action": "duplicate"}
    try:
        result = await _process(rt, plug, event)
    except BaseException:
        await _release(rt, plug, event.id)
        raise
    await _mark(rt, plug, event.id, "done")
    return result


async def _process(rt: Services, plug: ChannelPlug, event: Event) -> dict[str, Any]:
    if isinstance(event, StatusUpdate):
        return {"id": event.id, "action": await record_status(rt, plug.name, event)}
    if isinstance(event, Notice):
        return {"id": event.id, "action": "ignored", "reason": event.reason,
                "delivered": await _notice_answer(rt, plug, event)}
    return await _message(rt, plug, event)


async def _notice_answer(rt: Services, plug: ChannelPlug, event: Notice) -> bool | None:
    if not event.answer or event.contact is None:
        return None
    if event.once_key and not await rt.store.redis.set(_seen_key(rt, plug.name, f"once:{event.once_key}"), "1", nx=True,
                                                       ex=NOTICE_ONCE_S):
        return None
    return bool(await _answer(rt, plug, event.contact, event.answer, None, None))


async def _message(rt: Services, plug: ChannelPlug, msg: InboundMessage) -> dict[str, Any]:
    unsent_key = _seen_key(rt, plug.name, f"unsent:{msg.id}")
    if plug.retry_unanswered and (unsent := await rt.store.redis.get(unsent_key)) is not None:
        # The retry of a message whose answer could not be sent: the answer was decided then; only sending is
        # repeated (running the assistant again would count the message twice against the sender's limits and
        # could answer differently).
        sent_now = await _send_unanswered(rt, plug, msg, str(unsent), unsent_key)
        return {"id": msg.id, "action": "answered", "ref": None, "delivered": sent_now}
    # The sender's message limit comes first: a flood must not make us fetch, store and transcribe its files.
    if await assistant.flooded(rt, msg.contact):
        return {"id": msg.id, "action": "ignored", "ref": None, "delivered": None}
    await plug.before_message(rt, msg)
    if msg.start:
        sent = await _answer(rt, plug, msg.contact, channels_config(rt).webchat.greeting, None, None)
        return {"id": msg.id, "action": "answered", "ref": None, "delivered": bool(sent)}
    attachments, transcript = await _attachments(rt, plug, msg)
    text = msg.text.strip() or transcript or ""
    inbound = Inbound(contact=msg.contact, text=text[:20000], message_id=msg.id, threads=msg.threads,
                      attachments=attachments)
    if not text and not attachments:
        sent = await _answer(rt, plug, msg.contact, UNSUPPORTED, None, None)
        return {"id": msg.id, "action": "ignored", "reason": "no text", "delivered": bool(sent)}
    reply: Reply
    if not text:
        reply = await assistant.file_only(rt, inbound, FILE_ONLY, PENDING_FILES_S)
    else:
        reply = await assistant.handle(rt, inbound, ref_hint=msg.ref_hint, counted=True)
    delivered: bool | None = None
    if reply.text and reply.ref is None and plug.retry_unanswered:
        # No ticket holds this message: if its only answer is lost, nobody would ever see it. Sent before the mark,
        # and a failure answers 503 with the claim released, so the sender's retry (an MTA's queue) sends it again.
        await rt.store.redis.set(unsent_key, reply.text, ex=_dedupe_ttl(plug, rt))
        delivered = await _send_unanswered(rt, plug, msg, reply.text, unsent_key)
    else:
        # Stored: a retry from here on must not open a second ticket, even if answering fails below (the ticket
        # shows the agent an answer that did not go).
        await _mark(rt, plug, msg.id, "stored")
        if reply.text:
            delivered = bool(await _answer(rt, plug, msg.contact, reply.text, reply.ref, reply.answer_id))
    out = {"id": msg.id, "action": reply.action, "ref": reply.ref, "delivered": delivered}
    return {**out, "attachments": len(attachments)} if attachments else out


async def _send_unanswered(rt: Services, plug: ChannelPlug, msg: InboundMessage, text: str, unsent_key: str) -> bool:
    """Send the answer of a message no ticket holds; a failure worth retrying raises 503 (the claim is released by
    `process`, the answer kept under `unsent_key` for the retry), any other is reported as not delivered."""
    try:
        delivered = bool(await plug.send(rt, msg.contact, text, None))
    except Exception as exc:
        reason = exc.message if isinstance(exc, AtiendeError) else type(exc).__name__
        if plug.retry_after_failure(exc):
            log.warning("%s answer not delivered, the delivery will be retried: %s", plug.name, reason)
            raise Unavailable("the answer could not be sent; retry later", {"reason": reason},
                              error_id="answer-not-sent") from None
        log.warning("%s answer not delivered: %s", plug.name, reason)
        delivered = False
    await _mark(rt, plug, msg.id, "stored")
    await rt.store.redis.delete(unsent_key)
    return delivered


async def _attachments(rt: Services, plug: ChannelPlug, msg: InboundMessage) -> tuple[list[dict[str, Any]], str | None]:
    out: list[dict[str, Any]] = []
    transcript: str | None = None
    limit = channels_config(rt).attachments_per_message
    files = [ref for ref in msg.media if ref.kind != "sticker"]
    for ref in files[:limit]:
        try:
            media.check(rt, ref.content_type or "application/octet-stream", ref.size)
            await _quota(rt, msg.contact, ref.size or 0, count=False)
            content, ctype = await plug.fetch(rt, ref)
            await _quota(rt, msg.contact, len(content), count=True)
            item = await media.store(rt, ref, content, ctype)
        except Refused as exc:
            out.append(media.refused(ref, str(exc)))
            continue
        if ref.kind == "voice" or (ref.kind == "audio" and not msg.text):
            transcript = await media.transcribe(rt, content)
            if transcript:
                item["transcript"] = transcript
        out.append(item)
    if len(files) > limit:  # one entry for the rest, not one per file (a mail may carry dozens)
        rest = len(files) - limit
        out.append({"kind": "document", "name": f"{rest} archivos más", "content_type": None,
                    "size": sum(ref.size or 0 for ref in files[limit:]), "count": rest,
                    "refused": f"máximo {limit} por mensaje"})  # the desk shows "N archivos más (no guardado: …)"
    return out, transcript


async def _quota(rt: Services, contact: Contact, size: int, *, count: bool) -> None:
    """The sender's daily bytes of files: Refused past `attachment_daily_bytes`. `count` adds `size` (the file
    fetched); without it, a file whose announced size would not fit is refused before it is fetched."""
    limit = channels_config(rt).attachment_daily_bytes
    key = rt.store.keys.rate(f"chan:bytes:{contact.channel}:{contact.address}")
    if count:
        async with rt.store.redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, size)
            pipe.expire(key, 86400, nx=True)
            used, _ = await pipe.execute()
        over = int(used) > limit
    else:
        over = int(await rt.store.redis.get(key) or 0) + size > limit
    if over:
        raise Refused(f"límite diario de archivos alcanzado ({limit} bytes por remitente)")


async def _answer(rt: Services, plug: ChannelPlug, contact: Contact, text: str, ref: str | None,
                  answer_id: str | None) -> list[str]:
    """Send an automatic answer; a failure is logged, never raised (the message is stored already)."""
    try:
        ids = await plug.send(rt, contact, text, ref)
    except Exception as exc:  # any provider failure: the citizen's message is safe, only the answer is lost
        reason = exc.message if isinstance(exc, AtiendeError) else type(exc).__name__
        log.warning("%s answer not delivered: %s", plug.name, reason)
        if ref and answer_id:
            await deskport.set_delivery(rt, ref, answer_id, "failed", reason=reason)
        return []
    if ref and answer_id:
        await remember_outbound(rt, plug.name, ids, ref, answer_id)
    return ids


async def remember_outbound(rt: Services, channel: str, provider_ids: list[str], ref: str, interaction_id: str,
                            details: dict[str, Any] | None = None, restart: bool = False) -> None:
    """Keep which interaction each sent message belongs to (statuses and bounces name the provider's id).
    Nothing sent and nothing to say (no ids, no details): nothing recorded; a reply held without a message of
    its own (WhatsApp, behind the hold's one template) still records that it is held."""
    if not provider_ids and not details:
        return
    if provider_ids:
        async with rt.store.redis.pipeline(transaction=False) as pipe:
            for pid in provider_ids:
                pipe.set(rt.store.keys.channel_outbound(channel, pid), f"{ref} {interaction_id}", ex=OUTBOUND_TTL_S)
            await pipe.execute()
    await deskport.set_delivery(rt, ref, interaction_id, "sent", details={"ids": provider_ids[:10], **(details or {})},
                                restart=restart)


async def record_status(rt: Services, channel: str, event: StatusUpdate) -> str:
    for pid in event.message_ids:
        raw = await rt.store.redis.get(rt.store.keys.channel_outbound(channel, pid))
        if not raw:
            continue
        ref, _, interaction_id = str(raw).partition(" ")
        changed = await deskport.set_delivery(rt, ref, interaction_id, event.status, reason=event.reason)
        return f"status-{event.status}" if changed else "status-unchanged"
    return "status-unknown"
