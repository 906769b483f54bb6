"""Self-service answers of the reference scenario, from the knowledge base in config.

Each answer talks through the engine (so phone and chat say the same thing) and returns True
when the caller got an answer, False when a person should take over. Fixed wording lives in
the flows' `prompts` (admin-editable) under `answer_*` keys; the defaults are here.
"""

from __future__ import annotations

from typing import Any

from rapidfuzz import fuzz

from config.knowledge import FileStatus, KnowledgeConfig, Office, Procedure, Unit
from ivr import speak
from ivr.engine import Engine
from ivr.vehicles import match_vehicle

DEFAULT_TEXTS = {
    "answer_itv_pay": "La tasa se paga antes de la inspección con el modelo 050, en una entidad colaboradora o por internet.",
    "answer_miespacio": (
        "Para darse de alta en Miespacio entre en el portal de la Junta, pulse en Miespacio y acceda con certificado "
        "digital, DNI electrónico o Cl@ve. Desde allí puede ver sus trámites y notificaciones."),
    "answer_complaint": (
        "Cuéntenos su queja o sugerencia después de la señal. Diga su nombre y cómo contactarle. Cuando termine, "
        "espere unos segundos."),
}


class CsvFileAdapter:
    """The sample adapter: rows of `knowledge.files` (config/defaults/kb/files.csv)."""

    def __init__(self, knowledge: KnowledgeConfig) -> None:
        self.rows = {_ref_key(f.reference): f for f in knowledge.files}

    async def status(self, reference: str) -> FileStatus | None:
        return self.rows.get(_ref_key(reference))


def _ref_key(ref: str) -> str:
    return "".join(c for c in ref.upper() if c.isalnum())


def itv_procedure(knowledge: KnowledgeConfig) -> Procedure | None:
    return next((p for p in knowledge.procedures if "itv" in p.keywords or p.procedure_id == "P-ITV"), None)


def match_procedure(text: str, knowledge: KnowledgeConfig) -> Procedure | None:
    folded = speak.fold(text)
    best: tuple[float, Procedure | None] = (0.0, None)
    for proc in knowledge.procedures:
        for kw in [proc.title, *proc.keywords]:
            score = fuzz.partial_ratio(speak.fold(kw), folded) if len(kw) > 3 else (100.0 if kw in folded.split() else 0)
            if score > best[0]:
                best = (score, proc)
    return best[1] if best[0] >= 85 else None


