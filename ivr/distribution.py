"""Queued calls reaching agents: the queue hook the IVR's `enqueue` step uses on calls.

The caller waits in the queue's sorted set (first come, first served). Only the head of the
queue is offered: the desk reserves the longest-idle available agent with the queue's skill
(atomically, so two nodes never ring the same agent), the agent's desk is told (live event
with the IVR path, intent and transcript), and Atiende calls the agent's SIP phone and bridges
the media, so any phone works. REFER (blind transfer) is the configurable alternative. An
agent who lets it ring out is skipped (and set away, RONA); the caller keeps their place.

While bridged, the node polls the store for what the desk asks of the call, from whichever node served the
request: a transfer to another queue, a supervisor joining (listen, whisper, barge: ivr/conference.py) and the
agent pausing or resuming the recording. Calls of the queues in `agents.recording.queues` are recorded; the
caller hears the consent notice before any agent is rung.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.agents import AgentsConfig
from core import logs
from core.clock import Clock
from core.store import REDIS_ERRORS, Store
from ivr import speak
from ivr.callio import CallIO
from ivr.conference import STORE_AWAY, BridgeControl, RecordingSink, as_dict
from ivr.contact import ContactIO, Session
from ivr.hooks import QueuePlace, WaitResult
from ivr.ports import AgentDesk, CallLeg, Dialer, OfferedAgent
from routing.calendar_service import CalendarService
from telephony.errors import DialFailed

log = logging.getLogger(__name__)


TRANSFER_POLL_S = 0.5  # how soon a transfer, a supervisor or a recording pause reaches the bridging node
# A waiting caller's node refreshes its "alive" key at every poll (and after each announcement or offer); a head
# without one belonged to a node that died, and is dropped so the callers behind it are offered again.
ALIVE_TTL_S = 60.0
# Dial failures that are the agent's phone's (rang out, busy, refused, not registered): only these set the agent
# away (RONA); ours (no RTP port, codec, capacity) and the caller leaving do not.
AGENTS_FAULT = frozenset({"no_answer", "busy", "rejected", "not_found", "unavailable"})
LIVE_REFRESH_S = 10.0
TRANSFER_PROMPT = "Le paso con otro servicio. Por favor, no cuelgue."


@dataclass(frozen=True)
class Transfer:
    """The agent handed the caller to another queue: they wait there at the head, not at the back."""

    queue: str


class AgentQueue:
    def __init__(self, cfg: Callable[[], AgentsConfig], store: Store, clock: Clock, calendars: CalendarService,
                 desk: AgentDesk, *, recordings: RecordingSink | None = None,
                 data_dir: Callable[[], Path] | None = None) -> None:
        """`cfg` reads the agents section as it is now. Calls reach agents once `dialer` is set (the line's SIP
        endpoint, when it runs). Recordings of agent calls are written under `data_dir()` and handed to
        `recordings` (the voicemails' RecordingStore); without `data_dir` nothing is recorded."""
        self._cfg = cfg
        self._recordings = recordings
        self._data_dir = data_dir
        self._store = store
        self._clock = clock
        self._calendars = calendars
        self._desk = desk
        self.dialer: Dialer | None = None
        self._wrap_ups: set[asyncio.Task[None]] = set()

    async def enqueue(self, session: Session, queue: str) -> QueuePlace:
        r, k = self._store.redis, self._store.keys
        item = f"call:{session.call_id}"
        async with r.pipeline(transaction=False) as pipe:
            pipe.set(k.call_waiting_alive(item), "1", ex=int(ALIVE_TTL_S))
            pipe.zadd(k.calls_waiting(queue), {item: self._clock.now().timestamp()}, nx=True)
            await pipe.execute()
        rank: Any = await r.zrank(k.calls_waiting(queue), item)
        position = int(rank or 0) + 1
        session.vars["queue_position"] = position  # an overflow callback keeps it as its priority
        session.vars["enqueued_at"] = self._clock.now().timestamp()
        wait_s, sure = await self.estimate(queue, position)
        session.vars["estimated_wait_s"] = round(wait_s) if wait_s is not None else None
        return QueuePlace(queue=queue, item_id=item, position=position, wait_s=wait_s, wait_certain=sure)

    async def estimate(self, queue: str, position: int) -> tuple[float | None, bool]:
        """(seconds, certain): the caller's wait from how fast the queue has been answered lately.

        `position` answers at the recent rate. Too few answers in the window: the seconds are a lower bound
        ("más de N minutos"); none at all: unknown (None)."""
        cfg = self._cfg()
        r, key = self._store.redis, self._store.keys.queue_answers(queue)
        now = self._clock.now().timestamp()
        try:
            await r.zremrangebyscore(key, "-inf", now - cfg.estimate_window_s)
            answered = int(await r.zcard(key))
        except REDIS_ERRORS:
            return None, False
        if answered == 0:
            return None, False
        rate = answered / cfg.estimate_window_s  # answers per second
        wait = position / rate
        return wait, answered >= cfg.estimate_min_answers

    async def _answered(self, queue: str, session: Session) -> None:
        now = self._clock.now().timestamp()
        waited = max(0.0, now - float(session.vars.get("enqueued_at") or now))
        session.vars["waited_s"] = round(waited, 1)  # the CDR's queue time
        with contextlib.suppress(*STORE_AWAY):
            await self._store.redis.zadd(self._store.keys.queue_answers(queue), {f"{session.call_id}|{waited:.1f}": now})

    async def _abandoned(self, queue: str, call_id: str) -> None:
        with contextlib.suppress(*REDIS_ERRORS):
            await self._store.redis.zadd(self._store.keys.queue_abandons(queue), {call_id: self._clock.now().timestamp()})

    async def wait(self, session: Session, io: ContactIO, place: QueuePlace, timeout_s: float) -> WaitResult:
        r, k = self._store.redis, self._store.keys
        waiting = k.calls_waiting(place.queue)
        try:
            if io.channel != "voice":
                return "handed_over"
            cfg = self._cfg()
            deadline = self._clock.monotonic() + timeout_s
            announced = self._clock.monotonic()
            if cfg.offer_callback_above_s is not None and place.wait_s is not None and \
                    place.wait_s > cfg.offer_callback_above_s:
                session.vars["overflow_reason"] = "estimated_wait"
                return "overflow"  # better a callback now than a long wait first
            await self._consent(session, io, place.queue)
            while True:
                if io.ended:
                    await self._abandoned(place.queue, session.call_id)
                    return "hangup"
                left = deadline - self._clock.monotonic()
                if left <= 0 or await self._closing_soon():
                    return "overflow"
                if self._clock.monotonic() - announced >= cfg.announce_every_s:
                    announced = self._clock.monotonic()
                    await self._announce(session, io, place)
                async with r.pipeline(transaction=False) as pipe:
                    pipe.set(k.call_waiting_alive(place.item_id), "1", ex=int(ALIVE_TTL_S))
                    pipe.zrange(waiting, 0, 0)
                    _, head = await pipe.execute()
                if head and head[0] != place.item_id and not await r.exists(k.call_waiting_alive(str(head[0]))):
                    log.warning("a waiting caller whose node is gone was at the head of %s: dropped", place.queue,
                                extra=logs.fields(item=str(head[0])))
                    await r.zrem(waiting, str(head[0]))
                    continue
                # Only a live call can be bridged to an agent's phone; a simulated voice contact just waits.
                if head and head[0] == place.item_id and self.dialer is not None and isinstance(io, CallIO):
                    result = await self._offer(session, io, place, self.dialer)
                    if isinstance(result, Transfer):
                        await r.zrem(waiting, place.item_id)
                        place = QueuePlace(queue=result.queue, item_id=place.item_id, position=1)
                        waiting = k.calls_waiting(place.queue)
                        async with r.pipeline(transaction=False) as pipe:
                            pipe.set(k.call_waiting_alive(place.item_id), "1", ex=int(ALIVE_TTL_S))
                            pipe.zadd(waiting, {place.item_id: 0})  # ahead of everyone who is queuing normally
                            await pipe.execute()
                        session.queue = place.queue
                        deadline = self._clock.monotonic() + timeout_s
                        await io.say(TRANSFER_PROMPT)
                        await self._consent(session, io, place.queue)
                        continue
                    if result is not None:
                        return result
                if not await io.hold(min(cfg.poll_s, left)):
                    await self._abandoned(place.queue, session.call_id)
                    return "hangup"
        finally:
            await self.leave(place)

    async def leave(self, place: QueuePlace) -> None:
        r, k = self._store.redis, self._store.keys
        with contextlib.suppress(*STORE_AWAY):
            async with r.pipeline(transaction=False) as pipe:
                pipe.zrem(k.calls_waiting(place.queue), place.item_id)
                pipe.delete(k.call_waiting_alive(place.item_id))
                await pipe.execute()

    def recorded(self, queue: str) -> bool:
        return queue in self._cfg().recording.queues and self._data_dir is not None

    async def _consent(self, session: Session, io: ContactIO, queue: str) -> None:
        """Before an agent of a recorded queue is rung, the caller is told (once per call); not interruptible."""
        if self.recorded(queue) and not session.vars.get("recording_notice"):
            text = self._cfg().recording.consent_text
            await io.say(text, cached=True, barge_in=False)
            session.said.append(text)  # the call record shows the caller was told
            session.vars["recording_notice"] = True

    async def _announce(self, session: Session, io: ContactIO, place: QueuePlace) -> None:
        """Position and estimated wait again, for a caller who has been holding a while."""
        r = self._store.redis
        try:
            rank: Any = await r.zrank(self._store.keys.calls_waiting(place.queue), place.item_id)
        except REDIS_ERRORS:
            return
        position = int(rank or 0) + 1
        wait, sure = await self.estimate(place.queue, position)
        await io.say(speak.waiting_text(position, wait, sure) + " Por favor, no cuelgue.")

    async def _closing_soon(self) -> bool:
        """The line closes before this caller is likely to be served: better a callback than a cut call."""
        cal = await self._calendars.get()
        closes = cal.status(self._clock.now()).closes_at
        margin = self._cfg().overflow_before_close_s
        return closes is not None and (closes - self._clock.now()).total_seconds() < margin

    async def _offer(self, session: Session, io: CallIO, place: QueuePlace, dialer: Dialer) -> WaitResult | Transfer | None:
        """Ring one agent; None when nobody took the call (the caller keeps waiting at the head)."""
        agent = await self._desk.reserve(place.queue, item=place.item_id)
        if agent is None:
            return None
        # Out of the waiting set while offered: the next caller's turn comes at once (another agent may be free),
        # and a caller talking to an agent is not "waiting" on the wallboard. Put back in place (its enqueue
        # score) when nobody took the call.
        r, waiting = self._store.redis, self._store.keys.calls_waiting(place.queue)
        score: Any = None
        with contextlib.suppress(*REDIS_ERRORS):
            score = await r.zscore(waiting, place.item_id)
            await r.zrem(waiting, place.item_id)
        result: WaitResult | Transfer | None = None
        try:
            result = await self._offer_to(agent, session, io, place, dialer)
            return result
        except BaseException:
            # Whatever went wrong (a store error, no RTP port, a bug), the agent must not stay reserved for a
            # call that is not coming: only if still held for this caller (wrap-up or a new offer are left be).
            with contextlib.suppress(Exception):
                await self._desk.unhold(agent.id, place.item_id)
            raise
        finally:
            if result is None and score is not None and not io.ended:
                with contextlib.suppress(*REDIS_ERRORS):
                    async with r.pipeline(transaction=False) as pipe:
                        pipe.set(self._store.keys.call_waiting_alive(place.item_id), "1", ex=int(ALIVE_TTL_S))
                        pipe.zadd(waiting, {place.item_id: float(score)}, nx=True)
                        await pipe.execute()

    async def _offer_to(self, agent: OfferedAgent, session: Session, io: CallIO, place: QueuePlace,
                        dialer: Dialer) -> WaitResult | Transfer | None:
        desk = self._desk
        cfg = self._cfg()
        if not agent.sip_uri:
            log.warning("agent %s has no SIP URI; skipped", agent.id)
            await desk.set_away(agent.id)
            return None
        await self._publish({
            "type": "call.offered", "agent": agent.id, "queue": place.queue, "call_id": session.call_id,
            "trace_id": session.trace_id, "caller": session.caller, "intent": session.intent,
            "path": [f"{p.flow}/{p.verb}" for p in session.path],
            "transcript": [t.text or t.digits for t in session.transcripts if t.text or t.digits],
        })
        with logs.bound(call_id=session.call_id, trace_id=session.trace_id):
            if cfg.connect == "refer":
                if await io.transfer(agent.sip_uri):
                    # The caller now talks to the agent's phone outside Atiende, which cannot tell when that
                    # ends: the agent stays busy with this call until they set themselves available.
                    await self._publish({"type": "call.referred", "agent": agent.id, "call_id": session.call_id})
                    return "connected"
                await self._after_call(agent.id, place.item_id, outcome="failed")
                return None
            agent_call = await self._ring(io, dialer, agent.sip_uri, session)
            if isinstance(agent_call, str):
                if io.ended:
                    log.info("the caller left while agent %s's phone rang", agent.id)
                    await self._after_call(agent.id, place.item_id, outcome="abandoned")
                    return "hangup"
                log.info("agent %s did not take the call (%s)", agent.id, agent_call)
                await self._after_call(agent.id, place.item_id,
                                       outcome="no_answer" if agent_call in AGENTS_FAULT else "failed")
                return None
            transfer: Transfer | None = None
            try:
                session.vars["agent"] = agent.id
                await self._answered(place.queue, session)
                await self._publish({"type": "call.connected", "agent": agent.id, "call_id": session.call_id,
                                     "recording": self.recorded(place.queue)})
                transfer = await self._bridge_until_transfer(io, agent_call, session.call_id, session=session,
                                                             queue=place.queue, agent_id=agent.id)
            finally:
                with contextlib.suppress(Exception):
                    await agent_call.hangup()
                await self._after_call(agent.id, place.item_id, outcome="connected")
                await self._publish({"type": "call.ended", "agent": agent.id, "call_id": session.call_id,
                                     "transferred_to": transfer.queue if transfer else None})
                if session.ticket_ref:
                    try:
                        await self._desk.note_call(session.ticket_ref, call_id=session.call_id, agent=agent.id,
                                                   recordings=[str(r) for r in session.vars.get("recordings") or []])
                    except Exception as exc:  # the note links the call from the ticket; the call itself is done
                        log.warning("call not noted on ticket %s: %s", session.ticket_ref, exc)
            if transfer is not None and not io.ended:
                log.info("agent %s transferred the caller to queue %s", agent.id, transfer.queue)
                return transfer
            return "connected"

    async def bridge_legs(self, caller: CallLeg, agent_call: CallLeg, call_id: str, *, session: Session,
                          agent_id: str) -> None:
        """Bridge two legs Atiende placed itself (an agent's call to a callback's citizen) exactly as a queued call
        is bridged: a live agent call supervisors may join, until either side hangs up. Transfers to a queue are
        refused (no IVR runs on such a caller's leg to wait in one), and nothing is recorded (no consent notice)."""
        await self._bridge_until_transfer(caller, agent_call, call_id, session=session, agent_id=agent_id,
                                          transfers=False)

    async def _bridge_until_transfer(self, io: CallIO | CallLeg, agent_call: CallLeg, call_id: str, *,
                                     session: Session | None = None, queue: str = "",
                                     agent_id: str = "", transfers: bool = True) -> Transfer | None:
        """Relay audio both ways until either side hangs up, or the agent transfers the caller; meanwhile join a
        supervisor and pause or resume the recording as asked (keys the desk's API sets, read here on whatever
        node serves the call)."""
        r, k = self._store.redis, self._store.keys
        bridge = asyncio.create_task(io.bridge(agent_call), name=f"bridge-{call_id}")
        now = self._clock.now()
        live = {"call_id": call_id, "queue": queue, "agent": agent_id, "since": now.isoformat(),
                "since_ts": now.timestamp(), "caller": logs.mask_number(session.caller) if session else "",
                "ticket_ref": session.ticket_ref if session else None}
        control = BridgeControl(store=self._store, clock=self._clock, dialer=self.dialer, call_id=call_id,
                                trace_id=session.trace_id if session else "",
                                caller=io.call if isinstance(io, CallIO) else io,
                                agent=agent_call,
                                live=live, ring_timeout_s=self._cfg().ring_timeout_s, publish=self._desk.publish,
                                agents=self._desk)
        # Nothing but the legs ends the conversation: a store refusing requests, or a fault in supervision or the
        # recording, is logged (once until it clears) and the citizen's call goes on.
        failing: set[str] = set()

        async def carry_on(what: str, step: Awaitable[None]) -> None:
            try:
                await step
            except Exception:
                if what not in failing:
                    failing.add(what)
                    log.exception("%s of call %s failed; the call goes on", what, call_id)
            else:
                failing.discard(what)

        async def start_recording() -> None:
            if self.recorded(queue) and self._data_dir is not None and session is not None:
                rec_id = await control.start_recording(self._data_dir(), {
                    "queue": queue, "agent": agent_id, "ticket_ref": session.ticket_ref,
                    "caller": logs.mask_number(session.caller)})
                if rec_id:
                    session.vars.setdefault("recordings", []).append(rec_id)
                    live["recording_id"] = rec_id

        async def supervision(want: dict[str, Any] | None) -> None:
            await control.poll_dial()
            await control.supervise(want)

        try:
            if await control.attach() and session is not None:
                await carry_on("recording", start_recording())
            await carry_on("live entry", control.save_live())
            refreshed = self._clock.monotonic()
            store_away = False
            while not bridge.done():
                await asyncio.wait([bridge], timeout=TRANSFER_POLL_S)
                if bridge.done():
                    break
                try:
                    async with r.pipeline(transaction=False) as pipe:
                        pipe.getdel(k.call_transfer(call_id))
                        pipe.get(k.call_supervise(call_id))
                        pipe.get(k.call_recording_state(call_id))
                        target, supervise, rec_state = await pipe.execute()
                except STORE_AWAY as exc:
                    if not store_away:
                        store_away = True
                        log.warning("the store is away during call %s (%s): the call goes on, requests wait",
                                    call_id, exc)
                    continue
                if store_away:
                    store_away = False
                    log.info("the store is back during call %s", call_id)
                if target and not transfers:
                    log.warning("call %s cannot be transferred to queue %s: refused", call_id, target)
                elif target:
                    await agent_call.hangup()
                    await bridge
                    return Transfer(queue=str(target))
                await carry_on("supervision", supervision(as_dict(supervise) if supervise else None))
                await carry_on("recording", control.recording_state(str(rec_state) if rec_state else None))
                if self._clock.monotonic() - refreshed >= LIVE_REFRESH_S:
                    refreshed = self._clock.monotonic()
                    await carry_on("live entry", control.save_live())
            await bridge
            return None
        finally:
            if not bridge.done():
                bridge.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await bridge
            if session is not None and control.joined:
                session.vars.setdefault("supervised_by", []).extend(control.joined)
            try:
                await control.close(self._recordings)
            except Exception:  # a transfer in hand must still happen; the call's end is the legs'
                log.exception("tidying up after call %s failed", call_id)

    async def _publish(self, event: dict[str, Any]) -> None:
        """Desk events are news, not state: the store being away must not cut a call or strand an agent."""
        try:
            await self._desk.publish(event)
        except STORE_AWAY as exc:
            log.warning("desk event %s not published: %s", event.get("type"), exc)

    async def _ring(self, io: CallIO, dialer: Dialer, uri: str, session: Session) -> CallLeg | str:
        """Call the agent's phone; gives up when the ring timeout passes or the caller hangs up meanwhile. The
        answered leg, or why there is none ("abandoned", a DialFailed reason, "error")."""
        dial = asyncio.create_task(dialer.dial(uri, from_user=session.caller or None,
                                               ring_timeout=self._cfg().ring_timeout_s, trace_id=session.trace_id))
        gone = asyncio.create_task(io.call.ended.wait())
        try:
            await asyncio.wait([dial, gone], return_when=asyncio.FIRST_COMPLETED)
            if not dial.done():
                dial.cancel()  # the endpoint CANCELs the INVITE
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await dial
                return "abandoned"
            try:
                return dial.result()
            except DialFailed as exc:
                log.info("dialling %s failed: %s", uri, exc)
                return str(exc.reason)
            except Exception as exc:  # no RTP port, DNS, the line going down: ours, not the agent's
                log.warning("dialling %s failed: %r", uri, exc)
                return "error"
        finally:
            gone.cancel()

    async def _after_call(self, agent_id: str, item: str, *, outcome: str) -> None:
        """The agent's presence after an offer. Every release is conditional on the agent still being busy with
        this caller: meanwhile they may have set themselves away, or become available and taken another call,
        which a late release would undo (and offer them a second caller)."""
        desk = self._desk
        cfg = self._cfg()
        try:
            if outcome == "no_answer" and cfg.away_after_no_answer:
                await desk.set_away(agent_id)
            elif outcome == "connected" and cfg.wrap_up_s > 0:
                task = asyncio.create_task(self._wrap_up(agent_id, item, cfg.wrap_up_s), name=f"wrap-up-{agent_id}")
                self._wrap_ups.add(task)
                task.add_done_callback(self._wrap_ups.discard)
            else:
                await desk.unhold(agent_id, item)
        except Exception as exc:  # the store is away: the agent sets themselves available from the desk
            log.warning("agent %s left busy after the call: %s", agent_id, exc)

    async def _wrap_up(self, agent_id: str, item: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        with contextlib.suppress(Exception):
            await self._desk.unhold(agent_id, item)
