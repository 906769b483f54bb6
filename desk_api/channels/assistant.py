"""The assistant every written message goes through, whatever the channel.

One inbound message: identify the citizen; continue the conversation's open ticket if there is
one; otherwise route the text (the same router as voice) and answer by itself where it can: the
status of a query by its reference here, everything else with the IVR's own self-service answers
(the same flows as the phone line, run once on the message without writing anything: ITV fee,
directory, offices, hours, procedures...). What it cannot resolve becomes a ticket in the routed
queue and the citizen gets the reference; a message it does not understand gets one "say it
again" before a person takes it, as on the phone. Each message is handled statelessly (the little
state there is lives in Redis), so any node can take any webhook. This is the single place that
decides; the channels only carry text.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from redis.exceptions import LockError

from core.errors import RateLimited
from core.refs import REF_ALPHABET, display_ref, normalize_ref
from desk_api.channels import deskport
from desk_api.channels.base import Contact, Inbound, Reply, channels_config
from desk_api.context import Services

log = logging.getLogger(__name__)

STATUS_INTENT = "estado_consulta"
COMPLAINT_INTENT = "queja_sugerencia"
DEFAULT_QUEUE = "N1"
QUEUE_BY_INTENT = {COMPLAINT_INTENT: "N2"}
KIND_BY_INTENT = {COMPLAINT_INTENT: "complaint"}
STATE_TTL_S = 900
FILES_KEEP_S = 86400  # files sent before any ticket exists wait this long for the message that opens one
NEEDS_PERSON = {COMPLAINT_INTENT, "hablar_agente"}
PARALLEL_CHANNELS = ("telegram", "whatsapp")
THREADING_KEYS = ("subject", "last_message_id", "references")  # what a later mail may change on the stored contact
ROUTE_CHARS = 2000  # the router's limit; a long e-mail is routed by its beginning
_COURTESY = re.compile(r"^\W*(muchas\s+)?(gracias|vale|ok|de acuerdo|perfecto|adi[oó]s|hasta luego|buenas noches)\W*$", re.I)

# Used only while the router is not available (a bare install, or the router failed to load).
_FALLBACK_INTENTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"c[oó]mo va|estado de mi|mi consulta|mi queja|referencia", re.I), STATUS_INTENT),
    (re.compile(r"\bqueja|reclamaci[oó]n|sugerencia", re.I), COMPLAINT_INTENT),
    (re.compile(r"\bhorario|a qu[eé] hora|cu[aá]ndo abr", re.I), "horario"),
]

_REF_CHARS = re.escape(REF_ALPHABET)
# Six reference characters, optionally split 3+3 by a hyphen or a space ("K7M-4PX", "k7m 4px", "K7M4PX").
_REF_RE = re.compile(rf"(?<![0-9A-Za-z])([{_REF_CHARS}]{{3}})[-\s]?([{_REF_CHARS}]{{3}})(?![0-9A-Za-z])", re.I)


def ref_candidates(text: str) -> list[str]:
    """References a text may contain, most reference-like first (digits or capitals beat plain words)."""
    found: list[tuple[int, str]] = []
    for m in _REF_RE.finditer(text):
        raw = m.group(1) + m.group(2)
        ref = normalize_ref(raw)
        if ref and ref not in (r for _, r in found):
            score = (2 if any(c.isdigit() for c in raw) else 0) + (1 if raw.isupper() else 0) + (1 if "-" in m.group(0) else 0)
            found.append((score, ref))
    found.sort(key=lambda x: -x[0])
    return [r for _, r in found]


class Assistant:
    def __init__(self, runtime: Services) -> None:
        self.rt = runtime
        self.cfg = channels_config(runtime)
        self._stored = False  # this message is on a ticket (else its files are kept for the next one)

    # ---- routing -------------------------------------------------------------------------------

    async def _route(self, text: str) -> tuple[str | None, str | None, dict[str, Any]]:
        """(intent, queue, entities) from the shared router; a keyword fallback while it is missing."""
        service = getattr(self.rt, "router", None)
        if service is not None:
            try:
                router = await service.get()
                result = router.route(text[:ROUTE_CHARS], channel="chat")
                return result.intent, result.queue, dict(result.entities or {})
            except Exception:  # the router is another area's code: a failure there must not lose the message
                log.exception("router failed, using keyword fallback")
        for pattern, intent in _FALLBACK_INTENTS:
            if pattern.search(text):
                return intent, None, {}
        return None, None, {}

    async def _refs(self, text: str, entities: dict[str, Any]) -> list[str]:
        refs = ref_candidates(text)
        for key in ("reference", "ref", "ticket_ref"):
            value = entities.get(key)
            ref = normalize_ref(str(value)) if value else None
            if ref and ref not in refs:
                refs.insert(0, ref)
        return refs

    # ---- conversation state --------------------------------------------------------------------

    async def _open_ticket(self, msg: Inbound, hint: str | None, citizen_id: str) -> tuple[str | None, bool]:
        """(the open ticket this message continues, whether the sender is that ticket's citizen).

        A conversation's own thread (its chat, or the Message-IDs of its mails) or a reference hint (a "[Ref: ...]"
        in a subject) finds its ticket only when the sender is that ticket's citizen, on every channel: anyone can
        copy a Message-ID into In-Reply-To or type a reference, and must neither write as the ticket's citizen nor
        hear its status. Such a message starts a conversation of its own."""
        for thread in msg.threads:
            ticket = await deskport.by_thread(self.rt, msg.contact.channel, thread)
            if ticket is not None and deskport.is_active(ticket):
                if ticket.citizen_id == citizen_id:
                    return ticket.ref, True
                log.warning("thread of another citizen's ticket ignored",
                            extra={"fields": {"channel": msg.contact.channel, "ref": ticket.ref}})
        if hint:
            ticket = await deskport.find_ticket(self.rt, hint)
            if ticket is not None and deskport.is_active(ticket) and ticket.citizen_id == citizen_id:
                return ticket.ref, True
        return None, False

    async def _link(self, ref: str, msg: Inbound) -> None:
        """This conversation now continues on `ref`, and replies to `ref` go to this contact."""
        if msg.threads:
            await deskport.bind_thread(self.rt, msg.contact.channel, msg.threads[0], ref)
        await self.rt.store.redis.set(self.rt.store.keys.ticket_contact(ref), msg.contact.model_dump_json())

    async def _follow_thread(self, ref: str, msg: Inbound) -> None:
        """Replies to `ref` answer this mail (its Message-ID, References, subject); the stored address and Reply-To
        stay those of the mail that opened the ticket, so a forged From cannot redirect the agent's replies."""
        key = self.rt.store.keys.ticket_contact(ref)
        raw = await self.rt.store.redis.get(key)
        if raw:
            stored = Contact.model_validate_json(raw)
        else:
            ticket = await deskport.find_ticket(self.rt, ref)
            meta = ticket.meta.get("contact") if ticket is not None else None
            if not isinstance(meta, dict):
                return
            stored = Contact.model_validate(meta)
        if stored.channel != msg.contact.channel:
            return
        threading = {k: msg.contact.data[k] for k in THREADING_KEYS if k in msg.contact.data}
        await self.rt.store.redis.set(key, stored.model_copy(update={"data": {**stored.data, **threading}}).model_dump_json())

    async def _pending_files(self, msg: Inbound) -> Inbound:
        """Files the citizen sent before saying what they needed join the message that does."""
        key = self.rt.store.keys.channel_attachments(msg.contact.channel, msg.contact.address)
        async with self.rt.store.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            raw, _ = await pipe.execute()
        if not raw:
            return msg
        earlier = [json.loads(r) for r in raw]
        return msg.model_copy(update={"attachments": [*earlier, *msg.attachments]})

    async def file_only(self, msg: Inbound, answer: str, keep_s: int) -> Reply:
        """A message with files and no words: added to the conversation's open ticket, or kept until the citizen
        says what it is for."""
        citizen_id = await deskport.identify(self.rt, msg.contact.channel, msg.contact.address, msg.contact.name)
        open_ref, _ = await self._open_ticket(msg, None, citizen_id)
        if open_ref:
            await self._record(open_ref, msg, None)
            return Reply(text=None, action="appended", ref=open_ref)
        await self._keep_files(msg, keep_s)
        return Reply(text=answer, action="asked")

    async def _keep_files(self, msg: Inbound, keep_s: int) -> None:
        key = self.rt.store.keys.channel_attachments(msg.contact.channel, msg.contact.address)
        async with self.rt.store.redis.pipeline(transaction=True) as pipe:
            for item in msg.attachments:
                pipe.rpush(key, json.dumps(item))
            pipe.ltrim(key, -20, -1)
            pipe.expire(key, keep_s)
            await pipe.execute()

    # ---- the one entry point -------------------------------------------------------------------

    async def flooded(self, c: Contact) -> bool:
        """One more message from this sender; True past the per-sender limit (the message is dropped unanswered)."""
        try:
            await deskport.rate_hit(self.rt, f"msg:{c.channel}:{c.address}", self.cfg.message_rate_limit,
                                    self.cfg.message_rate_window_s)
        except RateLimited:
            log.warning("message flood dropped", extra={"fields": {"channel": c.channel}})
            return True
        return False

    async def handle(self, msg: Inbound, ref_hint: str | None = None, *, counted: bool = False) -> Reply:
        """`counted`: the caller already counted this message against the sender's limit (flow.py does, before
        it fetches any file)."""
        c = msg.contact
        if not counted and await self.flooded(c):
            return Reply(text=None, action="ignored")
        if c.channel not in PARALLEL_CHANNELS:  # one socket or one mailbox delivers in order: no lock needed
            return await self._handled(msg, ref_hint)
        # Telegram and WhatsApp may deliver two messages of one chat at once (several webhook connections, any node):
        # one at a time per sender, so a burst opens one ticket, not two.
        key = self.rt.store.keys.lock(f"chat:{c.channel}:{c.address}")
        lock = self.rt.store.redis.lock(key, timeout=10, blocking_timeout=5)
        try:
            acquired = await lock.acquire()
        except LockError:
            acquired = False
        try:
            return await self._handled(msg, ref_hint)
        finally:
            if acquired:
                try:
                    await lock.release()
                except LockError:
                    pass

    async def _handled(self, msg: Inbound, ref_hint: str | None) -> Reply:
        self._stored = False
        reply = await self._handle(msg, ref_hint)
        if msg.attachments and not self._stored:  # answered or asked without a ticket: the files wait for one
            await self._keep_files(msg, FILES_KEEP_S)
        return reply

    async def _handle(self, msg: Inbound, ref_hint: str | None) -> Reply:
        rt, c = self.rt, msg.contact
        trace_id = msg.trace_id or uuid.uuid4().hex
        citizen_id = await deskport.identify(rt, c.channel, c.address, c.name)
        state_key = rt.store.keys.chat_state(c.channel, c.address)
        raw_state = await rt.store.redis.get(state_key)
        state: dict[str, Any] = json.loads(raw_state) if raw_state else {}
        intent, queue, entities = await self._route(msg.text)
        refs = await self._refs(msg.text, entities)
        open_ref, own = await self._open_ticket(msg, ref_hint, citizen_id)

        if intent == STATUS_INTENT or state.get("step") == "reference":
            reply = await self._status(msg, refs, open_ref, state_key)
            if open_ref:
                answer_id = await self._record(open_ref, msg, reply.text)
                reply = reply.model_copy(update={"answer_id": answer_id, "ref": reply.ref or open_ref})
            elif reply.action == "answered":
                await deskport.record_contact(rt, c.channel, contained=True)
            return reply

        if open_ref:
            await self._record(open_ref, msg, None)
            if c.channel == "email" and msg.threads:  # later e-mails carry new Message-IDs to thread replies on
                await deskport.bind_thread(rt, c.channel, msg.threads[0], open_ref)
                if own:  # replies thread on the citizen's latest mail; where they go never changes (From is forgeable)
                    await self._follow_thread(open_ref, msg)
            return Reply(text=None, action="appended", ref=open_ref, intent=intent)

        if state.get("step") == "confirm":  # the IVR asked "¿quiere...? sí o no" about the previous message
            yes = _yes_no(msg.text)
            if yes is True:
                original = str(state.get("text", ""))
                answer, _ = await self._self_service(original, state.get("intent"), confirmed=True)
                await rt.store.redis.delete(state_key)
                if answer is not None:
                    await deskport.record_contact(rt, c.channel, contained=True)
                    return Reply(text=answer, action="answered", intent=state.get("intent"))
                first = msg.model_copy(update={"text": original})
                return await self._new_ticket(first, state.get("intent"), queue, citizen_id, trace_id)
            if yes is False:
                await rt.store.redis.set(state_key, json.dumps({"step": "unclear"}), ex=STATE_TTL_S)
                return Reply(text=UNCLEAR, action="asked")
            await rt.store.redis.delete(state_key)  # something else entirely: take it as a new request
            state = {}

        if intent is None and _COURTESY.match(msg.text):
            return Reply(text="De nada. Escríbanos cuando necesite algo más.", action="answered")

        answer, confirm = await self._self_service(msg.text, intent)
        if answer is not None:
            await rt.store.redis.delete(state_key)
            await deskport.record_contact(rt, c.channel, contained=True)
            return Reply(text=answer, action="answered", intent=intent)
        if confirm is not None:
            await rt.store.redis.set(state_key, json.dumps({"step": "confirm", "text": msg.text, "intent": intent}),
                                     ex=STATE_TTL_S)
            return Reply(text=confirm, action="asked", intent=intent)

        if intent is None and state.get("step") != "unclear":  # as on the phone: ask again once, then a person
            await rt.store.redis.set(state_key, json.dumps({"step": "unclear"}), ex=STATE_TTL_S)
            return Reply(text=UNCLEAR, action="asked")
        await rt.store.redis.delete(state_key)

        return await self._new_ticket(msg, intent, queue, citizen_id, trace_id)

    async def _record(self, ref: str, msg: Inbound, answer: str | None) -> str | None:
        """Add the citizen's message (and the assistant's answer) to the ticket; the answer's interaction id."""
        c = msg.contact
        msg = await self._pending_files(msg)
        self._stored = True
        await deskport.add_message(self.rt, ref, channel=c.channel, direction="in", actor="citizen", text=msg.text,
                                   data=_message_data(msg))
        if answer:
            it = await deskport.add_message(self.rt, ref, channel=c.channel, direction="out", actor="assistant", text=answer)
            return it.id
        return None

    async def _status(self, msg: Inbound, refs: list[str], open_ref: str | None, state_key: str) -> Reply:
        rt = self.rt
        try:
            await deskport.rate_hit(rt, f"status:{msg.contact.channel}:{msg.contact.address}",
                                    self.cfg.status_rate_limit, self.cfg.status_rate_window_s)
        except RateLimited:
            return Reply(text="Ha hecho muchas consultas seguidas. Espere un minuto y vuelva a intentarlo, por favor.",
                         action="answered", intent=STATUS_INTENT)
        if msg.contact.channel == "email":  # a From costs nothing to forge: one ceiling for all senders as well
            try:
                await deskport.rate_hit(rt, "status:email:all", self.cfg.email.status_rate_limit_global,
                                        self.cfg.status_rate_window_s)
            except RateLimited:
                log.warning("e-mail status lookups over the global limit")
                return Reply(text="Ahora mismo no podemos consultar el estado de las consultas por correo. "
                                  "Vuelva a intentarlo dentro de unos minutos, por favor.",
                             action="answered", intent=STATUS_INTENT)
        # One reference per message: a message listing many guesses must not probe them all (enumeration).
        for ref in refs[:1]:
            if await deskport.find_ticket(rt, ref) is not None:
                await rt.store.redis.delete(state_key)
                return Reply(text=await deskport.status_text(rt, ref), action="answered", ref=ref, intent=STATUS_INTENT)
        if refs and any(ch.isdigit() for ch in refs[0]):
            await rt.store.redis.delete(state_key)
            return Reply(text=f"No encuentro ninguna consulta con la referencia {display_ref(refs[0])}. "
                              "Revísela y escríbala de nuevo, por favor.", action="answered", intent=STATUS_INTENT)
        if open_ref:
            await rt.store.redis.delete(state_key)
            return Reply(text=await deskport.status_text(rt, open_ref), action="answered", ref=open_ref, intent=STATUS_INTENT)
        await rt.store.redis.set(state_key, json.dumps({"step": "reference"}), ex=STATE_TTL_S)
        return Reply(text="Dígame la referencia de su consulta: son seis letras y números, por ejemplo K7M-4PX.",
                     action="asked", intent=STATUS_INTENT)

    async def _self_service(self, text: str, intent: str | None, confirmed: bool = False) -> tuple[str | None, str | None]:
        """(answer, None) when the IVR's flows resolve this message by themselves (outcome self_service);
        (None, question) when they first ask the citizen to confirm the intent; (None, None) otherwise."""
        if intent in NEEDS_PERSON:
            return None, None
        inputs: list[tuple[Any, str]] = [("say", text[:ROUTE_CHARS])] + ([("say", "sí")] if confirmed else [])
        try:
            session, out = await self.rt.ivr.simulate(inputs, channel="chat", dry_run=True)
        except Exception:  # another area's engine: a failure there hands the message to a person
            log.exception("IVR self-service failed; the message goes to a person")
            return None, None
        if session.outcome == "self_service":
            return answer_of(out, questions=2 if confirmed else 1) or None, None
        question = nth_question(out, 2)
        if not confirmed and question and _YES_NO_QUESTION.search(question):
            # Worth asking only when a "yes" leads to an answer; otherwise a person takes it straight away.
            answer, _ = await self._self_service(text, intent, confirmed=True)
            if answer is not None:
                return None, _YES_NO_QUESTION.sub("Responda sí o no.", question)
        return None, None

    async def _new_ticket(self, msg: Inbound, intent: str | None, queue: str | None, citizen_id: str, trace_id: str) -> Reply:
        c = msg.contact
        kind = KIND_BY_INTENT.get(intent or "", "query")
        queue = queue or QUEUE_BY_INTENT.get(intent or "", DEFAULT_QUEUE)
        subject = msg.text if len(msg.text) <= 80 else msg.text[:77] + "..."
        if c.channel == "email" and c.data.get("subject"):
            subject = str(c.data["subject"])[:120]
        msg = await self._pending_files(msg)
        self._stored = True
        data = _message_data(msg)
        ticket = await deskport.create_ticket(self.rt, channel=c.channel, queue=queue, subject=subject, kind=kind,
                                              citizen_id=citizen_id, intent=intent, trace_id=trace_id, body=msg.text,
                                              data=data, meta={"contact": c.model_dump(mode="json")})
        await self._link(ticket.ref, msg)
        shown = display_ref(ticket.ref)
        if kind == "complaint":
            days = self.rt.settings.desk.complaint_due_business_days
            text = (f"Hemos registrado su queja o sugerencia con la referencia {shown}. La unidad responsable le "
                    f"responderá por este mismo canal en un plazo máximo de {days} días hábiles.")
        else:
            text = (f"Hemos registrado su consulta con la referencia {shown}. Una persona del servicio le responderá "
                    f"por este mismo canal. Para saber cómo va, escriba «¿cómo va mi consulta {shown}?».")
        it = await deskport.add_message(self.rt, ticket.ref, channel=c.channel, direction="out", actor="assistant",
                                        text=text)
        await deskport.record_contact(self.rt, c.channel, contained=False)
        return Reply(text=text, action="ticket", ref=ticket.ref, intent=intent, answer_id=it.id)


