"""Service identity, HTTP listener, Redis and data locations."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from config.base import Strict


class ServiceConfig(Strict):
    name: str = "Atiende"
    institution: str = "Junta de Extremadura"
    line_name: str = "Atención a la Ciudadanía"
    line_number: str = "900 000 000"
    language: str = "es"
    data_dir: Path = Path("var")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    node_id: str = "node1"
    drain_timeout_s: float = Field(
        600.0, ge=0, le=86_400,
        description="on SIGTERM, how long calls in progress may go on (no new ones are taken) before the node stops")


class HttpConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None


class RedisConfig(Strict):
    url: str | None = Field(None, description="Redis URL; unset = a private redis-server child under data_dir/redis")
    prefix: str = "atiende"
    max_connections: int = Field(
        32, ge=4, le=10_000,
        description="Redis connections one process may open in all (request pool plus the 2 live-event readers); "
                    "independent of how many browsers are connected")
    pool_timeout_s: float = Field(
        2.0, gt=0, le=60, description="how long a request waits for a free connection before it is answered 503")
