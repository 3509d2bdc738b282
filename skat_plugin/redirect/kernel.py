"""The selection table's user-space side: address sets, heartbeat, counters (python3-nftables).

The table netdev skat_plugin_redirect (nft/redirect.nft.in) lives across role switches, like the
gateway's: a switch only flips it awake or dormant, so 100,000 blocked addresses are never
loaded again by a failover. This module writes its sets and reads its counters through
python3-nftables (libnft.run). Never through `nft`.

    load_addresses(lists)  replace the address sets (@host4/@host6, @block4/@block6)
    heartbeat(ports)       keep the inspector's ports in @alive (the kernel's fail-open)
    counters()             the kernel's counters, None when the table is not loaded
"""

from __future__ import annotations

from .. import libnft
from . import HEARTBEAT_TIMEOUT, TABLE, nlbeat, nlsets
from .lists import Lists

COUNTERS = ("inspected", "uninspected_down", "uninspected_overload", "uninspected_source",
            "blocked_kernel", "blocked_down", "quic_dropped")


def loaded() -> bool:
    rc, _out, _err = libnft.run(f"list map netdev {TABLE} alive")
    return rc == 0


def load_addresses(lists: Lists) -> bool:
    """The address sets replaced: the single addresses' hash sets in one transaction built
    as netlink messages (nlsets: a million in about a second, where libnftables' parser
    takes ten), then the prefixes' interval sets in a second one (libnftables). A packet
    sees each set old or new, never empty. False when the table is not loaded (redirect
    off, plugin stopped)."""
    hashed = nlsets.replace(TABLE, {"host4": lists.keys(4), "host6": lists.keys(6)})
    script = [f"flush set netdev {TABLE} {name}" for name in
              (("block4", "block6") if hashed else ("host4", "block4", "host6", "block6"))]
    for version in (4, 6):
        hosts, ranges = lists.elements(version)
        parts = [(f"block{version}", ranges)]
        if not hashed:
            parts.append((f"host{version}", hosts))
        for name, elements in parts:
            if elements:
                script.append(f"add element netdev {TABLE} {name} {{ "
                              + ", ".join(elements) + " }")
    rc, _out, err = libnft.run("\n".join(script) + "\n")
    if rc != 0:
        if not loaded():
            return False
        raise OSError(f"the kernel refused the address list: {err.strip()}")
    return True


_beat = None  # nlbeat.Beat, made on first use (a netlink socket kept per process)


def _netlink() -> nlbeat.Beat:
    global _beat
    if _beat is None:
        _beat = nlbeat.Beat(TABLE, "alive")
    return _beat


def heartbeat(ports: dict[str, int]) -> bool:
    """The inspector reads `ports` (name -> mark) for HEARTBEAT_TIMEOUT more. add, delete,
    add: the element is renewed whether it was there or not, on any kernel (an `add` of an
    existing element does not renew its timeout before Linux 6.10). Built as netlink
    messages (nlbeat: ~40 us of CPU instead of ~0.75 ms through libnftables); through
    libnftables when that fails."""
    if not ports:
        return True
    if _netlink().renew(ports, int(HEARTBEAT_TIMEOUT * 1000)):
        return True
    plain = ", ".join(f'"{p}" : {m:#x}' for p, m in ports.items())
    ttl = f"timeout {int(HEARTBEAT_TIMEOUT * 1000)}ms"
    timed = ", ".join(f'"{p}" {ttl} : {m:#x}' for p, m in ports.items())
    rc, _out, _err = libnft.run(
        f"add element netdev {TABLE} alive {{ {plain} }}\n"
        f"delete element netdev {TABLE} alive {{ {plain} }}\n"
        f"add element netdev {TABLE} alive {{ {timed} }}\n")
    return rc == 0


def stop_heartbeat(ports: dict[str, int]) -> None:
    """Fail open now (the inspector leaves or falls behind), not a timeout later."""
    if not ports or _netlink().remove(ports):
        return
    plain = ", ".join(f'"{p}" : {m:#x}' for p, m in ports.items())
    libnft.run(f"add element netdev {TABLE} alive {{ {plain} }}\n"
                   f"delete element netdev {TABLE} alive {{ {plain} }}\n")


def counters() -> dict[str, int] | None:
    from .. import nftapply

    return nftapply.table_counters("netdev", TABLE, COUNTERS)
