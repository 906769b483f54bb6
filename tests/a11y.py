"""Accessibility checks of the pages in a real browser: axe-core (npm, `make test` installs it) against WCAG 2.1
A and AA, the level Spain's RD 1112/2018 and EN 301 549 require of public-sector sites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

AXE = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_violations(page: Any, *, exclude: list[str] | None = None) -> list[dict[str, Any]]:
    """Run axe-core in `page` (a Playwright page) and return its violations (empty: none found)."""
    if not AXE.is_file():
        raise AssertionError(f"{AXE} is missing: run `make test` (it installs axe-core with npm ci)")
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    context = {"exclude": [[sel] for sel in exclude]} if exclude else {}
    result = page.evaluate(
        "async ([context, tags]) => await axe.run(Object.keys(context).length ? context : document,"
        " {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        [context, WCAG_21_AA])
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def assert_accessible(page: Any, what: str, *, exclude: list[str] | None = None) -> None:
    violations = axe_violations(page, exclude=exclude)
    if violations:
        lines = [f"{v['id']} ({v['impact']}): {v['help']} — "
                 + "; ".join(json.dumps(n["target"]) + " " + n.get("failureSummary", "").replace("\n", " ")
                             for n in v["nodes"][:5]) for v in violations]
        raise AssertionError(f"{what}: {len(violations)} WCAG 2.1 AA violation(s):\n" + "\n".join(lines))
