"""IVR flows (jambonz-style verbs) and the prompts they say."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from config.base import Strict


class IvrConfig(Strict):
    entry_flow: str = "main"
    flows: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    prompts: dict[str, str] = Field(default_factory=dict)
