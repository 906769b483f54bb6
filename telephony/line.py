"""What the endpoint's parts share: settings, clock, our SIP identity, the socket, the transaction layer, tasks.

One `Line` per endpoint; the incoming and outgoing call handlers, the registration client
and the dialog table each get it in their constructor.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable

from config.telephony import SipConfig
from core.clock import Clock
from telephony.limits import SourceLimits
from telephony.sip import build
from telephony.sip.message import Request, Response
from telephony.sip.transaction import ServerTransaction, TransactionLayer
from telephony.sip.transport import OnRequest, OnResponse, SipTransport


class Line:
    def __init__(self, cfg: SipConfig, clock: Clock, *, on_request: OnRequest, on_response: OnResponse) -> None:
        self.cfg = cfg
        self.clock = clock
        self.limits = SourceLimits(cfg)
        self.transport = SipTransport(on_request=on_request, on_response=on_response, admit=self._admit,
                                      max_bytes=cfg.max_message_bytes, user_agent=cfg.user_agent)
        self.layer = TransactionLayer(self.transport.send, max_server=cfg.max_transactions,
                                      max_server_per_source=cfg.max_transactions_per_source,
                                      unlimited=self.limits.is_trusted)
        self.port = cfg.port
        self.stopping = False
        # Set by the application: whether this node is ready (OPTIONS answers 200 or 503, so a dispatcher in front
        # stops sending calls) and whether it takes new calls at all (a draining node answers INVITEs 503).
        self.ready: Callable[[], bool] = lambda: True
        self.accepting: Callable[[], bool] = lambda: True
        self._tasks: set[asyncio.Task[object]] = set()

    def _admit(self, ip: str) -> bool:
        return self.limits.allow_request(ip, asyncio.get_running_loop().time())

    # ---- identity -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.cfg.public_host or self.cfg.host

    def hostport(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    @property
    def contact(self) -> str:
        return f"<sip:{self.cfg.contact_user}@{self.hostport()}>"

    @property
    def via(self) -> str:
        return f"SIP/2.0/UDP {self.hostport()}"

    # ---- socket and tasks -----------------------------------------------------------------

    async def open(self) -> None:
        self.port = await self.transport.open(self.cfg.host, self.cfg.port)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.send(data, addr)

    def spawn(self, coro: Awaitable[object], name: str | None = None) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        self.layer.close()
        self.transport.close()

    # ---- responses and client requests ----------------------------------------------------

    def response(self, req: Request, status: int, *, to_tag: str | None, reason: str | None = None,
                 extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                 content_type: str = "application/sdp") -> Response:
        return build.response(req, status, to_tag=to_tag, contact=self.contact, user_agent=self.cfg.user_agent,
                              reason=reason, extra=extra or (), body=body, content_type=content_type)

    def respond(self, tx: ServerTransaction, status: int, *, reason: str | None = None,
                extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        self.layer.respond(tx, self.response(tx.request, status, to_tag=tx.to_tag, reason=reason, extra=extra,
                                             body=body))

    async def resolve(self, host: str, port: int) -> tuple[str, int]:
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host)
            return host, port
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host}")
        return str(infos[0][4][0]), port

    async def request(self, req: Request, hop: tuple[str, int],
                      on_provisional: Callable[[Response], None] | None = None) -> Response:
        dest = await self.resolve(*hop)
        tx = self.layer.start_client(req, dest, on_provisional)
        return await asyncio.shield(tx.final)
