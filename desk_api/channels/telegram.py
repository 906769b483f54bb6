"""Telegram: Bot API `Update` objects on a webhook, replies through `sendMessage`.

The webhook is registered with `setWebhook(url, secret_token=...)`; Telegram then sends that secret in
`X-Telegram-Bot-Api-Secret-Token` on every update. The shared flow (flow.py) de-duplicates by `update_id`
and refuses updates older than the replay window (`message.date`).

Only private chats are conversations: in a group, members' messages would thread onto one ticket (one
member would read another's answers), so a group gets one "escríbame por privado" at most and nothing
else. Service messages (members joining or leaving, pins...), edits, channel posts and stickers are
ignored quietly; photos, documents and voice notes are kept on the ticket (captions are the message's
text, voice notes are transcribed).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, Header, Request

from desk_api.channels import flow
from desk_api.channels.base import (
    ChannelDeliveryFailed,
    Contact,
    channels_config,
    check_secret,
    clean_text,
    http_client,
    parse_json,
    split_text,
)
from desk_api.channels.flow import ChannelPlug, Event, InboundMessage, Notice
from desk_api.channels.media import MediaRef, Refused
from desk_api.context import Services
from desk_api.deps import services_of

log = logging.getLogger(__name__)
router = APIRouter(tags=["channels"])

MAX_TEXT = 4096  # Bot API limit for one message
# Message fields that make it a service message (nobody wrote anything to us).
SERVICE_FIELDS = ("new_chat_members", "left_chat_member", "new_chat_title", "new_chat_photo", "delete_chat_photo",
                  "group_chat_created", "supergroup_chat_created", "channel_chat_created", "migrate_to_chat_id",
                  "migrate_from_chat_id", "pinned_message", "message_auto_delete_timer_changed", "video_chat_started",
                  "video_chat_ended", "forum_topic_created", "boost_added", "chat_background_set", "write_access_allowed",
                  "users_shared", "chat_shared", "proximity_alert_triggered")


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _when(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) and value > 0 else None


def _media(message: dict[str, Any]) -> list[MediaRef]:
    out: list[MediaRef] = []
    photos = [p for p in message.get("photo") or [] if isinstance(p, dict) and isinstance(p.get("file_id"), str)]
    if photos:  # several sizes of one photo: the largest
        best = max(photos, key=lambda p: int(p.get("file_size") or 0) or int(p.get("width") or 0))
        out.append(MediaRef(kind="image", provider_id=best["file_id"], content_type="image/jpeg",
                            size=best.get("file_size") if isinstance(best.get("file_size"), int) else None))
    for field, kind in (("voice", "voice"), ("audio", "audio"), ("document", "document"), ("video", "video"),
                        ("video_note", "video"), ("sticker", "sticker")):
        item = _d(message.get(field))
        if isinstance(item.get("file_id"), str):
            default_type = {"voice": "audio/ogg", "video_note": "video/mp4", "sticker": "image/webp"}.get(field)
            out.append(MediaRef(kind=kind, provider_id=item["file_id"],
                                filename=item.get("file_name") if isinstance(item.get("file_name"), str) else None,
                                content_type=item.get("mime_type") if isinstance(item.get("mime_type"), str) else default_type,
                                size=item.get("file_size") if isinstance(item.get("file_size"), int) else None))
    return out


def parse_update(update: Any) -> list[Event]:
    """One Bot API update as the flow's events (none for updates that carry nothing for us)."""
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
        return []
    uid = str(update["update_id"])
    if "edited_message" in update or "edited_channel_post" in update:
        return [Notice(id=uid, reason="edited message")]  # the original was processed; an edit is not a new request
    if "channel_post" in update:
        return [Notice(id=uid, reason="channel post")]
    message = _d(update.get("message"))
    chat = _d(message.get("chat"))
    if not message or not isinstance(chat.get("id"), int):
        return [Notice(id=uid, reason="no message")]  # my_chat_member, callback_query...: nothing to answer
    sent_at = _when(message.get("date"))
    sender = _d(message.get("from"))
    if sender.get("is_bot"):
        return [Notice(id=uid, reason="bot", sent_at=sent_at)]
    if any(field in message for field in SERVICE_FIELDS):
        return [Notice(id=uid, reason="service message", sent_at=sent_at)]
    chat_id = chat["id"]
    text = message.get("text") if isinstance(message.get("text"), str) else message.get("caption")
    text = text if isinstance(text, str) else ""
    if chat.get("type") != "private":
        group = Contact(channel="telegram", address=str(chat_id), data={"chat_id": chat_id})
        return [Notice(id=uid, reason="group chat", contact=group, once_key=f"group:{chat_id}", sent_at=sent_at,
                       answer=None if not text else "__group_notice__")]
    user_id = sender.get("id") if isinstance(sender.get("id"), int) else chat_id
    name = " ".join(str(sender[k]) for k in ("first_name", "last_name") if sender.get(k))[:200] or None
    contact = Contact(channel="telegram", address=str(user_id), name=clean_text(name or "", 200) or None,
                      data={"chat_id": chat_id, "username": sender.get("username")})
    media = _media(message)
    if not text.strip() and media and all(m.kind == "sticker" for m in media):
        return [Notice(id=uid, reason="sticker", sent_at=sent_at)]
    return [InboundMessage(id=uid, contact=contact, text=clean_text(text, MAX_TEXT), media=media, sent_at=sent_at,
                           threads=[str(chat_id)], start=text.strip().startswith("/start"))]


