"""Intent routing: from what a citizen said (STT text) or typed, what they want.

Two kinds of evidence, both on normalised text (`routing.normalize`):

- keywords with weights (config): a keyword is one or more words; each word matches a
  caller's word by stem ("pagar" ~ "pagué"), by sound ("kejar" ~ "quejar", "y te b" ~ "itv")
  or by a fuzzy match for typos of longer words; the words of a multi-word keyword must come
  in order with at most `MAX_GAP` words between them. An intent's keyword evidence is the
  noisy-OR of its matched weights, 1 - Π(1 - w), so two weak clues add up but never pass 1.
- example phrases (config): rapidfuzz `token_sort_ratio` between the utterance's content
  words and each phrase's, all phrases at once with `process.cdist` and a score cutoff.

The two combine as a noisy-OR into a confidence in 0..1 (tuned on the development sets so
that the threshold, 0.5 by default, separates in-scope from out-of-scope) and scaled down
when most of the utterance's content words are unknown to every intent ("quiero comprar un
coche de segunda mano" is not about the ITV because it says "coche"). Below the threshold the
intent is None (out of scope): greetings, yes/no, small talk and unrelated requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from rapidfuzz import fuzz, process

from config.knowledge import KnowledgeConfig, Unit
from config.routing import RoutingConfig
from routing.entities import ProcedureIndex, TownIndex, UnitIndex, UnitMatch, extract_reference
from routing.normalize import (
    STOPWORDS,
    Normalized,
    analyze,
    canonical,
    fold,
    lexicon,
    phonetic,
    rewrites,
    stem,
    typo_matches,
)

MAX_GAP = 2  # words allowed between the words of a multi-word keyword ("tasa de la itv" ~ "tasa itv")
PHRASE_FLOOR = 55.0  # token_sort_ratio below this is no evidence at all
PHRASE_MAX = 0.85  # a perfect phrase match alone gives this much confidence
MAX_ALTERNATIVES = 3
MIN_ALTERNATIVE = 0.15
# Articles and prepositions: optional inside a keyword ("tasa de la itv" is the keyword "tasa itv").
GLUE = frozenset("de la el los las lo un una unos unas del al a en y o e u mi mis su sus tu tus con por para".split())
_PLAIN = frozenset("que como cuando donde cual cuales quien cuanto cuanta cuantos cuantas".split())
_DIGIT_WORDS = dict(zip("0123456789", "cero uno dos tres cuatro cinco seis siete ocho nueve".split(), strict=True))
# Words that name an option of a keypad menu when said ("la opción dos", "tecla cero").
_MENU_WORDS = frozenset("opcion tecla numero marco pulso elijo escojo selecciono boton".split())


class Alternative(BaseModel):
    intent: str
    confidence: float


class RouteResult(BaseModel):
    text: str
    intent: str | None
    confidence: float = Field(ge=0, le=1)
    queue: str | None
    entities: dict[str, Any] = Field(default_factory=dict)
    alternatives: list[Alternative] = Field(default_factory=list)
    needs_confirmation: bool = False
    # Mentions of a unit, office town or body that match nothing in the directory well enough:
    # [{"kind": "unit", "text": "agencia tributaria", "known_as": ..., "advice": ...}]. See `Router.entities`.
    unknown_entities: list[dict[str, Any]] = Field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """The documented output object (CLI): text, intent, confidence, queue, entities, alternatives, and
        unknown_entities when there are some (left out otherwise so that the documented shape holds)."""
        out = {
            "text": self.text,
            "intent": self.intent,
            "confidence": self.confidence,
            "queue": self.queue,
            "entities": self.entities,
            "alternatives": [a.model_dump() for a in self.alternatives],
        }
        if self.unknown_entities:
            out["unknown_entities"] = self.unknown_entities
        return out


@dataclass(frozen=True, slots=True)
class _Keyword:
    intent: int
    weight: float
    keys: tuple[tuple[str, bool], ...]  # (phonetic stem, is_prefix) per word


class _Vocabulary:
    """Keys (phonetic stems) of every configured word, reachable from a caller's word.

    A caller's word reaches a key by its stem, by the sound of the whole word, by a prefix
    keyword ("reclam*"), or by a fuzzy match (longer words only: short ones collide).
    """

    def __init__(self) -> None:
        self.by_sound: dict[str, str] = {}
        self.by_word: dict[str, str] = {}
        self.keys: set[str] = set()
        self.prefixes: set[str] = set()
        self._choices: list[str] = []
        self._sounds: dict[str, str] = {}
        self._sound_choices: list[str] = []
        self._cache: dict[tuple[str, bool], frozenset[str]] = {}

    @staticmethod
    def key_of(token: str) -> str:
        return phonetic(stem(canonical(token)))

    def add(self, token: str, prefix: bool = False) -> str:
        if prefix:
            key = phonetic(canonical(token))
            self.prefixes.add(key)
            return key
        key = self.key_of(token)
        self.by_sound.setdefault(phonetic(canonical(token)), key)
        self.by_word.setdefault(canonical(token), key)
        self.keys.add(key)
        return key

    def freeze(self) -> None:
        self._choices = [w for w in self.by_word if len(w) >= 4 and not w.isdigit()]
        self._sounds = {phonetic(w): w for w in self._choices}
        self._sound_choices = list(self._sounds)

    def resolve(self, token: str, slips: bool = True) -> frozenset[str]:
        """The keys `token` reaches; `slips`: also by a typing or hearing slip (not for a known name: the town
        "Placencia" is no slip for "licencia")."""
        hit = self._cache.get((token, slips))
        if hit is not None:
            return hit
        found: set[str] = set()
        key = self.key_of(token)
        if key in self.keys:
            found.add(key)
        sound = phonetic(canonical(token))
        if sound in self.by_sound:
            found.add(self.by_sound[sound])
        for p in self.prefixes:
            if sound.startswith(p):
                found.add(p)
        if not found and slips:
            for word in typo_matches(canonical(token), self._choices):
                found.add(self.by_word[word])
        if not found and slips and canonical(token) not in lexicon():
            # A slip of the ear: the recogniser wrote a sound it half heard ("creja" for "queja"); compared by
            # sound, the first sound must agree as for typing slips.
            for near in typo_matches(sound, self._sound_choices):
                found.add(self.by_word[self._sounds[near]])
        result = frozenset(found)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[(token, slips)] = result
        return result


class Router:
    """Compiled from a RoutingConfig (and the knowledge base for entities); immutable, thread-safe reads."""

    def __init__(self, config: RoutingConfig, knowledge: KnowledgeConfig | None = None) -> None:
        self.config = config
        self.intents = [i.id for i in config.intents]
        self.queues = [i.queue for i in config.intents]  # where a person takes over, self-service or not
        self.threshold = config.threshold
        self.margin = config.confirm_margin
        self.voice_floor = config.voice_confirm_floor
        self.extra_phrases = rewrites(config.synonyms)
        lexicon()  # load the word list now, not on the first call
        self.vocab = _Vocabulary()
        self.keywords: list[_Keyword] = []
        for idx, intent in enumerate(config.intents):
            for text, weight in intent.keywords.items():
                keys = self._keyword_keys(text)
                if keys:
                    self.keywords.append(_Keyword(idx, min(max(weight, -0.99), 0.99), keys))
        # Words of unrelated requests inhibit every intent.
        for text, weight in config.unrelated.items():
            keys = self._keyword_keys(text)
            if keys:
                self.keywords.extend(_Keyword(idx, -min(weight, 0.99), keys) for idx in range(len(self.intents)))
        # Only keywords whose first word is in an utterance are checked further.
        self.by_first: dict[str, list[_Keyword]] = {}
        for kw in self.keywords:
            self.by_first.setdefault(kw.keys[0][0], []).append(kw)
        # Phrases: content keys, sorted by intent so per-intent maxima are one reduceat.
        choices: list[str] = []
        starts: list[int] = []
        owners: list[int] = []
        for idx, intent in enumerate(config.intents):
            phrases = [self._phrase_string(p, learn=True) for p in intent.phrases]
            phrases = [p for p in phrases if p]
            if phrases:
                starts.append(len(choices))
                owners.append(idx)
                choices.extend(phrases)
        self.vocab.freeze()
        self.phrase_choices = choices
        self.phrase_starts = np.array(starts, dtype=np.intp)
        self.phrase_owners = np.array(owners, dtype=np.intp)
        knowledge = knowledge or KnowledgeConfig()
        self.towns = TownIndex(knowledge.offices)
        self.units = UnitIndex(knowledge.directory, knowledge)
        self.procedures = ProcedureIndex(knowledge.procedures)
        index = {name: i for i, name in enumerate(self.intents)}
        self.entity_weights = {
            entity: [(index[intent], w) for intent, w in weights.items() if intent in index]
            for entity, weights in config.entity_weights.items()
        }
        self.menus = {m: dict(keys) for m, keys in config.dtmf_menus.items()}

    # ---- compile -------------------------------------------------------------------------

    def _analyze(self, text: str) -> Normalized:
        return analyze(text, self.extra_phrases)

    def _keyword_keys(self, text: str) -> tuple[tuple[str, bool], ...]:
        prefix_last = text.strip().endswith("*")
        norm = self._analyze(text.replace("*", " "))
        tokens = list(norm.tokens)
        # Glue between two words is optional ("tasa de la itv"); at either end it is meant ("en persona").
        inner = [i for i, t in enumerate(tokens) if t not in GLUE]
        if len(inner) >= 2:
            middle = [t for t in tokens[inner[0] : inner[-1] + 1] if t not in GLUE]
            tokens = tokens[: inner[0]] + middle + tokens[inner[-1] + 1 :]
        out = []
        for i, token in enumerate(tokens):
            is_prefix = prefix_last and i == len(tokens) - 1
            out.append((self.vocab.add(token, prefix=is_prefix), is_prefix))
        return tuple(out)

    def _phrase_string(self, text: str, learn: bool = False) -> str:
        return self._phrase_query(self._analyze(text).tokens, learn)

    def _phrase_query(self, tokens: tuple[str, ...], learn: bool = False) -> str:
        keys = []
        for token in tokens:
            if token in STOPWORDS:
                continue
            if learn:
                keys.append(self.vocab.add(token))
            else:
                found = self.vocab.resolve(token, slips=not self.towns.knows(token))
                keys.append(min(found) if found else self.vocab.key_of(token))
        return " ".join(keys)

    # ---- route ---------------------------------------------------------------------------

    def _keyword_scores(self, norm: Normalized, entities: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-intent keyword evidence, per-intent inhibition factor, and the share of content words known."""
        tokens = [*norm.tokens, *norm.spelled]
        positions = [self.vocab.resolve(t, slips=not self.towns.knows(t)) for t in tokens]
        # A word split by the recogniser ("es pediente", "mies pacio"): the pair joined, when it is known.
        halves: set[int] = set()
        for i in range(len(norm.tokens) - 1):
            if not positions[i] or not positions[i + 1]:
                joined = self.vocab.resolve(norm.tokens[i] + norm.tokens[i + 1])
                if joined:
                    tokens.append(norm.tokens[i] + norm.tokens[i + 1])
                    positions.append(joined)
                    halves.update((i, i + 1))
        content = [i for i, t in enumerate(norm.tokens) if t not in STOPWORDS]
        known_words = sum(1 for i in content if positions[i] or i in halves or self._names_know(tokens[i]))
        known = known_words / len(content) if content else 0.0
        miss = [1.0] * len(self.intents)
        damp = [1.0] * len(self.intents)
        where = _where(positions)
        for first in where:
            for kw in self.by_first.get(first, ()):
                if len(kw.keys) > 1 and not _matches(kw.keys, where):
                    continue
                if kw.weight > 0:
                    miss[kw.intent] *= 1.0 - kw.weight
                else:
                    damp[kw.intent] *= 1.0 + kw.weight
        for entity, weights in self.entity_weights.items():
            if entity in entities:
                for idx, w in weights:
                    if w > 0:
                        miss[idx] *= 1.0 - w
                    else:
                        damp[idx] *= 1.0 + w
        return 1.0 - np.array(miss), np.array(damp), known

    def _names_know(self, token: str) -> bool:
        """Is the word part of a town, unit or procedure name (so not an unknown word)?"""
        return bool(self.units.knows(token) or self.procedures.words.resolve(token) or self.towns.knows(token))

    def _phrase_scores(self, norm: Normalized) -> np.ndarray:
        out = np.zeros(len(self.intents))
        if not self.phrase_choices or not norm.content:
            return out
        query = self._phrase_query(norm.tokens)
        if not query:
            return out
        row = process.cdist([query], self.phrase_choices, scorer=fuzz.token_sort_ratio, score_cutoff=PHRASE_FLOOR,
                            dtype=np.float32, workers=1)[0]
        best = np.maximum.reduceat(row, self.phrase_starts)
        out[self.phrase_owners] = np.clip((best - PHRASE_FLOOR) / (100.0 - PHRASE_FLOOR), 0.0, 1.0) * PHRASE_MAX
        return out

    def scores(self, text: str) -> tuple[Normalized, np.ndarray, dict[str, Any]]:
        """Normalised utterance, per-intent confidence (order of `self.intents`) and entities."""
        norm, combined, entities, _unknown = self._scores(text)
        return norm, combined, entities

    def _scores(self, text: str) -> tuple[Normalized, np.ndarray, dict[str, Any], list[dict[str, Any]]]:
        norm = self._analyze(text)
        if not norm.tokens:
            return norm, np.zeros(len(self.intents)), {}, []
        entities, unknown = self._entities(norm, text)
        evidence = dict(entities)
        for item in unknown:
            # An unknown body still says what the caller asked for ("el teléfono de la DGT" wants a phone).
            evidence.setdefault(f"unknown_{item['kind']}", item["text"])
        # A doubtful unit still says "directory", unless it is only a fragment of a long name.
        if "unit_candidate" in entities and entities["unit_candidate"]["coverage"] >= self.units.MIN_COVERAGE:
            evidence.setdefault("unit", entities["unit_candidate"]["unit"])
        kw, damp, known = self._keyword_scores(norm, evidence)
        ph = self._phrase_scores(norm)
        if len(norm.content) <= 2:
            ph *= 0.7  # two words or fewer: string similarity says little on its own
        combined = (1.0 - (1.0 - kw) * (1.0 - ph)) * damp
        # Mostly unknown words: whatever matched is likely incidental ("coche" in "comprar un coche").
        combined *= 0.7 + 0.3 * known
        return norm, combined, entities, unknown

    def route(self, text: str, channel: str = "voice") -> RouteResult:
        """Intent, confidence, queue, entities and alternatives for one utterance. Never raises on a str.

        The same normalisation covers recognition and typing errors. On `channel` "voice" a clear best
        guess under the threshold (from `voice_confirm_floor`) comes back with `needs_confirmation`:
        the IVR asks "¿Quiere ...?" rather than "no le he entendido" (speech-to-text errors lower
        scores; measured on the generated audio test set, `atiende.testset`).
        """
        if not isinstance(text, str):
            raise TypeError("text must be a string")
        norm, scores, entities, unknown = self._scores(text)
        menu_intent = self._spoken_key(norm)
        order = np.argsort(-scores, kind="stable")
        ranked = [(self.intents[i], float(scores[i])) for i in order if scores[i] >= MIN_ALTERNATIVE]
        if menu_intent is not None:
            ranked = [(menu_intent, 0.9), *[r for r in ranked if r[0] != menu_intent]]
        top_intent, top = ranked[0] if ranked else (None, 0.0)
        second = ranked[1][1] if len(ranked) > 1 else 0.0
        intent = top_intent if top >= self.threshold else None
        guessed = (intent is None and top_intent is not None and channel == "voice" and top >= self.voice_floor
                   and top - second >= self.margin and self._has_keyword(norm, entities, top_intent))
        if guessed:
            intent = top_intent
        # For an out-of-scope answer the confidence is how sure the router is that nothing fits.
        confidence = round(top if intent else 1.0 - top, 4)
        queue = self.queues[self.intents.index(intent)] if intent is not None else None
        close = top - second < self.margin or top < self.threshold + self.margin
        needs_confirmation = intent is not None and (guessed or close)
        rest = ranked[1:] if intent else ranked
        alternatives = [Alternative(intent=i, confidence=round(c, 4)) for i, c in rest[:MAX_ALTERNATIVES]]
        return RouteResult(
            text=text,
            intent=intent,
            confidence=confidence,
            queue=queue,
            entities=entities,
            alternatives=alternatives,
            needs_confirmation=needs_confirmation,
            unknown_entities=unknown,
        )

    def _has_keyword(self, norm: Normalized, entities: dict[str, Any], intent: str) -> bool:
        """A guess needs one of the intent's words: phrase similarity alone is too loose on a short
        utterance ("me llamo Juan" looks like "¿a qué hora puedo llamar?")."""
        kw, _damp, _known = self._keyword_scores(norm, entities)
        return bool(kw[self.intents.index(intent)] > 0)

    def _spoken_key(self, norm: Normalized) -> str | None:
        """"uno", "la opción 2", "0": a keypad option said or typed, read from the main menu."""
        words = [t for t in norm.tokens if t not in _MENU_WORDS and t not in ("la", "el", "de")]
        if len(words) == 1 and len(words[0]) == 1 and words[0].isdigit():
            return self.dtmf("main", words[0])
        return None

    def entities(self, norm: Normalized, raw: str) -> dict[str, Any]:
        """Entities found surely (town, office_id, unit, dir3_code, procedure, reference) and doubtful ones
        to confirm (unit_candidate); see `_entities` for the unknown ones."""
        return self._entities(norm, raw)[0]

    def _entities(self, norm: Normalized, raw: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(entities, unknown entities).

        - "unit", "dir3_code": a unit named surely: its phone may be given.
        - "unit_candidate": {"unit", "dir3_code", "heard", "needs_confirmation": True, "question"}: a plausible
          but weak match (an acronym with a slip, half a name). Ask `question` before giving any number.
        - unknown entities: {"kind": "unit"|"town", "text": what was heard, "known_as": the outside body's name
          or None, "level", "advice": what to tell the caller, and for a State acronym that resembles a
          directory one, "suggestion": {"unit", "dir3_code", "question"}}.
        """
        out: dict[str, Any] = {}
        unknown: list[dict[str, Any]] = []
        if not norm.tokens:
            return out, unknown
        match = self.units.match(norm)
        inside = range(match.span[0], match.span[1]) if match is not None and match.status == "unknown" else range(0)
        office = self.towns.find(norm)
        # A town inside the name of a body that is not ours ("el registro civil de badajoz") is not an office request.
        if office is not None and not self._town_within(norm, office.town, inside):
            out["town"] = office.town
            out["office_id"] = office.office_id
        if match is not None:
            if match.status == "found" and match.unit is not None:
                out["unit"] = match.unit.name
                out["dir3_code"] = match.unit.dir3_code
            elif match.status == "confirm" and match.unit is not None:
                out["unit_candidate"] = {"unit": match.unit.name, "dir3_code": match.unit.dir3_code,
                                         "heard": match.heard, "needs_confirmation": True,
                                         "question": unit_question(match.unit), "coverage": round(match.coverage, 3)}
            elif match.status == "unknown":
                unknown.append(self._unknown_unit(match))
        if office is None:
            town = self._unknown_town(norm, inside)
            if town:
                unknown.append({"kind": "town", "text": town, "known_as": None, "level": "",
                                "advice": _TOWN_ADVICE})
        procedure = self.procedures.find(norm)
        if procedure is not None:
            out["procedure"] = procedure.procedure_id
        # References hold digits, typed or said (numbers are digits in `tokens` by now).
        ref = extract_reference(raw) if any(c.isdigit() for t in norm.tokens for c in t) else None
        if ref is not None:
            out["reference"] = ref
        return out, unknown

    def _unknown_unit(self, match: UnitMatch) -> dict[str, Any]:
        body = match.body
        item: dict[str, Any] = {"kind": "unit", "text": match.heard, "known_as": body.name if body else None,
                                "level": body.level if body else "",
                                "advice": (body.advice if body and body.advice
                                           else self.units.advice if match.outside else _UNIT_ADVICE)}
        if match.unit is not None:
            item["suggestion"] = {"unit": match.unit.name, "dir3_code": match.unit.dir3_code,
                                  "question": unit_question(match.unit)}
        return item

    @staticmethod
    def _town_within(norm: Normalized, town: str, span: range) -> bool:
        first = fold(town).split()[0] if fold(town) else ""
        return any(norm.tokens[i] == first or phonetic(norm.tokens[i]) == phonetic(first) for i in span)

    def _unknown_town(self, norm: Normalized, skip: range) -> str | None:
        """"la oficina de guareña": a place after "oficina(s) de/en" that no office is in, and no unit either."""
        tokens = norm.tokens
        for i, token in enumerate(tokens):
            if token not in ("oficina", "oficinas") or i in skip:
                continue
            j = i + 1
            while j < len(tokens) and j <= i + 4 and tokens[j] not in ("en", "de", "del"):
                j += 1
            if j >= len(tokens) or tokens[j] not in ("en", "de", "del"):
                continue
            words: list[str] = []
            for t in tokens[j + 1 : j + 4]:
                if t in _NAME_GLUE_TOWN and words:
                    words.append(t)
                    continue
                if t in STOPWORDS or t.isdigit() or self.vocab.resolve(t) or self._names_know(t) or len(t) < 3:
                    break
                words.append(t)
            while words and words[-1] in _NAME_GLUE_TOWN:
                words.pop()
            if words:
                return " ".join(words)
        return None

    # ---- keypad and hints ----------------------------------------------------------------

    def dtmf(self, menu: str, key: str) -> str | None:
        """The intent a key of a DTMF menu stands for, or None (unknown menu or key)."""
        return self.menus.get(menu, {}).get(key.strip())

    def confirm_question(self, intent: str) -> str:
        """The Spanish question to confirm an intent ("¿Quiere pagar la tasa de la ITV?")."""
        for i in self.config.intents:
            if i.id == intent:
                return i.confirm or f"¿Se refiere a {i.description or i.id}?"
        return ""

    def hints(self) -> list[str]:
        """Words and phrases to bias a recogniser towards, most useful first (a grammar may keep only the head).

        Strong keywords first, spelled as in the phrases and names (with accents) where they appear
        there; then towns, unit aliases, yes/no and digits.
        """
        spelling: dict[str, str] = {}
        texts = [p for i in self.config.intents for p in (*i.phrases, i.confirm, i.description)]
        texts += [o.town for o in self.towns.offices] + [n for u in self.units.units for n in (u.name, *u.aliases)]
        for text in texts:
            for word in text.lower().split():
                word = word.strip("¿?¡!.,;:()\"'")
                # Accents where a text has them; question words stay plain (keywords use them as relatives).
                if word and word != fold(word) and fold(word) not in _PLAIN:
                    spelling[fold(word)] = word
        seen: dict[str, None] = {}
        ranked = sorted((w, kw) for i in self.config.intents for kw, w in i.keywords.items() if w > 0)
        for _w, kw in reversed(ranked):
            words = [_DIGIT_WORDS.get(x, x) for x in fold(kw.replace("*", " ")).split()]
            seen.setdefault(" ".join(spelling.get(x, x) for x in words), None)
        for office in self.towns.offices:
            seen.setdefault(office.town.lower(), None)
        for unit in self.units.units:
            for alias in unit.aliases:
                seen.setdefault(alias.lower(), None)
        seen.update(dict.fromkeys(["sí", "no", "cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho",
                                   "nueve"]))
        return [h for h in seen if h]


_NAME_GLUE_TOWN = frozenset("de del la las los el".split())
_UNIT_ADVICE = "No encuentro esa unidad en el directorio de la Junta."
_TOWN_ADVICE = "No hay una oficina de asistencia en esa localidad."


def unit_question(unit: Unit) -> str:
    """"¿Se refiere al SEXPE, el Servicio Extremeño Público de Empleo?": to confirm a doubtful unit."""
    acronym = next((a for a in unit.aliases if a.isupper() and " " not in a.strip()), "")
    article = _article(unit.name)
    contracted = {"el": "al", "la": "a la", "los": "a los", "las": "a las"}[article]
    if acronym:
        return f"¿Se refiere {contracted} {acronym}, {article} {unit.name}?"
    return f"¿Se refiere {contracted} {unit.name}?"


def _article(name: str) -> str:
    first = fold(name).split()[0] if fold(name) else ""
    feminine = first.endswith(("a", "ion", "dad", "tud")) and first not in ("sistema", "programa")
    return "la" if feminine else "el"


def _where(positions: list[frozenset[str]]) -> dict[str, list[int]]:
    """Key -> the positions (ascending) of the words that reach it."""
    where: dict[str, list[int]] = {}
    for i, found in enumerate(positions):
        for key in found:
            where.setdefault(key, []).append(i)
    return where


def _matches(keys: tuple[tuple[str, bool], ...], where: dict[str, list[int]]) -> bool:
    """Do the keyword's words occur in order, each within MAX_GAP words of the previous one?"""
    starts = where.get(keys[0][0])
    if not starts or len(keys) == 1:
        return bool(starts)
    rest = [where.get(key) for key, _ in keys[1:]]
    if any(r is None for r in rest):
        return False
    for start in starts:
        at = start
        for spots in rest:
            assert spots is not None
            nxt = next((j for j in spots if at < j <= at + 1 + MAX_GAP), None)
            if nxt is None:
                break
            at = nxt
        else:
            return True
    return False


def explain(router: Router, text: str) -> dict[str, Any]:
    """What matched, per intent: keywords (with weights) and the best phrase score. For admins tuning."""
    norm = router._analyze(text)
    tokens = [*norm.tokens, *norm.spelled]
    positions = [router.vocab.resolve(t, slips=not router.towns.knows(t)) for t in tokens]
    out: dict[str, Any] = {"normalized": norm.text, "content": list(norm.content), "intents": {}}
    ph = router._phrase_scores(norm)
    for idx, intent in enumerate(router.intents):
        hits = []
        for kw in router.keywords:
            if kw.intent == idx and _matches(kw.keys, _where(positions)):
                hits.append({"keys": " ".join(k for k, _ in kw.keys), "weight": kw.weight})
        if hits or ph[idx] > 0:
            out["intents"][intent] = {"keywords": hits, "phrase": round(float(ph[idx]), 3)}
    return out


def evaluate(router: Router, rows: list[tuple[str, str]], channel: str = "chat") -> dict[str, Any]:
    """Scores on labelled utterances ("none" = out of scope): overall, per intent and a confusion matrix.

    Per intent: how many lines expect it (`n`), how many got it (`right`), recall, and precision over
    the lines routed to it. `confusion[expected][got]` counts every answer, right ones included.
    """
    labels = [*router.intents, "none"]
    confusion: dict[str, dict[str, int]] = {a: dict.fromkeys(labels, 0) for a in labels}
    misses = []
    for text, expected in rows:
        got = router.route(text, channel).intent or "none"
        confusion.setdefault(expected, dict.fromkeys(labels, 0))
        confusion[expected][got] = confusion[expected].get(got, 0) + 1
        if got != expected:
            misses.append({"text": text, "expected": expected, "got": got})
    per_intent = {}
    for label, row in confusion.items():
        n = sum(row.values())
        routed = sum(r.get(label, 0) for r in confusion.values())
        if n or routed:
            per_intent[label] = {"n": n, "right": row.get(label, 0),
                                 "recall": round(row.get(label, 0) / n, 4) if n else None,
                                 "precision": round(row.get(label, 0) / routed, 4) if routed else None}
    in_rows = [e for _, e in rows if e != "none"]
    right_in = sum(confusion[e][e] for e in set(in_rows))
    n_none = len(rows) - len(in_rows)
    return {"in_scope": len(in_rows), "in_scope_right": right_in,
            "in_scope_accuracy": round(right_in / len(in_rows), 4) if in_rows else None,
            "none": n_none, "none_rejected": confusion["none"]["none"],
            "none_accuracy": round(confusion["none"]["none"] / n_none, 4) if n_none else None,
            "per_intent": per_intent, "confusion": {k: {g: c for g, c in v.items() if c} for k, v in confusion.items()
                                                    if any(v.values())},
            "misses": misses}


def format_evaluation(report: dict[str, Any]) -> str:
    """A plain-text table of `evaluate`'s report: per intent recall and precision, then the confusion matrix."""
    labels = list(report["per_intent"])
    short = {label: "".join(p[:3] for p in label.split("_"))[:6] for label in labels}
    lines = [f"{'intent':<18} {'n':>4} {'right':>5} {'recall':>7} {'prec.':>7}"]
    for label, row in report["per_intent"].items():
        recall = "-" if row["recall"] is None else f"{row['recall']:.1%}"
        precision = "-" if row["precision"] is None else f"{row['precision']:.1%}"
        lines.append(f"{label:<18} {row['n']:>4} {row['right']:>5} {recall:>7} {precision:>7}")
    lines.append("")
    lines.append("confusion (rows: expected, columns: got)")
    lines.append(f"{'':<18}" + "".join(f"{short[g]:>7}" for g in labels))
    for expected in labels:
        counts = report["confusion"].get(expected, {})
        if not counts:
            continue
        lines.append(f"{expected:<18}" + "".join(f"{counts.get(g, 0) or '.':>7}" for g in labels))
    return "\n".join(lines)
