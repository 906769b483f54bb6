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
