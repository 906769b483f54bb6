"""`runtime.router`: the compiled Router for the current routing config, and its admin edits.

The `routing` config section (intents, keywords, thresholds, DTMF menus) is one versioned
document (`core.versioned`): version 0 is the files, each admin change a new version, and a
rollback stores a copy of an old one. The router is recompiled (off the event loop) when the
current version changes, so an edit is live on every node within a second, without restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from config.knowledge import KnowledgeConfig
from config.routing import RoutingConfig, queue_problems
from core.errors import InvalidInput
from core.versioned import VersionedSection, VersionInfo
from routing.normalize import analyze
from routing.router import Router, RouteResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from config.models import Settings
    from core.clock import Clock
    from core.store import Store

SECTION = "routing"
MAX_TEXT = 10_000  # longer input is refused by the API; the router itself cuts at normalize.MAX_CHARS
# The labelled utterances an admin's routing edit is checked against before it is saved. It ships with the
# package (a copy of a held-out set, never the tuning set), so a deployment needs nothing outside it.
DEV_SET = Path(__file__).resolve().parent.parent / "config" / "defaults" / "routing_check.tsv"
NONE = "none"  # the dev set's label for an out-of-scope utterance


@dataclass(frozen=True, slots=True)
class DevSample:
    text: str
    intent: str | None  # None: out of scope, the router must not pick an intent


def load_dev_set(path: Path = DEV_SET) -> list[DevSample]:
    """`utterance<TAB>intent` lines ("none" = out of scope); lines starting with # are comments."""
    out: list[DevSample] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        text, _, intent = line.partition("\t")
        intent = intent.strip()
        out.append(DevSample(text.strip(), None if intent in ("", NONE) else intent))
    return out


def score_dev_set(router: Router, samples: list[DevSample]) -> list[str | None]:
    """The intent the router gives each sample (chat channel: the dev set is text). Blocking."""
    return [router.route(s.text, "chat").intent for s in samples]


def explain_words(router: Router, text: str) -> dict[str, Any]:
    """`routing.router.explain` with each matched keyword also as the admin wrote it ("itv", not its phonetic
    stem "itb"), and unrelated-request words marked as such. Blocking."""
    from routing.router import explain

    written: dict[tuple[str, str], str] = {}
    for intent in router.config.intents:
        for kw in intent.keywords:
            written[(intent.id, " ".join(k for k, _ in router._keyword_keys(kw)))] = kw
    unrelated = {" ".join(k for k, _ in router._keyword_keys(w)): w for w in router.config.unrelated}
    out = explain(router, text)
    for intent, why in out["intents"].items():
        for hit in why["keywords"]:
            word = written.get((intent, hit["keys"]))
            hit["word"] = word if word is not None else unrelated.get(hit["keys"], hit["keys"])
            hit["unrelated"] = word is None and hit["keys"] in unrelated
    return out


def compare(samples: list[DevSample], before: list[str | None], after: list[str | None]) -> dict[str, Any]:
    """Accuracy before and after a change, and every sample whose answer changed (won, lost or just moved)."""
    right_before = sum(1 for s, got in zip(samples, before, strict=True) if got == s.intent)
    right_after = sum(1 for s, got in zip(samples, after, strict=True) if got == s.intent)
    changed = [{"text": s.text, "expected": s.intent, "before": b, "after": a,
                "effect": "won" if a == s.intent else "lost" if b == s.intent else "moved"}
               for s, b, a in zip(samples, before, after, strict=True) if a != b]
    n = len(samples) or 1
    return {"samples": len(samples), "right_before": right_before, "right_after": right_after,
            "accuracy_before": round(right_before / n, 4), "accuracy_after": round(right_after / n, 4),
            "worse": right_after < right_before, "changed": changed}


def check_routing(cfg: RoutingConfig) -> None:
    """Checks beyond the model: every keyword and phrase must keep some words after normalisation."""
    problems = []
    for intent in cfg.intents:
        for kw in intent.keywords:
            if not analyze(kw.replace("*", " ")).tokens:
                problems.append(f"{intent.id}: keyword {kw!r} is only filler words or punctuation")
        for phrase in intent.phrases:
            if not analyze(phrase).tokens:
                problems.append(f"{intent.id}: phrase {phrase!r} is only filler words or punctuation")
    if problems:
        raise ValueError("; ".join(problems))


