"""An injectable clock, so any behaviour can be tested "as if it were Friday 19:00 on a holiday eve".

Wall time (`now`) is what calendars and tickets read; monotonic time is what media pacing reads.
Only wall time is ever shifted: shifting the monotonic clock would break RTP pacing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ShiftedClock:
    """Starts at `start` and then runs at real speed (`atiende run --clock ISO`)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("clock start must carry a UTC offset")
        self._offset = start - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def monotonic(self) -> float:
        return time.monotonic()


class FixedClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._at

    def monotonic(self) -> float:
        return self._mono

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at

    def advance(self, seconds: float) -> None:
        self._at += timedelta(seconds=seconds)
        self._mono += seconds


class SwitchableClock:
    """A clock whose source can be replaced while services hold it: the composition root hands this one out, so
    `runtime.clock = ShiftedClock(...)` ("as if it were Friday 19:00") reaches every service already built."""

    def __init__(self, source: Clock) -> None:
        self.source = source

    def now(self) -> datetime:
        return self.source.now()

    def monotonic(self) -> float:
        return self.source.monotonic()

    def __getattr__(self, name: str) -> object:
        # A test's FixedClock keeps its own controls (set, advance) reachable through the switch.
        return getattr(self.source, name)
