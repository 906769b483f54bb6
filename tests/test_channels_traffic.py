"""The channels against real-world traffic (issue 20): real MTAs' bounces, Exchange and Gmail auto-replies, ARF
reports, Outlook and Gmail quoted replies, WhatsApp Cloud API payloads of every type, Telegram updates from
private chats, groups and channels. The samples are in tests/data/channels/; providers are the local recorder
(Bot/Graph API) and an SMTP sink, the desk runs on the tests' real Redis."""

# The fixtures of test_channels.py are imported by name and requested as arguments of the same names.
# ruff: noqa: F811

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from config.channels import ChannelsConfig
from desk.models import display_ref
from tests._channels_support import Recorder, SmtpSink
from tests.conftest import ADMIN_KEY
from tests.test_channels import (  # noqa: F401  (fixtures: channels, recorder, smtp)
    MAIL_TOKEN,
    TG_SECRET,
    channels,
    raw_mail,
    recorder,
    signed,
    smtp,
)

pytestmark = pytest.mark.anyio

DATA = Path(__file__).parent / "data" / "channels"
MAIL_URL = "/api/v1/channels/email/inbound"
TG_URL = "/api/v1/channels/telegram/webhook"
WA_URL = "/api/v1/channels/whatsapp/webhook"
TG_H = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
MAIL_H = {"X-Atiende-Inbound-Token": MAIL_TOKEN, "Content-Type": "message/rfc822"}
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
WA = json.loads((DATA / "whatsapp.json").read_text())
TG = json.loads((DATA / "telegram.json").read_text())


def sample(name: str, msgid: str = "<none@junta.example>", ref: str = "AAA-AAA") -> bytes:
    raw = (DATA / "mail" / name).read_bytes()
    return raw.replace(b"{MSGID}", msgid.encode()).replace(b"{REF}", ref.encode())


def wa(value_name: str, **subst: str) -> bytes:
    value = json.dumps(WA[value_name])
    for k, v in subst.items():
        value = value.replace("{" + k + "}", v)
    payload = {"object": "whatsapp_business_account",
               "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": json.loads(value)}]}]}
    return json.dumps(payload).encode()


def wa_text(text: str, wamid: str, ts: int = 1795424400) -> bytes:
    value = copy.deepcopy(WA["text"])
    value["messages"][0].update({"id": wamid, "timestamp": str(ts), "text": {"body": text}})
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}).encode()


async def tickets_count(runtime: Runtime) -> int:
    return int(await runtime.store.redis.zcard(runtime.store.keys.tickets_all))


async def citizen_mail(client: httpx.AsyncClient, smtp: SmtpSink, mid: str) -> tuple[str, str]:
    """Carmen writes; a ticket opens and the assistant's answer goes out: (ref, the answer's Message-ID)."""
    r = await client.post(MAIL_URL, content=raw_mail("Solicitud de cita", "Quiero pedir cita previa para renovar el DNI",
                                                     mid), headers=MAIL_H)
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "ticket", r.json()
    return r.json()["ref"], str(smtp.messages[-1]["Message-ID"])


# ---- e-mail ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["autoreply_exchange.eml", "autoreply_gmail.eml", "feedback_arf.eml",
                                  "list_newsletter.eml", "bounce_postfix.eml", "bounce_exim.eml", "bounce_exchange.eml",
                                  "bounce_gmail.eml"])
async def test_automatic_mail_never_opens_appends_or_answers(client: httpx.AsyncClient, runtime: Runtime,
                                                             channels: ChannelsConfig, smtp: SmtpSink, name: str) -> None:
    ref, _ = await citizen_mail(client, smtp, f"<c-{name}@correo.example>")
    sent, count = len(smtp.messages), await tickets_count(runtime)
    before = len(await runtime.desk.tickets.interactions(ref))
    # Threaded on an unrelated id: nothing of ours was bounced, nothing is appended, nobody is answered.
    r = await client.post(MAIL_URL, content=sample(name, "<unrelated@elsewhere.example>", display_ref(ref)), headers=MAIL_H)
    assert r.status_code == 200, r.text
    assert r.json()["action"] in ("ignored", "status-unknown"), r.json()
    assert len(smtp.messages) == sent and await tickets_count(runtime) == count
    assert len(await runtime.desk.tickets.interactions(ref)) == before


