"""What `atiende run` starts besides HTTP: the line's SIP endpoint feeding calls to the IVR, and voicemail's
start-up recovery and callback worker. Started in order, stopped in reverse.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from atiende.runtime import Runtime
from core import logs
from core.ids import contact_id
from core.lease import Lease, LeaseLost, LeaseRunner
from core.looplag import LoopLagMonitor
from desk.sla import SlaService
from desk_api import metrics
from desk_api.channels import whatsapp
from desk_api.routes.operations import Operations, build_operations
from ivr.callio import CallIO
from ivr.cdr import CdrService
from ivr.contact import CallerGone
from telephony.call import Call
from telephony.endpoint import SipEndpoint
from telephony.errors import CallEnded
from voicemail import call_recordings
from voicemail.storage import SharedDirRecordings

log = logging.getLogger(__name__)
CATCH_UP_S = 5.0


class Component(Protocol):
    async def stop(self) -> None: ...


class LineComponent:
    """The line's SIP endpoint; each inbound call is answered and run through the flows."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.endpoint: SipEndpoint | None = None
        self._warm: asyncio.Task[None] | None = None
        self.cdr: CdrService | None = None

    async def start(self) -> None:
        sip = self.rt.settings.sip
        if not sip.enabled:
            log.info("SIP disabled: the IVR serves chats and simulations only")
            return
        self.cdr = operations(self.rt).cdr
        self.endpoint = SipEndpoint(sip, self.on_call, clock=self.rt.clock)
        node = self.rt.node
        # A node whose store is away still answers the calls that reach it (the IVR degrades, never silence), but
        # reports not ready so the dispatcher prefers others; a draining node takes no new calls at all.
        self.endpoint.line.ready = lambda: node.ready
        self.endpoint.line.accepting = lambda: not node.draining
        await self.endpoint.start()
        self.rt.attach_line(self.endpoint)
        self.rt.callback_calls.on_ended = self.cdr.call_ended  # calls to callbacks' citizens get their CDR too
        metrics.ACTIVE_CALLS.set_function(self.live_calls)  # read at each scrape: it cannot drift from the line
        self._warm = asyncio.create_task(self._warm_up())
        log.info("IVR answering on sip:%s:%s", sip.host, sip.port)

    async def _warm_up(self) -> None:
        """Load the speech engines and render the fixed prompts before the first caller needs them."""
        try:
            speech = self.rt.speech
            await speech.warm_up()
            _, doc = await self.rt.ivr.current_flows()
            fixed = [t for t in doc.prompts.values() if "{" not in t]
            await speech.sync_prompts(fixed)
        except Exception:
            log.exception("speech warm-up failed; calls will load engines on first use")

    async def on_call(self, call: Call) -> None:
        io: CallIO | None = None
        try:
            await call.answer()
            io = CallIO(call, self.rt.speech)
            cid = contact_id(call.call_id)
            if cid != call.call_id:
                log.info("call stored as %s", cid, extra=logs.fields(sip_call_id=call.call_id[:200]))
            done = await self.rt.ivr.run(io, call_id=cid, trace_id=call.trace_id)
            metrics.CALLS_TOTAL.labels(done.outcome or "unknown").inc()
            if self.cdr is not None:
                self.cdr.call_ended(done)  # the CDR webhook is sent in the background: the call never waits on it
        except CallEnded:
            # The caller hung up (or CANCELled) before the answer completed: ordinary, not a fault.
            log.info("caller left before the answer", extra=logs.fields(call_id=call.call_id, reason=call.end_reason))
        except CallerGone:
            pass
        except Exception:
            log.exception("IVR failed on call %s", call.call_id)
        finally:
            if io is not None:
                await io.close()

    def live_calls(self) -> int:
        return 0 if self.endpoint is None else sum(1 for c in self.endpoint.calls.values() if c.state != "ended")

    async def stop(self) -> None:
        if self._warm is not None:
            self._warm.cancel()
        if self.endpoint is not None:
            self.rt.attach_line(None)
            await self.rt.callback_calls.stop()
            await self.endpoint.stop()
        if self.cdr is not None:
            await self.cdr.drain(2.0)
            await self.cdr.close()


