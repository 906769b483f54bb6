"""`atiende sip-echo` and `atiende sip-dial`: a SIP endpoint without the IVR, for demos, interop tests and benches.

    atiende sip-echo --sip 127.0.0.1:5070 --rtp-ports 30000-30999 --mode echo
        answers every call; `echo` sends the caller's audio back, `tone` plays 440 Hz, `wav` plays --wav
        in a loop; DTMF digits are echoed back as RFC 4733 events. Prints `ready sip:HOST:PORT`, then one
        JSON call record per ended call on stdout. --hold S hangs up after S seconds.
    atiende sip-dial sip:600@127.0.0.1:5080 --wav prompt.wav --seconds 5
        places one call, plays the WAV, prints the call record (exit 1 with the reason if it failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core import audio
from telephony import g711


def wav_frames(path: Path) -> list[bytes]:
    """A WAV file as 20 ms frames of 8 kHz 16-bit mono (converted if needed; done once, at load)."""
    import wave

    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        data = w.readframes(w.getnframes())
    if width != 2:
        data = g711.audioop.lin2lin(data, width, 2)
    if channels == 2:
        data = g711.audioop.tomono(data, 2, 0.5, 0.5)
    elif channels != 1:
        raise ValueError(f"{path}: {channels} channels")
    if rate != audio.RATE:
        data, _ = g711.audioop.ratecv(data, 2, 1, rate, audio.RATE, None)
    return [g711.fit_frame(data[i:i + audio.FRAME_BYTES]) for i in range(0, len(data), audio.FRAME_BYTES)]


def tone_frames(seconds: float = 1.0, freq: float = 440.0, amplitude: int = 6000) -> list[bytes]:
    import math
    import struct

    n = int(seconds * audio.RATE)
    pcm = struct.pack(f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * freq * i / audio.RATE)) for i in range(n)))
    return [pcm[i:i + audio.FRAME_BYTES] for i in range(0, len(pcm), audio.FRAME_BYTES)]


def _loop(frames: list[bytes]) -> Iterator[bytes]:
    while True:
        yield from frames


def _settings(args: argparse.Namespace) -> Any:
    """The sip section, with --sip/--rtp-ports layered exactly as for `atiende run`."""
    import os

    from atiende.cliutil import config_dir_of
    from atiende.service import cli_overrides
    from config.loader import ConfigError, load

    try:
        loaded = load(config_dir_of(args), {**os.environ, **cli_overrides(args)})
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"atiende: config: {issue}", file=sys.stderr)
        raise SystemExit(2) from None
    sip = loaded.settings.sip
    if getattr(args, "max_calls", None):
        sip = sip.model_copy(update={"max_calls": args.max_calls})
    return sip


async def _echo(args: argparse.Namespace) -> int:
    from telephony.call import Call, CallRecord, relay_audio
    from telephony.endpoint import SipEndpoint

    cfg = _settings(args)
    prompt = wav_frames(args.wav) if args.mode == "wav" else tone_frames()

    async def on_call(call: Call) -> None:
        await call.answer()

        async def speak() -> None:
            if args.mode == "echo":
                await relay_audio(call, call)
            else:
                while not call.ended.is_set():
                    await call.play(_loop(prompt), interrupt_on_dtmf=False)

        async def keys() -> None:
            async for d in call.dtmf():
                await call.send_dtmf(d)

        tasks = [asyncio.create_task(speak()), asyncio.create_task(keys())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.ended.wait(), args.hold)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def ended(rec: CallRecord) -> None:
        print(rec.model_dump_json(), flush=True)

    ep = SipEndpoint(cfg, on_call, on_call_ended=ended)
    await ep.start()
    print(f"ready sip:{ep.host}:{ep.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await ep.stop()
    return 0


async def _dial(args: argparse.Namespace) -> int:
    from telephony.endpoint import SipEndpoint
    from telephony.errors import DialFailed

    cfg = _settings(args)

    async def refuse(call: Any) -> None:
        await call.reject(486)

    ep = SipEndpoint(cfg, refuse)
    await ep.start()
    try:
        call = await ep.dial(args.uri, ring_timeout=args.ring_timeout)
    except DialFailed as exc:
        print(json.dumps({"error": exc.reason, "status": exc.status, "detail": exc.detail}), flush=True)
        await ep.stop()
        return 1
    frames = wav_frames(args.wav) if args.wav else tone_frames()
    n = int(args.seconds * 50)
    play = asyncio.create_task(call.play(list(_loop_n(frames, n))))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(call.ended.wait(), args.seconds + 0.5)
    play.cancel()
    await call.hangup()
    print(call.record.model_dump_json(), flush=True)
    await ep.stop()
    return 0


def _loop_n(frames: list[bytes], n: int) -> Iterator[bytes]:
    it = _loop(frames)
    for _ in range(n):
        yield next(it)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to `atiende`."""
    from atiende.cliutil import add_config_option

    def common(p: argparse.ArgumentParser) -> None:
        add_config_option(p)
        p.add_argument("--sip", metavar="HOST:PORT", help="SIP listener (default from config)")
        p.add_argument("--rtp-ports", metavar="LOW-HIGH", help="RTP port range")

    p = sub.add_parser("sip-echo", help="answer every call with echo, a tone or a WAV (no IVR): demos and interop tests")
    common(p)
    p.add_argument("--mode", choices=["echo", "tone", "wav"], default="echo")
    p.add_argument("--wav", type=Path, help="WAV to play in --mode wav (any rate; converted to 8 kHz mono)")
    p.add_argument("--hold", type=float, default=None, help="hang up after this many seconds (default: caller hangs up)")
    p.add_argument("--max-calls", type=int, default=None)
    p.set_defaults(func=lambda a: _run(_echo(a)) if a.mode != "wav" or a.wav else _usage("--mode wav needs --wav"))

    p = sub.add_parser("sip-dial", help="place one call, play a WAV or a tone, print the call record")
    common(p)
    p.add_argument("uri", help="sip:user@host[:port], or a number for the configured trunk")
    p.add_argument("--wav", type=Path)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--ring-timeout", type=float, default=30.0)
    p.set_defaults(func=lambda a: _run(_dial(a)))


def _usage(message: str) -> int:
    print(f"atiende: {message}", file=sys.stderr)
    return 2


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except (ValueError, OSError) as exc:
        print(f"atiende: {exc}", file=sys.stderr)
        return 2
