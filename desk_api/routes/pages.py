"""The browser pages: agent desk, admin and supervisor pages, served as static files (no front-end build).

Besides the files, a small helper the pages need (the live events stream is desk_api/routes/live.py):
- `POST /desk/api/yaml/parse` and `/desk/api/yaml/dump`: YAML <-> JSON for the admin editors, with the line
  and column of a syntax error, so the browser needs no YAML library. Bodies past `MAX_YAML_BYTES` are refused
  (413) before they are read whole; parsing and printing run in a thread, off the loop that paces calls' audio;
  YAML anchors and aliases are refused (422 with the line): the editors never write them, and an alias expanded
  inside aliases ("billion laughs") turns a few kB into gigabytes of objects.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse

from core.errors import InvalidInput, NotFound
from desk.models import Principal
from desk_api.auth import require
from desk_api.channels.base import PayloadTooLarge, read_body

router = APIRouter(include_in_schema=False)

WEB = Path(__file__).resolve().parent.parent / "web"
PAGES = {"/login": "login.html", "/desk": "desk.html", "/admin": "admin.html", "/reports": "reports.html"}
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".html": "text/html", ".svg": "image/svg+xml",
                ".png": "image/png"}


def _page(name: str) -> Any:
    async def serve() -> FileResponse:
        return FileResponse(WEB / name, media_type="text/html", headers={"Cache-Control": "no-cache"})

    return serve


for _path, _name in PAGES.items():
    router.add_api_route(_path, _page(_name), methods=["GET"])


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/desk", status_code=307)


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    path = (WEB / name).resolve()
    if path.parent != WEB or path.suffix not in STATIC_TYPES or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


# The largest document an editor sends: the reference scenario's routing.yaml is 22 kB and the API's JSON drafts
# stop at 1,000,000 characters (desk_api/schemas.py MAX_DOCUMENT); the pure-Python parser needs about 7 ms per kB, so
# this bounds a parse to about 2 s of a worker thread.
MAX_YAML_BYTES = 256 * 1024


class NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: each node is written out where it is used."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "no se admiten anclas ni alias (& y *): escriba el valor "
                                              "en cada lugar", event.start_mark)
        return super().compose_node(parent, index)


async def _bounded_body(request: Request) -> bytes:
    try:
        return await read_body(request, MAX_YAML_BYTES)
    except PayloadTooLarge:
        raise PayloadTooLarge(f"El documento es demasiado grande: el máximo son {MAX_YAML_BYTES // 1024} KB",
                              {"max_bytes": MAX_YAML_BYTES}) from None


def _too_deep() -> InvalidInput:
    return InvalidInput("Documento con demasiados niveles anidados",
                        [{"loc": "", "reason": "demasiados niveles anidados", "line": None}])


@router.post("/desk/api/yaml/parse")
async def yaml_parse(request: Request, who: Principal = Depends(require("admin", "supervisor"))) -> Any:
    """YAML text -> JSON value; a syntax error, an anchor or an alias comes back as 422 with its line and column."""
    text = (await _bounded_body(request)).decode("utf-8", "replace")
    try:
        return await asyncio.to_thread(yaml.load, text, NoAliasLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"línea {mark.line + 1}, columna {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise InvalidInput("YAML no válido", [{"loc": loc, "reason": problem, "line": line}]) from None
    except RecursionError:  # thousands of nested [ or {: the composer recurses once per level
        raise _too_deep() from None
    except ValueError as exc:  # a scalar YAML accepts and Python refuses (an integer of 5,000 digits)
        raise InvalidInput("YAML no válido", [{"loc": "", "reason": str(exc), "line": None}]) from None


def _dump(body: bytes) -> str:
    value = json.loads(body)
    out: str = yaml.safe_dump(value, allow_unicode=True, sort_keys=False, default_flow_style=False, width=120)
    return out


@router.post("/desk/api/yaml/dump")
async def yaml_dump(request: Request, who: Principal = Depends(require("admin", "supervisor"))) -> Any:
    """JSON value -> YAML text, in the key order given, for editing."""
    body = await _bounded_body(request)
    try:
        return {"yaml": await asyncio.to_thread(_dump, body)}
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise InvalidInput("El cuerpo no es JSON válido", {"reason": str(exc)}) from None
