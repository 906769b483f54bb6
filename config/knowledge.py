"""Knowledge base rows, loaded from the CSV files named in knowledge.yaml."""

from __future__ import annotations

from pydantic import Field, field_validator

from config.base import Strict


def _split(v: object) -> object:
    if isinstance(v, str):
        return [p.strip() for p in v.split(";") if p.strip()]
    return v


class Office(Strict):
    office_id: str
    name: str
    town: str
    province: str
    address: str
    phone: str
    hours: str
    appointment_required: bool = False

    @field_validator("appointment_required", mode="before")
    @classmethod
    def _yesno(cls, v: object) -> object:
        if isinstance(v, str):
            low = v.strip().lower()
            if low in ("yes", "sí", "si", "true", "1"):
                return True
            if low in ("no", "false", "0", ""):
                return False
        return v


class Unit(Strict):
    dir3_code: str
    name: str
    aliases: list[str] = Field(default_factory=list)
    parent: str | None = None
    phone: str
    email: str
    address: str

    _split_aliases = field_validator("aliases", mode="before")(_split)

    @field_validator("parent", mode="before")
    @classmethod
    def _empty_none(cls, v: object) -> object:
        return v or None


class Procedure(Strict):
    procedure_id: str
    title: str
    keywords: list[str] = Field(default_factory=list)
    summary: str
    fee_eur: str = ""
    deadline: str = ""
    form: str = ""
    url: str = ""

    _split_keywords = field_validator("keywords", mode="before")(_split)

    def fees(self) -> dict[str, float]:
        """'turismo 35.00; motocicleta 20.00' -> {'turismo': 35.0, 'motocicleta': 20.0}."""
        out: dict[str, float] = {}
        for part in self.fee_eur.split(";"):
            words = part.strip().rsplit(" ", 1)
            if len(words) == 2:
                try:
                    out[words[0].strip()] = float(words[1])
                except ValueError:
                    continue
        return out


class ExternalBody(Strict):
    """A body callers ask for that is not in this administration's directory (a State agency, a town
    hall, another region's service): named so the router reports it as not ours instead of matching a
    directory unit with a similar name or acronym."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    level: str = ""  # "estatal", "local", "otra comunidad"...: for the answer, not for matching
    advice: str = ""  # what to tell the caller about this body; empty: the general advice

    _split_aliases = field_validator("aliases", mode="before")(_split)


class FileStatus(Strict):
    """A row of the sample processing-platform adapter (status of an administrative file)."""

    reference: str
    procedure: str
    status: str
    updated: str = ""


class KnowledgeConfig(Strict):
    offices: list[Office] = Field(default_factory=list)
    directory: list[Unit] = Field(default_factory=list)
    procedures: list[Procedure] = Field(default_factory=list)
    files: list[FileStatus] = Field(default_factory=list)
    not_ours: list[ExternalBody] = Field(
        default_factory=list, description="bodies outside the directory, never answered with a directory unit")
    not_ours_advice: str = Field(
        "", description="what to tell a caller who asks for a body that is not in the directory")
    not_ours_heads: list[str] = Field(
        default_factory=list,
        description="words that start the name of a body outside the directory ('ministerio', 'ayuntamiento'); "
        "ignored when a directory unit's name holds them")
    foreign_qualifiers: list[str] = Field(
        default_factory=list,
        description="words that make a similar name another administration's ('andaluz' in 'servicio andaluz de "
        "salud', 'estatal'); ignored when a directory unit's name holds them")
