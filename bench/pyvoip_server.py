"""The pyVoIP 1.6.8 baseline for bench_telephony.py: registers as `900` with Kamailio, answers every call, plays a
prompt in a loop while reading what comes in, hangs up after --hold seconds. Runs in bench/.venv-pyvoip (its own
venv: pyVoIP is not a dependency of Atiende). Writes per-call counts as JSON to --stats on SIGTERM.

pyVoIP sends every SIP message to the configured server, so calls must come through Kamailio.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import wave
from typing import Any

from pyVoIP.VoIP import CallState, InvalidStateError, VoIPPhone

stats: list[dict[str, Any]] = []
QUIET = bytes(range(120, 137))  # 8-bit unsigned samples near 128: silence
lock = threading.Lock()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--proxy-port", type=int, default=5060)
    p.add_argument("--port", type=int, default=5070)
    p.add_argument("--user", default="900")
    p.add_argument("--password", required=True)
    p.add_argument("--prompt", required=True, help="8 kHz 16-bit mono WAV")
    p.add_argument("--hold", type=float, default=12.0)
    p.add_argument("--stats", required=True)
    args = p.parse_args()

    with wave.open(args.prompt, "rb") as w:
        pcm16 = w.readframes(w.getnframes())
    # pyVoIP's audio interface is 8-bit unsigned linear
    audio8 = bytes(((int.from_bytes(pcm16[i : i + 2], "little", signed=True) >> 8) + 128) & 0xFF
                   for i in range(0, len(pcm16) - 1, 2))

    def on_call(call: Any) -> None:
        rec = {"answered": False, "bytes_read": 0, "loud_bytes": 0}
        with lock:
            stats.append(rec)
        try:
            call.answer()
            rec["answered"] = True
            end = time.monotonic() + args.hold
            written = 0.0
            while time.monotonic() < end and call.state == CallState.ANSWERED:
                if written - (args.hold - (end - time.monotonic())) < 2.0:  # keep ~2 s queued
                    call.write_audio(audio8)
                    written += len(audio8) / 8000
                data = call.read_audio(160, blocking=False)
                rec["bytes_read"] += len(data)
                rec["loud_bytes"] += len(data.translate(None, QUIET))
                time.sleep(0.02)
            if call.state == CallState.ANSWERED:
                call.hangup()
        except InvalidStateError:
            pass
        except Exception as exc:  # report, never kill the phone
            rec["error"] = repr(exc)

    phone = VoIPPhone("127.0.0.1", args.proxy_port, args.user, args.password, myIP="127.0.0.1", callCallback=on_call,
                      sipPort=args.port, rtpPortLow=20000, rtpPortHigh=20999)

    def finish(*_: Any) -> None:
        with lock, open(args.stats, "w") as f:
            json.dump(stats, f)
        sys.stdout.flush()
        phone.stop()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    phone.start()
    print("ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
