"""E-mail: inbound raw RFC 5322 messages POSTed by the mail server, replies by SMTP.

The MTA (Postfix pipe, a sieve/fetchmail hook...) POSTs each message as it arrived
(`Content-Type: message/rfc822`) with the shared secret in `X-Atiende-Inbound-Token`; the shared webhook
flow (flow.py) de-duplicates by Message-ID (or the body's hash) and refuses mail older than the e-mail replay
window (its Date).

- Threading: each Message-ID we see or send is mapped to its ticket, so a citizen's answer (In-Reply-To /
  References) lands on the same ticket. A "[Ref: K7M-4PX]" in the subject counts only when the sender is
  that ticket's citizen (anyone can type a reference), and never changes where replies go.
- Automatic mail never opens or appends a ticket and is never answered: bounces (multipart/report, X-Failed-
  Recipients, MAILER-DAEMON/postmaster), feedback reports (ARF), auto-replies (Auto-Submitted, Exchange's
  X-Auto-Response-Suppress and X-MS-Exchange-Inbox-Rules-Loop), lists and loops (List-Id, X-Loop,
  Precedence bulk/junk/list), `Return-Path: <>`. A bounce of one of our replies (found by the Message-ID we
  sent) marks that reply failed on its ticket.
- The citizen's own words only: quoted history (Outlook's "De: … Enviado: … Para: … Asunto:", Gmail's
  "El … escribió:", "On … wrote:", "> " lines) is cut, HTML-only mail loses its <style>/<script>/<head>.
- Replies go to the From address; to Reply-To only when our MTA's Authentication-Results (trusted_authserv_id)
  says dmarc=pass, and only as set by the mail that opened the ticket: a later mail (anyone can forge From and
  thread on a ticket) changes the threading of replies, never where they go. Attachments are kept on the ticket.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import logging
import re
import smtplib
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.utils import formataddr, getaddresses, make_msgid, parseaddr, parsedate_to_datetime
from typing import Any

from fastapi import APIRouter, Header, Request

from core.errors import InvalidInput
from core.refs import display_ref, normalize_ref
from desk_api.channels import flow
from desk_api.channels.base import ChannelDeliveryFailed, Contact, channels_config, check_secret, one_line
from desk_api.channels.flow import ChannelPlug, Event, InboundMessage, Notice, StatusUpdate
from desk_api.channels.media import MediaRef
from desk_api.context import Services
from desk_api.deps import services_of

log = logging.getLogger(__name__)
router = APIRouter(tags=["channels"])

_MSGID_RE = re.compile(r"<[^<>\s]+>")
_SUBJECT_REF_RE = re.compile(r"\[\s*ref\.?:?\s*([0-9A-Za-z]{3}-?[0-9A-Za-z]{3})\s*\]", re.I)
_TAG_RE = re.compile(r"<[^>]+>")
_RE_PREFIX = re.compile(r"^\s*((re|rv|fw|fwd|aw)\s*:\s*)+", re.I)
# Lines after which the rest is quoted history or a signature.
_QUOTE_INTRO_RE = re.compile(
    r"^(-{2,}\s*(original message|mensaje original|forwarded message|mensaje reenviado)\s*-{2,}"
    r"|_{10,}|-- ?|sent from my .*|enviado desde mi .*)$", re.I)
_ATTRIBUTION_START = re.compile(r"^(el|on|le|am)\s", re.I)
_ATTRIBUTION_END = re.compile(r"(escribi[oó]|wrote|a écrit|schrieb)\s*:\s*$", re.I)
_HEADER_BLOCK = re.compile(r"^\*?(de|from)\s*:\*?\s", re.I)
_HEADER_NEXT = re.compile(r"^\*?(enviado|sent|fecha|date|para|to|asunto|subject|cc)\s*:", re.I)
_HTML_DROP = re.compile(r"(?is)<(head|style|script|title|xml|template)\b.*?</\1\s*>|<!--.*?-->")
_HTML_QUOTE = re.compile(r'(?is)<div[^>]+(class="gmail_quote|id="divRplyFwdMsg|id="appendonsend|class="moz-cite-prefix)'
                         r"|<blockquote\b|<hr\b[^>]*id=\"stopSpelling")
_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|mail-daemon|mailerdaemon|postmaster)@", re.I)
_DIAG_RE = re.compile(r"^Diagnostic-Code:\s*(?:smtp;\s*)?(.+(?:\r?\n[ \t]+.+)*)", re.I | re.M)
_STATUS_RE = re.compile(r"^Status:\s*([245]\.\d{1,3}\.\d{1,3})", re.I | re.M)
_HEADER_MSGID_RE = re.compile(r"^Message-ID:\s*(<[^<>\s]+>)", re.I | re.M)


def _ids(value: str | None) -> list[str]:
    return _MSGID_RE.findall(value or "")


def _content(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AttributeError):  # unknown charset or broken transfer encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def html_to_text(content: str) -> str:
    """The readable text of an HTML mail: no head, style or script text, and no quoted history."""
    content = _HTML_DROP.sub(" ", content)
    quote = _HTML_QUOTE.search(content)
    if quote:
        content = content[:quote.start()]
    content = re.sub(r"(?i)<br\s*/?>|</p\s*>|</div\s*>|</tr\s*>|</li\s*>", "\n", content)
    return html.unescape(_TAG_RE.sub(" ", content)).replace("\xa0", " ")


def strip_quoted(content: str) -> str:
    """The citizen's own lines: stop at quoted history (any client's intro) or a signature, skip "> " lines."""
    lines = content.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if _QUOTE_INTRO_RE.match(stripped):
            break
        if _ATTRIBUTION_START.match(stripped):  # "El lun, 23 nov 2026 a las 10:05, X (<x@y>) escribió:" over 1-3 lines
            joined = " ".join(s.strip() for s in lines[i:i + 3])
            if _ATTRIBUTION_END.search(stripped) or re.search(r"(escribi[oó]|wrote)\s*:", joined, re.I):
                break
        if _HEADER_BLOCK.match(stripped) and any(_HEADER_NEXT.match(s.strip()) for s in lines[i + 1:i + 4]):
            break  # Outlook: "De: … / Enviado: … / Para: … / Asunto: …"
        if stripped.startswith(">"):
            continue
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def body_text(msg: EmailMessage) -> str:
    """The message's own words: the plain part (or the HTML made plain), without the quoted history."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    content = _content(part)
    if part.get_content_subtype() == "html":
        content = html_to_text(content)
    return strip_quoted(content)


