"""fdpi_cli: the operator's and keepalived's entry point.

    fdpi_cli start | stop | reload | check
    fdpi_cli vrrp set master|backup [--force]
    fdpi_cli vrrp show [--json]
    fdpi_cli vrrp subscribers [--json]
    fdpi_cli vrrp keepalived-config | check-group FILE... | track | handover [--cancel]
    fdpi_cli daemon
    fdpi_cli inspector

`reload` and `vrrp set` go through the supervising daemon when it runs (it orders them with
keepalived's events) and are applied directly when it does not (tests, containers).
Every error is one line on stderr (and in the journal at priority err) and a non-zero exit;
see errors.py for the codes. `--config PATH` may come before or after the command.

Only argparse is imported up front: `--help` and `vrrp show` must not pay for jsonschema,
pyroute2 or libnftables they do not use (each command imports what it needs). The entry
point is quickset.main(): `vrrp set` with the daemon running takes a leaner path still
there, before argparse, and comes here only for what it does not handle.
"""

from __future__ import annotations

import os
import sys

from . import __version__, errors
from .errors import SkatError

TYPE_CHECKING = False  # typing itself costs --help ~5 ms
if TYPE_CHECKING:
    import argparse
    from typing import Any

# Commands whose options belong to their own module: `module.main(argv) -> int`.
DELEGATED = {
    "daemon": "daemon",
    "inspector": "redirect.inspector",
    "keepalived-config": "election.keepalived_conf",
    "check-group": "config.group_check",
    "track": "election.health",
    "handover": "election.handover",
}
CONFIG_HELP = "fastdpi.conf (default: $FDPI_CONF or /etc/dpi/fastdpi.conf)"


def _print_show(info: dict, as_json: bool) -> None:
    if as_json:
        print(json_dumps(info))
        return
    kernel = info.get("kernel_role") or "no rules loaded"
    if not info.get("consistent", True):
        recorded = "the plugin is stopped" if info["role"] == "stopped" else \
            f"the recorded role is {info['role']}"
        kernel += f"  (MISMATCH: {recorded})"
    print(f"role:         {info['role']}")
    if info["role"] == "stopped":
        print(f"kernel:       {kernel}")
        return
    print(f"cause:        {info.get('cause') or '-'}")
    print(f"since:        {info['since']}")
    print(f"vrrp_enable:  {info['vrrp_enable']}")
    print(f"config:       {info.get('config')}")
    print(f"kernel:       {kernel}")
    if info.get("keepalived"):
        said = info["keepalived"]
        agree = "MISMATCH: " + info["election_mismatch"] if info.get("election_mismatch") \
            else "the role follows it"
        print(f"keepalived:   {said['state']} at {said['at']} ({agree})")
    ports = info.get("ports") or {}
    print(f"ports:        {', '.join(ports.get('names', []))}: "
          f"{'; '.join(ports.get('problems') or []) or 'up and bridged'}")
    fitness = info.get("fitness") or {}
    if fitness:
        verdict = "fit to be master" if fitness["fit"] else f"UNFIT: {fitness['reason']}"
        print(f"fitness:      {verdict} (by {fitness['by']})")
    if info.get("handover"):
        print("handover:     requested: keepalived holds this appliance back "
              "('fdpi_cli vrrp handover --cancel' to end it)")
    if info.get("awaiting_election"):
        print("election:     awaiting keepalived (master by the start rule; not announcing)")
    print(f"daemon:       {'pid ' + str(info['daemon']) if info.get('daemon') else 'not running'}")
    print(f"split_brain:  {'YES: another master is sending from bras_arp_mac' if info.get('split_brain') else 'no'}")  # noqa: E501
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
    redirect = info.get("redirect")
    if redirect:
        inspector = redirect.get("inspector") or {}
        print(f"redirect:     inspector {'alive' if inspector.get('alive') else 'NOT RUNNING'}"
              f", {len(inspector.get('lists') or {})} list(s) read"
              + (f"; LIST ERROR: {info['list_error']}" if info.get("list_error") else ""))
        for name, value in sorted((redirect.get("counters") or {}).items()):
            print(f"{'redirect_' + name + ':':<24}{value}")
    for line in info.get("attention") or []:
        print(f"NEEDS ACTION: {line}")


def _print_subscribers(as_json: bool) -> None:
    from .gateway import subscribers

    found = [{"ip": s.ip, "mac": s.mac, "expires": s.expires} for s in subscribers.read()]
    if as_json:
        print(json_dumps(found))
        return
    for sub in found:
        print(f"{sub['ip']:<40} {sub['mac']}  expires in {sub['expires']:g} s")


def json_dumps(value: object) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True)


