"""Live events, one reader per process: the desk event stream and the web chat pushes fanned out in memory.

Before this, every open desk tab held a Redis connection in a blocking XREAD and every web chat socket a pub/sub
connection of its own, so a hundred browsers took the request pool (issue 22). Now:

- one task reads the desk event stream (`XREAD BLOCK` on a connection of its own, `Store.dedicated()`, never the
  request pool) and hands each event to the streams whose principal may see it (`desk.events.visible`);
- one task holds a single pattern subscription to every web chat session's channel and hands each push to the
  sockets of that session on this process;
- both reconnect with backoff when Redis goes away; the events reader resumes from the last id it read, and web
  chat sockets re-read their session's log (nothing is lost: the log and the stream are in Redis);
- each stream has a bounded buffer: a client that does not read is cut (a write blocked for `STUCK_S` too) and
  resumes with `Last-Event-ID`, replayed from the stream, instead of growing this process's memory;
- streams per user and per client address are bounded (`desk.live_streams_per_user`, `..._per_address`).

The hub is started with the app (FastAPI lifespan) or, where an embedder runs the app without lifespan, on the
first stream; it belongs to the event loop it started on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from config.desk import DeskConfig
from core.store import REDIS_ERRORS, Store
from desk.events import EventBus, EventView, parse_id, visible
from desk_api import metrics
from desk_api.context import Services

log = logging.getLogger(__name__)

BLOCK_MS = 5_000  # one XREAD waits this long; the connection's socket timeout is longer
READ_COUNT = 1_000
HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
MAX_STREAM_S = 300.0  # a stream ends (jittered) after this and the browser resumes: re-authenticated, views renewed
STUCK_S = 10.0  # a write that has not completed in this long means the client stopped reading: cut
REPLAY_MAX = 5_000  # a resume further behind than this gets `resync` (reload the lists) instead of the backlog
REPLAY_PAGE = 500
CHAT_BUFFER = 64
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0
RETRY_MS = 2_000  # EventSource waits this before it reconnects
FLUSH_GAP_S = 0.05  # streams are written at most this often (bench/bench_desk_live.py: the latency/CPU trade)

LIMIT_USER = ("Tiene demasiadas pestañas del escritorio abiertas (máximo {n}). Cierre alguna y pulse «Reconectar».")
LIMIT_ADDRESS = ("Hay demasiadas conexiones en directo desde esta dirección (máximo {n}). Cierre las pestañas que no "
                 "use y pulse «Reconectar».")


class TooManyStreams(Exception):
    def __init__(self, scope: str, limit: int) -> None:
        self.scope = scope
        self.limit = limit
        self.message = (LIMIT_USER if scope == "user" else LIMIT_ADDRESS).format(n=limit)
        super().__init__(self.message)


@dataclass(frozen=True, slots=True)
class Limits:
    per_user: int
    per_address: int
    buffer_events: int
    buffer_bytes: int

    @classmethod
    def of(cls, cfg: DeskConfig) -> Limits:
        return cls(cfg.live_streams_per_user, cfg.live_streams_per_address, cfg.live_buffer_events, cfg.live_buffer_bytes)


class Subscriber:
    """One open stream: frames waiting to be written, and why it ended."""

    __slots__ = (
        "address",
        "beat",
        "closed",
        "deadline",
        "frames",
        "idle_since",
        "last",
        "max_bytes",
        "max_events",
        "reason",
        "sending_since",
        "size",
        "user",
        "view",
        "wake",
        "writer",
    )

    def __init__(self, view: EventView, user: str, address: str, limits: Limits, deadline: float) -> None:
        self.view = view
        self.user = user
        self.address = address
        self.frames: list[tuple[tuple[int, int], bytes]] = []
        self.size = 0
        self.wake = asyncio.Event()
        self.closed = False
        self.reason = ""
        self.last: tuple[int, int] = (0, 0)  # the newest id written: never write it or an older one again
        self.sending_since = 0.0
        self.idle_since = time.monotonic()
        self.beat = False
        self.deadline = deadline
        self.max_events = limits.buffer_events
        self.max_bytes = limits.buffer_bytes
        self.writer: asyncio.Task[None] | None = None

    def offer(self, pid: tuple[int, int], frame: bytes) -> bool:
        """Queue a frame; False (and the stream is cut) when the buffer is full."""
        if self.closed:
            return True
        if len(self.frames) >= self.max_events or self.size + len(frame) > self.max_bytes:
            self.frames.clear()
            self.size = 0
            self.end("slow")
            return False
        self.frames.append((pid, frame))
        self.size += len(frame)
        return True

    def end(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.reason = reason
            if reason in ("slow", "stuck", "expired"):
                metrics.LIVE_CUT.labels(reason).inc()
        self.wake.set()

    def take(self) -> bytes:
        """The frames not written yet, newer than the last written, as one chunk."""
        last = self.last
        parts = []
        for pid, frame in self.frames:
            if pid > last:
                parts.append(frame)
                last = pid
        self.frames.clear()
        self.size = 0
        self.last = last
        if self.beat:
            self.beat = False
            if not parts:
                return b": keep-alive\n\n"
        return b"".join(parts)


class ChatListener:
    """One web chat socket's pushes: raw message JSON, or None for "re-read the session's log" (after a reader
    reconnect or an overflow, when pushes may have been missed)."""

    __slots__ = ("channel", "queue")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(CHAT_BUFFER)

    def put(self, item: str | None) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def get(self) -> str | None:
        return await self.queue.get()


def sse_frame(sid: str, raw: str) -> bytes:
    if "\n" in raw or "\r" in raw:  # a line break would split the SSE field; the stored JSON never has one, but
        raw = json.dumps(json.loads(raw), ensure_ascii=False)  # the stream is writable by any node's code
    return f"id: {sid}\ndata: {raw}\n\n".encode()


class LiveHub:
    def __init__(self, store: Store, events: EventBus, desk_config: Callable[[], DeskConfig]) -> None:
        self.store = store
        self.events = events
        self.desk_config = desk_config
        self.position: str | None = None  # the newest event id read (or the stream's end when the reader started)
        self.ready = asyncio.Event()
        self.views: dict[tuple[bool, str, str | None, frozenset[str]], tuple[EventView, set[Subscriber]]] = {}
        self.by_user: dict[str, int] = {}
        self.by_address: dict[str, int] = {}
        self.chats: dict[str, set[ChatListener]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.chat_task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._last_flush = 0.0

    # -- life cycle ---------------------------------------------------------------------------------------------

    def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is loop and self.tasks:
            return
        if self.loop is not None and self.loop is not loop:  # an embedder's new event loop: start afresh on it
            self.views, self.by_user, self.by_address, self.chats = {}, {}, {}, {}
            self.position, self.chat_task, self._flush_handle = None, None, None
        self.loop = loop
        self.ready = asyncio.Event()
        self.tasks = [loop.create_task(self._read_events(), name="live-events"),
                      loop.create_task(self._tick(), name="live-tick")]

    async def start(self) -> None:
        self.ensure_started()

    def end_streams(self) -> None:
        """End every stream now (the server is stopping): each gets its last frames and the browsers resume, on
        this node when it is back or on another, with Last-Event-ID. Until then the HTTP server would wait for
        them to end by themselves before it stops."""
        for _view, subs in list(self.views.values()):
            for sub in list(subs):
                sub.end("stopping")

    async def stop(self) -> None:
        self.end_streams()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        tasks = [*self.tasks, *([self.chat_task] if self.chat_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks, self.chat_task, self.loop = [], None, None

    # -- desk event streams -------------------------------------------------------------------------------------

    def open(self, view: EventView, user: str, address: str) -> Subscriber:
        """Register a stream (it buffers from now on); TooManyStreams when a per-client limit is reached."""
        self.ensure_started()
        limits = Limits.of(self.desk_config())
        if self.by_user.get(user, 0) >= limits.per_user:
            metrics.LIVE_REFUSED.labels("user").inc()
            raise TooManyStreams("user", limits.per_user)
        if self.by_address.get(address, 0) >= limits.per_address:
            metrics.LIVE_REFUSED.labels("address").inc()
            raise TooManyStreams("address", limits.per_address)
        # Jittered, so that streams opened together do not all come back together.
        sub = Subscriber(view, user, address, limits, time.monotonic() + MAX_STREAM_S * random.uniform(0.8, 1.0))
        self.views.setdefault(view.key, (view, set()))[1].add(sub)
        self.by_user[user] = self.by_user.get(user, 0) + 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        metrics.LIVE_STREAMS.inc()
        return sub

    def close(self, sub: Subscriber) -> None:
        entry = self.views.get(sub.view.key)
        if entry is None or sub not in entry[1]:
            return
        entry[1].discard(sub)
        if not entry[1]:
            del self.views[sub.view.key]
        for counts, key in ((self.by_user, sub.user), (self.by_address, sub.address)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]
        metrics.LIVE_STREAMS.dec()
        sub.end("closed")

    @property
    def streams(self) -> int:
        return sum(len(s) for _, s in self.views.values())

    def fan_out(self, batch: list[tuple[str, str]]) -> None:
        now_ms = time.time() * 1000
        for sid, raw in batch:
            pid = parse_id(sid)
            if pid is None:
                continue
            metrics.LIVE_EVENTS.inc()
            metrics.LIVE_FANOUT_DELAY.observe(max(0.0, now_ms - pid[0]) / 1000)
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("live: an event that is not JSON was skipped", extra={"fields": {"id": sid}})
                continue
            if not isinstance(event, dict):
                continue
            frame = sse_frame(sid, raw)
            full: list[Subscriber] = []
            for view, subs in self.views.values():
                if visible(view, event):
                    for sub in subs:
                        if not sub.offer(pid, frame):
                            full.append(sub)
            for sub in full:
                log.info("live: a stream that did not keep up was cut (it resumes with Last-Event-ID)",
                         extra={"fields": {"user": sub.user, "address": sub.address}})
                self.close(sub)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Wake the streams with frames, at most once per FLUSH_GAP_S: events that arrive closer together go out in
        one write per stream. Writes, not events, are what a thousand streams cost (each wakes a task and makes a
        system call), so at 50 events/s this halves the work or better; a lone event still goes out at once."""
        if self._flush_handle is not None or self.loop is None:
            return
        delay = self._last_flush + FLUSH_GAP_S - self.loop.time()
        if delay <= 0:
            self._flush()
        else:
            self._flush_handle = self.loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self.loop is not None:
            self._last_flush = self.loop.time()
        for _view, subs in self.views.values():
            for sub in subs:
                if sub.frames and not sub.wake.is_set():
                    sub.wake.set()

    async def _read_events(self) -> None:
        backoff = BACKOFF_MIN_S
        failing = False
        while True:
            client = self.store.dedicated(socket_timeout=BLOCK_MS / 1000 + 5)
            try:
                if self.position is None:
                    newest: Any = await client.xrevrange(self.store.keys.events, count=1)
                    self.position = str(newest[0][0]) if newest else "0-0"
                self.ready.set()
                while True:
                    batch = await self.events.read_raw(self.position, BLOCK_MS, READ_COUNT, client=client)
                    if failing:
                        log.info("live: the event reader is back")
                        failing, backoff = False, BACKOFF_MIN_S
                    if batch:
                        self.position = batch[-1][0]
                        self.fan_out(batch)
            except REDIS_ERRORS as exc:
                metrics.LIVE_READER_ERRORS.labels("events").inc()
                if not failing:
                    log.warning("live: the event reader lost the store, retrying: %s", exc)
                failing = True
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
                self.store.release_dedicated(client)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _tick(self) -> None:
        """Heartbeats, the streams' maximum duration, and writes that never complete."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for _view, subs in list(self.views.values()):
                for sub in list(subs):
                    if sub.sending_since and now - sub.sending_since > STUCK_S:
                        sub.end("stuck")
                        self.close(sub)
                        if sub.writer is not None:
                            sub.writer.cancel()
                    elif now > sub.deadline:
                        sub.end("expired")
                        self.close(sub)
                    elif not sub.frames and now - sub.idle_since > HEARTBEAT_S:
                        sub.beat = True
                        sub.idle_since = now
                        sub.wake.set()

    # -- web chat pushes ----------------------------------------------------------------------------------------

    def listen_chat(self, session_channel: str) -> ChatListener:
        self.ensure_started()
        if self.chat_task is None or self.chat_task.done():
            assert self.loop is not None
            self.chat_task = self.loop.create_task(self._read_chats(), name="live-chats")
        listener = ChatListener(session_channel)
        self.chats.setdefault(session_channel, set()).add(listener)
        metrics.LIVE_CHAT_SOCKETS.inc()
        return listener

    def unlisten_chat(self, listener: ChatListener) -> None:
        group = self.chats.get(listener.channel)
        if group is None or listener not in group:
            return
        group.discard(listener)
        if not group:
            del self.chats[listener.channel]
        metrics.LIVE_CHAT_SOCKETS.dec()

    async def _read_chats(self) -> None:
        pattern = self.store.keys.webchat_out("*")  # session ids are [A-Za-z0-9_-]: no glob characters of their own
        backoff = BACKOFF_MIN_S
        failing = False
        while True:
            client = self.store.dedicated()
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(pattern)
                if failing:
                    log.info("live: the web chat reader is back")
                    failing, backoff = False, BACKOFF_MIN_S
                # Pushes published before this subscription (a reconnect, or sockets that opened while it was being
                # made) were missed: every socket re-reads its session's log.
                for group in self.chats.values():
                    for listener in group:
                        listener.put(None)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=HEARTBEAT_S)
                    if msg is None:
                        await pubsub.ping()  # a dead connection shows up here rather than never
                        continue
                    if msg.get("type") != "pmessage":
                        continue
                    for listener in self.chats.get(str(msg["channel"]), ()):
                        listener.put(str(msg["data"]))
            except REDIS_ERRORS as exc:
                metrics.LIVE_READER_ERRORS.labels("webchat").inc()
                if not failing:
                    log.warning("live: the web chat reader lost the store, retrying: %s", exc)
                failing = True
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
                self.store.release_dedicated(client)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(BACKOFF_MAX_S, backoff * 2)


class LiveResponse(Response):
    """An SSE response fed by the hub: written by a task of its own so that a client that stops reading can be cut
    (the task is cancelled) while the request's task sees the disconnect."""

    def __init__(self, hub: LiveHub, sub: Subscriber, resume: str | None) -> None:
        super().__init__(media_type="text/event-stream")
        self.hub = hub
        self.sub = sub
        self.resume = resume

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.sub
        writer = asyncio.create_task(self._write(send), name="live-writer")
        sub.writer = writer
        gone = asyncio.create_task(self._until_disconnect(receive), name="live-disconnect")
        try:
            await asyncio.wait({writer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.hub.close(sub)
            for task in (writer, gone):
                task.cancel()
            for task in (writer, gone):
                with contextlib.suppress(asyncio.CancelledError, *REDIS_ERRORS):
                    await task

    @staticmethod
    async def _until_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _send(self, send: Send, chunk: bytes, more: bool = True) -> None:
        self.sub.sending_since = time.monotonic()
        await send({"type": "http.response.body", "body": chunk, "more_body": more})
        self.sub.sending_since = 0.0
        self.sub.idle_since = time.monotonic()

    async def _write(self, send: Send) -> None:
        sub = self.sub
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                   (b"x-accel-buffering", b"no")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._send(send, f"retry: {RETRY_MS}\n: connected\n\n".encode())
        if self.resume is not None:
            await self._replay(send, self.resume)
        while True:
            await sub.wake.wait()
            sub.wake.clear()
            chunk = sub.take()
            if sub.closed:
                tail = b": reconnect\n\n" if sub.reason in ("slow", "expired") else b""
                await self._send(send, chunk + tail, more=False)
                return
            if chunk:
                await self._send(send, chunk)

    async def _replay(self, send: Send, resume: str) -> None:
        """The events after `resume` that this client may see, from the stream, before the live ones."""
        sub = self.sub
        start = parse_id(resume)
        assert start is not None
        first = await self.hub.events.first_id()
        first_pid = parse_id(first) if first else None
        if first_pid is not None and first_pid > start and start != (0, 0):
            # Events between the client's last and the oldest kept were trimmed: the page reloads its lists.
            await self._send(send, b"event: resync\ndata: {}\n\n")
        after, sent = resume, 0
        while sent < REPLAY_MAX:
            page = await self.hub.events.after(after, REPLAY_PAGE)
            parts = []
            for sid, raw in page:
                pid = parse_id(sid)
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if pid is not None and pid > sub.last and isinstance(event, dict) and visible(sub.view, event):
                    parts.append(sse_frame(sid, raw))
                    sub.last = pid
            if parts:
                metrics.LIVE_REPLAYED.inc(len(parts))
                await self._send(send, b"".join(parts))
            sent += len(page)
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1][0]
        await self._send(send, b"event: resync\ndata: {}\n\n")


def refused(exc: TooManyStreams) -> bytes:
    """The whole body of a refused stream: the page shows the message and does not reconnect by itself."""
    data = json.dumps({"message": exc.message, "scope": exc.scope, "limit": exc.limit}, ensure_ascii=False)
    return f"retry: 60000\nevent: limit\ndata: {data}\n\n".encode()


def hub_for(state: State, services: Services) -> LiveHub:
    """The process's hub for this app (made on first use; `app.state.live`)."""
    hub = getattr(state, "live", None)
    if not isinstance(hub, LiveHub):
        hub = LiveHub(services.store, services.desk.events, lambda: services.settings.desk)
        state.live = hub
    return hub


def end_streams(state: State) -> None:
    """End this app's open streams, if it has a hub (for the service runner when it stops)."""
    hub = getattr(state, "live", None)
    if isinstance(hub, LiveHub):
        hub.end_streams()
