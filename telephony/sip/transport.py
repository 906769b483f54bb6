"""The SIP line's UDP socket: size cap, per-source admission, parsing, and replies to what cannot be parsed.

Requests and responses that parse go to the two handlers; a request the handler rejects with
`SipParseError` (validation) gets its status back here, and an unexpected exception a 500, so
no handler bug leaves a peer retransmitting into silence.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from telephony.sip import build
from telephony.sip.message import Headers, Request, Response, SipParseError, parse

log = logging.getLogger(__name__)

Addr = tuple[str, int]
OnRequest = Callable[[Request, Addr], None]
OnResponse = Callable[[Response, Addr], None]
Admit = Callable[[str], bool]


class SipTransport(asyncio.DatagramProtocol):
    def __init__(self, *, on_request: OnRequest, on_response: OnResponse, admit: Admit, max_bytes: int,
                 user_agent: str) -> None:
        self.on_request = on_request
        self.on_response = on_response
        self.admit = admit  # per-source request rate: False drops the request before it is even parsed
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port), family=family)
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self.port

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def send(self, data: bytes, addr: Addr) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def reply_raw(self, headers: Headers | None, status: int, reason: str, addr: Addr,
                  extra: list[tuple[str, str]] | None = None) -> None:
        self.send(build.raw_response(headers, status, reason, self.user_agent, extra or ()).to_bytes(), addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        addr = (addr[0], addr[1])
        if not data.strip(b"\r\n\x00 "):
            return  # keep-alive (RFC 5626 CRLF ping) or junk
        is_request = not data.lstrip(b"\r\n").startswith(b"SIP/")
        if is_request and not self.admit(addr[0]):
            return  # over its rate: a reply would be traffic aimed at an address that may well be spoofed
        if len(data) > self.max_bytes:
            self._too_large(data, addr, is_request)
            return
        try:
            msg = parse(data)
        except SipParseError as exc:
            if exc.is_request and exc.headers is not None and (
                    "via" in exc.headers or "call-id" in exc.headers or "cseq" in exc.headers):
                self.reply_raw(exc.headers, exc.status, exc.reason, addr)  # noise without any of them: dropped
            log.debug("dropped malformed message from %s: %s", addr, exc.reason)
            return
        try:
            if isinstance(msg, Response):
                self.on_response(msg, addr)
            else:
                self.on_request(msg, addr)
        except SipParseError as exc:
            if isinstance(msg, Request) and msg.method != "ACK":
                self.reply_raw(msg.headers, exc.status, exc.reason, addr)
        except Exception:
            log.exception("error handling a SIP message from %s", addr)
            if isinstance(msg, Request) and msg.method != "ACK":
                self.reply_raw(msg.headers, 500, "Server Internal Error", addr)

    def _too_large(self, data: bytes, addr: Addr, is_request: bool) -> None:
        """513 (RFC 3261 21.5.11) from the header block alone; the oversized body is never parsed or kept."""
        log.debug("dropped a %d-byte SIP datagram from %s", len(data), addr)
        head_end = data.find(b"\r\n\r\n", 0, self.max_bytes)
        if not is_request or head_end < 0:
            return
        if data.lstrip(b"\r\n").startswith(b"ACK "):
            return
        headers: Headers | None
        try:  # the Content-Length of the cut-off body fails parsing, after the headers were read
            msg = parse(data[:head_end] + b"\r\n\r\n")
            headers = msg.headers
        except SipParseError as exc:
            headers = exc.headers
        if headers is not None and headers.get_all("via"):
            self.reply_raw(headers, 513, "Message Too Large", addr)