def build_parser() -> argparse.ArgumentParser:
    import argparse

    # --config is accepted after the command too; SUPPRESS keeps a subcommand from
    # overwriting the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=CONFIG_HELP)
    p = argparse.ArgumentParser(prog="fdpi_cli", description="skat-plugin VRRP control")
    p.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    p.add_argument("--version", action="version", version=f"fdpi_cli (skat-plugin) {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("start", parents=[common],
                        help="bridge the ports and load the start role's rule set")
    st.add_argument("--wait-ports", type=float, default=0, metavar="SECONDS",
                    help="wait up to this long for ports that do not exist yet")
    sub.add_parser("stop", parents=[common], help="remove the plugin's rules (bridges stay)")
    sub.add_parser("reload", parents=[common],
                   help="re-read fastdpi.conf and re-apply the current role")
    ck = sub.add_parser("check", parents=[common],
                        help="everything start/reload would refuse, changing nothing")
    ck.add_argument("--wait-ports-at-boot", type=float, default=0, metavar="SECONDS",
                    help="while systemd boots the system, wait up to this long for ports "
                         "that do not exist yet (at any other time: fail at once)")
    d = sub.add_parser("daemon", help="the supervising process (see 'fdpi_cli daemon -h')",
                       add_help=False)
    d.add_argument("args", nargs=argparse.REMAINDER)
    i = sub.add_parser("inspector", help="the black-list redirect's inspector (see "
                                         "'fdpi_cli inspector -h')", add_help=False)
    i.add_argument("args", nargs=argparse.REMAINDER)

    vrrp = sub.add_parser("vrrp", help="VRRP role").add_subparsers(dest="vrrp", required=True)
    s = vrrp.add_parser("set", parents=[common],
                        help="switch role (called by keepalived's notify scripts)")
    s.add_argument("role", choices=["master", "backup"])
    s.add_argument("--cause", default="cli", help="recorded with the switch (default: cli)")
    s.add_argument("--force", action="store_true",
                   help="apply although the election's last word is unknown to the daemon; "
                        "refused while keepalived's latest state disagrees (use 'vrrp "
                        "handover')")
    show = vrrp.add_parser("show", parents=[common], help="current role and counters; exit "
                           f"{errors.MISMATCH} when the kernel's rules are not the role's")
    show.add_argument("--json", action="store_true")
    subs = vrrp.add_parser("subscribers", parents=[common],
                           help="the gateway's learned subscribers (bras_terminate_l2=1)")
    subs.add_argument("--json", action="store_true")
    for name, text in (("keepalived-config", "render keepalived.conf from fastdpi.conf"),
                       ("check-group", "compare the group-wide keys of several fastdpi.conf"),
                       ("track", "keepalived track script: exit 0 while fit to be master"),
                       ("handover", "move the gateway to the peer through keepalived "
                                    "(maintenance); --cancel to undo")):
        x = vrrp.add_parser(name, help=text, add_help=False)
        x.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _print_set(st: dict) -> None:
    print(f"ignored: {st['ignored']}" if st.get("ignored") else f"role: {st['role']}")


def _via_daemon(request: dict, asked: bool = False, raw: bytes | None = None) -> dict | None:
    """The daemon's answer, or None when no daemon runs (then the CLI acts itself).

    asked: quickset.py sent the request already and the daemon said `raw`."""
    from . import control

    answer = control.decode(raw) if asked else control.request(request)
    if answer is not None and answer.get("error"):
        # The same exit code as when the CLI acts itself (see errors.py).
        err = SkatError(answer["error"])
        err.exit_code = int(answer.get("exit_code", errors.FAILURE))
        raise err
    return answer


def _key_warnings(path: str, checking: bool = False) -> None:
    """Near-misses of the plugin's key names (keynames.py), before the command acts; and,
    for `check`, what the configuration leaves open (schema.subscriber_nets_warning)."""
    import syslog

    from . import report
    from .config import conffile, keynames, schema

    try:
        conf = conffile.read(path)
    except SkatError:
        return  # the command itself reports it
    lines = keynames.warnings(conf, schema.KEYS)
    if checking:
        lines += filter(None, [schema.subscriber_nets_warning(conf)])
    for line in lines:
        report.console(f"fdpi_cli: warning: {line}", syslog.LOG_WARNING)


