"""Local stand-ins for the outside world of the channels tests: an HTTP server that records what the
Bot API / Graph API clients send, an SMTP sink, and a real uvicorn server on 127.0.0.1 for WebSocket and
browser tests. Loopback only."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Recorder:
    """Answers like Telegram's sendMessage/getFile and file downloads, and WhatsApp's /messages and media
    endpoints; `fail` makes it answer 500, `throttle` answers that many sendMessage calls with 429."""

    requests: list[Recorded] = field(default_factory=list)
    fail: bool = False
    throttle: int = 0
    retry_after: int = 1
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # file/media id -> (content, content type)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Recorder:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, data: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                rec.requests.append(Recorded("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None))
                last = self.path.rstrip("/").rpartition("/")[2]
                if "/file/bot" in self.path or self.path.startswith("/media/"):
                    item = rec.media.get(last)
                    if item is None:
                        self._reply(404, b"not found", "text/plain")
                    else:
                        self._reply(200, item[0], item[1])
                    return
                item = rec.media.get(last)  # Graph API: media id -> its URL
                if item is None:
                    self._reply(404, json.dumps({"error": {"code": 100}}).encode())
                    return
                info = {"url": f"{rec.url}/media/{last}", "mime_type": item[1], "file_size": len(item[0]), "id": last,
                        "messaging_product": "whatsapp"}
                self._reply(200, json.dumps(info).encode())

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                rec.requests.append(Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if rec.fail:
                    out, status = {"ok": False, "description": "Internal Server Error"}, 500
                elif "/sendMessage" in self.path and rec.throttle > 0:
                    rec.throttle -= 1
                    out, status = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
                                   "parameters": {"retry_after": rec.retry_after}}, 429
                elif "/getFile" in self.path:
                    fid = str(body.get("file_id"))
                    out, status = ({"ok": True, "result": {"file_id": fid, "file_path": f"documents/{fid}"}}, 200) \
                        if fid in rec.media else ({"ok": False, "description": "Bad Request: invalid file_id"}, 400)
                elif "/sendMessage" in self.path:
                    result = {"message_id": len(rec.requests), "chat": {"id": body.get("chat_id")}}
                    out, status = {"ok": True, "result": result}, 200
                else:
                    out, status = {"messaging_product": "whatsapp",
                                   "contacts": [{"input": body.get("to"), "wa_id": body.get("to")}],
                                   "messages": [{"id": f"wamid.OUT{len(rec.requests)}"}]}, 200
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class _SinkHandler:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


class SmtpSink:
    def __init__(self) -> None:
        self.handler = _SinkHandler()
        self.port = _free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[EmailMessage]:
        return self.handler.messages

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The real app under uvicorn in a thread, with its own event loop and its own Store on the test Redis."""

    def __init__(self, make_runtime: Any) -> None:
        self.make_runtime = make_runtime
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Any = None
        self.runtime: Any = None
        self.thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        import uvicorn

        from desk_api.app import create_app

        self.runtime = self.make_runtime()
        app = create_app(self.runtime)
        config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        async def serve() -> None:
            try:
                await self.server.serve(sockets=[self.sock])
            finally:  # the server's connections belong to this loop: close them here, before it ends
                await self.runtime.store.close()

        self.thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.sock.close()


def make_runtime(redis_url: str, prefix: str, data_dir: Any, channels: Any = None) -> Any:
    """A Runtime on the test Redis with its own Store (a Store belongs to the event loop that first uses it)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from atiende.runtime import Runtime
    from config.loader import Loaded, load
    from core.clock import FixedClock
    from core.store import Store

    loaded = load(None, env={})
    settings = loaded.settings.model_copy(deep=True)
    settings.service.data_dir = data_dir
    clock = FixedClock(datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Europe/Madrid")))
    rt = Runtime(Loaded(settings=settings, version=loaded.version, document=loaded.document), store=Store(redis_url, prefix),
                 clock=clock)
    if channels is not None:
        rt.channels_override = channels
    return rt
