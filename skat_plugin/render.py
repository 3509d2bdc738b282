"""Config + role -> the rule set to load: which nft/ files, and the defines they read.

Pure: nothing here touches the kernel, so every role's rule set can be built and checked
without root. The files are the review surface; this module only picks them and computes
the values (the ND checksum constants included).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import string
from pathlib import Path

from . import ndsum
from .config import Config

MASTER = "master"
BACKUP = "backup"
ROLES = (MASTER, BACKUP)

MASTER_TABLE = "skat_plugin_master"  # netdev: awake in master, dormant in backup
BACKUP_TABLE = "skat_plugin_backup"  # netdev and bridge: awake in backup
GATEWAY_TABLE = "skat_plugin_gateway"  # lives across role switches: the learned subscribers
# The NFLOG group that reports frames from another master to the daemon: written as a number
# in nft/master.nft (nft takes no define there). 0x5CA7, "SKAT", as vrrp_socket_mark's
# default; a group has one listener per namespace.
SPLIT_BRAIN_GROUP = 0x5CA7


def nft_dir() -> Path:
    """Where the .nft files are: $SKAT_NFT_DIR, a source checkout, or the package's share."""
    env = os.environ.get("SKAT_NFT_DIR")
    return Path(env) if env else _installed_nft_dir()


@functools.cache
def _installed_nft_dir() -> Path:
    # Looked up once per process: resolving the path is a few system calls, and a role
    # switch in the daemon should not pay them every time.
    checkout = Path(__file__).resolve().parent.parent / "nft"
    if checkout.is_dir():
        return checkout
    return Path("/usr/share/skat-plugin/nft")


# The tables a full load builds anew (the gateway's is not here: it keeps the subscribers it
# learned). `skat_plugin` is the single table of versions before the dormant role tables.
ROLE_TABLES = (("netdev", MASTER_TABLE), ("netdev", BACKUP_TABLE), ("bridge", BACKUP_TABLE),
               ("inet", "skat_plugin_vrrp"), ("netdev", "skat_plugin"), ("bridge", "skat_plugin"))


class RuleSet:
    """A rule set: the nft/ files in load order and the defines they read. (A plain class:
    dataclasses costs `vrrp show`, which imports this module, ~10 ms.)

    replaces: tables deleted first, in the same transaction, where they exist (nftapply
    knows which): the files then build them from nothing. Not `table X` + `delete table X`:
    that updates an existing table, and a table may be updated once per transaction, which
    the dormant flag of the role files needs.
    """

    __slots__ = ("defines", "files", "replaces", "role")

    def __init__(self, role: str, files: list[str], defines: dict[str, str] | None = None,
                 replaces: tuple[tuple[str, str], ...] = ()) -> None:
        self.role = role
        self.files = files
        self.defines = dict(defines or {})
        self.replaces = replaces

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and \
            (self.role, self.files, self.defines, self.replaces) == \
            (other.role, other.files, other.defines, other.replaces)

    __hash__ = None  # type: ignore[assignment]

    def script(self, directory: Path | None = None,
               present: frozenset[tuple[str, str]] = frozenset()) -> str:
        """The nft input that loads every file of the set in one transaction.

        Values reach it only after validation (schema.py), so none can carry nft syntax.
        A `.nft.in` file is a template for what nft takes no define in (set timeouts): its
        text is put in with the values substituted, where an `.nft` file is included.
        present: the (family, table) pairs the kernel has now.
        """
        defines = "".join(f"define {k} = {v}\n" for k, v in self.defines.items())
        body = [f"delete table {f} {t}\n" for f, t in self.replaces if (f, t) in present]
        for name in self.files:
            if name.endswith(".nft.in"):
                text = ((directory or nft_dir()) / name).read_text()
                body.append(string.Template(text).substitute(self.defines))
            else:
                body.append(f'include "{name}"\n')
        return defines + "".join(body)


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _ifnames(names: list[str]) -> str:
    # The doubled braces are deliberate: nft 1.0.6 (Debian 12) segfaults on
    # `devices = $var` when the define is a one-element set; a nested set works for any size.
    return "{ " + _set([f'"{n}"' for n in names]) + " }"


