"""The Atiende line inside the SIP harness's namespace, and the citizen's phone, for the end-to-end tests
(`pytest_plugins = ["tests.sip_harness", "tests.atiende_line"]`): fixtures `line` and `phone`, what a call
heard (`Heard`), and `live()` to wait for a call record to reach a state. Test modules import names from here
before pytest loads it as a plugin: PYTEST_DONT_REWRITE keeps pytest from warning about it (as in sip_harness)."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import numpy as np
import pytest

from atiende.components import LineComponent
from atiende.runtime import Runtime
from core.clock import ShiftedClock
from ivr.contact import Session
from tests.conftest import MADRID, STAFF_PASSWORD
from tests.sip_harness import RATE, HarnessError

LINE = "sip:900@127.0.0.1:5060"
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=MADRID)


@pytest.fixture
async def line(runtime: Runtime, netns_redis: str, sip_endpoint: Any) -> AsyncIterator[Runtime]:
    """The line answering inside the namespace, the service's clock running from Monday 10:00 (open). Every
    caller comes from loopback, as through a Kamailio in front: trusted, no per-source cap."""
    runtime.clock = ShiftedClock(MONDAY_10)
    comp = LineComponent(runtime)
    runtime.attach_line(await sip_endpoint(comp.on_call, trusted_proxies=["127.0.0.1"]))
    await runtime.speech.warm_up()
    yield runtime
    runtime.speech.close()


@pytest.fixture
async def phone(sip_endpoint: Any) -> Any:
    """The citizen's phone: a SIP UA in the test's hands (it keys and speaks when the test says), placing calls
    only."""

    async def refuse(call: Any) -> None:
        await call.reject(603)

    return await sip_endpoint(refuse, port=5062, rtp_port_min=21000, rtp_port_max=21099)


async def login(api: httpx.AsyncClient, user: str) -> dict[str, str]:
    """A staff member's bearer headers (the user was created with STAFF_PASSWORD)."""
    res = await api.post("/api/v1/auth/login", json={"username": user, "password": STAFF_PASSWORD})
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['token']}"}


async def live(rt: Runtime, caller: str, ok: Callable[[Session], bool], within: float) -> Session:
    """Poll the call records until the caller's call satisfies `ok`."""
    deadline = time.monotonic() + within
    last: Session | None = None
    while time.monotonic() < deadline:
        for rec in await rt.calls.list(limit=50):
            if caller in rec.caller:
                last = rec
                if ok(rec):
                    return rec
        await asyncio.sleep(0.3)
    raise HarnessError(f"call from {caller} did not get there in {within} s; last record: "
                       f"{last.model_dump_json(include={'path', 'transcripts', 'said'}) if last else None}")


class Heard:
    """Everything a call receives, kept as it arrives."""

    def __init__(self, call: Any) -> None:
        self.pcm = bytearray()
        self.task = asyncio.create_task(self._run(call))

    async def _run(self, call: Any) -> None:
        async for frame in call.audio():
            self.pcm.extend(frame)

    def at(self) -> int:
        """Samples heard so far: a mark on this call's own timeline."""
        return len(self.pcm) // 2

    def samples(self) -> np.ndarray:
        return np.frombuffer(bytes(self.pcm), dtype="<i2")

    async def beep(self, within: float, freq: float = 1000.0) -> None:
        """Until the recording beep (a pure tone) has been heard: the moment to start talking."""
        deadline = time.monotonic() + within
        window = int(0.2 * RATE)
        while time.monotonic() < deadline:
            tail = self.samples()[-window:].astype(np.float64)
            if len(tail) == window and np.abs(tail).mean() > 200:
                spectrum = np.abs(np.fft.rfft(tail)) ** 2
                band = spectrum[int((freq - 50) * window / RATE): int((freq + 50) * window / RATE)].sum()
                if band > 0.8 * spectrum.sum():
                    await asyncio.sleep(0.4)  # let the beep end
                    return
            await asyncio.sleep(0.05)
        tail = self.samples()[-window:].astype(np.float64)
        peak = float(np.argmax(np.abs(np.fft.rfft(tail)))) * RATE / window if len(tail) else 0.0
        raise HarnessError(f"no {freq:.0f} Hz beep heard within {within} s (heard {len(self.pcm) / 16000:.1f} s, "
                           f"last level {np.abs(tail).mean() if len(tail) else 0:.0f}, peak {peak:.0f} Hz)")


async def voicemail_audio(http: httpx.AsyncClient, ref: str) -> np.ndarray:
    """A voicemail ticket's message, as any agent plays it: the link in its first interaction, fetched as WAV."""
    detail = await http.get(f"/api/v1/tickets/{ref}")
    assert detail.status_code == 200, detail.text
    vm = next(i for i in detail.json()["interactions"] if i["kind"] == "voicemail")
    audio = await http.get(vm["data"]["recording"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav", audio.text[:200]
    with wave.open(io.BytesIO(audio.content)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
