"""fdpi_cli: the operator's and keepalived's entry point.

    fdpi_cli start | stop | reload
    fdpi_cli vrrp set master|backup
    fdpi_cli vrrp show [--json]

Every error is one line on stderr and a non-zero exit; see errors.py for the codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import config, role
from .errors import SkatError


def _print_show(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    print(f"role:         {info['role']}")
    print(f"vrrp_enable:  {info['vrrp_enable']}")
    print(f"since:        {info['since']}")
    if info.get("kernel_role") != info["role"]:
        print(f"kernel:       {info.get('kernel_role') or 'no rules loaded'}  (MISMATCH)")
    for name, value in sorted(info.get("counters", {}).items()):
        print(f"{name + ':':<24}{value}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fdpi_cli", description="skat-plugin VRRP control")
    p.add_argument("--config", metavar="PATH",
                   help="fastdpi.conf (default: $FDPI_CONF or /etc/dpi/fastdpi.conf)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="bridge the ports and load the master rule set")
    sub.add_parser("stop", help="remove the plugin's rules (bridges stay)")
    sub.add_parser("reload", help="re-read fastdpi.conf and re-apply the current role")

    vrrp = sub.add_parser("vrrp", help="VRRP role").add_subparsers(dest="vrrp", required=True)
    s = vrrp.add_parser("set", help="switch role (called by keepalived's notify scripts)")
    s.add_argument("role", choices=["master", "backup"])
    s.add_argument("--cause", default="cli", help="recorded with the switch (default: cli)")
    show = vrrp.add_parser("show", help="current role and counters")
    show.add_argument("--json", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    if args.command == "start":
        st = role.start(config.config_path(args.config))
        print(f"started: {st['role']}")
    elif args.command == "stop":
        role.stop()
        print("stopped")
    elif args.command == "reload":
        st = role.reload(config.config_path(args.config))
        print(f"reloaded: {st['role']}")
    elif args.vrrp == "set":
        st = role.set_role(args.role, cause=args.cause)
        print(f"role: {st['role']}")
    elif args.vrrp == "show":
        _print_show(role.show(), args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except SkatError as e:
        print(f"fdpi_cli: {e}", file=sys.stderr)
        return e.exit_code
