"""Intents, keywords and recognition thresholds for the router (voice and text)."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Literal

from pydantic import Field, field_validator, model_validator

from config.base import Strict

_ID = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
_DTMF_KEY = re.compile(r"^[0-9*#]$")
# What one intent may hold: the reference scenario's largest has 6 phrases and 86 keywords. An intent is compiled
# on every edit and scored on every utterance, so a pasted list of thousands would slow both for nothing.
MAX_PHRASES = 500
MAX_PHRASE_CHARS = 300
MAX_KEYWORDS = 500
MAX_KEYWORD_CHARS = 80


class Intent(Strict):
    id: str
    description: str = ""
    confirm: str = Field("", description="question used to confirm, e.g. '¿Quiere pagar la tasa de la ITV?'")
    target: Literal["self_service", "queue"] = "queue"
    queue: str = "N1"
    phrases: list[str] = Field(default_factory=list)
    keywords: dict[str, float] = Field(
        default_factory=dict,
        description="word or words (in order; a final '*' makes the last one a prefix) -> weight in (0, 1); "
        "a negative weight in (-1, 0) inhibits: the intent's keyword evidence is multiplied by (1 + weight)",
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v) or v == "none":
            raise ValueError("intent id must be lowercase letters, digits and '_', 2-40 long, and not 'none'")
        return v

    @field_validator("phrases")
    @classmethod
    def _phrases(cls, v: list[str]) -> list[str]:
        if len(v) > MAX_PHRASES:
            raise ValueError(f"una intención admite como mucho {MAX_PHRASES} frases de ejemplo (tiene {len(v)})")
        long = [p[:40] for p in v if len(p) > MAX_PHRASE_CHARS]
        if long:
            raise ValueError(f"una frase de ejemplo no puede pasar de {MAX_PHRASE_CHARS} caracteres: «{long[0]}…»")
        return v

    @field_validator("keywords")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if len(v) > MAX_KEYWORDS:
            raise ValueError(f"una intención admite como mucho {MAX_KEYWORDS} palabras clave (tiene {len(v)})")
        long = [k[:40] for k in v if len(k) > MAX_KEYWORD_CHARS]
        if long:
            raise ValueError(f"una palabra clave no puede pasar de {MAX_KEYWORD_CHARS} caracteres: «{long[0]}…»")
        bad = [k for k, w in v.items() if not -1 < w < 1 or w == 0]
        if bad:
            raise ValueError(f"keyword weights must be in (0, 1), or in (-1, 0) for inhibitors: {', '.join(bad)}")
        empty = [k for k in v if not k.replace("*", "").strip()]
        if empty:
            raise ValueError("empty keyword")
        return v

    @model_validator(mode="after")
    def _has_evidence(self) -> Intent:
        if not self.phrases and not self.keywords:
            raise ValueError(f"intent {self.id!r} needs at least one phrase or keyword")
        return self


class RoutingConfig(Strict):
    threshold: float = Field(0.5, ge=0, le=1)
    confirm_margin: float = Field(0.1, ge=0, le=1)
    voice_confirm_floor: float = Field(
        0.3, ge=0, le=1,
        description="on the voice channel, a best guess scoring from this floor up to the threshold, ahead of the "
        "second by confirm_margin, is offered for confirmation instead of rejected: recognition errors lower scores, "
        "and a caller answers 'sí' or 'no' faster than repeating the request (1 = off)",
    )
    intents: list[Intent] = Field(default_factory=list)
    dtmf_menus: dict[str, dict[str, str]] = Field(default_factory=dict)
    entity_weights: dict[
        Literal["town", "unit", "procedure", "reference", "unknown_unit", "unknown_town"], dict[str, float]
    ] = Field(
        default_factory=dict,
        description="an entity found in the utterance counts as a keyword of these intents; unknown_unit and "
        "unknown_town: a body or place named that is not in the directory (it still says what the caller wants)",
    )
    unrelated: dict[str, float] = Field(
        default_factory=dict,
        description="words of unrelated requests ('peluquería', 'cine') -> weight in (0, 1): every intent's score "
        "is multiplied by (1 - weight) when the word is said",
    )
    synonyms: dict[str, str] = Field(
        default_factory=dict,
        description="extra words or phrases rewritten before matching, e.g. 'tarjeta sanitaria: tarjeta salud'",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        ids = [i.id for i in self.intents]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate intent ids: {', '.join(dupes)}")
        for entity, weights in self.entity_weights.items():
            for intent, weight in weights.items():
                if intent not in ids:
                    raise ValueError(f"entity_weights.{entity}: unknown intent {intent!r}")
                if not -1 < weight < 1 or weight == 0:
                    raise ValueError(f"entity_weights.{entity}.{intent}: weight must be in (0, 1), or (-1, 0) to inhibit")
        bad = [w for w, v in self.unrelated.items() if not 0 < v < 1]
        if bad:
            raise ValueError(f"unrelated: weights must be in (0, 1): {', '.join(bad)}")
        for menu, keys in self.dtmf_menus.items():
            for key, intent in keys.items():
                if not _DTMF_KEY.match(key):
                    raise ValueError(f"dtmf menu {menu!r}: {key!r} is not a keypad key (0-9, * or #)")
                if intent not in ids:
                    raise ValueError(f"dtmf menu {menu!r}: key {key} names unknown intent {intent!r}")
        return self


def queue_problems(cfg: RoutingConfig, queues: Collection[str]) -> list[dict[str, str]]:
    """Every intent that hands over to a queue the desk does not have ({loc, reason}, in Spanish); [] when none.
    Every intent names one (a person takes over there, self-service or not), so every one is checked."""
    known = ", ".join(sorted(queues))
    return [{"loc": f"intents.{n}.queue",
             "reason": f"la intención «{i.id}» pasa a la cola «{i.queue}», que no existe (colas: {known})"}
            for n, i in enumerate(cfg.intents) if i.queue not in queues]
