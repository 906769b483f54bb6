"""`atiende route`: route utterances from the command line (config files only, no Redis).

    atiende route --json "quiero pagar la tasa de la itv"
    atiende route --json --file utterances.txt      # one per line, blank lines skipped, "-" = stdin
    atiende route --eval ../shared/eval/routing_dev.tsv   # utterance<TAB>expected intent: accuracy
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atiende.cliutil import add_config_option, fail, offline_runtime


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to `atiende`."""
    p = sub.add_parser("route", help="route utterances to intents (Spanish natural language)")
    add_config_option(p)
    p.add_argument("text", nargs="*", help="the utterance (several words are joined with spaces)")
    p.add_argument("--file", metavar="F", help="route every non-blank line of F ('-' for stdin); text after a tab is ignored")
    p.add_argument("--json", action="store_true", help="one JSON object per utterance")
    p.add_argument("--channel", default=None,
                   help="voice, chat, whatsapp... (default voice; chat with --eval: typed text, no voice confirmation "
                        "floor)")
    p.add_argument("--explain", action="store_true", help="also show the normalised text and what matched")
    p.add_argument("--eval", metavar="TSV", help="utterance<TAB>intent file ('none' = out of scope): print accuracy")
    p.set_defaults(func=_cmd_route)


def _lines(path: str) -> Iterator[str]:
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        data = Path(path).read_bytes()
    for line in data.decode("utf-8-sig", errors="replace").splitlines():
        text = line.split("\t", 1)[0]
        if text.strip():
            yield text


def _cmd_route(args: argparse.Namespace) -> int:
    rt = offline_runtime(args)
    router = rt.router.get_offline()
    if args.eval:
        return _eval(router, args.eval, args.json, args.channel or "chat")
    try:
        texts = list(_lines(args.file)) if args.file else [" ".join(args.text)]
    except OSError as exc:
        return fail(f"cannot read {args.file}: {exc.strerror or exc}")
    if not args.file and not args.text:
        return fail("give the text to route, or --file F")
    from routing.router import explain

    for text in texts:
        result = router.route(text, args.channel or "voice")
        if args.json:
            obj: dict[str, Any] = result.public()
            if args.explain:
                obj["explain"] = explain(router, text)
            print(json.dumps(obj, ensure_ascii=False), flush=False)
        else:
            alts = ", ".join(f"{a.intent} {a.confidence:.2f}" for a in result.alternatives)
            ents = " ".join(f"{k}={v}" for k, v in result.entities.items())
            confirm = " (confirm)" if result.needs_confirmation else ""
            print(f"{result.intent or 'none'} {result.confidence:.2f}{confirm}  <- {text}"
                  + (f"\n    entities: {ents}" if ents else "") + (f"\n    alternatives: {alts}" if alts else ""))
            if args.explain:
                print("    " + json.dumps(explain(router, text), ensure_ascii=False))
    sys.stdout.flush()
    return 0


def _eval(router: Any, path: str, as_json: bool, channel: str) -> int:
    rows = []
    try:
        data = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return fail(f"cannot read {path}: {exc.strerror or exc}")
    for line in data.splitlines():
        if not line.strip() or line.startswith("#") or "\t" not in line:
            continue
        text, expected = line.split("\t", 1)
        rows.append((text, expected.strip()))
    in_scope = [(t, e) for t, e in rows if e != "none"]
    out_scope = [(t, e) for t, e in rows if e == "none"]
    misses = []
    right_in = right_out = 0
    for text, expected in rows:
        got = router.route(text, channel).intent or "none"
        if got == expected:
            right_in += expected != "none"
            right_out += expected == "none"
        else:
            misses.append({"text": text, "expected": expected, "got": got})
    report = {
        "file": path,
        "in_scope": len(in_scope),
        "in_scope_right": right_in,
        "in_scope_accuracy": round(right_in / len(in_scope), 4) if in_scope else None,
        "none": len(out_scope),
        "none_rejected": right_out,
        "misses": misses,
    }
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        acc = report["in_scope_accuracy"]
        print(f"{path}: in scope {right_in}/{len(in_scope)}" + (f" ({acc:.1%})" if acc is not None else "")
              + f"; out of scope rejected {right_out}/{len(out_scope)}")
        for m in misses:
            print(f"  miss: {m['text']!r}: expected {m['expected']}, got {m['got']}")
    return 0
