"""Event-loop lag: how late the loop that paces every call's RTP wakes up, and what held it when it was late.

A task sleeps `interval_s` (10 ms) on the loop, over and over, and measures how much longer than that it took
to run again (the oversleep): that is the delay every timer on the loop saw, the 20 ms RTP grid included. Each
oversleep goes into the Prometheus histogram `atiende_event_loop_lag_seconds` (the default registry, which
`/metrics` renders).

Knowing that the loop was late is only half of it: a watchdog *thread* checks the loop's heartbeat every few
milliseconds, and while the loop is stuck past `report_s` (50 ms) it samples the loop thread's Python stack
(`sys._current_frames`): the frames are those of whatever holds the loop (a decode, a subprocess fork, a
collection...). When the loop comes back, one warning names the lag, the asyncio task that was running, the
garbage collections that happened inside the stall and the stack the watchdog saw most often.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)

BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)
LOOP_LAG = Histogram("atiende_event_loop_lag_seconds",
                     "How late the event loop woke up from a 10 ms sleep (the delay every call's audio timer saw)",
                     buckets=BUCKETS)


@dataclass
class Stall:
    """One lag past the report threshold, with what the watchdog saw meanwhile."""

    lag_s: float
    task: str | None = None
    stack: str = ""
    samples: int = 0
    gc_ms: float = 0.0  # time spent in garbage collection inside the stall
    gc_runs: list[str] = field(default_factory=list)
    gil_wait_ms: float = 0.0  # how long the watchdog thread itself could not run: C code held the GIL
    threads: str = ""  # every thread's innermost frames when the watchdog got the GIL back


class _GcTimer:
    """Collections and their durations (gc.callbacks), so a stall can say whether the collector caused it."""

    def __init__(self) -> None:
        self.runs: collections.deque[tuple[float, float, int]] = collections.deque(maxlen=64)  # (end, ms, generation)
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.runs.append((time.monotonic(), (time.perf_counter() - self._t0) * 1000, int(info.get("generation", -1))))

    def since(self, start: float) -> list[tuple[float, float, int]]:
        return [r for r in list(self.runs) if r[0] >= start]


class LoopLagMonitor:
    """Start on the loop to watch (`start()`), stop with `await stop()`. `stalls` keeps the last 100 reports."""

    def __init__(self, *, interval_s: float = 0.01, report_s: float = 0.05, sample_s: float = 0.005,
                 observe: Callable[[float], None] | None = None) -> None:
        self.interval_s = interval_s
        self.report_s = report_s
        self.sample_s = sample_s
        self._observe = observe or LOOP_LAG.observe
        self.stalls: collections.deque[Stall] = collections.deque(maxlen=100)
        self.max_lag_s = 0.0
        self.ticks = 0
        self._beat = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stacks: collections.Counter[str] = collections.Counter()
        self._stall_task: str | None = None
        self._gc = _GcTimer()
        self._gil_wait = 0.0
        self._threads = ""

    def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        gc.callbacks.append(self._gc)
        self._task = self._loop.create_task(self._run(), name="loop-lag")
        self._thread = threading.Thread(target=self._watch, name="loop-lag-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._thread is not None:
            self._thread.join(1.0)
            self._thread = None
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            self._beat = time.monotonic()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - t0 - self.interval_s)
            self._beat = time.monotonic()
            self.ticks += 1
            self._observe(lag)
            self.max_lag_s = max(self.max_lag_s, lag)
            if lag >= self.report_s:
                self._report(lag, time.monotonic() - lag - self.interval_s)

    def _report(self, lag: float, began: float) -> None:
        with self._lock:
            stacks, self._stacks = self._stacks, collections.Counter()
            task, self._stall_task = self._stall_task, None
            gil_wait, self._gil_wait = self._gil_wait, 0.0
            threads, self._threads = self._threads, ""
        runs = self._gc.since(began)
        stall = Stall(lag_s=lag, task=task, samples=sum(stacks.values()), gc_ms=round(sum(r[1] for r in runs), 1),
                      gc_runs=[f"gen{g} {ms:.1f} ms" for _, ms, g in runs], gil_wait_ms=round(gil_wait * 1000, 1),
                      threads=threads)
        if stacks:
            stall.stack = stacks.most_common(1)[0][0]
        elif threads:
            # The watchdog never ran during the stall: some thread held the GIL in C code the whole time. What
            # every thread was doing right after is the best clue.
            stall.stack = f"(GIL held {stall.gil_wait_ms:.0f} ms; threads right after:)\n{threads}"
        self.stalls.append(stall)
        log.warning("event loop stalled %.0f ms (task %s; gc %.1f ms in %d runs); most seen stack (%d samples):\n%s",
                    lag * 1000, task or "?", stall.gc_ms, len(runs), stall.samples, stall.stack or "(not sampled)",
                    extra={"loop_lag_ms": round(lag * 1000, 1), "loop_task": task, "gc_ms": stall.gc_ms})

    def _watch(self) -> None:
        """The watchdog thread: while the loop's heartbeat is older than report_s, sample the loop thread's stack."""
        last = time.monotonic()
        while not self._stop.wait(self.sample_s):
            now = time.monotonic()
            late, last = now - last - self.sample_s, now
            if late >= self.report_s:
                self._note_gil_wait(late)
            if now - self._beat < self.report_s or self._loop_thread is None:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            stack = "".join(traceback.format_stack(frame, limit=12))
            task_name = None
            with contextlib.suppress(Exception):  # a racy read from another thread: best effort, for the log only
                t = asyncio.tasks._current_tasks.get(self._loop)  # type: ignore[attr-defined]
                task_name = t.get_name() if t is not None else None
            with self._lock:
                self._stacks[stack] += 1
                if task_name and self._stall_task is None:
                    self._stall_task = task_name

    def _note_gil_wait(self, late: float) -> None:
        me = threading.get_ident()
        names = {t.ident: t.name for t in threading.enumerate()}
        parts = []
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            inner = "".join(traceback.format_stack(frame, limit=3))
            if "wait" in inner.rsplit("\n", 3)[-2] and ident != self._loop_thread:
                continue  # idle pool threads
            parts.append(f"-- thread {names.get(ident, ident)}:\n{inner}")
        with self._lock:
            if late > self._gil_wait:
                self._gil_wait = late
                self._threads = "".join(parts)
