"""The whole configuration: one section per file in a config directory (`<section>.yaml`)."""

from __future__ import annotations

from pydantic import Field

from config.agents import AgentsConfig
from config.base import Strict
from config.calendar import CalendarsConfig
from config.channels import ChannelsConfig
from config.desk import DeskConfig
from config.ivr import IvrConfig
from config.knowledge import KnowledgeConfig
from config.routing import RoutingConfig
from config.service import HttpConfig, RedisConfig, ServiceConfig
from config.speech import SpeechConfig
from config.telephony import SipConfig
from config.voicemail import VoicemailConfig


class Settings(Strict):
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    sip: SipConfig = Field(default_factory=SipConfig)
    calendar: CalendarsConfig = Field(default_factory=CalendarsConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    ivr: IvrConfig = Field(default_factory=IvrConfig)
    desk: DeskConfig = Field(default_factory=DeskConfig)
    voicemail: VoicemailConfig = Field(default_factory=VoicemailConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    channels: ChannelsConfig = Field(default_factory=ChannelsConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)


SECTIONS: tuple[str, ...] = tuple(Settings.model_fields)
