"""Payloads shared by the admin sections (calendars, routing, IVR flows): one shape for an edit's result and a
rollback request, whatever the section; and the checks every editable document goes through (its size, the queues
it may name)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from core.errors import InvalidInput
from desk_api.context import Services

MAX_DOCUMENT = 1_000_000  # characters of JSON; the reference scenario's flows are about 8,000


def draft_size(doc: dict[str, Any] | None, what: str) -> None:
    if doc is not None and len(json.dumps(doc, ensure_ascii=False)) > MAX_DOCUMENT:
        raise InvalidInput(f"El documento ({what}) pasa de {MAX_DOCUMENT} caracteres",
                           [{"loc": what, "reason": "demasiado grande"}], error_id="document-too-large")


def known_queues(rt: Services) -> frozenset[str]:
    """The desk's queues: the only places an intent or a flow may hand a contact over to."""
    return frozenset(q.id for q in rt.settings.desk.queues)


class EditResult(BaseModel):
    version: int = Field(..., description="the version now in force")


class RollbackRequest(BaseModel):
    version: int = Field(..., ge=0, description="the version to make current again (stored as a new version)")
