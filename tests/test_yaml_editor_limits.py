"""The admin editors' YAML helpers (/desk/api/yaml/parse and /dump) under hostile input: bodies past the limit
are refused with 413 before being read whole, anchors and aliases (the "billion laughs") with 422 and their
line, nesting too deep for the parser with 422; ordinary documents still round-trip."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from desk_api.routes.pages import MAX_YAML_BYTES
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.anyio

ADMIN = {"X-API-Key": ADMIN_KEY}
YAML = {"Content-Type": "application/yaml", **ADMIN}

LAUGHS = """\
flows: {}
a: &a ["ja", "ja", "ja", "ja", "ja", "ja", "ja", "ja", "ja"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


async def test_anchors_and_aliases_are_refused_with_their_line(client: httpx.AsyncClient) -> None:
    r = await client.post("/desk/api/yaml/parse", content=LAUGHS.encode(), headers=YAML)
    assert r.status_code == 422, r.text
    [problem] = r.json()["details"]
    assert problem["line"] == 2 and "alias" in problem["reason"] and problem["loc"].startswith("línea 2")
    r = await client.post("/desk/api/yaml/parse", content=b"prompts:\n  hola: Buenos dias\n  adios: *hola\n", headers=YAML)
    assert r.status_code == 422 and r.json()["details"][0]["line"] == 3
    # without them the same kind of document parses (and '&' or '*' inside a text is just a character)
    r = await client.post("/desk/api/yaml/parse", content=b"a: [ja, ja]\nb: 'Pulse * o & para volver'\n",
                          headers=YAML)
    assert r.status_code == 200 and r.json() == {"a": ["ja", "ja"], "b": "Pulse * o & para volver"}


async def test_bodies_past_the_limit_are_refused_in_spanish(client: httpx.AsyncClient) -> None:
    big = b"# " + b"x" * MAX_YAML_BYTES + b"\na: 1\n"
    r = await client.post("/desk/api/yaml/parse", content=big, headers=YAML)
    assert r.status_code == 413 and r.json()["error_id"] == "payload-too-large"
    assert "demasiado grande" in r.json()["message"] and r.json()["details"] == {"max_bytes": MAX_YAML_BYTES}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading, not after
        for _ in range(MAX_YAML_BYTES // 4096 + 2):
            yield b"#" * 4095 + b"\n"

    r = await client.post("/desk/api/yaml/parse", content=chunks(), headers=YAML)
    assert r.status_code == 413 and "demasiado grande" in r.json()["message"]
    r = await client.post("/desk/api/yaml/dump", content=b'{"a": "' + b"x" * MAX_YAML_BYTES + b'"}',
                          headers={"Content-Type": "application/json", **ADMIN})
    assert r.status_code == 413 and r.json()["error_id"] == "payload-too-large"
    # just under the limit is fine
    ok = b"a: '" + b"x" * (MAX_YAML_BYTES - 10) + b"'\n"
    r = await client.post("/desk/api/yaml/parse", content=ok, headers=YAML)
    assert r.status_code == 200 and len(r.json()["a"]) == MAX_YAML_BYTES - 10


async def test_deep_nesting_and_bad_json_are_422(client: httpx.AsyncClient) -> None:
    deep = b"[" * 20_000 + b"]" * 20_000
    r = await client.post("/desk/api/yaml/parse", content=deep, headers=YAML)
    assert r.status_code == 422 and "anidados" in r.json()["message"]
    r = await client.post("/desk/api/yaml/dump", content=deep, headers={"Content-Type": "application/json", **ADMIN})
    assert r.status_code == 422 and "anidados" in r.json()["message"]
    r = await client.post("/desk/api/yaml/dump", content=b"{no es json", headers=ADMIN)
    assert r.status_code == 422 and r.json()["message"] == "El cuerpo no es JSON válido"
    r = await client.post("/desk/api/yaml/parse", content=b"n: " + b"9" * 5000, headers=YAML)
    assert r.status_code == 422 and r.json()["message"] == "YAML no válido"
    r = await client.post("/desk/api/yaml/parse", content=b"a: [1, 2\nb: 3\n", headers=YAML)
    assert r.status_code == 422 and r.json()["details"][0]["line"] is not None
