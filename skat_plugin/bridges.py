"""One kernel bridge per in_dev/out_dev pair, created or adopted, idempotent (pyroute2).

A bridge of this plugin must not speak: STP off (no BPDUs), multicast snooping off (with it
on, the bridge joins the all-snoopers group 224.0.0.106 and sends IGMP reports; an inline
bridge floods multicast anyway), no IPv6 on the bridge or its ports (no RS, MLD, DAD), no
addresses. Ports are brought up.
"""

from __future__ import annotations

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import ports
from .config import Config
from .errors import ApplyError, PortError

BRIDGE_PREFIX = "skatbr"


def _sysctl_ipv6_off(ifname: str) -> None:
    # No netlink call sets disable_ipv6; the sysctl file is the kernel's interface for it.
    path = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
    try:
        with open(path, "w") as f:
            f.write("1")
    except FileNotFoundError:
        pass  # kernel without IPv6: nothing to silence


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _master_of(ipr: IPRoute, idx: int) -> int | None:
    link = ipr.get_links(idx)[0]
    return link.get_attr("IFLA_MASTER")


def ensure(cfg: Config) -> list[str]:
    """Create or adopt the bridges; returns their names, in pair order."""
    ports.check(cfg.pairs, cfg.source)
    names = []
    with IPRoute() as ipr:
        for i, (in_port, out_port) in enumerate(cfg.pairs):
            try:
                names.append(_ensure_pair(ipr, i, in_port, out_port))
            except NetlinkError as e:
                raise ApplyError(f"cannot bridge {in_port} <-> {out_port}: {e.args[1]}") from None
    return names


def _ensure_pair(ipr: IPRoute, i: int, in_port: str, out_port: str) -> str:
    in_idx, out_idx = _index(ipr, in_port), _index(ipr, out_port)
    assert in_idx is not None and out_idx is not None
    br_idx = _master_of(ipr, in_idx) or _master_of(ipr, out_idx)
    if br_idx is None:
        name = f"{BRIDGE_PREFIX}{i}"
        br_idx = _index(ipr, name)
        if br_idx is None:
            ipr.link("add", ifname=name, kind="bridge", br_stp_state=0,
                     br_mcast_snooping=0)
            br_idx = _index(ipr, name)
    name = ipr.get_links(br_idx)[0].get_attr("IFLA_IFNAME")
    _sysctl_ipv6_off(name)
    ipr.link("set", index=br_idx, kind="bridge", br_stp_state=0, br_mcast_snooping=0)
    ipr.flush_addr(index=br_idx)
    for idx, port in ((in_idx, in_port), (out_idx, out_port)):
        _sysctl_ipv6_off(port)
        current = _master_of(ipr, idx)
        if current != br_idx:
            if current is not None:
                raise PortError(f"{port} is already a port of another bridge; remove it "
                                f"there or fix in_dev/out_dev")
            ipr.link("set", index=idx, master=br_idx)
        ipr.flush_addr(index=idx)
        ipr.link("set", index=idx, state="up")
    ipr.link("set", index=br_idx, state="up")
    return name


def own_macs(cfg: Config) -> list[str]:
    """MACs of the configured ports and their bridges: frames with these sources are ours."""
    macs = []
    with IPRoute() as ipr:
        for port in cfg.ports:
            idx = _index(ipr, port)
            if idx is None:
                continue
            macs.append(ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS"))
            br = _master_of(ipr, idx)
            if br is not None:
                macs.append(ipr.get_links(br)[0].get_attr("IFLA_ADDRESS"))
    return sorted(set(macs))
