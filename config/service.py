"""Service identity, HTTP listener, Redis and data locations."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

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
    # -- high availability (deploy/README.md, "Redis failover"). Secrets come from the environment
    # (ATIENDE_REDIS__PASSWORD, ATIENDE_REDIS__SENTINEL_PASSWORD), never from a file in the repository.
    password: str = Field("", description="Redis AUTH password (requirepass) of the primary and replicas")
    sentinels: list[str] = Field(
        default_factory=list,
        description="Sentinels as HOST:PORT; when set, the store asks them for the primary of `sentinel_service` "
                    "and follows failovers (`url` is then unused)")
    sentinel_service: str = Field("atiende", min_length=1, description="the name the Sentinels monitor the primary by")
    sentinel_password: str = Field("", description="AUTH password of the Sentinels (sentinel requirepass), if any")
    min_replicas_ack: int = Field(
        0, ge=0, le=16,
        description="acknowledged writes wait (WAIT) until this many replicas hold them, so they survive a primary "
                    "failover; 0 = answer once the primary has them")
    wait_timeout_ms: int = Field(
        500, ge=1, le=60_000,
        description="how long an acknowledged write waits for `min_replicas_ack` replicas before the request fails "
                    "with 503 (the write stays on the primary)")
    retry_attempts: int = Field(
        3, ge=0, le=100,
        description="retries of a command on a lost connection (a dead or demoted primary) before the request "
                    "fails; with Sentinel, size attempts x backoff cap to cover a failover")
    retry_backoff_cap_s: float = Field(0.5, gt=0, le=10, description="longest pause between two retries")

    @field_validator("sentinels")
    @classmethod
    def _hostports(cls, value: list[str]) -> list[str]:
        for item in value:
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"a sentinel must be HOST:PORT, got {item!r}")
        return value
