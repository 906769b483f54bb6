"""WhatsApp Cloud API: the webhook handshake, signed notifications, replies through the Graph API.

- GET with `hub.mode=subscribe`, `hub.verify_token`, `hub.challenge`: echo the challenge when the
  token matches (Meta calls this once when the webhook is configured).
- POST notifications are signed: `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body with the app
  secret>`. The shared flow (flow.py) de-duplicates by `wamid` and refuses deliveries older than
  whatsapp.replay_window_s (7 days, as long as Meta retries; their `timestamp`).
- Messages: text, buttons and list answers are text; images, documents and videos keep their caption
  and the file; voice notes are transcribed; reactions, edits, number changes and other system notices are
  ignored quietly. Statuses (sent, delivered, read, failed with its error) are recorded on our message.
- The 24-hour window: a free-form message reaches the citizen only within 24 h of their last message.
  Outside it the configured approved template announces the hold (once per hold, not per reply), and the
  replies wait and are sent when the citizen writes again (each one's delivery then starts over). At most 20
  wait, for at most 30 days: the ones dropped are marked failed on their tickets (an hourly sweep finds those of
  citizens who never write again). A late delivery (Meta retries
  for 7 days) still reaches its ticket; the assistant's free-form answer is not sent once the window is closed.
- Replies: `POST {api_base}/{version}/{phone_number_id}/messages` with a Bearer token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import PlainTextResponse

from core.errors import Forbidden, Unauthorized
from desk_api.channels import deskport, flow
from desk_api.channels.base import (
    ChannelDeliveryFailed,
    Contact,
    channels_config,
    check_secret,
    clean_text,
    http_client,
    parse_json,
    require_enabled,
    split_text,
)
from desk_api.channels.flow import ChannelPlug, Event, InboundMessage, Notice, StatusUpdate
from desk_api.channels.media import MediaRef, Refused
from desk_api.channels.telegram import download
from desk_api.context import Services
from desk_api.deps import services_of

log = logging.getLogger(__name__)
router = APIRouter(tags=["channels"])

MAX_TEXT = 4096
QUIET_TYPES = {"reaction", "edit", "system", "unsupported", "ephemeral", "request_welcome", "revoke", "sticker"}
MEDIA_TYPES = {"image": "image", "document": "document", "video": "video", "audio": "audio"}
STATUSES = ("sent", "delivered", "read", "failed")


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


def _when(value: Any) -> datetime | None:
    try:
        ts = int(str(value))
    except ValueError:
        return None
    return datetime.fromtimestamp(ts, UTC) if ts > 0 else None


def _message_text(message: dict[str, Any]) -> str:
    kind = message.get("type")
    text: Any = None
    if kind == "text":
        text = _d(message.get("text")).get("body")
    elif kind == "button":
        text = _d(message.get("button")).get("text")
    elif kind == "interactive":
        inter = _d(message.get("interactive"))
        for key in ("button_reply", "list_reply"):
            if key in inter:
                text = _d(inter[key]).get("title")
    elif kind in MEDIA_TYPES:
        text = _d(message.get(kind)).get("caption")
    return text if isinstance(text, str) else ""


def _media(message: dict[str, Any]) -> list[MediaRef]:
    kind = message.get("type")
    if kind not in MEDIA_TYPES:
        return []
    item = _d(message.get(kind))
    if not isinstance(item.get("id"), str):
        return []
    media_kind = "voice" if kind == "audio" and item.get("voice") else MEDIA_TYPES[str(kind)]
    mime = item.get("mime_type")
    return [MediaRef(kind=media_kind, provider_id=item["id"], content_type=mime if isinstance(mime, str) else None,
                     filename=item.get("filename") if isinstance(item.get("filename"), str) else None)]


def _failure(status: dict[str, Any]) -> str | None:
    errors = [_d(e) for e in _l(status.get("errors"))]
    if not errors:
        return None
    e = errors[0]
    details = _d(e.get("error_data")).get("details") or e.get("message") or e.get("title") or ""
    reason = f"WhatsApp {e.get('code', '')}: {details}".strip()
    if e.get("code") == 131047:
        reason += " (han pasado más de 24 horas desde el último mensaje del ciudadano)"
    return reason[:500]


def parse_notification(payload: Any) -> list[Event]:
    """A Cloud API notification as the flow's events: messages, quiet notices and delivery statuses."""
    if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
        return []  # another object's notification (a signed body): nothing for us
    out: list[Event] = []
    for entry in _l(payload.get("entry")):
        for change in _l(_d(entry).get("changes")):
            change = _d(change)
            if change.get("field") != "messages":
                continue
            value = _d(change.get("value"))
            phone_number_id = _d(value.get("metadata")).get("phone_number_id")
            names = {_d(c).get("wa_id"): _d(_d(c).get("profile")).get("name") for c in _l(value.get("contacts"))}
            for message in _l(value.get("messages")):
                if not isinstance(message, dict) or not message.get("from") or not message.get("id"):
                    continue
                wamid, wa_id = str(message["id"])[:200], str(message["from"])[:64]
                name = names.get(wa_id)
                contact = Contact(channel="whatsapp", address=wa_id,
                                  name=clean_text(name, 200) or None if isinstance(name, str) else None,
                                  data={"phone_number_id": str(phone_number_id) if phone_number_id else None})
                sent_at = _when(message.get("timestamp"))
                kind = str(message.get("type") or "")
                if kind in QUIET_TYPES or not kind:
                    out.append(Notice(id=wamid, reason=f"{kind or 'unknown'} message", contact=contact, sent_at=sent_at))
                    continue
                text, media = _message_text(message), _media(message)
                if not text and not media:  # location, contacts, order...: said once, kindly
                    out.append(Notice(id=wamid, reason=f"{kind} message", contact=contact, sent_at=sent_at,
                                      answer=flow.UNSUPPORTED))
                    continue
                out.append(InboundMessage(id=wamid, contact=contact, text=clean_text(text, MAX_TEXT), media=media,
                                          sent_at=sent_at, threads=[wa_id]))
            for status in _l(value.get("statuses")):
                status = _d(status)
                if status.get("status") not in STATUSES or not status.get("id"):
                    continue
                sid = str(status["id"])[:200]
                out.append(StatusUpdate(id=f"{sid}:{status['status']}", message_ids=[sid], status=status["status"],
                                        reason=_failure(status), sent_at=_when(status.get("timestamp"))))
    return out


