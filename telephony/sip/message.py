"""SIP messages per RFC 3261: a tolerant reader and a strict validator.

Reading accepts what RFC 4475 calls valid: case-insensitive and compact header names, folded
lines, LWS around separators, empty values, several values per line, bare-LF line ends,
unknown headers and methods. Validation (`validate_request`) is strict where a mistake would
cost a call: the five mandatory headers, one value for single-valued headers, a CSeq whose
method matches the request line, a Content-Length that fits the datagram, sane scalars.

Header values are kept as unfolded text; list-valued headers (Via, Route, Contact...) are split
into one entry per value at parse time, so `get_all("via")` is the ordered Via list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length", "c": "content-type",
    "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via", "o": "event", "r": "refer-to",
    "b": "referred-by", "x": "session-expires", "u": "allow-events", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "y": "identity", "n": "identity-info",
}
CANONICAL = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate", "mime-version": "MIME-Version",
    "rack": "RAck", "rseq": "RSeq", "sip-etag": "SIP-ETag", "sip-if-match": "SIP-If-Match",
}
# Headers whose value is a comma-separated list (RFC 3261 7.3.1); each element gets its own entry.
LIST_HEADERS = frozenset({
    "via", "route", "record-route", "contact", "allow", "supported", "require", "proxy-require", "unsupported",
    "accept", "accept-encoding", "accept-language", "allow-events", "content-encoding", "in-reply-to",
})
SINGLE_HEADERS = frozenset({"call-id", "cseq", "from", "to", "content-length", "max-forwards", "content-type", "expires"})
MANDATORY = ("via", "from", "to", "call-id", "cseq")
TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
SIP_VERSION = "SIP/2.0"
REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 183: "Session Progress", 200: "OK", 202: "Accepted",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 505: "Version Not Supported", 603: "Decline",
}


def is_num(text: str) -> bool:
    """ASCII digits only (str.isdigit also takes '²', which int() refuses), at most 10 of them: every number SIP
    carries fits (CSeq < 2**31, Expires < 2**32), and int() of more than 4300 digits raises a plain ValueError
    where callers expect SipParseError (a hostile Content-Length escaped the transport's handler)."""
    return len(text) <= 10 and text.isascii() and text.isdigit()


class SipParseError(ValueError):
    """A message we cannot accept. `status` is what a request gets back (responses are dropped)."""

    def __init__(self, reason: str, status: int = 400, headers: Headers | None = None, is_request: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = headers
        self.is_request = is_request


def canonical(name: str) -> str:
    low = name.lower()
    return CANONICAL.get(low) or "-".join(p[:1].upper() + p[1:] for p in low.split("-"))


def long_name(name: str) -> str:
    low = name.strip().lower()
    return COMPACT.get(low, low)


def split_outside(value: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings and <...>; backslash escapes inside quotes."""
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    angle = 0
    i = 0
    while i < len(value):
        ch = value[i]
        if quoted:
            buf.append(ch)
            if ch == "\\" and i + 1 < len(value):
                buf.append(value[i + 1])
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            buf.append(ch)
        elif ch == "<":
            angle += 1
            buf.append(ch)
        elif ch == ">":
            angle = max(0, angle - 1)
            buf.append(ch)
        elif ch == sep and angle == 0:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    if quoted:
        raise SipParseError("unterminated quoted string")
    out.append("".join(buf))
    return out


def parse_params(text: str) -> dict[str, str | None]:
    """`;a=1 ; b = "x" ;c` -> {"a": "1", "b": "x", "c": None}; names lowercased."""
    params: dict[str, str | None] = {}
    for part in split_outside(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, eq, val = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise SipParseError(f"empty parameter name in {text!r}")
        v: str | None = val.strip() if eq else None
        if v is not None and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = unquote(v)
        params[name] = v
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote(text: str) -> str:
    inner = text[1:-1]
    return re.sub(r"\\(.)", r"\1", inner)


# ---- URIs and addresses -----------------------------------------------------------------------


@dataclass
class SipUri:
    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    raw: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon or not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*$", scheme):
            raise SipParseError(f"not a URI: {text!r}")
        scheme = scheme.lower()
        if any(c.isspace() for c in text):
            raise SipParseError(f"whitespace inside URI {text!r}")
        if scheme not in ("sip", "sips"):
            return cls(scheme=scheme, raw=text, host=rest)
        user = password = None
        at = rest.rfind("@")
        hostpart = rest
        if at >= 0:
            userinfo, hostpart = rest[:at], rest[at + 1:]
            user, pc, pw = userinfo.partition(":")
            password = pw if pc else None
        hdrs = None
        if "?" in hostpart:
            hostpart, _, hdrs = hostpart.partition("?")
        hostport, _, ptext = hostpart.partition(";")
        host, port = split_hostport(hostport)
        return cls(scheme=scheme, user=user, password=password, host=host, port=port,
                   params=parse_params(ptext) if ptext else {}, headers=hdrs, raw=text)

    def __str__(self) -> str:
        if self.scheme not in ("sip", "sips"):
            return self.raw
        user = ""
        if self.user is not None:
            user = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        hdrs = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{user}{host}{port}{format_params(self.params)}{hdrs}"

    @property
    def hostport(self) -> tuple[str, int]:
        return self.host, self.port or (5061 if self.scheme == "sips" else 5060)


def split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference {text!r}")
        host, rest = text[1:end], text[end + 1:]
    else:
        host, _, p = text.partition(":")
        rest = ":" + p if _ else ""
    if not host or any(c.isspace() for c in host):
        raise SipParseError(f"bad host {text!r}")
    if not rest:
        return host, None
    if not rest.startswith(":") or not is_num(rest[1:]) or not 0 < int(rest[1:]) < 65536:
        raise SipParseError(f"bad port in {text!r}")
    return host, int(rest[1:])


@dataclass
class Address:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...)."""

    uri: SipUri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Address:
        s = text.strip()
        display: str | None = None
        if s.startswith('"'):
            i = 1
            while i < len(s) and s[i] != '"':
                i += 2 if s[i] == "\\" else 1
            if i >= len(s):
                raise SipParseError("unterminated quoted display name")
            display = unquote(s[: i + 1])
            s = s[i + 1:].lstrip()
            if not s.startswith("<"):
                raise SipParseError("quoted display name without <uri>")
        lt = s.find("<")
        if lt >= 0 and (lt == 0 or ";" not in s[:lt]):
            if display is None and lt > 0:
                words = s[:lt].split()
                if not all(TOKEN_RE.match(w) for w in words):
                    raise SipParseError(f"display name must be tokens or quoted: {s[:lt]!r}")
                display = " ".join(words)
            gt = s.find(">", lt)
            if gt < 0:
                raise SipParseError("missing '>'")
            inner = s[lt + 1:gt]
            if inner != inner.strip():
                raise SipParseError("whitespace inside <uri>")
            uri = SipUri.parse(inner)
            rest = s[gt + 1:].strip()
        else:
            uri_text, _, ptail = s.partition(";")
            uri = SipUri.parse(uri_text)
            if uri.headers is not None:
                raise SipParseError("an addr-spec with ? or ; must be inside <>")
            rest = ";" + ptail if _ else ""
        if rest and not rest.startswith(";"):
            raise SipParseError(f"junk after address: {rest!r}")
        return cls(uri=uri, display=display, params=parse_params(rest) if rest else {})

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        disp = ""
        if self.display:
            disp = '"' + self.display.replace("\\", "\\\\").replace('"', '\\"') + '" '
        return f"{disp}<{self.uri}>{format_params(self.params)}"


@dataclass
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    _RE = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-]+)\s+([^;\s]+(?:\s*:\s*\d+)?)\s*(;.*)?$", re.S)

    @classmethod
    def parse(cls, text: str) -> Via:
        m = cls._RE.match(text.strip())
        if not m:
            raise SipParseError(f"bad Via {text!r}")
        host, port = split_hostport(re.sub(r"\s+", "", m.group(2)))
        return cls(transport=m.group(1).upper(), host=host, port=port, params=parse_params(m.group(3) or ""))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"SIP/2.0/{self.transport} {host}{port}{format_params(self.params)}"


# ---- messages ---------------------------------------------------------------------------------


class Headers:
    """Ordered (name, value) pairs; names stored in long lowercase form."""

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self.items: list[tuple[str, str]] = list(items or [])

    def get(self, name: str, default: str | None = None) -> str | None:
        n = long_name(name)
        for k, v in self.items:
            if k == n:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        n = long_name(name)
        return [v for k, v in self.items if k == n]

    def add(self, name: str, value: str) -> None:
        self.items.append((long_name(name), value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        n = long_name(name)
        self.items = [(k, v) for k, v in self.items if k != n]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def copy(self) -> Headers:
        return Headers(self.items)


class Message:
    def __init__(self, headers: Headers | None = None, body: bytes = b"") -> None:
        self.headers = headers or Headers()
        self.body = body

    # convenience accessors (raise SipParseError on malformed values)
    @property
    def call_id(self) -> str:
        return self.headers.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("cseq") or "")

    @property
    def from_(self) -> Address:
        return Address.parse(self.headers.get("from") or "")

    @property
    def to(self) -> Address:
        return Address.parse(self.headers.get("to") or "")

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("via")]

    @property
    def content_type(self) -> str:
        return (self.headers.get("content-type") or "").split(";")[0].strip().lower()

    def _head(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        lines = [self._head()]
        for k, v in self.headers.items:
            if k != "content-length":
                lines.append(f"{canonical(k)}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    def __init__(self, method: str, uri: str, headers: Headers | None = None, body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def _head(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id}>"


class Response(Message):
    def __init__(self, status: int, reason: str = "", headers: Headers | None = None, body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason or REASONS.get(status, "Unknown")

    def _head(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id}>"


def parse_cseq(text: str) -> tuple[int, str]:
    parts = text.split()
    if len(parts) != 2 or not is_num(parts[0]) or not TOKEN_RE.match(parts[1]):
        raise SipParseError(f"bad CSeq {text!r}")
    num = int(parts[0])
    if num >= 2**31:
        raise SipParseError("CSeq number too large")
    return num, parts[1]


_LINE_SPLIT = re.compile(r"\r?\n")


def parse(data: bytes) -> Request | Response:
    """Parse one datagram. Raises SipParseError; `.headers` is filled when the header block was readable."""
    data = data.lstrip(b"\r\n")
    sep = re.search(rb"\r?\n\r?\n", data)
    if sep:
        head_b, rest = data[: sep.start()], data[sep.end():]
    else:
        head_b, rest = data, b""
    head = head_b.decode("utf-8", "surrogateescape")
    raw_lines = _LINE_SPLIT.split(head)
    if not raw_lines or not raw_lines[0]:
        raise SipParseError("empty message", is_request=False)
    start = raw_lines[0]
    is_request = not start.startswith("SIP/")
    lines: list[str] = []
    for line in raw_lines[1:]:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    headers = Headers()
    for line in lines:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not TOKEN_RE.match(name):
            raise SipParseError(f"malformed header line {line[:40]!r}", headers=headers, is_request=is_request)
        key = long_name(name)
        value = value.strip()
        if key in LIST_HEADERS and value:
            try:
                parts = [p.strip() for p in split_outside(value, ",")]
            except SipParseError as exc:
                raise SipParseError(exc.reason, headers=headers, is_request=is_request) from None
            for p in parts:
                if p:
                    headers.items.append((key, p))
        else:
            headers.items.append((key, value))

    def fail(reason: str, status: int = 400) -> SipParseError:
        return SipParseError(reason, status, headers=headers, is_request=is_request)

    cl_values = headers.get_all("content-length")
    if len(cl_values) > 1:
        raise fail("several Content-Length values")
    if cl_values:
        if not is_num(cl_values[0]):
            raise fail(f"bad Content-Length {cl_values[0]!r}")
        cl = int(cl_values[0])
        if cl > len(rest):
            raise fail("Content-Length larger than the datagram")
        body = rest[:cl]
    else:
        body = rest  # UDP: the body is the rest of the datagram
    if is_request:
        parts = start.split(" ")
        if len(parts) != 3 or not all(parts):
            raise fail("malformed Request-Line")
        method, uri, version = parts
        if not TOKEN_RE.match(method):
            raise fail(f"bad method {method!r}")
        if version.upper() != SIP_VERSION:
            raise fail(f"unsupported version {version!r}", 505)
        if uri.startswith("<") or "\t" in uri:
            raise fail("Request-URI must not be enclosed in <>")
        return Request(method, uri, headers, body)
    m = re.match(r"^SIP/2\.0 (\d{3}) ?(.*)$", start)
    if not m:
        raise fail("malformed Status-Line")
    code = int(m.group(1))
    if not 100 <= code <= 699:
        raise fail(f"status code out of range: {code}")
    return Response(code, m.group(2) or "", headers, body)


def validate_request(req: Request) -> None:
    """Semantic checks before a request reaches the transaction layer. Raises SipParseError(status)."""
    h = req.headers

    def fail(reason: str, status: int = 400) -> SipParseError:
        return SipParseError(reason, status, headers=h)

    for name in MANDATORY:
        if not h.get_all(name):
            raise fail(f"missing {canonical(name)}")
    for name in SINGLE_HEADERS:
        if len(h.get_all(name)) > 1:
            raise fail(f"several {canonical(name)} headers")
    try:
        _num, method = req.cseq
        req.from_  # noqa: B018  (parse for validity)
        req.to  # noqa: B018
        vias = req.vias
    except SipParseError as exc:
        raise fail(exc.reason) from None
    if not vias:
        raise fail("missing Via")
    if method != req.method:
        raise fail("CSeq method does not match the Request-Line")
    mf = h.get("max-forwards")
    if mf is not None and (not is_num(mf) or int(mf) > 255):
        raise fail(f"bad Max-Forwards {mf!r}")
    exp = h.get("expires")
    if exp is not None and (not is_num(exp) or int(exp) >= 2**32):
        raise fail(f"bad Expires {exp!r}")
    for c in h.get_all("contact"):
        if c.strip() == "*":
            continue
        try:
            addr = Address.parse(c)
        except SipParseError as exc:
            raise fail(exc.reason) from None
        ce = addr.params.get("expires")
        if ce is not None and (not is_num(ce) or int(ce) >= 2**32):
            raise fail("bad Contact expires")
    try:
        ruri = SipUri.parse(req.uri)
    except SipParseError as exc:
        raise fail(exc.reason) from None
    if ruri.scheme not in ("sip", "sips", "tel"):
        raise fail(f"unsupported URI scheme {ruri.scheme!r}", 416)
    if ruri.headers is not None:
        raise fail("headers are not allowed in a Request-URI")


def new_token(n: int = 10) -> str:
    import secrets

    return secrets.token_hex(n // 2 + 1)[:n]


def new_branch() -> str:
    return "z9hG4bK" + new_token(16)
