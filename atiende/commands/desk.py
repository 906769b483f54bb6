"""`atiende desk ...`: users, API keys and ticket status from the command line, against the service's Redis.

    atiende desk create-user ana --name "Ana Informadora" --role agent_n1 --skill general [--password-stdin]
    atiende desk set-password ana [--password-stdin | --password-env VAR]   # ends every session of ana
    atiende desk disable-user ana / enable-user ana                      # disabling ends every session
    atiende desk list-users [--json]        (alias: users)
    atiende desk create-key ivr-node-2 --role supervisor          # prints the key once
    atiende desk list-keys / revoke-key ivr-node-2
    atiende desk status K7M-4PX [--spoken]

The Redis is the one in the configuration (`ATIENDE_REDIS_URL` / `redis.url`) or `--redis-url`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from atiende.cliutil import add_config_option, fail, offline_runtime
from core.errors import AtiendeError

if TYPE_CHECKING:
    from config.models import Settings
    from desk.auth import Credential

ROLES = ("agent_n1", "agent_n2", "supervisor", "admin")


def _with_desk(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    from atiende.runtime import Runtime
    from core.redis_server import RedisUnavailable, check_url, running_url
    from core.store import Store

    base = offline_runtime(args)
    url = args.redis_url or base.settings.redis.url or os.environ.get("ATIENDE_REDIS_URL")
    if not url:  # the private redis-server of an `atiende run` on this data directory
        url = running_url(base.settings.service.data_dir / "redis")
    if not url:
        return fail("no Redis to talk to: start `atiende run` first, or set ATIENDE_REDIS_URL (or redis.url, or "
                    "--redis-url) to the service's Redis")
    try:
        check_url(url)
    except RedisUnavailable as exc:
        return fail(str(exc))
    rt = Runtime(base.loaded, store=Store(url, prefix=base.settings.redis.prefix), config_dir=base.config_dir)

    async def run() -> int:
        try:
            return await work(rt.desk)
        except AtiendeError as exc:
            return fail(f"{exc.message} {json.dumps(exc.details, ensure_ascii=False) if exc.details else ''}".strip(), 1)
        finally:
            await rt.store.close()

    return asyncio.run(run())


def demo_refused(settings: Settings) -> str | None:
    """Why `atiende run` must not start with the demo accounts: they are for a machine's own loopback only."""
    from desk.auth import is_loopback  # lazily: `atiende` commands that need no desk stay light

    if settings.desk.demo and not is_loopback(settings.http.host):
        return (f"demo accounts (--demo / desk.demo) are refused when HTTP listens on {settings.http.host}, which "
                "other machines can reach: bind 127.0.0.1, or run without the demo and create users with "
                "`atiende desk create-user`")
    return None


def announce_credentials(created: list[Credential]) -> None:
    """Print secrets created at start-up once, on the console (stdout), never through the logger."""
    if not created:
        return
    lines = ["", "=" * 78, "Credenciales creadas en este arranque (se muestran solo esta vez; guárdelas ahora):"]
    for c in created:
        what = "usuario" if c.kind == "user" else "clave API"
        lines.append(f"  {what:9} {c.name:14} {','.join(c.roles):22} {c.secret}")
    lines += ["Cámbielas con `atiende desk set-password` / `revoke-key` cuando quiera.", "=" * 78, ""]
    print("\n".join(lines), flush=True)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise SystemExit(fail(f"environment variable {args.password_env} is not set"))
        return value
    first = getpass.getpass("Contraseña: ")
    if getpass.getpass("Repita la contraseña: ") != first:
        raise SystemExit(fail("the passwords differ"))
    return first


def _cmd_create_user(args: argparse.Namespace) -> int:
    password = _password(args)

    async def work(desk: Any) -> int:
        u = await desk.auth.create_user(args.username, args.name or args.username, args.role, password, level=args.level,
                                        skills=args.skill or None, sip_uri=args.sip_uri, actor="cli")
        print(json.dumps({"username": u.username, "roles": u.roles, "agent_id": u.agent_id}, ensure_ascii=False))
        return 0

    return _with_desk(args, work)


def _cmd_create_key(args: argparse.Namespace) -> int:
    async def work(desk: Any) -> int:
        key = await desk.auth.create_api_key(args.name, args.role, actor="cli")
        print(json.dumps({"name": args.name, "roles": args.role, "key": key}))
        return 0

    return _with_desk(args, work)


