"""HTTP digest authentication for SIP (RFC 2617 / RFC 3261 22): MD5, with and without qop=auth."""

from __future__ import annotations

import hashlib
import secrets

from telephony.sip.message import SipParseError, split_outside


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def parse_challenge(value: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y", qop="auth,auth-int"` -> {"scheme": "digest", "realm": "x", ...}."""
    scheme, _, rest = value.strip().partition(" ")
    out = {"scheme": scheme.lower()}
    for part in split_outside(rest, ","):
        name, eq, val = part.strip().partition("=")
        if not eq:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1]
        out[name.strip().lower()] = val
    return out


def response_value(*, user: str, password: str, realm: str, method: str, uri: str, nonce: str,
                   qop: str | None = None, nc: str = "00000001", cnonce: str = "") -> str:
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    if qop:
        return _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _md5(f"{ha1}:{nonce}:{ha2}")


def authorization(challenge: str, *, user: str, password: str, method: str, uri: str, nc: int = 1) -> str:
    """The Authorization / Proxy-Authorization value answering a WWW-/Proxy-Authenticate challenge."""
    ch = parse_challenge(challenge)
    if ch["scheme"] != "digest":
        raise SipParseError(f"unsupported auth scheme {ch['scheme']!r}")
    algorithm = ch.get("algorithm", "MD5")
    if algorithm.upper() != "MD5":
        raise SipParseError(f"unsupported digest algorithm {algorithm!r}")
    realm, nonce = ch.get("realm", ""), ch.get("nonce", "")
    qops = [q.strip() for q in ch.get("qop", "").split(",") if q.strip()]
    qop = "auth" if "auth" in qops else None
    if qops and qop is None:
        raise SipParseError(f"unsupported qop {ch['qop']!r}")
    cnonce = secrets.token_hex(8)
    ncs = f"{nc:08x}"
    resp = response_value(user=user, password=password, realm=realm, method=method, uri=uri, nonce=nonce,
                          qop=qop, nc=ncs, cnonce=cnonce)
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"', f'response="{resp}"',
             "algorithm=MD5"]
    if qop:
        parts += [f"qop={qop}", f"nc={ncs}", f'cnonce="{cnonce}"']
    if "opaque" in ch:
        parts.append(f'opaque="{ch["opaque"]}"')
    return "Digest " + ", ".join(parts)


def verify(header: str, *, password: str, method: str) -> bool:
    """Check an Authorization value (used by tests and by anyone wanting a tiny registrar)."""
    a = parse_challenge(header)
    if a.get("scheme") != "digest":
        return False
    expected = response_value(user=a.get("username", ""), password=password, realm=a.get("realm", ""), method=method,
                              uri=a.get("uri", ""), nonce=a.get("nonce", ""), qop=a.get("qop"),
                              nc=a.get("nc", ""), cnonce=a.get("cnonce", ""))
    return secrets.compare_digest(expected, a.get("response", ""))
