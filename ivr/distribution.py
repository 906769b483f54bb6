"""Queued calls reaching agents: the queue hook the IVR's `enqueue` step uses on calls.

The caller waits in the queue's sorted set (first come, first served). Only the head of the
queue is offered: the desk reserves the longest-idle available agent with the queue's skill
(atomically, so two nodes never ring the same agent), the agent's desk is told (live event
with the IVR path, intent and transcript), and Atiende calls the agent's SIP phone and bridges
the media, so any phone works. REFER (blind transfer) is the configurable alternative. An
agent who lets it ring out is skipped (and set away, RONA); the caller keeps their place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from core import logs
from ivr.contact import ContactIO, Session
from ivr.hooks import QueuePlace, WaitResult

if TYPE_CHECKING:
    from atiende.runtime import Runtime

log = logging.getLogger(__name__)


class AgentQueue:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def enqueue(self, session: Session, queue: str) -> QueuePlace:
        r, k = self.rt.store.redis, self.rt.store.keys
        item = f"call:{session.call_id}"
        await r.zadd(k.calls_waiting(queue), {item: self.rt.clock.now().timestamp()}, nx=True)
        rank: Any = await r.zrank(k.calls_waiting(queue), item)
        position = int(rank or 0) + 1
        session.vars["queue_position"] = position  # an overflow callback keeps it as its priority
        return QueuePlace(queue=queue, item_id=item, position=position)

    async def wait(self, session: Session, io: ContactIO, place: QueuePlace, timeout_s: float) -> WaitResult:
        r, k = self.rt.store.redis, self.rt.store.keys
        waiting = k.calls_waiting(place.queue)
        try:
            if io.channel != "voice":
                return "handed_over"
            cfg = self.rt.settings.agents
            deadline = self.rt.clock.monotonic() + timeout_s
            while True:
                if io.ended:
                    return "hangup"
                left = deadline - self.rt.clock.monotonic()
                if left <= 0 or await self._closing_soon():
                    return "overflow"
                head = await r.zrange(waiting, 0, 0)
                if head and head[0] == place.item_id and self.rt.sip_endpoint is not None:
                    result = await self._offer(session, io, place)
                    if result is not None:
                        return result
                if not await io.hold(min(cfg.poll_s, left)):
                    return "hangup"
        finally:
            await r.zrem(waiting, place.item_id)

    async def _closing_soon(self) -> bool:
        """The line closes before this caller is likely to be served: better a callback than a cut call."""
        cal = await self.rt.calendars.get()  # type: ignore[attr-defined,unused-ignore]
        closes = cal.status(self.rt.clock.now()).closes_at
        margin = self.rt.settings.agents.overflow_before_close_s
        return closes is not None and (closes - self.rt.clock.now()).total_seconds() < margin

    async def _offer(self, session: Session, io: ContactIO, place: QueuePlace) -> WaitResult | None:
        """Ring one agent; None when nobody took the call (the caller keeps waiting at the head)."""
        desk: Any = self.rt.desk  # type: ignore[attr-defined,unused-ignore]
        cfg = self.rt.settings.agents
        agent = await desk.assign.reserve(place.queue, item=place.item_id, kind="call", actor="ivr")
        if agent is None:
            return None
        if not agent.sip_uri:
            log.warning("agent %s has no SIP URI; skipped", agent.id)
            await desk.assign.release(agent.id, actor="ivr")
            await desk.agents.set_presence(agent.id, "away", actor="ivr")
            return None
        await desk.events.publish({
            "type": "call.offered", "agent": agent.id, "queue": place.queue, "call_id": session.call_id,
            "trace_id": session.trace_id, "caller": session.caller, "intent": session.intent,
            "path": [f"{p.flow}/{p.verb}" for p in session.path],
            "transcript": [t.text or t.digits for t in session.transcripts if t.text or t.digits],
        })
        with logs.bound(call_id=session.call_id, trace_id=session.trace_id):
            if cfg.connect == "refer":
                ok = await io.transfer(agent.sip_uri)
                await self._after_call(agent.id, connected=ok)
                return "connected" if ok else None
            agent_call = await self._ring(io, agent.sip_uri, session)
            if agent_call is None:
                log.info("agent %s did not answer", agent.id)
                await self._after_call(agent.id, connected=False)
                return "hangup" if io.ended else None
            session.vars["agent"] = agent.id
            await desk.events.publish({"type": "call.connected", "agent": agent.id, "call_id": session.call_id})
            try:
                bridge = getattr(io, "bridge", None)
                if bridge is not None:
                    await bridge(agent_call)
            finally:
                with contextlib.suppress(Exception):
                    await agent_call.hangup()
                await desk.events.publish({"type": "call.ended", "agent": agent.id, "call_id": session.call_id})
                await self._after_call(agent.id, connected=True)
            return "connected"

    async def _ring(self, io: ContactIO, uri: str, session: Session) -> Any:
        """Call the agent's phone; gives up when the ring timeout passes or the caller hangs up meanwhile."""
        from telephony.errors import DialFailed

        endpoint = self.rt.sip_endpoint
        dial = asyncio.create_task(endpoint.dial(uri, from_user=session.caller or None,
                                                 ring_timeout=self.rt.settings.agents.ring_timeout_s,
                                                 trace_id=session.trace_id))
        call = getattr(io, "call", None)
        gone = asyncio.create_task(call.ended.wait()) if call is not None else None
        try:
            await asyncio.wait([t for t in (dial, gone) if t is not None], return_when=asyncio.FIRST_COMPLETED)
            if not dial.done():
                dial.cancel()  # the endpoint CANCELs the INVITE
                with contextlib.suppress(asyncio.CancelledError, DialFailed):
                    await dial
                return None
            try:
                return dial.result()
            except DialFailed as exc:
                log.info("dialling %s failed: %s", uri, exc)
                return None
        finally:
            if gone is not None:
                gone.cancel()

    async def _after_call(self, agent_id: str, *, connected: bool) -> None:
        desk: Any = self.rt.desk  # type: ignore[attr-defined,unused-ignore]
        cfg = self.rt.settings.agents
        if not connected and cfg.away_after_no_answer:
            await desk.agents.set_presence(agent_id, "away", actor="ivr")
            return
        if connected and cfg.wrap_up_s > 0:
            asyncio.get_running_loop().call_later(
                cfg.wrap_up_s, lambda: asyncio.ensure_future(desk.assign.release(agent_id, actor="ivr")))
            return
        await desk.assign.release(agent_id, actor="ivr")
