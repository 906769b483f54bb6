"""Entities in an utterance: town (offices list), administrative unit (directory), file or
ticket reference (letters and digits), and yes/no answers.

Towns and units are matched on normalised, phonetic forms with a fuzzy fallback, so "caseres"
(by ear), "consegería de educasion" or an STT slip still finds the row. Indexes are built once
per knowledge base (the router holds them); the module-level helpers cache them by content.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

from rapidfuzz import fuzz, process

from config.knowledge import Office, Procedure, Unit
from routing.normalize import (
    LETTER_NAMES,
    STOPWORDS,
    Normalized,
    analyze,
    canonical,
    fold,
    phonetic,
    stem,
    strip_accents,
    typo_matches,
)
from routing.numbers import digits_in, is_number_word

T = TypeVar("T")

# ---- towns -----------------------------------------------------------------------------------


class TownIndex:
    """Offices by town: exact phonetic n-gram lookup, then fuzzy for longer names."""

    FUZZY_MIN_LEN = 6
    FUZZY_CUTOFF = 85.0

    def __init__(self, offices: Sequence[Office]) -> None:
        self.offices = list(offices)
        self.keys: dict[str, Office] = {}
        self.max_n = 1
        firsts: dict[str, list[Office]] = {}
        for office in self.offices:
            tokens = fold(office.town).split()
            if not tokens:
                continue
            self.keys.setdefault(self._key(tokens), office)
            self.max_n = max(self.max_n, len(tokens))
            if len(tokens) > 1 and len(tokens[0]) >= 5:
                firsts.setdefault(tokens[0], []).append(office)
        # "villanueva", "navalmoral", "jerez": the first word of a longer name, when it is unique.
        for word, found in firsts.items():
            if len(found) == 1:
                self.keys.setdefault(self._key([word]), found[0])
        self._choices = list(self.keys)
        self._fuzzy_cache: dict[str, tuple[str, float] | None] = {}
        self._firsts = {key.split()[0] for key in self.keys}
        self._words = {w for key in self.keys for w in key.split()}

    def knows(self, token: str) -> bool:
        return phonetic(token) in self._words

    @staticmethod
    def _key(tokens: Sequence[str]) -> str:
        return " ".join(phonetic(t) for t in tokens)

    def find(self, norm: Normalized) -> Office | None:
        sounds = [phonetic(t) for t in norm.tokens]
        best: tuple[float, int, Office] | None = None
        for n in range(min(self.max_n, len(sounds)), 0, -1):
            for i in range(len(sounds) - n + 1):
                if sounds[i] not in self._firsts and n > 2:
                    continue
                key = " ".join(sounds[i : i + n])
                office = self.keys.get(key)
                if office is not None:
                    return office  # longest exact match wins
                # Fuzzy only for one or two meaningful words of some length: typos of town names.
                gram = norm.tokens[i : i + n]
                if n > 2 or len(key) < self.FUZZY_MIN_LEN or gram[0] in STOPWORDS or gram[-1] in STOPWORDS:
                    continue
                hit = self._fuzzy(key)
                if hit is not None and (best is None or (hit[1], n) > best[:2]):
                    best = (hit[1], n, self.keys[hit[0]])
        return best[2] if best else None

    def _fuzzy(self, key: str) -> tuple[str, float] | None:
        if key in self._fuzzy_cache:
            return self._fuzzy_cache[key]
        hit = process.extractOne(key, self._choices, scorer=fuzz.ratio, score_cutoff=self.FUZZY_CUTOFF)
        found = (hit[0], float(hit[1])) if hit is not None else None
        if len(self._fuzzy_cache) > 50_000:
            self._fuzzy_cache.clear()
        self._fuzzy_cache[key] = found
        return found


# ---- units -----------------------------------------------------------------------------------


class NameIndex(Generic[T]):
    """Rows found by their names, scored by IDF-weighted coverage of the names' words.

    "consejería de sanidad" finds the unit whose alias is "sanidad"; "servicio extremeño de
    salud" prefers the unit that covers all three words over the one whose alias is "salud".
    """

    MIN_COVERAGE = 0.65
    MIN_MATCHED = 3.0  # about one distinctive word: "consejería" or "servicio" alone is not enough
    MIN_MATCHED_WHOLE = 1.5  # when the utterance holds a whole name or alias ("educación")

    def __init__(self, rows: Sequence[tuple[T, Sequence[str]]]) -> None:
        self.rows = [row for row, _ in rows]
        self.candidates: list[tuple[T, frozenset[str]]] = []
        self.words = WordIndex()
        for row, names in rows:
            for name in names:
                keys = frozenset(self.words.add_text(name))
                if keys:
                    self.candidates.append((row, keys))
        df: dict[str, int] = {}
        for _, keys in self.candidates:
            for w in keys:
                df[w] = df.get(w, 0) + 1
        total = len(self.candidates) or 1
        self.weight = {w: math.log(1 + total / c) for w, c in df.items()}
        self.total = [sum(self.weight[w] for w in keys) for _, keys in self.candidates]
        self.by_word: dict[str, list[int]] = {}  # word -> candidates holding it
        for i, (_, keys) in enumerate(self.candidates):
            for w in keys:
                self.by_word.setdefault(w, []).append(i)

    def find(self, norm: Normalized) -> T | None:
        if not norm.content:
            return None
        words = self.words.lookup(norm)
        best: tuple[float, T] | None = None
        hit = sorted({i for w in words for i in self.by_word.get(w, ())})
        for i in hit:
            (row, cand), total = self.candidates[i], self.total[i]
            matched = sum(self.weight[w] for w in cand & words)
            coverage = matched / total
            if coverage < self.MIN_COVERAGE or matched < (self.MIN_MATCHED_WHOLE if coverage > 0.99 else self.MIN_MATCHED):
                continue
            score = matched * coverage * coverage
            if best is None or score > best[0]:
                best = (score, row)
        return best[1] if best else None


class UnitIndex(NameIndex[Unit]):
    """Directory units by name and aliases."""

    def __init__(self, units: Sequence[Unit]) -> None:
        super().__init__([(u, [u.name, *u.aliases]) for u in units])
        self.units = list(units)


class ProcedureIndex(NameIndex[Procedure]):
    """Procedures of the knowledge base by title and keywords ("familia numerosa", "becas")."""

    def __init__(self, procedures: Sequence[Procedure]) -> None:
        super().__init__([(p, [p.title, *p.keywords]) for p in procedures])


class WordIndex:
    """Meaningful words of a set of names, reachable from what a caller says or types.

    Keys are phonetic stems. A caller's word reaches a key by its own stem, by the sound of the
    whole word ("educasion" sounds like "educación", whose stem is "educ"), or by a fuzzy match
    for typos of longer words.
    """

    def __init__(self) -> None:
        self.by_sound: dict[str, str] = {}  # phonetic(whole folded word) -> key
        self.by_word: dict[str, str] = {}  # folded word -> key
        self.keys: set[str] = set()
        self._choices: list[str] = []
        self._cache: dict[str, frozenset[str]] = {}

    def add_text(self, text: str) -> list[str]:
        norm = analyze(text)
        out = []
        for token in norm.tokens:
            if token in STOPWORDS:
                continue
            key = phonetic(stem(canonical(token)))
            self.by_sound.setdefault(phonetic(token), key)
            self.by_word.setdefault(canonical(token), key)
            self.keys.add(key)
            out.append(key)
        self._choices = [w for w in self.by_word if len(w) >= 4 and not w.isdigit()]
        self._cache.clear()
        return out

    def resolve(self, token: str) -> frozenset[str]:
        hit = self._cache.get(token)
        if hit is not None:
            return hit
        sound = phonetic(token)
        found = set()
        key = phonetic(stem(canonical(token)))
        if key in self.keys:
            found.add(key)
        if sound in self.by_sound:
            found.add(self.by_sound[sound])
        if not found:
            for word in typo_matches(canonical(token), self._choices):
                found.add(self.by_word[word])
        result = frozenset(found)
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[token] = result
        return result

    def lookup(self, norm: Normalized) -> set[str]:
        words: set[str] = set()
        for token in (*norm.tokens, *norm.spelled):
            if token not in STOPWORDS:
                words |= self.resolve(token)
        return words


def extract_town(text: str, offices: Sequence[Office]) -> Office | None:
    """The office whose town the utterance names ("la oficina de caseres" -> Cáceres), or None."""
    return _index_for("town", offices, TownIndex).find(analyze(text))


def extract_unit(text: str, units: Sequence[Unit]) -> Unit | None:
    """The directory unit the utterance names, by name or alias, or None."""
    return _index_for("unit", units, UnitIndex).find(analyze(text))


# Indexes for the module-level helpers, by the identity of the list they were built from (the
# knowledge lists in settings live as long as their config version); rows are compared too.
_INDEX_CACHE: dict[tuple[str, int], tuple[list[Any], Any]] = {}
IndexT = TypeVar("IndexT")


def _index_for(kind: str, rows: Sequence[Any], build: Callable[[Sequence[Any]], IndexT]) -> IndexT:
    key = (kind, id(rows))
    hit = _INDEX_CACHE.get(key)
    if hit is not None and len(hit[0]) == len(rows) and all(a is b for a, b in zip(hit[0], rows, strict=True)):
        return cast(IndexT, hit[1])
    if len(_INDEX_CACHE) > 16:
        _INDEX_CACHE.clear()
    index = build(rows)
    _INDEX_CACHE[key] = (list(rows), index)
    return index


# ---- references ------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z0-9Ññ]+")
_VOWEL_WORDS = frozenset("a e i o u y".split())
# Words never read as letters inside a reference: prepositions and pronouns that look like letter names.
_NOT_LETTERS = frozenset("de te se me le la el lo en es un".split())
MIN_REFERENCE = 4


def _spelled_letter(words: list[str], i: int) -> tuple[str, int] | None:
    """'a de alicante' / 'be de barcelona' -> ('A', 3): a letter disambiguated by a word."""
    if i + 2 < len(words) and words[i + 1] == "de":
        letter = LETTER_NAMES.get(words[i], words[i] if len(words[i]) == 1 and words[i].isalpha() else None)
        if letter and words[i + 2].startswith(letter) and len(words[i + 2]) > 2:
            return letter.upper(), 3
    return None


def extract_reference(text: str) -> str | None:
    """A file or ticket reference: letters and digits, typed or read out.

    "dos cero dos seis cero cero cero uno dos tres" -> "2026000123"; "EX-2026-789" -> "EX2026789";
    "e equis dos cero..." -> "EX20..."; "a de alicante be de barcelona 3 4 7 9" -> "AB3479".
    A reference holds at least one digit and four characters; the longest one wins.
    """
    if not text:
        return None
    folded = fold(text)
    if not any(c.isdigit() for c in folded) and not any(is_number_word(w) for w in folded.split()):
        return None  # no digit, typed or said: no reference (the common case, kept fast)
    raw = _WORD.findall(strip_accents(text[:2000]))
    words = [w.lower() for w in raw]
    upper_single = {i for i, w in enumerate(raw) if len(w) <= 4 and w.isalpha() and w.isupper()}
    # Tokens become ("L", letters) or ("D", digits) pieces, or None for plain words.
    pieces: list[tuple[str, str] | None] = []
    i = 0
    while i < len(words):
        spelled = _spelled_letter(words, i)
        if spelled is not None:
            pieces.append(("S", spelled[0]))
            i += spelled[1]
            continue
        w = words[i]
        if any(c.isdigit() for c in w):
            pieces.append(("D" if w.isdigit() else "M", w.upper()))
        elif i in upper_single and w not in ("i", "y", "o"):
            pieces.append(("S", w.upper()))
        elif w in LETTER_NAMES and w not in _NOT_LETTERS:
            letter = LETTER_NAMES[w].upper()
            pieces.append(("W" if w in _VOWEL_WORDS else "S", letter))
        elif is_number_word(w) or (w in ("dieci", "veinti") and i + 1 < len(words) and is_number_word(words[i + 1])):
            j = i + 1
            while j < len(words) and (
                is_number_word(words[j]) or words[j] in ("dieci", "veinti")
                or (words[j] == "y" and j + 1 < len(words) and is_number_word(words[j + 1]))
            ):
                j += 1
            for tok in digits_in(words[i:j]):
                pieces.append(("D", tok) if tok.isdigit() else None)
            i = j
            continue
        else:
            pieces.append(None)
        i += 1
    best = ""
    run: list[tuple[str, str]] = []
    for piece in [*pieces, None]:
        if piece is not None:
            run.append(piece)
            continue
        best = max(best, _run_value(run), key=len)
        run = []
    return best or None


def _run_value(run: list[tuple[str, str]]) -> str:
    # Vowel words ("a", "e", "y") count as letters only right before another letter or digit.
    while run and run[-1][0] == "W":
        run = run[:-1]
    while run and run[0][0] == "W" and (len(run) < 2 or run[1][0] == "W"):
        run = run[1:]
    if not any(kind in "DM" for kind, _ in run):
        return ""
    value = "".join(v for _, v in run)
    return value if len(value) >= MIN_REFERENCE else ""


# ---- yes / no --------------------------------------------------------------------------------

_YES = (
    "claro que si", "que si", "eso es", "asi es", "de acuerdo", "por supuesto", "desde luego", "eso mismo",
    "sin duda", "si", "sip", "sii", "siii", "claro", "vale", "ok", "correcto", "exacto", "exactamente",
    "afirmativo", "efectivamente", "cierto", "perfecto", "venga", "adelante", "yes", "justo", "eso",
    "conforme", "valeee", "okey", "okay", "bale",
)
_NO = (
    "claro que no", "que no", "para nada", "en absoluto", "de ninguna manera", "ni hablar", "que va",
    "no es eso", "otra cosa", "no", "nop", "nope", "negativo", "tampoco", "incorrecto", "equivocado",
    "nunca", "nada",
)
_UNSURE = ("no se", "no lo se", "ni idea", "no estoy seguro", "no estoy segura", "no lo tengo claro")
_CUES = sorted([(p.split(), True) for p in _YES] + [(p.split(), False) for p in _NO], key=lambda c: -len(c[0]))


def parse_yes_no(text: str) -> bool | None:
    """True for yes, False for no, None when the answer is neither or unclear ("no sé")."""
    words = fold(text).split()
    if not words or len(words) > 30:
        return None
    joined = " " + " ".join(words) + " "
    if any(f" {u} " in joined for u in _UNSURE):
        return None
    # Emphatic forms decide wherever they are: "claro que no", "que sí".
    for phrase, value in (("que no", False), ("que si", True)):
        if f" {phrase} " in joined and not joined.strip().startswith(("no ", "si ")):
            return value
    i = 0
    while i < len(words):
        for cue, value in _CUES:
            if words[i : i + len(cue)] == cue:
                return value
        i += 1
    return None
