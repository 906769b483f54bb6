"""Calls we place (the UAC side): INVITE through the trunk, digest answer, CANCEL on ring timeout, the 2xx ACK.

What may be dialled:
- a number, `+` then digits or digits only: always through `sip.trunk.proxy`; with no trunk
  configured `dial` refuses (`DialFailed("no_trunk")`), so a number can never pick a host;
- a `sip:`/`sips:` URI (agents' phones, the softphone's Kamailio: from configuration): straight to its own
  host, never through the trunk, and never given the trunk's credentials; characters that could end the
  URI inside a header (`<>",?`, whitespace) are refused.
Digest credentials go only to the trunk: a 401/407 from any other address is not answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import re
import uuid
from datetime import datetime

from core import logs
from telephony import sdp
from telephony.call import Call, CallControl
from telephony.dialogs import Dialogs
from telephony.errors import DialFailed
from telephony.line import Line
from telephony.rtp import MediaParams, RtpSession
from telephony.sip import build, digest
from telephony.sip.dialog import Dialog
from telephony.sip.message import TOKEN_RE, Address, Request, Response, SipParseError, SipUri, new_token
from telephony.sip.transaction import T1, ClientTransaction, build_cancel

log = logging.getLogger(__name__)

NUMBER_RE = re.compile(r"^\+?[0-9]{1,32}$")
# RFC 3261 user part without escapes or the characters that would open parameters or headers of their own
USER_RE = re.compile(r"^[A-Za-z0-9\-_.!~*'()+]{1,64}$")
_URI_UNSAFE = re.compile(r"""[<>"\\,?\s]""")


def failure_reason(status: int) -> str:
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