async def _post(rt: Services, contact: Contact, payload: dict[str, Any]) -> str:
    cfg = channels_config(rt).whatsapp
    phone_number_id = contact.data.get("phone_number_id") or cfg.phone_number_id
    if not cfg.access_token or not phone_number_id:
        raise ChannelDeliveryFailed("whatsapp has no access token or phone number id configured", {"channel": "whatsapp"})
    url = f"{cfg.api_base.rstrip('/')}/{cfg.api_version}/{phone_number_id}/messages"
    body_out = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": contact.address, **payload}
    try:
        resp = await http_client().post(url, json=body_out, headers={"Authorization": f"Bearer {cfg.access_token}"},
                                        timeout=cfg.timeout_s)
        body = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ChannelDeliveryFailed("whatsapp did not answer", {"reason": str(exc)}) from None
    if resp.status_code >= 300 or not isinstance(body, dict) or not body.get("messages"):
        error = _d(_d(body).get("error"))
        raise ChannelDeliveryFailed(f"whatsapp refused the message ({error.get('code', resp.status_code)})",
                                    {"status": resp.status_code, "error": error})
    return str(_d(_l(body["messages"])[0]).get("id"))


async def send_text(rt: Services, contact: Contact, text: str) -> dict[str, Any]:
    """Free-form text, split at 4,096 characters on paragraph or sentence boundaries."""
    ids = [await _post(rt, contact, {"type": "text", "text": {"preview_url": False, "body": piece}})
           for piece in split_text(text, MAX_TEXT)]
    return {"wamid": ids[0] if ids else None, "ids": ids}


async def window_open(rt: Services, address: str) -> bool:
    return bool(await rt.store.redis.exists(rt.store.keys.channel_window("whatsapp", address)))


async def send_template(rt: Services, contact: Contact, ref: str | None) -> str:
    cfg = channels_config(rt).whatsapp
    template: dict[str, Any] = {"name": cfg.template_name, "language": {"code": cfg.template_language}}
    if cfg.template_ref_param and ref:
        from core.refs import display_ref

        template["components"] = [{"type": "body", "parameters": [{"type": "text", "text": display_ref(ref)}]}]
    return await _post(rt, contact, {"type": "template", "template": template})


MAX_HELD = 20  # replies waiting for one citizen; older ones beyond it are dropped (marked failed)
HELD_KEEP_S = 30 * 86400  # a held reply not released by then is dropped (marked failed)
# The "template being sent" marker outlives the Graph API call (timeout_s) but not a crash during it: a node killed
# mid-send must not leave every later hold of that citizen without its template for 30 days.
SENDING_MARK_S = 120


