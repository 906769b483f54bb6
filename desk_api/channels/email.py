"""E-mail: inbound raw RFC 5322 messages POSTed by the mail server, replies by SMTP.

The MTA (Postfix pipe, a sieve/fetchmail hook...) POSTs each message as it arrived
(`Content-Type: message/rfc822`) with the shared secret in `X-Atiende-Inbound-Token`.
Threading: each Message-ID we see or send is mapped to its ticket, so a citizen's answer
(In-Reply-To / References) lands on the same ticket; a "[Ref: K7M-4PX]" in the subject works
too when the citizen's mail client drops those headers. Automatic replies (Auto-Submitted,
Precedence: bulk/list/junk, our own address) are never answered, to avoid mail loops.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import smtplib
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formataddr, make_msgid, parseaddr
from typing import Any

from fastapi import APIRouter, Header, Request

from core.errors import InvalidInput
from core.refs import display_ref, normalize_ref
from desk_api.channels import assistant
from desk_api.channels.base import (
    ChannelDeliveryFailed,
    Contact,
    Inbound,
    channels_config,
    check_secret,
    first_time,
    read_body,
    require_enabled,
)
from desk_api.context import Services
from desk_api.deps import services_of

log = logging.getLogger(__name__)
router = APIRouter(tags=["channels"])

_MSGID_RE = re.compile(r"<[^<>\s]+>")
_SUBJECT_REF_RE = re.compile(r"\[\s*ref\.?:?\s*([0-9A-Za-z]{3}-?[0-9A-Za-z]{3})\s*\]", re.I)
_QUOTE_INTRO_RE = re.compile(
    r"^(el .+ escribi[oó]|on .+ wrote|-----\s*original message|-----\s*mensaje original).*:?\s*$", re.I)
_TAG_RE = re.compile(r"<[^>]+>")
_RE_PREFIX = re.compile(r"^\s*((re|rv|fw|fwd|aw)\s*:\s*)+", re.I)


def _ids(value: str | None) -> list[str]:
    return _MSGID_RE.findall(value or "")


def body_text(msg: EmailMessage) -> str:
    """The message's own words: the plain part (or the HTML made plain), without the quoted history."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset or broken transfer encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        content = html.unescape(_TAG_RE.sub(" ", re.sub(r"(?i)<br\s*/?>|</p>", "\n", content)))
    lines: list[str] = []
    for line in content.splitlines():
        stripped = line.strip()
        if _QUOTE_INTRO_RE.match(stripped) or stripped == "--":  # quoted history or signature follows
            break
        if line.startswith(">"):
            continue
        lines.append(line)
    return "\n".join(lines).strip()


def is_automatic(msg: EmailMessage, own_address: str) -> bool:
    auto = (msg.get("Auto-Submitted") or "no").strip().lower()
    precedence = (msg.get("Precedence") or "").strip().lower()
    sender = parseaddr(str(msg.get("From") or ""))[1].lower()
    return auto != "no" or precedence in {"bulk", "list", "junk", "auto_reply"} or sender == own_address.lower() \
        or bool(msg.get("X-Autoreply")) or bool(msg.get("X-Autorespond"))


