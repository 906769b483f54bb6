"""SipEndpoint: the SIP user agent of the line, on one UDP socket, asyncio only.

Start one:

    from config.telephony import SipConfig
    from telephony.endpoint import SipEndpoint

    async def on_call(call):            # a ringing inbound telephony.call.Call
        await call.answer()
        await call.play(frames)
        await call.hangup()

    ep = SipEndpoint(SipConfig(host="127.0.0.1", port=5070, rtp_port_min=30000, rtp_port_max=30999), on_call)
    await ep.start()                     # binds UDP, starts REGISTER refresh for cfg.registrations
    call = await ep.dial("sip:600@127.0.0.1:5080")   # outbound (digest with cfg.trunk credentials)
    await ep.stop()                      # BYE to every call, un-REGISTER, close

What it does (RFC 3261 unless noted): 100 Trying and 180 Ringing, then `on_call`; early and
late offer; 2xx retransmitted until ACK; CANCEL -> 200 + 487 and the call never starts;
retransmissions absorbed; OPTIONS 200 with Allow/Accept; re-INVITE/UPDATE update the same
media session; INFO dtmf-relay; REFER sent by `call.transfer()` (REFER received: 405);
NOTIFY for our REFER; 481 unknown dialog; 405 unsupported method; 415 other bodies; 416 URI
scheme; 420 unknown Require; 488 no common codec; 503 + Retry-After at max_calls; 400 for
malformed requests; responses go where the top Via says (received/rport, RFC 3581).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import re
import socket
import sys
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from config.telephony import Registration, SipConfig
from core import logs
from core.clock import Clock, SystemClock
from telephony import sdp
from telephony.call import Call, CallRecord
from telephony.errors import CallEnded, DialFailed
from telephony.rtp import MediaParams, RtpSession
from telephony.sip import digest
from telephony.sip.dialog import Dialog
from telephony.sip.message import (
    REASONS,
    Address,
    Headers,
    Request,
    Response,
    SipParseError,
    SipUri,
    Via,
    is_num,
    new_branch,
    new_token,
    parse,
    validate_request,
)
from telephony.sip.transaction import T1, T2, ServerTransaction, TransactionLayer

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY"
SUPPORTED: frozenset[str] = frozenset()  # no extensions required of peers; we never Require any
DIALOG_METHODS = {"BYE", "INFO", "UPDATE", "NOTIFY", "REFER", "PRACK"}
ACCEPTED_BODIES = {"application/sdp", "multipart/mixed", ""}

OnCall = Callable[[Call], Awaitable[None]]


def _sdp_part(content_type: str, body: bytes, raw_ct: str) -> bytes | None:
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


class SipEndpoint(asyncio.DatagramProtocol):
    def __init__(self, cfg: SipConfig, on_call: OnCall, clock: Clock | None = None,
                 on_call_ended: Callable[[CallRecord], Any] | None = None) -> None:
        self.cfg = cfg
        self.on_call = on_call
        self.on_call_ended = on_call_ended
        self.clock = clock or SystemClock()
        self.layer = TransactionLayer(self._send)
        self.calls: dict[tuple[str, str], Call] = {}  # (Call-ID, local tag) -> call
        self.records: deque[CallRecord] = deque(maxlen=1000)  # recent ended calls, newest last
        self.registrations: dict[str, dict[str, Any]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reg_tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.port = cfg.port

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self.calls.values() if c.state != "ended")

    @property
    def host(self) -> str:
        return self.cfg.public_host or self.cfg.host

    def _hostport(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    @property
    def contact(self) -> str:
        return f"<sip:{self.cfg.contact_user}@{self._hostport()}>"

    @property
    def via(self) -> str:
        return f"SIP/2.0/UDP {self._hostport()}"

    async def start(self) -> None:
        if self.cfg.gil_switch_interval_ms:
            sys.setswitchinterval(self.cfg.gil_switch_interval_ms / 1000)
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.cfg.host, self.cfg.port),
                                                           family=family)
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        log.info("SIP endpoint listening", extra=logs.fields(sip=f"udp:{self._hostport()}"))
        for reg in self.cfg.registrations:
            self._reg_tasks.append(asyncio.create_task(self._register_loop(reg), name=f"register-{reg.user}"))

    async def stop(self, grace_s: float = 5.0) -> None:
        self._stopping = True
        calls = [c for c in self.calls.values() if c.state != "ended"]
        if calls:
            await asyncio.wait([asyncio.create_task(c.hangup("shutdown")) for c in calls], timeout=grace_s)
        pending = [c.final for c in self.layer.client.values() if not c.final.done()]
        if pending:  # BYEs just sent: give their answers a moment
            await asyncio.wait(pending, timeout=min(1.0, grace_s))
        for t in self._reg_tasks:
            t.cancel()
        if self._reg_tasks:
            await asyncio.wait(self._reg_tasks, timeout=1.0)
        unreg = [asyncio.create_task(self._register_once(r, expires=0)) for r in self.cfg.registrations
                 if self.registrations.get(self._aor(r), {}).get("registered")]
        for r in self.cfg.registrations:
            self.registrations.get(self._aor(r), {})["registered"] = False
        if unreg:
            await asyncio.wait(unreg, timeout=min(2.0, grace_s))
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        self.layer.close()
        if self._transport is not None:
            self._transport.close()

    def _spawn(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- transport ------------------------------------------------------------------------

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        addr = (addr[0], addr[1])
        if not data.strip(b"\r\n\x00 "):
            return  # keep-alive (RFC 5626 CRLF ping) or junk
        try:
            msg = parse(data)
        except SipParseError as exc:
            if exc.is_request and exc.headers is not None and (
                    "via" in exc.headers or "call-id" in exc.headers or "cseq" in exc.headers):
                self._reply_raw(exc.headers, exc.status, exc.reason, addr)  # noise without any of them: dropped
            log.debug("dropped malformed message from %s: %s", addr, exc.reason)
            return
        try:
            if isinstance(msg, Response):
                self.layer.on_response(msg)
            else:
                self._on_request(msg, addr)
        except SipParseError as exc:
            if isinstance(msg, Request) and msg.method != "ACK":
                self._reply_raw(msg.headers, exc.status, exc.reason, addr)
        except Exception:
            log.exception("error handling a SIP message from %s", addr)
            if isinstance(msg, Request) and msg.method != "ACK":
                self._reply_raw(msg.headers, 500, "Server Internal Error", addr)

    def _reply_raw(self, headers: Headers | None, status: int, reason: str, addr: tuple[str, int]) -> None:
        """A response built from whatever headers a bad request had, sent back to its source."""
        h = Headers()
        if headers is not None:
            for name in ("via", "from", "to", "call-id", "cseq"):
                for v in headers.get_all(name):
                    h.add(name, v + (f";tag={new_token()}" if name == "to" and ";tag" not in v.replace(" ", "") else ""))
        h.add("server", self.cfg.user_agent)
        if status == 505:
            h.add("unsupported", "SIP/2.0")
        self._send(Response(status, reason[:100].replace("\r", " ").replace("\n", " "), h).to_bytes(), addr)

    # ---- responses ------------------------------------------------------------------------

    def _stamp_via(self, req: Request, addr: tuple[str, int]) -> tuple[str, int]:
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

    def _response(self, req: Request, status: int, *, to_tag: str | None, reason: str | None = None,
                  extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                  content_type: str = "application/sdp") -> Response:
        h = Headers()
        for v in req.headers.get_all("via"):
            h.add("via", v)
        h.add("from", req.headers.get("from") or "")
        to = req.headers.get("to") or ""
        if to_tag and status > 100 and req.to.tag is None:
            to = f"{to};tag={to_tag}"
        h.add("to", to)
        h.add("call-id", req.call_id)
        h.add("cseq", req.headers.get("cseq") or "")
        if req.method == "INVITE" and 100 < status < 300:
            for rr in req.headers.get_all("record-route"):
                h.add("record-route", rr)
            h.add("contact", self.contact)
        if status == 405 or (status == 200 and req.method in ("INVITE", "OPTIONS", "UPDATE")):
            h.add("allow", ALLOW)
        h.add("server", self.cfg.user_agent)
        for k, v in extra or []:
            h.add(k, v)
        if body:
            h.add("content-type", content_type)
        return Response(status, reason or REASONS.get(status, ""), h, body)

    def _respond(self, tx: ServerTransaction, status: int, **kw: Any) -> None:
        self.layer.respond(tx, self._response(tx.request, status, to_tag=tx.to_tag, **kw))

    # ---- requests -------------------------------------------------------------------------

    def _on_request(self, req: Request, addr: tuple[str, int]) -> None:
        validate_request(req)
        reply_to = self._stamp_via(req, addr)
        tx = self.layer.match_server(req)
        if req.method == "ACK":
            if tx is not None and (tx.final_status or 0) >= 300:
                self.layer.absorb(tx, req)
            else:
                self._on_ack(req)
            return
        if tx is not None:
            self.layer.absorb(tx, req)  # a retransmission: the last response again, nothing else
            return
        if req.method == "CANCEL":
            self._on_cancel(req, reply_to)
            return
        local_tag = req.to.tag
        tx = self.layer.create_server(req, reply_to, local_tag or new_token())
        unsupported = [o for o in req.headers.get_all("require") if o.lower() not in SUPPORTED]  # Proxy-Require: not ours
        if unsupported:
            self._respond(tx, 420, extra=[("unsupported", ", ".join(unsupported))])
            return
        if req.method == "OPTIONS":
            self._respond(tx, 200, extra=[("accept", "application/sdp"), ("accept-language", "es, en")])
            return
        if local_tag is not None:
            call = self.calls.get((req.call_id, local_tag))
            if call is None or call.state == "ended" or call.dialog is None:
                self._respond(tx, 481 if req.method in DIALOG_METHODS | {"INVITE"} else 405)
                return
            self._in_dialog(call, req, tx)
            return
        if req.method == "INVITE":
            self._on_invite(req, tx)
        elif req.method in DIALOG_METHODS:
            self._respond(tx, 481)
        else:
            self._respond(tx, 405)

    def _check_body(self, req: Request, tx: ServerTransaction) -> tuple[bool, sdp.Sdp | None]:
        """(ok, offer): 415 for bodies we cannot read, 400 for broken SDP."""
        ctype = req.content_type
        if req.body and ctype not in ACCEPTED_BODIES:
            self._respond(tx, 415, extra=[("accept", "application/sdp")])
            return False, None
        part = _sdp_part(ctype, req.body, req.headers.get("content-type") or "")
        if req.body and part is None and ctype:
            self._respond(tx, 415, extra=[("accept", "application/sdp")])
            return False, None
        if part is None:
            return True, None
        try:
            offer = sdp.parse(part)
            if offer.audio is not None:
                offer.audio_address()
        except sdp.SdpError as exc:
            self._respond(tx, 400, reason=f"Bad SDP: {exc}"[:60])
            return False, None
        return True, offer

    def _on_invite(self, req: Request, tx: ServerTransaction) -> None:
        if self._stopping or self.active_calls >= self.cfg.max_calls:
            self._respond(tx, 503, extra=[("retry-after", str(self.cfg.retry_after_s))])
            return
        ruri = SipUri.parse(req.uri)
        ok, offer = self._check_body(req, tx)
        if not ok:
            return
        if offer is not None and sdp.negotiate(offer, list(self.cfg.codecs)) is None:
            self._respond(tx, 488, extra=[("warning", f'305 {self.cfg.host} "Incompatible media format"')])
            return
        self._respond(tx, 100)
        frm = req.from_
        call = Call(self, call_id=req.call_id, trace_id=req.headers.get("x-trace-id") or uuid.uuid4().hex[:16],
                    direction="in", caller=frm.uri.user or str(frm.uri), callee=ruri.user or req.to.uri.user or "",
                    started_at=self.clock.now())
        for k, v in req.headers.items:
            if k.startswith("x-") or k in ("diversion", "p-asserted-identity", "subject"):
                call.headers[k] = v
        call.invite_tx = tx
        call.dialog = Dialog.as_uas(req, tx.to_tag)
        call.offer = offer
        call.session_id = random.randint(1, 2**31)
        self.calls[(req.call_id, tx.to_tag)] = call
        self._respond(tx, 180)
        self._spawn(self._run_handler(call), name=f"call-{call.call_id[:12]}")

    async def _run_handler(self, call: Call) -> None:
        logs.bind(call_id=call.call_id, trace_id=call.trace_id)
        log.info("incoming call", extra=logs.fields(caller=call.caller, callee=call.callee))
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

    def _on_cancel(self, req: Request, reply_to: tuple[str, int]) -> None:
        inv = self.layer.find_invite(req)
        tx = self.layer.create_server(req, reply_to, new_token())
        if inv is None:
            self._respond(tx, 481)
            return
        tx.to_tag = inv.to_tag
        self._respond(tx, 200)
        if inv.final_status is None:  # too late once a final response went out
            self._respond(inv, 487)
            call = self.calls.get((inv.request.call_id, inv.to_tag))
            if call is not None and call.invite_tx is inv:  # a CANCELled re-INVITE leaves the call up
                self._end(call, "cancelled", sip_status=487)

    def _on_ack(self, req: Request) -> None:
        call = self.calls.get((req.call_id, req.to.tag or ""))
        if call is None or call.acked.is_set():
            return
        call.ack_body = req.body
        call.acked.set()

    # ---- inside a dialog ------------------------------------------------------------------

    def _in_dialog(self, call: Call, req: Request, tx: ServerTransaction) -> None:
        d = call.dialog
        assert d is not None
        num, _ = req.cseq
        if d.remote_cseq is not None and num <= d.remote_cseq and req.method != "ACK":
            self._respond(tx, 500, reason="CSeq out of order")
            return
        d.remote_cseq = num
        m = req.method
        if m == "BYE":
            self._respond(tx, 200)
            self._end(call, "remote_hangup")
        elif m in ("INVITE", "UPDATE"):
            self._reoffer(call, req, tx)
        elif m == "INFO":
            self._on_info(call, req, tx)
        elif m == "NOTIFY":
            self._respond(tx, 200)
            frag = re.match(rb"\s*SIP/2\.0\s+(\d{3})", req.body or b"")
            if frag and (req.headers.get("event") or "").lower().startswith("refer"):
                call.transfer_status.put_nowait(int(frag.group(1)))
        else:
            self._respond(tx, 405)

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
            self._respond(tx, 415, extra=[("accept", "application/dtmf-relay, application/dtmf")])
            return
        self._respond(tx, 200)
        if digit and digit in "0123456789*#ABCD":
            call._on_dtmf(digit)

    def _reoffer(self, call: Call, req: Request, tx: ServerTransaction) -> None:
        """re-INVITE or UPDATE: same RTP session, same sender; only its parameters change."""
        if req.method == "INVITE" and not call.acked.is_set():
            self._respond(tx, 491)
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
                self._respond(tx, 200)
                return
            # re-INVITE without SDP: we offer, the answer comes in the ACK
            call.acked.clear()
            body = self._offer_body(call, rtp.local_port)
            self._send_2xx(call, tx, body, late=True)
            return
        neg = sdp.negotiate(offer, list(self.cfg.codecs), prefer=call.codec or None)
        if neg is None or rtp is None:
            self._respond(tx, 488, extra=[("warning", f'305 {self.cfg.host} "Incompatible media format"')])
            return
        changed = (neg.codec, neg.remote, neg.direction) != (call.codec, rtp.params.remote, rtp.params.direction)
        if changed:
            call.sdp_version += 1
        self._apply(call, neg)
        body = sdp.answer(offer, neg, address=self.host, port=rtp.local_port, session_id=call.session_id,
                          version=call.sdp_version, user_agent=self.cfg.user_agent)
        if req.method == "UPDATE":
            self._respond(tx, 200, body=body)
        else:
            call.acked.clear()
            self._send_2xx(call, tx, body, late=False)

    def _apply(self, call: Call, neg: sdp.Negotiated) -> None:
        assert call.rtp is not None
        call.codec = neg.codec
        call.rtp.update(MediaParams(codec=neg.codec, pt=neg.pt, dtmf_pt=neg.dtmf_pt, remote=neg.remote,
                                    direction=neg.direction))

    def _offer_body(self, call: Call, port: int) -> bytes:
        codecs = list(self.cfg.codecs)
        if call.codec in codecs:
            codecs.remove(call.codec)
            codecs.insert(0, call.codec)
        return sdp.build(address=self.host, port=port, codecs=list[str](codecs), session_id=call.session_id or 1,
                         version=call.sdp_version, user_agent=self.cfg.user_agent)

    def _send_2xx(self, call: Call, tx: ServerTransaction, body: bytes, *, late: bool) -> None:
        """200 to an INVITE, re-sent (T1, 2T1 ... T2) until the ACK arrives; no ACK in 64*T1 ends the call."""
        resp = self._response(tx.request, 200, to_tag=tx.to_tag, body=body)
        self.layer.respond(tx, resp)
        data = resp.to_bytes()

        async def retransmit() -> None:
            interval = T1
            try:
                async with asyncio.timeout(64 * T1):
                    while not call.acked.is_set() and call.state != "ended":
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(call.acked.wait(), interval)
                        if not call.acked.is_set() and call.state != "ended":
                            self._send(data, tx.addr)
                        interval = min(interval * 2, T2)
            except TimeoutError:
                if call.state != "ended":
                    log.warning("no ACK for our 200: ending the call", extra=logs.fields(call_id=call.call_id))
                    await self._send_bye(call)
                    self._end(call, "no_ack")
                return
            if late and call.state == "up":  # a re-INVITE without SDP; the first INVITE is done in _answer
                self._late_answer(call)

        self._spawn(retransmit())

    def _late_answer(self, call: Call) -> None:
        """Our offer went in a 200; its answer is in the ACK."""
        body = call.ack_body
        neg = None
        with contextlib.suppress(sdp.SdpError):
            neg = sdp.negotiate_answer(sdp.parse(body), list(self.cfg.codecs)) if body else None
        if neg is None:
            if call.codec:  # re-INVITE without SDP answered with nothing usable: keep the old session
                return
            log.warning("ACK carried no usable SDP answer", extra=logs.fields(call_id=call.call_id))
            self._spawn(self._hangup(call, "no_common_codec"))
            return
        self._apply(call, neg)

    # ---- answering, rejecting, hanging up ---------------------------------------------------

    async def _answer(self, call: Call) -> None:
        if call.state == "up" or call.direction == "out":
            return
        if call.state != "ringing":
            raise CallEnded(call.end_reason)
        tx = call.invite_tx
        assert tx is not None
        call.state = "answering"
        rtp = RtpSession(MediaParams(codec=self.cfg.codecs[0], pt=0, dtmf_pt=None, remote=("", 0)),
                         media_timeout=self.cfg.media_timeout_s, on_dtmf=call._on_dtmf,
                         on_timeout=lambda: self._hangup_soon(call, "media_timeout"))
        await rtp.open(self.cfg.host, self.cfg.rtp_port_min, self.cfg.rtp_port_max)
        if call.state != "answering":  # cancelled while we opened the socket
            await rtp.close()
            raise CallEnded(call.end_reason)
        call.rtp = rtp
        offer = call.offer
        if offer is not None:
            neg = sdp.negotiate(offer, list(self.cfg.codecs))
            assert neg is not None  # checked before ringing
            self._apply(call, neg)
            body = sdp.answer(offer, neg, address=self.host, port=rtp.local_port, session_id=call.session_id,
                              version=call.sdp_version, user_agent=self.cfg.user_agent)
        else:
            body = self._offer_body(call, rtp.local_port)
        self._send_2xx(call, tx, body, late=offer is None)
        call._record.answered_at = self.clock.now()
        call._record.sip_status = 200
        if offer is not None:
            rtp.start()
            call.media_ready.set()
        waiter = asyncio.ensure_future(call.acked.wait())
        ender = asyncio.ensure_future(call.ended.wait())
        await asyncio.wait([waiter, ender], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        ender.cancel()
        if call.state == "ended":
            raise CallEnded(call.end_reason)
        if offer is None:
            self._late_answer(call)
            if call.state == "ended" or not call.codec:
                raise CallEnded(call.end_reason or "no_common_codec")
            rtp.start()
            call.media_ready.set()
        call.state = "up"
        log.info("call answered", extra=logs.fields(codec=call.codec, rtp_port=rtp.local_port))

    def _hangup_soon(self, call: Call, reason: str) -> None:
        self._spawn(self._hangup(call, reason))

    async def _reject(self, call: Call, status: int, reason: str | None, end_reason: str = "rejected") -> None:
        if call.state != "ringing" or call.invite_tx is None:
            return
        self._respond(call.invite_tx, status, reason=reason)
        self._end(call, end_reason, sip_status=status)

    async def _hangup(self, call: Call, reason: str) -> None:
        if call.state == "ended":
            return
        if call.rtp is not None:
            call.stop_playback()  # hangup overtakes queued audio
        if call.state == "ringing" and call.direction == "in":
            await self._reject(call, 480, None, end_reason=reason)
            return
        if call.state == "answering":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.acked.wait(), 2.0)  # BYE only on a confirmed dialog
        self._end(call, reason)
        await self._send_bye(call)

    async def _send_bye(self, call: Call) -> None:
        """Send BYE and return; its transaction finishes in the background (stop() waits a little for it)."""
        if call.dialog is None:
            return
        req = call.dialog.request("BYE", via=self.via, contact=self.contact, extra=[("user-agent", self.cfg.user_agent)])
        try:
            dest = await self._resolve(*call.dialog.next_hop())
        except OSError as exc:
            log.warning("cannot send BYE: %s", exc)
            return
        self.layer.start_client(req, dest)

    def _end(self, call: Call, reason: str, sip_status: int | None = None) -> None:
        if call.state == "ended":
            return
        if sip_status is not None:
            call._record.sip_status = sip_status
        call._finish(reason, self.clock.now())
        if call.rtp is not None:
            self._spawn(call.rtp.close())
        rec = call.record
        self.records.append(rec)
        log.info("call ended", extra=logs.fields(call_id=call.call_id, reason=reason, codec=rec.codec,
                                                 sent=rec.packets_sent, received=rec.packets_received))
        if call.dialog is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(64 * T1, self.calls.pop, (call.call_id, call.dialog.local_tag), None)
        if self.on_call_ended is not None:
            try:
                res = self.on_call_ended(rec)
                if asyncio.iscoroutine(res):
                    self._spawn(res)
            except Exception:
                log.exception("on_call_ended failed")

    # ---- client requests ------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> tuple[str, int]:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return host, port
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host}")
        return str(infos[0][4][0]), port

    async def _request(self, req: Request, hop: tuple[str, int],
                       on_provisional: Callable[[Response], None] | None = None) -> Response:
        dest = await self._resolve(*hop)
        tx = self.layer.start_client(req, dest, on_provisional)
        return await asyncio.shield(tx.final)

    async def _send_dtmf(self, call: Call, digits: str) -> None:
        if call.rtp is not None and call.rtp.params.dtmf_pt is not None:
            call.rtp.send_dtmf(digits)
            return
        if call.dialog is None:
            return
        for d in digits:
            req = call.dialog.request("INFO", via=self.via, contact=self.contact,
                                      body=f"Signal={d}\r\nDuration=160\r\n".encode(),
                                      content_type="application/dtmf-relay")
            await self._request(req, call.dialog.next_hop())

    async def _transfer(self, call: Call, uri: str, within_s: float) -> bool:
        if call.state != "up" or call.dialog is None:
            return False
        target = SipUri.parse(uri if ":" in uri else f"sip:{uri}@{call.dialog.remote_target.host}")
        while not call.transfer_status.empty():
            call.transfer_status.get_nowait()
        req = call.dialog.request("REFER", via=self.via, contact=self.contact,
                                  extra=[("refer-to", f"<{target}>"), ("referred-by", self.contact)])
        try:
            resp = await asyncio.wait_for(self._request(req, call.dialog.next_hop()), within_s)
        except TimeoutError:
            return False
        if not 200 <= resp.status < 300:
            log.info("REFER refused", extra=logs.fields(status=resp.status))
            return False
        try:
            async with asyncio.timeout(within_s):
                while True:
                    status_task = asyncio.ensure_future(call.transfer_status.get())
                    ended = asyncio.ensure_future(call.ended.wait())
                    await asyncio.wait([status_task, ended], return_when=asyncio.FIRST_COMPLETED)
                    ended.cancel()
                    if not status_task.done():
                        status_task.cancel()
                        return call.end_reason == "remote_hangup"  # the transferee hung up on us: done
                    status = status_task.result()
                    if status >= 200:
                        break
        except TimeoutError:
            return False
        if 200 <= status < 300:
            if call.state != "ended":
                self._end(call, "transferred")
                await self._send_bye(call)
            return True
        return False

    # ---- outbound calls -------------------------------------------------------------------

    async def dial(self, uri: str, *, from_user: str | None = None, ring_timeout: float = 30.0,
                   headers: dict[str, str] | None = None, trace_id: str | None = None) -> Call:
        """Place a call; returns it answered (media flowing) or raises DialFailed(reason).

        `trace_id` (e.g. the callback's ticket trace) goes out as X-Trace-Id; an inbound INVITE carrying
        X-Trace-Id keeps it, so two Atiende nodes share one trace per call."""
        if self._stopping or self.active_calls >= self.cfg.max_calls:
            raise DialFailed("at_capacity")
        trunk = self.cfg.trunk
        proxy = SipUri.parse(trunk.proxy) if trunk.proxy else None
        if ":" not in uri.split("@")[0]:
            uri = f"sip:{uri}" if "@" in uri else f"sip:{uri}@{proxy.host if proxy else self.host}"
        try:
            target = SipUri.parse(uri)
        except SipParseError as exc:
            raise DialFailed("bad_uri", detail=exc.reason) from None
        if target.scheme not in ("sip", "sips"):
            raise DialFailed("bad_uri", detail=f"scheme {target.scheme}")
        hop = proxy.hostport if proxy else target.hostport
        user = from_user or trunk.from_user
        domain = proxy.host if proxy else self.host
        local = Address(SipUri("sip", user=user, host=domain), params={"tag": new_token()})
        call_id = f"{uuid.uuid4().hex}@{self.host}"
        rtp = RtpSession(MediaParams(codec=self.cfg.codecs[0], pt=0, dtmf_pt=None, remote=("", 0)),
                         media_timeout=self.cfg.media_timeout_s)
        await rtp.open(self.cfg.host, self.cfg.rtp_port_min, self.cfg.rtp_port_max)
        session_id = random.randint(1, 2**31)
        offer = sdp.build(address=self.host, port=rtp.local_port, codecs=list(self.cfg.codecs), session_id=session_id,
                          version=0, user_agent=self.cfg.user_agent)
        cseq = 1
        auth: tuple[str, str] | None = None
        trace_id = trace_id or uuid.uuid4().hex[:16]
        extra = [("x-trace-id", trace_id), *((k, v) for k, v in (headers or {}).items())]
        started = self.clock.now()
        try:
            for _attempt in range(3):
                h = Headers()
                h.add("via", f"{self.via};branch={new_branch()};rport")
                h.add("max-forwards", "70")
                h.add("from", str(local))
                h.add("to", f"<{target}>")
                h.add("call-id", call_id)
                h.add("cseq", f"{cseq} INVITE")
                h.add("contact", self.contact)
                h.add("allow", ALLOW)
                h.add("user-agent", self.cfg.user_agent)
                if auth:
                    h.add(*auth)
                for k, v in extra:
                    h.add(k, v)
                h.add("content-type", "application/sdp")
                invite = Request("INVITE", str(target), h, offer)
                dest = await self._resolve(*hop)
                tx = self.layer.start_client(invite, dest)
                try:
                    resp = await asyncio.wait_for(asyncio.shield(tx.final), ring_timeout)
                except TimeoutError:
                    resp = await self._cancel(invite, dest, tx)
                    if resp.status < 300:  # answered while we cancelled: take it, then hang up below
                        call = self._outbound_call(invite, resp, rtp, started, session_id, target, trace_id)
                        await call.hangup("no_answer")
                    raise DialFailed("no_answer") from None
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._cancel(invite, dest, tx), 5.0)
                    raise
                if resp.status in (401, 407) and auth is None and trunk.user:
                    challenge = resp.headers.get("www-authenticate" if resp.status == 401 else "proxy-authenticate")
                    if challenge:
                        value = digest.authorization(challenge, user=trunk.user, password=trunk.password or "",
                                                     method="INVITE", uri=str(target))
                        auth = ("authorization" if resp.status == 401 else "proxy-authorization", value)
                        cseq += 1
                        continue
                if 200 <= resp.status < 300:
                    return self._outbound_call(invite, resp, rtp, started, session_id, target, trace_id)
                raise DialFailed(_failure_reason(resp.status), resp.status, resp.reason)
            raise DialFailed("auth_failed")
        except BaseException:
            await rtp.close()
            raise

    def _outbound_call(self, invite: Request, resp: Response, rtp: RtpSession, started: Any, session_id: int,
                       target: SipUri, trace_id: str) -> Call:
        dialog = Dialog.as_uac(invite, resp)
        call = Call(self, call_id=invite.call_id, trace_id=trace_id, direction="out",
                    caller=invite.from_.uri.user or "", callee=target.user or str(target), started_at=started)
        call.dialog = dialog
        call.session_id = session_id
        call.rtp = rtp
        self.calls[(call.call_id, dialog.local_tag)] = call
        ack = dialog.request("ACK", via=self.via, contact=self.contact, cseq=invite.cseq[0])
        ack_bytes = ack.to_bytes()
        hop = dialog.next_hop()
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(hop[0])
            self._send(ack_bytes, hop)
        ctx = self.layer.client.get((invite.vias[0].branch or "", "INVITE"))
        if ctx is not None:
            ctx.ack = ack_bytes  # 2xx retransmissions get this ACK again
        call.acked.set()
        neg = None
        with contextlib.suppress(sdp.SdpError):
            neg = sdp.negotiate_answer(sdp.parse(resp.body), list(self.cfg.codecs)) if resp.body else None
        call._record.answered_at = self.clock.now()
        call._record.sip_status = resp.status
        call.state = "up"
        if neg is None:
            self._spawn(self._hangup(call, "no_common_codec"))
            raise DialFailed("no_common_codec", resp.status)
        rtp.on_dtmf = call._on_dtmf
        rtp.on_timeout = lambda: self._hangup_soon(call, "media_timeout")
        self._apply(call, neg)
        rtp.start()
        call.media_ready.set()
        return call

    async def _cancel(self, invite: Request, dest: tuple[str, int], tx: Any) -> Response:
        h = Headers()
        h.add("via", invite.headers.get_all("via")[0])
        for r in invite.headers.get_all("route"):
            h.add("route", r)
        h.add("max-forwards", "70")
        for name in ("from", "to", "call-id"):
            h.add(name, invite.headers.get(name) or "")
        h.add("cseq", f"{invite.cseq[0]} CANCEL")
        cancel = Request("CANCEL", invite.uri, h)
        self.layer.start_client(cancel, dest)
        try:
            return await asyncio.wait_for(asyncio.shield(tx.final), 64 * T1)
        except TimeoutError:
            return Response(408, "Request Timeout")

    # ---- registration ---------------------------------------------------------------------

    def _aor(self, reg: Registration) -> str:
        domain = reg.domain or SipUri.parse(reg.registrar).host
        return f"sip:{reg.user}@{domain}"

    async def _register_loop(self, reg: Registration) -> None:
        aor = self._aor(reg)
        while not self._stopping:
            try:
                ok, expires, detail = await self._register_once(reg, expires=reg.expires)
            except Exception as exc:
                ok, expires, detail = False, 0, str(exc)
            self.registrations[aor] = {"registered": ok, "expires": expires, "detail": detail,
                                       "at": self.clock.now().isoformat()}
            if ok:
                log.info("registered", extra=logs.fields(aor=aor, expires=expires))
                await asyncio.sleep(refresh_delay(expires))
            else:
                log.warning("registration failed", extra=logs.fields(aor=aor, detail=detail))
                await asyncio.sleep(self.cfg.register_retry_s)

    async def _register_once(self, reg: Registration, *, expires: int) -> tuple[bool, int, str]:
        registrar = SipUri.parse(reg.registrar)
        aor = self._aor(reg)
        state = self.registrations.setdefault(aor, {})
        call_id = state.setdefault("call_id", f"{uuid.uuid4().hex}@{self.host}")
        from_tag = state.setdefault("tag", new_token())
        contact = f"<sip:{reg.user}@{self._hostport()}>"
        auth: tuple[str, str] | None = None
        for _ in range(3):
            state["cseq"] = state.get("cseq", 0) + 1
            h = Headers()
            h.add("via", f"{self.via};branch={new_branch()};rport")
            h.add("max-forwards", "70")
            h.add("from", f"<{aor}>;tag={from_tag}")
            h.add("to", f"<{aor}>")
            h.add("call-id", call_id)
            h.add("cseq", f"{state['cseq']} REGISTER")
            h.add("contact", contact)
            h.add("expires", str(expires))
            h.add("user-agent", self.cfg.user_agent)
            if auth:
                h.add(*auth)
            ruri = f"sip:{registrar.host}" + (f":{registrar.port}" if registrar.port else "")
            resp = await self._request(Request("REGISTER", ruri, h), registrar.hostport)
            if resp.status in (401, 407) and auth is None:
                challenge = resp.headers.get("www-authenticate" if resp.status == 401 else "proxy-authenticate")
                if not challenge:
                    return False, 0, f"{resp.status} without a challenge"
                value = digest.authorization(challenge, user=reg.auth_user or reg.user, password=reg.password,
                                             method="REGISTER", uri=ruri)
                auth = ("authorization" if resp.status == 401 else "proxy-authorization", value)
                continue
            if 200 <= resp.status < 300:
                granted = expires
                for c in resp.headers.get_all("contact"):
                    with contextlib.suppress(SipParseError, ValueError):
                        a = Address.parse(c)
                        if a.uri.user == reg.user and a.uri.host == self.host and a.params.get("expires"):
                            granted = int(a.params["expires"] or expires)
                if granted == expires and is_num(resp.headers.get("expires") or ""):
                    granted = int(resp.headers.get("expires") or expires)
                return True, granted, f"{resp.status} {resp.reason}"
            return False, 0, f"{resp.status} {resp.reason}"
        return False, 0, "authentication failed"


def refresh_delay(expires: int) -> float:
    """Refresh a registration halfway through, but at least 30 s early on long ones and never sooner than 5 s."""
    return max(5.0, min(expires * 0.5, expires - 30.0))


def _failure_reason(status: int) -> str:
    if status in (486, 600):
        return "busy"
    if status in (404, 604, 484):
        return "not_found"
    if status in (408, 480):
        return "no_answer"
    if status in (401, 403, 407):
        return "auth_failed"
    if status == 487:
        return "cancelled"
    if status == 488 or status == 606:
        return "no_common_codec"
    if status == 603:
        return "rejected"
    if status == 503:
        return "unavailable"
    return "failed"


__all__ = ["Call", "CallRecord", "DialFailed", "SipEndpoint", "Via"]
