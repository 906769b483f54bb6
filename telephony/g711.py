"""G.711 A-law and µ-law to and from 16-bit little-endian PCM, one 20 ms frame at a time.

`audioop` is C and takes microseconds per frame, so it is fine on the event loop. It is
deprecated in 3.11-3.12 (removed in 3.13, where the `audioop-lts` package provides it).
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from core.audio import FRAME_BYTES, SILENCE

PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}


def encode(codec: str, pcm: bytes) -> bytes:
    if codec == "PCMA":
        return audioop.lin2alaw(pcm, 2)
    if codec == "PCMU":
        return audioop.lin2ulaw(pcm, 2)
    raise ValueError(f"unsupported codec {codec}")


def decode(codec: str, data: bytes) -> bytes:
    if codec == "PCMA":
        return audioop.alaw2lin(data, 2)
    if codec == "PCMU":
        return audioop.ulaw2lin(data, 2)
    raise ValueError(f"unsupported codec {codec}")


def fit_frame(pcm: bytes) -> bytes:
    """Pad or cut to exactly one 20 ms frame (the last frame of a prompt is often short)."""
    if len(pcm) == FRAME_BYTES:
        return pcm
    return (pcm + SILENCE)[:FRAME_BYTES] if len(pcm) < FRAME_BYTES else pcm[:FRAME_BYTES]