def parse_inbound(raw: bytes) -> tuple[EmailMessage, Inbound, str | None]:
    """(message, what the assistant needs, a reference named in the subject)."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    if not isinstance(msg, EmailMessage):  # policy.default always builds EmailMessage; keeps mypy honest
        raise InvalidInput("not an e-mail message")
    name, address = parseaddr(str(msg.get("From") or ""))
    if not address or "@" not in address:
        raise InvalidInput("the message has no valid From address", {"from": str(msg.get("From") or "")})
    message_id = (_ids(str(msg.get("Message-ID") or "")) or [make_msgid(domain="inbound.invalid")])[0]
    in_reply_to = _ids(str(msg.get("In-Reply-To") or ""))
    references = _ids(str(msg.get("References") or ""))
    subject = str(msg.get("Subject") or "").strip()
    text = body_text(msg) or subject
    if not text:
        raise InvalidInput("the message has neither text nor subject")
    hint_match = _SUBJECT_REF_RE.search(subject)
    hint = normalize_ref(hint_match.group(1)) if hint_match else None
    contact = Contact(channel="email", address=address.lower(), name=name or None,
                      data={"subject": subject, "last_message_id": message_id, "references": [*references, message_id][-20:]})
    threads = [message_id, *in_reply_to, *reversed(references)]
    return msg, Inbound(contact=contact, text=text[:20000], message_id=message_id, threads=list(dict.fromkeys(threads))), hint


def build_reply(rt: Services, contact: Contact, text: str, ref: str | None, automatic: bool = False) -> EmailMessage:
    cfg = channels_config(rt).email
    out = EmailMessage()
    subject = _RE_PREFIX.sub("", str(contact.data.get("subject") or "")).strip() or "Su consulta"
    if ref and not _SUBJECT_REF_RE.search(subject):
        subject = f"{subject} [Ref: {display_ref(ref)}]"
    out["Subject"] = f"Re: {subject}"
    out["From"] = formataddr((cfg.display_name, cfg.address))
    out["To"] = formataddr((contact.name or "", contact.address))
    out["Message-ID"] = make_msgid(domain=cfg.address.rpartition("@")[2] or "localhost")
    out["Date"] = rt.clock.now().strftime("%a, %d %b %Y %H:%M:%S %z")
    if automatic:  # RFC 3834: the assistant's answers are automatic, an agent's are not
        out["Auto-Submitted"] = "auto-replied"
    last = contact.data.get("last_message_id")
    if last:
        out["In-Reply-To"] = str(last)
        refs = [str(r) for r in contact.data.get("references") or []]
        out["References"] = " ".join(dict.fromkeys([*refs, str(last)]))
    out.set_content(text)
    return out


def _smtp_send(rt: Services, message: EmailMessage) -> None:
    cfg = channels_config(rt).email
    with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s) as smtp:
        if cfg.smtp_starttls:
            smtp.starttls()
        if cfg.smtp_user:
            smtp.login(cfg.smtp_user, cfg.smtp_password)
        smtp.send_message(message)


async def send_reply(rt: Services, contact: Contact, text: str, ref: str | None, automatic: bool = False) -> dict[str, Any]:
    message = build_reply(rt, contact, text, ref, automatic)
    try:
        await asyncio.to_thread(_smtp_send, rt, message)  # smtplib blocks
    except (OSError, smtplib.SMTPException) as exc:
        raise ChannelDeliveryFailed("the SMTP server did not take the message", {"reason": str(exc)}) from None
    message_id = str(message["Message-ID"])
    if ref:  # the citizen's answer to this mail threads back to the ticket
        await rt.store.redis.set(rt.store.keys.thread("email", message_id), ref)
    return {"message_id": message_id}


@router.post("/api/v1/channels/email/inbound")
async def email_inbound(request: Request, x_atiende_inbound_token: str | None = Header(None)) -> dict[str, Any]:
    """Take one raw RFC 5322 message (body of the request), thread it, answer it by SMTP."""
    rt = services_of(request)
    cfg = channels_config(rt).email
    require_enabled(cfg.enabled, "email")
    check_secret(x_atiende_inbound_token, cfg.inbound_token, "email", "X-Atiende-Inbound-Token")
    raw = await read_body(request, cfg.max_bytes)
    try:
        msg, inbound, hint = parse_inbound(raw)
    except InvalidInput:
        raise
    except Exception as exc:  # the stdlib parser's rarer failures on malformed headers: the sender's fault
        raise InvalidInput("the message cannot be parsed", {"reason": str(exc)[:200]}) from None
    if not await first_time(rt, "email", inbound.message_id or ""):
        return {"ok": True, "action": "duplicate", "message_id": inbound.message_id}
    if is_automatic(msg, cfg.address):
        return {"ok": True, "action": "ignored", "reason": "automatic message", "message_id": inbound.message_id}
    reply = await assistant.handle(rt, inbound, ref_hint=hint)
    sent: dict[str, Any] | None = None
    if reply.text:
        try:
            sent = await send_reply(rt, inbound.contact, reply.text, reply.ref, automatic=True)
        except ChannelDeliveryFailed as exc:  # processed already: a retry by the MTA must not open a second ticket
            log.warning("e-mail reply not delivered: %s", exc.message)
    return {"ok": True, "action": reply.action, "ref": reply.ref, "message_id": inbound.message_id,
            "delivered": (sent is not None) if reply.text else None, "reply_message_id": sent["message_id"] if sent else None}
