"""Entities in an utterance: town (offices list), administrative unit (directory), file or
ticket reference (letters and digits), and yes/no answers.

Towns and units are matched on normalised, phonetic forms with a fuzzy fallback, so "caseres"
(by ear), "consegería de educasion" or an STT slip still finds the row. Indexes are built once
per knowledge base (the router holds them); the module-level helpers cache them by content.

A unit mention has three outcomes (`UnitMatch.status`): "found" (safe to answer with the unit's
phone), "confirm" (plausible but weak: an acronym heard with a slip, a name half covered; the
caller must confirm before any number is given) and "unknown" (a body that is not in the
directory: a State agency, a town hall, another region's service, or a directory-like name that
matches nothing). A wrong number said with confidence is worse than "no lo tengo", so a body
outside the directory is never answered with a directory unit of a similar name or acronym.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from config.knowledge import ExternalBody, KnowledgeConfig, Office, Procedure, Unit
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
        hit = self.best(norm)
        return hit.row if hit else None

    def best(self, norm: Normalized, min_coverage: float | None = None) -> NameHit[T] | None:
        """The best-covered row, with how well and where (token positions) the utterance named it."""
        floor = self.MIN_COVERAGE if min_coverage is None else min_coverage
        if not norm.content:
            return None
        per_token = [frozenset() if t in STOPWORDS else self.words.resolve(t) for t in norm.tokens]
        words: set[str] = set().union(*per_token) if per_token else set()
        for token in norm.spelled:
            words |= self.words.resolve(token)
        best: tuple[float, int, float] | None = None
        hit = sorted({i for w in words for i in self.by_word.get(w, ())})
        for i in hit:
            cand, total = self.candidates[i][1], self.total[i]
            matched = sum(self.weight[w] for w in cand & words)
            coverage = matched / total
            if coverage < floor or matched < (self.MIN_MATCHED_WHOLE if coverage > 0.99 else self.MIN_MATCHED):
                continue
            score = matched * coverage * coverage
            if best is None or score > best[0]:
                best = (score, i, coverage)
        if best is None:
            return None
        row, cand = self.candidates[best[1]]
        positions = tuple(j for j, keys in enumerate(per_token) if keys & cand)
        return NameHit(row, best[2], positions)


@dataclass(frozen=True, slots=True)
class NameHit(Generic[T]):
    row: T
    coverage: float  # IDF-weighted share of the name's words the utterance holds, 0..1
    positions: tuple[int, ...]  # indexes in `Normalized.tokens` of the words that matched


Status = Literal["found", "confirm", "unknown"]


@dataclass(frozen=True, slots=True)
class UnitMatch:
    """What an utterance names of the directory: see the module doc for `status`."""

    status: Status
    heard: str  # the words that named it, normalised ("agencia tributaria", "sespe")
    unit: Unit | None = None  # found: the unit; confirm: the one to ask about; unknown: a similar one, if any
    body: ExternalBody | None = None  # unknown: the known outside body it names, if it is one
    span: tuple[int, int] = (0, 0)  # token positions [start, end) of `heard` in `Normalized.tokens`
    outside: bool = False  # unknown: named as another administration's body, not just a name we lack
    coverage: float = 1.0  # share of the unit's name that was said (1 for an acronym)


# A unit's alias that is an acronym (upper case in the directory, short): matched on the whole word only,
# never by stem or typo, because short words collide ("sepa" ~ "sepad", "sepe" ~ "sexpe").
MAX_ACRONYM = 6
# Below this coverage of a unit's name (down to CONFIRM_COVERAGE) the match is asked about, never answered.
SURE_COVERAGE = 0.8
CONFIRM_COVERAGE = 0.45
# Words that may follow the head of a body's name inside the name ("registro civil de badajoz").
_NAME_GLUE = frozenset("de del la las el los y e".split())
# Words that end a body's name: what follows is the request ("la policía para renovar el dni").
_NAME_END = frozenset("para que porque por con a al en o u pero si cuando donde como sobre".split())
MAX_NAME_TAIL = 5
# First words of directory-like names: "la consejería de pesca" is a unit mention even when it names nothing.
_UNIT_HEADS = ("consejeria", "conserjeria", "direccion general", "secretaria general", "delegacion", "departamento",
               "instituto", "subdireccion", "organismo")


class UnitIndex(NameIndex[Unit]):
    """Directory units by name, aliases and acronyms, and the bodies outside the directory."""

    def __init__(self, units: Sequence[Unit], knowledge: KnowledgeConfig | None = None) -> None:
        self.units = list(units)
        self.acronyms: dict[str, Unit] = {}
        rows: list[tuple[Unit, list[str]]] = []
        for u in self.units:
            names = [u.name]
            for alias in u.aliases:
                if _is_acronym(alias):
                    self.acronyms.setdefault(fold(alias), u)
                else:
                    names.append(alias)
            rows.append((u, names))
        super().__init__(rows)
        in_directory = {w for u in self.units for n in (u.name, *u.aliases) for w in fold(n).split()}
        kb = knowledge or KnowledgeConfig()
        # Outside bodies by their names' content words (sound keys), longest first; acronyms by the whole word.
        self.outside: list[tuple[tuple[str, ...], ExternalBody]] = []
        self.outside_acronyms: dict[str, ExternalBody] = {}
        for body in kb.not_ours:
            for name in (body.name, *body.aliases):
                if _is_acronym(name):
                    self.outside_acronyms.setdefault(fold(name), body)
                    continue
                key = tuple(phonetic(t) for t in analyze(name).tokens if t not in STOPWORDS)
                if key:
                    self.outside.append((key, body))
        self.outside.sort(key=lambda kb_: -len(kb_[0]))
        self.outside_first: dict[str, list[tuple[tuple[str, ...], ExternalBody]]] = {}
        for key, body in self.outside:  # longest first within each list, as sorted
            self.outside_first.setdefault(key[0], []).append((key, body))
        self.outside_words = {k for key, _ in self.outside for k in key} | set(self.outside_acronyms)
        self.heads = {phonetic(fold(h)) for h in kb.not_ours_heads if fold(h) not in in_directory}
        self.qualifiers = {phonetic(fold(q)) for q in kb.foreign_qualifiers if fold(q) not in in_directory}
        self.advice = kb.not_ours_advice
        self.unit_heads = [tuple(phonetic(w) for w in h.split()) for h in _UNIT_HEADS]

    def knows(self, token: str) -> bool:
        """Is the word part of a unit's or an outside body's name (so not an unknown word)?"""
        sound = phonetic(token)
        return bool(self.words.resolve(token)) or sound in self.outside_words or token in self.acronyms

    def match(self, norm: Normalized) -> UnitMatch | None:
        """The unit the utterance names, a doubtful one to confirm, a body that is not ours, or None."""
        if not norm.tokens:
            return None
        sounds = [phonetic(t) for t in norm.tokens]
        outside = self._outside(norm, sounds)
        acronym = self._acronym(norm)
        if outside is not None:
            # The outside body wins over any directory unit that matched inside its name ("ministerio de
            # educación"); a regional acronym said with a slip that is a State one ("sepe") is suggested.
            near = acronym.unit if acronym is not None and acronym.status == "confirm" else None
            return UnitMatch("unknown", outside[0], near or self._near_acronym(outside[0]), outside[1], outside[2],
                             outside=True)
        if acronym is not None and acronym.status == "found":
            return acronym
        hit = self.best(norm, CONFIRM_COVERAGE)
        if hit is not None:
            lo, hi = min(hit.positions, default=0), max(hit.positions, default=0) + 1
            # "servicio andaluz de salud": a qualifier of another administration in or right after the name.
            for j in range(max(lo - 3, 0), min(hi + 2, len(sounds))):
                if sounds[j] in self.qualifiers:
                    lo, hi = min(lo, j), max(hi, j + 1)
                    while lo > 0 and (norm.tokens[lo - 1] in _NAME_GLUE or self.words.resolve(norm.tokens[lo - 1])):
                        lo -= 1
                    while lo < j and norm.tokens[lo] in _NAME_GLUE:
                        lo += 1
                    return UnitMatch("unknown", " ".join(norm.tokens[lo:hi]), None, None, (lo, hi), outside=True)
            # Under the usual floor, half a long name is worth asking about only with two words or more of it.
            if hit.coverage >= self.MIN_COVERAGE or len(hit.positions) >= 2:
                heard = " ".join(norm.tokens[lo:hi])
                status: Status = "found" if hit.coverage >= SURE_COVERAGE else "confirm"
                return UnitMatch(status, heard, hit.row, None, (lo, hi), coverage=hit.coverage)
        if acronym is not None:
            return acronym
        return self._unknown_unit(norm, sounds)

    def _outside(self, norm: Normalized, sounds: list[str]) -> tuple[str, ExternalBody | None, tuple[int, int]] | None:
        """(heard, body or None, span) of a body outside the directory named in the utterance."""
        content = [i for i, t in enumerate(norm.tokens) if t not in STOPWORDS]
        csounds = [sounds[i] for i in content]
        found: tuple[int, int, ExternalBody] | None = None  # (length, -start, body): the longest name wins
        for k, sound in enumerate(csounds):
            for key, body in self.outside_first.get(sound, ()):
                n = len(key)
                if tuple(csounds[k : k + n]) == key and (found is None or (n, -k) > found[:2]):
                    found = (n, -k, body)
                    break
        if found is not None:
            n, k = found[0], -found[1]
            lo, hi = content[k], content[k + n - 1] + 1
            hi = self._name_end(norm, hi)
            return " ".join(norm.tokens[lo:hi]), found[2], (lo, hi)
        for i, token in enumerate(norm.tokens):
            named = self.outside_acronyms.get(token)
            if named is not None:
                return token, named, (i, i + 1)
        for run in norm.spelled:
            named = self.outside_acronyms.get(run)
            if named is not None:
                return run, named, (0, 0)
        for i, sound in enumerate(sounds):
            if sound in self.heads:
                hi = self._name_end(norm, i + 1)
                return " ".join(norm.tokens[i:hi]), None, (i, hi)
        return None

    @staticmethod
    def _name_end(norm: Normalized, hi: int) -> int:
        """Extend a name over what still belongs to it ("registro civil de badajoz"), up to the request."""
        end = hi
        j = hi
        while j < len(norm.tokens) and j < hi + MAX_NAME_TAIL and norm.tokens[j] not in _NAME_END:
            if norm.tokens[j] not in _NAME_GLUE:
                end = j + 1
            j += 1
        return end

    def _acronym(self, norm: Normalized) -> UnitMatch | None:
        """A unit's acronym said whole ("el sexpe", "s e s") or, after an article, with one slip ("al sespe")."""
        for i, token in enumerate(norm.tokens):
            unit = self.acronyms.get(token)
            if unit is not None:
                return UnitMatch("found", token, unit, None, (i, i + 1))
        for run in norm.spelled:
            unit = self.acronyms.get(run)
            if unit is not None:
                return UnitMatch("found", run, unit, None, (0, 0))
        for i, token in enumerate(norm.tokens):
            if i == 0 or norm.tokens[i - 1] not in ("el", "la", "del", "al") or len(token) < 3 or token.isdigit():
                continue
            unit = self._near(token)
            if unit is not None:
                return UnitMatch("confirm", token, unit, None, (i, i + 1))
        return None

    def _near(self, token: str) -> Unit | None:
        for acronym, unit in self.acronyms.items():
            if len(acronym) >= 4 and OSA.distance(token, acronym) <= 1 and token[0] == acronym[0]:
                return unit
        return None

    def _near_acronym(self, heard: str) -> Unit | None:
        """A directory acronym one slip away from an outside one ("sepe" -> SEXPE), to offer instead."""
        return self._near(heard) if heard in self.outside_acronyms else None

    def _unknown_unit(self, norm: Normalized, sounds: list[str]) -> UnitMatch | None:
        """"la consejería de pesca": a directory-like name followed by words that match no unit."""
        for i, sound in enumerate(sounds):
            for head in self.unit_heads:
                if sound != head[0] or tuple(sounds[i : i + len(head)]) != head:
                    continue
                after = i + len(head)
                hi = self._name_end(norm, after)
                if hi > after:
                    return UnitMatch("unknown", " ".join(norm.tokens[i:hi]), None, None, (i, hi))
        return None


