"""Staff-only resources of every area need a principal with the right role."""

from __future__ import annotations

import httpx
import pytest

from atiende.runtime import Runtime

pytestmark = pytest.mark.anyio


async def test_admin_and_back_office_paths_need_the_right_role(runtime: Runtime, client: httpx.AsyncClient) -> None:
    desk = runtime.desk  # type: ignore[attr-defined]
    agent_key = await desk.auth.create_api_key("n1", ["agent_n1"])
    nobody = {"Authorization": "Bearer nope"}
    for path in ("/api/v1/admin/calendars", "/api/v1/admin/routing", "/api/v1/admin/ivr/flows", "/api/v1/calls",
                 "/api/v1/callbacks"):
        assert (await client.get(path, headers=nobody)).status_code == 401, path
    assert (await client.get("/api/v1/admin/calendars", headers={"X-API-Key": agent_key})).status_code == 403
    assert (await client.get("/api/v1/callbacks", headers={"X-API-Key": agent_key})).status_code == 200
    # public resources stay public
    assert (await client.get("/api/v1/hours", headers=nobody)).status_code == 200
    assert (await client.post("/api/v1/route", json={"text": "pagar la itv"}, headers=nobody)).status_code == 200


async def test_admin_changes_are_attributed_to_the_principal(runtime: Runtime, client: httpx.AsyncClient) -> None:
    key = await runtime.desk.auth.create_api_key("marta", ["admin"])  # type: ignore[attr-defined]
    r = await client.post("/api/v1/admin/calendars/line/closures", json={"date": "2026-11-30", "reason": "obras"},
                          headers={"X-API-Key": key, "X-Actor": "someone-else"})
    assert r.status_code in (200, 201), r.text
    versions = (await client.get("/api/v1/admin/calendars/versions")).json()
    assert versions[-1]["actor"] == "key:marta"
