"""`fdpi_cli vrrp keepalived-config`: keepalived.conf from fastdpi.conf.

    fdpi_cli vrrp keepalived-config [--output FILE] [--scripts-dir DIR] [--no-require-daemon]

verify() -> generate(), as in VyOS: config.load() has validated every value already (schema),
verify() adds what only the generator needs and raises one ConfigError naming file, line and
key; render_keepalived() fills keepalived/keepalived.conf.tmpl. Each value is checked once
more against a strict pattern just before it is written, so nothing from fastdpi.conf can
reach keepalived's parser unchecked (no spaces, quotes, braces or comment characters).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pwd
import re
import string
import sys
from pathlib import Path

from .. import atomicfile
from ..config import Config, conffile
from ..errors import ConfigError, SkatError
from . import trackfile

INSTALLED_SCRIPTS_DIR = "/usr/share/skat-plugin/keepalived"
HANDOVER_FILE = "handover.track"  # handover.NAME: `fdpi_cli vrrp handover` writes it

# Without the daemon (--no-require-daemon) keepalived must run the track script itself: at
# most once a second (interval is whole seconds, >= 1). fall 2: one failed run (e.g. a
# reload in progress) does not hand over; two do, within 2 s.
TRACK_INTERVAL = 1
TRACK_TIMEOUT = 1
TRACK_FALL = 2
TRACK_RISE = 2

# A plain token for keepalived's parser, which gives meanings to comments (# !), quotes,
# blocks, `$` (its variables), `~` (sequences) and more: a password is one, or it is refused.
_SAFE = re.compile(r"\A[A-Za-z0-9_.:/@%+,=\-]+\Z")
_SCRIPTS_DIR = re.compile(r"\A/[A-Za-z0-9_./\-]{0,200}\Z")


def template_path() -> Path:
    """keepalived/keepalived.conf.tmpl of a checkout, or the installed copy."""
    checkout = Path(__file__).resolve().parents[2] / "keepalived" / "keepalived.conf.tmpl"
    if checkout.is_file():
        return checkout
    return Path(INSTALLED_SCRIPTS_DIR) / "keepalived.conf.tmpl"


def default_scripts_dir() -> str:
    return os.environ.get("SKAT_KEEPALIVED_DIR") or INSTALLED_SCRIPTS_DIR


def _fail(cfg: Config, key: str, message: str) -> ConfigError:
    """A ConfigError with the key's line, read again from the file the Config came from."""
    line = None
    try:
        entry = conffile.read(cfg.source).get(key)
        line = entry.line if entry else None
    except (OSError, SkatError):
        pass
    return ConfigError(message, cfg.source, line, key)


def verify(cfg: Config, scripts_dir: str) -> None:
    """What keepalived needs beyond the schema; raises ConfigError."""
    if not cfg.vrrp_enabled:
        raise _fail(cfg, "vrrp_enable", "is 0: the appliance stays master and ignores "
                                        "keepalived; set vrrp_enable=1 before generating "
                                        "keepalived.conf")
    if cfg.get("vrrp_interface") is None:
        raise _fail(cfg, "vrrp_interface", "missing: set it to the interface that carries "
                                           "VRRP between the appliances (not a bridge port)")
    if cfg.get("vrrp_mgmt_vip") is None:
        raise _fail(cfg, "vrrp_mgmt_vip", "missing: keepalived needs at least one virtual "
                                          "address; set a floating management address with "
                                          "prefix, e.g. 192.0.2.10/24")
    net = ipaddress.ip_interface(cfg["vrrp_mgmt_vip"])
    vip = net.ip
    if vip.is_multicast or vip.is_loopback or vip.is_unspecified or vip.is_link_local or \
            (net.network.prefixlen < 31 and vip in (net.network.network_address,
                                                    net.network.broadcast_address)):
        raise _fail(cfg, "vrrp_mgmt_vip", f"{cfg['vrrp_mgmt_vip']} cannot be a host's "
                                          f"address; expected a unicast address of the VRRP "
                                          f"network with its prefix, e.g. 192.0.2.10/24")
    own = [("vrrp_unicast_src", a) for a in [cfg.get("vrrp_unicast_src")] if a] + \
          [("vrrp_unicast_peers", a) for a in cfg.get("vrrp_unicast_peers") or []]
    for key, addr in own:
        if ipaddress.ip_address(addr) == vip:
            raise _fail(cfg, key, f"{addr} is vrrp_mgmt_vip's address; the floating "
                                  f"address cannot be an appliance's own address")
    password = cfg.get("vrrp_auth_pass")
    if password is not None and not _SAFE.match(password):
        raise _fail(cfg, "vrrp_auth_pass", "may hold only letters, digits and _ . : / @ % "
                                           "+ , = - (keepalived.conf gives the others a "
                                           "meaning: comments, quotes, blocks, variables); "
                                           "choose another password")
    user = cfg["vrrp_script_user"]
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        raise _fail(cfg, "vrrp_script_user", f"user {user!r} does not exist on this "
                                             f"host; keepalived would not run the scripts") \
            from None
    if uid != 0:
        # keepalived runs the scripts with that user's rights and no capabilities; changing
        # nftables rules needs CAP_NET_ADMIN, so every role switch would fail.
        raise _fail(cfg, "vrrp_script_user", f"user {user!r} is not root (uid {uid}): the "
                                             f"notify scripts change nftables rules, which "
                                             f"needs root; use root")
    if not _SCRIPTS_DIR.match(scripts_dir):
        raise ConfigError(f"--scripts-dir {scripts_dir!r} is not valid: expected an absolute "
                          f"path of letters, digits and _ . / -")


