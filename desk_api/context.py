"""What the HTTP layer needs of the process: the services it serves, typed, filled by the composition root.

Resources read them from `request.app.state.services` (`desk_api.deps.services_of`); nothing here builds
a service. `atiende.runtime.Runtime` is the implementation; tests may pass another.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from config.channels import ChannelsConfig
    from config.ivr import IvrConfig
    from config.models import Settings
    from core.clock import Clock
    from core.store import Store
    from core.versioned import VersionedSection
    from desk import Desk
    from ivr.records import CallRecords
    from ivr.service import IvrService
    from routing.calendar_service import CalendarService
    from routing.router_service import RouterService
    from speech.service import Speech
    from voicemail.callback_calls import CallbackCalls
    from voicemail.callbacks import CallbackService
    from voicemail.storage import RecordingStore


class NodeStatus(Protocol):
    """Whether this node takes new calls (not while draining or while the store is away)."""

    @property
    def ready(self) -> bool: ...

    @property
    def draining(self) -> bool: ...

    def reasons(self) -> list[str]: ...


class Services(Protocol):
    # A test or embedder may set another channels section than the files' one.
    channels_override: ChannelsConfig | None

    @property
    def settings(self) -> Settings: ...

    @property
    def config_version(self) -> str: ...

    @property
    def last_reload_error(self) -> str | None: ...

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def data_dir(self) -> Path: ...

    @property
    def calendars(self) -> CalendarService: ...

    @property
    def router(self) -> RouterService: ...

    @property
    def speech(self) -> Speech: ...

    @property
    def flows(self) -> VersionedSection[IvrConfig]: ...

    @property
    def calls(self) -> CallRecords: ...

    @property
    def ivr(self) -> IvrService: ...

    @property
    def desk(self) -> Desk: ...

    @property
    def callbacks(self) -> CallbackService: ...

    @property
    def callback_calls(self) -> CallbackCalls: ...

    @property
    def recordings(self) -> RecordingStore: ...

    @property
    def node(self) -> NodeStatus: ...