def kind_of(msg: EmailMessage, own_address: str) -> str | None:
    """"bounce", "feedback", "auto" for automatic mail (never a citizen's), None for a person's."""
    ctype = msg.get_content_type()
    report = str(msg.get_param("report-type") or "").lower()
    sender = parseaddr(str(msg.get("From") or ""))[1].lower()
    return_path = str(msg.get("Return-Path") or "").strip()
    if ctype == "multipart/report":
        return {"delivery-status": "bounce", "feedback-report": "feedback"}.get(report, "auto")
    if msg.get("X-Failed-Recipients") or _BOUNCE_SENDER.match(sender):
        return "bounce"
    auto = str(msg.get("Auto-Submitted") or "no").strip().lower()
    precedence = str(msg.get("Precedence") or "").strip().lower()
    if (auto != "no" or precedence in {"bulk", "list", "junk", "auto_reply"} or return_path == "<>"
            or sender == own_address.lower()
            or any(msg.get(h) for h in ("X-Auto-Response-Suppress", "X-MS-Exchange-Inbox-Rules-Loop", "List-Id",
                                        "List-Unsubscribe", "X-Loop", "X-Autoreply", "X-Autorespond", "Feedback-ID"))):
        return "auto"
    return None


def is_automatic(msg: EmailMessage, own_address: str) -> bool:
    return kind_of(msg, own_address) is not None


