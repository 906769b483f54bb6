"""Per-source limits on the SIP line: a request rate (token bucket) and which sources are trusted.

Every carrier call comes through Kamailio, so its address (in `sip.trusted_proxies`) is exempt:
limiting it would limit the whole line. Anyone else talking to the endpoint directly gets a
small share, so one address can neither fill `max_calls` nor the transaction table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from config.telephony import SipConfig

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Buckets are dropped once full again, and all of them if spoofed sources ever make the table this large:
# memory stays bounded whatever the source addresses of a flood.
_MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class SourceLimits:
    def __init__(self, cfg: SipConfig) -> None:
        self.rate = cfg.requests_per_source_s
        self.burst = float(cfg.request_burst_per_source)
        self.max_calls = cfg.max_calls_per_source
        self.trusted: list[IpNetwork] = [ipaddress.ip_network(n, strict=False) for n in cfg.trusted_proxies]
        self._buckets: dict[str, _Bucket] = {}
        self._trusted_cache: dict[str, bool] = {}

    def is_trusted(self, ip: str) -> bool:
        known = self._trusted_cache.get(ip)
        if known is None:
            try:
                addr = ipaddress.ip_address(ip)
                known = any(addr in net for net in self.trusted)
            except ValueError:
                known = False
            if len(self._trusted_cache) >= _MAX_BUCKETS:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = known
        return known

    def allow_request(self, ip: str, now: float) -> bool:
        """Take one token from `ip`'s bucket; False when it is empty (the request is then dropped)."""
        if self.is_trusted(ip):
            return True
        b = self._buckets.get(ip)
        if b is None:
            if len(self._buckets) >= _MAX_BUCKETS:
                self._prune(now)
            b = self._buckets[ip] = _Bucket(self.burst, now)
        else:
            b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
            b.at = now
        if b.tokens < 1.0:
            return False
        b.tokens -= 1.0
        return True

    def call_limit(self, ip: str) -> int | None:
        """Concurrent calls allowed from `ip` (None: only the line's max_calls)."""
        return None if self.is_trusted(ip) else self.max_calls

    def _prune(self, now: float) -> None:
        full = [ip for ip, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for ip in full:
            del self._buckets[ip]
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()
