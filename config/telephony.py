"""SIP endpoint, RTP and trunk settings."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from config.base import Strict

Codec = Literal["PCMA", "PCMU"]


class Registration(Strict):
    registrar: str = Field(..., description="sip:host[:port] of the PBX or trunk")
    user: str
    password: str = ""
    auth_user: str | None = None
    domain: str | None = None
    expires: int = Field(600, ge=60, le=86400)


class Trunk(Strict):
    """Where outbound calls (callbacks, agents' phones) go, with digest credentials if asked."""

    proxy: str | None = Field(
        None, description="sip:host[:port] every outbound call goes through (and the only address digest credentials "
                          "are sent to). Unset: numbers cannot be dialled; configured sip: URIs (agents' phones) go "
                          "straight to their host")
    user: str | None = None
    password: str | None = None
    from_user: str = "900000000"


class SipConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(5060, ge=0, le=65535)
    transport: Literal["udp"] = "udp"
    public_host: str | None = Field(None, description="address to put in Contact and SDP; default: host")
    rtp_port_min: int = Field(20000, ge=1024, le=65534)
    rtp_port_max: int = Field(20999, ge=1025, le=65535)
    codecs: list[Codec] = Field(default_factory=lambda: list[Codec](["PCMA", "PCMU"]), min_length=1)
    max_calls: int = Field(100, ge=1)
    media_timeout_s: float = Field(30.0, gt=0)
    user_agent: str = "Atiende"
    contact_user: str = Field("atiende", description="user part of our Contact URI")
    retry_after_s: int = Field(5, ge=1, le=3600, description="Retry-After of the 503 sent at max_calls")
    register_retry_s: float = Field(30.0, gt=0, description="wait before retrying a failed REGISTER")
    gil_switch_interval_ms: float | None = Field(
        0.5, gt=0, le=5,
        description="sys.setswitchinterval for the process when the endpoint starts (CPython: 5 ms). Every RTP send "
                    "releases the GIL; with a CPU-bound Python thread around, each one can wait a whole interval "
                    "(bench/bench_rtp_pacing.py). None leaves it alone.")
    registrations: list[Registration] = Field(default_factory=list)
    trunk: Trunk = Field(default_factory=Trunk)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (Kamailio's) exempt from the per-source limits below: all carrier traffic "
                    "comes from there, so only max_calls and max_transactions apply to them")
    max_calls_per_source: int = Field(4, ge=1, description="concurrent inbound calls from one untrusted address; "
                                                           "more get 503 with Retry-After")
    requests_per_source_s: float = Field(20.0, gt=0, description="sustained SIP requests per second from one "
                                                                 "untrusted address (token bucket); excess dropped")
    request_burst_per_source: int = Field(50, ge=1, description="bucket size of requests_per_source_s")
    max_message_bytes: int = Field(16384, ge=1500, le=65535,
                                   description="larger SIP datagrams get 513 Message Too Large (or are dropped)")
    max_transactions: int = Field(4096, ge=16, description="live server transactions in total; more get a "
                                                           "stateless 503")
    max_transactions_per_source: int = Field(64, ge=4, description="live server transactions per untrusted address")

    @model_validator(mode="after")
    def _ports(self) -> SipConfig:
        if self.rtp_port_max <= self.rtp_port_min:
            raise ValueError("rtp_port_max must be above rtp_port_min")
        if self.host in ("0.0.0.0", "::") and not self.public_host:
            raise ValueError("listening on all addresses needs public_host: the address to put in Contact and SDP")
        if len(set(self.codecs)) != len(self.codecs):
            raise ValueError("codecs must not repeat")
        for net in self.trusted_proxies:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {net!r} is not an IP address or network") from None
        return self
