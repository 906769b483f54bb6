"""E-mail: inbound raw RFC 5322 messages POSTed by the mail server, replies by SMTP.

The MTA (Postfix pipe, a sieve/fetchmail hook...) POSTs each message as it arrived
(`Content-Type: message/rfc822`) with the shared secret in `X-Atiende-Inbound-Token`; the shared webhook
flow (flow.py) de-duplicates by Message-ID (or the body's hash); mail is never refused for its Date.

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
from email.message import EmailMessage, Message
from email.parser import BytesParser, HeaderParser
from email.policy import EmailPolicy
from email.utils import formataddr, getaddresses, make_msgid, parseaddr, parsedate_to_datetime
from typing import Any

from fastapi import APIRouter, Header, Request

from core.errors import InvalidInput, RateLimited
from core.refs import display_ref, normalize_ref
from desk_api.channels import flow
from desk_api.channels.base import ChannelDeliveryFailed, Contact, channels_config, check_secret, one_line
from desk_api.channels.deskport import rate_hit
from desk_api.channels.flow import ChannelPlug, Event, InboundMessage, Notice, StatusUpdate
from desk_api.channels.media import MediaRef
from desk_api.context import Services
from desk_api.deps import services_of

log = logging.getLogger(__name__)
router = APIRouter(tags=["channels"])

_MSGID_RE = re.compile(r"<[^<>\s]+>")
_SUBJECT_REF_RE = re.compile(r"\[\s*ref\.?:?\s*([0-9A-Za-z]{3}-?[0-9A-Za-z]{3})\s*\]", re.I)
# No "<" inside a tag: "<a<a<a..." is matched in linear time, not retried from every "<" (quadratic).
_TAG_RE = re.compile(r"<[^<>]*>")
_RE_PREFIX = re.compile(r"^\s*((re|rv|fw|fwd|aw)\s*:\s*)+", re.I)
# Lines after which the rest is quoted history or a signature.
_QUOTE_INTRO_RE = re.compile(
    r"^(-{2,}\s*(original message|mensaje original|forwarded message|mensaje reenviado)\s*-{2,}"
    r"|_{10,}|-- ?|sent from my .*|enviado desde mi .*)$", re.I)
_ATTRIBUTION_START = re.compile(r"^(el|on|le|am)\s", re.I)
_ATTRIBUTION_END = re.compile(r"(escribi[oó]|wrote|a écrit|schrieb)\s*:\s*$", re.I)
_HEADER_BLOCK = re.compile(r"^\*?(de|from)\s*:\*?\s", re.I)
_HEADER_NEXT = re.compile(r"^\*?(enviado|sent|fecha|date|para|to|asunto|subject|cc)\s*:", re.I)
# Where a dropped element opens; its end is found with str.find (a lazy ".*?</style>" regex rescans the rest of the
# text from each unclosed "<style", quadratic on "<style <style <style ...").
_HTML_DROP_OPEN = re.compile(r"(?i)<(head|style|script|title|xml|template)\b|<!--")
_HTML_QUOTE = re.compile(r'(?is)<div[^<>]*?(class="gmail_quote|id="divRplyFwdMsg|id="appendonsend|class="moz-cite-prefix)'
                         r"|<blockquote\b|<hr\b[^<>]*id=\"stopSpelling")
_HTML_LINE_END = re.compile(r"(?i)<br\s*/?>|</p\s*>|</div\s*>|</tr\s*>|</li\s*>")
MAX_HTML_CHARS = 200_000  # a citizen's words fit many times over; the rest of a huge HTML part is not read
MAX_HEADER_BYTES = 64 * 1024  # the whole header block; real mail has a few kB (long Received/DKIM chains ~20 kB)
# One header as parsed: the stdlib's address and encoded-word parsers are superlinear (an address header of 4,000
# characters takes a fifth of a second; a real From or Reply-To is under 300).
MAX_HEADER_CHARS = 4000
MAX_ADDRESS_HEADER_CHARS = 1000
_ADDRESS_HEADERS = {"from", "reply-to", "to", "cc", "bcc", "sender", "resent-from", "resent-to", "resent-cc",
                    "resent-bcc", "resent-sender"}
MAX_PARTS = 50  # MIME parts in one message (each costs the parser; a citizen attaches a handful of files)
MAX_REFERENCES = 20  # Message-IDs kept from References (the most recent), each at most MAX_MSGID_CHARS
MAX_MSGID_CHARS = 250
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


def _drop_elements(content: str) -> str:
    """The HTML without <head>, <style>, <script>, <title>, <xml>, <template> elements and comments; one pass."""
    out: list[str] = []
    low = content.lower()
    pos = 0
    while (m := _HTML_DROP_OPEN.search(content, pos)) is not None:
        out.append(content[pos:m.start()])
        closer = "-->" if m.group(0) == "<!--" else f"</{m.group(1).lower()}"
        end = low.find(closer, m.end())
        if end < 0:  # never closed: the rest is inside it
            pos = len(content)
            break
        gt = content.find(">", end)
        pos = len(content) if gt < 0 else gt + 1
        out.append(" ")
    out.append(content[pos:])
    return "".join(out)


def html_to_text(content: str) -> str:
    """The readable text of an HTML mail: no head, style or script text, and no quoted history."""
    content = _drop_elements(content[:MAX_HTML_CHARS])
    quote = _HTML_QUOTE.search(content)
    if quote:
        content = content[:quote.start()]
    content = _HTML_LINE_END.sub("\n", content)
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


class _BoundedPolicy(EmailPolicy):
    """policy.default, but a header is parsed from at most MAX_HEADER_CHARS of its value: the stdlib's address
    and encoded-word parsers take seconds on one 60 kB From or Subject. References keeps its end (the most
    recent ids)."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        limit = MAX_ADDRESS_HEADER_CHARS if name.lower() in _ADDRESS_HEADERS else MAX_HEADER_CHARS
        if isinstance(value, str) and len(value) > limit:
            value = value[-limit:] if name.lower() == "references" else value[:limit]
        return super().header_fetch_parse(name, value)


