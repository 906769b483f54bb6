"""Router throughput and latency on one core.

    .venv/bin/python bench/bench_routing.py [--n 20000] [--seed 7]

Utterances: the development and held-out sets plus seeded variants of them (typos, accents
dropped, fillers, case, long rambling lines), so most are distinct and caches do not make the
numbers up. Pinned to one CPU. Prints utterances per CPU-second (what one core does; the wall-clock rate
is printed too, and is lower when other processes share the core) and latency percentiles
for a cold pass (empty word caches) and a warm pass, and the accuracy on the noisy variants (a robustness figure).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from config.loader import load  # noqa: E402
from routing.router import Router  # noqa: E402

SETS = [REPO.parent / "shared" / "eval" / "routing_dev.tsv", REPO / "tests" / "data" / "routing_extra.tsv",
        REPO / "tests" / "data" / "routing_blind.tsv"]
FILLERS = ["eh", "pues", "mire", "oiga", "a ver", "buenas", "hola", "bueno", "por favor", "mmm"]
KEYBOARD = "qwertyuiopasdfghjklñzxcvbnm"


def rows() -> list[tuple[str, str]]:
    out = []
    for path in SETS:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                text, intent = line.split("\t")
                out.append((text, intent.strip()))
    return out


def mutate(text: str, rnd: random.Random) -> str:
    words = text.split()
    for _ in range(rnd.randint(1, 3)):
        op = rnd.random()
        if not words:
            break
        i = rnd.randrange(len(words))
        w = words[i]
        if op < 0.3 and len(w) > 4:  # typo: swap, drop or replace a letter
            j = rnd.randrange(1, len(w) - 1)
            kind = rnd.randrange(3)
            w = w[:j] + w[j + 1] + w[j] + w[j + 2:] if kind == 0 else w[:j] + w[j + 1:] if kind == 1 else (
                w[:j] + rnd.choice(KEYBOARD) + w[j + 1:])
            words[i] = w
        elif op < 0.5:
            words.insert(i, rnd.choice(FILLERS))
        elif op < 0.7:
            words[i] = w.translate(str.maketrans("áéíóú", "aeiou"))
        elif op < 0.85:
            words[i] = w.upper()
        else:
            words.append(rnd.choice(["gracias", "por favor", "vale", "es que no sé", "mire usted"]))
    return " ".join(words)


def run(router: Router, texts: list[str]) -> tuple[float, float, list[float], list[float]]:
    """(wall seconds, CPU seconds, wall latencies ms, CPU latencies ms). CPU time is what one core
    spends; on a busy machine wall time also counts waiting for the core."""
    wall, cpu = [], []
    w0, c0 = time.perf_counter(), time.thread_time()
    for t in texts:
        a, b = time.perf_counter_ns(), time.thread_time_ns()
        router.route(t)
        cpu.append((time.thread_time_ns() - b) / 1e6)
        wall.append((time.perf_counter_ns() - a) / 1e6)
    return time.perf_counter() - w0, time.thread_time() - c0, wall, cpu


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="utterances per pass (default 20000)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rnd = random.Random(args.seed)
    base = rows()
    settings = load(None, env={}).settings
    t0 = time.perf_counter()
    router = Router(settings.routing, settings.knowledge)
    compile_ms = (time.perf_counter() - t0) * 1000
    pool = [(mutate(t, rnd), i) if k % 4 else (t, i) for k in range(args.n) for t, i in [base[k % len(base)]]]
    # A few long rambling lines, as chat users paste them.
    for k in range(0, args.n, 500):
        pool[k] = (" ".join(rnd.choice(base)[0] for _ in range(30)), "long")
    texts = [t for t, _ in pool]
    print(f"router compiled in {compile_ms:.0f} ms; {len(texts)} utterances, {len(set(texts))} distinct; one core")
    for label in ("cold", "warm"):
        wall_s, cpu_s, wall, cpu = run(router, texts)
        print(f"{label}: {len(texts) / cpu_s:,.0f} utterances per CPU-second "
              f"(wall clock {len(texts) / wall_s:,.0f}/s, load average {os.getloadavg()[0]:.1f}); "
              f"latency ms CPU p50 {statistics.median(cpu):.3f} p99 {pct(cpu, 99):.3f} max {max(cpu):.3f}; "
              f"wall p50 {statistics.median(wall):.3f} p99 {pct(wall, 99):.3f}")
    noisy = [(t, i) for (t, i), (orig, _) in zip(pool, [base[k % len(base)] for k in range(args.n)], strict=True)
             if i != "long" and t != orig]
    seen: dict[str, str] = dict(noisy)
    right_in = total_in = right_none = total_none = 0
    for text, intent in seen.items():
        got = router.route(text).intent or "none"
        if intent == "none":
            total_none += 1
            right_none += got == "none"
        else:
            total_in += 1
            right_in += got == intent
    print(f"noisy variants ({len(seen)} distinct): in-scope accuracy {right_in / total_in:.3f} ({right_in}/{total_in}); "
          f"out of scope rejected {right_none}/{total_none}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
