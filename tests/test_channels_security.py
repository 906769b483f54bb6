"""The citizen channels against hostile input (every byte of a webhook or a mail is the sender's): forged
senders, threads that are not theirs, parser and regex blow-ups, floods of parts, files and automatic answers.
Providers are the local recorder (Bot/Graph API) and an SMTP sink; the desk runs on the tests' real Redis.
No timed assertions: bounded work is checked on results and counts."""

# The fixtures of test_channels.py are imported by name and requested as arguments of the same names.
# ruff: noqa: F811

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from atiende.runtime import Runtime
from config.channels import ChannelsConfig
from desk.models import Interaction, display_ref
from tests._channels_support import Recorder, SmtpSink
from tests.test_channels import (  # noqa: F401  (fixtures: channels, recorder, smtp)
    MAIL_TOKEN,
    TG_SECRET,
    channels,
    raw_mail,
    recorder,
    signed,
    smtp,
    tg_update,
    wa_payload,
)

pytestmark = pytest.mark.anyio

MAIL_URL = "/api/v1/channels/email/inbound"
MAIL_H = {"X-Atiende-Inbound-Token": MAIL_TOKEN, "Content-Type": "message/rfc822"}
TG_URL = "/api/v1/channels/telegram/webhook"
TG_H = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
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


# ---- 2. bodies that would keep the parser or a regex busy for seconds -----------------------------------------


def mime_mail(files: int, mid: str = "<mp1@correo.example>", sender: str = "carmen.ruiz@correo.example") -> bytes:
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a{i}.txt\r\n\r\nx\r\n"
                    for i in range(files))
    return (f"From: {sender}\r\nSubject: Documentos\r\nMessage-ID: {mid}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            f"Quiero hablar con una persona sobre mi expediente de ayudas\r\n{parts}--b--\r\n").encode()


def test_html_to_text_is_capped_and_linear() -> None:
    from desk_api.channels.email import MAX_HTML_CHARS, html_to_text

    # Only the first 200 kB of an HTML part are read.
    assert "FIN" not in html_to_text("<p>Hola</p>" + "x" * (MAX_HTML_CHARS + 10) + "<p>FIN</p>")
    assert html_to_text("a<b<i>c</i>") == "a<b c "  # a tag holds no "<": the stray one is text
    # The reviewer's worst cases (quadratic before: minutes each), at the full size of a message.
    assert html_to_text("<style " * 300_000) == ""
    assert html_to_text("<!--" * 500_000) == ""
    assert html_to_text("<a" * 1_000_000) == ("<a" * 1_000_000)[:MAX_HTML_CHARS]
    assert html_to_text("<div " * 400_000) == ("<div " * 400_000)[:MAX_HTML_CHARS]
    page = ('<html><head><title>t</title><style>p{}</style></head><body><!-- c --><p>Hola</p>'
            '<div class="gmail_quote">antiguo</div></body></html>')
    assert html_to_text(page).strip() == "Hola"


async def test_hostile_mail_is_refused_with_a_clear_error(client: httpx.AsyncClient, runtime: Runtime,
                                                          channels: ChannelsConfig, smtp: SmtpSink) -> None:
    count = int(await runtime.store.redis.zcard(runtime.store.keys.tickets_all))
    from_many = "From: " + ", ".join(f"u{i}@x.es" for i in range(20000))
    nested = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(3000))
    cases = {
        "60 parts": mime_mail(60),
        "16000 parts": mime_mail(16000),
        "3000 nested parts": ("From: a@correo.example\r\nSubject: x\r\nMessage-ID: <n1@correo.example>\r\n"
                              f"MIME-Version: 1.0\r\n{nested}Content-Type: text/plain\r\n\r\nx\r\n").encode(),
        "20000 addresses": f"{from_many}\r\nMessage-ID: <fm1@x.es>\r\n\r\nquiero hablar con una persona".encode(),
        "20000 encoded words": ("From: a@correo.example\r\nSubject: " + "=?utf-8?q?a?= " * 20000 +
                                "\r\nMessage-ID: <sw1@x.es>\r\n\r\nquiero hablar con una persona").encode(),
    }
    for name, raw in cases.items():
        for _ in range(2):  # the MTA's retry gets the same clear refusal, not a 500 to retry forever
            r = await client.post(MAIL_URL, content=raw, headers=MAIL_H)
            assert r.status_code == 422 and r.json()["error_id"] == "mail-too-complex", (name, r.status_code, r.text[:200])
    # Comments nested deeper than the parser's stack: invalid input, not a server error.
    deep = b"From: a@correo.example " + b"(" * 20000 + b"\r\nMessage-ID: <p1@x.es>\r\n\r\nquiero hablar con una persona"
    r = await client.post(MAIL_URL, content=deep, headers=MAIL_H)
    assert r.status_code == 422 and r.json()["error_id"] == "invalid-input", r.text[:200]
    # A long header under 64 kB is parsed from its first kilobyte only (quickly): no address there, refused.
    long_from = 'From: ' + '"a" ' * 15000 + "<carmen.ruiz@correo.example>"
    r = await client.post(MAIL_URL, content=f"{long_from}\r\nMessage-ID: <lf1@x.es>\r\n\r\nhola".encode(), headers=MAIL_H)
    assert r.status_code == 422 and "From" in r.json()["message"]
    # 50 parts are fine.
    r = await client.post(MAIL_URL, content=mime_mail(40, "<mp40@correo.example>"), headers=MAIL_H)
    assert r.status_code == 200 and r.json()["action"] == "ticket", r.text[:300]
    assert int(await runtime.store.redis.zcard(runtime.store.keys.tickets_all)) == count + 1


