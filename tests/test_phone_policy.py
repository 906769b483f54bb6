"""Callbacks go only to real, national, ordinary numbers: a spoofed From header or a typed string never makes
Atiende dial a premium line, a short code, another country or another host."""

from __future__ import annotations

import pytest

from atiende.runtime import Runtime
from core.errors import InvalidInput
from core.phone import category, check, normalise


@pytest.mark.parametrize(("raw", "e164"), [
    ("600 12 34 56", "+34600123456"), ("+34 600-123-456", "+34600123456"), ("0034600123456", "+34600123456"),
    ("sip:600123456@127.0.0.2", "+34600123456"), ("924 00 20 11", "+34924002011"), ("34600123456", "+34600123456"),
    ("hola", None), ("600123456; drop table", None), ("600123456@evil.example>", None), ("", None),
])
def test_normalise(raw: str, e164: str | None) -> None:
    assert normalise(raw) == e164


@pytest.mark.parametrize(("number", "cat", "allowed"), [
    ("+34600123456", "mobile", True), ("+34924002011", "geographic", True), ("+34900123456", "freephone", True),
    ("+34806123456", "premium", False), ("+34905123456", "premium", False), ("+34902123456", "shared_cost", False),
    ("+34704123456", "personal", False), ("+44201234567", "international", False), ("112", "short", False),
    ("+3460012", "short", False),
])
def test_categories_and_default_policy(number: str, cat: str, allowed: bool) -> None:
    assert category(normalise(number) or number) == cat
    assert check(number).allowed is allowed


def test_international_only_when_allowed() -> None:
    assert check("+44201234567", allow_international=True).allowed


@pytest.mark.anyio
async def test_callbacks_store_e164_and_refuse_what_must_not_be_dialled(runtime: Runtime) -> None:
    cb = await runtime.callbacks.create(phone="600 12 34 56", ticket_ref=None)
    assert cb.phone == "+34600123456"
    for bad in ("600123456@127.0.0.2>", "806123456", "+44201234567", "anything"):
        with pytest.raises(InvalidInput):
            await runtime.callbacks.create(phone=bad, ticket_ref=None)
