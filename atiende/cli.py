"""`atiende`: one console script; packages add their subcommands through `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from atiende import __version__
from atiende.cliutil import add_config_option, config_dir_of

# Modules that add subcommands: each has `register(subparsers)`.
PLUGIN_MODULES: list[str] = [
    "atiende.commands.hours",
    "atiende.commands.route",
    "atiende.commands.speech",
    "atiende.commands.sip",
    "atiende.commands.simulate",
    "atiende.commands.desk",
    "atiende.commands.voicemail",
]


# ---- core commands --------------------------------------------------------------------------


def _cmd_version(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps({"name": "atiende", "version": __version__, "python": sys.version.split()[0]}))
    else:
        print(f"atiende {__version__}")
    return 0


def _cmd_config_validate(args: argparse.Namespace) -> int:
    from config.loader import ConfigError, load

    directory = args.dir if args.dir is not None else config_dir_of(args)
    try:
        loaded = load(directory)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"valid": False, "issues": [i.to_dict() for i in exc.issues]}, ensure_ascii=False))
        else:
            print(f"configuration {'in ' + str(directory) if directory else ''} is invalid "
                  f"({len(exc.issues)} problem{'s' if len(exc.issues) != 1 else ''}):", file=sys.stderr)
            for issue in exc.issues:
                print(f"  {issue}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"valid": True, "version": loaded.version}))
    else:
        print(f"configuration is valid (version {loaded.version})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from atiende.service import run_service

    return run_service(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atiende", description="Atiende contact center")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("version", help="print the version")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_version)

    p = sub.add_parser("run", help="run the service (HTTP API, SIP endpoint, IVR) in the foreground")
    add_config_option(p)
    p.add_argument("--http", metavar="HOST:PORT", help="HTTP listener (default from config: 127.0.0.1:8080)")
    p.add_argument("--sip", metavar="HOST:PORT", help="SIP listener (default from config: 127.0.0.1:5060)")
    p.add_argument("--rtp-ports", metavar="LOW-HIGH", help="RTP port range")
    p.add_argument("--clock", metavar="ISO", help="start the service clock at this instant (demos, tests)")
    p.add_argument("--no-sip", action="store_true", help="do not start the SIP endpoint")
    p.add_argument("--demo", action="store_true",
                   help="create the demo users and key with one-time passwords (HTTP on a loopback address only)")
    p.set_defaults(func=_cmd_run)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = cfg_sub.add_parser("validate", help="check a config directory layered over the defaults; lists every problem")
    p.add_argument("dir", nargs="?", type=Path, default=None, help="config directory (default: $ATIENDE_CONFIG)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_config_validate)

    for name in PLUGIN_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    raise SystemExit(main())