async def test_webhook_bodies_are_parsed_off_the_event_loop(client: httpx.AsyncClient, channels: ChannelsConfig,
                                                            smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from desk_api.channels import email

    threads: list[threading.Thread] = []
    real = email.parse_mail

    def recording(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(email, "parse_mail", recording)
    r = await client.post(MAIL_URL, content=raw_mail("x", "Gracias", "<t1@correo.example>"), headers=MAIL_H)
    assert r.status_code == 200
    assert threads and threads[0] is not threading.main_thread()


# ---- 3. a thread is not a key to someone else's ticket --------------------------------------------------------


async def test_a_stranger_on_the_thread_neither_writes_as_the_citizen_nor_hears_the_status(
        client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig, smtp: SmtpSink) -> None:
    r = await client.post(MAIL_URL, content=raw_mail("Ayudas", NEEDS_PERSON, "<v2@correo.example>"), headers=MAIL_H)
    ref = r.json()["ref"]
    before = await runtime.desk.tickets.interactions(ref)
    assert before[0].data["from"] == "carmen.ruiz@correo.example"  # the sender is on every inbound interaction
    # Someone else copies her Message-ID into In-Reply-To and asks how "my" query is going.
    evil = raw_mail("hola", "¿Cómo va mi consulta?", "<evil2@evil.example>", sender="X <otro@evil.example>",
                    in_reply_to="<v2@correo.example>")
    r = await client.post(MAIL_URL, content=evil, headers=MAIL_H)
    assert r.json()["ref"] != ref and r.json()["action"] == "asked", r.json()
    assert display_ref(ref) not in smtp.messages[-1].get_content()
    assert smtp.handler.envelopes[-1][1] == ["otro@evil.example"]
    # Or writes on it: a conversation of their own, her ticket untouched.
    evil = raw_mail("Re: Ayudas", NEEDS_PERSON, "<evil3@evil.example>", sender="Y <tercero@evil.example>",
                    in_reply_to="<v2@correo.example>", references="<v2@correo.example>")
    r = await client.post(MAIL_URL, content=evil, headers=MAIL_H)
    assert r.json()["ref"] not in (None, ref), r.json()
    assert len(await runtime.desk.tickets.interactions(ref)) == len(before)
    assert (await runtime.desk.tickets.interactions(r.json()["ref"]))[0].data["from"] == "tercero@evil.example"


def test_references_keep_the_last_twenty_ids_of_sane_length() -> None:
    from desk_api.channels.email import parse_mail
    from desk_api.channels.flow import InboundMessage

    long_id = "<" + "x" * 300 + "@correo.example>"
    refs = " ".join(f"<r{i}@correo.example>" for i in range(200)) + " " + long_id
    ev = parse_mail(raw_mail("hola", "Quiero hablar con una persona", "<m1@correo.example>", references=refs,
                             in_reply_to=long_id), "atencion@junta.example")
    assert isinstance(ev, InboundMessage)
    kept = ev.contact.data["references"]
    assert len(kept) == 20 and kept[-1] == "<m1@correo.example>" and kept[-2] == "<r199@correo.example>"
    assert long_id not in ev.threads and len(ev.threads) == 21  # its own id and the 20 references


# ---- 4. the service is no reflector -----------------------------------------------------------------------------


async def test_automatic_answers_go_to_from_under_a_fixed_subject_and_a_global_ceiling(
        client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig, smtp: SmtpSink) -> None:
    channels.email.auto_reply_limit = 3
    base = len(smtp.handler.envelopes)  # the sink outlives the test (its envelopes are not cleared)
    results = []
    for i in range(5):  # throwaway senders, spam in the subject and name, the victim in Reply-To
        raw = raw_mail("Gana 1000 EUR hoy en http://spam.example/x", "Quiero hablar con una persona", f"<rf{i}@x.example>",
                       sender=f"Gana 1000 EUR <rand{i}@throwaway.example>", extra="Reply-To: victima@target.example")
        r = await client.post(MAIL_URL, content=raw, headers=MAIL_H)
        assert r.status_code == 200, r.text
        results.append(r.json())
    assert len(smtp.messages) == 3  # the ceiling, whatever the senders
    for i, m in enumerate(smtp.messages):
        assert smtp.handler.envelopes[base + i][1] == [f"rand{i}@throwaway.example"]
        assert str(m["To"]) == f"rand{i}@throwaway.example"
        assert m["Subject"] == f"Su consulta [Ref: {display_ref(results[i]['ref'])}]"
        assert "spam" not in m.as_string() and "EUR" not in m.as_string()
    assert [x["delivered"] for x in results] == [True, True, True, False, False]
    # Past the ceiling the ticket is there and the answer is marked not delivered for the agent to see.
    answer = (await runtime.desk.tickets.interactions(results[4]["ref"]))[1]
    assert answer.actor == "assistant" and answer.data["delivery"]["status"] == "failed"


# ---- 5. files count against the sender's limits before they are fetched ---------------------------------------


def voice_update(runtime: Runtime, recorder: Recorder, n: int, size: int = 2000) -> dict[str, object]:
    fid = f"VOICEFILE{n:04d}"
    recorder.media[fid] = (b"OggS" + bytes([n % 256]) * size, "audio/ogg")
    update = tg_update(9000 + n, text=None, voice={"file_id": fid, "file_unique_id": fid, "duration": 100,
                                                    "mime_type": "audio/ogg", "file_size": size + 4})
    update["message"]["date"] = int(runtime.clock.now().timestamp())  # type: ignore[index]
    return update


async def test_a_flood_of_files_is_dropped_before_anything_is_fetched(
        client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig, recorder: Recorder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from desk_api.channels import media

    channels.message_rate_limit = 3
    calls = {"store": 0, "transcribe": 0}
    real_store = media.store

    async def counting_store(*args: object, **kwargs: object) -> object:
        calls["store"] += 1
        return await real_store(*args, **kwargs)  # type: ignore[arg-type]

    async def counting_transcribe(rt: object, content: bytes) -> None:
        calls["transcribe"] += 1

    monkeypatch.setattr(media, "store", counting_store)
    monkeypatch.setattr(media, "transcribe", counting_transcribe)
    actions = []
    for i in range(20):
        r = await client.post(TG_URL, json=voice_update(runtime, recorder, i), headers=TG_H)
        actions.append(r.json()["action"])
    assert actions[3:] == ["ignored"] * 17
    assert calls == {"store": 3, "transcribe": 3}
    assert len([q for q in recorder.requests if "/getFile" in q.path]) == 3


async def test_a_senders_files_have_a_daily_byte_quota(client: httpx.AsyncClient, runtime: Runtime,
                                                       channels: ChannelsConfig, recorder: Recorder) -> None:
    channels.attachment_daily_bytes = 5000
    channels.transcribe_voice = False
    for i in range(3):
        r = await client.post(TG_URL, json=voice_update(runtime, recorder, 100 + i), headers=TG_H)
        assert r.status_code == 200, r.text
    pending = await runtime.store.redis.lrange(runtime.store.keys.channel_attachments("telegram", "1111111"), 0, -1)
    kept = [json.loads(p) for p in pending]
    assert [("path" in k, "refused" in k) for k in kept] == [(True, False), (True, False), (False, True)]
    assert "límite diario" in kept[2]["refused"]
    # The announced size is checked before fetching: a file that cannot fit is not even downloaded.
    n = len([q for q in recorder.requests if "/getFile" in q.path])
    await client.post(TG_URL, json=voice_update(runtime, recorder, 200, size=4000), headers=TG_H)
    assert len([q for q in recorder.requests if "/getFile" in q.path]) == n


# ---- 6. many parts: one line for the files not kept ---------------------------------------------------------


async def test_files_past_the_limit_are_one_entry(client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig,
                                                  smtp: SmtpSink) -> None:
    r = await client.post(MAIL_URL, content=mime_mail(45, "<mp45@correo.example>"), headers=MAIL_H)
    assert r.json()["action"] == "ticket", r.json()
    first = (await runtime.desk.tickets.interactions(r.json()["ref"]))[0]
    attachments = first.data["attachments"]
    assert len(attachments) == channels.attachments_per_message + 1
    [rest] = [a for a in attachments if "refused" in a]
    assert attachments[-1] == rest  # after the files kept
    assert (rest["name"], rest["count"], rest["refused"]) == ("40 archivos más", 40, "máximo 5 por mensaje")


# ---- 7. an automatic answer that cannot be sent is not lost -------------------------------------------------


async def test_an_unsent_answer_without_a_ticket_is_retried_by_the_mta(client: httpx.AsyncClient, runtime: Runtime,
                                                                      channels: ChannelsConfig, smtp: SmtpSink,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from desk_api.channels import assistant

    runs: list[str] = []
    real_handle = assistant.handle

    async def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append("handle")
        return await real_handle(*args, **kwargs)

    monkeypatch.setattr(assistant, "handle", counted)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    channels.email.smtp_port = closed_port  # the SMTP server is down
    raw = raw_mail("x", "blorp zanf quix", "<lost1@correo.example>")
    r = await client.post(MAIL_URL, content=raw, headers=MAIL_H)
    assert r.status_code == 503 and r.json()["error_id"] == "answer-not-sent", r.text
    channels.email.smtp_port = smtp.port  # back up: the MTA's retry is processed and answered
    r = await client.post(MAIL_URL, content=raw, headers=MAIL_H)
    assert r.status_code == 200 and r.json()["delivered"] is True, r.json()
    assert smtp.handler.envelopes[-1][1] == ["carmen.ruiz@correo.example"]
    assert runs == ["handle"]  # the retry sent the answer decided the first time; the assistant ran once
    r = await client.post(MAIL_URL, content=raw, headers=MAIL_H)
    assert r.json()["action"] == "duplicate"
    # A deliberate ceiling is no failure to retry: answered 200, not sent.
    channels.email.auto_reply_limit = 1
    r = await client.post(MAIL_URL, content=raw_mail("x", "blorp zanf quix", "<lost2@correo.example>",
                                                     sender="o@correo.example"), headers=MAIL_H)
    assert r.status_code == 200 and r.json()["delivered"] is False


# ---- 8. genuine late deliveries are not dropped as replays --------------------------------------------------


async def test_late_mail_and_whatsapp_retries_reach_their_ticket(client: httpx.AsyncClient, runtime: Runtime,
                                                                 channels: ChannelsConfig, smtp: SmtpSink,
                                                                 recorder: Recorder) -> None:
    # A mail whose Date is three weeks old (a queue held it, or the sender's clock is wrong): taken, and answered.
    old = raw_mail("Ayudas", NEEDS_PERSON, "<late1@correo.example>").replace(b"Mon, 23 Nov 2026", b"Mon, 02 Nov 2026")
    r = await client.post(MAIL_URL, content=old, headers=MAIL_H)
    assert r.json()["action"] == "ticket" and r.json()["delivered"] is True, r.json()
    assert (await client.post(MAIL_URL, content=old, headers=MAIL_H)).json()["action"] == "duplicate"
    # Meta's retry of a WhatsApp message three days late: its ticket opens; the free-form answer, which WhatsApp
    # would refuse outside the 24-hour window, is not sent, and the agent sees why.
    payload = wa_payload("Quiero poner una queja por el trato recibido", "wamid.LATE1", wa_id="34600777666")
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = str(1795424400 - 3 * 86400)
    body = json.dumps(payload).encode()
    r = await client.post("/api/v1/channels/whatsapp/webhook", content=body, headers=signed(body))
    [result] = r.json()["results"]
    assert result["action"] == "ticket" and result["delivered"] is False, result
    assert not [q for q in recorder.requests if isinstance(q.body, dict) and q.body.get("to") == "34600777666"]
    answer = (await runtime.desk.tickets.interactions(result["ref"]))[1]
    assert answer.data["delivery"]["status"] == "failed" and "24" in answer.data["delivery"]["reason"]


# ---- 10. WhatsApp replies held outside the 24-hour window ------------------------------------------------------


async def test_a_restarted_delivery_passes_the_forward_only_rule(runtime: Runtime) -> None:
    ticket = await runtime.desk.tickets.create(channel="whatsapp", queue="N1", subject="x", actor="assistant")
    reply = await runtime.desk.tickets.reply(ticket.ref, "Respuesta", actor="agent:ana")
    it = reply.interaction.id
    assert await runtime.desk.tickets.set_delivery(ticket.ref, it, "read", details={"ids": ["wamid.T"], "held": True})
    # The template was read; the reply itself goes out now: its delivery starts again.
    assert not await runtime.desk.tickets.set_delivery(ticket.ref, it, "sent", details={"ids": ["wamid.R"]})
    assert await runtime.desk.tickets.set_delivery(ticket.ref, it, "sent", details={"ids": ["wamid.R"], "held": False},
                                                   restart=True)
    ours = next(i for i in await runtime.desk.tickets.interactions(ticket.ref) if i.id == it)
    assert (ours.data["delivery"]["status"], ours.data["delivery"]["ids"]) == ("sent", ["wamid.R"])
    # "failed" stays final.
    assert await runtime.desk.tickets.set_delivery(ticket.ref, it, "failed", reason="x")
    assert not await runtime.desk.tickets.set_delivery(ticket.ref, it, "sent", details={"ids": ["w"]}, restart=True)


async def wa_ticket(runtime: Runtime, wa_id: str) -> str:
    from desk_api.channels.base import Contact

    t = await runtime.desk.tickets.create(channel="whatsapp", queue="N1", subject="x", actor="assistant")
    contact = Contact(channel="whatsapp", address=wa_id, data={"phone_number_id": "106540352242922"})
    await runtime.store.redis.set(runtime.store.keys.ticket_contact(t.ref), contact.model_dump_json())
    return t.ref


async def wa_post(client: httpx.AsyncClient, payload: dict[str, object]) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await client.post("/api/v1/channels/whatsapp/webhook", content=body, headers=signed(body))


async def delivery(runtime: Runtime, ref: str, interaction_id: str) -> dict[str, object]:
    its = {i.id: i for i in await runtime.desk.tickets.interactions(ref)}
    return dict(its[interaction_id].data.get("delivery") or {})


async def test_held_whatsapp_replies_one_template_trimmed_and_expired_ones_failed(
        client: httpx.AsyncClient, runtime: Runtime, channels: ChannelsConfig, recorder: Recorder) -> None:
    wa_id = "34600999888"
    ref = await wa_ticket(runtime, wa_id)
    replies = [(await runtime.desk.tickets.reply(ref, f"Respuesta {i}", actor="agent:ana")).interaction.id
               for i in range(22)]
    templates = [q for q in recorder.requests if isinstance(q.body, dict) and q.body.get("type") == "template"]
    assert len(templates) == 1  # one template announces the hold, not one per reply
    assert await runtime.store.redis.llen(runtime.store.keys.channel_pending("whatsapp", wa_id)) == 20
    for dropped in replies[:2]:  # the two oldest did not fit: the agent is told
        d = await delivery(runtime, ref, dropped)
        assert d["status"] == "failed" and "más de 20" in str(d["reason"]), d
    assert (await delivery(runtime, ref, replies[21]))["held"] is True
    # The citizen writes: the 20 held replies go out; each one's delivery starts over with its own ids.
    payload = wa_payload("hola", "wamid.HOLA1", wa_id=wa_id)
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = str(int(runtime.clock.now().timestamp()))
    await wa_post(client, payload)
    sent = [q.body["text"]["body"] for q in recorder.requests if isinstance(q.body, dict) and q.body.get("type") == "text"]
    assert sent[:20] == [f"Respuesta {i}" for i in range(2, 22)]
    d = await delivery(runtime, ref, replies[21])
    assert (d["status"], d["released"], d["held"]) == ("sent", True, False)


async def test_a_released_reply_is_not_stuck_at_its_templates_read(client: httpx.AsyncClient, runtime: Runtime,
                                                                   channels: ChannelsConfig, recorder: Recorder) -> None:
    wa_id = "34600999877"
    ref = await wa_ticket(runtime, wa_id)
    first = await runtime.desk.tickets.reply(ref, "Primera", actor="agent:ana")
    second = await runtime.desk.tickets.reply(ref, "Segunda", actor="agent:ana")
    [template_id] = first.delivery.result["ids"]  # type: ignore[index]
    assert second.delivery.result["ids"] == []  # type: ignore[index]  # held behind the same template
    now = str(int(runtime.clock.now().timestamp()))
    read = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "metadata": {"phone_number_id": "106540352242922"},
        "statuses": [{"id": template_id, "status": "read", "timestamp": now, "recipient_id": wa_id}]}}]}]}
    await wa_post(client, read)
    assert (await delivery(runtime, ref, first.interaction.id))["status"] == "read"
    payload = wa_payload("hola", "wamid.HOLA2", wa_id=wa_id)
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = now
    await wa_post(client, payload)
    d = await delivery(runtime, ref, first.interaction.id)
    assert (d["status"], d["released"]) == ("sent", True) and d["ids"] != [template_id], d
    # The template's late statuses no longer land on the reply.
    read["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = "delivered"  # type: ignore[index]
    r = await wa_post(client, read)
    assert r.json()["results"][0]["action"] == "status-unknown"


async def test_a_held_reply_never_released_is_marked_failed(client: httpx.AsyncClient, runtime: Runtime,
                                                            channels: ChannelsConfig, recorder: Recorder) -> None:
    wa_id = "34600999866"
    ref = await wa_ticket(runtime, wa_id)
    old = await runtime.desk.tickets.reply(ref, "Antigua", actor="agent:ana")
    runtime.clock.advance(31 * 86400)  # type: ignore[attr-defined]
    await runtime.desk.tickets.reply(ref, "Nueva", actor="agent:ana")
    d = await delivery(runtime, ref, old.interaction.id)
    assert d["status"] == "failed" and "30 días" in str(d["reason"]), d
    assert await runtime.store.redis.llen(runtime.store.keys.channel_pending("whatsapp", wa_id)) == 1


async def test_held_replies_of_a_citizen_who_never_writes_again_are_swept(
        runtime: Runtime, channels: ChannelsConfig, recorder: Recorder) -> None:
    from desk_api.channels import whatsapp

    silent, other = "34600999844", "34600999833"
    ref = await wa_ticket(runtime, silent)
    old = await runtime.desk.tickets.reply(ref, "Antigua", actor="agent:ana")
    runtime.clock.advance(10 * 86400)  # type: ignore[attr-defined]
    newer = await runtime.desk.tickets.reply(ref, "Más reciente", actor="agent:ana")
    other_ref = await wa_ticket(runtime, other)
    kept = await runtime.desk.tickets.reply(other_ref, "Otra", actor="agent:ana")
    assert await whatsapp.sweep_held(runtime) == 0  # nothing is 30 days old yet
    runtime.clock.advance(21 * 86400)  # type: ignore[attr-defined]
    # Nobody writes and nobody replies again: only the sweep can tell the agent the first reply never went.
    assert await whatsapp.sweep_held(runtime) == 1
    d = await delivery(runtime, ref, old.interaction.id)
    assert d["status"] == "failed" and "30 días" in str(d["reason"]), d
    assert (await delivery(runtime, ref, newer.interaction.id))["held"] is True
    assert (await delivery(runtime, other_ref, kept.interaction.id))["held"] is True
    runtime.clock.advance(10 * 86400)  # type: ignore[attr-defined]
    assert await whatsapp.sweep_held(runtime) == 2  # both now; swept once, not again
    assert await whatsapp.sweep_held(runtime) == 0
    index = runtime.store.keys.channel_pending_index("whatsapp")
    assert await runtime.store.redis.zcard(index) == 0
    tkey = runtime.store.keys.channel_pending_template("whatsapp", silent)
    assert not await runtime.store.redis.exists(tkey)  # a later hold gets its own template


async def test_a_crash_while_the_template_is_sent_does_not_block_later_templates(
        runtime: Runtime, channels: ChannelsConfig, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    from desk_api.channels import whatsapp

    wa_id = "34600999855"
    ref = await wa_ticket(runtime, wa_id)
    tkey = runtime.store.keys.channel_pending_template("whatsapp", wa_id)
    seen: list[int] = []
    real = whatsapp.send_template

    async def watched(*args: Any, **kwargs: Any) -> str:
        seen.append(await runtime.store.redis.ttl(tkey))  # what a crash at this instant would leave behind
        return await real(*args, **kwargs)

    monkeypatch.setattr(whatsapp, "send_template", watched)
    await runtime.desk.tickets.reply(ref, "Primera", actor="agent:ana")
    assert seen and 0 < seen[0] <= whatsapp.SENDING_MARK_S  # minutes, not the hold's 30 days
    assert await runtime.store.redis.ttl(tkey) > whatsapp.SENDING_MARK_S  # once sent, the hold keeps its template


# ---- 11. e-mail status lookups: one ceiling for all senders ---------------------------------------------------


async def test_email_status_lookups_have_a_global_ceiling(client: httpx.AsyncClient, runtime: Runtime,
                                                          channels: ChannelsConfig, smtp: SmtpSink) -> None:
    channels.email.status_rate_limit_global = 3
    ticket = await runtime.desk.tickets.create(channel="phone", queue="N1", subject="Llamada", actor="ivr")
    status = await runtime.desk.tickets.status_text(ticket.ref)
    answers = []
    for i in range(5):  # every mail forges another From: the per-sender limit never trips
        raw = raw_mail("Estado", f"¿Cómo va mi consulta {display_ref(ticket.ref)}?", f"<st{i}@x.example>",
                       sender=f"p{i}@throwaway.example")
        r = await client.post(MAIL_URL, content=raw, headers=MAIL_H)
        assert r.json()["action"] == "answered", r.json()
        answers.append(smtp.messages[-1].get_content().strip())
    assert answers[:3] == [status] * 3
    assert all(display_ref(ticket.ref) not in a and "Vuelva a intentarlo" in a for a in answers[3:])