def _is_acronym(name: str) -> bool:
    word = name.strip()
    return 2 <= len(word) <= MAX_ACRONYM and " " not in word and word.isupper()


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


def extract_unit(text: str, units: Sequence[Unit], knowledge: KnowledgeConfig | None = None) -> Unit | None:
    """The directory unit the utterance names surely, by name, alias or acronym, or None.

    None too when the match is doubtful or the utterance names a body outside the directory (see
    `match_unit`): a caller of this helper says the unit's phone without asking.
    """
    hit = match_unit(text, units, knowledge)
    return hit.unit if hit is not None and hit.status == "found" else None


def match_unit(text: str, units: Sequence[Unit], knowledge: KnowledgeConfig | None = None) -> UnitMatch | None:
    """What the utterance names of the directory: found, to confirm, or unknown (not ours); None: no unit mention.

    `knowledge` brings the bodies outside the directory; without it the defaults' are used, so that a
    plain `extract_unit(text, kb.directory)` never answers "sepe" with the SEXPE.
    """
    kb = knowledge if knowledge is not None else _default_knowledge()
    index = _index_for("unit", units, lambda rows: UnitIndex(rows, kb), extra=id(kb))
    return index.match(analyze(text))


_DEFAULT_KB: list[KnowledgeConfig] = []


def _default_knowledge() -> KnowledgeConfig:
    """The shipped list of bodies outside the directory (config/defaults), loaded once."""
    if not _DEFAULT_KB:
        from config.loader import load

        try:
            _DEFAULT_KB.append(load(None, env={}).settings.knowledge)
        except Exception:  # a broken defaults file must not break entity extraction: no outside list then
            _DEFAULT_KB.append(KnowledgeConfig())
    return _DEFAULT_KB[0]


# Indexes for the module-level helpers, by the identity of the list they were built from (the
# knowledge lists in settings live as long as their config version); rows are compared too.
_INDEX_CACHE: dict[tuple[str, int], tuple[list[Any], Any]] = {}
IndexT = TypeVar("IndexT")


def _index_for(kind: str, rows: Sequence[Any], build: Callable[[Sequence[Any]], IndexT], extra: int = 0) -> IndexT:
    key = (kind, id(rows) ^ extra)
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
