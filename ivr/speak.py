"""Spanish wording for prompts: instants, digits and money, said the way a caller understands them."""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime, timedelta

WEEKDAYS = ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"]
MONTHS = ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
          "noviembre", "diciembre"]
DIGITS = ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"]


def fold(text: str) -> str:
    """Lower case without accents or punctuation, for matching what a caller said."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9ñ ]+", " ", text).strip()


def clock_time(at: datetime) -> str:
    return f"{at.hour}:{at.minute:02d}"


def day_phrase(day: date, today: date) -> str:
    if day == today:
        return "hoy"
    if day == today + timedelta(days=1):
        return "mañana"
    return f"el {WEEKDAYS[day.weekday()]} {day.day} de {MONTHS[day.month - 1]}"


def when_phrase(at: datetime, now: datetime) -> str:
    """'mañana a las 8:30', 'el martes 8 de diciembre a las 8:30'."""
    local_now = now.astimezone(at.tzinfo)
    return f"{day_phrase(at.date(), local_now.date())} a las {clock_time(at)}"


def digits_spoken(number: str) -> str:
    """'924 00 20 01' -> 'nueve, dos, cuatro; cero, cero; ...' so TTS reads one digit at a time."""
    groups = [g for g in re.split(r"[\s.-]+", number.strip()) if g]
    return "; ".join(", ".join(DIGITS[int(c)] if c.isdigit() else c for c in g) for g in groups)


def euros(amount: float) -> str:
    whole = int(amount)
    cents = round((amount - whole) * 100)
    return f"{whole} euros" + (f" con {cents} céntimos" if cents else "")


def chars_spoken(ref: str) -> str:
    """A reference one character at a time: 'K7M4PX' -> 'K, 7, M; 4, P, X'."""
    half = (len(ref) + 1) // 2
    return ", ".join(ref[:half]) + "; " + ", ".join(ref[half:])


# The grammatical gender of the head noun of an administrative body's name, for its article.
_FEMININE_HEADS = {"consejeria", "direccion", "secretaria", "delegacion", "oficina", "presidencia", "junta", "agencia",
                   "vicepresidencia", "intervencion", "inspeccion", "subdireccion", "jefatura", "unidad", "sede",
                   "tesoreria", "comision", "fundacion", "entidad", "empresa", "asesoria", "gerencia", "coordinacion"}
_MASCULINE_HEADS = {"servicio", "instituto", "centro", "organismo", "ayuntamiento", "area", "gabinete", "consejo",
                    "registro", "departamento", "observatorio", "punto", "archivo", "museo", "hospital", "consorcio",
                    "defensor", "tribunal", "juzgado", "parque", "programa"}


def with_article(name: str, preposition: str = "") -> str:
    """A body's name as Spanish says it after a preposition: ("Servicio Extremeño de Salud", "de") -> "del
    Servicio Extremeño de Salud", ("Consejería de Educación", "a") -> "a la Consejería de Educación".

    Names that start with an article keep it; heads of unknown gender get no article rather than a wrong one."""
    words = name.split()
    if not words:
        return name
    head = fold(words[0])
    article = ""
    if head in ("el", "la", "los", "las"):
        article, name = head, " ".join(words[1:])
    elif head in _FEMININE_HEADS or (head.endswith(("cion", "sion", "dad", "ia")) and head not in _MASCULINE_HEADS):
        article = "la"
    elif head in _MASCULINE_HEADS:
        article = "el"
    if article == "el" and preposition == "de":
        return f"del {name}"
    if article == "el" and preposition == "a":
        return f"al {name}"
    parts = [p for p in (preposition, article, name) if p]
    return " ".join(parts)


def waiting_text(position: int, wait_s: float | None, certain: bool) -> str:
    """What a waiting caller hears: position, then the estimate ("unos 4 minutos", "más de 10 minutos")."""
    text = f"Hay {position - 1} personas delante de usted." if position > 1 else "Es usted el siguiente."
    if wait_s is None:
        return text
    minutes = max(1, round(wait_s / 60))
    if not certain:
        return text + f" El tiempo de espera será de más de {minutes} {'minuto' if minutes == 1 else 'minutos'}."
    return text + f" El tiempo de espera estimado es de unos {minutes} {'minuto' if minutes == 1 else 'minutos'}."
