"""Telegram, WhatsApp and e-mail webhooks with the providers' real payload shapes, their secrets and signatures,
and replies recorded by local stand-ins (an HTTP recorder for the Bot/Graph APIs, an SMTP sink)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from config.channels import ChannelsConfig, EmailConfig, TelegramConfig, WhatsappConfig
from desk.models import Interaction, display_ref
from desk_api.channels.assistant import ref_candidates
from tests._channels_support import Recorder, SmtpSink

pytestmark = pytest.mark.anyio

TG_SECRET = "tg-secret-123"
TG_TOKEN = "123456:ABC-DEF"
WA_SECRET = "wa-app-secret"
WA_VERIFY = "wa-verify-token"
MAIL_TOKEN = "mail-token"


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder().start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def channels(runtime: Runtime, recorder: Recorder, smtp: SmtpSink) -> ChannelsConfig:
    recorder.requests.clear()
    recorder.fail = False
    smtp.messages.clear()
    cfg = ChannelsConfig(
        telegram=TelegramConfig(bot_token=TG_TOKEN, webhook_secret=TG_SECRET, api_base=recorder.url, timeout_s=5),
        whatsapp=WhatsappConfig(verify_token=WA_VERIFY, app_secret=WA_SECRET, access_token="EAAG-token",
                                phone_number_id="106540352242922", api_base=recorder.url, timeout_s=5),
        email=EmailConfig(inbound_token=MAIL_TOKEN, address="atencion@junta.example", smtp_port=smtp.port, timeout_s=5),
    )
    runtime.channels_override = cfg
    return cfg


# ---- payloads as the providers send them ---------------------------------------------------------------

CITA = "Quiero pedir cita previa para renovar el DNI"


def tg_update(update_id: int, text: str | None = CITA, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": 1365 + update_id,
        "from": {"id": 1111111, "is_bot": False, "first_name": "Lucía", "last_name": "Pérez", "username": "luciap",
                 "language_code": "es"},
        "chat": {"id": 1111111, "first_name": "Lucía", "last_name": "Pérez", "username": "luciap", "type": "private"},
        "date": 1795424400,
        **extra,
    }
    if text is not None:
        message["text"] = text
    return {"update_id": update_id, "message": message}


def wa_payload(text: str, wamid: str, wa_id: str = "34600111222") -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "34900123456", "phone_number_id": "106540352242922"},
                    "contacts": [{"profile": {"name": "Manuel García"}, "wa_id": wa_id}],
                    "messages": [{"from": wa_id, "id": wamid, "timestamp": "1795424400", "type": "text",
                                  "text": {"body": text}}],
                },
            }],
        }],
    }


WA_STATUS = {
    "object": "whatsapp_business_account",
    "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "34900123456", "phone_number_id": "106540352242922"},
        "statuses": [{"id": "wamid.OUT1", "status": "delivered", "timestamp": "1795424401", "recipient_id": "34600111222"}],
    }}]}],
}


def signed(body: bytes, secret: str = WA_SECRET) -> dict[str, str]:
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": sig, "Content-Type": "application/json"}


def raw_mail(subject: str, body: str, message_id: str, *, sender: str = "Carmen Ruiz <carmen.ruiz@correo.example>",
             in_reply_to: str | None = None, references: str | None = None, extra: str = "") -> bytes:
    head = [f"From: {sender}", "To: Atención <atencion@junta.example>", f"Subject: {subject}",
            "Date: Mon, 23 Nov 2026 10:00:00 +0100", f"Message-ID: {message_id}", "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    if in_reply_to:
        head.append(f"In-Reply-To: {in_reply_to}")
    if references:
        head.append(f"References: {references}")
    if extra:
        head.append(extra)
    return ("\r\n".join(head) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


# ---- the assistant's reference spotting -------------------------------------------------------------------

def test_reference_candidates() -> None:
    assert ref_candidates("¿Cómo va mi consulta K7M-4PX?") == ["K7M4PX"]
    assert ref_candidates("referencia k7m 4px por favor")[0] == "K7M4PX"
    assert ref_candidates("mi consulta") == []
    assert ref_candidates("O1I000") == []  # 0/O/1/I never appear in references


# ---- Telegram --------------------------------------------------------------------------------------------

async def test_telegram_rejects_missing_or_wrong_secret(client: httpx.AsyncClient, channels: ChannelsConfig,
                                                         recorder: Recorder) -> None:
    url = "/api/v1/channels/telegram/webhook"
    r = await client.post(url, json=tg_update(1))
    assert r.status_code == 401 and r.json()["error_id"] == "unauthorized"
    r = await client.post(url, json=tg_update(1), headers={"X-Telegram-Bot-Api-Secret-Token": "nope"})
    assert r.status_code == 403 and r.json()["error_id"] == "forbidden"
    channels.telegram.webhook_secret = ""
    r = await client.post(url, json=tg_update(1), headers={"X-Telegram-Bot-Api-Secret-Token": ""})
    assert r.status_code == 403 and r.json()["error_id"] == "channel-not-configured"
    assert recorder.requests == []


async def test_telegram_message_opens_ticket_and_replies(client: httpx.AsyncClient, runtime: Runtime,
                                                          channels: ChannelsConfig, recorder: Recorder) -> None:
    h = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    url = "/api/v1/channels/telegram/webhook"
    r = await client.post(url, json=tg_update(7), headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["action"] == "ticket" and out["delivered"] is True
    ref = out["ref"]
    [sent] = recorder.requests
    assert sent.path == f"/bot{TG_TOKEN}/sendMessage"
    assert sent.body["chat_id"] == 1111111 and display_ref(ref) in sent.body["text"]

    ticket = await runtime.desk.tickets.get(ref)
    assert (ticket.channel, ticket.queue, ticket.status) == ("telegram", "N1", "open")
    citizen = await runtime.desk.citizens.get(ticket.citizen_id or "")
    assert citizen.identity("telegram") == "1111111" and citizen.name == "Lucía Pérez"
    items = await runtime.desk.tickets.interactions(ref)
    assert [(i.direction, i.actor) for i in items if i.kind == "chat"] == [("in", "citizen"), ("out", "assistant")]

    # Telegram retries the same update: acted on once.
    r = await client.post(url, json=tg_update(7), headers=h)
    assert r.json()["action"] == "duplicate" and len(recorder.requests) == 1
    # A second message in the same chat continues the open ticket; the agent will answer it.
    r = await client.post(url, json=tg_update(8, "Es para mi hija, que empieza en septiembre"), headers=h)
    out = r.json()
    assert (out["action"], out["ref"], out["delivered"]) == ("appended", ref, None)
    assert len(recorder.requests) == 1
    assert (await runtime.desk.tickets.interactions(ref))[-1].text == "Es para mi hija, que empieza en septiembre"

    # An agent's reply goes out through the Bot API.
    reply = await runtime.desk.tickets.reply(ref, "Puede solicitarla en la sede electrónica.", actor="agent:ana")
    assert reply.delivery.sent and reply.delivery.result == {"telegram_message_id": "2", "ids": ["2"]}
    assert recorder.requests[-1].body == {"chat_id": 1111111, "text": "Puede solicitarla en la sede electrónica."}


async def test_telegram_status_lookup_and_non_text(client: httpx.AsyncClient, runtime: Runtime,
                                                   channels: ChannelsConfig, recorder: Recorder) -> None:
    h = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    url = "/api/v1/channels/telegram/webhook"
    ticket = await runtime.desk.tickets.create(channel="phone", queue="N1", subject="Llamada", actor="ivr")
    r = await client.post(url, json=tg_update(20, f"Hola, ¿cómo va mi consulta {display_ref(ticket.ref)}?"), headers=h)
    assert r.json()["action"] == "answered"
    text = recorder.requests[-1].body["text"]
    assert text == await runtime.desk.tickets.status_text(ticket.ref)
    assert display_ref(ticket.ref) in text

    # Asking without the reference: the assistant asks for it, then answers.
    r = await client.post(url, json=tg_update(21, "¿Cómo va mi consulta?"), headers=h)
    assert r.json()["action"] == "asked" and "referencia" in recorder.requests[-1].body["text"]
    r = await client.post(url, json=tg_update(22, ticket.ref.lower()), headers=h)
    assert r.json()["action"] == "answered" and recorder.requests[-1].body["text"] == text

    # A reference nobody has.
    r = await client.post(url, json=tg_update(23, "¿Cómo va mi consulta 22Z-99X?"), headers=h)
    assert "No encuentro" in recorder.requests[-1].body["text"]

    # A sticker: nothing to answer, quietly. A location: no ticket, a polite note.
    n = len(recorder.requests)
    r = await client.post(url, json=tg_update(24, None, sticker={"file_id": "CAACAgIAAxkBAAE", "emoji": "👍"}), headers=h)
    assert r.json()["action"] == "ignored" and len(recorder.requests) == n
    r = await client.post(url, json=tg_update(26, None, location={"latitude": 38.9, "longitude": -6.3}), headers=h)
    assert r.json()["action"] == "ignored" and "texto" in recorder.requests[-1].body["text"]
    # Not a message at all (e.g. a callback query): acknowledged, nothing sent.
    n = len(recorder.requests)
    r = await client.post(url, json={"update_id": 25, "callback_query": {"id": "1", "data": "x"}}, headers=h)
    assert r.json()["action"] == "ignored" and len(recorder.requests) == n
    r = await client.post(url, content=b"{not json", headers=h)
    assert r.status_code == 422
    r = await client.post(url, content=b"[" + b"1," * 600_000 + b"1]", headers=h)
    assert r.status_code == 413 and r.json()["error_id"] == "payload-too-large"


async def test_message_flood_is_dropped(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                        recorder: Recorder) -> None:
    channels.message_rate_limit = 3
    h = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    url = "/api/v1/channels/telegram/webhook"
    actions = []
    for i in range(5):
        r = await client.post(url, json=tg_update(100 + i, f"Quiero hablar con una persona, mensaje {i}"), headers=h)
        actions.append(r.json()["action"])
    assert actions == ["ticket", "appended", "appended", "ignored", "ignored"]
    assert len(recorder.requests) == 1


async def test_self_service_answers_come_from_the_ivr_flows(client: httpx.AsyncClient, runtime: Runtime,
                                                            channels: ChannelsConfig, recorder: Recorder) -> None:
    h = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    url = "/api/v1/channels/telegram/webhook"
    r = await client.post(url, json=tg_update(40, "¿Cuánto cuesta la ITV de un turismo?"), headers=h)
    if r.json()["action"] == "asked":  # the router was not sure: the flow asks to confirm, as on the phone
        assert recorder.requests[-1].body["text"].endswith("Responda sí o no.")
        r = await client.post(url, json=tg_update(39, "Sí, eso es"), headers=h)
    assert r.json()["action"] == "answered" and r.json()["ref"] is None
    assert "35 euros" in recorder.requests[-1].body["text"]
    assert "¿Puedo ayudarle" not in recorder.requests[-1].body["text"]  # the phone's follow-up question is not sent
    # Not understood: asked again once, as on the phone; the second time a person takes it.
    r = await client.post(url, json=tg_update(41, "Se me ha caducado"), headers=h)
    assert r.json()["action"] == "asked" and "no le he entendido" in recorder.requests[-1].body["text"]
    r = await client.post(url, json=tg_update(42, "Lo de antes, que se me ha caducado"), headers=h)
    assert r.json()["action"] == "ticket"
    r = await client.post(url, json=tg_update(43, "Muchas gracias"), headers=h)
    assert r.json()["action"] in ("answered", "appended")
    summary = await runtime.desk.reports.summary()
    assert summary["containment"]["by_channel"]["telegram"] == 0.5  # the ITV answer, not the ticket


async def test_telegram_provider_down_keeps_ticket(client: httpx.AsyncClient, runtime: Runtime,
                                                   channels: ChannelsConfig, recorder: Recorder) -> None:
    recorder.fail = True
    r = await client.post("/api/v1/channels/telegram/webhook", json=tg_update(30, "Quiero una cita previa"),
                          headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
    assert r.status_code == 200 and r.json()["delivered"] is False
    assert (await runtime.desk.tickets.get(r.json()["ref"])).status == "open"


# ---- WhatsApp ----------------------------------------------------------------------------------------------

async def test_whatsapp_handshake(client: httpx.AsyncClient, channels: ChannelsConfig) -> None:
    url = "/api/v1/channels/whatsapp/webhook"
    r = await client.get(url, params={"hub.mode": "subscribe", "hub.verify_token": WA_VERIFY, "hub.challenge": "1158201444"})
    assert r.status_code == 200 and r.text == "1158201444"
    r = await client.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"})
    assert r.status_code == 403
    r = await client.get(url, params={"hub.mode": "unsubscribe", "hub.verify_token": WA_VERIFY, "hub.challenge": "1"})
    assert r.status_code == 403


async def test_whatsapp_signature_is_checked(client: httpx.AsyncClient, channels: ChannelsConfig, recorder: Recorder) -> None:
    url = "/api/v1/channels/whatsapp/webhook"
    body = json.dumps(wa_payload("Hola", "wamid.A1")).encode()
    r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    r = await client.post(url, content=body, headers=signed(body, "another-secret"))
    assert r.status_code == 403
    tampered = body.replace(b"Hola", b"Adios")
    r = await client.post(url, content=tampered, headers=signed(body))
    assert r.status_code == 403
    assert recorder.requests == []


async def test_whatsapp_message_ticket_reply_and_agent_answer(client: httpx.AsyncClient, runtime: Runtime,
                                                              channels: ChannelsConfig, recorder: Recorder) -> None:
    url = "/api/v1/channels/whatsapp/webhook"
    text = "Quiero poner una queja por el trato recibido en la oficina"
    body = json.dumps(wa_payload(text, "wamid.HBgLMzQ2MDAxMTEyMjIV")).encode()
    r = await client.post(url, content=body, headers=signed(body))
    assert r.status_code == 200, r.text
    [result] = r.json()["results"]
    assert result["action"] == "ticket" and result["delivered"] is True
    ticket = await runtime.desk.tickets.get(result["ref"])
    assert (ticket.channel, ticket.kind, ticket.queue) == ("whatsapp", "complaint", "N2")
    [sent] = recorder.requests
    assert sent.path == "/v21.0/106540352242922/messages"
    assert sent.headers["authorization"] == "Bearer EAAG-token"
    assert sent.body["messaging_product"] == "whatsapp" and sent.body["to"] == "34600111222"
    assert display_ref(ticket.ref) in sent.body["text"]["body"]

    # Meta retries: once only. Delivery receipts are not messages.
    r = await client.post(url, content=body, headers=signed(body))
    assert r.json()["results"][0]["action"] == "duplicate"
    status_body = json.dumps(WA_STATUS).encode()  # "delivered" for our answer (wamid.OUT1): recorded on it
    r = await client.post(url, content=status_body, headers=signed(status_body))
    assert [x["action"] for x in r.json()["results"]] == ["status-delivered"]
    assert len(recorder.requests) == 1
    answer = [i for i in await runtime.desk.tickets.interactions(ticket.ref) if i.actor == "assistant"][-1]
    assert answer.data["delivery"]["status"] == "delivered" and answer.data["delivery"]["ids"] == ["wamid.OUT1"]

    interaction = Interaction(kind="chat", channel="whatsapp", actor="agent:luis", direction="out", text="Lo revisamos.")
    assert await runtime.desk.senders["whatsapp"](ticket, interaction) == {"wamid": "wamid.OUT2", "ids": ["wamid.OUT2"]}
    assert recorder.requests[-1].body["text"]["body"] == "Lo revisamos."

    # The status by WhatsApp, another day, with the reference.
    payload = wa_payload(f"Buenas, quería saber el estado de mi queja {display_ref(ticket.ref)}", "wamid.B2")
    await runtime.desk.tickets.close(ticket.ref, actor="agent:luis", note="respondida")
    body = json.dumps(payload).encode()
    r = await client.post(url, content=body, headers=signed(body))
    assert r.json()["results"][0]["action"] == "answered"
    assert "cerrada" in recorder.requests[-1].body["text"]["body"]


# ---- e-mail ----------------------------------------------------------------------------------------------

async def test_email_requires_token(client: httpx.AsyncClient, channels: ChannelsConfig) -> None:
    raw = raw_mail("Consulta", "Hola", "<a1@correo.example>")
    url = "/api/v1/channels/email/inbound"
    assert (await client.post(url, content=raw)).status_code == 401
    assert (await client.post(url, content=raw, headers={"X-Atiende-Inbound-Token": "x"})).status_code == 403
    bad = await client.post(url, content=b"no headers at all", headers={"X-Atiende-Inbound-Token": MAIL_TOKEN})
    assert bad.status_code == 422


async def test_email_threads_by_message_id(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                           smtp: SmtpSink) -> None:
    url = "/api/v1/channels/email/inbound"
    h = {"X-Atiende-Inbound-Token": MAIL_TOKEN, "Content-Type": "message/rfc822"}
    first_id = "<CAF=first.1@correo.example>"
    text = ("Buenos días. Quiero hablar con una persona: me falta un documento en mi solicitud de ayuda al alquiler."
            "\n\n--\nCarmen")
    raw = raw_mail("Ayudas al alquiler", text, first_id)
    r = await client.post(url, content=raw, headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["action"] == "ticket" and out["delivered"] is True
    ref = out["ref"]
    ticket = await runtime.desk.tickets.get(ref)
    assert ticket.subject == "Ayudas al alquiler" and ticket.body.endswith("ayuda al alquiler.")  # no signature

    [ack] = smtp.messages
    assert ack["To"].addresses[0].addr_spec == "carmen.ruiz@correo.example"
    assert ack["In-Reply-To"] == first_id and first_id in ack["References"]
    assert ack["Subject"] == f"Su consulta [Ref: {display_ref(ref)}]"  # automatic: a fixed subject
    assert ack["Auto-Submitted"] == "auto-replied"
    assert display_ref(ref) in ack.get_content()

    # Carmen answers our acknowledgement: same ticket, quoted history dropped, no automatic answer.
    answer = raw_mail(f"Re: Ayudas al alquiler [Ref: {display_ref(ref)}]",
                      "Otra cosa: ¿sirve el certificado de empadronamiento antiguo?\n\n"
                      "El lun, 23 nov 2026 a las 10:00, Atención escribió:\n> Hemos registrado su consulta",
                      "<CAF=second.2@correo.example>", in_reply_to=str(ack["Message-ID"]),
                      references=f"{first_id} {ack['Message-ID']}")
    r = await client.post(url, content=answer, headers=h)
    assert r.json()["action"] == "appended" and r.json()["ref"] == ref
    last = (await runtime.desk.tickets.interactions(ref))[-1]
    assert last.kind == "email" and last.text == "Otra cosa: ¿sirve el certificado de empadronamiento antiguo?"
    assert len(smtp.messages) == 1

    # The agent answers by e-mail, threaded on Carmen's last message.
    ticket = await runtime.desk.tickets.get(ref)
    interaction = Interaction(kind="email", channel="email", actor="agent:ana", direction="out", text="Sí, sirve.")
    data = await runtime.desk.senders["email"](ticket, interaction)
    assert data is not None
    reply = smtp.messages[-1]
    assert reply["In-Reply-To"] == "<CAF=second.2@correo.example>" and reply["Auto-Submitted"] is None
    assert reply.get_content().strip() == "Sí, sirve."
    assert (await runtime.desk.tickets.by_thread("email", data["message_id"])).ref == ref  # type: ignore[union-attr]

    # A mail client that drops the headers still threads by the reference in the subject.
    r = await client.post(url, content=raw_mail(f"RE: [Ref: {display_ref(ref)}]", "Gracias", "<x3@correo.example>"), headers=h)
    assert r.json()["action"] == "appended" and r.json()["ref"] == ref


async def test_email_never_answers_automatic_mail(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                                  smtp: SmtpSink) -> None:
    h = {"X-Atiende-Inbound-Token": MAIL_TOKEN}
    raw = raw_mail("Fuera de la oficina", "Estaré fuera hasta el lunes.", "<ooo@correo.example>",
                   extra="Auto-Submitted: auto-replied")
    r = await client.post("/api/v1/channels/email/inbound", content=raw, headers=h)
    assert r.json()["action"] == "ignored" and smtp.messages == []
    again = await client.post("/api/v1/channels/email/inbound", content=raw, headers=h)
    assert again.json()["action"] == "duplicate"


async def test_email_html_only_and_status(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                          smtp: SmtpSink) -> None:
    ticket = await runtime.desk.tickets.create(channel="webchat", queue="N1", subject="x", actor="assistant")
    html = (f"<html><body><p>Hola,</p><p>&iquest;C&oacute;mo va mi consulta {display_ref(ticket.ref)}?</p></body></html>")
    raw = raw_mail("Estado", html, "<html1@correo.example>").replace(b"text/plain", b"text/html")
    r = await client.post("/api/v1/channels/email/inbound", content=raw, headers={"X-Atiende-Inbound-Token": MAIL_TOKEN})
    assert r.json()["action"] == "answered"
    assert smtp.messages[-1].get_content().strip() == await runtime.desk.tickets.status_text(ticket.ref)


async def test_sender_refuses_ticket_without_conversation(runtime: Runtime, channels: ChannelsConfig) -> None:
    from core.errors import Conflict

    ticket = await runtime.desk.tickets.create(channel="telegram", queue="N1", subject="sin chat", actor="api")
    interaction = Interaction(kind="chat", channel="telegram", actor="agent:ana", direction="out", text="hola")
    with pytest.raises(Conflict):
        await runtime.desk.senders["telegram"](ticket, interaction)


async def test_simultaneous_messages_of_one_chat_open_one_ticket(client: httpx.AsyncClient, runtime: Runtime,
                                                                 channels: ChannelsConfig) -> None:
    import asyncio

    h = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    url = "/api/v1/channels/telegram/webhook"
    texts = [f"Quiero hablar con una persona ({i}/3)" for i in range(1, 4)]  # whichever comes first opens the ticket
    results = await asyncio.gather(*(client.post(url, json=tg_update(300 + i, t), headers=h) for i, t in enumerate(texts)))
    actions = sorted(r.json()["action"] for r in results)
    refs = {r.json()["ref"] for r in results}
    assert len(refs) == 1, refs
    assert actions.count("ticket") == 1
    assert len([i for i in await runtime.desk.tickets.interactions(refs.pop()) if i.direction == "in"]) == 3


_KEYS = ["object", "entry", "changes", "field", "value", "messages", "metadata", "contacts", "from", "id", "type", "text",
         "body", "message", "edited_message", "chat", "wa_id", "profile", "name", "interactive", "button_reply"]


def test_parsers_take_any_json_without_crashing() -> None:
    """Webhook bodies are attacker-controlled: any JSON shape gives messages or nothing, never an exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from desk_api.channels.telegram import parse_update
    from desk_api.channels.whatsapp import parse_notification

    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    values = st.recursive(leaves, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), c, max_size=4),
                          max_leaves=20)

    @settings(max_examples=400, deadline=None)
    @given(values)
    def check(value: Any) -> None:
        if isinstance(value, dict):
            value = {**value, "object": "whatsapp_business_account"}
        parse_notification(value)
        parse_update(value)

    check()
