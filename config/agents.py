"""How queued calls reach agents' phones."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.base import Strict


class AgentsConfig(Strict):
    connect: Literal["bridge", "refer"] = Field(
        "bridge", description="bridge: Atiende calls the agent and relays audio (works with any phone); refer: blind transfer")
    ring_timeout_s: float = Field(20.0, gt=0, description="ring an agent this long, then offer the call to the next one")
    away_after_no_answer: bool = Field(True, description="an agent who lets a call ring out is set away (RONA)")
    wrap_up_s: float = Field(0.0, ge=0, description="after a call, the agent stays busy this long before the next one")
    poll_s: float = Field(1.0, gt=0, description="how often a waiting caller looks for a free agent")
    overflow_before_close_s: float = Field(
        300.0, ge=0, description="a caller still waiting this close to closing time is offered a callback instead")
