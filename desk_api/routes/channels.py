"""Channel webhooks (Telegram, WhatsApp, e-mail), the web chat socket and widget, and the files citizens sent.

Importing `desk_api.channels.outbound` registers the senders that deliver agents' replies on each channel."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from core.errors import NotFound
from desk.models import Principal
from desk_api.auth import require
from desk_api.channels import email, outbound, telegram, webchat, whatsapp
from desk_api.deps import services_of
from desk_api.scope import may_see

router = APIRouter()
SENDERS = outbound.WRITTEN_CHANNELS
for _module in (webchat, telegram, whatsapp, email):
    router.include_router(_module.router)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _inside(data_dir: Path, rel: str) -> Path | None:
    root = data_dir.resolve()
    path = (root / rel).resolve()
    return path if root in path.parents and path.is_file() else None


@router.get("/api/v1/tickets/{ref}/attachments/{sha256}", tags=["channels"])
async def attachment(request: Request, ref: str, sha256: str,
                     who: Principal = Depends(require("agent_n1", "agent_n2", "supervisor"))) -> FileResponse:
    """A file a citizen sent, served only through a ticket that holds it (the path comes from the ticket, never
    from the request) and only to who may see that ticket."""
    rt = services_of(request)
    if not _SHA256.match(sha256):
        raise NotFound("no such attachment", {"sha256": sha256[:80]})
    interactions = await rt.desk.tickets.interactions(ref)
    await may_see(rt.desk, who, await rt.desk.tickets.get(ref), interactions)
    for it in interactions:
        for item in it.data.get("attachments") or []:
            if isinstance(item, dict) and item.get("sha256") == sha256 and isinstance(item.get("path"), str):
                path = await asyncio.to_thread(_inside, Path(rt.data_dir), str(item["path"]))
                if path is not None:
                    return FileResponse(path, media_type=str(item.get("content_type") or "application/octet-stream"),
                                        filename=str(item.get("name") or path.name),
                                        headers={"X-Content-Type-Options": "nosniff",
                                                 "Content-Security-Policy": "sandbox"})
    raise NotFound("no such attachment on this ticket", {"ref": ref, "sha256": sha256})
