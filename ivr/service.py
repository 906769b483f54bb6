"""The IVR service: builds an engine per contact from the current flow version, runs calls, chats and
simulations. The composition root gives it the flows, the calendar, the router, call records and hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from config.flows import Answer, queue_problems
from config.ivr import IvrConfig
from config.models import Settings
from core import logs
from core.clock import Clock, FixedClock
from core.errors import InvalidInput
from core.store import REDIS_ERRORS, Store
from core.versioned import VersionedSection
from ivr.answers import Answers, CsvFileAdapter
from ivr.contact import ContactIO, Session
from ivr.engine import Deps, Engine
from ivr.hooks import DryRunHooks, Hooks
from ivr.records import CallRecords
from ivr.textio import ChatConversation, InputKind, OutMessage, ScriptedIO
from routing.calendar import Calendar
from routing.calendar_service import CalendarService
from routing.router import Router
from routing.router_service import RouterService

log = logging.getLogger(__name__)
SECTION = "ivr"
RECORD_SAVE_S = 5.0  # a call record write that takes longer waits for later: the caller waits no more than this
MAX_UNSAVED = 2000
RETRY_STORE_S = 2.0


def flows_section(store: Store, clock: Clock, settings: Callable[[], Settings]) -> VersionedSection[IvrConfig]:
    """The flows as admins edit them (versions in Redis), over the files' version 0. Every write (a new version, a
    draft checked, a rollback) is refused when a step hands over to a queue the desk does not have."""
    def check(doc: IvrConfig) -> None:
        refuse_unknown_queues(doc, frozenset(q.id for q in settings().desk.queues))

    return VersionedSection(store, clock, SECTION, IvrConfig, lambda: settings().ivr, check=check)


def refuse_unknown_queues(doc: IvrConfig, queues: frozenset[str]) -> None:
    """422 `unknown-queue`: a caller handed over there would wait in a queue no agent works."""
    problems = queue_problems(doc, queues)
    if problems:
        raise InvalidInput("Los flujos pasan a colas que no existen: " + "; ".join(p.message for p in problems),
                           [{"loc": f"flows.{p.flow}[{p.step}].queue", "reason": p.message} for p in problems],
                           error_id="unknown-queue")


class IvrService:
    def __init__(self, settings: Callable[[], Settings], clock: Clock, calendars: CalendarService,
                 router: RouterService, *, flows: VersionedSection[IvrConfig] | None = None,
                 calls: CallRecords | None = None, hooks: Hooks | None = None) -> None:
        """Without `flows` (no store) the IVR runs offline: the files' flows, no records, dry-run hooks."""
        self._settings = settings
        self._clock = clock
        self._calendars = calendars
        self._router_service = router
        self._flows = flows
        self._calls = calls
        self.offline = flows is None
        self.hooks: Hooks = hooks or DryRunHooks.make()
        self._chats: set[asyncio.Task[Session]] = set()
        self._router_lock = asyncio.Lock()
        self._unsaved: dict[str, Session] = {}
        self._store_down_until = 0.0

    # ---- what a contact needs, at the versions current when it starts ------------------------------------

    async def current_flows(self) -> tuple[int, IvrConfig]:
        if self._flows is None:
            return 0, self._settings().ivr
        return await self._flows.current()

    async def _calendar(self) -> Calendar:
        return self._calendars.get_offline() if self.offline else await self._calendars.get()

    async def _router(self) -> Router:
        if self.offline:
            return self._router_service.get_offline()
        async with self._router_lock:  # calls arriving together must not compile the router in parallel threads
            return await self._router_service.get()

    async def self_service_intents(self) -> set[str]:
        """Intents whose flow answers by itself (starts with an `answer` step): the containment report's base."""
        _, doc = await self.current_flows()
        return {intent for intent, flow in doc.routes.items()
                if any(isinstance(step, Answer) for step in doc.flows.get(flow, [])[:1])}

    async def engine(self, *, clock: Clock | None = None, save: bool = True, hooks: Hooks | None = None) -> Engine:
        version, doc = await self.current_flows()
        settings = self._settings()
        deps = Deps(settings=settings, router=await self._router(), calendar=await self._calendar(),
                    hooks=hooks or self.hooks, clock=clock or self._clock, files=CsvFileAdapter(settings.knowledge))
        if save and self._calls is not None:
            deps.on_update = self._save_record
        return Engine(doc, deps, version, answers=Answers)

    async def _save_record(self, session: Session, *, final: bool = False) -> None:
        """Save a contact's record, never failing the contact: while the store is away the newest record of each
        contact waits in memory (bounded) and `flush_records` writes it when the store is back."""
        if self._calls is None:
            return
        if not final and self._clock.monotonic() < self._store_down_until:  # no failing round trip on every step
            self._keep(session)
            return
        try:
            await asyncio.wait_for(self._calls.save(session), RECORD_SAVE_S)
        except REDIS_ERRORS as exc:
            if not self._unsaved:
                log.warning("call records wait in memory while the store is away: %s", exc)
            self._store_down_until = self._clock.monotonic() + RETRY_STORE_S
            self._keep(session)
        except TimeoutError:  # slow, not away: this version waits, the next step's save or the flush writes it
            self._keep(session)
        else:
            self._unsaved.pop(session.call_id, None)

    def _keep(self, session: Session) -> None:
        self._unsaved[session.call_id] = session.model_copy()
        while len(self._unsaved) > MAX_UNSAVED:
            self._unsaved.pop(next(iter(self._unsaved)))

    async def flush_records(self) -> int:
        """Write the records kept while the store was away; returns how many are still waiting."""
        for call_id, session in list(self._unsaved.items()):
            if self._calls is None:
                break
            try:
                await asyncio.wait_for(self._calls.save(session), RECORD_SAVE_S)
            except (*REDIS_ERRORS, TimeoutError):
                break
            if self._unsaved.get(call_id) is session:
                del self._unsaved[call_id]
        return len(self._unsaved)

    async def run(self, io: ContactIO, *, call_id: str | None = None, trace_id: str | None = None,
                  clock: Clock | None = None, save: bool = True, hooks: Hooks | None = None) -> Session:
        eng = await self.engine(clock=clock, save=save, hooks=hooks)
        session = eng.new_session(io, call_id=call_id, trace_id=trace_id)
        with logs.bound(call_id=session.call_id, trace_id=session.trace_id):
            if eng.deps.on_update is not None:
                await eng.deps.on_update(session)
            done = await eng.run(io, session)
            if eng.deps.on_update is not None:
                await self._save_record(done, final=True)
        log.info("contact ended", extra=logs.fields(call_id=done.call_id, outcome=done.outcome, intent=done.intent,
                                                    steps=len(done.path)))
        return done

    async def simulate(self, inputs: list[tuple[InputKind, str]], *, at: datetime | None = None, channel: str = "voice",
                       caller: str = "+34600000000", save: bool = False, dry_run: bool = False,
                       ) -> tuple[Session, list[OutMessage]]:
        """Run the flows without audio: scripted answers in, every message and the outcome out.

        `dry_run` writes nothing (no tickets, no queue entries) but still reads tickets' status.
        """
        clock = FixedClock(at) if at is not None else None
        io = ScriptedIO(inputs, channel=channel, caller=caller, clock=clock or self._clock)
        hooks = None
        if dry_run and not self.offline:
            hooks = DryRunHooks.make(reader=self.hooks.tickets,
                                     queues=frozenset(q.id for q in self._settings().desk.queues))
        session = await self.run(io, clock=clock, save=save, hooks=hooks)
        return session, io.out

    async def start_chat(self, caller: str) -> tuple[ChatConversation, list[OutMessage]]:
        """A chat with the assistant over the same flows; feed the citizen's messages with `conv.reply(text)`."""
        conv = ChatConversation(caller)
        task = asyncio.create_task(self.run(conv))
        self._chats.add(task)

        def done(t: asyncio.Task[Session]) -> None:
            self._chats.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("chat contact failed", exc_info=t.exception())
            conv.finished()  # whatever happened, a waiting reply() returns

        task.add_done_callback(done)
        return conv, await conv.start()

    async def close(self) -> None:
        for task in list(self._chats):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

