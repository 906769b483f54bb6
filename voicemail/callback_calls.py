"""Click-to-call from the desk: an agent calls a callback's citizen back, through Atiende.

The agent who holds a callback's claim asks for the call (`POST /api/v1/callbacks/{id}/call`). Atiende first rings
the agent's own phone, where queued calls ring them (their SIP URI, or the desk's softphone), and only once they
answer dials the number stored on the callback through the trunk, checked again against the dial policy
(`core.phone.check`): the number never comes from the request, so nobody can make the line call a number of their
choosing. When the citizen answers, both legs are bridged as a queued call is (`ivr.distribution`: a live agent
call a supervisor may join). The dial's result is the callback's attempt (`reached`, `busy`, `no_answer`,
`wrong_number`, as the callback worker maps it), noted on the ticket too. An agent who does not answer their own
phone dials nobody, and the callback stays theirs.

Meanwhile the agent is busy for the queues (no queued call is offered to them); after a conversation they are in
wrap-up (`agents.wrap_up_s`), then back to the presence they had. One such call per agent (their presence is taken
atomically) and per callback (a key set only if absent) at a time. The call is a task of this service, not of the
HTTP request: the request returns at once, and the desk follows the call through live events (`callback.call`,
addressed to the agent) or `GET /api/v1/callbacks/{id}/call` (the state is in the store, so any node answers it).
Each call leaves a call record (so a CDR) under its own id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from config.models import Settings
from core import logs
from core.clock import Clock
from core.errors import Conflict, InvalidInput, Unavailable
from core.phone import check as phone_check
from core.store import REDIS_ERRORS, Store
from ivr.contact import PathEntry, Session
from ivr.ports import CallLeg, Dialer
from ivr.records import CallRecords
from telephony.errors import DialFailed
from voicemail.callbacks import Callback, CallbackService, Outcome

log = logging.getLogger(__name__)

State = Literal["ringing_agent", "dialing_citizen", "connected", "ended"]
# Why a call ended short: the agent's phone did not answer, or something on our side failed (no attempt is recorded,
# the callback stays the agent's); or the agent hung up while the citizen's phone rang (recorded as `no_answer`).
Ending = Literal["agent_no_answer", "agent_hung_up", "failed"]
STATE_TTL_S = 24 * 3600
ACTIVE_TTL_S = 3600  # a node killed mid-call leaves the callback callable again after this
ITEM_PREFIX = "callback-call:"  # the agent's `current` while busy with such a call
# The callback's "a call is in progress" mark goes only if it is still this call's (one that outlived its TTL may
# have been replaced by a newer call's).
_CLEAR_ACTIVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class CallbackCallState(BaseModel):
    id: str
    callback_id: str
    agent: str
    actor: str
    state: State
    outcome: Outcome | None = None
    ending: Ending | None = None
    note: str = ""
    started_at: str
    ended_at: str | None = None


class CallbackCallDesk(Protocol):
    """What these calls need of the desk (atiende/wiring.py implements it)."""

    async def phone_of(self, agent_id: str) -> str | None:
        """Where the agent's calls ring (as for queued calls); None: nowhere."""
        ...

    async def hold(self, agent_id: str, item: str) -> str | None:
        """Busy with `item`, atomically, unless already busy (on a call, offered one, in wrap-up): the presence
        they had, or None when they are busy."""
        ...

    async def release(self, agent_id: str, item: str, presence: str) -> None:
        """Back to `presence`, only if still busy with `item`."""
        ...

    async def publish(self, event: dict[str, Any]) -> None: ...

    async def note_callback_call(self, ref: str, *, callback_id: str, outcome: str, note: str, agent: str,
                                 call_id: str) -> None: ...


class LegBridge(Protocol):
    """How two answered legs are bridged (ivr.distribution.AgentQueue.bridge_legs)."""

    async def bridge_legs(self, caller: CallLeg, agent_call: CallLeg, call_id: str, *, session: Session,
                          agent_id: str) -> None: ...


def dial_outcome(exc: DialFailed) -> Outcome:
    """A failed dial of a citizen's number as a callback outcome (the callback worker's mapping)."""
    if exc.reason == "busy":
        return "busy"
    if exc.reason in ("rejected", "not_found", "bad_uri", "unreachable") or exc.status in (404, 484, 604):
        return "wrong_number"
    return "no_answer"


