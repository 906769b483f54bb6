"""The citizen channels against hostile input (every byte of a webhook or a mail is the sender's): forged
senders, threads that are not theirs, parser and regex blow-ups, floods of parts, files and automatic answers.
Providers are the local recorder (Bot/Graph API) and an SMTP sink; the desk runs on the tests' real Redis.
No timed assertions: bounded work is checked on results and counts."""

# The fixtures of test_channels.py are imported by name and requested as arguments of the same names.
# ruff: noqa: F811

from __future__ import annotations

import httpx
import pytest

from atiende.runtime import Runtime
from config.channels import ChannelsConfig
from desk.models import Interaction, display_ref
from tests._channels_support import SmtpSink
from tests.test_channels import (  # noqa: F401  (fixtures: channels, recorder, smtp)
    MAIL_TOKEN,
    channels,
    raw_mail,
    recorder,
    smtp,
)

pytestmark = pytest.mark.anyio

MAIL_URL = "/api/v1/channels/email/inbound"
MAIL_H = {"X-Atiende-Inbound-Token": MAIL_TOKEN, "Content-Type": "message/rfc822"}
NEEDS_PERSON = "Buenos días. Quiero hablar con una persona: me falta un documento en mi solicitud de ayuda al alquiler."


async def agent_reply_to(runtime: Runtime, smtp: SmtpSink, ref: str) -> list[str]:
    """Where an agent's reply on `ref` goes (the SMTP envelope's recipients)."""
    ticket = await runtime.desk.tickets.get(ref)
    it = Interaction(kind="email", channel="email", actor="agent:ana", direction="out", text="Su expediente: ...")
    await runtime.desk.senders["email"](ticket, it)
    return smtp.handler.envelopes[-1][1]


# ---- 1. a forged From cannot redirect the replies -------------------------------------------------------------


async def test_forged_from_on_the_thread_cannot_redirect_agent_replies(client: httpx.AsyncClient, runtime: Runtime,
                                                                       channels: ChannelsConfig, smtp: SmtpSink) -> None:
    r = await client.post(MAIL_URL, content=raw_mail("Ayudas al alquiler", NEEDS_PERSON, "<v1@correo.example>"),
                          headers=MAIL_H)
    ref = r.json()["ref"]
    assert r.json()["action"] == "ticket"
    # The attacker forges the citizen's From, puts the reference in the subject and a Reply-To of theirs.
    evil = raw_mail(f"Re: Ayudas al alquiler [Ref: {display_ref(ref)}]", "Les escribo desde otra cuenta.",
                    "<evil1@evil.example>", extra="Reply-To: atacante@evil.example")
    r = await client.post(MAIL_URL, content=evil, headers=MAIL_H)
    assert (r.json()["action"], r.json()["ref"]) == ("appended", ref)
    assert await agent_reply_to(runtime, smtp, ref) == ["carmen.ruiz@correo.example"]
    # The reply still threads on the latest mail.
    assert smtp.messages[-1]["In-Reply-To"] == "<evil1@evil.example>"


async def test_reply_to_is_honoured_only_with_our_mtas_dmarc_pass(client: httpx.AsyncClient, runtime: Runtime,
                                                                  channels: ChannelsConfig, smtp: SmtpSink) -> None:
    ours = "Authentication-Results: mx.junta.example; spf=pass; dmarc=pass header.from=correo.example"
    forged = "Authentication-Results: mx.junta.example.evil; dmarc=pass header.from=correo.example"
    failed = "Authentication-Results: mx.junta.example; dmarc=fail header.from=correo.example"
    cases = [("", ours, False),  # no trusted authserv-id configured: no header is believed
             ("mx.junta.example", forged, False),  # another server's results
             ("mx.junta.example", failed, False),
             ("mx.junta.example", ours, True)]
    for i, (trusted, header, honoured) in enumerate(cases):
        channels.email.trusted_authserv_id = trusted
        sender = f"carmen.ruiz{i}@correo.example"  # a citizen each, so each mail opens its own ticket
        raw = raw_mail(f"Ayudas {i}", NEEDS_PERSON, f"<rt{i}@correo.example>", sender=f"Carmen <{sender}>",
                       extra=f"{header}\r\nReply-To: c.ruiz@empresa.example")
        r = await client.post(MAIL_URL, content=raw, headers=MAIL_H)
        assert r.json()["action"] == "ticket", r.json()
        got = await agent_reply_to(runtime, smtp, r.json()["ref"])
        assert got == (["c.ruiz@empresa.example"] if honoured else [sender]), (i, got)
