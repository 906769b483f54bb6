"""Recordings outlive the node that made them: one node records, another (its own disk, the same store) plays
it; a node whose shared directory is not the others' (a missing mount) refuses to start."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from atiende.runtime import Runtime
from config.loader import Loaded
from core.clock import FixedClock
from core.errors import Unavailable
from core.store import Store
from tests.conftest import voicemail_message
from voicemail.recording import Recording, sha256_of
from voicemail.storage import RedisRecordings, SharedDirRecordings, seconds_of

pytestmark = pytest.mark.anyio


def _node(loaded: Loaded, store: Store, clock: FixedClock, data: Path, node: str, **voicemail: object) -> Runtime:
    settings = loaded.settings.model_copy(deep=True)
    settings.service.data_dir = data
    settings.service.node_id = node
    settings.voicemail = settings.voicemail.model_copy(update=voicemail)
    return Runtime(Loaded(settings=settings, version=loaded.version, document=loaded.document), store=store, clock=clock)


async def test_a_message_recorded_on_one_node_plays_on_another(loaded: Loaded, store: Store, clock: FixedClock,
                                                                 tmp_path: Path) -> None:
    from desk_api.app import create_app
    from tests.conftest import ADMIN_KEY

    a = _node(loaded, store, clock, tmp_path / "node-a", "a")
    b = _node(loaded, store, clock, tmp_path / "node-b", "b")
    assert isinstance(a.recordings, RedisRecordings)
    wav = _recorded(a.data_dir, "call-a")
    ref, _ = await a.voicemail.complete(
        _rec(wav), caller="+34600111333", trace_id="t-a", queue="N1", transcript="hola", confidence=0.9)
    wav.unlink()  # node A and its disk are gone
    await b.desk.auth.create_api_key("test-admin", ["admin"], key=ADMIN_KEY)
    transport = httpx.ASGITransport(app=create_app(b))
    async with httpx.AsyncClient(transport=transport, base_url="http://b", headers={"X-API-Key": ADMIN_KEY}) as http:
        first = (await http.get(f"/api/v1/tickets/{ref}/interactions")).json()[0]
        audio = await http.get(first["data"]["recording"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    assert abs(seconds_of(audio.content) - 2.0) < 0.05


def _recorded(data_dir: Path, call_id: str) -> Path:
    return Path(voicemail_message(data_dir, call_id).finish().path)


def _rec(wav: Path) -> Recording:

    return Recording(call_id=wav.stem, path=wav, duration_s=2.0, sha256=sha256_of(wav), complete=True)


async def test_a_shared_directory_that_is_not_shared_is_refused(store: Store, tmp_path: Path) -> None:
    shared = tmp_path / "nfs"
    await SharedDirRecordings(shared, store, "a").check()
    await SharedDirRecordings(shared, store, "b").check()  # the same mount: fine
    with pytest.raises(Unavailable, match="mounted"):
        await SharedDirRecordings(tmp_path / "empty-local-dir", store, "c").check()


async def test_shared_directory_round_trip(store: Store, tmp_path: Path) -> None:
    wav = _recorded(tmp_path / "node", "call-s")
    shared = SharedDirRecordings(tmp_path / "nfs", store, "a")
    await shared.put("call-s", wav)
    assert await shared.get("call-s") == wav.read_bytes()
    assert await shared.get("missing") is None
