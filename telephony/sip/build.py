"""Building SIP requests and responses: the one place that decides which headers go out and in what order.

Dialog requests, outbound INVITEs and REGISTERs all come from `request()`; every response the
endpoint sends comes from `response()` or, for requests too broken to parse into a `Request`,
`raw_response()`. (ACK for a non-2xx and CANCEL copy their INVITE and live in `transaction.py`.)
"""

from __future__ import annotations

from collections.abc import Iterable

from telephony.sip.message import REASONS, Headers, Request, Response, new_branch, new_token

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY"
_NO_CONTACT = frozenset({"ACK", "BYE", "CANCEL"})


def request(method: str, ruri: str, *, via: str, from_: str, to: str, call_id: str, cseq: int,
            contact: str | None = None, routes: Iterable[str] = (), extra: Iterable[tuple[str, str]] = (),
            body: bytes = b"", content_type: str | None = None) -> Request:
    """A new request with a fresh branch. `via` is our sent-by (`SIP/2.0/UDP host:port`); rport is always asked
    for, so answers come back through NATs and Kamailio alike."""
    h = Headers()
    h.add("via", f"{via};branch={new_branch()};rport")
    h.add("max-forwards", "70")
    h.add("from", from_)
    h.add("to", to)
    h.add("call-id", call_id)
    h.add("cseq", f"{cseq} {method}")
    for r in routes:
        h.add("route", r)
    if contact and method not in _NO_CONTACT:
        h.add("contact", contact)
    for k, v in extra:
        h.add(k, v)
    if body:
        h.add("content-type", content_type or "application/sdp")
    return Request(method, ruri, h, body)


def response(req: Request, status: int, *, to_tag: str | None, contact: str, user_agent: str,
             reason: str | None = None, extra: Iterable[tuple[str, str]] = (), body: bytes = b"",
             content_type: str = "application/sdp") -> Response:
    """RFC 3261 8.2.6: Via, From, Call-ID, CSeq copied; our tag on To; Record-Route and Contact on dialog-creating
    INVITE responses; Allow where a peer learns our methods from it."""
    h = Headers()
    for v in req.headers.get_all("via"):
        h.add("via", v)
    h.add("from", req.headers.get("from") or "")
    to = req.headers.get("to") or ""
    if to_tag and status > 100 and req.to.tag is None:
        to = f"{to};tag={to_tag}"
    h.add("to", to)
    h.add("call-id", req.call_id)
    h.add("cseq", req.headers.get("cseq") or "")
    if req.method == "INVITE" and 100 < status < 300:
        for rr in req.headers.get_all("record-route"):
            h.add("record-route", rr)
        h.add("contact", contact)
    if status == 405 or (status == 200 and req.method in ("INVITE", "OPTIONS", "UPDATE")):
        h.add("allow", ALLOW)
    h.add("server", user_agent)
    for k, v in extra:
        h.add(k, v)
    if body:
        h.add("content-type", content_type)
    return Response(status, reason or REASONS.get(status, ""), h, body)


def raw_response(headers: Headers | None, status: int, reason: str, user_agent: str,
                 extra: Iterable[tuple[str, str]] = ()) -> Response:
    """A response built from whatever headers a request had, when it never became a valid `Request`."""
    h = Headers()
    if headers is not None:
        for name in ("via", "from", "to", "call-id", "cseq"):
            for v in headers.get_all(name):
                h.add(name, v + (f";tag={new_token()}" if name == "to" and ";tag" not in v.replace(" ", "") else ""))
    h.add("server", user_agent)
    if status == 505:
        h.add("unsupported", "SIP/2.0")
    for k, v in extra:
        h.add(k, v)
    return Response(status, reason[:100].replace("\r", " ").replace("\n", " "), h)