async def _call(rt: Services, method: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One Bot API call; a 429 is retried after its `retry_after` (bounded in wait and in count)."""
    cfg = channels_config(rt).telegram
    if not cfg.bot_token:
        raise ChannelDeliveryFailed("telegram has no bot token configured", {"channel": "telegram"})
    url = f"{cfg.api_base.rstrip('/')}/bot{cfg.bot_token}/{method}"
    for attempt in range(cfg.max_retries + 1):
        try:
            resp = await http_client().post(url, json=payload, timeout=cfg.timeout_s)
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ChannelDeliveryFailed("telegram did not answer", {"reason": str(exc)}) from None
        if not isinstance(body, dict):
            raise ChannelDeliveryFailed("telegram answered something else", {"status": resp.status_code})
        if resp.status_code == 429:
            retry = _d(body.get("parameters")).get("retry_after")
            wait = float(retry) if isinstance(retry, int | float) else cfg.max_retry_after_s + 1
            if attempt < cfg.max_retries and 0 <= wait <= cfg.max_retry_after_s:
                log.info("telegram asks to wait %.0f s", wait)
                await asyncio.sleep(wait)
                continue
            raise ChannelDeliveryFailed("telegram is rate-limiting us", {"retry_after": retry})
        if resp.status_code != 200 or not body.get("ok"):
            raise ChannelDeliveryFailed("telegram refused the message",
                                        {"status": resp.status_code, "description": body.get("description")})
        return _d(body.get("result"))
    raise ChannelDeliveryFailed("telegram is rate-limiting us", {})


async def send_message(rt: Services, contact: Contact, text: str) -> dict[str, Any]:
    """Send `text` (split at 4,096 characters on paragraph or sentence boundaries); the sent message ids."""
    ids: list[str] = []
    for piece in split_text(text, MAX_TEXT):
        result = await _call(rt, "sendMessage", {"chat_id": contact.data.get("chat_id", contact.address), "text": piece})
        ids.append(str(result.get("message_id")))
    return {"telegram_message_id": ids[0] if ids else None, "ids": ids}


class TelegramPlug(ChannelPlug):
    name = "telegram"

    def enabled(self, rt: Services) -> bool:
        return channels_config(rt).telegram.enabled

    def authenticate(self, rt: Services, request: Request, body: bytes) -> None:
        check_secret(request.headers.get("x-telegram-bot-api-secret-token"), channels_config(rt).telegram.webhook_secret,
                     "telegram", "X-Telegram-Bot-Api-Secret-Token")

    def parse(self, rt: Services, body: bytes) -> list[Event]:
        events = parse_update(parse_json(body))
        notice = channels_config(rt).telegram.group_notice
        for event in events:
            if isinstance(event, Notice) and event.answer == "__group_notice__":
                event.answer = notice
        return events

    async def send(self, rt: Services, contact: Contact, text: str, ref: str | None) -> list[str]:
        return list((await send_message(rt, contact, text))["ids"])

    async def fetch(self, rt: Services, ref: MediaRef) -> tuple[bytes, str | None]:
        cfg = channels_config(rt)
        try:
            info = await _call(rt, "getFile", {"file_id": ref.provider_id})
        except ChannelDeliveryFailed as exc:
            raise Refused(f"Telegram no entregó el archivo ({exc.message})") from None
        path = info.get("file_path")
        if not isinstance(path, str) or ".." in path:
            raise Refused("Telegram no dio la ruta del archivo")
        url = f"{cfg.telegram.api_base.rstrip('/')}/file/bot{cfg.telegram.bot_token}/{path}"
        return await download(url, {}, cfg.attachment_max_bytes, cfg.telegram.timeout_s), ref.content_type


async def download(url: str, headers: dict[str, str], limit: int, timeout_s: float) -> bytes:
    """A provider's file, refused past `limit` bytes without reading it all."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with http_client().stream("GET", url, headers=headers, timeout=timeout_s) as resp:
            if resp.status_code != 200:
                raise Refused(f"el proveedor no entregó el archivo (HTTP {resp.status_code})")
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise Refused(f"demasiado grande (más de {limit} bytes)")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise Refused(f"el proveedor no entregó el archivo ({type(exc).__name__})") from None
    return b"".join(chunks)


PLUG = TelegramPlug()


@router.post("/api/v1/channels/telegram/webhook")
async def telegram_webhook(request: Request, x_telegram_bot_api_secret_token: str | None = Header(None)) -> dict[str, Any]:
    """Receive one Bot API `Update`; answer the citizen with `sendMessage`."""
    return await flow.handle_webhook(services_of(request), PLUG, request)