def _safe(value: object) -> str:
    """The last gate before the file: a plain token, or a bug upstream."""
    text = str(value)
    if not _SAFE.match(text):
        raise ValueError(f"refusing to write {text!r} into keepalived.conf")
    return text


def _number(value: float) -> str:
    return f"{value:g}"


def _tracking(scripts_dir: str, require_daemon: bool,
              track_file: str | None) -> tuple[str, str]:
    """The fitness check's definition and its use in the instance, and the handover file.

    With the daemon: the track file it writes when its verdict changes (trackfile.py),
    watched by keepalived with inotify; nothing runs on a timer. Without it, only a script
    that keepalived runs every second can look (docs/keepalived.md, *Fitness*). Either way
    `fdpi_cli vrrp handover` moves the gateway through the handover file (handover.py).
    """
    track = Path(track_file or trackfile.path())
    handover = (
        "# `fdpi_cli vrrp handover` (maintenance): -253 lowers this appliance's priority to\n"
        "# 1, so that the peer preempts; -254 (below -253) is FAULT; 0, or no file, changes\n"
        "# nothing (`--cancel`). Weight 1: the number is added to the priority.\n"
        "track_file skat_handover {\n"
        f'    file "{_safe(track.with_name(HANDOVER_FILE))}"\n'
        "    weight 1\n"
        "}\n")
    if require_daemon:
        return (
            "# Fit to be master? 0 = fit, anything else = FAULT (weight 0). The supervising\n"
            "# daemon (`fdpi_cli daemon`) writes its verdict when it changes (ports up and\n"
            "# bridged, rules in place, no split brain to hand over), and 1 when it stops or\n"
            "# dies. keepalived reads the file on inotify: no script runs on a timer.\n"
            "# init_file 1: created as 1 while no daemon has written it (keepalived would\n"
            "# read a missing file as 0).\n"
            "track_file skat_fitness {\n"
            f'    file "{_safe(track)}"\n'
            "    weight 0\n"
            "    init_file 1\n"
            "}\n\n" + handover,
            "    track_file {\n"
            "        skat_fitness\n"
            "        skat_handover\n"
            "    }\n")
    return (
        "# Fit to be master? (bridges up, rules loaded, ...) Without the supervising daemon\n"
        "# only a script can look: keepalived runs it at most once a second;\n"
        f"# fall {TRACK_FALL} = hand over within {TRACK_FALL} seconds.\n"
        "vrrp_script skat_track {\n"
        f'    script "{_safe(scripts_dir)}/track"\n'
        f"    interval {TRACK_INTERVAL}\n"
        f"    timeout {TRACK_TIMEOUT}\n"
        f"    fall {TRACK_FALL}\n"
        f"    rise {TRACK_RISE}\n"
        "}\n\n" + handover,
        "    track_script {\n"
        "        skat_track\n"
        "    }\n"
        "    track_file {\n"
        "        skat_handover\n"
        "    }\n")


