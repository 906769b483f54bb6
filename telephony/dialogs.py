"""The live calls of a line and what both directions do to them: media parameters, DTMF out, transfer, BYE, end.

`Dialogs` owns the call table (`(Call-ID, local tag) -> Call`) and the records of ended calls.
Inbound specifics (answering, re-INVITE) are in `incoming.py`, outbound ones in `outgoing.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from core import logs
from telephony import sdp
from telephony.call import Call, CallRecord
from telephony.line import Line
from telephony.rtp import MediaParams
from telephony.sip.message import SipUri
from telephony.sip.transaction import T1

log = logging.getLogger(__name__)

OnCallEnded = Callable[[CallRecord], object]  # a coroutine it returns is run as a task


class Dialogs:
    def __init__(self, line: Line, on_call_ended: OnCallEnded | None) -> None:
        self.line = line
        self.on_call_ended = on_call_ended
        self.calls: dict[tuple[str, str], Call] = {}  # (Call-ID, local tag) -> call
        self.records: deque[CallRecord] = deque(maxlen=1000)  # recent ended calls, newest last

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self.calls.values() if c.state != "ended")

    def active_from(self, ip: str) -> int:
        return sum(1 for c in self.calls.values() if c.state != "ended" and c.source and c.source[0] == ip)

    def add(self, call: Call, local_tag: str) -> None:
        self.calls[(call.call_id, local_tag)] = call

    def get(self, call_id: str, local_tag: str) -> Call | None:
        return self.calls.get((call_id, local_tag))

    # ---- media ----------------------------------------------------------------------------

    def apply(self, call: Call, neg: sdp.Negotiated) -> None:
        assert call.rtp is not None
        call.codec = neg.codec
        call.rtp.update(MediaParams(codec=neg.codec, pt=neg.pt, dtmf_pt=neg.dtmf_pt, remote=neg.remote,
                                    direction=neg.direction))

    # ---- ending ---------------------------------------------------------------------------

    async def reject(self, call: Call, status: int, reason: str | None, end_reason: str = "rejected") -> None:
        if call.state != "ringing" or call.invite_tx is None:
            return
        self.line.respond(call.invite_tx, status, reason=reason)
        self.end(call, end_reason, sip_status=status)

    async def hangup(self, call: Call, reason: str) -> None:
        if call.state == "ended":
            return
        if call.rtp is not None:
            call.stop_playback()  # hangup overtakes queued audio
        if call.state == "ringing" and call.direction == "in":
            await self.reject(call, 480, None, end_reason=reason)
            return
        if call.state == "answering":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.acked.wait(), 2.0)  # BYE only on a confirmed dialog
        self.end(call, reason)
        await self.send_bye(call)

    def hangup_soon(self, call: Call, reason: str) -> None:
        self.line.spawn(self.hangup(call, reason))

    async def send_bye(self, call: Call) -> None:
        """Send BYE and return; its transaction finishes in the background (stop() waits a little for it)."""
        if call.dialog is None:
            return
        line = self.line
        req = call.dialog.request("BYE", via=line.via, contact=line.contact,
                                  extra=[("user-agent", line.cfg.user_agent)])
        try:
            dest = await line.resolve(*call.dialog.next_hop())
        except OSError as exc:
            log.warning("cannot send BYE: %s", exc)
            return
        line.layer.start_client(req, dest)

    def end(self, call: Call, reason: str, sip_status: int | None = None) -> None:
        if call.state == "ended":
            return
        call.finish(reason, self.line.clock.now(), sip_status)
        if call.rtp is not None:
            self.line.spawn(call.rtp.close())
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
                    self.line.spawn(res)
            except Exception:
                log.exception("on_call_ended failed")

    # ---- in-dialog requests we send -------------------------------------------------------

    async def send_dtmf(self, call: Call, digits: str) -> None:
        if call.rtp is not None and call.rtp.params.dtmf_pt is not None:
            call.rtp.send_dtmf(digits)
            return
        if call.dialog is None:
            return
        line = self.line
        for d in digits:
            req = call.dialog.request("INFO", via=line.via, contact=line.contact,
                                      body=f"Signal={d}\r\nDuration=160\r\n".encode(),
                                      content_type="application/dtmf-relay")
            await line.request(req, call.dialog.next_hop())

    async def transfer(self, call: Call, uri: str, within_s: float) -> bool:
        if call.state != "up" or call.dialog is None:
            return False
        line = self.line
        target = SipUri.parse(uri if ":" in uri else f"sip:{uri}@{call.dialog.remote_target.host}")
        while not call.transfer_status.empty():
            call.transfer_status.get_nowait()
        req = call.dialog.request("REFER", via=line.via, contact=line.contact,
                                  extra=[("refer-to", f"<{target}>"), ("referred-by", line.contact)])
        try:
            resp = await asyncio.wait_for(line.request(req, call.dialog.next_hop()), within_s)
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
                self.end(call, "transferred")
                await self.send_bye(call)
            return True
        return False
