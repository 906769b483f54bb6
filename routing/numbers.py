"""Spanish number words to digits.

Callers read numbers in two ways and both must come out as the digits they meant:
as quantities ("dos mil veintiséis" -> 2026, "treinta y cinco" -> 35) and digit by digit
("cuatro cinco uno dos" -> 4512, "dos cero dos seis" -> 2026). A run of number words is
parsed into groups (a new group starts whenever the next word cannot extend the current
number); adjacent groups, and digits typed beside them, are joined into one token, which is
what a file number or a year read in pieces means.

Works on folded tokens (lowercase, no accents: see `routing.normalize.fold`).
"""

from __future__ import annotations

import re

UNITS: dict[str, int] = {
    "cero": 0, "uno": 1, "una": 1, "un": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5,
    "seis": 6, "siete": 7, "ocho": 8, "nueve": 9,
}
TEENS: dict[str, int] = {
    "diez": 10, "once": 11, "doce": 12, "trece": 13, "catorce": 14, "quince": 15, "dieciseis": 16,
    "diecisiete": 17, "dieciocho": 18, "diecinueve": 19, "veinte": 20, "veintiuno": 21, "veintiun": 21,
    "veintiuna": 21, "veintidos": 22, "veintitres": 23, "veinticuatro": 24, "veinticinco": 25,
    "veintiseis": 26, "veintisiete": 27, "veintiocho": 28, "veintinueve": 29,
}
TENS: dict[str, int] = {
    "treinta": 30, "cuarenta": 40, "cincuenta": 50, "sesenta": 60, "setenta": 70, "ochenta": 80, "noventa": 90,
}
HUNDREDS: dict[str, int] = {
    "cien": 100, "ciento": 100, "doscientos": 200, "doscientas": 200, "trescientos": 300, "trescientas": 300,
    "cuatrocientos": 400, "cuatrocientas": 400, "quinientos": 500, "quinientas": 500, "seiscientos": 600,
    "seiscientas": 600, "setecientos": 700, "setecientas": 700, "ochocientos": 800, "ochocientas": 800,
    "novecientos": 900, "novecientas": 900,
}
SCALES: dict[str, int] = {"mil": 1000, "millon": 1_000_000, "millones": 1_000_000}
# Common STT and typing variants ("dieci seis", "veinti tres" are handled as two words below).
VARIANTS: dict[str, str] = {
    "diesiseis": "dieciseis", "disiseis": "dieciseis", "diesisiete": "diecisiete", "diesiocho": "dieciocho",
    "diesinueve": "diecinueve", "beinte": "veinte", "ciete": "siete", "sinco": "cinco", "nuebe": "nueve",
    "sero": "cero", "zero": "cero", "catorse": "catorce", "quinse": "quince", "trese": "trece", "onse": "once",
    "dose": "doce", "cuatrosientos": "cuatrocientos",
}
# "un"/"una" are articles far more often than numbers: only numbers before a scale word.
_ARTICLES = {"un", "una"}
_DIGITS = re.compile(r"^\d+$")

_UNIT, _TEEN, _TEN, _HUNDRED, _SCALE = range(5)


def _kind(word: str) -> tuple[int, int] | None:
    if word in UNITS:
        return _UNIT, UNITS[word]
    if word in TEENS:
        return _TEEN, TEENS[word]
    if word in TENS:
        return _TEN, TENS[word]
    if word in HUNDREDS:
        return _HUNDRED, HUNDREDS[word]
    if word in SCALES:
        return _SCALE, SCALES[word]
    return None


def is_number_word(word: str) -> bool:
    return _kind(VARIANTS.get(word, word)) is not None


class _Group:
    """One number being read: `total` holds completed scale parts, `part` the part below a thousand."""

    def __init__(self) -> None:
        self.total = 0
        self.part = 0
        self.last: int | None = None  # kind of the last word
        self.words = 0

    def value(self) -> int:
        return self.total + self.part

    def accepts(self, kind: int, value: int) -> bool:
        last = self.last
        if last is None:
            return True
        if kind == _SCALE:
            return last != _SCALE or value > self.value()  # "mil millones"
        if kind == _HUNDRED:
            return last == _SCALE and self.part == 0
        if kind == _TEN:
            return last == _HUNDRED or (last == _SCALE and self.part == 0)
        if kind in (_TEEN, _UNIT):
            if value == 0:
                return False  # "cero" is always a digit of its own
            if last == _HUNDRED:
                return True
            return last == _SCALE and self.part == 0
        return False

    def add(self, kind: int, value: int) -> None:
        if kind == _SCALE:
            base = self.part or (1 if self.total == 0 else 0) or 1
            if value > 1000 and self.total:
                self.total = (self.total + self.part) * value
            else:
                self.total += base * value
            self.part = 0
        else:
            self.part += value
        self.last = kind
        self.words += 1


def digits_in(tokens: list[str]) -> list[str]:
    """Replace runs of number words (and digits typed next to them) by digit tokens."""
    out: list[str] = []
    i, n = 0, len(tokens)
    while i < n:
        word = VARIANTS.get(tokens[i], tokens[i])
        starts_run = _kind(word) is not None or _DIGITS.match(word) is not None
        if word in ("dieci", "veinti") and i + 1 < n:
            starts_run = VARIANTS.get(tokens[i + 1], tokens[i + 1]) in UNITS
        if word in _ARTICLES and not (i + 1 < n and VARIANTS.get(tokens[i + 1], tokens[i + 1]) in SCALES):
            starts_run = False
        if not starts_run:
            out.append(tokens[i])
            i += 1
            continue
        pieces: list[str] = []
        group: _Group | None = None
        while i < n:
            word = VARIANTS.get(tokens[i], tokens[i])
            if _DIGITS.match(word):
                if group is not None:
                    pieces.append(str(group.value()))
                    group = None
                pieces.append(word)
                i += 1
                continue
            # "treinta y cinco": "y" joins tens and a unit inside one number.
            if word == "y" and group is not None and group.last == _TEN and i + 1 < n:
                nxt = _kind(VARIANTS.get(tokens[i + 1], tokens[i + 1]))
                if nxt is not None and nxt[0] == _UNIT and nxt[1] > 0:
                    group.add(_UNIT, nxt[1])
                    i += 2
                    continue
            # "dieci seis", "veinti tres": the number split in two by the recogniser.
            if word in ("dieci", "veinti") and i + 1 < n:
                nxt = _kind(VARIANTS.get(tokens[i + 1], tokens[i + 1]))
                if nxt is not None and nxt[0] == _UNIT and nxt[1] > 0:
                    kind_val: tuple[int, int] | None = (_TEEN, (10 if word == "dieci" else 20) + nxt[1])
                    i += 1
                else:
                    kind_val = None
            else:
                kind_val = _kind(word)
            if kind_val is None or (word in _ARTICLES and not (i + 1 < n and tokens[i + 1] in SCALES)):
                break
            kind, value = kind_val
            if group is None or not group.accepts(kind, value):
                if group is not None:
                    pieces.append(str(group.value()))
                group = _Group()
            group.add(kind, value)
            i += 1
        if group is not None:
            pieces.append(str(group.value()))
        if pieces:
            out.append("".join(pieces))
        else:  # a lone article that did not start a number after all
            out.append(tokens[i])
            i += 1
    return out


def words_to_digits(text: str) -> str:
    """'dos mil veintiseis' -> '2026'; 'cuatro cinco uno dos' -> '4512'. Expects folded text."""
    return " ".join(digits_in(text.split()))
