"""`runtime.ivr`: builds an engine per contact from the current flow version, runs calls, chats and simulations.

`start(runtime)` is the component `atiende run` starts: the SIP endpoint of the line, each
inbound call answered and run through the flows over `CallIO`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from config.ivr import IvrConfig
from core import logs
from core.clock import Clock, FixedClock
from core.versioned import VersionedSection
from ivr.answers import CsvFileAdapter
from ivr.contact import ContactIO, Session
from ivr.engine import Deps, Engine
from ivr.hooks import DryRunHooks, Hooks, desk_hooks
from ivr.textio import ChatConversation, InputKind, OutMessage, ScriptedIO

if TYPE_CHECKING:
    from atiende.runtime import Runtime

log = logging.getLogger(__name__)
SECTION = "ivr"


def flows_section(runtime: Runtime) -> VersionedSection[IvrConfig]:
    section = VersionedSection(runtime.store, runtime.clock, SECTION, IvrConfig, lambda: runtime.settings.ivr)
    runtime.on_reload(lambda _s: section.invalidate())
    return section


class IvrService:
    def __init__(self, runtime: Runtime, *, offline: bool = False) -> None:
        self.rt = runtime
        self.offline = offline
        self.hooks: Hooks = DryRunHooks.make() if offline else desk_hooks(runtime)
        self._chats: set[asyncio.Task[Session]] = set()
        self._router_lock = asyncio.Lock()

    # ---- what a contact needs, at the versions current when it starts ------------------------------------

    async def current_flows(self) -> tuple[int, IvrConfig]:
        if self.offline:
            return 0, self.rt.settings.ivr
        return await self.rt.flows.current()  # type: ignore[attr-defined,unused-ignore]

    async def _calendar(self) -> Any:
        cals: Any = self.rt.calendars  # type: ignore[attr-defined,unused-ignore]
        return cals.get_offline() if self.offline else await cals.get()

    async def _router(self) -> Any:
        service: Any = getattr(self.rt, "router", None)
        if service is None:  # a runtime without the router service block: compile from the files
            from routing.router import Router

            return Router(self.rt.settings.routing, self.rt.settings.knowledge)
        if self.offline:
            return service.get_offline()
        async with self._router_lock:  # calls arriving together must not compile the router in parallel threads
            return await service.get()

    async def self_service_intents(self) -> set[str]:
        """Intents whose flow answers by itself (starts with an `answer` step): the containment report's base."""
        from ivr.flows import Answer

        _, doc = await self.current_flows()
        return {intent for intent, flow in doc.routes.items()
                if any(isinstance(step, Answer) for step in doc.flows.get(flow, [])[:1])}

    async def engine(self, *, clock: Clock | None = None, save: bool = True, hooks: Hooks | None = None) -> Engine:
        version, doc = await self.current_flows()
        deps = Deps(settings=self.rt.settings, router=await self._router(), calendar=await self._calendar(),
                    hooks=hooks or self.hooks, clock=clock or self.rt.clock,
                    files=CsvFileAdapter(self.rt.settings.knowledge))
        if save and not self.offline:
            calls: Any = self.rt.calls  # type: ignore[attr-defined,unused-ignore]
            deps.on_update = calls.save
        return Engine(doc, deps, version)

    async def run(self, io: ContactIO, *, call_id: str | None = None, trace_id: str | None = None,
                  clock: Clock | None = None, save: bool = True, hooks: Hooks | None = None) -> Session:
        eng = await self.engine(clock=clock, save=save, hooks=hooks)
        session = eng.new_session(io, call_id=call_id, trace_id=trace_id)
        with logs.bound(call_id=session.call_id, trace_id=session.trace_id):
            if eng.deps.on_update is not None:
                await self.rt.calls.save(session)  # type: ignore[attr-defined,unused-ignore]
            done = await eng.run(io, session)
            if eng.deps.on_update is not None:
                await self.rt.calls.save(done)  # type: ignore[attr-defined,unused-ignore]
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
        io = ScriptedIO(inputs, channel=channel, caller=caller, clock=clock or self.rt.clock)
        hooks = None
        if dry_run and not self.offline:
            hooks = DryRunHooks.make(reader=self.hooks.tickets)
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


async def start(runtime: Runtime) -> Any:
    """The component of `atiende run`: the line's SIP endpoint feeding calls to the IVR."""
    from ivr.callio import IvrComponent

    comp = IvrComponent(runtime)
    await comp.start()
    return comp