class CallbackCalls:
    def __init__(self, settings: Callable[[], Settings], store: Store, clock: Clock, callbacks: CallbackService,
                 desk: CallbackCallDesk, bridge: LegBridge, calls: CallRecords) -> None:
        """Calls go out once `dialer` is set (the line's SIP endpoint, when it runs); `on_ended` (the CDR webhook)
        gets each call's record when it ends."""
        self._settings = settings
        self._store = store
        self._clock = clock
        self._callbacks = callbacks
        self._desk = desk
        self._bridge = bridge
        self._calls = calls
        self.dialer: Dialer | None = None
        self.on_ended: Callable[[Session], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def state(self, callback_id: str) -> CallbackCallState | None:
        raw = await self._store.redis.get(self._store.keys.callback_call(callback_id))
        return None if raw is None else CallbackCallState.model_validate_json(raw)

    async def start(self, cb: Callback, *, agent_id: str, actor: str) -> CallbackCallState:
        """Ring `agent_id`'s phone, then the callback's citizen, in the background. The caller (the HTTP route)
        has checked that `actor` may call about `cb`; the number and the agent's phone are read here."""
        vm = self._settings().voicemail
        number = phone_check(cb.phone, allow_international=vm.callback_allow_international,
                             blocked=tuple(vm.callback_blocked))
        if not number.allowed or number.e164 is None:
            raise InvalidInput(f"No se puede llamar a este número: {number.reason}",
                               {"category": number.category}, error_id="phone-not-allowed")
        dialer = self.dialer
        if dialer is None:
            raise Unavailable("La línea telefónica no está activa en este nodo.", error_id="no-line")
        uri = await self._desk.phone_of(agent_id)
        if not uri:
            raise Conflict("Su ficha de agente no tiene teléfono al que llamar (una URI SIP o el teléfono del "
                           "escritorio).", error_id="no-phone")
        r, k = self._store.redis, self._store.keys
        call_id = "cbc-" + uuid.uuid4().hex[:16]
        if not await r.set(k.callback_call_active(cb.id), call_id, nx=True, ex=ACTIVE_TTL_S):
            raise Conflict("Ya hay una llamada en curso para esta devolución.", {"id": cb.id},
                           error_id="callback-call-in-progress")
        item = ITEM_PREFIX + call_id
        try:
            before = await self._desk.hold(agent_id, item)
        except BaseException:
            await self._clear(cb.id, call_id)
            raise
        if before is None:
            await self._clear(cb.id, call_id)
            raise Conflict("Ya está en una llamada (o acaba de terminar una): espere a estar libre.",
                           {"agent": agent_id}, error_id="agent-busy")
        st = CallbackCallState(id=call_id, callback_id=cb.id, agent=agent_id, actor=actor, state="ringing_agent",
                               started_at=self._clock.now().isoformat())
        try:
            await self._save(st)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._desk.release(agent_id, item, before)
                await self._clear(cb.id, call_id)
            raise
        task = asyncio.create_task(self._run(st, cb, number.e164, uri, dialer, before), name=f"callback-{call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return st

    async def stop(self) -> None:
        """The node is stopping: calls in progress end (their legs hung up, agents released)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait(self, within: float) -> None:
        """Until the calls in progress end (tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)

    # ---- the call -------------------------------------------------------------------------------------------

    async def _clear(self, callback_id: str, call_id: str) -> None:
        await self._store.redis.eval(_CLEAR_ACTIVE, 1, self._store.keys.callback_call_active(callback_id), call_id)

    async def _save(self, st: CallbackCallState) -> None:
        await self._store.redis.set(self._store.keys.callback_call(st.callback_id), st.model_dump_json(),
                                    ex=STATE_TTL_S)

    async def _progress(self, st: CallbackCallState, state: State) -> None:
        """The new state, in the store and to the agent's desk; news only: the store away does not cut the call."""
        st.state = state
        if state == "ended":
            st.ended_at = self._clock.now().isoformat()
        try:
            await self._save(st)
            await self._desk.publish({"type": "callback.call", "agent": st.agent, "callback_id": st.callback_id,
                                      "call_id": st.id, "state": state, "outcome": st.outcome, "ending": st.ending})
        except REDIS_ERRORS as exc:
            log.warning("callback call %s: state %s not published: %s", st.id, state, exc)

    async def _run(self, st: CallbackCallState, cb: Callback, number: str, agent_uri: str, dialer: Dialer,
                   before: str) -> None:
        cfg = self._settings()
        now = self._clock.now()
        session = Session(call_id=st.id, trace_id=cb.trace_id or uuid.uuid4().hex[:16], caller=number,
                          started_at=now, ticket_ref=cb.ticket_ref,
                          vars={"agent": st.agent, "callback": cb.id, "direction": "outbound"})
        agent_leg: CallLeg | None = None
        citizen: CallLeg | None = None
        connected = False
        with logs.bound(call_id=st.id, trace_id=session.trace_id, ticket_id=cb.ticket_ref):
            try:
                await self._progress(st, "ringing_agent")
                try:
                    agent_leg = await dialer.dial(agent_uri, from_user=number, ring_timeout=cfg.agents.ring_timeout_s,
                                                  trace_id=session.trace_id)
                except DialFailed as exc:
                    log.info("callback call %s: the agent's phone did not answer (%s)", st.id, exc)
                    st.ending, st.note = "agent_no_answer", str(exc.reason)
                    return
                await self._progress(st, "dialing_citizen")
                citizen = await self._dial_citizen(st, dialer, number, agent_leg, session.trace_id,
                                                   cfg.voicemail.dial_ring_timeout_s)
                if citizen is None:
                    return
                connected = True
                st.outcome, st.note = "reached", "conversación con el agente"
                await self._progress(st, "connected")
                self._path(session, "connected")
                await self._save_record(session)
                await self._bridge.bridge_legs(citizen, agent_leg, st.id, session=session, agent_id=st.agent)
            except Exception as exc:
                log.exception("callback call %s failed", st.id)
                if st.outcome is None:
                    st.ending, st.note = "failed", type(exc).__name__
            finally:
                for leg in (citizen, agent_leg):
                    if leg is not None:
                        with contextlib.suppress(Exception):
                            await leg.hangup()
                await asyncio.shield(self._finish(st, cb, session, before, connected))

    async def _dial_citizen(self, st: CallbackCallState, dialer: Dialer, number: str, agent_leg: CallLeg,
                            trace_id: str, ring_timeout: float) -> CallLeg | None:
        """The citizen's number through the trunk, given up if the agent hangs up meanwhile; the answered leg, or
        None with the outcome (or the ending) noted on `st`."""
        dial = asyncio.create_task(dialer.dial(number, ring_timeout=ring_timeout, trace_id=trace_id))
        gone = asyncio.create_task(agent_leg.ended.wait())
        try:
            await asyncio.wait([dial, gone], return_when=asyncio.FIRST_COMPLETED)
            if not dial.done():
                dial.cancel()  # the endpoint CANCELs the INVITE
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await dial
                # The citizen's phone rang: an attempt all the same (so ringing someone again and again leaves
                # a trace and uses up the retries), noted as the agent's doing.
                st.outcome, st.ending = "no_answer", "agent_hung_up"
                st.note = "el agente colgó antes de que contestara el ciudadano"
                return None
            try:
                return dial.result()
            except DialFailed as exc:
                st.outcome, st.note = dial_outcome(exc), str(exc)
                return None
        finally:
            gone.cancel()
            if not dial.done():
                dial.cancel()

    def _path(self, session: Session, verb: str) -> None:
        session.path.append(PathEntry(flow="callback", index=len(session.path), verb=verb, at=self._clock.now()))

    async def _save_record(self, session: Session) -> None:
        try:
            await self._calls.save(session)
        except REDIS_ERRORS as exc:
            log.warning("call record of %s not saved: %s", session.call_id, exc)

    async def _finish(self, st: CallbackCallState, cb: Callback, session: Session, before: str,
                      connected: bool) -> None:
        """The attempt on the callback and its ticket (when the citizen's number was dialled), the call record,
        the agent back (after wrap-up when they talked), the callback callable again."""
        if st.outcome is not None:
            try:
                await self._callbacks.record_attempt(cb.id, st.outcome, st.actor, st.note)
            except Exception as exc:
                log.warning("callback %s: attempt %s not recorded: %s", cb.id, st.outcome, exc)
            if cb.ticket_ref:
                try:
                    await self._desk.note_callback_call(cb.ticket_ref, callback_id=cb.id, outcome=st.outcome,
                                                        note=st.note, agent=st.agent, call_id=st.id)
                except Exception as exc:
                    log.warning("callback %s: attempt not noted on ticket %s: %s", cb.id, cb.ticket_ref, exc)
        if st.outcome is not None or connected:
            session.ended_at = self._clock.now()
            session.ended_by = st.outcome or ""
            if not connected:
                self._path(session, st.outcome or "ended")
            await self._save_record(session)
            if self.on_ended is not None:
                with contextlib.suppress(Exception):
                    self.on_ended(session)
        await self._progress(st, "ended")
        with contextlib.suppress(*REDIS_ERRORS):
            await self._clear(cb.id, st.id)
        item = ITEM_PREFIX + st.id
        wrap_up = self._settings().agents.wrap_up_s
        if connected and wrap_up > 0:
            task = asyncio.create_task(self._wrap_up(st.agent, item, before, wrap_up), name=f"wrap-up-{st.agent}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            await self._release(st.agent, item, before)
        log.info("callback call %s ended", st.id, extra=logs.fields(
            callback_id=cb.id, outcome=st.outcome, ending=st.ending, agent=st.agent))

    async def _wrap_up(self, agent_id: str, item: str, before: str, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.shield(self._release(agent_id, item, before))

    async def _release(self, agent_id: str, item: str, before: str) -> None:
        try:
            await self._desk.release(agent_id, item, before)
        except Exception as exc:  # the store is away: the agent sets their presence from the desk
            log.warning("agent %s left busy after a callback call: %s", agent_id, exc)