def _mac_hex(mac: str) -> str:
    return "0x" + mac.replace(":", "").lower()


def _nd_defines(cfg: Config) -> dict[str, str]:
    flags = 0xE0 if cfg["vrrp_nd_router_flag"] else 0x60
    dad_flags = flags & ~0x40  # the same without the solicited flag
    bare, dad_bare = flags & ~0x20, dad_flags & ~0x20  # no TLLA: override clear (RFC 4861 7.2.4)
    d = {"nd_flags": hex(flags), "nd_dad_flags": hex(dad_flags),
         "nd_flags_bare": hex(bare), "nd_dad_flags_bare": hex(dad_bare),
         "bras_mac_hex": _mac_hex(cfg["bras_arp_mac"])}
    for tag, key in (("gua", "bras_ipv6_address"), ("ll", "bras_ipv6_link_local")):
        addr = str(ipaddress.IPv6Address(cfg[key]))
        sol = ndsum.solicited_node(addr)
        d[f"nd_{tag}_addr"] = addr
        d[f"nd_{tag}_target"] = hex(int(ipaddress.IPv6Address(addr)))
        d[f"nd_{tag}_solnode"] = sol
        d[f"nd_{tag}_k_mc"] = hex(ndsum.k_with_option(sol, flags, cfg["bras_arp_mac"]))
        d[f"nd_{tag}_k_uc"] = hex(ndsum.k_with_option(addr, flags, cfg["bras_arp_mac"]))
        d[f"nd_{tag}_k_bare"] = hex(ndsum.k_bare(addr, bare))
        # DAD defence: NA to all-nodes, solicited clear (RFC 4861 7.2.4), from :: to ff02::1.
        d[f"nd_{tag}_k_dad"] = hex(ndsum.k_bare(sol, dad_bare))
        d[f"nd_{tag}_k_nonce"] = hex(ndsum.k_nonce(sol, dad_flags, cfg["bras_arp_mac"]))
    return d


def render(cfg: Config, role: str, own_macs: list[str]) -> RuleSet:
    """Both roles' tables, `role` awake and the other dormant: what start and reload load.

    own_macs: the MACs of this appliance's ports and bridges (the backup guard's list).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    files = ["common.nft"]
    # Terminating, the master answers on the uplink side too: the border resolves the gateway.
    answering = cfg.ports if cfg.terminates else cfg.in_ports
    defines = {"gateway_ports": _ifnames(answering)}
    mac = cfg.get("bras_arp_mac")
    # The master's table: the virtual gateway's responders and the split-brain counter.
    if mac is not None:
        files.append("master.nft")
        defines["bras_mac"] = mac.lower()
    if cfg.get("bras_arp_ip") is not None:
        files += ["arp-responder.nft", "qinq-responder.nft"]
        defines["bras_ip"] = cfg["bras_arp_ip"]
        defines["bras_ip_hex"] = hex(int(ipaddress.IPv4Address(cfg["bras_arp_ip"])))
        defines["bras_mac_hex"] = _mac_hex(mac)
    if cfg.has_ipv6:
        files.append("nd-responder.nft")
        defines.update(_nd_defines(cfg))
    # The backup's tables: the guard.
    files.append("backup.nft")
    macs = sorted({m.lower() for m in own_macs} | ({mac.lower()} if mac else set()))
    defines["all_ports"] = _ifnames(cfg.ports)
    defines["skat_mark"] = hex(cfg["vrrp_socket_mark"])
    defines["own_macs"] = _set(macs)
    _add_vrrp_firewall(cfg, files, defines)
    _add_gateway(cfg, role, files, defines)
    _add_redirect(cfg, role, files, defines)
    files.append(f"role-{role}.nft")
    return RuleSet(role, files, defines, replaces=ROLE_TABLES)


def render_switch(cfg: Config, role: str) -> RuleSet:
    """A role switch alone: flip which tables are awake, in one small transaction. Valid
    only over a full load (render) of the same configuration."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    files = [f"role-{role}.nft"]
    if cfg.terminates:
        files += ["gateway-present.nft",
                  "gateway-wake.nft" if role == MASTER else "gateway-sleep.nft"]
    from . import redirect

    if redirect.enabled(cfg.values):
        files += ["redirect-present.nft",
                  "redirect-wake.nft" if role == MASTER else "redirect-sleep.nft"]
    return RuleSet(role, files)