@pytest.mark.parametrize("name", ["bounce_postfix.eml", "bounce_exim.eml", "bounce_exchange.eml", "bounce_gmail.eml"])
async def test_bounce_of_our_reply_marks_it_failed(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                                   smtp: SmtpSink, name: str) -> None:
    ref, _ = await citizen_mail(client, smtp, f"<b-{name}@correo.example>")
    reply = await runtime.desk.tickets.reply(ref, "Le confirmamos la cita para el martes.", actor="agent:ana")
    assert reply.delivery.sent
    our_id = str(smtp.messages[-1]["Message-ID"])
    sent, count = len(smtp.messages), await tickets_count(runtime)
    r = await client.post(MAIL_URL, content=sample(name, our_id, display_ref(ref)), headers=MAIL_H)
    assert r.json()["action"] == "status-failed", r.json()
    items = await runtime.desk.tickets.interactions(ref)
    ours = next(i for i in items if i.id == reply.interaction.id)
    assert ours.data["delivery"]["status"] == "failed"
    assert "correo devuelto" in ours.data["delivery"]["reason"] and "5." in ours.data["delivery"]["reason"]
    assert items[-1].kind == "note" and items[-1].data == {"undelivered": ours.id}
    assert len(smtp.messages) == sent and await tickets_count(runtime) == count
    # The MTA posts the same bounce again: recorded once.
    r = await client.post(MAIL_URL, content=sample(name, our_id, display_ref(ref)), headers=MAIL_H)
    assert r.json()["action"] == "duplicate"


async def test_quoted_replies_are_cut_and_a_later_reply_to_does_not_redirect(client: httpx.AsyncClient, runtime: Runtime,
                                                               channels: ChannelsConfig, smtp: SmtpSink) -> None:
    ref, answer_id = await citizen_mail(client, smtp, "<q1@correo.example>")
    r = await client.post(MAIL_URL, content=sample("reply_outlook.eml", answer_id, display_ref(ref)), headers=MAIL_H)
    assert (r.json()["action"], r.json()["ref"]) == ("appended", ref)
    last = (await runtime.desk.tickets.interactions(ref))[-1]
    assert last.text.startswith("Gracias. Adjunto el justificante") and last.text.endswith("Un saludo,\nCarmen")
    assert "Enviado" not in last.text and "cómo va" not in last.text
    # Her Outlook mail's Reply-To does not move the conversation: anyone can forge From and thread on a ticket.
    await runtime.desk.tickets.reply(ref, "Anotado.", actor="agent:ana")
    assert smtp.handler.envelopes[-1][1] == ["carmen.ruiz@correo.example"]
    sent = len(smtp.messages)
    r = await client.post(MAIL_URL, content=sample("reply_gmail.eml", answer_id, display_ref(ref)), headers=MAIL_H)
    assert r.json()["action"] == "appended"
    assert (await runtime.desk.tickets.interactions(ref))[-1].text == "Perfecto, allí estaré el martes."
    assert len(smtp.messages) == sent  # appended: a person answers, the assistant says nothing
    # And they still go back to her address.
    await runtime.desk.tickets.reply(ref, "Hasta el martes.", actor="agent:ana")
    assert smtp.handler.envelopes[-1][1] == ["carmen.ruiz@correo.example"]


async def test_html_only_mail_keeps_no_style_or_script_text(client: httpx.AsyncClient, runtime: Runtime,
                                                            channels: ChannelsConfig, smtp: SmtpSink) -> None:
    r = await client.post(MAIL_URL, content=sample("html_only_style.eml"), headers=MAIL_H)
    assert r.json()["action"] == "ticket", r.json()  # not a status answer from the <title>, <style> or quoted text
    ticket = await runtime.desk.tickets.get(r.json()["ref"])
    assert ticket.body == "Necesito información sobre la beca de comedor escolar para mi hija."


