"""The browser pages: agent desk, admin and supervisor pages, served as static files (no front-end build)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