_POLICY = _BoundedPolicy()
_BOUNDARY_RE = re.compile(rb'(?i)\bboundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))')
_DELIMITER_RE = re.compile(rb"(?m)^--([^\r\n]*)")


def _header_end(raw: bytes) -> int:
    """Where the header block ends (its blank line), or -1 when there is none in the first MAX_HEADER_BYTES."""
    ends = [i for i in (raw.find(b"\n\n", 0, MAX_HEADER_BYTES + 2), raw.find(b"\n\r\n", 0, MAX_HEADER_BYTES + 3))
            if i >= 0]
    return min(ends) if ends else (-1 if len(raw) > MAX_HEADER_BYTES else len(raw))


def count_parts(raw: bytes) -> int:
    """How many MIME parts the message opens, counted on the raw bytes (the boundary delimiter lines), before
    the parser spends its time on them."""
    boundaries: set[bytes] = set()
    for quoted, bare in _BOUNDARY_RE.findall(raw):
        boundaries.add(quoted or bare)
        if len(boundaries) > MAX_PARTS:  # each boundary is a multipart with at least one part
            return len(boundaries)
    if not boundaries:
        return 1
    count = 1
    for m in _DELIMITER_RE.finditer(raw):
        line = m.group(1).rstrip(b" \t")
        if line in boundaries:  # "--boundary" opens a part; "--boundary--" closes the multipart
            count += 1
    return count


def check_size(raw: bytes) -> None:
    """Refuse what would keep the parser busy for seconds: a huge header block, too many MIME parts."""
    end = _header_end(raw)
    if end < 0 or end > MAX_HEADER_BYTES:
        raise InvalidInput("the message's header block is too large", {"max_header_bytes": MAX_HEADER_BYTES},
                           error_id="mail-too-complex")
    parts = count_parts(raw)
    if parts > MAX_PARTS:
        raise InvalidInput("the message has too many MIME parts", {"parts": parts, "max_parts": MAX_PARTS},
                           error_id="mail-too-complex")


def parse_mail(raw: bytes, own_address: str, trusted_authserv_id: str = "") -> Event:
    """One raw message as the flow's event; `trusted_authserv_id` names our MTA's Authentication-Results.

    Blocking and CPU-bound (the stdlib parser): the flow runs it in a worker thread; check_size bounds its work."""
    check_size(raw)
    try:
        msg = BytesParser(policy=_POLICY).parsebytes(raw)
    except Exception as exc:  # the stdlib parser's rarer failures on malformed input: the sender's fault
        raise InvalidInput("the message cannot be parsed", {"reason": str(exc)[:200]}) from None
    if not isinstance(msg, EmailMessage):  # the policy always builds EmailMessage; keeps mypy honest
        raise InvalidInput("not an e-mail message")
    try:
        return _event(msg, raw, own_address, trusted_authserv_id)
    except InvalidInput:
        raise
    except (ValueError, TypeError, LookupError, AttributeError) as exc:  # malformed headers the parser let through
        raise InvalidInput("the message cannot be parsed", {"reason": str(exc)[:200]}) from None
    except RecursionError:  # e.g. "From: a@b.es ((((((...": the header parser recurses per comment level
        raise InvalidInput("the message cannot be parsed", {"reason": "nested too deeply"}) from None