def render_keepalived(cfg: Config, scripts_dir: str = INSTALLED_SCRIPTS_DIR,
                      require_daemon: bool = True, track_file: str | None = None) -> str:
    """keepalived.conf for `cfg` (a validated Config); raises ConfigError when it cannot.

    scripts_dir: where the notify scripts (and track) are (the package installs them in
    /usr/share/skat-plugin/keepalived). require_daemon: fitness comes from the supervising
    daemon (`fdpi_cli daemon`, the notify FIFO's reader) through its track file, at
    track_file (default: trackfile.path(), in $SKAT_RUN_DIR), so the appliance is unfit
    while no daemon runs; without it, keepalived runs the track script every second.
    """
    scripts_dir = scripts_dir.rstrip("/") or "/"
    verify(cfg, scripts_dir)
    interface = _safe(cfg["vrrp_interface"])
    peers = [_safe(p) for p in cfg.get("vrrp_unicast_peers") or []]

    global_extra = ""
    if peers:
        transport = (f"\n    # Unicast: adverts only to and from the other appliances.\n"
                     f"    unicast_src_ip {_safe(cfg['vrrp_unicast_src'])}\n"
                     f"    unicast_peer {{\n"
                     + "".join(f"        {p}\n" for p in peers)
                     + "    }\n")
        global_extra = ("    # Drop unicast adverts whose source is not a unicast_peer.\n"
                        "    vrrp_check_unicast_src\n")
    else:
        transport = "\n    # Multicast adverts (224.0.0.18): no unicast_peer configured.\n"

    if cfg["vrrp_preempt"] == 0:
        preempt = ("\n    # vrrp_preempt=0: a returning higher priority does not take over.\n"
                   "    nopreempt\n")
    elif cfg["vrrp_preempt_delay"] > 0:
        preempt = (f"\n    # A higher priority takes over only this many seconds after its start\n"
                   f"    # or after it first sees a lower-priority master.\n"
                   f"    preempt_delay {_safe(cfg['vrrp_preempt_delay'])}\n")
    else:
        preempt = "\n    # A higher priority takes over at once (preempt, keepalived's default).\n"

    authentication = ""
    if cfg.get("vrrp_auth_pass") is not None:
        authentication = ("\n    authentication {\n"
                          "        auth_type PASS\n"
                          f"        auth_pass {_safe(cfg['vrrp_auth_pass'])}\n"
                          "    }\n")

    tracking, track_use = _tracking(scripts_dir, require_daemon, track_file)
    values = {
        "source": re.sub(r"[^ -~]", "?", cfg.source),  # a path, shown in a comment only
        "bras_gateway": ", ".join(_safe(cfg[k]) for k in
                                 ("bras_arp_ip", "bras_ipv6_address", "bras_ipv6_link_local")
                                 if cfg.get(k) is not None),
        "script_user": _safe(cfg["vrrp_script_user"]),
        "notify_fifo": _safe(cfg["vrrp_notify_fifo"]),
        "global_extra": global_extra,
        "tracking": tracking,
        "track_use": track_use,
        "track_ports": "".join(f"        {_safe(port)}\n" for port in cfg.ports),
        "instance": _safe(cfg["vrrp_instance"]),  # FIFO lines: INSTANCE "<name>" ...
        "interface": interface,
        "router_id": _safe(cfg["vrrp_router_id"]),
        "priority": _safe(cfg["vrrp_priority"]),
        "advert_int": _safe(_number(cfg["vrrp_advert_int"])),
        "version": _safe(cfg["vrrp_version"]),
        "preempt": preempt,
        "transport": transport,
        "authentication": authentication,
        "mgmt_vip": _safe(str(ipaddress.ip_interface(cfg["vrrp_mgmt_vip"]))),
        "scripts_dir": _safe(scripts_dir),
    }
    return string.Template(template_path().read_text()).substitute(values)


def main(argv: list[str], config_path: str) -> int:
    p = argparse.ArgumentParser(prog="fdpi_cli vrrp keepalived-config",
                                description="render keepalived.conf from fastdpi.conf")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write here (atomically) instead of standard output")
    p.add_argument("--scripts-dir", default=default_scripts_dir(), metavar="DIR",
                   help=f"where the notify and track scripts are (default: "
                        f"$SKAT_KEEPALIVED_DIR or {INSTALLED_SCRIPTS_DIR})")
    p.add_argument("--no-require-daemon", action="store_true",
                   help="for setups without the supervising daemon: keepalived runs the "
                        "track script every second instead of watching the daemon's track "
                        "file, and a missing daemon is not a fault")
    args = p.parse_args(argv)
    from .. import config

    try:
        text = render_keepalived(config.load(config_path), args.scripts_dir,
                                 require_daemon=not args.no_require_daemon)
    except SkatError as e:
        print(f"fdpi_cli: {e}", file=sys.stderr)
        return e.exit_code
    if args.output:
        # keepalived never reads half a file; root only: it holds vrrp_auth_pass.
        atomicfile.write(args.output, text, mode=0o600)
    else:
        sys.stdout.write(text)
    return 0
