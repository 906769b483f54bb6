"""`atiende run`: the private Redis (if needed), the HTTP API, and the call-handling components.

Signals: SIGUSR1 drains the node (no new calls: SIP OPTIONS and INVITE get 503, `/healthz` says "draining",
so Kamailio's dispatcher sends new calls to other nodes; calls in progress go on), SIGUSR2 takes new calls
again, SIGHUP re-reads the configuration. SIGTERM drains, waits for the calls in progress to end (at most
`service.drain_timeout_s`), then stops; SIGINT (Ctrl-C) stops at once. Stopping: no new work (HTTP, SIP),
components finish or save in-flight work, the store closes, then the private Redis, which flushes its AOF.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from atiende.cliutil import config_dir_of
from atiende.commands.desk import announce_credentials, demo_refused
from atiende.components import Component, LineComponent, start_components
from atiende.runtime import Runtime
from config.loader import ConfigError, load
from config.service import RedisConfig
from core import logs
from core.clock import Clock, ShiftedClock, SystemClock
from core.redis_server import PrivateRedis, RedisUnavailable, check_url
from core.store import Store

log = logging.getLogger("atiende")

def _split_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def cli_overrides(args: argparse.Namespace) -> dict[str, str]:
    """CLI options become ATIENDE_* overrides so they layer exactly like environment variables."""
    out: dict[str, str] = {}
    if getattr(args, "http", None):
        host, port = _split_hostport(args.http, "--http")
        out |= {"ATIENDE_HTTP__HOST": host, "ATIENDE_HTTP__PORT": str(port)}
    if getattr(args, "sip", None):
        host, port = _split_hostport(args.sip, "--sip")
        out |= {"ATIENDE_SIP__HOST": host, "ATIENDE_SIP__PORT": str(port)}
    if getattr(args, "rtp_ports", None):
        low, sep, high = args.rtp_ports.partition("-")
        if not sep or not low.isdigit() or not high.isdigit():
            raise ValueError(f"--rtp-ports must be LOW-HIGH, got {args.rtp_ports!r}")
        out |= {"ATIENDE_SIP__RTP_PORT_MIN": low, "ATIENDE_SIP__RTP_PORT_MAX": high}
    if getattr(args, "no_sip", False):
        out["ATIENDE_SIP__ENABLED"] = "false"
    if getattr(args, "demo", False):
        out["ATIENDE_DESK__DEMO"] = "true"
    return out


def make_clock(iso: str | None) -> Clock:
    if not iso:
        return SystemClock()
    from datetime import datetime

    start = datetime.fromisoformat(iso)
    if start.tzinfo is None:
        from zoneinfo import ZoneInfo

        start = start.replace(tzinfo=ZoneInfo("Europe/Madrid"))
    return ShiftedClock(start)


@contextlib.contextmanager
def redis_for(cfg: RedisConfig, data_dir: Path) -> Iterator[PrivateRedis | None]:
    """The private redis-server when no Redis is configured (random password, supervised once serving); None when
    the store is external (a URL, or Sentinels that name the primary)."""
    if cfg.sentinels:
        yield None
        return
    if cfg.url:
        check_url(cfg.url, password=cfg.password or None)
        yield None
        return
    server = PrivateRedis(data_dir / "redis")
    server.start()
    log.info("private redis-server started", extra=logs.fields(dir=str(server.data_dir)))  # the URL holds a password
    try:
        yield server
    finally:
        server.stop()
        log.info("private redis-server stopped")


async def serve(rt: Runtime, private_redis: PrivateRedis | None = None) -> int:
    import uvicorn

    from desk_api.app import create_app
    from desk_api.live import end_streams as live_streams_end

    class _Server(uvicorn.Server):
        # We own the signals, so uvicorn must not install (and later re-raise) its own.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    s = rt.settings
    app = create_app(rt)
    server = _Server(uvicorn.Config(app, host=s.http.host, port=s.http.port, log_config=None, access_log=False,
                                    lifespan="on"))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def _stop(signame: str) -> None:
        if not stopping.is_set():
            log.info("stopping on %s", signame)
        stopping.set()
        server.should_exit = True
        live_streams_end(app.state)  # open desk streams would hold the HTTP server's shutdown forever

    drain_task: list[asyncio.Task[None]] = []

    async def _drain_then_stop() -> None:
        rt.node.drain()
        deadline = loop.time() + s.service.drain_timeout_s
        while (live := line_calls()) and loop.time() < deadline:
            log.info("draining: waiting for calls in progress", extra=logs.fields(calls=live))
            await asyncio.sleep(1.0)
        _stop("SIGTERM")

    def _term() -> None:
        if not drain_task:
            log.info("SIGTERM: draining before stopping")
            drain_task.append(asyncio.create_task(_drain_then_stop(), name="drain"))

    reloads: set[asyncio.Task[bool]] = set()

    def _hup() -> None:
        task = asyncio.create_task(rt.reload_async(), name="reload")
        reloads.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(reloads.discard)

    def line_calls() -> int:
        return sum(c.live_calls() for c in components if isinstance(c, LineComponent))

    loop.add_signal_handler(signal.SIGINT, _stop, "SIGINT")
    loop.add_signal_handler(signal.SIGTERM, _term)
    with contextlib.suppress(AttributeError, NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, _hup)
        loop.add_signal_handler(signal.SIGUSR1, rt.node.drain, True)
        loop.add_signal_handler(signal.SIGUSR2, rt.node.drain, False)

    if private_redis is not None:
        # A private redis-server that dies is restarted on the same data; meanwhile the node reports not ready.
        private_redis.supervise(lambda up: loop.call_soon_threadsafe(rt.node.store_state, up))
    components: list[Component] = []
    try:
        announce_credentials(await rt.desk.auth.prepare())
        rt.node.start()
        components = await start_components(rt)
        http_task = asyncio.create_task(server.serve(), name="http")
        await asyncio.sleep(0)
        log.info("serving", extra=logs.fields(http=f"http://{s.http.host}:{s.http.port}", config_version=rt.config_version))
        await asyncio.wait([http_task, asyncio.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await http_task
        if not server.started:
            log.error("the HTTP listener could not start on %s:%s", s.http.host, s.http.port)
            return 1
    finally:
        for task in drain_task:
            task.cancel()
        for comp in reversed(components):
            try:
                await asyncio.wait_for(comp.stop(), 15)
            except Exception:
                log.exception("component did not stop cleanly")
        await rt.node.stop()
        await rt.store.close()
    return 0


def run_service(args: argparse.Namespace) -> int:
    try:
        overrides = cli_overrides(args)
        clock = make_clock(getattr(args, "clock", None))
    except ValueError as exc:
        print(f"atiende: {exc}", file=sys.stderr)
        return 2
    config_dir = config_dir_of(args)
    try:
        loaded = load(config_dir, {**os.environ, **overrides})
    except ConfigError as exc:
        print("atiende: the configuration is invalid:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return 2
    logs.setup(loaded.settings.service.log_level)
    problem = demo_refused(loaded.settings)
    if problem:
        print(f"atiende: {problem}", file=sys.stderr)
        return 2
    try:
        with redis_for(loaded.settings.redis, loaded.settings.service.data_dir) as server:
            store = Store.from_config(loaded.settings.redis, url=server.url if server else None)
            rt = Runtime(loaded, store=store, clock=clock, config_dir=config_dir, overrides=overrides)
            return asyncio.run(serve(rt, server))
    except RedisUnavailable as exc:
        print(f"atiende: {exc}", file=sys.stderr)
        return 3
