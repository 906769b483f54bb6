"""Calendar speed: `atiende hours --json --file F` (whole process, and after start-up) and the library.

    .venv/bin/python bench/bench_calendar.py [--n 10000] [--runs 3]

Goal (issue 3): 10,000 instants answered from a file in under one second after start-up.
Instants are random (seeded) over 2026-2028, a quarter of them naive local times.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def instants(n: int, seed: int = 7) -> list[str]:
    from zoneinfo import ZoneInfo

    rnd = random.Random(seed)
    madrid = ZoneInfo("Europe/Madrid")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    span = int(timedelta(days=3 * 365).total_seconds())
    out = []
    for _ in range(n):
        t = (start + timedelta(seconds=rnd.randrange(span))).astimezone(madrid)
        out.append(t.replace(tzinfo=None).isoformat() if rnd.random() < 0.25 else t.isoformat())
    return out


def run_cli(args: list[str], stdin: str | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "atiende.cli", "hours", "--json", *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=True)
    return time.perf_counter() - t0, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from routing.calendar import Calendar

    lines = instants(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "instants.txt"
        f.write_text("\n".join(lines) + "\n", encoding="utf-8")
        startup = [run_cli(["--at", lines[0]])[0] for _ in range(args.runs)]
        whole = []
        for _ in range(args.runs):
            secs, out = run_cli(["--file", str(f)])
            assert out.count("\n") == args.n and '"error"' not in out, "every line answered"
            whole.append(secs)
        # After start-up: the CLI's own code path (read the file, answer, write JSON) once config is loaded.
        import io

        from atiende.cli import build_parser
        from atiende.cliutil import offline_runtime
        from atiende.commands.hours import run

        t0 = time.perf_counter()
        cli_args = build_parser().parse_args(["hours", "--json", "--file", str(f)])
        cal = offline_runtime(cli_args).calendars.get_offline(None)
        boot = time.perf_counter() - t0
        after = []
        for _ in range(args.runs):
            cal = Calendar("line", cal.model)  # a cold day cache each run, as in a fresh process
            sink = io.StringIO()
            t0 = time.perf_counter()
            with f.open(encoding="utf-8") as fh:
                run(cal, fh, sink, True)
            after.append(time.perf_counter() - t0)
    s, w, a = min(startup), min(whole), min(after)
    print(f"cli start-up + one instant (process): {s:.3f} s   (in-process config load: {boot:.3f} s)")
    print(f"cli --file, {args.n} instants, process: {w:.3f} s  -> {args.n / w:,.0f} instants/s including start-up")
    print(f"cli --file, after start-up:           {a:.3f} s  -> {args.n / a:,.0f} instants/s (goal: {args.n} in < 1 s)")

    from config.loader import load

    model = load(None, env={}).settings.calendar.calendars["line"]
    parsed = [datetime.fromisoformat(x) for x in lines]
    cold = Calendar("line", model)
    t0 = time.perf_counter()
    for t in parsed:
        cold.status(t)
    cold_s = time.perf_counter() - t0
    timings = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        for t in parsed:
            cold.status(t)
        timings.append(time.perf_counter() - t0)
    warm_s = statistics.median(timings)
    t0 = time.perf_counter()
    for t in parsed:
        cold.is_open(t)
    open_s = time.perf_counter() - t0
    print(f"library status(), cold day cache:     {args.n / cold_s:,.0f} instants/s")
    print(f"library status(), warm:               {args.n / warm_s:,.0f} instants/s ({warm_s / args.n * 1e6:.1f} µs each)")
    print(f"library is_open(), warm:              {args.n / open_s:,.0f} instants/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
