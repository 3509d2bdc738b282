"""Config + role -> the rule set to load: which nft/ files, and the defines they read.

Pure: nothing here touches the kernel, so every role's rule set can be built and checked
without root. The files are the review surface; this module only picks them and computes
the values (the ND checksum constants included).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from . import ndsum
from .config import Config

MASTER = "master"
BACKUP = "backup"
ROLES = (MASTER, BACKUP)

TABLE = "skat_plugin"


def nft_dir() -> Path:
    """Where the .nft files are: $SKAT_NFT_DIR, a source checkout, or the package's share."""
    env = os.environ.get("SKAT_NFT_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "nft"
    if checkout.is_dir():
        return checkout
    return Path("/usr/share/skat-plugin/nft")


class RuleSet:
    """A role's rule set: the nft/ files in load order and the defines they read. (A plain
    class: dataclasses costs `vrrp show`, which imports this module, ~10 ms.)"""

    __slots__ = ("defines", "files", "role")

    def __init__(self, role: str, files: list[str],
                 defines: dict[str, str] | None = None) -> None:
        self.role = role
        self.files = files
        self.defines = dict(defines or {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and (self.role, self.files, self.defines) == \
            (other.role, other.files, other.defines)

    __hash__ = None  # type: ignore[assignment]

    def script(self) -> str:
        """The nft input that loads every file of the set in one transaction.

        Values reach it only after validation (schema.py), so none can carry nft syntax.
        """
        defines = "".join(f"define {k} = {v}\n" for k, v in self.defines.items())
        return defines + "".join(f'include "{name}"\n' for name in self.files)


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
    d = {"nd_flags": hex(flags), "bras_mac_hex": _mac_hex(cfg["bras_arp_mac"])}
    for tag, key in (("gua", "bras_ipv6_address"), ("ll", "bras_ipv6_link_local")):
        addr = str(ipaddress.IPv6Address(cfg[key]))
        sol = ndsum.solicited_node(addr)
        d[f"nd_{tag}_addr"] = addr
        d[f"nd_{tag}_target"] = hex(int(ipaddress.IPv6Address(addr)))
        d[f"nd_{tag}_solnode"] = sol
        d[f"nd_{tag}_k_mc"] = hex(ndsum.k_with_option(sol, flags, cfg["bras_arp_mac"]))
        d[f"nd_{tag}_k_uc"] = hex(ndsum.k_with_option(addr, flags, cfg["bras_arp_mac"]))
        d[f"nd_{tag}_k_bare"] = hex(ndsum.k_bare(addr, flags))
    return d


def render(cfg: Config, role: str, own_macs: list[str]) -> RuleSet:
    """The rule set of `role`. own_macs: the MACs of this appliance's ports and bridges."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    files = ["reset.nft", "common.nft"]
    defines = {"in_ports": _ifnames(cfg.in_ports)}
    mac = cfg.get("bras_arp_mac")
    if role == MASTER:
        if mac is not None:
            files.append("master.nft")
            defines["bras_mac"] = mac.lower()
        if cfg.get("bras_arp_ip") is not None:
            files.append("arp-responder.nft")
            defines["bras_ip"] = cfg["bras_arp_ip"]
        if cfg.has_ipv6:
            files.append("nd-responder.nft")
            defines.update(_nd_defines(cfg))
    else:
        files.append("backup.nft")
        macs = sorted({m.lower() for m in own_macs} | ({mac.lower()} if mac else set()))
        defines["all_ports"] = _ifnames(cfg.ports)
        defines["skat_mark"] = hex(cfg["vrrp_socket_mark"])
        defines["own_macs"] = _set(macs)
    _add_vrrp_firewall(cfg, files, defines)
    return RuleSet(role, files, defines)


def _add_vrrp_firewall(cfg: Config, files: list[str], defines: dict[str, str]) -> None:
    """Both roles: only the group's appliances may send VRRP to vrrp_interface."""
    if not cfg.vrrp_enabled or cfg.get("vrrp_interface") is None:
        return
    files.append("vrrp-firewall.nft")
    defines["vrrp_if"] = f'"{cfg["vrrp_interface"]}"'
    peers = cfg.get("vrrp_unicast_peers") or []
    if peers:
        files.append("vrrp-from-peers.nft")
        defines["vrrp_peers"] = _set(peers)
    else:
        files.append("vrrp-multicast.nft")


def render_stop() -> RuleSet:
    """Removes the plugin's tables (and nothing else)."""
    return RuleSet("stopped", ["reset.nft"])
