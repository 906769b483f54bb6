"""Request helpers shared by the route modules."""

from __future__ import annotations

from fastapi import Request
from starlette.requests import HTTPConnection

from desk_api.context import Services


def services_of(request: Request | HTTPConnection) -> Services:
    services: Services = request.app.state.services
    return services
