"""`atiende simulate`: run the IVR flows without audio, printing every step and the outcome."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from atiende.cliutil import add_config_option, fail, offline_runtime


class _Append(argparse.Action):
    """--say and --dtmf go into one ordered list, so the script keeps the caller's order."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, option: Any = None) -> None:
        items = list(getattr(ns, "inputs", None) or [])
        items.append(("dtmf" if option == "--dtmf" else "say", str(values)))
        ns.inputs = items


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="run the IVR flows on a scripted caller (no audio) and print steps and outcome")
    add_config_option(p)
    p.add_argument("--at", metavar="ISO", help="the instant of the call (local Madrid time if no offset; default: now)")
    p.add_argument("--say", metavar="TEXT", action=_Append, dest="inputs", help="what the caller says next (repeatable)")
    p.add_argument("--dtmf", metavar="KEYS", action=_Append, dest="inputs", help="keys the caller presses next (repeatable)")
    p.add_argument("--channel", choices=["voice", "chat"], default="voice", help="render as a call or as a chat")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_simulate, inputs=[])


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    at = datetime.fromisoformat(text.strip())
    return at if at.tzinfo is not None else at.replace(tzinfo=ZoneInfo("Europe/Madrid"))


def _cmd_simulate(args: argparse.Namespace) -> int:
    try:
        at = _instant(args.at)
    except ValueError as exc:
        return fail(f"--at: {exc}")
    rt = offline_runtime(args)
    session, out = asyncio.run(rt.ivr.simulate(args.inputs, at=at, channel=args.channel))
    if args.json:
        print(json.dumps({"outcome": session.outcome, "intent": session.intent, "calendar": session.calendar_state,
                          "ticket": session.ticket_ref, "messages": [m.public() for m in out],
                          "path": [p.model_dump(mode="json") for p in session.path],
                          "transcripts": [t.model_dump(mode="json") for t in session.transcripts]},
                         ensure_ascii=False, indent=2))
        return 0
    print(f"# {session.started_at.isoformat()}  line {session.calendar_state}  flows version {session.flows_version}")
    for m in out:
        prefix = "?" if m.kind == "question" else ">"
        opts = "  [" + ", ".join(f"{k}: {v}" for k, v in m.options) + "]" if m.options else ""
        print(f"{prefix} {m.text}{opts}")
    print("path: " + " → ".join(_step_name(p.flow, p.verb, p.detail) for p in session.path))
    print(f"intent: {session.intent or '-'}  outcome: {session.outcome}" +
          (f"  ticket: {session.ticket_ref}" if session.ticket_ref else ""))
    return 0


def _step_name(flow: str, verb: str, detail: dict[str, Any]) -> str:
    extra = ""
    if "value" in detail and verb in ("branch", "gather"):
        extra = f"={detail['value']}"
    return f"{flow}.{verb}{extra}"