async def test_crlf_in_encoded_subject_is_answered(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                                   smtp: SmtpSink) -> None:
    r = await client.post(MAIL_URL, content=sample("subject_crlf.eml"), headers=MAIL_H)
    assert r.status_code == 200 and r.json()["action"] == "ticket" and r.json()["delivered"] is True
    answer = smtp.messages[-1]
    assert "\r" not in str(answer["Subject"]) and "\n" not in str(answer["Subject"]) and answer["Bcc"] is None
    assert smtp.handler.envelopes[-1][1] == ["carmen.ruiz@correo.example"]


async def test_reference_hint_counts_only_for_the_tickets_citizen(client: httpx.AsyncClient, runtime: Runtime,
                                                                  channels: ChannelsConfig, smtp: SmtpSink) -> None:
    ref, _ = await citizen_mail(client, smtp, "<h1@correo.example>")
    contact = await runtime.store.redis.get(runtime.store.keys.ticket_contact(ref))
    before = len(await runtime.desk.tickets.interactions(ref))
    mallory = raw_mail(f"Re: Solicitud de cita [Ref: {display_ref(ref)}]", "Envíenme por favor los datos de la cita",
                       "<m1@atacante.example>", sender="Carmen Ruiz <carmen@atacante.example>")
    r = await client.post(MAIL_URL, content=mallory, headers=MAIL_H)
    assert r.json()["ref"] != ref
    assert len(await runtime.desk.tickets.interactions(ref)) == before
    assert await runtime.store.redis.get(runtime.store.keys.ticket_contact(ref)) == contact
    # The citizen herself, from a client that dropped In-Reply-To: the hint finds her ticket.
    own = raw_mail(f"Re: Solicitud de cita [Ref: {display_ref(ref)}]", "Se me olvidó decir que es por la tarde",
                   "<h2@correo.example>")
    r = await client.post(MAIL_URL, content=own, headers=MAIL_H)
    assert (r.json()["action"], r.json()["ref"]) == ("appended", ref)


# ---- no message lost on a retry, no replay ---------------------------------------------------------------------


