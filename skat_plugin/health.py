"""`fdpi_cli vrrp track`: keepalived's track script. Exit 0 while fit to be master.

    fdpi_cli vrrp track [--require-daemon]

Unfit (exit 1, one line on stderr saying why), checked in this order:
  1. the plugin is not started (no state: `fdpi_cli start` has not run, or `stop` did);
  2. the plugin's rules are not in the kernel;
  3. a port is missing or down, or a port pair is not bridged together;
  4. with --require-daemon: the supervising daemon (`fdpi_cli daemon`) is not running. It
     reads keepalived's notify FIFO and steps the appliance down if keepalived dies, so a
     master without it could outlive the election. The generated keepalived.conf passes it;
  5. with vrrp_split_brain_handover=1: the daemon reports a split brain (another master
     sends from bras_arp_mac), so that keepalived hands over.

keepalived runs this every second, so it stays light: the configuration comes from the
snapshot the last start/reload saved (no fastdpi.conf parsing, no jsonschema), and the links
are read with one netlink dump (no pyroute2, which takes ~130 ms to import).
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys

from . import state
from .config import Config

# rtnetlink constants (linux/rtnetlink.h, linux/if_link.h)
_RTM_GETLINK = 18
_NLM_F_REQUEST_DUMP = 0x1 | 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_IFLA_IFNAME = 3
_IFLA_MASTER = 10
_IFLA_OPERSTATE = 16
_IF_OPER_UP = 6
_IFLA_CARRIER = 33


def links() -> dict[str, tuple[int, bool, int | None]]:
    """name -> (ifindex, up (operstate UP and carrier), index of its master or None)."""
    result: dict[str, tuple[int, bool, int | None]] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        ifinfomsg = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
        s.send(struct.pack("=IHHII", 16 + len(ifinfomsg), _RTM_GETLINK, _NLM_F_REQUEST_DUMP,
                           1, 0) + ifinfomsg)
        while True:
            data = s.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
                if kind == _NLMSG_DONE:
                    return result
                if kind == _NLMSG_ERROR:
                    raise OSError("netlink link dump failed")
                if kind == 16:  # RTM_NEWLINK
                    _parse_link(data[offset + 16:offset + length], result)
                offset += (length + 3) & ~3


def _parse_link(msg: bytes, result: dict[str, tuple[int, bool, int | None]]) -> None:
    index = struct.unpack_from("=i", msg, 4)[0]
    name, oper_up, carrier, master = None, False, True, None
    pos = 16
    while pos + 4 <= len(msg):
        alen, atype = struct.unpack_from("=HH", msg, pos)
        if alen < 4:
            break
        payload = msg[pos + 4:pos + alen]
        atype &= 0x3FFF  # strip NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if atype == _IFLA_IFNAME:
            name = payload.rstrip(b"\0").decode()
        elif atype == _IFLA_MASTER:
            master = struct.unpack_from("=I", payload)[0] or None
        elif atype == _IFLA_OPERSTATE:
            oper_up = payload[0] == _IF_OPER_UP
        elif atype == _IFLA_CARRIER:
            # The carrier flag changes at once; operstate follows it up to a second later.
            carrier = payload[0] == 1
        pos += (alen + 3) & ~3
    if name is not None:
        result[name] = (index, oper_up and carrier, master)


def port_problems(cfg: Config) -> list[str]:
    """The same judgement as bridges.bridge_health, from one netlink dump."""
    have = links()
    problems = []
    for in_port, out_port in cfg.pairs:
        masters = set()
        for port in (in_port, out_port):
            if port not in have:
                problems.append(f"{port} is missing")
                continue
            _index, up, master = have[port]
            if not up:
                problems.append(f"{port} is down")
            masters.add(master)
        if len(masters) != 1 or None in masters:
            problems.append(f"{in_port} and {out_port} are not bridged together")
    return problems


def unfit_reason(require_daemon: bool = False) -> str | None:
    """Why this appliance must not be master now, or None when it is fit."""
    st = state.load()
    if st is None:
        return "plugin not started (run 'fdpi_cli start')"
    cfg = Config.from_snapshot(st["config"])
    from . import nftapply  # libnftables: only once we know there is something to look at

    if nftapply.loaded_role() is None:
        return "the plugin's nftables rules are not loaded"
    problems = port_problems(cfg)
    if problems:
        return "; ".join(problems)
    if require_daemon and not state.daemon_alive():
        return "the supervising daemon (fdpi_cli daemon) is not running"
    if cfg.get("vrrp_split_brain_handover") == 1 and state.daemon_status().get("split_brain"):
        return "split brain: another master sends from bras_arp_mac (vrrp_split_brain_handover=1)"
    return None


def main(argv: list[str], config_path: str | None = None) -> int:
    """config_path is not read: the track script judges what is running, not the file."""
    p = argparse.ArgumentParser(prog="fdpi_cli vrrp track",
                                description="keepalived track script: exit 0 while this "
                                            "appliance is fit to be master")
    p.add_argument("--require-daemon", action="store_true",
                   help="unfit while the supervising daemon (fdpi_cli daemon) is not running")
    args = p.parse_args(argv)
    try:
        reason = unfit_reason(args.require_daemon)
    except Exception as e:  # whatever breaks here, keepalived must see "unfit", not a trace
        reason = f"health check failed: {e}"
    if reason is None:
        return 0
    print(f"fdpi_cli vrrp track: unfit: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
