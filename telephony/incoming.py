"""Requests we receive: new INVITEs (the UAS side of a call), CANCEL, ACK, OPTIONS, and everything inside a dialog
(BYE, re-INVITE and UPDATE, INFO, NOTIFY for our REFER).

Limits applied here, before a call exists: `max_calls` for the line and `max_calls_per_source`
for an untrusted address (both 503 with Retry-After), and the transaction cap (a stateless 503:
no transaction is kept for a request refused for lack of room).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable

from core import logs
from telephony import sdp
from telephony.call import Call, CallControl
from telephony.dialogs import Dialogs
from telephony.errors import CallEnded
from telephony.line import Line
from telephony.rtp import MediaParams, RtpSession
from telephony.sip.dialog import Dialog
from telephony.sip.message import Address, Request, SipUri, new_token, validate_request
from telephony.sip.transaction import T1, T2, ServerTransaction

log = logging.getLogger(__name__)

SUPPORTED: frozenset[str] = frozenset()  # no extensions required of peers; we never Require any
DIALOG_METHODS = {"BYE", "INFO", "UPDATE", "NOTIFY", "REFER", "PRACK"}
ACCEPTED_BODIES = {"application/sdp", "multipart/mixed", ""}
# X-Trace-Id continues a trace our own outgoing legs started; from anyone else it is the caller's text, which
# lands in logs, records and the contact's trace: only an id of our shape is kept.
_TRACE_ID = re.compile(r"^[0-9a-f]{16,32}$")

OnCall = Callable[[Call], Awaitable[None]]


def sdp_part(content_type: str, body: bytes, raw_ct: str) -> bytes | None:
    """The SDP in a body: the body itself, or the application/sdp part of a multipart/mixed (RFC 4475 mpart01)."""
    if not body:
        return None
    if content_type == "application/sdp" or (not content_type and body.lstrip().startswith(b"v=")):
        return body  # (a missing Content-Type on an SDP body is forgiven)
    if content_type == "multipart/mixed":
        m = re.search(r'boundary\s*=\s*"?([^";]+)"?', raw_ct, re.I)
        if not m:
            return None
        for part in body.split(b"--" + m.group(1).encode())[1:]:
            head, _, content = part.partition(b"\r\n\r\n")
            if re.search(rb"content-type\s*:\s*application/sdp", head, re.I):
                return content.rstrip(b"\r\n") + b"\r\n"
    return None


def stamp_via(req: Request, addr: tuple[str, int]) -> tuple[str, int]:
    """RFC 3261 18.2.1 / RFC 3581: mark the top Via with received/rport; return where responses go."""
    via = req.vias[0]
    if via.host != addr[0]:
        via.params["received"] = addr[0]
    reply_port = via.port or 5060
    if "rport" in via.params:
        via.params["rport"] = str(addr[1])
        reply_port = addr[1]
    for i, (k, _) in enumerate(req.headers.items):
        if k == "via":
            req.headers.items[i] = ("via", str(via))
            break
    return addr[0], reply_port


class Incoming:
    def __init__(self, line: Line, dialogs: Dialogs, control: CallControl, on_call: OnCall) -> None:
        self.line = line
        self.dialogs = dialogs
        self.control = control
        self.on_call = on_call

    # ---- dispatch -------------------------------------------------------------------------

    def on_request(self, req: Request, addr: tuple[str, int]) -> None:
        validate_request(req)
        line = self.line
        reply_to = stamp_via(req, addr)
        tx = line.layer.match_server(req)
        if req.method == "ACK":
            if tx is not None and (tx.final_status or 0) >= 300:
                line.layer.absorb(tx, req)
            else:
                self._on_ack(req)
            return
        if tx is not None:
            line.layer.absorb(tx, req)  # a retransmission: the last response again, nothing else
            return
        if not line.layer.can_create(addr[0]):
            line.send(line.response(req, 503, to_tag=req.to.tag or new_token(),
                                    extra=[("retry-after", str(line.cfg.retry_after_s))]).to_bytes(), reply_to)
            return
        if req.method == "CANCEL":
            self._on_cancel(req, reply_to, addr[0])
            return
        local_tag = req.to.tag
        tx = line.layer.create_server(req, reply_to, local_tag or new_token(), source=addr[0])
        try:
            self._on_new_request(req, tx, addr)
        except Exception:
            # Defence in depth: an INVITE server transaction only expires once it has a final response, so a
            # request whose handling raised would otherwise stay in the table for good (and, repeated, fill the
            # per-source share or the whole table: then every request gets 503, BYE included).
            log.exception("error handling %s from %s", req.method, addr[0])
            self._fail(req, tx)

    def _fail(self, req: Request, tx: ServerTransaction) -> None:
        """500 through the transaction (its final status starts its expiry); a call it had created ends."""
        call = self.dialogs.get(req.call_id, tx.to_tag)
        if call is not None and call.invite_tx is tx and call.state == "ringing":
            self.dialogs.end(call, "error", sip_status=500)
        if tx.final_status is None:
            try:
                self.line.respond(tx, 500)
            except Exception:
                self.line.layer.discard(tx)  # not even a 500 could be built: the transaction goes now, not never
                raise

    def _on_new_request(self, req: Request, tx: ServerTransaction, addr: tuple[str, int]) -> None:
        line = self.line
        local_tag = req.to.tag
        unsupported = [o for o in req.headers.get_all("require") if o.lower() not in SUPPORTED]  # Proxy-Require: not ours
        if unsupported:
            line.respond(tx, 420, extra=[("unsupported", ", ".join(unsupported))])
            return
        if req.method == "OPTIONS":
            if not line.ready():  # draining, or the node's store is away: the dispatcher sends calls elsewhere
                line.respond(tx, 503, extra=[("retry-after", str(line.cfg.retry_after_s))])
                return
            line.respond(tx, 200, extra=[("accept", "application/sdp"), ("accept-language", "es, en")])
            return
        if local_tag is not None:
            call = self.dialogs.get(req.call_id, local_tag)
            if call is None or call.state == "ended" or call.dialog is None:
                line.respond(tx, 481 if req.method in DIALOG_METHODS | {"INVITE"} else 405)
                return
            self._in_dialog(call, req, tx)
            return
        if req.method == "INVITE":
            self._on_invite(req, tx, addr)
        elif req.method in DIALOG_METHODS:
            line.respond(tx, 481)
        else:
            line.respond(tx, 405)

    def _check_body(self, req: Request, tx: ServerTransaction) -> tuple[bool, sdp.Sdp | None]:
        """(ok, offer): 415 for bodies we cannot read, 400 for broken SDP."""
        ctype = req.content_type
        if req.body and ctype not in ACCEPTED_BODIES:
            self.line.respond(tx, 415, extra=[("accept", "application/sdp")])
            return False, None
        part = sdp_part(ctype, req.body, req.headers.get("content-type") or "")
        if req.body and part is None and ctype:
            self.line.respond(tx, 415, extra=[("accept", "application/sdp")])
            return False, None
        if part is None:
            return True, None
        try:
            offer = sdp.parse(part)
            if offer.audio is not None:
                offer.audio_address()
        except sdp.SdpError as exc:
            self.line.respond(tx, 400, reason=f"Bad SDP: {exc}"[:60])
            return False, None
        return True, offer

    # ---- a new call -----------------------------------------------------------------------

    def _on_invite(self, req: Request, tx: ServerTransaction, addr: tuple[str, int]) -> None:
        line, cfg = self.line, self.line.cfg
        limit = line.limits.call_limit(addr[0])
        if (line.stopping or not line.accepting() or self.dialogs.active_calls >= cfg.max_calls
                or (limit is not None and self.dialogs.active_from(addr[0]) >= limit)):
            line.respond(tx, 503, extra=[("retry-after", str(cfg.retry_after_s))])
            return
        ruri = SipUri.parse(req.uri)
        ok, offer = self._check_body(req, tx)
        if not ok:
            return
        try:
            neg = sdp.negotiate(offer, list(cfg.codecs)) if offer is not None else None
        except sdp.SdpError as exc:
            line.respond(tx, 400, reason=f"Bad SDP: {exc}"[:60])
            return
        if offer is not None and neg is None:
            line.respond(tx, 488, extra=[("warning", f'305 {cfg.host} "Incompatible media format"')])
            return
        line.respond(tx, 100)
        frm = req.from_
        trace = req.headers.get("x-trace-id") or ""
        call = Call(self.control, call_id=req.call_id, trace_id=trace if _TRACE_ID.match(trace) else uuid.uuid4().hex[:16],
                    direction="in", caller=frm.uri.user or str(frm.uri), callee=ruri.user or req.to.uri.user or "",
                    started_at=line.clock.now())
        for k, v in req.headers.items:
            if k.startswith("x-") or k in ("diversion", "p-asserted-identity", "subject"):
                call.headers[k] = v
        call.source = addr
        call.invite_tx = tx
        call.dialog = Dialog.as_uas(req, tx.to_tag)
        call.offer = offer
        call.session_id = random.randint(1, 2**31)
        self.dialogs.add(call, tx.to_tag)
        line.respond(tx, 180)
        line.spawn(self._run_handler(call), name=f"call-{call.call_id[:12]}")

    async def _run_handler(self, call: Call) -> None:
        logs.bind(call_id=call.call_id, trace_id=call.trace_id)
        log.info("incoming call", extra=logs.fields(caller=logs.mask_number(call.caller), callee=call.callee))
        try:
            await self.on_call(call)
        except CallEnded:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call handler failed")
        finally:
            if call.state != "ended":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.hangup("handler_done"), 5.0)

    def _on_cancel(self, req: Request, reply_to: tuple[str, int], source: str) -> None:
        line = self.line
        inv = line.layer.find_invite(req)
        tx = line.layer.create_server(req, reply_to, new_token(), source=source)
        try:
            self._cancel_invite(tx, inv)
        except Exception:  # as in on_request: answered through its transaction, never left open
            log.exception("error handling CANCEL from %s", source)
            self._fail(req, tx)

    def _cancel_invite(self, tx: ServerTransaction, inv: ServerTransaction | None) -> None:
        line = self.line
        if inv is None:
            line.respond(tx, 481)
            return
        tx.to_tag = inv.to_tag
        line.respond(tx, 200)
        if inv.final_status is None:  # too late once a final response went out
            line.respond(inv, 487)
            call = self.dialogs.get(inv.request.call_id, inv.to_tag)
            if call is not None and call.invite_tx is inv:  # a CANCELled re-INVITE leaves the call up
                self.dialogs.end(call, "cancelled", sip_status=487)

    def _on_ack(self, req: Request) -> None:
        call = self.dialogs.get(req.call_id, req.to.tag or "")
        if call is None or call.acked.is_set():
            return
        call.ack_body = req.body
        if call.rtp is not None:
            call.rtp.verified = True  # the dialog is confirmed: media may flow to the address its SDP named
        call.acked.set()

    # ---- inside a dialog ------------------------------------------------------------------

    def _in_dialog(self, call: Call, req: Request, tx: ServerTransaction) -> None:
        d = call.dialog
        assert d is not None
        num, _ = req.cseq
        if d.remote_cseq is not None and num <= d.remote_cseq and req.method != "ACK":
            self.line.respond(tx, 500, reason="CSeq out of order")
            return
        d.remote_cseq = num
        m = req.method
        if m == "BYE":
            self.line.respond(tx, 200)
            self.dialogs.end(call, "remote_hangup")
        elif m in ("INVITE", "UPDATE"):
            self._reoffer(call, req, tx)
        elif m == "INFO":
            self._on_info(call, req, tx)
        elif m == "NOTIFY":
            self.line.respond(tx, 200)
            frag = re.match(rb"\s*SIP/2\.0\s+(\d{3})", req.body or b"")
            if frag and (req.headers.get("event") or "").lower().startswith("refer"):
                call.transfer_status.put_nowait(int(frag.group(1)))
        else:
            self.line.respond(tx, 405)

    def _on_info(self, call: Call, req: Request, tx: ServerTransaction) -> None:
        ctype = req.content_type
        body = req.body.decode("utf-8", "replace")
        digit: str | None = None
        if ctype == "application/dtmf-relay":
            m = re.search(r"signal\s*=\s*([0-9A-Da-d*#])", body, re.I)
            digit = m.group(1).upper() if m else None
        elif ctype == "application/dtmf":
            digit = body.strip()[:1].upper() or None
        elif req.body:
            self.line.respond(tx, 415, extra=[("accept", "application/dtmf-relay, application/dtmf")])
            return
        self.line.respond(tx, 200)
        if digit and digit in "0123456789*#ABCD":
            call.deliver_dtmf(digit)

    def _reoffer(self, call: Call, req: Request, tx: ServerTransaction) -> None:
        """re-INVITE or UPDATE: same RTP session, same sender; only its parameters change."""
        line, cfg = self.line, self.line.cfg
        if req.method == "INVITE" and not call.acked.is_set():
            line.respond(tx, 491)
            return
        contact = req.headers.get("contact")
        if contact and call.dialog is not None:
            call.dialog.remote_target = Address.parse(contact).uri
        ok, offer = self._check_body(req, tx)
        if not ok:
            return
        rtp = call.rtp
        if offer is None:
            if req.method == "UPDATE" or rtp is None:
                line.respond(tx, 200)
                return
            # re-INVITE without SDP: we offer, the answer comes in the ACK
            call.acked.clear()
            body = self._offer_body(call, rtp.local_port)
            self._send_2xx(call, tx, body, late=True)
            return
        try:
            neg = sdp.negotiate(offer, list(cfg.codecs), prefer=call.codec or None)
        except sdp.SdpError as exc:
            line.respond(tx, 400, reason=f"Bad SDP: {exc}"[:60])
            return
        if neg is None or rtp is None:
            line.respond(tx, 488, extra=[("warning", f'305 {cfg.host} "Incompatible media format"')])
            return
        changed = (neg.codec, neg.remote, neg.direction) != (call.codec, rtp.params.remote, rtp.params.direction)
        if changed:
            call.sdp_version += 1
        self.dialogs.apply(call, neg)
        body = sdp.answer(offer, neg, address=line.host, port=rtp.local_port, session_id=call.session_id,
                          version=call.sdp_version, user_agent=cfg.user_agent)
        if req.method == "UPDATE":
            line.respond(tx, 200, body=body)
        else:
            call.acked.clear()
            self._send_2xx(call, tx, body, late=False)

    def _offer_body(self, call: Call, port: int) -> bytes:
        cfg = self.line.cfg
        codecs = list(cfg.codecs)
        if call.codec in codecs:
            codecs.remove(call.codec)
            codecs.insert(0, call.codec)
        return sdp.build(address=self.line.host, port=port, codecs=list[str](codecs), session_id=call.session_id or 1,
                         version=call.sdp_version, user_agent=cfg.user_agent)

    def _send_2xx(self, call: Call, tx: ServerTransaction, body: bytes, *, late: bool) -> None:
        """200 to an INVITE, re-sent (T1, 2T1 ... T2) until the ACK arrives; no ACK in 64*T1 ends the call."""
        line = self.line
        resp = line.response(tx.request, 200, to_tag=tx.to_tag, body=body)
        line.layer.respond(tx, resp)
        data = resp.to_bytes()

        async def retransmit() -> None:
            interval = T1
            try:
                async with asyncio.timeout(64 * T1):
                    while not call.acked.is_set() and call.state != "ended":
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(call.acked.wait(), interval)
                        if not call.acked.is_set() and call.state != "ended":
                            line.send(data, tx.addr)
                        interval = min(interval * 2, T2)
            except TimeoutError:
                if call.state != "ended":
                    log.warning("no ACK for our 200: ending the call", extra=logs.fields(call_id=call.call_id))
                    await self.dialogs.send_bye(call)
                    self.dialogs.end(call, "no_ack")
                return
            if late and call.state == "up":  # a re-INVITE without SDP; the first INVITE is done in answer()
                self._late_answer(call)

        line.spawn(retransmit())

    def _late_answer(self, call: Call) -> None:
        """Our offer went in a 200; its answer is in the ACK."""
        body = call.ack_body
        neg = None
        with contextlib.suppress(sdp.SdpError):
            neg = sdp.negotiate_answer(sdp.parse(body), list(self.line.cfg.codecs)) if body else None
        if neg is None:
            if call.codec:  # re-INVITE without SDP answered with nothing usable: keep the old session
                return
            log.warning("ACK carried no usable SDP answer", extra=logs.fields(call_id=call.call_id))
            self.dialogs.hangup_soon(call, "no_common_codec")
            return
        self.dialogs.apply(call, neg)

    # ---- answering ------------------------------------------------------------------------

    async def answer(self, call: Call) -> None:
        if call.state == "up" or call.direction == "out":
            return
        if call.state != "ringing":
            raise CallEnded(call.end_reason)
        line, cfg = self.line, self.line.cfg
        tx = call.invite_tx
        assert tx is not None
        call.begin_answer()
        rtp = RtpSession(MediaParams(codec=cfg.codecs[0], pt=0, dtmf_pt=None, remote=("", 0)),
                         media_timeout=cfg.media_timeout_s, on_dtmf=call.deliver_dtmf,
                         on_timeout=lambda: self.dialogs.hangup_soon(call, "media_timeout"), verified=False)
        await rtp.open(cfg.host, cfg.rtp_port_min, cfg.rtp_port_max)
        if call.state != "answering":  # cancelled while we opened the socket
            await rtp.close()
            raise CallEnded(call.end_reason)
        call.rtp = rtp
        offer = call.offer
        if offer is not None:
            neg = sdp.negotiate(offer, list(cfg.codecs))
            assert neg is not None  # checked before ringing
            self.dialogs.apply(call, neg)
            body = sdp.answer(offer, neg, address=line.host, port=rtp.local_port, session_id=call.session_id,
                              version=call.sdp_version, user_agent=cfg.user_agent)
        else:
            body = self._offer_body(call, rtp.local_port)
        self._send_2xx(call, tx, body, late=offer is None)
        call.mark_answered(line.clock.now(), 200)
        if offer is not None:
            rtp.start()  # receiving at once; sending only once verified (ACK, or the caller's own RTP)
            call.media_ready.set()
        waiter = asyncio.ensure_future(call.acked.wait())
        ender = asyncio.ensure_future(call.ended.wait())
        await asyncio.wait([waiter, ender], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        ender.cancel()
        if call.state == "ended":
            raise CallEnded(call.end_reason)
        rtp.verified = True
        if offer is None:
            self._late_answer(call)
            if call.state == "ended" or not call.codec:
                raise CallEnded(call.end_reason or "no_common_codec")
            rtp.start()
            call.media_ready.set()
        call.mark_up()
        log.info("call answered", extra=logs.fields(codec=call.codec, rtp_port=rtp.local_port))
