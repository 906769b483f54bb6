"""Phone numbers that Atiende may call back: normalised to E.164 and checked against the dial policy.

A caller's number comes from a SIP From header, which anyone can write ("600123456@attacker.example"), and an
agent may type one: both are normalised here (digits only, the country code added) and refused when they name
premium-rate, shared-cost or short numbers, or another country unless international callbacks are allowed.
The numbering is Spain's national plan (CNMC); other countries' numbers are "international".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Category = Literal["mobile", "geographic", "freephone", "shared_cost", "premium", "corporate", "personal",
                   "short", "international", "invalid"]

# Never called back by default: they cost the council (premium, shared cost) or reach services, not people.
BLOCKED_BY_DEFAULT: tuple[Category, ...] = ("premium", "shared_cost", "short", "personal", "invalid")

_SEPARATORS = re.compile(r"[\s().\-/]")
# A number as callers and agents write it: an optional + or 00, then digits (separators removed).
_PLAIN = re.compile(r"^(?:\+|00)?[0-9]{3,15}$")


@dataclass(frozen=True)
class PhoneCheck:
    e164: str | None  # "+34600123456"; None when it is not a number at all
    category: Category
    allowed: bool
    reason: str  # Spanish, for the person who typed it


def normalise(raw: str, country_code: str = "34") -> str | None:
    """'600 12 34 56', '+34 600123456', '0034600123456', 'sip:600123456@host' -> '+34600123456'; None when the
    text is not a phone number (letters, other URI parts, too long)."""
    text = raw.strip()
    if text.lower().startswith(("sip:", "sips:", "tel:")):
        text = text.split(":", 1)[1]
        text = text.split("@", 1)[0].split(";", 1)[0]
    text = _SEPARATORS.sub("", text)
    if not _PLAIN.match(text):
        return None
    if text.startswith("+"):
        return text
    if text.startswith("00"):
        return "+" + text[2:]
    if len(text) == 9 and country_code == "34":
        return f"+34{text}"
    if text.startswith(country_code) and len(text) == len(country_code) + 9:
        return "+" + text
    return f"+{country_code}{text}" if len(text) >= 9 else text  # a short code stays short (and is refused)


def category(number: str, country_code: str = "34") -> Category:
    if not number.startswith("+"):
        return "short" if number.isdigit() and len(number) < 9 else "invalid"
    digits = number[1:]
    if not digits.isdigit():
        return "invalid"
    if not digits.startswith(country_code):
        return "international"
    national = digits[len(country_code):]
    if len(national) != 9:
        return "short" if len(national) < 9 else "invalid"
    if national[0] in "67":
        return "personal" if national.startswith("70") else "mobile"
    if national.startswith(("800", "900")):
        return "freephone"
    if national.startswith(("901", "902")):
        return "shared_cost"
    if national.startswith(("803", "806", "807", "905", "907")):
        return "premium"
    if national.startswith("51"):
        return "corporate"
    if national[0] in "89":
        return "geographic"
    return "invalid"


def check(raw: str, *, allow_international: bool = False, blocked: tuple[str, ...] = BLOCKED_BY_DEFAULT,
          country_code: str = "34") -> PhoneCheck:
    e164 = normalise(raw, country_code)
    if e164 is None:
        return PhoneCheck(None, "invalid", False, "no es un número de teléfono")
    cat = category(e164, country_code)
    if cat == "international" and not allow_international:
        return PhoneCheck(e164, cat, False, "no se devuelven llamadas a números extranjeros")
    if cat in blocked:
        what = {"premium": "de tarificación adicional", "shared_cost": "de coste compartido", "short": "corto",
                "personal": "de numeración personal", "invalid": "no válido"}.get(cat, cat)
        return PhoneCheck(e164, cat, False, f"no se devuelven llamadas a un número {what}")
    return PhoneCheck(e164, cat, True, "")
