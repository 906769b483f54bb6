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
    call = await ep.dial("600123123")    # outbound, through cfg.trunk (digest with its credentials)
    await ep.stop()                      # BYE to every call, un-REGISTER, close

The endpoint is a facade over its parts, each with one role:

    line.py          settings, our SIP identity, socket (sip/transport.py), transactions, tasks
    incoming.py      requests received: INVITE (UAS), CANCEL, ACK, OPTIONS, BYE, re-INVITE/UPDATE, INFO, NOTIFY
    outgoing.py      dial(): INVITE via the trunk, digest, CANCEL on ring timeout
    registration.py  the REGISTER client
    dialogs.py       the call table and what both directions do: media, DTMF out, REFER, BYE, ending
    limits.py        per-source request rate and trust

`Call` reaches the SIP side only through `telephony.call.CallControl`, which this class implements.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque

from config.telephony import SipConfig
from core import logs
from core.clock import Clock, SystemClock
from telephony.call import Call, CallRecord
from telephony.dialogs import Dialogs, OnCallEnded
from telephony.errors import DialFailed
from telephony.incoming import Incoming, OnCall
from telephony.line import Line
from telephony.outgoing import Outgoing
from telephony.registration import Registrations, refresh_delay
from telephony.sip.build import ALLOW
from telephony.sip.message import Request, Response
from telephony.sip.transaction import TransactionLayer

_log = logging.getLogger(__name__)


class SipEndpoint:
    def __init__(self, cfg: SipConfig, on_call: OnCall, clock: Clock | None = None,
                 on_call_ended: OnCallEnded | None = None) -> None:
        self.cfg = cfg
        self.on_call = on_call
        self.clock = clock or SystemClock()
        self.line = Line(cfg, self.clock, on_request=self._on_request, on_response=self._on_response)
        self.dialogs = Dialogs(self.line, on_call_ended)
        self.incoming = Incoming(self.line, self.dialogs, self, on_call)
        self.outgoing = Outgoing(self.line, self.dialogs, self)
        self.registrar = Registrations(self.line)

    # ---- what callers and tests read ------------------------------------------------------

    @property
    def layer(self) -> TransactionLayer:
        return self.line.layer

    @property
    def calls(self) -> dict[tuple[str, str], Call]:
        return self.dialogs.calls

    @property
    def records(self) -> deque[CallRecord]:
        return self.dialogs.records

    @property
    def registrations(self) -> dict[str, dict[str, object]]:
        return self.registrar.status

    @property
    def port(self) -> int:
        return self.line.port

    @property
    def host(self) -> str:
        return self.line.host

    @property
    def contact(self) -> str:
        return self.line.contact

    @property
    def via(self) -> str:
        return self.line.via

    @property
    def active_calls(self) -> int:
        return self.dialogs.active_calls

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.cfg.gil_switch_interval_ms:
            sys.setswitchinterval(self.cfg.gil_switch_interval_ms / 1000)
        await self.line.open()
        _log.info("SIP endpoint listening", extra=logs.fields(sip=f"udp:{self.line.hostport()}"))
        self.registrar.start()

    async def stop(self, grace_s: float = 5.0) -> None:
        self.line.stopping = True
        calls = [c for c in self.calls.values() if c.state != "ended"]
        if calls:
            hangups = [asyncio.create_task(c.hangup("shutdown")) for c in calls]
            await asyncio.wait(hangups, timeout=grace_s)
            for t in hangups:
                t.cancel()
            for c in calls:  # one still waiting for its ACK past the grace: ended here
                self.dialogs.end(c, "shutdown")
        # awaited here: a close only spawned might be cancelled by line.close() before it ever ran
        await asyncio.gather(*(c.rtp.close() for c in self.calls.values() if c.rtp is not None))
        pending = [c.final for c in self.layer.client.values() if not c.final.done()]
        if pending:  # BYEs just sent: give their answers a moment
            await asyncio.wait(pending, timeout=min(1.0, grace_s))
        await self.registrar.stop(grace_s)
        await self.line.close()

    async def dial(self, uri: str, *, from_user: str | None = None, ring_timeout: float = 30.0,
                   headers: dict[str, str] | None = None, trace_id: str | None = None) -> Call:
        """Place a call; returns it answered (media flowing) or raises DialFailed(reason).

        `uri`: a number (digits, optional leading +), dialled through `sip.trunk` (DialFailed("no_trunk") without
        one), or a sip: URI from configuration (an agent's phone). `trace_id` (e.g. the callback's ticket trace)
        goes out as X-Trace-Id; an inbound INVITE carrying X-Trace-Id keeps it, so two Atiende nodes share one
        trace per call."""
        return await self.outgoing.dial(uri, from_user=from_user, ring_timeout=ring_timeout, headers=headers,
                                        trace_id=trace_id)

    # ---- CallControl ----------------------------------------------------------------------

    async def answer(self, call: Call) -> None:
        await self.incoming.answer(call)

    async def reject(self, call: Call, status: int, reason: str | None) -> None:
        await self.dialogs.reject(call, status, reason)

    async def hangup(self, call: Call, reason: str) -> None:
        await self.dialogs.hangup(call, reason)

    async def send_dtmf(self, call: Call, digits: str) -> None:
        await self.dialogs.send_dtmf(call, digits)

    async def transfer(self, call: Call, uri: str, within_s: float) -> bool:
        return await self.dialogs.transfer(call, uri, within_s)

    # ---- the socket's two handlers --------------------------------------------------------

    def _on_request(self, req: Request, addr: tuple[str, int]) -> None:
        self.incoming.on_request(req, addr)

    def _on_response(self, resp: Response, addr: tuple[str, int]) -> None:
        self.layer.on_response(resp, addr)


__all__ = ["ALLOW", "Call", "CallRecord", "DialFailed", "SipEndpoint", "refresh_delay"]
