"""A callback about a ticket and a voicemail's audio are that ticket's data: an N1 agent neither lists, reads,
claims nor hears those of N2 tickets (the review found all four open, and no listen audited); the API never shows
where a node keeps the file."""

from __future__ import annotations

import httpx
import pytest

from atiende.runtime import Runtime
from tests.conftest import STAFF_PASSWORD, voicemail_message

pytestmark = pytest.mark.anyio


async def _login(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"username": user, "password": STAFF_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def _voicemail(runtime: Runtime, call_id: str, queue: str) -> tuple[str, str]:
    rec = voicemail_message(runtime.data_dir, call_id).finish()
    ref, cb = await runtime.voicemail.complete(rec, caller="+34600111222", trace_id=f"t-{call_id}", queue=queue,
                                               transcript="quiero denunciar a mi vecino", confidence=0.8)
    return ref, cb.id


async def test_an_n1_agent_gets_nothing_of_an_n2_voicemail(runtime: Runtime, client: httpx.AsyncClient,
                                                           staff: dict[str, str]) -> None:
    n2_ref, n2_cb = await _voicemail(runtime, "call-n2", "N2")
    n1_ref, n1_cb = await _voicemail(runtime, "call-n1", "N1")
    ana = await _login(client, "ana")  # N1
    listed = (await client.get("/api/v1/callbacks", headers=ana)).json()
    assert [cb["id"] for cb in listed] == [n1_cb]
    assert "path" not in listed[0]["voicemail"]  # where the node keeps the file is not the API's business
    for method, path in (("GET", f"/api/v1/callbacks/{n2_cb}"), ("POST", f"/api/v1/callbacks/{n2_cb}/claim"),
                         ("GET", "/api/v1/voicemails/call-n2/audio")):
        r = await client.request(method, path, headers=ana)
        assert r.status_code == 403 and r.json()["error_id"] == "not-your-queue", (path, r.text)
    r = await client.post(f"/api/v1/callbacks/{n2_cb}/attempts", headers=ana, json={"outcome": "no_answer"})
    assert r.status_code == 403, r.text
    # Her own queue's voicemail she hears, and the listen is audited.
    audio = await client.get("/api/v1/voicemails/call-n1/audio", headers=ana)
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    listens = [e for e in await runtime.desk.audit.entries(count=200) if e["action"] == "voicemail.listened"]
    assert [(e["target"], e["actor"]) for e in listens] == [("call-n1", "user:ana")], listens
    # "Next callback" hands her the N1 one, never the N2 one due before it.
    got = (await client.post("/api/v1/callbacks/next", headers=ana)).json()
    assert got["id"] == n1_cb and got["ticket_ref"] == n1_ref
    assert (await client.post("/api/v1/callbacks/next", headers=ana)).json() is None
    # A supervisor sees and hears both.
    sup = await _login(client, "supervisora")
    assert {cb["id"] for cb in (await client.get("/api/v1/callbacks", headers=sup)).json()} == {n1_cb, n2_cb}
    assert (await client.get("/api/v1/voicemails/call-n2/audio", headers=sup)).status_code == 200
    assert n2_ref
