"""Request helpers shared by the route modules."""

from __future__ import annotations

from fastapi import Request

from atiende.runtime import Runtime


def runtime_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt
