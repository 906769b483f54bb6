"""The id a contact is stored, keyed and shown under.

A call's id comes from its SIP Call-ID, which the caller's side writes: any text up to the header limit. Used as
it is, it would become Redis key segments (`call:<id>:live`: a Call-ID "x:live" writes another call's live entry),
file names and URL path segments. An ordinary Call-ID is kept, so logs match SIP traces; anything else is
replaced by a hash of it (stable: the same Call-ID, the same id), logged once beside the original.
"""

from __future__ import annotations

import hashlib
import re

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,119}$")


def contact_id(raw: str) -> str:
    if _SAFE.match(raw) and ".." not in raw:
        return raw
    return "c-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]