def _event(msg: EmailMessage, raw: bytes, own_address: str, trusted_authserv_id: str) -> Event:
    name, address = parseaddr(one_line(str(msg.get("From") or ""), 500))
    own_ids = [i for i in _ids(str(msg.get("Message-ID") or "")) if len(i) <= MAX_MSGID_CHARS]
    message_id = (own_ids or [f"<{hashlib.sha256(raw).hexdigest()[:40]}@inbound.invalid>"])[0]
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
    # Each id is a thread lookup and is repeated in every reply's References: the most recent few, of sane length.
    in_reply_to = [i for i in _ids(str(msg.get("In-Reply-To") or "")) if len(i) <= MAX_MSGID_CHARS][:1]
    references = [i for i in _ids(str(msg.get("References") or "")) if len(i) <= MAX_MSGID_CHARS][-MAX_REFERENCES:]
    # Reply-To is as forgeable as From: honoured only when our own MTA vouches for the From domain (DMARC).
    reply_to = [a for _, a in getaddresses([one_line(str(msg.get("Reply-To") or ""), 500)]) if "@" in a] \
        if dmarc_pass(msg, trusted_authserv_id) else []
    contact = Contact(channel="email", address=address.lower()[:254], name=one_line(name, 200) or None,
                      data={"subject": subject, "last_message_id": message_id,
                            "references": [*references, message_id][-MAX_REFERENCES:],
                            **({"reply_to": reply_to[0].lower()[:254]} if reply_to else {})})
    threads = list(dict.fromkeys([message_id, *in_reply_to, *reversed(references)]))
    return InboundMessage(id=message_id, contact=contact, text=text[:20000], media=media, sent_at=sent_at,
                          threads=threads, ref_hint=normalize_ref(hint_match.group(1)) if hint_match else None)


AUTO_SUBJECT = "Su consulta"


def build_reply(rt: Services, contact: Contact, text: str, ref: str | None, automatic: bool = False) -> EmailMessage:
    """An agent's reply (Re: the citizen's subject, to Reply-To when trusted) or an automatic answer: to the From
    address only, under a fixed subject and without the sender's display name, so a forged mail cannot make the
    service carry its words to a third party (the subject and name are the sender's text)."""
    cfg = channels_config(rt).email
    out = EmailMessage()
    if automatic:
        out["Subject"] = f"{AUTO_SUBJECT} [Ref: {display_ref(ref)}]" if ref else AUTO_SUBJECT
        out["From"] = formataddr((cfg.display_name, cfg.address))
        out["To"] = contact.address
    else:
        subject = _RE_PREFIX.sub("", one_line(str(contact.data.get("subject") or ""), 300)).strip() or AUTO_SUBJECT
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

    retry_unanswered = True  # the MTA retries for days: an answer lost with no ticket comes back, not vanishes
    # The Date header is the sender's clock and a queue may hold genuine mail for days: the Message-ID's
    # de-duplication (remembered replay_window_s + 1 day) is what stops replays.
    refuse_stale = False

    def retry_after_failure(self, exc: Exception) -> bool:
        return not isinstance(exc, AutoReplyLimited)

    def authenticate(self, rt: Services, request: Request, body: bytes) -> None:
        check_secret(request.headers.get("x-atiende-inbound-token"), channels_config(rt).email.inbound_token, "email",
                     "X-Atiende-Inbound-Token")

    def parse(self, rt: Services, body: bytes) -> list[Event]:
        cfg = channels_config(rt).email
        return [parse_mail(body, cfg.address, cfg.trusted_authserv_id)]

    async def send(self, rt: Services, contact: Contact, text: str, ref: str | None) -> list[str]:
        cfg = channels_config(rt).email
        try:  # one ceiling for all senders: a forged From names any address, so per-sender limits do not hold
            await rate_hit(rt, "email:auto-replies", cfg.auto_reply_limit, cfg.auto_reply_window_s)
        except RateLimited:
            raise AutoReplyLimited("too many automatic e-mail answers in this window; this one was not sent",
                                   {"limit": cfg.auto_reply_limit, "window_s": cfg.auto_reply_window_s}) from None
        return list((await send_reply(rt, contact, text, ref, automatic=True))["ids"])


class AutoReplyLimited(ChannelDeliveryFailed):
    """The automatic answer was not sent: the global ceiling of automatic e-mails is reached (not worth a retry)."""

    status_code = 429
    error_id = "auto-reply-limited"


PLUG = EmailPlug()


@router.post("/api/v1/channels/email/inbound")
async def email_inbound(request: Request, x_atiende_inbound_token: str | None = Header(None)) -> dict[str, Any]:
    """Take one raw RFC 5322 message (body of the request), thread it, answer it by SMTP."""
    out = await flow.handle_webhook(services_of(request), PLUG, request)
    out["message_id"] = out["results"][0].get("id") if out.get("results") else None
    return out
