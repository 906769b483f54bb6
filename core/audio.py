"""The one audio format every call, prompt and recording in Atiende uses, and the typed frame that crosses
package seams (telephony -> ivr -> speech and back).

8 kHz, 16-bit little-endian mono PCM in 20 ms frames: what G.711 carries, so no seam resamples.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

RATE = 8000
FRAME_MS = 20
SAMPLE_BYTES = 2
FRAME_SAMPLES = RATE * FRAME_MS // 1000  # 160
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_BYTES  # 320
BYTES_PER_SECOND = RATE * SAMPLE_BYTES  # 16,000
FRAMES_PER_SECOND = 1000 // FRAME_MS  # 50
SILENCE = b"\x00" * FRAME_BYTES

# One 20 ms frame of 16-bit PCM at RATE. A `bytes` of FRAME_BYTES, named so signatures say what they carry.
Frame = bytes

T = TypeVar("T")


def put_dropping_oldest(queue: asyncio.Queue[T], item: T) -> bool:
    """Put without ever blocking the producer: when the queue is full, the oldest item makes room.

    Live audio wants the newest frames (latency stays bounded when a consumer lags); returns True when an
    item was dropped."""
    dropped = False
    if queue.full():
        try:
            queue.get_nowait()
            dropped = True
        except asyncio.QueueEmpty:  # pragma: no cover - a consumer took it between full() and here
            pass
    queue.put_nowait(item)
    return dropped

