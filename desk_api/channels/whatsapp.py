"""WhatsApp Cloud API: the webhook handshake, signed message notifications, replies through the Graph API.

- GET with `hub.mode=subscribe`, `hub.verify_token`, `hub.challenge`: echo the challenge when the
  token matches (Meta calls this once when the webhook is configured).
- POST notifications are signed: `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body with
  the app secret>`. Messages are de-duplicated by their `wamid` (Meta retries too).
- Replies: `POST {api_base}/{version}/{phone_number_id}/messages` with a Bearer token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import httpx
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import PlainTextResponse

from core.errors import AtiendeError, Forbidden, Unauthorized
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

MAX_TEXT = 4096
UNSUPPORTED = "De momento solo puedo leer mensajes de texto. Escríbame su consulta, por favor."


def signature(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(app_secret: str, body: bytes, header: str | None) -> None:
    if not app_secret:
        raise Forbidden("whatsapp is not configured: set app_secret first", {"channel": "whatsapp"},
                        error_id="channel-not-configured")
    if not header:
        raise Unauthorized("missing X-Hub-Signature-256", {"header": "X-Hub-Signature-256"})
    if not hmac.compare_digest(header.strip().lower().encode(), signature(app_secret, body).encode()):
        raise Forbidden("X-Hub-Signature-256 does not match the body", {"header": "X-Hub-Signature-256"})


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _message_text(message: dict[str, Any]) -> str | None:
    kind = message.get("type")
    if kind == "text":
        return _d(message.get("text")).get("body")
    if kind == "button":
        return _d(message.get("button")).get("text")
    if kind == "interactive":
        inter = _d(message.get("interactive"))
        for key in ("button_reply", "list_reply"):
            if key in inter:
                return _d(inter[key]).get("title")
    return None


def parse_notification(payload: Any) -> list[tuple[Contact, str | None, str]]:
    """(contact, text or None for non-text, wamid) for each message; status updates are skipped."""
    out: list[tuple[Contact, str | None, str]] = []
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        return out
    for entry in _l(payload.get("entry")):
        for change in _l(_d(entry).get("changes")):
            change = _d(change)
            value = _d(change.get("value"))
            if change.get("field") != "messages":
                continue
            phone_number_id = _d(value.get("metadata")).get("phone_number_id")
            names = {_d(c).get("wa_id"): _d(_d(c).get("profile")).get("name") for c in _l(value.get("contacts"))}
            for message in _l(value.get("messages")):
                if not isinstance(message, dict) or not message.get("from") or not message.get("id"):
                    continue
                wa_id = str(message["from"])
                name = names.get(wa_id)
                contact = Contact(channel="whatsapp", address=wa_id[:64], name=name if isinstance(name, str) else None,
                                  data={"phone_number_id": str(phone_number_id) if phone_number_id else None})
                text = _message_text(message)
                out.append((contact, text if isinstance(text, str) else None, str(message["id"])[:200]))
    return out


async def send_text(rt: Services, contact: Contact, text: str) -> dict[str, Any]:
    cfg = channels_config(rt).whatsapp
    phone_number_id = contact.data.get("phone_number_id") or cfg.phone_number_id
    if not cfg.access_token or not phone_number_id:
        raise ChannelDeliveryFailed("whatsapp has no access token or phone number id configured", {"channel": "whatsapp"})
    url = f"{cfg.api_base.rstrip('/')}/{cfg.api_version}/{phone_number_id}/messages"
    payload = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": contact.address, "type": "text",
               "text": {"preview_url": False, "body": text[:MAX_TEXT]}}
    try:
        resp = await http_client().post(url, json=payload, headers={"Authorization": f"Bearer {cfg.access_token}"},
                                        timeout=cfg.timeout_s)
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ChannelDeliveryFailed("whatsapp did not answer", {"reason": str(exc)}) from None
    if resp.status_code >= 300 or not body.get("messages"):
        raise ChannelDeliveryFailed("whatsapp refused the message", {"status": resp.status_code, "error": body.get("error")})
    return {"wamid": body["messages"][0].get("id")}


@router.get("/api/v1/channels/whatsapp/webhook", response_class=PlainTextResponse)
async def whatsapp_handshake(
    request: Request,
    mode: str | None = Query(None, alias="hub.mode"),
    verify_token: str | None = Query(None, alias="hub.verify_token"),
    challenge: str | None = Query(None, alias="hub.challenge"),
) -> PlainTextResponse:
    """Meta's subscription check: echo `hub.challenge` when `hub.verify_token` is ours."""
    cfg = channels_config(services_of(request)).whatsapp
    require_enabled(cfg.enabled, "whatsapp")
    if mode != "subscribe" or challenge is None:
        raise Forbidden("expected hub.mode=subscribe with hub.challenge", {"hub.mode": mode})
    check_secret(verify_token, cfg.verify_token, "whatsapp", "hub.verify_token")
    return PlainTextResponse(challenge[:256])


@router.post("/api/v1/channels/whatsapp/webhook")
async def whatsapp_webhook(request: Request, x_hub_signature_256: str | None = Header(None)) -> dict[str, Any]:
    """Receive a Cloud API notification; each text message goes to the assistant, replies go back by the Graph API."""
    rt = services_of(request)
    cfg = channels_config(rt).whatsapp
    require_enabled(cfg.enabled, "whatsapp")
    body = await read_body(request)
    verify_signature(cfg.app_secret, body, x_hub_signature_256)
    results: list[dict[str, Any]] = []
    for contact, text, wamid in parse_notification(parse_json(body)):
        if not await first_time(rt, "whatsapp", wamid):
            results.append({"id": wamid, "action": "duplicate"})
            continue
        answer: str | None
        ref: str | None
        if text is None or not clean_text(text, 1):
            answer, action, ref = UNSUPPORTED, "ignored", None
        else:
            reply = await assistant.handle(rt, Inbound(contact=contact, text=clean_text(text, MAX_TEXT), message_id=wamid,
                                                       threads=[contact.address]))
            answer, action, ref = reply.text, reply.action, reply.ref
        delivered = None
        if answer:
            try:
                await send_text(rt, contact, answer)
                delivered = True
            except AtiendeError as exc:  # processed already: Meta's retry must not create a second ticket
                log.warning("whatsapp reply not delivered: %s", exc.message)
                delivered = False
        results.append({"id": wamid, "action": action, "ref": ref, "delivered": delivered})
    return {"ok": True, "messages": results}
