"""How queued calls reach agents' phones."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.base import Strict


class SoftphoneConfig(Strict):
    """The agents' browser softphone: SIP over WebSocket to Kamailio, WebRTC media bridged by rtpengine
    (deploy/kamailio/softphone.cfg). Agents whose phone is "browser" are rung at sip:<agent id>@`domain`."""

    enabled: bool = Field(False, description="offer the softphone in the desk (needs Kamailio + rtpengine running)")
    ws_url: str = Field("ws://127.0.0.1:8088", description="the WebSocket the page connects to (wss:// in production)")
    domain: str = Field("127.0.0.1:5080", description="HOST:PORT of the Kamailio that registers agents' pages")
    secret: str = Field("", description="shared with Kamailio's auth_ephemeral (SOFTPHONE_SECRET); set it in the "
                                        "environment: ATIENDE_AGENTS__SOFTPHONE__SECRET")
    ttl_s: int = Field(600, ge=60, le=86_400, description="lifetime of the page's SIP credentials (renewed while open)")
    ice_servers: list[str] = Field(default_factory=list, description="STUN/TURN URIs for the page (none on a LAN)")


CONSENT_TEXT = ("Le informamos de que esta llamada puede ser grabada para garantizar la calidad del servicio. "
                "Si no desea que se grabe, indíqueselo a la persona que le atienda.")


class RecordingConfig(Strict):
    """Recording of agent calls (caller and agent mixed, stored like voicemails, deleted after
    desk.retention.recordings_days). The caller hears `consent_text` before being put through."""

    queues: list[str] = Field(default_factory=list, description="queues whose agent calls are recorded")
    consent_text: str = Field(CONSENT_TEXT, min_length=10, max_length=600,
                              description="said to the caller before an agent of a recorded queue is rung")


class AgentsConfig(Strict):
    connect: Literal["bridge", "refer"] = Field(
        "bridge", description="bridge: Atiende calls the agent and relays audio (works with any phone); refer: blind transfer")
    ring_timeout_s: float = Field(20.0, gt=0, description="ring an agent this long, then offer the call to the next one")
    away_after_no_answer: bool = Field(True, description="an agent who lets a call ring out is set away (RONA)")
    wrap_up_s: float = Field(0.0, ge=0, description="after a call, the agent stays busy this long before the next one")
    poll_s: float = Field(1.0, gt=0, description="how often a waiting caller looks for a free agent")
    overflow_before_close_s: float = Field(
        300.0, ge=0, description="a caller still waiting this close to closing time is offered a callback instead")
    softphone: SoftphoneConfig = Field(default_factory=SoftphoneConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    estimate_window_s: float = Field(
        1800.0, gt=0, description="the estimated wait comes from the calls answered in this recent window")
    estimate_min_answers: int = Field(
        3, ge=1, description="with fewer answers in the window the estimate is uncertain: 'más de N minutos'")
    announce_every_s: float = Field(
        60.0, ge=15, description="a waiting caller hears position and estimated wait again at most this often")
    service_level_s: float = Field(20.0, gt=0, description="the wallboard's service level: answered within this many s")
    stats_window_s: float = Field(3600.0, gt=0, description="the wallboard's figures cover this recent window")
    offer_callback_above_s: float | None = Field(
        600.0, gt=0, description="an estimated wait above this offers voicemail and a callback at once (none: never)")