class VoicemailComponent:
    """Files the messages a crash cut (start-up), then runs the callback worker; files what waited on disk or in
    memory while the store was away (voicemails, call records) as soon as it is back."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._catch_up: asyncio.Task[None] | None = None

    async def start(self) -> None:
        recordings = self.rt.recordings
        if isinstance(recordings, SharedDirRecordings):
            await recordings.check()  # a missing mount must stop the node, not scatter recordings on its disk
        try:
            refs = await self.rt.voicemail.recover()
            if refs:
                log.warning("filed %d voicemail(s) cut by the last stop: %s", len(refs), ", ".join(refs))
        except Exception:
            log.exception("voicemail recovery failed; the .part files stay for the next start")
        try:
            cut = await call_recordings.recover(self.rt.data_dir, self.rt.store, recordings, self.rt.clock)
            if cut:
                log.warning("finished %d agent-call recording(s) cut by the last stop: %s", len(cut), ", ".join(cut))
        except Exception:
            log.exception("agent-call recording recovery failed; the .part files stay for the next start")
        self.rt.callback_worker.start(
            LeaseRunner(self.rt.store, "callbacks", holder=self.rt.settings.service.node_id, ttl=10.0))
        self._catch_up = asyncio.create_task(self._catch_up_loop(), name="store-catch-up")

    async def _catch_up_loop(self) -> None:
        while True:
            await asyncio.sleep(CATCH_UP_S)
            try:
                await self.rt.ivr.flush_records()
                refs = await self.rt.voicemail.file_pending()
                if refs:
                    log.warning("filed %d voicemail(s) recorded while the store was away: %s", len(refs), ", ".join(refs))
            except Exception:
                log.exception("filing what waited for the store failed; trying again")

    async def stop(self) -> None:
        if self._catch_up is not None:
            self._catch_up.cancel()
            await asyncio.gather(self._catch_up, return_exceptions=True)
        await self.rt.callback_worker.stop()


class LoopLagComponent:
    """Watches the event loop that paces every call's audio: lag histogram on /metrics, a warning with the
    stack that held the loop when it passes 50 ms (core/looplag.py)."""

    def __init__(self) -> None:
        self.monitor = LoopLagMonitor()

    async def start(self) -> None:
        self.monitor.start()

    async def stop(self) -> None:
        await self.monitor.stop()


class _Rounds:
    """A job run every `interval()` seconds on this node until stopped; a failing round is logged, not fatal."""

    name = "rounds"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._task: asyncio.Task[None] | None = None

    def interval(self) -> float:
        raise NotImplementedError

    async def round(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:
                log.exception("%s round failed; trying again next interval", self.name)
            await asyncio.sleep(self.interval())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class RetentionComponent(_Rounds):
    """Enforces `desk.retention` (desk/retention.py): a round every `interval_s`, one node at a time."""

    name = "retention"

    def interval(self) -> float:
        return float(self.rt.settings.desk.retention.interval_s)

    async def round(self) -> None:
        await self.rt.desk.retention.run_if_due(self.rt.settings.desk.retention.interval_s)


class HeldRepliesComponent(_Rounds):
    """Marks failed the WhatsApp replies held for citizens who never wrote again (desk_api/channels/whatsapp.py,
    `sweep_held`). Each node sweeps: a reply is taken off its list atomically, so it is marked failed once whichever
    node finds it, and a round with nothing due is one ZRANGEBYSCORE."""

    name = "held-replies"

    def interval(self) -> float:
        return 3600.0

    async def round(self) -> None:
        if dropped := await whatsapp.sweep_held(self.rt):
            log.info("WhatsApp: %d held repl(ies) marked failed after 30 days", dropped)


def operations(rt: Runtime) -> Operations:
    return build_operations(rt.current_settings, rt.store, rt.clock, rt.desk, rt.calendars, rt.calls)


class SlaComponent:
    """SLA alerts (desk/sla.py): a round every `desk.sla.interval_s` on the one node that holds the `sla` lease."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.sla: SlaService | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.sla = operations(self.rt).sla
        runner = LeaseRunner(self.rt.store, "sla", holder=self.rt.settings.service.node_id, ttl=15.0)
        self._task = asyncio.create_task(runner.run(self._rounds), name="sla")

    async def _rounds(self, lease: Lease) -> None:
        assert self.sla is not None
        while True:
            try:
                sent = await self.sla.run_once(lease)
                if sent:
                    log.info("SLA: %d alert(s) sent", sent)
            except LeaseLost:
                raise  # the runner stops this holder's rounds and competes for the lease again
            except Exception:
                log.exception("SLA round failed; trying again next interval")
            await asyncio.sleep(self.rt.settings.desk.sla.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.sla is not None:
            await self.sla.close()


async def start_components(rt: Runtime) -> list[Component]:
    started: list[Component] = []
    for comp in (LoopLagComponent(), LineComponent(rt), VoicemailComponent(rt), RetentionComponent(rt),
                 SlaComponent(rt), HeldRepliesComponent(rt)):
        await comp.start()
        started.append(comp)
    return started
