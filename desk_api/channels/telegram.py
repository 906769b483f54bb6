"""Telegram: Bot API `Update` objects on a webhook, replies through `sendMessage`.

The webhook is registered with `setWebhook(url, secret_token=...)`; Telegram then sends that
secret in `X-Telegram-Bot-Api-Secret-Token` on every update, which is how we know it is Telegram.
Telegram retries an update until it gets a 2xx, so updates are de-duplicated by `update_id`.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import APIRouter, Header, Request

from core.errors import AtiendeError
from desk_api.channels import assistant
from desk_api.channels.base import (
    ChannelDeliveryFailed,
    Contact,
    Inbound,
    channels_config,
    check_secret,
    clean_text,
    first_time,
    http_client,
    parse_json,
    read_body,
    require_enabled,
)
from desk_api.context import Services
from desk_api.deps import services_of

log = logging.getLogger(__name__)
router = APIRouter(tags=["channels"])

MAX_TEXT = 4096  # Bot API limit for one message
UNSUPPORTED = "De momento solo puedo leer mensajes de texto. Escríbame su consulta, por favor."


def parse_update(update: Any) -> tuple[Contact, str | None, str] | None:
    """(contact, text or None for non-text messages, message id) of an update that carries a message."""
    if not isinstance(update, dict):
        return None
    message = update.get("message") or update.get("edited_message")
    if not isinstance(message, dict) or not isinstance(message.get("chat"), dict):
        return None
    chat = message["chat"]
    sender: dict[str, Any] = message["from"] if isinstance(message.get("from"), dict) else {}
    chat_id = chat.get("id")
    if not isinstance(chat_id, int):
        return None
    user_id = sender.get("id") if isinstance(sender.get("id"), int) else chat_id
    name = " ".join(str(sender[k]) for k in ("first_name", "last_name") if sender.get(k))[:200] or None
    contact = Contact(channel="telegram", address=str(user_id), name=name,
                      data={"chat_id": chat_id, "username": sender.get("username")})
    text = message.get("text") if isinstance(message.get("text"), str) else message.get("caption")
    return contact, text if isinstance(text, str) else None, str(message.get("message_id", ""))


async def send_message(rt: Services, contact: Contact, text: str) -> dict[str, Any]:
    cfg = channels_config(rt).telegram
    if not cfg.bot_token:
        raise ChannelDeliveryFailed("telegram has no bot token configured", {"channel": "telegram"})
    url = f"{cfg.api_base.rstrip('/')}/bot{cfg.bot_token}/sendMessage"
    payload = {"chat_id": contact.data.get("chat_id", contact.address), "text": text[:MAX_TEXT]}
    try:
        resp = await http_client().post(url, json=payload, timeout=cfg.timeout_s)
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ChannelDeliveryFailed("telegram did not answer", {"reason": str(exc)}) from None
    if resp.status_code != 200 or not body.get("ok"):
        raise ChannelDeliveryFailed("telegram refused the message",
                                    {"status": resp.status_code, "description": body.get("description")})
    return {"telegram_message_id": body.get("result", {}).get("message_id")}


@router.post("/api/v1/channels/telegram/webhook")
async def telegram_webhook(
    request: Request,
    x_telegram_bot_api_secret_token: str | None = Header(None),
) -> dict[str, Any]:
    """Receive one Bot API `Update`; answer the citizen with `sendMessage`."""
    rt = services_of(request)
    cfg = channels_config(rt)
    require_enabled(cfg.telegram.enabled, "telegram")
    check_secret(x_telegram_bot_api_secret_token, cfg.telegram.webhook_secret, "telegram", "X-Telegram-Bot-Api-Secret-Token")
    update = parse_json(await read_body(request))
    parsed = parse_update(update)
    if parsed is None:
        return {"ok": True, "action": "ignored"}
    update_id = update.get("update_id")
    if isinstance(update_id, int) and not await first_time(rt, "telegram", str(update_id)):
        return {"ok": True, "action": "duplicate"}
    contact, text, message_id = parsed
    answer: str | None
    ref: str | None
    if text is not None and text.strip().startswith("/start"):
        answer, action, ref = cfg.webchat.greeting, "answered", None
    elif text is None or not clean_text(text, 1):
        answer, action, ref = UNSUPPORTED, "ignored", None
    else:
        reply = await assistant.handle(rt, Inbound(contact=contact, text=clean_text(text, MAX_TEXT), message_id=message_id,
                                                   threads=[str(contact.data["chat_id"])]))
        answer, action, ref = reply.text, reply.action, reply.ref
    delivered = None
    if answer:
        try:
            await send_message(rt, contact, answer)
            delivered = True
        except AtiendeError as exc:  # the message is processed; a retry from Telegram must not duplicate it
            log.warning("telegram reply not delivered: %s", exc.message)
            delivered = False
    return {"ok": True, "action": action, "ref": ref, "delivered": delivered}