async def test_processing_fails_once_and_the_retry_is_stored(client: httpx.AsyncClient, runtime: Runtime,
                                                             channels: ChannelsConfig, recorder: Recorder,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from core.errors import Unavailable

    real_create = runtime.desk.tickets.create
    calls = 0

    async def create_failing_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("the store did not answer in time")
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(runtime.desk.tickets, "create", create_failing_once)
    update = TG["private_text"]
    count = await tickets_count(runtime)
    r = await client.post(TG_URL, json=update, headers=TG_H)
    assert r.status_code == 503 and await tickets_count(runtime) == count
    r = await client.post(TG_URL, json=update, headers=TG_H)  # Telegram retries the same update
    assert r.status_code == 200 and r.json()["action"] == "ticket"
    assert await tickets_count(runtime) == count + 1
    r = await client.post(TG_URL, json=update, headers=TG_H)  # and again: stored once
    assert r.json()["action"] == "duplicate" and await tickets_count(runtime) == count + 1


async def test_an_unexpected_failure_answers_500_and_the_retry_is_stored(runtime: Runtime, channels: ChannelsConfig,
                                                                         recorder: Recorder,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug or crash mid-way (not an AtiendeError): 500 as a real server answers, the claim is released."""
    from desk_api.app import create_app

    real_create = runtime.desk.tickets.create
    calls = 0

    async def create_crashing_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(runtime.desk.tickets, "create", create_crashing_once)
    body = wa_text("Quiero poner una queja por el trato recibido", "wamid.CRASH1")
    transport = httpx.ASGITransport(app=create_app(runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as raw_client:
        r = await raw_client.post(WA_URL, content=body, headers=signed(body))
        assert r.status_code == 500
        r = await raw_client.post(WA_URL, content=body, headers=signed(body))  # Meta's retry
        assert r.status_code == 200 and r.json()["results"][0]["action"] == "ticket"


async def test_old_deliveries_are_refused_as_replays(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                                     recorder: Recorder) -> None:
    old = copy.deepcopy(TG["private_text"])
    old["update_id"] += 5000
    old["message"]["date"] -= 2 * 86400
    count = await tickets_count(runtime)
    r = await client.post(TG_URL, json=old, headers=TG_H)
    assert r.json()["action"] == "stale" and await tickets_count(runtime) == count and not recorder.requests
    body = wa_text("Quiero pedir cita previa", "wamid.OLD1", ts=1795424400 - 8 * 86400)  # Meta retries for 7 days
    r = await client.post(WA_URL, content=body, headers=signed(body))
    assert r.json()["results"][0]["action"] == "stale" and await tickets_count(runtime) == count


# ---- WhatsApp ----------------------------------------------------------------------------------------------------


async def test_whatsapp_non_text_messages(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                          recorder: Recorder) -> None:
    for name in ("reaction", "edit", "number_change"):  # quiet: no answer, no ticket
        body = wa(name)
        r = await client.post(WA_URL, content=body, headers=signed(body))
        assert r.json()["results"][0]["action"] == "ignored", (name, r.json())
    assert recorder.requests == []
    recorder.media["1234567890123456"] = (JPEG, "image/jpeg")
    recorder.media["2345678901234567"] = (PDF, "application/pdf")
    body = wa("image")  # the caption is the message; it says no more than that: the assistant asks, the photo waits
    r = await client.post(WA_URL, content=body, headers=signed(body))
    result = r.json()["results"][0]
    assert result["attachments"] == 1 and result["action"] == "asked", result
    body = wa_text("Quiero poner una queja por el trato recibido en la oficina", "wamid.NT1")
    r = await client.post(WA_URL, content=body, headers=signed(body))
    ticket = await runtime.desk.tickets.get(r.json()["results"][0]["ref"])
    first = (await runtime.desk.tickets.interactions(ticket.ref))[0]
    [kept] = first.data["attachments"]  # the photo joined the ticket its next message opened
    assert kept["sha256"] == hashlib.sha256(JPEG).hexdigest() and kept["content_type"] == "image/jpeg"
    assert (runtime.data_dir / kept["path"]).read_bytes() == JPEG
    # Agents open it through the ticket that holds it; nobody else, and no other file through that ticket.
    url = f"/api/v1/tickets/{ticket.ref}/attachments/{kept['sha256']}"
    assert (await client.get(url)).status_code == 401
    r = await client.get(url, headers={"X-API-Key": ADMIN_KEY})
    assert r.status_code == 200 and r.content == JPEG and r.headers["x-content-type-options"] == "nosniff"
    other = await runtime.desk.tickets.create(channel="phone", queue="N1", subject="Otra", actor="ivr")
    r = await client.get(f"/api/v1/tickets/{other.ref}/attachments/{kept['sha256']}", headers={"X-API-Key": ADMIN_KEY})
    assert r.status_code == 404
    body = wa("document")
    r = await client.post(WA_URL, content=body, headers=signed(body))
    result = r.json()["results"][0]
    assert (result["action"], result["ref"]) == ("appended", ticket.ref)
    last = (await runtime.desk.tickets.interactions(ticket.ref))[-1]
    assert last.text == "Certificado de empadronamiento" and last.data["attachments"][0]["name"] == "empadronamiento.pdf"
    # A file whose bytes are not what it claims is not kept; the agent still sees that it came.
    recorder.media["1234567890123456"] = (b"MZ\x90\x00 not a jpeg", "image/jpeg")
    body = wa("image").replace(b"wamid.HBgLMzQ2MDAxMTEyMjIVAgASGBQzRUIw", b"wamid.SECOND")
    r = await client.post(WA_URL, content=body, headers=signed(body))
    refused = (await runtime.desk.tickets.interactions(ticket.ref))[-1].data["attachments"][0]
    assert "refused" in refused and "path" not in refused


async def test_whatsapp_window_template_and_statuses(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                                     recorder: Recorder) -> None:
    body = wa_text("Quiero poner una queja por el trato recibido", "wamid.W1")
    r = await client.post(WA_URL, content=body, headers=signed(body))
    ref = r.json()["results"][0]["ref"]
    # Inside the window: free-form text; its statuses are recorded, in any order, never backwards.
    reply = await runtime.desk.tickets.reply(ref, "Lo estamos revisando.", actor="agent:luis")
    wamid = reply.delivery.result["wamid"]  # type: ignore[index]
    assert recorder.requests[-1].body["type"] == "text"
    for status, expected in (("status_sent", "sent"), ("status_read", "read"), ("status_delivered", "read")):
        b = wa(status, WAMID=wamid)
        await client.post(WA_URL, content=b, headers=signed(b))
        ours = next(i for i in await runtime.desk.tickets.interactions(ref) if i.id == reply.interaction.id)
        assert ours.data["delivery"]["status"] == expected

    # 24 h later (the window's key expires with Redis' clock; here it is removed): the template goes instead.
    await runtime.store.redis.delete(runtime.store.keys.channel_window("whatsapp", "34600111222"))
    late = await runtime.desk.tickets.reply(ref, "Ya tenemos respuesta a su queja: " + "detalle. " * 600, actor="agent:luis")
    sent = recorder.requests[-1].body
    assert sent["type"] == "template"
    assert sent["template"]["name"] == channels.whatsapp.template_name and sent["template"]["language"]["code"] == "es"
    assert sent["template"]["components"][0]["parameters"][0]["text"] == display_ref(ref)
    ours = next(i for i in await runtime.desk.tickets.interactions(ref) if i.id == late.interaction.id)
    assert ours.data["delivery"]["template"] == channels.whatsapp.template_name and ours.data["delivery"]["held"] is True
    # A free-form message sent outside the window anyway fails at WhatsApp (131047): recorded as failed.
    b = wa("status_failed_131047", WAMID=wamid)
    await client.post(WA_URL, content=b, headers=signed(b))
    first = next(i for i in await runtime.desk.tickets.interactions(ref) if i.id == reply.interaction.id)
    assert first.data["delivery"]["status"] == "failed" and "131047" in first.data["delivery"]["reason"]
    # The citizen writes again: the window opens and the held reply goes out, split at 4,096 characters.
    n = len(recorder.requests)
    body = wa_text("Vale, gracias", "wamid.W2")
    await client.post(WA_URL, content=body, headers=signed(body))
    texts = [q.body["text"]["body"] for q in recorder.requests[n:] if q.body.get("type") == "text"]
    assert texts[0].startswith("Ya tenemos respuesta") and len(texts) >= 2 and all(len(t) <= 4096 for t in texts)
    assert "".join(texts).count("detalle.") == 600
    ours = next(i for i in await runtime.desk.tickets.interactions(ref) if i.id == late.interaction.id)
    assert ours.data["delivery"]["released"] is True and ours.data["delivery"]["held"] is False
    assert await runtime.store.redis.llen(runtime.store.keys.channel_pending("whatsapp", "34600111222")) == 0


def test_email_parser_takes_any_bytes() -> None:
    """The inbound body is whatever reaches the MTA: a message, a clean InvalidInput, never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from core.errors import InvalidInput
    from desk_api.channels.email import parse_mail

    seeds = [p.read_bytes() for p in sorted((DATA / "mail").glob("*.eml"))]

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(seeds), st.integers(0, 4000), st.binary(max_size=40), st.integers(0, 60))
    def check(seed: bytes, at: int, junk: bytes, cut: int) -> None:
        raw = seed[:at] + junk + seed[at + cut:]
        try:
            parse_mail(raw, "atencion@junta.example")
        except InvalidInput:
            pass

    check()


# ---- Telegram ----------------------------------------------------------------------------------------------------


async def test_telegram_groups_channels_service_and_edits(client: httpx.AsyncClient, runtime: Runtime,
                                                          channels: ChannelsConfig, recorder: Recorder) -> None:
    count = await tickets_count(runtime)
    r = await client.post(TG_URL, json=TG["group_text"], headers=TG_H)
    assert r.json()["action"] == "ignored" and r.json()["delivered"] is True
    assert recorder.requests[-1].body == {"chat_id": -1001234567890, "text": channels.telegram.group_notice}
    for name in ("group_text_2", "new_chat_members", "left_chat_member", "channel_post"):
        r = await client.post(TG_URL, json=TG[name], headers=TG_H)
        assert r.json()["action"] == "ignored", name
    assert len(recorder.requests) == 1 and await tickets_count(runtime) == count  # one notice per group, no ticket
    r = await client.post(TG_URL, json=TG["private_text"], headers=TG_H)
    ref = r.json()["ref"]
    before = len(await runtime.desk.tickets.interactions(ref))
    r = await client.post(TG_URL, json=TG["edited_message"], headers=TG_H)
    assert r.json()["action"] == "ignored" and len(await runtime.desk.tickets.interactions(ref)) == before
    r = await client.post(TG_URL, json=TG["sticker"], headers=TG_H)
    assert r.json()["action"] == "ignored"
    recorder.media["AgACAgQAAxkBAAIB1mS_large"] = (JPEG, "image/jpeg")
    r = await client.post(TG_URL, json=TG["photo_caption"], headers=TG_H)
    assert (r.json()["action"], r.json()["ref"]) == ("appended", ref)
    last = (await runtime.desk.tickets.interactions(ref))[-1]
    assert last.text == "Adjunto la foto del recibo del IBI" and last.data["attachments"][0]["size"] == len(JPEG)
    assert any(q.path.endswith("/documents/AgACAgQAAxkBAAIB1mS_large") for q in recorder.requests)  # the largest size


async def test_telegram_429_is_honoured_and_long_replies_split(client: httpx.AsyncClient, runtime: Runtime,
                                                               channels: ChannelsConfig, recorder: Recorder) -> None:
    recorder.throttle = 1
    r = await client.post(TG_URL, json=TG["private_text"], headers=TG_H)
    assert r.json()["delivered"] is True
    sends = [q for q in recorder.requests if q.path.endswith("/sendMessage")]
    assert len(sends) == 2 and sends[0].body == sends[1].body  # retried after retry_after
    ref = r.json()["ref"]
    text = "\n\n".join(f"Párrafo {n}. " + ("Esta es una frase de la respuesta. " * 40).strip() for n in range(8))
    reply = await runtime.desk.tickets.reply(ref, text, actor="agent:ana")
    assert reply.delivery.sent and len(reply.delivery.result["ids"]) >= 3  # type: ignore[index]
    pieces = [q.body["text"] for q in recorder.requests[-len(reply.delivery.result["ids"]):]]  # type: ignore[index]
    assert all(len(p) <= 4096 for p in pieces) and "\n\n".join(pieces) == text
    # Past the bounded wait, the send fails (and is noted) instead of blocking the webhook.
    recorder.throttle, recorder.retry_after = 5, 3600
    late = await runtime.desk.tickets.reply(ref, "Otra cosa.", actor="agent:ana")
    assert not late.delivery.sent and "rate-limiting" in (late.delivery.error or "")
    recorder.throttle, recorder.retry_after = 0, 1


async def test_status_lookup_checks_one_reference_per_message(client: httpx.AsyncClient, runtime: Runtime,
                                                              channels: ChannelsConfig, recorder: Recorder) -> None:
    ticket = await runtime.desk.tickets.create(channel="phone", queue="N1", subject="Llamada", actor="ivr")
    guesses = " ".join(f"2{c}{c}-9{c}{c}" for c in "BCDFGHJK") + " " + display_ref(ticket.ref)
    update = copy.deepcopy(TG["private_text"])
    update["message"]["text"] = f"¿Cómo va mi consulta? {guesses}"
    await client.post(TG_URL, json=update, headers=TG_H)
    assert "No encuentro" in recorder.requests[-1].body["text"]  # the real one, listed last, was never looked up

