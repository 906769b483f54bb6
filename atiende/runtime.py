"""The composition root for one process: configuration, store, clock, and the services built on them.

Services are created on first use, so a CLI command that needs only the router never loads a speech model
or connects to Redis. This is the one place that builds services: each gets its dependencies in its
constructor (a settings getter where it must follow a reload), never the runtime itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from config.loader import ConfigError, Loaded, load
from config.models import Settings
from core.clock import Clock, SwitchableClock, SystemClock
from core.store import Store

if TYPE_CHECKING:
    from atiende.node import NodeState
    from config.channels import ChannelsConfig
    from config.ivr import IvrConfig
    from core.versioned import VersionedSection
    from desk import Desk
    from ivr.distribution import AgentQueue
    from ivr.ports import Dialer
    from ivr.records import CallRecords
    from ivr.service import IvrService
    from routing.calendar_service import CalendarService
    from routing.router_service import RouterService
    from speech.service import Speech
    from voicemail.callback_calls import CallbackCalls
    from voicemail.callbacks import CallbackService
    from voicemail.service import CallbackWorker, VoicemailService
    from voicemail.storage import RecordingStore

log = logging.getLogger(__name__)


class Runtime:
    def __init__(
        self,
        loaded: Loaded,
        store: Store | None = None,
        clock: Clock | None = None,
        config_dir: Path | None = None,
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.loaded = loaded
        self._store = store
        self._clock = SwitchableClock(clock or SystemClock())
        self.config_dir = config_dir
        self.overrides = overrides or {}
        self.last_reload_error: str | None = None
        self._reload_listeners: list[Callable[[Settings], None]] = []
        self._reload_lock = asyncio.Lock()
        # A test or embedder may serve another channels section than the files' one.
        self.channels_override: ChannelsConfig | None = None

    @property
    def clock(self) -> Clock:
        """What services get: setting `runtime.clock` switches the source under every service already built."""
        return self._clock

    @clock.setter
    def clock(self, source: Clock) -> None:
        self._clock.source = source.source if isinstance(source, SwitchableClock) else source

    @property
    def settings(self) -> Settings:
        return self.loaded.settings

    def current_settings(self) -> Settings:
        """The getter services keep: it reads the settings in force at each call, so they follow a reload."""
        return self.loaded.settings

    @property
    def config_version(self) -> str:
        return self.loaded.version

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("this command runs without a store")
        return self._store

    @property
    def data_dir(self) -> Path:
        return self.settings.service.data_dir

    def on_reload(self, listener: Callable[[Settings], None]) -> None:
        self._reload_listeners.append(listener)

    def reload(self) -> bool:
        """Re-read the config files; an invalid new config is refused and the old one keeps serving."""
        return self._apply(self._read())

    async def reload_async(self) -> bool:
        """`reload` for the running service (SIGHUP): reading and validating the files takes 0.3-0.4 s of CPU
        (YAML, schemas, routing tables), which on the event loop would stall every call's audio; it runs in a
        thread and only the swap and the listeners run on the loop. One reload at a time, in signal order."""
        async with self._reload_lock:
            return self._apply(await asyncio.to_thread(self._read))

    def _read(self) -> Loaded | ConfigError:
        try:
            return load(self.config_dir, {**os.environ, **self.overrides})
        except ConfigError as exc:
            return exc

    def _apply(self, new: Loaded | ConfigError) -> bool:
        if isinstance(new, ConfigError):
            self.last_reload_error = "; ".join(str(i) for i in new.issues)
            log.error("new configuration refused, still serving version %s: %s", self.config_version, self.last_reload_error)
            return False
        self.last_reload_error = None
        if new.version != self.loaded.version:
            self.loaded = new
            log.info("configuration reloaded", extra={"fields": {"config_version": new.version}})
            for listener in self._reload_listeners:
                listener(new.settings)
        return True

    # ---- services -----------------------------------------------------------------------------

    @cached_property
    def node(self) -> NodeState:
        from atiende.node import NodeState

        return NodeState(self._store)

    @cached_property
    def calendars(self) -> CalendarService:
        from routing.calendar_service import CalendarService

        svc = CalendarService(self.current_settings, self._store, self.clock)
        self.on_reload(lambda _s: svc.invalidate())
        return svc

    @cached_property
    def router(self) -> RouterService:
        from routing.router_service import RouterService

        svc = RouterService(self.current_settings, self._store, self.clock)
        self.on_reload(lambda _s: svc.invalidate())
        return svc

    @cached_property
    def speech(self) -> Speech:
        from speech.service import Speech

        speech = Speech.from_settings(self.settings)
        self.on_reload(speech.reconfigure)
        return speech

    @cached_property
    def desk(self) -> Desk:
        from desk import Desk
        from desk_api.channels.outbound import channel_senders

        desk = Desk(self.current_settings, self.store, self.clock, self.calendars)
        for channel, sender in channel_senders(self).items():
            desk.register_sender(channel, sender)
        return desk

    @cached_property
    def flows(self) -> VersionedSection[IvrConfig]:
        from ivr.service import flows_section

        section = flows_section(self.store, self.clock, self.current_settings)
        self.on_reload(lambda _s: section.invalidate())
        return section

    @cached_property
    def calls(self) -> CallRecords:
        from ivr.records import CallRecords

        return CallRecords(self.store)

    @cached_property
    def callbacks(self) -> CallbackService:
        from voicemail.callbacks import CallbackService

        return CallbackService(lambda: self.settings.voicemail, self.store, self.clock, self.calendars)

    @cached_property
    def voicemail(self) -> VoicemailService:
        from atiende.wiring import DeskVoicemail
        from voicemail.service import VoicemailService

        return VoicemailService(self.current_settings, self.store, self.clock, self.speech, DeskVoicemail(self.desk),
                                self.callbacks, self.recordings)

    @cached_property
    def recordings(self) -> RecordingStore:
        from voicemail.storage import LocalRecordings, RedisRecordings, SharedDirRecordings

        vm, local = self.settings.voicemail, LocalRecordings(self.data_dir)
        if vm.storage == "shared_dir" and vm.shared_dir is not None:
            return SharedDirRecordings(vm.shared_dir, self.store, self.settings.service.node_id)
        if vm.storage == "redis":
            return RedisRecordings(self.store, vm.audio_retention_days, local)
        return local

    @cached_property
    def agent_queue(self) -> AgentQueue:
        from atiende.wiring import DeskAgents
        from ivr.distribution import AgentQueue

        return AgentQueue(lambda: self.settings.agents, self.store, self.clock, self.calendars,
                          DeskAgents(self.desk, lambda: self.settings.agents.softphone),
                          recordings=self.recordings, data_dir=lambda: self.data_dir)

    @cached_property
    def callback_worker(self) -> CallbackWorker:
        from atiende.wiring import DeskVoicemail
        from voicemail.service import CallbackWorker

        return CallbackWorker(self.current_settings, self.callbacks, self.speech, DeskVoicemail(self.desk))

    @cached_property
    def callback_calls(self) -> CallbackCalls:
        from atiende.wiring import DeskCallbackCalls
        from voicemail.callback_calls import CallbackCalls

        return CallbackCalls(self.current_settings, self.store, self.clock, self.callbacks,
                             DeskCallbackCalls(self.desk, lambda: self.settings.agents.softphone), self.agent_queue,
                             self.calls)

    @cached_property
    def ivr(self) -> IvrService:
        from ivr.service import IvrService

        if self._store is None:  # offline (CLI without Redis): the files' flows, nothing written
            return IvrService(self.current_settings, self.clock, self.calendars, self.router)
        from atiende.wiring import DeskTickets
        from ivr.hooks import Hooks
        from voicemail.service import DurableVoicemail

        tickets = DeskTickets(self.desk)
        voicemail = DurableVoicemail(self.voicemail, tickets, self.calendars, self.current_settings, self.clock)
        hooks = Hooks(tickets=tickets, queue=self.agent_queue, voicemail=voicemail)
        return IvrService(self.current_settings, self.clock, self.calendars, self.router, flows=self.flows,
                          calls=self.calls, hooks=hooks)

    def attach_line(self, dialer: Dialer | None) -> None:
        """The line's SIP endpoint is up (or gone): queued calls ring agents and callbacks dial through it."""
        self.agent_queue.dialer = dialer
        self.callback_worker.dialer = dialer
        self.callback_calls.dialer = dialer
