"""The browser pages: agent desk, admin and supervisor pages, served as static files (no front-end build).

Besides the files, a small helper the pages need (the live events stream is desk_api/routes/live.py):
- `POST /desk/api/yaml/parse` and `/desk/api/yaml/dump`: YAML <-> JSON for the admin editors, with the line
  and column of a syntax error, so the browser needs no YAML library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, RedirectResponse

from core.errors import InvalidInput, NotFound
from desk.models import Principal
from desk_api.auth import require

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


@router.post("/desk/api/yaml/parse")
async def yaml_parse(request: Request, who: Principal = Depends(require("admin", "supervisor"))) -> Any:
    """YAML text -> JSON value; a syntax error comes back as 422 with its line and column."""
    text = (await request.body()).decode("utf-8", "replace")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        loc = f"línea {mark.line + 1}, columna {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise InvalidInput("YAML no válido", [{"loc": loc, "reason": problem, "line": line}]) from None


@router.post("/desk/api/yaml/dump")
async def yaml_dump(request: Request, who: Principal = Depends(require("admin", "supervisor"))) -> Any:
    """JSON value -> YAML text, in the key order given, for editing."""
    try:
        value = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidInput("the body is not JSON", {"reason": str(exc)}) from None
    return {"yaml": yaml.safe_dump(value, allow_unicode=True, sort_keys=False, default_flow_style=False, width=120)}
