"""Queues, agents, roles, channels and desk policies."""

from __future__ import annotations

from pydantic import Field

from config.base import Strict


class Queue(Strict):
    id: str
    name: str
    level: int = Field(1, ge=1, le=2)
    skills: list[str] = Field(default_factory=list)
    calendar: str | None = None


class DeskConfig(Strict):
    queues: list[Queue] = Field(
        default_factory=lambda: [
            Queue(id="N1", name="Informadores (nivel 1)", level=1, skills=["general"]),
            Queue(id="N2", name="Especialistas (nivel 2)", level=2, skills=["quejas"]),
        ]
    )
    complaint_due_business_days: int = Field(10, ge=1)
    ticket_due_business_hours: int = Field(16, ge=1)
