"""Intents, keywords and recognition thresholds for the router (voice and text)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.base import Strict


class Intent(Strict):
    id: str
    description: str = ""
    confirm: str = Field("", description="question used to confirm, e.g. '¿Quiere pagar la tasa de la ITV?'")
    target: Literal["self_service", "queue"] = "queue"
    queue: str = "N1"
    phrases: list[str] = Field(default_factory=list)
    keywords: dict[str, float] = Field(default_factory=dict)


class RoutingConfig(Strict):
    threshold: float = Field(0.5, ge=0, le=1)
    confirm_margin: float = Field(0.1, ge=0, le=1)
    intents: list[Intent] = Field(default_factory=list)
    dtmf_menus: dict[str, dict[str, str]] = Field(default_factory=dict)
