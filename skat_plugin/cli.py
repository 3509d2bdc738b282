"""fdpi_cli: the operator's and keepalived's entry point.

    fdpi_cli start | stop | reload
    fdpi_cli vrrp set master|backup [--force]
    fdpi_cli vrrp show [--json]
    fdpi_cli vrrp subscribers [--json]
    fdpi_cli vrrp keepalived-config | check-group FILE... | track
    fdpi_cli daemon
    fdpi_cli inspector

`reload` and `vrrp set` go through the supervising daemon when it runs (it orders them with
keepalived's events) and are applied directly when it does not (tests, containers).
Every error is one line on stderr and a non-zero exit; see errors.py for the codes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from . import config, role
from .errors import SkatError

# Commands whose options belong to their own module: `module.main(argv) -> int`.
DELEGATED = {
    "daemon": "daemon",
    "inspector": "redirect.inspector",
    "keepalived-config": "keepalived_conf",
    "check-group": "group_check",
    "track": "health",
}


def _print_show(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    print(f"role:         {info['role']}")
    print(f"vrrp_enable:  {info['vrrp_enable']}")
    print(f"since:        {info['since']}")
    if info.get("kernel_role") != info["role"]:
        print(f"kernel:       {info.get('kernel_role') or 'no rules loaded'}  (MISMATCH)")
    if info.get("awaiting_election"):
        print("election:     awaiting keepalived (master by the start rule; not announcing)")
    if info.get("split_brain"):
        print("split_brain:  YES: another master is sending from bras_arp_mac")
    for name, value in sorted(info.get("counters", {}).items()):
        print(f"{name + ':':<24}{value}")
    gateway = info.get("gateway")
    if gateway:
        subs = gateway.get("subscribers") or {}
        print(f"gateway:      L2 termination, {subs.get('ipv4', 0)} IPv4 and "
              f"{subs.get('ipv6', 0)} IPv6 subscribers"
              + (" (dormant: kept for a takeover)" if info["role"] != "master" else ""))
        for name, value in sorted((gateway.get("counters") or {}).items()):
            print(f"{'gateway_' + name + ':':<24}{value}")


def _print_subscribers(as_json: bool) -> None:
    from .gateway import subscribers

    found = [{"ip": s.ip, "mac": s.mac, "expires": s.expires} for s in subscribers.read()]
    if as_json:
        print(json.dumps(found, indent=2))
        return
    for sub in found:
        print(f"{sub['ip']:<40} {sub['mac']}  expires in {sub['expires']:g} s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fdpi_cli", description="skat-plugin VRRP control")
    p.add_argument("--config", metavar="PATH",
                   help="fastdpi.conf (default: $FDPI_CONF or /etc/dpi/fastdpi.conf)")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("start", help="bridge the ports and load the start role's rule set")
    st.add_argument("--wait-ports", type=float, default=0, metavar="SECONDS",
                    help="wait up to this long for ports that do not exist yet (boot)")
    sub.add_parser("stop", help="remove the plugin's rules (bridges stay)")
    sub.add_parser("reload", help="re-read fastdpi.conf and re-apply the current role")
    d = sub.add_parser("daemon", help="the supervising process (see 'fdpi_cli daemon -h')",
                       add_help=False)
    d.add_argument("args", nargs=argparse.REMAINDER)
    i = sub.add_parser("inspector", help="the black-list redirect's inspector (see "
                                         "'fdpi_cli inspector -h')", add_help=False)
    i.add_argument("args", nargs=argparse.REMAINDER)

    vrrp = sub.add_parser("vrrp", help="VRRP role").add_subparsers(dest="vrrp", required=True)
    s = vrrp.add_parser("set", help="switch role (called by keepalived's notify scripts)")
    s.add_argument("role", choices=["master", "backup"])
    s.add_argument("--cause", default="cli", help="recorded with the switch (default: cli)")
    s.add_argument("--force", action="store_true",
                   help="apply even if keepalived's latest notify FIFO state disagrees")
    show = vrrp.add_parser("show", help="current role and counters")
    show.add_argument("--json", action="store_true")
    subs = vrrp.add_parser("subscribers", help="the gateway's learned subscribers "
                                              "(bras_terminate_l2=1)")
    subs.add_argument("--json", action="store_true")
    for name, text in (("keepalived-config", "render keepalived.conf from fastdpi.conf"),
                       ("check-group", "compare the group-wide keys of several fastdpi.conf"),
                       ("track", "keepalived track script: exit 0 while fit to be master")):
        x = vrrp.add_parser(name, help=text, add_help=False)
        x.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _via_daemon(request: dict[str, Any]) -> dict[str, Any] | None:
    """The daemon's answer, or None when no daemon runs (then the CLI acts itself)."""
    from . import control

    answer = control.request(request)
    if answer is not None and answer.get("error"):
        # The same exit code as when the CLI acts itself (2: bad config, 3: role refused).
        err = SkatError(answer["error"])
        err.exit_code = int(answer.get("exit_code", 1))
        raise err
    return answer


def run(args: argparse.Namespace) -> int:
    command = args.vrrp if args.command == "vrrp" else args.command
    if command in DELEGATED:
        module = importlib.import_module(f"skat_plugin.{DELEGATED[command]}")
        return module.main(args.args, config_path=config.config_path(args.config))
    if command == "start":
        st = role.start(config.config_path(args.config), wait_ports=args.wait_ports)
        print(f"started: {st['role']}")
    elif command == "stop":
        role.stop()
        print("stopped")
    elif command == "reload":
        path = config.config_path(args.config)
        st = _via_daemon({"op": "reload", "config": path}) or role.reload(path)
        print(f"reloaded: {st['role']}")
    elif command == "set":
        request = {"op": "set", "role": args.role, "cause": args.cause, "force": args.force}
        st = _via_daemon(request) or role.set_role(args.role, args.cause, force=args.force)
        if st.get("ignored"):
            print(f"ignored: {st['ignored']}")
        else:
            print(f"role: {st['role']}")
    elif command == "show":
        _print_show(role.show(), args.json)
    elif command == "subscribers":
        _print_subscribers(args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Delegated commands own their options: argparse's REMAINDER alone would refuse one
    # that comes first ("daemon --verbose"), so unknown options are handed on to them.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "args", None) is None:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.args = extra + args.args
    try:
        return run(args)
    except SkatError as e:
        print(f"fdpi_cli: {e}", file=sys.stderr)
        return e.exit_code
