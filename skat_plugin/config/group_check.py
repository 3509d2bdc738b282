"""`fdpi_cli vrrp check-group FILE...`: are these fastdpi.conf files one consistent VRRP group?

    fdpi_cli vrrp check-group /etc/dpi/fastdpi.conf appliance-b.conf [...]

Fails (exit 1) when
  - a key in MUST_EQUAL differs: the virtual gateway (bras_*), the election's identity and
    timing (router id, version, advert interval, authentication) and the floating address;
    one differing value splits the group or changes the gateway at every failover;
  - the subscriber-table sync's keys differ (vrrp_sync_key_file, compared by a fingerprint
    of each key, HMAC(key, "skat-sync-check"): the keys themselves are never printed), or
    one appliance has a key and another none: the backups would refuse every message;
  - unicast does not line up: an appliance's vrrp_unicast_src is missing from another's
    vrrp_unicast_peers (keepalived's vrrp_check_unicast_src and the VRRP firewall drop its
    adverts there: two masters), one appliance uses unicast and another multicast, or two
    appliances share a vrrp_unicast_src.
Warns (exit 0) when
  - two appliances have the same vrrp_priority: legal, VRRP breaks the tie by the higher
    primary address, but then the addresses, not the operator, choose the master;
  - a key in SHOULD_EQUAL differs (behaviour after a failover would depend on who is master).
An invalid file exits 2 with its error (file, line, key). Keys left out on purpose:
vrrp_socket_mark (local to each appliance's own rules), vrrp_interface (names differ per
host), vrrp_priority (differs by design), vrrp_notify_fifo and vrrp_script_user (local).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from ..errors import ConfigError, SkatError
from . import Config

MUST_EQUAL = (
    "vrrp_enable",
    "bras_arp_mac", "bras_arp_ip", "bras_ipv6_link_local", "bras_ipv6_address",
    "vrrp_nd_router_flag",
    "bras_terminate_l2", "bras_gateway_ip", "bras_gateway_mac", "bras_gateway_ipv6",
    "bras_gateway_ipv6_mac", "bras_transparency", "bras_vlan_terminate",
    "vrrp_sync_port",
    "vrrp_router_id", "vrrp_version", "vrrp_advert_int", "vrrp_auth_pass",
    "vrrp_mgmt_vip",
)
SHOULD_EQUAL = (
    "vrrp_preempt", "vrrp_preempt_delay", "vrrp_start_role", "vrrp_split_brain_handover",
    "vrrp_garp_count", "vrrp_garp_interval", "vrrp_garp_refresh",
    "bras_subscriber_timeout", "vrrp_sync_interval",
    "bras_ipv6_router_pref", "bras_icmp6_send_rtradv", "bras_icmp6_min_rtradv_interval",
    "bras_icmp6_max_rtradv_interval", "bras_icmp6_rtradv_mtu", "bras_icmp6_reachable_time",
    "bras_icmp6_hop_limit", "bras_icmp6_default_lifetime",
)


def _norm(key: str, value: Any) -> Any:
    """One spelling per meaning: 02:00:5E.. = 02:00:5e.., fe80:0::1 = fe80::1."""
    if value is None:
        return None
    if key in ("bras_arp_mac", "bras_gateway_mac", "bras_gateway_ipv6_mac"):
        return value.lower()
    if key in ("bras_arp_ip", "bras_ipv6_link_local", "bras_ipv6_address", "bras_gateway_ip",
               "bras_gateway_ipv6"):
        return str(ipaddress.ip_address(value))
    if key == "vrrp_mgmt_vip":
        return str(ipaddress.ip_interface(value))
    return value


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(value) or "(none)"
    return str(value)


def differing(configs: dict[str, Config], keys: tuple[str, ...]) -> list[list[str]]:
    """Rows [key, value in file 1, value in file 2, ...] for keys whose values differ."""
    rows = []
    for key in keys:
        values = [_norm(key, cfg.get(key)) for cfg in configs.values()]
        if len(set(map(repr, values))) > 1:
            rows.append([key, *(_show(v) for v in values)])
    return rows


def key_rows(configs: dict[str, Config]) -> list[list[str]]:
    """The sync keys compared by fingerprint (gateway/syncwire.py), never by content or by
    path (each appliance may keep its copy elsewhere): a row when they differ. Each file's
    key is read from the path it names, on this host."""
    from ..gateway import syncwire

    shown = []
    for cfg in configs.values():
        path = cfg.get("vrrp_sync_key_file")
        if path is None:
            shown.append("(unset)")
            continue
        try:
            shown.append(f"fingerprint {syncwire.fingerprint(syncwire.load_key(path))}")
        except syncwire.KeyFileError as e:  # config.load read it a moment ago
            shown.append(f"(unreadable: {e})")
    return [["vrrp_sync_key_file", *shown]] if len(set(shown)) > 1 else []


def unicast_problems(configs: dict[str, Config]) -> list[str]:
    problems = []
    srcs: dict[str, str] = {}
    for name, cfg in configs.items():
        src = cfg.get("vrrp_unicast_src")
        if src is not None and cfg.get("vrrp_unicast_peers"):
            if src in srcs:
                problems.append(f"{name} and {srcs[src]} both use vrrp_unicast_src={src}")
            srcs[src] = name
    for a, ca in configs.items():
        for b, cb in configs.items():
            if a == b:
                continue
            peers_a, peers_b = ca.get("vrrp_unicast_peers") or [], cb.get("vrrp_unicast_peers")
            if peers_a and not peers_b:
                problems.append(f"{a} sends unicast adverts but {b} uses multicast "
                                f"(no vrrp_unicast_peers)")
            elif peers_a and peers_b and ca["vrrp_unicast_src"] not in peers_b:
                problems.append(f"{a}'s vrrp_unicast_src {ca['vrrp_unicast_src']} is not in "
                                f"{b}'s vrrp_unicast_peers ({','.join(peers_b)}): {b} drops "
                                f"its adverts")
    return problems


def priority_warnings(configs: dict[str, Config]) -> list[str]:
    by_prio: dict[int, list[str]] = {}
    for name, cfg in configs.items():
        by_prio.setdefault(cfg["vrrp_priority"], []).append(name)
    return [f"{' and '.join(names)} have the same vrrp_priority {prio}: the higher address "
            f"wins the tie" for prio, names in sorted(by_prio.items()) if len(names) > 1]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def main(argv: list[str], config_path: str | None = None) -> int:
    """config_path (fdpi_cli's --config) is not used: the files are named on the command line."""
    p = argparse.ArgumentParser(prog="fdpi_cli vrrp check-group",
                                description="compare the group-wide keys of the fastdpi.conf "
                                            "files of one VRRP group")
    p.add_argument("files", nargs="+", metavar="FILE", help="fastdpi.conf of each appliance")
    args = p.parse_args(argv)
    if len(args.files) < 2:
        p.error("name the fastdpi.conf of at least two appliances")
    if len(set(args.files)) != len(args.files):
        p.error("a file is named twice")
    from .. import config

    configs: dict[str, Config] = {}
    invalid = 0
    for path in args.files:
        try:
            configs[path] = config.load(path)
        except ConfigError as e:
            print(f"invalid: {e}", file=sys.stderr)
            invalid += 1
        except (OSError, SkatError) as e:
            print(f"invalid: {path}: {e}", file=sys.stderr)
            invalid += 1
    if invalid:
        print(f"group not checked: {invalid} invalid file(s)")
        return ConfigError.exit_code

    header = ["key", *configs]
    must = differing(configs, MUST_EQUAL) + key_rows(configs)
    should = differing(configs, SHOULD_EQUAL)
    unicast = unicast_problems(configs)
    warnings = priority_warnings(configs)
    if must:
        print("differs (must be equal on every appliance of the group):")
        print(_table(header, must))
    for problem in unicast:
        print(f"unicast: {problem}")
    if should:
        print("warning: differs (should be equal, or failover changes the behaviour):")
        print(_table(header, should))
    for warning in warnings:
        print(f"warning: {warning}")
    if must or unicast:
        print(f"group inconsistent: {len(must)} key(s) differ, {len(unicast)} unicast "
              f"problem(s)")
        return 1
    print("group consistent" + (f" ({len(should) + len(warnings)} warning(s))"
                                if should or warnings else ""))
    return 0