class RouterService:
    def __init__(self, settings: Callable[[], Settings], store: Store | None, clock: Clock) -> None:
        """`settings` reads the files' configuration as it is now; without a store only `get_offline` works."""
        self._settings = settings
        self._store = store
        self._clock = clock
        self._section: VersionedSection[RoutingConfig] | None = None
        # (config object, knowledge object) it was compiled from -> router; new objects mean recompile.
        self._compiled: tuple[RoutingConfig, KnowledgeConfig, Router] | None = None
        self._offline: tuple[RoutingConfig, KnowledgeConfig, Router] | None = None

    def invalidate(self) -> None:
        """The files changed: the next query re-reads the current version."""
        if self._section is not None:
            self._section.invalidate()

    @property
    def section(self) -> VersionedSection[RoutingConfig]:
        if self._section is None:
            if self._store is None:
                raise RuntimeError("this command runs without a store")
            self._section = VersionedSection(self._store, self._clock, SECTION, RoutingConfig,
                                             lambda: self._settings().routing, check=check_routing)
        return self._section

    @property
    def knowledge(self) -> KnowledgeConfig:
        return self._settings().knowledge

    async def get(self) -> Router:
        """The router for the current version (admin edits in Redis, else the config files)."""
        _, cfg = await self.section.current()
        knowledge = self.knowledge
        hit = self._compiled
        if hit is not None and hit[0] is cfg and hit[1] is knowledge:
            return hit[2]
        router = await anyio.to_thread.run_sync(Router, cfg, knowledge)
        self._compiled = (cfg, knowledge, router)
        return router

    def get_offline(self) -> Router:
        """From the config files only (CLI commands that run without Redis)."""
        cfg, knowledge = self._settings().routing, self.knowledge
        hit = self._offline
        if hit is not None and hit[0] is cfg and hit[1] is knowledge:
            return hit[2]
        router = Router(cfg, knowledge)
        self._offline = (cfg, knowledge, router)
        return router

    async def route(self, text: str, channel: str = "voice") -> RouteResult:
        if len(text) > MAX_TEXT:
            raise InvalidInput(f"text is longer than {MAX_TEXT} characters", [{"loc": "text", "reason": "too long"}])
        router = await self.get()
        return router.route(text, channel)

    # ---- admin ---------------------------------------------------------------------------

    async def config(self) -> tuple[int, RoutingConfig]:
        return await self.section.current()

    def queues(self) -> frozenset[str]:
        """The desk's queues: the only places an intent may hand a contact over to."""
        return frozenset(q.id for q in self._settings().desk.queues)

    def refuse_unknown_queues(self, cfg: RoutingConfig) -> None:
        """422 `unknown-queue` when an intent hands over to a queue the desk does not have: a version naming one
        would put callers in a queue no agent works."""
        problems = queue_problems(cfg, self.queues())
        if problems:
            text = "; ".join(p["reason"] for p in problems)
            raise InvalidInput(text[:1].upper() + text[1:], problems, error_id="unknown-queue")

    async def compile_draft(self, data: Any) -> tuple[RoutingConfig, Router]:
        """Validate (422 with reasons: the model, the checks, the desk's queues) and compile a document that is not
        saved: drafts, checks, the simulator."""
        value = await anyio.to_thread.run_sync(self.section.validate, data)
        self.refuse_unknown_queues(value)
        return value, await anyio.to_thread.run_sync(Router, value, self.knowledge)

    async def put(self, data: Any, actor: str, note: str = "", base: int | None = None) -> int:
        """Checked as `compile_draft` (it compiles before it is live) and stored as the new current version; with
        `base`, only if that version is still current (409 stale-version otherwise)."""
        value, _ = await self.compile_draft(data)
        return await self.section.put(value, actor, note, base=base)

    async def check_change(self, draft: Router, samples: list[DevSample] | None = None) -> dict[str, Any]:
        """The dev set scored by the router in force and by `draft`: accuracy before/after and what moved."""
        data = samples if samples is not None else await anyio.to_thread.run_sync(load_dev_set)
        current = await self.get()
        before = await anyio.to_thread.run_sync(score_dev_set, current, data)
        after = await anyio.to_thread.run_sync(score_dev_set, draft, data)
        return compare(data, before, after)

    async def versions(self) -> list[VersionInfo]:
        return await self.section.versions()

    async def version(self, version: int) -> RoutingConfig:
        return await self.section.get(version)

    async def rollback(self, version: int, actor: str, base: int | None = None) -> int:
        """A copy of an older version made current again: 422 when it hands over to a queue the desk no longer
        has; with `base`, only if that version is still current."""
        return await self.section.rollback(version, actor, base=base, check=self.refuse_unknown_queues)
