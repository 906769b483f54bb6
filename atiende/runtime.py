"""The composition root for one process: configuration, store, clock, and the services built on them.

Services are created on first use, so a CLI command that needs only the router never loads
a speech model or connects to Redis. Each package adds its service here, in its own block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.loader import ConfigError, Loaded, load
from config.models import Settings
from core.clock import Clock, SystemClock
from core.store import Store

if TYPE_CHECKING:
    from config.ivr import IvrConfig
    from core.versioned import VersionedSection
    from desk import Desk
    from ivr.records import CallRecords
    from ivr.service import IvrService
    from routing.calendar_service import CalendarService
    from routing.router_service import RouterService
    from speech.service import Speech
    pass

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
        self.clock: Clock = clock or SystemClock()
        self.config_dir = config_dir
        self.overrides = overrides or {}
        self.last_reload_error: str | None = None
        self._reload_listeners: list[Callable[[Settings], None]] = []
        # Set by the IVR component when the SIP endpoint runs: outbound calls (agents, callbacks) go through it.
        self.sip_endpoint: Any = None

    @property
    def settings(self) -> Settings:
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
        import os

        env = {**os.environ, **self.overrides}
        try:
            new = load(self.config_dir, env)
        except ConfigError as exc:
            self.last_reload_error = "; ".join(str(i) for i in exc.issues)
            log.error("new configuration refused, still serving version %s: %s", self.config_version, self.last_reload_error)
            return False
        self.last_reload_error = None
        if new.version != self.loaded.version:
            self.loaded = new
            log.info("configuration reloaded", extra={"fields": {"config_version": new.version}})
            for listener in self._reload_listeners:
                listener(new.settings)
        return True

    # ---- services, one block per owning package -------------------------------------------------

    # Each block is owned by one package; add a typed cached_property with a lazy import, e.g.
    #
    #   @cached_property
    #   def calendars(self) -> CalendarService:   (CalendarService imported under TYPE_CHECKING)
    #       from routing.calendar_service import CalendarService
    #       return CalendarService(self)

    # -- routing: calendars
    @cached_property
    def calendars(self) -> CalendarService:
        from routing.calendar_service import CalendarService

        return CalendarService(self)

    # -- routing: router
    @cached_property
    def router(self) -> RouterService:
        from routing.router_service import RouterService

        return RouterService(self)

    # -- speech

    @cached_property
    def speech(self) -> Speech:
        from speech.service import Speech

        return Speech.from_runtime(self)

    # -- desk
    @cached_property
    def desk(self) -> Desk:
        from desk import Desk

        return Desk(self)

    # -- ivr
    @cached_property
    def flows(self) -> VersionedSection[IvrConfig]:
        from ivr.service import flows_section

        return flows_section(self)

    @cached_property
    def calls(self) -> CallRecords:
        from ivr.records import CallRecords

        return CallRecords(self.store)

    @cached_property
    def ivr(self) -> IvrService:
        from ivr.service import IvrService

        return IvrService(self, offline=self._store is None)

    # -- voicemail