def run(args: argparse.Namespace) -> int:
    command = args.vrrp if args.command == "vrrp" else args.command
    if command in DELEGATED:
        import importlib

        from . import config

        module = importlib.import_module(f"skat_plugin.{DELEGATED[command]}")
        return module.main(args.args, config_path=config.config_path(args.config))
    if command == "show":
        from . import role

        info = role.show()
        _print_show(info, args.json)
        needs_action = not info["consistent"] or info.get("attention")
        return errors.MISMATCH if needs_action else errors.OK
    if command == "subscribers":
        _print_subscribers(args.json)
        return errors.OK
    from . import config, role

    path = config.config_path(args.config)
    if command in ("start", "reload", "check"):
        _key_warnings(path, command == "check")
    if command == "start":
        st = role.start(path, wait_ports=args.wait_ports)
        print(f"started: {st['role']}")
    elif command == "stop":
        role.stop()
        _stopped_metrics()
        print("stopped")
    elif command == "reload":
        st = _via_daemon({"op": "reload", "config": path}) or role.reload(path)
        print(f"reloaded: {st['role']}")
        _wait_for_inspector(st)
    elif command == "check":
        from . import check

        res = check.run(path, wait_at_boot=args.wait_ports_at_boot)
        for note in res["notes"]:
            print(f"note: {note}")
        for warning in res["warnings"]:
            from . import report

            report.console(f"fdpi_cli: warning: {warning}")  # at err: an operator must act
        if res["sync_key"]:
            print(f"sync key: fingerprint {res['sync_key']} (equal on every appliance of "
                  f"the group)")
        running = f", running as {res['running_role']}" if res["running_role"] else ""
        print(f"ok: {res['config']}: {res['pairs']} bridge(s) of {', '.join(res['ports'])}, "
              f"vrrp_enable={res['vrrp_enable']}, start role {res['start_role']}{running}; "
              f"the kernel takes both rule sets (dry run, nothing changed)")
    elif command == "set":
        request = {"op": "set", "role": args.role, "cause": args.cause, "force": args.force}
        st = _via_daemon(request, args.asked, args.answer) \
            or role.set_role(args.role, args.cause, force=args.force)
        _print_set(st)
        if st.get("ignored"):
            return errors.ROLE_REFUSED  # nothing changed: say so to a script too
    return errors.OK


def _stopped_metrics() -> None:
    """role="stopped" for the metrics: the daemon, which writes them, stopped first (its
    unit stops before skat-plugin.service's `fdpi_cli stop`)."""
    from . import metrics, state

    if state.daemon_alive():
        return  # it writes the stop itself at its next turn
    path = os.environ.get("SKAT_METRICS_FILE") or metrics.DEFAULT_PATH
    try:
        metrics.write(path, metrics.render({"role": "stopped"}, {}, 0))
    except OSError as e:
        from . import report

        report.warning(f"cannot write {path}: {e}", cause="stop")


def _wait_for_inspector(st: dict[str, Any]) -> None:
    """The URL and server-name lists live in the inspector: reload returns once it has
    read them (or says why not), so that what the operator reloaded is what is in effect.
    st: the state the reload left (its configuration snapshot)."""
    from . import state
    from .redirect import apply

    if st.get("config"):
        said = apply.wait_for_inspector(state.config_of(st))
        if said:
            print(said, file=sys.stderr if said.startswith("warning") else sys.stdout)


def _config_from_rest(args: argparse.Namespace) -> None:
    """Delegated commands take their own options; `--config PATH` among them is ours."""
    rest, i = [], 0
    while i < len(args.args):
        arg = args.args[i]
        if arg == "--config" and i + 1 < len(args.args):
            args.config, i = args.args[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            args.config = arg.partition("=")[2]
        else:
            rest.append(arg)
        i += 1
    args.args = rest


def main(argv: list[str] | None = None, *, asked: bool = False,
         answer: bytes | None = None) -> int:
    """The full CLI. asked: quickset.py sent this `vrrp set` to the daemon already, and
    `answer` is what the daemon said (None: no daemon answered; apply it directly)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv, asked, answer)
    except BrokenPipeError:
        # `fdpi_cli vrrp show | head`: the reader is gone. Quiet, with the status a shell
        # gives any tool cut off by a closed pipe; no traceback at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return errors.BROKEN_PIPE


def _main(argv: list[str], asked: bool, answer: bytes | None) -> int:
    parser = build_parser()
    # Delegated commands own their options: argparse's REMAINDER alone would refuse one
    # that comes first ("daemon --verbose"), so unknown options are handed on to them.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "args", None) is None:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.args = extra + args.args
    if getattr(args, "args", None) is not None:
        _config_from_rest(args)
    args.asked, args.answer = asked, answer
    try:
        rc = run(args)
        sys.stdout.flush()
    except SkatError as e:
        from . import report

        report.console(f"fdpi_cli: {e}", exit_code=e.exit_code)
        command = args.vrrp if args.command == "vrrp" else args.command
        if command in ("start", "check") and os.environ.get("INVOCATION_ID"):
            # Run by skat-plugin.service: after a restart's stop, a failed start leaves the
            # appliance without rules and without keepalived. Say so where it is read.
            from . import role

            left = role.left_without_plugin()
            if left:
                report.console(f"fdpi_cli: {left}")
        return e.exit_code
    return rc