def _template_key(rt: Services, address: str) -> str:
    """Set while a template announces the replies held for `address`: one template per hold, not one per reply."""
    return rt.store.keys.channel_pending_template("whatsapp", address)


async def _drop_held(rt: Services, items: list[Any], reason: str) -> None:
    """Held replies that will never go: failed on their tickets, so the agent knows to use another channel."""
    for raw in items:
        try:
            held = json.loads(str(raw))
        except ValueError:
            continue
        if isinstance(held, dict) and held.get("ref") and held.get("interaction"):
            await deskport.set_delivery(rt, str(held["ref"]), str(held["interaction"]), "failed", reason=reason)


def _held_at(raw: Any) -> float:
    try:
        return float(json.loads(str(raw)).get("at") or 0)
    except (ValueError, AttributeError):
        return 0.0


async def _expire_held(rt: Services, address: str) -> int:
    """Drop (and mark failed) the held replies older than HELD_KEEP_S, oldest first; keep the sweep's index on the
    oldest one left (or off it when none is). Returns how many were dropped."""
    key = rt.store.keys.channel_pending("whatsapp", address)
    index = rt.store.keys.channel_pending_index("whatsapp")
    cutoff = rt.clock.now().timestamp() - HELD_KEEP_S
    expired: list[Any] = []
    while (raw := await rt.store.redis.lindex(key, 0)) is not None:
        if _held_at(raw) >= cutoff:
            await rt.store.redis.zadd(index, {address: _held_at(raw)}, xx=True)
            break
        if await rt.store.redis.lpop(key) is not None:
            expired.append(raw)
    else:
        await rt.store.redis.zrem(index, address)
        if expired:  # the hold is over: a later one gets its own template
            await rt.store.redis.delete(_template_key(rt, address))
    await _drop_held(rt, expired, "no se entregó: el ciudadano no volvió a escribir en 30 días")
    return len(expired)


async def sweep_held(rt: Services, *, batch: int = 500) -> int:
    """Expire the held replies of citizens who never wrote again: without this a reply whose citizen stays silent
    (and gets no further reply) would show "waiting" on its ticket for good instead of failed after 30 days. Run
    periodically by one node (the composition root's leased job); returns how many replies were marked failed."""
    cutoff = rt.clock.now().timestamp() - HELD_KEEP_S
    addresses = await rt.store.redis.zrangebyscore(rt.store.keys.channel_pending_index("whatsapp"), "-inf", cutoff,
                                                   start=0, num=batch)
    dropped = 0
    for address in addresses:
        dropped += await _expire_held(rt, str(address))
    return dropped


async def send_reply(rt: Services, contact: Contact, text: str, ref: str | None, interaction_id: str | None) -> dict[str, Any]:
    """An agent's reply: free-form inside the window; outside it the reply waits (channel_pending) until the
    citizen writes again, announced by the approved template once per hold (not once per reply)."""
    if await window_open(rt, contact.address):
        return await send_text(rt, contact, text)
    await _expire_held(rt, contact.address)
    key = rt.store.keys.channel_pending("whatsapp", contact.address)
    tkey = _template_key(rt, contact.address)
    announce = bool(await rt.store.redis.set(tkey, "sending", nx=True, ex=SENDING_MARK_S))
    wamid: str | None = None
    if announce:
        try:
            wamid = await send_template(rt, contact, ref)
        except BaseException:
            await rt.store.redis.delete(tkey)  # the next reply tries the template again
            raise
        await rt.store.redis.set(tkey, wamid, ex=HELD_KEEP_S)
    held = json.dumps({"text": text, "ref": ref, "interaction": interaction_id, "at": rt.clock.now().timestamp()})
    async with rt.store.redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, held)
        pipe.expire(key, HELD_KEEP_S + 86400)
        pipe.zadd(rt.store.keys.channel_pending_index("whatsapp"), {contact.address: rt.clock.now().timestamp()},
                  nx=True)  # the oldest held reply's time: the sweep's order
        length, _, _ = await pipe.execute()
    if int(length) > MAX_HELD:  # the oldest go; their tickets say so
        dropped = [raw for _ in range(int(length) - MAX_HELD) if (raw := await rt.store.redis.lpop(key)) is not None]
        await _drop_held(rt, dropped, f"no se entregó: más de {MAX_HELD} respuestas esperaban a que el ciudadano escribiera")
    out: dict[str, Any] = {"ids": [wamid] if wamid else [], "held": True,
                           "template": channels_config(rt).whatsapp.template_name if wamid else None}
    return {"wamid": wamid, **out} if wamid else out