def _cmd_users(args: argparse.Namespace) -> int:
    async def work(desk: Any) -> int:
        await desk.auth.bootstrap()
        for u in await desk.auth.list_users():
            print(json.dumps({"username": u.username, "name": u.name, "roles": u.roles, "agent_id": u.agent_id,
                              "active": u.active, "demo": u.demo}, ensure_ascii=False))
        return 0

    return _with_desk(args, work)


def _cmd_set_password(args: argparse.Namespace) -> int:
    password = _password(args)

    async def work(desk: Any) -> int:
        await desk.auth.set_password(args.username, password, actor="cli")
        print(json.dumps({"username": args.username, "password": "changed", "sessions": "ended"}))
        return 0

    return _with_desk(args, work)


def _cmd_set_active(active: bool) -> Callable[[argparse.Namespace], int]:
    def cmd(args: argparse.Namespace) -> int:
        async def work(desk: Any) -> int:
            u = await desk.auth.set_active(args.username, active, actor="cli")
            print(json.dumps({"username": u.username, "active": u.active}))
            return 0

        return _with_desk(args, work)

    return cmd


def _cmd_list_keys(args: argparse.Namespace) -> int:
    async def work(desk: Any) -> int:
        await desk.auth.bootstrap()
        for k in await desk.auth.list_keys():
            print(k.model_dump_json())
        return 0

    return _with_desk(args, work)


def _cmd_revoke_key(args: argparse.Namespace) -> int:
    async def work(desk: Any) -> int:
        await desk.auth.revoke_key(args.name, actor="cli")
        print(json.dumps({"name": args.name, "revoked": True}))
        return 0

    return _with_desk(args, work)


def _cmd_status(args: argparse.Namespace) -> int:
    async def work(desk: Any) -> int:
        if args.json:
            print(json.dumps(await desk.tickets.status_view(args.ref), ensure_ascii=False))
        else:
            print(await desk.tickets.status_text(args.ref, spoken=args.spoken))
        return 0

    return _with_desk(args, work)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to `atiende`."""
    desk = sub.add_parser("desk", help="desk users, API keys and ticket status")
    dsub = desk.add_subparsers(dest="desk_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        add_config_option(p)
        p.add_argument("--redis-url", default=None, help="the service's Redis (default: ATIENDE_REDIS_URL / redis.url)")

    p = dsub.add_parser("create-user", help="create a user (agents also get an agent record)")
    common(p)
    p.add_argument("username")
    p.add_argument("--name", help="display name")
    p.add_argument("--role", action="append", choices=ROLES, required=True, help="repeat for several roles")
    p.add_argument("--level", type=int, choices=(1, 2), help="agent level (default from the role)")
    p.add_argument("--skill", action="append", help="agent skill, repeatable (default: general)")
    p.add_argument("--sip-uri", help="where calls for this agent are sent")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    g.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    p.set_defaults(func=_cmd_create_user)

    p = dsub.add_parser("create-key", help="create an API key for a machine; printed once, stored hashed")
    common(p)
    p.add_argument("name")
    p.add_argument("--role", action="append", choices=ROLES, required=True)
    p.set_defaults(func=_cmd_create_key)

    for name in ("list-users", "users"):
        p = dsub.add_parser(name, help="list users, one JSON object a line (demo accounts follow the config first)")
        common(p)
        p.set_defaults(func=_cmd_users)

    p = dsub.add_parser("set-password", help="set a user's password; every session of the user ends")
    common(p)
    p.add_argument("username")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    g.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    p.set_defaults(func=_cmd_set_password)

    p = dsub.add_parser("disable-user", help="refuse the user's logins and end every session of the user")
    common(p)
    p.add_argument("username")
    p.set_defaults(func=_cmd_set_active(False))

    p = dsub.add_parser("enable-user", help="let a disabled user log in again")
    common(p)
    p.add_argument("username")
    p.set_defaults(func=_cmd_set_active(True))

    p = dsub.add_parser("list-keys", help="list API keys (names and roles; keys are stored hashed)")
    common(p)
    p.set_defaults(func=_cmd_list_keys)

    p = dsub.add_parser("revoke-key", help="revoke an API key by name")
    common(p)
    p.add_argument("name")
    p.set_defaults(func=_cmd_revoke_key)

    p = dsub.add_parser("status", help="what a citizen is told about a ticket reference")
    common(p)
    p.add_argument("ref")
    p.add_argument("--spoken", action="store_true", help="the text-to-speech form (reference letter by letter)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)