def _message_data(msg: Inbound) -> dict[str, Any]:
    # Who sent it, on every inbound interaction: an agent can tell a message from another address on the ticket.
    # Not a web-chat session id: it is the widget's credential for its conversation.
    data: dict[str, Any] = {"from": msg.contact.address} if msg.contact.channel != "webchat" else {}
    if msg.message_id:
        data["message_id"] = msg.message_id
    if msg.attachments:
        data["attachments"] = msg.attachments
    return data


UNCLEAR = ("Perdone, no le he entendido. Dígame en pocas palabras qué necesita; por ejemplo, pagar la ITV o la "
           "dirección de una oficina. Si prefiere que le atienda una persona, escriba «quiero hablar con una persona».")


_YES_NO_QUESTION = re.compile(r"\b(diga|responda|conteste)\s+s[ií]\s+o\s+no\.?", re.I)


def answer_of(out: list[Any], questions: int = 1) -> str:
    """The IVR's messages that answer the citizen: after its `questions`-th question, up to the next question."""
    parts: list[str] = []
    asked = 0
    for m in out:
        if m.kind == "question":
            if asked >= questions:
                break
            asked += 1
        elif asked >= questions:
            parts.append(m.text)
    return "\n".join(parts)


def nth_question(out: list[Any], n: int) -> str | None:
    questions = [m.text for m in out if m.kind == "question"]
    return questions[n - 1] if len(questions) >= n else None


def _yes_no(text: str) -> bool | None:
    try:
        from routing.entities import parse_yes_no
    except ImportError:
        return True if re.match(r"^\W*s[ií]\b", text, re.I) else False if re.match(r"^\W*no\b", text, re.I) else None
    return parse_yes_no(text)


async def handle(runtime: Services, msg: Inbound, ref_hint: str | None = None, *, counted: bool = False) -> Reply:
    return await Assistant(runtime).handle(msg, ref_hint, counted=counted)


async def flooded(runtime: Services, contact: Contact) -> bool:
    return await Assistant(runtime).flooded(contact)


async def file_only(runtime: Services, msg: Inbound, answer: str, keep_s: int) -> Reply:
    return await Assistant(runtime).file_only(msg, answer, keep_s)

