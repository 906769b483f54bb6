"""Payloads shared by the admin sections (calendars, routing, IVR flows): one shape for an edit's result and a
rollback request, whatever the section."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EditResult(BaseModel):
    version: int = Field(..., description="the version now in force")


class RollbackRequest(BaseModel):
    version: int = Field(..., ge=0, description="the version to make current again (stored as a new version)")
