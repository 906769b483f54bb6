"""Prometheus metrics of this process (shared counters for reports live in Redis)."""

from __future__ import annotations

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter("atiende_http_requests", "HTTP requests served", ["route", "status"], registry=REGISTRY)
REDIS_UP = Gauge("atiende_redis_up", "1 when the store answered the last health check", registry=REGISTRY)
ACTIVE_CALLS = Gauge("atiende_active_calls", "calls in progress on this node", registry=REGISTRY)
CALLS_TOTAL = Counter("atiende_calls", "calls by outcome", ["outcome"], registry=REGISTRY)


def render() -> tuple[bytes, str]:
    # The default registry too: process-wide collectors (core.looplag's event-loop lag, process, gc).
    return generate_latest(REGISTRY) + generate_latest(prometheus_client.REGISTRY), CONTENT_TYPE_LATEST