def _add_gateway(cfg: Config, role: str, files: list[str], defines: dict[str, str]) -> None:
    """SKAT's L2 termination: awake in master, dormant (keeping its subscribers) in backup."""
    if not cfg.terminates:
        files.append("gateway-off.nft")
        return
    files.append("gateway-wake.nft" if role == MASTER else "gateway-sleep.nft")
    files += ["gateway-maps.nft.in", "gateway-learn.nft.in", "gateway.nft",
              "gateway-qinq-maps.nft.in",
              "gateway-qinq.nft"]
    timeout = int(cfg["bras_subscriber_timeout"])
    sync = float(cfg["vrrp_sync_interval"])
    defines.update({
        "in_ports": _ifnames(cfg.in_ports),
        "out_ports": _ifnames(cfg.ports[len(cfg.in_ports):]),
        "up_pairs": _set([f'"{i}" : "{o}"' for i, o in cfg.pairs]),
        "down_pairs": _set([f'"{o}" : "{i}"' for i, o in cfg.pairs]),
        "bras_mac": cfg["bras_arp_mac"].lower(),
        "bras_ip": cfg["bras_arp_ip"],
        "bras_ip_hex": hex(int(ipaddress.IPv4Address(cfg["bras_arp_ip"]))),
        "bras_mac_hex": _mac_hex(cfg["bras_arp_mac"]),
        "gw_mac": cfg["bras_gateway_mac"].lower(),
        "sub_timeout": f"{timeout}s",
        # A live subscriber is offered to the peers again well before their copy expires.
        "sync_refresh": f"{max(5, timeout // 3)}s",
        # An offer waits for a few sync rounds (skat_plugin/gateway/sync.py reads it).
        "fresh_timeout": f"{max(3, int(3 * sync + 0.999))}s",
        **_learning_defines(cfg),
    })
    if cfg.has_ipv6:
        files += ["gateway6-maps.nft.in", "gateway6.nft"]
        if cfg.advertises_router:
            files.append("ra-guard.nft")
        defines["gw6_mac"] = (cfg.get("bras_gateway_ipv6_mac") or cfg["bras_gateway_mac"]).lower()
        defines["gw6_addrs"] = _set([str(ipaddress.IPv6Address(cfg[k])) for k in
                                     ("bras_ipv6_link_local", "bras_ipv6_address")])
    if cfg["bras_transparency"] == 0:
        files.append("gateway-ttl4.nft")
        if cfg.has_ipv6:
            files.append("gateway-ttl6.nft")


# The learning meters (nft/gateway.nft, admit): new subscribers a second, with a burst.
# A port: a mass reconnect of 10,000 subscribers is learned within 10 s; a flood of spoofed
# sources adds at most this many a second. One MAC: a CPE with a few addresses, not more.
LEARN_PORT_RATE, LEARN_PORT_BURST = 1000, 2000
LEARN_MAC_RATE, LEARN_MAC_BURST = 4, 16
# The subscriber table's bound (each map's and helper set's `size`, nft/gateway-maps.nft.in):
# a full map refuses new subscribers (counted); subscribers.count() warns at ALARM_FILL.
TABLE_SIZE = 1048576