def _bounced_ids(msg: EmailMessage, raw: bytes) -> list[str]:
    """Message-IDs a bounce names as the undelivered mail: the returned message's or headers' Message-ID, then
    the bounce's In-Reply-To/References (some MTAs thread their bounce), then any Message-ID line in the text."""
    found: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                found += _ids(str(inner.get("Message-ID") or ""))
        elif ctype in ("text/rfc822-headers", "message/global-headers"):
            headers = HeaderParser().parsestr(_content(part))
            found += _ids(str(headers.get("Message-ID") or ""))
    found += _ids(str(msg.get("In-Reply-To") or "")) + _ids(str(msg.get("References") or ""))
    found += _HEADER_MSGID_RE.findall(raw.decode("utf-8", "replace"))
    own = set(_ids(str(msg.get("Message-ID") or "")))
    return [i for i in dict.fromkeys(found) if i not in own][:20]


def _bounce_reason(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    diag = _DIAG_RE.search(text)
    status = _STATUS_RE.search(text)
    parts = [f"estado {status.group(1)}" if status else "", " ".join(diag.group(1).split()) if diag else ""]
    reason = "; ".join(p for p in parts if p) or "el servidor de correo del destinatario lo devolvió"
    return f"correo devuelto: {reason}"[:500]


_DMARC_PASS = re.compile(r"(?:^|[;\s])dmarc\s*=\s*pass\b", re.I)


def dmarc_pass(msg: EmailMessage, authserv_id: str) -> bool:
    """True when the topmost Authentication-Results header (the one our MTA prepends; it strips any arriving from
    outside) is our MTA's, by its authserv-id, and says the From domain passed DMARC."""
    if not authserv_id.strip():
        return False
    headers = msg.get_all("Authentication-Results") or []
    if not headers:
        return False
    server, _, results = one_line(str(headers[0]), 2000).partition(";")
    words = server.split()
    return bool(words) and words[0].lower() == authserv_id.strip().lower() and bool(_DMARC_PASS.search(results))


def _sent_at(msg: EmailMessage) -> datetime | None:
    try:
        when = parsedate_to_datetime(str(msg.get("Date") or ""))
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _media(msg: EmailMessage) -> list[MediaRef]:
    out: list[MediaRef] = []
    for part in msg.iter_attachments():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or part.get_content_maintype() in ("multipart", "message"):
            continue
        kind = "image" if part.get_content_maintype() == "image" else \
            "audio" if part.get_content_maintype() == "audio" else "document"
        out.append(MediaRef(kind=kind, filename=one_line(part.get_filename() or "", 120) or None,
                            content_type=part.get_content_type(), size=len(payload), content=payload))
    return out


def parse_mail(raw: bytes, own_address: str, trusted_authserv_id: str = "") -> Event:
    """One raw message as the flow's event; `trusted_authserv_id` names our MTA's Authentication-Results."""
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as exc:  # the stdlib parser's rarer failures on malformed input: the sender's fault
        raise InvalidInput("the message cannot be parsed", {"reason": str(exc)[:200]}) from None
    if not isinstance(msg, EmailMessage):  # policy.default always builds EmailMessage; keeps mypy honest
        raise InvalidInput("not an e-mail message")
    try:
        return _event(msg, raw, own_address, trusted_authserv_id)
    except InvalidInput:
        raise
    except (ValueError, TypeError, LookupError, AttributeError) as exc:  # malformed headers the parser let through
        raise InvalidInput("the message cannot be parsed", {"reason": str(exc)[:200]}) from None


def _event(msg: EmailMessage, raw: bytes, own_address: str, trusted_authserv_id: str) -> Event:
    name, address = parseaddr(one_line(str(msg.get("From") or ""), 500))
    message_id = (_ids(str(msg.get("Message-ID") or "")) or [f"<{hashlib.sha256(raw).hexdigest()[:40]}@inbound.invalid>"])[0]
    sent_at = _sent_at(msg)
    kind = kind_of(msg, own_address)
    if kind == "bounce":
        ids = _bounced_ids(msg, raw)
        if ids:
            return StatusUpdate(id=message_id, message_ids=ids, status="failed", reason=_bounce_reason(raw), sent_at=sent_at)
        return Notice(id=message_id, reason="bounce of an unknown message", sent_at=sent_at)
    if kind is not None:
        return Notice(id=message_id, reason=f"automatic message ({kind})", sent_at=sent_at)
    if not address or "@" not in address:
        raise InvalidInput("the message has no valid From address", {"from": str(msg.get("From") or "")[:200]})
    subject = one_line(str(msg.get("Subject") or ""), 300)
    text = body_text(msg) or subject
    media = _media(msg)
    if not text and not media:
        raise InvalidInput("the message has neither text nor subject")
    hint_match = _SUBJECT_REF_RE.search(subject)
    in_reply_to = _ids(str(msg.get("In-Reply-To") or ""))
    references = _ids(str(msg.get("References") or ""))
    # Reply-To is as forgeable as From: honoured only when our own MTA vouches for the From domain (DMARC).
    reply_to = [a for _, a in getaddresses([one_line(str(msg.get("Reply-To") or ""), 500)]) if "@" in a] \
        if dmarc_pass(msg, trusted_authserv_id) else []
    contact = Contact(channel="email", address=address.lower()[:254], name=one_line(name, 200) or None,
                      data={"subject": subject, "last_message_id": message_id,
                            "references": [*references, message_id][-20:],
                            **({"reply_to": reply_to[0].lower()[:254]} if reply_to else {})})
    threads = list(dict.fromkeys([message_id, *in_reply_to, *reversed(references)]))
    return InboundMessage(id=message_id, contact=contact, text=text[:20000], media=media, sent_at=sent_at,
                          threads=threads, ref_hint=normalize_ref(hint_match.group(1)) if hint_match else None)


def build_reply(rt: Services, contact: Contact, text: str, ref: str | None, automatic: bool = False) -> EmailMessage:
    cfg = channels_config(rt).email
    out = EmailMessage()
    subject = _RE_PREFIX.sub("", one_line(str(contact.data.get("subject") or ""), 300)).strip() or "Su consulta"
    if ref and not _SUBJECT_REF_RE.search(subject):
        subject = f"{subject} [Ref: {display_ref(ref)}]"
    out["Subject"] = f"Re: {subject}"
    out["From"] = formataddr((cfg.display_name, cfg.address))
    to = str(contact.data.get("reply_to") or contact.address)
    out["To"] = formataddr((one_line(contact.name or "", 200) if to == contact.address else "", to))
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
    return {"message_id": message_id, "ids": [message_id]}


class EmailPlug(ChannelPlug):
    name = "email"

    def enabled(self, rt: Services) -> bool:
        return channels_config(rt).email.enabled

    def max_body(self, rt: Services) -> int:
        return channels_config(rt).email.max_bytes

    def replay_window_s(self, rt: Services) -> int:
        return channels_config(rt).email.replay_window_s

    def authenticate(self, rt: Services, request: Request, body: bytes) -> None:
        check_secret(request.headers.get("x-atiende-inbound-token"), channels_config(rt).email.inbound_token, "email",
                     "X-Atiende-Inbound-Token")

    def parse(self, rt: Services, body: bytes) -> list[Event]:
        cfg = channels_config(rt).email
        return [parse_mail(body, cfg.address, cfg.trusted_authserv_id)]

    async def send(self, rt: Services, contact: Contact, text: str, ref: str | None) -> list[str]:
        return list((await send_reply(rt, contact, text, ref, automatic=True))["ids"])


PLUG = EmailPlug()


@router.post("/api/v1/channels/email/inbound")
async def email_inbound(request: Request, x_atiende_inbound_token: str | None = Header(None)) -> dict[str, Any]:
    """Take one raw RFC 5322 message (body of the request), thread it, answer it by SMTP."""
    out = await flow.handle_webhook(services_of(request), PLUG, request)
    out["message_id"] = out["results"][0].get("id") if out.get("results") else None
    return out