class Outgoing:
    def __init__(self, line: Line, dialogs: Dialogs, control: CallControl) -> None:
        self.line = line
        self.dialogs = dialogs
        self.control = control

    def _target(self, dialled: str, proxy: SipUri | None) -> SipUri:
        if NUMBER_RE.match(dialled):
            if proxy is None:
                raise DialFailed("no_trunk", detail="numbers are dialled through sip.trunk.proxy, which is not set")
            return SipUri("sip", user=dialled, host=proxy.host)
        if not dialled.lower().startswith(("sip:", "sips:")):
            raise DialFailed("bad_uri", detail="a number (digits, optional leading +) or a sip: URI")
        if _URI_UNSAFE.search(dialled):
            raise DialFailed("bad_uri", detail="characters not allowed in a dialled URI")
        try:
            target = SipUri.parse(dialled)
        except SipParseError as exc:
            raise DialFailed("bad_uri", detail=exc.reason) from None
        if target.headers is not None or target.password is not None or not target.user or not USER_RE.match(target.user):
            raise DialFailed("bad_uri", detail="the URI needs a plain user part and no headers")
        return target

    async def dial(self, uri: str, *, from_user: str | None = None, ring_timeout: float = 30.0,
                   headers: dict[str, str] | None = None, trace_id: str | None = None) -> Call:
        line, cfg = self.line, self.line.cfg
        if line.stopping or self.dialogs.active_calls >= cfg.max_calls:
            raise DialFailed("at_capacity")
        trunk = cfg.trunk
        proxy = SipUri.parse(trunk.proxy) if trunk.proxy else None
        target = self._target(uri.strip(), proxy)
        for k, v in (headers or {}).items():
            if not TOKEN_RE.match(k) or "\r" in v or "\n" in v:
                raise DialFailed("bad_header", detail=k[:40])
        # Numbers go out through the carrier's trunk; a configured sip: URI (an agent's phone, the softphone's
        # Kamailio) is an internal destination and goes straight to its own host.
        to_trunk = proxy is not None and NUMBER_RE.match(uri.strip()) is not None
        hop = proxy.hostport if to_trunk and proxy is not None else target.hostport
        user = from_user if from_user and USER_RE.match(from_user) else trunk.from_user
        if from_user and user != from_user:
            log.warning("calling-party user %r is not a plain SIP user: sent as %s", from_user[:40], user)
        domain = proxy.host if to_trunk and proxy is not None else line.host
        local = Address(SipUri("sip", user=user, host=domain), params={"tag": new_token()})
        call_id = f"{uuid.uuid4().hex}@{line.host}"
        rtp = RtpSession(MediaParams(codec=cfg.codecs[0], pt=0, dtmf_pt=None, remote=("", 0)),
                         media_timeout=cfg.media_timeout_s)
        await rtp.open(cfg.host, cfg.rtp_port_min, cfg.rtp_port_max)
        session_id = random.randint(1, 2**31)
        offer = sdp.build(address=line.host, port=rtp.local_port, codecs=list(cfg.codecs), session_id=session_id,
                          version=0, user_agent=cfg.user_agent)
        cseq = 1
        auth: tuple[str, str] | None = None
        trace_id = trace_id or uuid.uuid4().hex[:16]
        extra = [("x-trace-id", trace_id), *((k, v) for k, v in (headers or {}).items())]
        started = line.clock.now()
        try:
            for _attempt in range(3):
                invite = build.request("INVITE", str(target), via=line.via, from_=str(local), to=f"<{target}>",
                                       call_id=call_id, cseq=cseq, contact=line.contact,
                                       extra=[("allow", build.ALLOW), ("user-agent", cfg.user_agent),
                                              *([auth] if auth else []), *extra],
                                       body=offer, content_type="application/sdp")
                dest = await line.resolve(*hop)
                tx = line.layer.start_client(invite, dest)
                try:
                    resp = await asyncio.wait_for(asyncio.shield(tx.final), ring_timeout)
                except TimeoutError:
                    resp = await self._cancel(invite, dest, tx)
                    if resp.status < 300:  # answered while we cancelled: take it, then hang up below
                        call = self._outbound_call(invite, resp, rtp, started, session_id, target, trace_id)
                        await call.hangup("no_answer")
                    raise DialFailed("no_answer") from None
                except asyncio.CancelledError:
                    # The dial was abandoned (the caller hung up while this leg rang): CANCEL, and leave at once.
                    # The callee's 200 may cross the CANCEL; then the callee's phone is answered, so that call is
                    # ACKed and hung up with a BYE in the background instead of being left up and silent.
                    self.line.layer.start_client(build_cancel(invite), dest)
                    self.line.spawn(self._hang_up_if_answered(invite, tx, rtp, started, session_id, target, trace_id))
                    raise
                if resp.status in (401, 407) and auth is None and trunk.user:
                    challenge = resp.headers.get("www-authenticate" if resp.status == 401 else "proxy-authenticate")
                    if challenge and self._from_trunk(tx, dest, proxy if to_trunk else None):
                        value = digest.authorization(challenge, user=trunk.user, password=trunk.password or "",
                                                     method="INVITE", uri=str(target))
                        auth = ("authorization" if resp.status == 401 else "proxy-authorization", value)
                        cseq += 1
                        continue
                if 200 <= resp.status < 300:
                    return self._outbound_call(invite, resp, rtp, started, session_id, target, trace_id)
                raise DialFailed(failure_reason(resp.status), resp.status, resp.reason)
            raise DialFailed("auth_failed")
        except BaseException:
            await rtp.close()
            raise

    @staticmethod
    def _from_trunk(tx: ClientTransaction, dest: tuple[str, int], proxy: SipUri | None) -> bool:
        """Credentials answer a challenge only from the trunk's own address (the port may differ behind SBCs)."""
        src = tx.final_source
        ok = proxy is not None and src is not None and src[0] == dest[0]
        if not ok:
            log.warning("digest challenge not from the trunk: not answered",
                        extra=logs.fields(source=f"{src[0]}:{src[1]}" if src else None,
                                          trunk=f"{dest[0]}:{dest[1]}" if proxy else None))
        return ok

    def _outbound_call(self, invite: Request, resp: Response, rtp: RtpSession, started: datetime, session_id: int,
                       target: SipUri, trace_id: str) -> Call:
        line, cfg = self.line, self.line.cfg
        dialog = Dialog.as_uac(invite, resp)
        call = Call(self.control, call_id=invite.call_id, trace_id=trace_id, direction="out",
                    caller=invite.from_.uri.user or "", callee=target.user or str(target), started_at=started)
        call.dialog = dialog
        call.session_id = session_id
        call.rtp = rtp
        self.dialogs.add(call, dialog.local_tag)
        ack = dialog.request("ACK", via=line.via, contact=line.contact, cseq=invite.cseq[0])
        ack_bytes = ack.to_bytes()
        hop = dialog.next_hop()
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(hop[0])
            line.send(ack_bytes, hop)
        ctx = line.layer.client.get((invite.vias[0].branch or "", "INVITE"))
        if ctx is not None:
            ctx.ack = ack_bytes  # 2xx retransmissions get this ACK again
        call.acked.set()
        neg = None
        try:
            neg = sdp.negotiate_answer(sdp.parse(resp.body), list(cfg.codecs)) if resp.body else None
        except Exception as exc:  # any unreadable answer, not only SdpError: the callee is answered, so it gets a BYE
            log.warning("unusable SDP answer: %s", str(exc)[:80], extra=logs.fields(call_id=call.call_id))
        call.mark_answered(line.clock.now(), resp.status)
        call.mark_up()
        if neg is None:
            self.dialogs.hangup_soon(call, "no_common_codec")
            raise DialFailed("no_common_codec", resp.status)
        rtp.on_dtmf = call.deliver_dtmf
        rtp.on_timeout = lambda: self.dialogs.hangup_soon(call, "media_timeout")
        self.dialogs.apply(call, neg)
        rtp.start()
        call.media_ready.set()
        return call

    async def _cancel(self, invite: Request, dest: tuple[str, int], tx: ClientTransaction) -> Response:
        self.line.layer.start_client(build_cancel(invite), dest)
        return await self._final(tx)

    @staticmethod
    async def _final(tx: ClientTransaction) -> Response:
        try:
            return await asyncio.wait_for(asyncio.shield(tx.final), 64 * T1)
        except TimeoutError:
            return Response(408, "Request Timeout")

    async def _hang_up_if_answered(self, invite: Request, tx: ClientTransaction, rtp: RtpSession, started: datetime,
                                   session_id: int, target: SipUri, trace_id: str) -> None:
        """After the CANCEL of an abandoned dial: a 2xx that crossed it gets its ACK, then a BYE."""
        resp = await self._final(tx)
        if not 200 <= resp.status < 300:
            return
        try:
            call = self._outbound_call(invite, resp, rtp, started, session_id, target, trace_id)
        except DialFailed:
            return  # an unusable answer: _outbound_call already hangs that call up
        await call.hangup("cancelled")