class WhatsappPlug(ChannelPlug):
    name = "whatsapp"

    def enabled(self, rt: Services) -> bool:
        return channels_config(rt).whatsapp.enabled

    def authenticate(self, rt: Services, request: Request, body: bytes) -> None:
        verify_signature(channels_config(rt).whatsapp.app_secret, body, request.headers.get("x-hub-signature-256"))

    def parse(self, rt: Services, body: bytes) -> list[Event]:
        return parse_notification(parse_json(body))

    def replay_window_s(self, rt: Services) -> int:
        return channels_config(rt).whatsapp.replay_window_s

    async def send(self, rt: Services, contact: Contact, text: str, ref: str | None) -> list[str]:
        # A late delivery (Meta retries for days) may come after the 24-hour window: a free-form answer would fail
        # at WhatsApp; the message is on its ticket and an agent answers with the template.
        if not await window_open(rt, contact.address):
            raise ChannelDeliveryFailed("the 24-hour window is closed: the automatic answer was not sent",
                                        {"channel": "whatsapp"})
        return list((await send_text(rt, contact, text))["ids"])

    async def before_message(self, rt: Services, message: InboundMessage) -> None:
        """The citizen wrote: the window is open for 24 h from their message; replies held meanwhile go now."""
        cfg = channels_config(rt).whatsapp
        sent = message.sent_at or rt.clock.now()
        remaining = cfg.window_s - int((rt.clock.now() - sent).total_seconds())
        if remaining <= 0:
            return
        await rt.store.redis.set(rt.store.keys.channel_window("whatsapp", message.contact.address), sent.isoformat(),
                                 ex=remaining)
        await _expire_held(rt, message.contact.address)
        key = rt.store.keys.channel_pending("whatsapp", message.contact.address)
        tkey = _template_key(rt, message.contact.address)
        template_id = await rt.store.redis.get(tkey)
        while (raw := await rt.store.redis.lpop(key)) is not None:
            held = json.loads(str(raw))
            try:
                ids = (await send_text(rt, message.contact, str(held.get("text") or "")))["ids"]
            except ChannelDeliveryFailed as exc:
                await rt.store.redis.lpush(key, str(raw))  # kept for the next message
                log.warning("held whatsapp reply not delivered: %s", exc.message)
                return
            if held.get("ref") and held.get("interaction"):
                # The reply went out only now: its delivery starts over (the template's "read" is not the reply's).
                await flow.remember_outbound(rt, "whatsapp", ids, str(held["ref"]), str(held["interaction"]),
                                             {"released": True, "held": False}, restart=True)
        await rt.store.redis.delete(tkey)  # the hold is over: a later one gets its own template
        await rt.store.redis.zrem(rt.store.keys.channel_pending_index("whatsapp"), message.contact.address)
        if template_id and template_id != "sending":  # the template's late statuses are not the replies'
            await rt.store.redis.delete(rt.store.keys.channel_outbound("whatsapp", str(template_id)))

    async def fetch(self, rt: Services, ref: MediaRef) -> tuple[bytes, str | None]:
        cfg = channels_config(rt)
        wa = cfg.whatsapp
        headers = {"Authorization": f"Bearer {wa.access_token}"}
        try:
            resp = await http_client().get(f"{wa.api_base.rstrip('/')}/{wa.api_version}/{ref.provider_id}",
                                           headers=headers, timeout=wa.timeout_s)
            info = _d(resp.json())
        except (httpx.HTTPError, ValueError):
            raise Refused("WhatsApp no dio el archivo") from None
        url = info.get("url")
        if resp.status_code != 200 or not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise Refused("WhatsApp no dio el archivo")
        size = info.get("file_size")
        if isinstance(size, int) and size > cfg.attachment_max_bytes:
            raise Refused(f"demasiado grande ({size} bytes; máximo {cfg.attachment_max_bytes})")
        content = await download(url, headers, cfg.attachment_max_bytes, wa.timeout_s)
        ctype = info.get("mime_type") if isinstance(info.get("mime_type"), str) else ref.content_type
        return content, ctype


PLUG = WhatsappPlug()


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
    """Receive a Cloud API notification: messages to the assistant, statuses onto our messages."""
    return await flow.handle_webhook(services_of(request), PLUG, request)