def _learning_defines(cfg: Config) -> dict[str, str]:
    """The subscriber prefixes (everything without vrrp_subscriber_nets) and the meters."""
    nets = [ipaddress.ip_network(n) for n in cfg.get("vrrp_subscriber_nets") or
            ("0.0.0.0/0", "::/0")]
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    raw = [f"{hex(int(n.network_address))}-{hex(int(n.broadcast_address))}" for n in v4]
    return {
        # An empty anonymous set is refused by nft: a family without a prefix gets one that
        # no source is in (validation refuses that for a family the gateway carries).
        "sub_nets4": _set([str(n) for n in v4] or ["255.255.255.255"]),
        "sub_nets6": _set([str(n) for n in v6] or ["ff0f::/128"]),
        "sub_nets4_raw": _set(raw or ["0xffffffff"]),
        "learn_port_rate": str(LEARN_PORT_RATE), "learn_port_burst": str(LEARN_PORT_BURST),
        "learn_mac_rate": str(LEARN_MAC_RATE), "learn_mac_burst": str(LEARN_MAC_BURST),
        "table_size": str(TABLE_SIZE),
    }


def tables_of(cfg: Config) -> set[tuple[str, str]]:
    """(family, table) of every table a full load of `cfg` leaves in the kernel."""
    from . import redirect

    tables = {("netdev", MASTER_TABLE), ("netdev", BACKUP_TABLE), ("bridge", BACKUP_TABLE)}
    if cfg.vrrp_enabled and cfg.get("vrrp_interface") is not None:
        tables.add(("inet", "skat_plugin_vrrp"))
    if cfg.terminates:
        tables.add(("netdev", GATEWAY_TABLE))
    if redirect.enabled(cfg.values):
        tables.add(("netdev", "skat_plugin_redirect"))
    return tables


def _add_vrrp_firewall(cfg: Config, files: list[str], defines: dict[str, str]) -> None:
    """Both roles: only the group's appliances may send VRRP to vrrp_interface."""
    if not cfg.vrrp_enabled or cfg.get("vrrp_interface") is None:
        return
    files.append("vrrp-firewall.nft")
    defines["vrrp_if"] = f'"{cfg["vrrp_interface"]}"'
    defines["sync_port"] = str(cfg["vrrp_sync_port"])  # the table sync: TTL 255, peers
    peers = cfg.get("vrrp_unicast_peers") or []
    if peers:
        files.append("vrrp-from-peers.nft")
        defines["vrrp_peers"] = _set(peers)
    else:
        files.append("vrrp-multicast.nft")


def render_stop() -> RuleSet:
    """Removes the plugin's tables, the gateway's included (and nothing else)."""
    return RuleSet("stopped", [], replaces=(*ROLE_TABLES, ("netdev", GATEWAY_TABLE),
                                           ("netdev", "skat_plugin_redirect")))


def _add_redirect(cfg: Config, role: str, files: list[str], defines: dict[str, str]) -> None:
    """SKAT's black-list redirect: selection awake in master, dormant (lists kept) in backup."""
    from . import redirect

    if not redirect.enabled(cfg.values):
        files.append("redirect-off.nft")
        return
    files += ["redirect-wake.nft" if role == MASTER else "redirect-sleep.nft",
              "redirect.nft.in"]
    rate = int(cfg.get("black_list_inspect_rate", redirect.DEFAULT_RATE))
    defines.update({
        "redirect_ports": _ifnames(cfg.in_ports),
        "inspect_rate": str(rate),
        "inspect_burst": str(max(16, rate // 10)),
        # One subscriber gets a tenth of the inspector (issue 17.5): its flood passes its
        # own packets uninspected, nobody else's.
        "source_rate": str(max(20, rate // 10)),
        "source_burst": str(max(8, rate // 20)),  # under the global burst (rate // 10)
        "follow_ms": str(redirect.FOLLOW_MS),
    })
