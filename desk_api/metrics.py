"""Prometheus metrics of this process (shared counters for reports live in Redis)."""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter("atiende_http_requests", "HTTP requests served", ["route", "status"], registry=REGISTRY)
REDIS_UP = Gauge("atiende_redis_up", "1 when the store answered the last health check", registry=REGISTRY)
ACTIVE_CALLS = Gauge("atiende_active_calls", "calls in progress on this node", registry=REGISTRY)
CALLS_TOTAL = Counter("atiende_calls", "calls by outcome", ["outcome"], registry=REGISTRY)

# Redis connections of this process, read from the store's pool when /metrics is scraped.
REDIS_CONNECTIONS = Gauge(
    "atiende_redis_connections", "Redis connections of this process: budget (configured), pool_max, pool_open, "
    "pool_in_use, pool_waiting (tasks waiting for a free connection), dedicated (live-event readers)",
    ["state"], registry=REGISTRY)
REDIS_POOL_EXHAUSTED = Counter("atiende_redis_pool_exhausted", "requests answered 503 because every connection of the "
                               "budget stayed busy for the pool timeout", registry=REGISTRY)

# Live events (desk_api/live.py): one reader per process fans the desk event stream out to the open streams.
LIVE_STREAMS = Gauge("atiende_live_streams", "open live event streams (SSE) on this process", registry=REGISTRY)
LIVE_CHAT_SOCKETS = Gauge("atiende_live_chat_listeners", "web chat sockets fed by the in-process fan-out",
                          registry=REGISTRY)
LIVE_EVENTS = Counter("atiende_live_events", "desk events read from the store by this process's reader",
                      registry=REGISTRY)
LIVE_REFUSED = Counter("atiende_live_refused", "streams refused by a per-client limit", ["scope"], registry=REGISTRY)
LIVE_CUT = Counter("atiende_live_cut", "streams ended by the server: slow (buffer full), stuck (a write blocked too "
                   "long), expired (maximum duration, the client resumes)", ["reason"], registry=REGISTRY)
LIVE_REPLAYED = Counter("atiende_live_replayed", "events sent again from the store to clients resuming with "
                        "Last-Event-ID", registry=REGISTRY)
LIVE_READER_ERRORS = Counter("atiende_live_reader_errors", "store errors of the live readers (each is followed by a "
                             "reconnect with backoff)", ["reader"], registry=REGISTRY)
LIVE_FANOUT_DELAY = Histogram(
    "atiende_live_fanout_delay_seconds", "from an event's commit in the store (its stream id) to its fan-out here",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10), registry=REGISTRY)

_pool_stats: list[Callable[[], dict[str, int]]] = []


def track_pool(stats: Callable[[], dict[str, int]]) -> None:
    """Report this store's connection counts on /metrics (the newest app's store: one per process in service)."""
    _pool_stats[:] = [stats]


def render() -> tuple[bytes, str]:
    for stats in _pool_stats:
        for state, value in stats().items():
            REDIS_CONNECTIONS.labels(state).set(value)
    # The default registry too: process-wide collectors (core.looplag's event-loop lag, process, gc).
    return generate_latest(REGISTRY) + generate_latest(prometheus_client.REGISTRY), CONTENT_TYPE_LATEST
