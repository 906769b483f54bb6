"""core.looplag: the event-loop lag histogram and the stall report with the stack that held the loop."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import REGISTRY

from core.looplag import LoopLagMonitor

pytestmark = pytest.mark.anyio


def _block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # the culprit the report must name


def _lag_count() -> float:
    return REGISTRY.get_sample_value("atiende_event_loop_lag_seconds_count") or 0.0


async def test_a_stall_is_measured_and_names_what_held_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    before = _lag_count()
    mon = LoopLagMonitor()
    mon.start()
    try:
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="core.looplag"):
            _block_the_loop_for(0.15)
            for _ in range(50):
                await asyncio.sleep(0.01)
                if mon.stalls:
                    break
    finally:
        await mon.stop()
    assert _lag_count() > before + 3  # every tick is observed
    assert mon.stalls, "a 150 ms stall was not reported"
    stall = mon.stalls[-1]
    assert stall.lag_s >= 0.1 and stall.samples > 0
    assert "_block_the_loop_for" in stall.stack
    assert any("event loop stalled" in r.getMessage() and "_block_the_loop_for" in r.getMessage() for r in caplog.records)


async def test_a_quiet_loop_reports_nothing() -> None:
    mon = LoopLagMonitor()
    mon.start()
    await asyncio.sleep(0.2)
    await mon.stop()
    assert mon.ticks >= 5 and not mon.stalls


async def test_metrics_page_renders_the_histogram() -> None:
    from desk_api import metrics

    LoopLagMonitor()  # the histogram exists once the module is imported
    body, _ = metrics.render()
    assert b"atiende_event_loop_lag_seconds_bucket" in body