class Answers:
    def __init__(self, engine: Engine) -> None:
        self.e = engine

    @property
    def kb(self) -> KnowledgeConfig:
        return self.e.deps.settings.knowledge

    @property
    def voice(self) -> bool:
        return self.e.session.channel == "voice"

    def text(self, key: str, **extra: Any) -> str:
        raw = self.e.doc.prompts.get(key) or DEFAULT_TEXTS[key]
        return self.e.render(raw, **extra)

    def utterance(self) -> str:
        return str(self.e.session.vars.get("utterance", ""))

    async def answer(self, topic: str) -> bool:
        handler = getattr(self, f"_{topic}")
        ok: bool = await handler()
        return ok

    # ---- topics --------------------------------------------------------------------------------

    async def _itv(self) -> bool:
        proc = itv_procedure(self.kb)
        if proc is None:
            return False
        fees = proc.fees()
        vehicle = match_vehicle(self.utterance(), self.kb)
        if vehicle and vehicle in fees:
            amounts = f"Para un {vehicle}, la tasa de la ITV es de {speak.euros(fees[vehicle])}."
        else:
            parts = [f"{speak.euros(v)} para {k}" for k, v in fees.items()]
            amounts = "La tasa de la ITV depende del vehículo: " + ", ".join(parts[:-1]) + \
                (f" y {parts[-1]}." if len(parts) > 1 else f"{parts[-1]}.")
        text = f"{amounts} {self.text('answer_itv_pay')}"
        if not self.voice and proc.url:
            text += f" Puede pagarla aquí: {proc.url}"
        await self.e.say(text)
        return True

    async def _directory(self) -> bool:
        """A unit's phone. A body that is not in this administration's directory gets "not ours" and advice,
        never a similar unit's number; a doubtful match is confirmed first."""
        unit: Unit | None = None
        if self.utterance():
            unit, answered = await self._unit_from(self.utterance())
            if answered:
                return True  # not ours (advice given), or the caller said it was not that one
        if unit is None:
            got = await self.e.ask("¿De qué consejería, dirección general o servicio necesita el teléfono?", "text",
                                   name="unit")
            if got:
                unit, answered = await self._unit_from(str(got))
                if answered:
                    return True
        if unit is None:
            return False
        phone = speak.digits_spoken(unit.phone) if self.voice else unit.phone
        text = f"El teléfono {speak.with_article(unit.name, 'de')} es el {phone}."
        if not self.voice:
            text += f" Correo electrónico: {unit.email}."
        await self.e.say(text)
        if self.voice:
            for _ in range(2):  # repeatable: callers write it down
                again = await self.e.confirm("¿Quiere que se lo repita? Diga sí o no.")
                if not again:
                    break
                await self.e.say(f"El teléfono es el {phone}.")
        return True

    async def _unit_from(self, text: str) -> tuple[Unit | None, bool]:
        """(the unit the words name or None, whether the caller was answered already: a body that is not ours,
        or a doubtful match the caller denied)."""
        from routing import entities

        match = entities.match_unit(text, self.kb.directory, self.kb)
        if match is None:
            return None, False
        if match.status == "found":
            return match.unit, False
        if match.status == "confirm" and match.unit is not None:
            sure = await self.e.confirm(f"¿Se refiere {speak.with_article(match.unit.name, 'a')}? Diga sí o no.")
            if sure:
                return match.unit, False
            await self.e.say("De acuerdo. Dígame el nombre completo del organismo, o pida hablar con una persona.")
            return None, True
        # Not in this administration's directory: say so, with what to do instead, and never another unit's number.
        body = match.body
        name = body.name if body is not None else match.heard
        advice = (body.advice if body is not None and body.advice else "") or self.kb.not_ours_advice
        said = speak.with_article(name)
        said = said[:1].upper() + said[1:]
        if match.unit is not None and body is not None:
            sure = await self.e.confirm(f"{said} no pertenece a esta administración. ¿Se refiere "
                                        f"{speak.with_article(match.unit.name, 'a')}? Diga sí o no.")
            if sure:
                return match.unit, False
        institution = self.e.deps.settings.service.institution
        if advice:
            await self.e.say(f"Ha preguntado por {speak.with_article(name)}. {advice}")
        else:
            await self.e.say(f"{said} no está en el directorio de la {institution}. Si lo desea, le paso con una persona.")
        self.e.session.vars["not_ours"] = name
        return None, True

    async def _offices(self) -> bool:
        from routing import entities

        office: Office | None = entities.extract_town(self.utterance(), self.kb.offices) if self.utterance() else None
        if office is None:
            office = await self.e.ask("¿De qué localidad quiere la oficina?", "town", retries=1, name="town")
        if office is None:
            towns = ", ".join(sorted({o.town for o in self.kb.offices}))
            await self.e.say(f"No tengo una oficina en esa localidad. Hay oficinas en {towns}.")
            return False
        phone = speak.digits_spoken(office.phone) if self.voice else office.phone
        hours = _office_hours(office.hours)
        text = (f"La {office.name} está en {office.address}, {office.town}. Horario: {hours}. "
                f"Teléfono: {phone}.")
        if office.appointment_required:
            text += " Se atiende con cita previa."
        await self.e.say(text)
        return True

    async def _miespacio(self) -> bool:
        await self.e.say(self.text("answer_miespacio"))
        return True

    async def _hours(self) -> bool:
        e = self.e
        state = e.session.calendar_state
        if state == "open":
            lead = f"Hoy atendemos {e.render('{today}')}."
        else:
            lead = f"Ahora estamos cerrados. Volveremos a atenderle {e.render('{next_open}')}."
        await e.say(f"{lead} Nuestro horario es {e.render('{hours}')}.")
        return True

    async def _file_status(self) -> bool:
        from routing import entities

        e = self.e
        ref = entities.extract_reference(self.utterance()) if self.utterance() else None
        if not ref:
            ref = await e.ask("Dígame el número de expediente, o márquelo en el teclado y pulse almohadilla.",
                              "reference", retries=2, name="file_reference")
        if not ref:
            return False
        adapter = e.deps.files or CsvFileAdapter(self.kb)
        row = await adapter.status(str(ref))
        e.session.vars["file_reference"] = str(ref)
        said = speak.chars_spoken(str(ref)) if self.voice else str(ref)
        if row is None:
            await e.say(f"No encuentro el expediente {said}.")
            return False
        text = f"El expediente {said}, de {row.procedure}, está {row.status}."
        if row.updated:
            text += f" Última actualización: {row.updated}."
        await e.say(text)
        return True

    async def _query_status(self) -> bool:
        from core.refs import display_ref, normalize_ref

        e = self.e
        raw = self.utterance()
        ref = _ticket_ref(raw) if raw else None
        if ref is None and e.session.caller:
            # Caller ID: a citizen calling from the number of an open query hears it without spelling the reference.
            mine = await e.deps.hooks.tickets.latest_open(e.session.caller)
            if mine is not None:
                said = speak.chars_spoken(mine) if self.voice else display_ref(mine)
                status = await e.deps.hooks.tickets.status_text(mine, spoken=self.voice)
                if status is not None:
                    await e.say(f"Tiene una consulta abierta con la referencia {said}. {status}")
                    return True
        if ref is None:
            got = await e.ask("Dígame la referencia de su consulta, letra a letra.", "reference", retries=2,
                              name="ticket_reference")
            ref = normalize_ref(str(got)) if got else None
        if ref is None:
            return False
        status = await e.deps.hooks.tickets.status_text(ref, spoken=self.voice)
        if status is None:
            said = speak.chars_spoken(ref) if self.voice else display_ref(ref)
            await e.say(f"No encuentro ninguna consulta con la referencia {said}.")
            return False
        await e.say(status)
        return True

    async def _complaint(self) -> bool:
        e = self.e
        e.session.said.append(self.text("answer_complaint"))
        got = await e.io.record(self.text("answer_complaint"), max_s=120, end_silence_s=4)
        e.note_transcript("complaint", "recording", got.text, got.confidence)
        if not got.text.strip() and not got.audio:
            await e.say("No he recibido su mensaje.")
            return False
        folded = speak.fold(got.text + " " + self.utterance())
        kind = "suggestion" if any(w in folded for w in ("sugerencia", "sugerir", "propongo", "propuesta")) else "complaint"
        subject = "Sugerencia" if kind == "suggestion" else "Queja"
        due = None
        cal = e.deps.calendar
        days = e.deps.settings.desk.complaint_due_business_days
        try:
            due = cal.add_business_days(e.deps.clock.now(), days)
        except Exception:  # a calendar without business days still files the complaint
            due = None
        ref = await e.deps.hooks.tickets.create(e.session, queue="N2", kind=kind, subject=subject, body=got.text,
                                                due=due, data={"confidence": got.confidence})
        e.session.ticket_ref = ref
        if self.voice:
            said = speak.chars_spoken(ref)
            await e.say(f"Hemos registrado su {subject.lower()}. Su referencia es: {said}. Repito: {said}.")
        else:
            await e.say(f"Hemos registrado su {subject.lower()} con la referencia {ref}.")
        return True

    async def _procedure(self) -> bool:
        proc = match_procedure(self.utterance(), self.kb)
        if proc is None:
            return False
        text = f"{proc.title}. {proc.summary}"
        if proc.deadline:
            text += f" Plazo: {proc.deadline}."
        if proc.form:
            text += f" Formulario: {proc.form}."
        if not self.voice and proc.url:
            text += f" Más información: {proc.url}"
        await self.e.say(text)
        return True

    async def _participation(self) -> bool:
        await self.e.say(self.e.prompt("participation"))
        return True


def _office_hours(hours: str) -> str:
    days = {"L-V": "de lunes a viernes", "L": "lunes", "M": "martes", "X": "miércoles", "J": "jueves", "V": "viernes"}
    out = []
    for part in hours.split(";"):
        bits = part.strip().split(" ", 1)
        if len(bits) == 2 and "-" in bits[1]:
            start, end = bits[1].split("-", 1)
            out.append(f"{days.get(bits[0], bits[0])} de {start} a {end}")
        else:
            out.append(part.strip())
    return "; ".join(out)


def _ticket_ref(text: str) -> str | None:
    from core.refs import normalize_ref
    from routing import entities

    got = entities.extract_reference(text)
    return normalize_ref(got) if got else None
