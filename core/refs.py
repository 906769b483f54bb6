"""Ticket references: six characters a person can read aloud and key in ("K7M-4PX").

No 0/O or 1/I, so they cannot be misread or misheard; always letters and digits. Shared by the desk (which
issues them), the IVR and the channels (which hear, read and say them).
"""

from __future__ import annotations

import re
import secrets

REF_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
REF_LENGTH = 6
_REF_CLEAN = re.compile(r"[^0-9A-Za-z]")


def new_ref() -> str:
    """Random, with at least one digit and one letter: an all-letter reference reads like a word to the router,
    an all-digit one like a file number."""
    while True:  # 32 symbols = 5 random bits each, all drawn at once (one getrandom call, not one per symbol)
        bits = secrets.randbits(5 * REF_LENGTH)
        ref = "".join(REF_ALPHABET[(bits >> (5 * i)) & 31] for i in range(REF_LENGTH))
        if any(c.isdigit() for c in ref) and any(c.isalpha() for c in ref):
            return ref


def normalize_ref(text: str) -> str | None:
    """'k7m-4px', 'K7M 4PX' -> 'K7M4PX'; None when it cannot be a reference (wrong length or letters)."""
    ref = _REF_CLEAN.sub("", text or "").upper()
    if len(ref) != REF_LENGTH or any(c not in REF_ALPHABET for c in ref):
        return None
    return ref


def display_ref(ref: str) -> str:
    half = REF_LENGTH // 2
    return f"{ref[:half]}-{ref[half:]}"


def spoken_ref(ref: str) -> str:
    """'K7M4PX' -> 'K, 7, M, 4, P, X' for text-to-speech (one character at a time, grouped by the hyphen)."""
    half = REF_LENGTH // 2
    return ", ".join(ref[:half]) + "; " + ", ".join(ref[half:])
