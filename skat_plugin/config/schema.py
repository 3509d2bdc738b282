"""The fastdpi.conf keys this plugin owns: their JSON Schema, defaults and meaning.

Validation is in three steps, so each error can name its key and line:
1. every raw string is turned into a JSON value by the key's kind (list, int, ...);
2. jsonschema checks types, ranges and patterns;
3. semantic checks that a schema cannot say (unicast MAC, fe80::/10, pairs that come together).
docs/configuration.md documents every key; keep the two in step.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from typing import Any

from ..errors import ConfigError
from . import keynames
from .conffile import ConfFile

IFNAME = r"^[A-Za-z0-9_.\-@]{1,15}$"
MAC = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"

# kind: how the raw string becomes a JSON value. "list" = colon-separated (fastdpi's own
# convention), "addrs" = comma/space-separated (addresses contain colons).
# expect: the phrase every error about the key ends with.
KEYS: dict[str, dict[str, Any]] = {
    "in_dev": {"kind": "list", "schema": {"type": "array", "minItems": 1, "maxItems": 64,
                                          "items": {"type": "string", "pattern": IFNAME}},
               "expect": "subscriber-side interface names separated by ':' (e.g. eth0:eth2)"},
    "out_dev": {"kind": "list", "schema": {"type": "array", "minItems": 1, "maxItems": 64,
                                           "items": {"type": "string", "pattern": IFNAME}},
                "expect": "uplink interface names separated by ':' (e.g. eth1:eth3)"},
    "vrrp_enable": {"kind": "int", "default": 0, "schema": {"enum": [0, 1]},
                    "expect": "0 (VRRP off, always master) or 1 (on)"},
    "bras_arp_mac": {"kind": "str", "schema": {"type": "string", "pattern": MAC},
                     "expect": "the virtual gateway's unicast MAC, e.g. 02:00:5e:00:01:01"},
    "bras_arp_ip": {"kind": "str", "schema": {"type": "string", "format": "ipv4"},
                    "expect": "the virtual gateway's IPv4 address, e.g. 100.64.0.1"},
    "bras_ipv6_link_local": {"kind": "str", "schema": {"type": "string", "format": "ipv6"},
                             "expect": "the virtual gateway's link-local address in fe80::/10"},
    "bras_ipv6_address": {"kind": "str", "schema": {"type": "string", "format": "ipv6"},
                          "expect": "the virtual gateway's global unicast IPv6 address"},
    # --- the gateway: SKAT's L2 termination (master only) -------------------------------------
    "bras_terminate_l2": {"kind": "int", "default": 0, "schema": {"enum": [0, 1]},
                          "expect": "1 (the master carries subscribers' traffic to "
                                    "bras_gateway_mac and back) or 0 (off)"},
    "bras_gateway_ip": {"kind": "str", "schema": {"type": "string", "format": "ipv4"},
                        "expect": "the border router's IPv4 address on the uplink side"},
    "bras_gateway_mac": {"kind": "str", "schema": {"type": "string", "pattern": MAC},
                         "expect": "the border router's unicast MAC on the uplink side"},
    "bras_gateway_ipv6": {"kind": "str", "schema": {"type": "string", "format": "ipv6"},
                          "expect": "the border router's IPv6 address on the uplink side"},
    "bras_gateway_ipv6_mac": {"kind": "str", "schema": {"type": "string", "pattern": MAC},
                              "expect": "the border router's MAC for IPv6, if it differs "
                                        "from bras_gateway_mac"},
    "bras_transparency": {"kind": "int", "default": 1, "schema": {"enum": [0, 1]},
                          "expect": "1 (TTL and hop limit untouched, SKAT's default) or 0 "
                                    "(decremented like a router)"},
    "bras_subscriber_timeout": {"kind": "int", "default": 300,
                                "schema": {"type": "integer", "minimum": 10,
                                           "maximum": 86400},
                                "expect": "seconds a learned subscriber is kept without "
                                          "traffic, 10 to 86400"},
    "bras_vlan_terminate": {"kind": "int", "default": 0,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 3},
                            "expect": "0: this plugin keeps VLAN tags as they are (removing "
                                      "and adding tags is not supported)"},
    "vrrp_subscriber_nets": {"kind": "addrs",
                             "schema": {"type": "array", "minItems": 1, "maxItems": 1024,
                                        "items": {"type": "string"}},
                             "expect": "the subscribers' IPv4 and IPv6 prefixes, separated by "
                                       "commas, e.g. 100.64.0.0/10,2001:db8:100::/48"},
    "vrrp_sync_interval": {"kind": "float", "default": 1.0,
                           "schema": {"type": "number", "minimum": 0, "maximum": 60},
                           "expect": "seconds between subscriber-table updates to the "
                                     "group, 0 = off, up to 60"},
    "vrrp_sync_port": {"kind": "int", "default": 23720,
                       "schema": {"type": "integer", "minimum": 1, "maximum": 65535},
                       "expect": "the UDP port of the subscriber-table sync on "
                                 "vrrp_interface, 1 to 65535"},
    "vrrp_sync_key_file": {"kind": "str",
                           "schema": {"type": "string", "pattern": r"^/[A-Za-z0-9_./\-]{1,200}$"},
                           "expect": "an absolute path to the group's sync key: a file of "
                                     "root's, mode 0600, at least 32 bytes"},
    # --- Router Advertisements for IPv6 subscribers (master, with bras_terminate_l2=1) -------
    "bras_ipv6_router_pref": {"kind": "int", "default": 0, "schema": {"enum": [-1, 0, 1, 3]},
                              "expect": "-1 (no RA: not a router), 0 medium, 1 high or 3 low"},
    "bras_icmp6_send_rtradv": {"kind": "int", "default": 0, "schema": {"enum": [0, 1]},
                               "expect": "0 or 1 (periodic Router Advertisements are sent "
                                         "either way, see docs/configuration.md)"},
    "bras_icmp6_min_rtradv_interval": {"kind": "int", "default": 200,
                                       "schema": {"type": "integer", "minimum": 3,
                                                  "maximum": 1350},
                                       "expect": "seconds, 3 to 1350 (RFC 4861)"},
    "bras_icmp6_max_rtradv_interval": {"kind": "int", "default": 600,
                                       "schema": {"type": "integer", "minimum": 4,
                                                  "maximum": 1800},
                                       "expect": "seconds, 4 to 1800 (RFC 4861)"},
    "bras_icmp6_rtradv_mtu": {"kind": "int", "default": 1500,
                              "schema": {"type": "integer", "minimum": 0, "maximum": 65535},
                              "expect": "the MTU option of the RA, 1280 to 65535, or 0 for none"},
    "bras_icmp6_reachable_time": {"kind": "int", "default": 0,
                                  "schema": {"type": "integer", "minimum": 0,
                                             "maximum": 3600000},
                                  "expect": "milliseconds, 0 (unspecified) to 3600000"},
    "bras_icmp6_hop_limit": {"kind": "int", "default": 64,
                             "schema": {"type": "integer", "minimum": 0, "maximum": 255},
                             "expect": "the hop limit hosts should use, 0 (unspecified) to 255"},
    "bras_icmp6_default_lifetime": {"kind": "int", "default": 1800,
                                    "schema": {"type": "integer", "minimum": 0,
                                               "maximum": 9000},
                                    "expect": "seconds the gateway stays the default router, "
                                              "0 to 9000"},
    # --- how the plugin behaves -----------------------------------------------------------
    "vrrp_start_role": {"kind": "str", "default": "master",
                        "schema": {"enum": ["master", "backup"]},
                        "expect": "master (SKAT's documented default) or backup"},
    "vrrp_socket_mark": {"kind": "int", "default": 0x5CA7,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 0xFFFFFFFF},
                         "expect": "a non-zero 32-bit packet mark, e.g. 0x5ca7"},
    "vrrp_nd_router_flag": {"kind": "int", "default": 1, "schema": {"enum": [0, 1]},
                            "expect": "1 (the gateway answers NS as a router) or 0"},
    "vrrp_garp_count": {"kind": "int", "default": 5,
                        "schema": {"type": "integer", "minimum": 0, "maximum": 100},
                        "expect": "how many GARPs to send on takeover (NAs: at most 3), 0 "
                                  "to 100"},
    "vrrp_garp_interval": {"kind": "float", "default": 0.1,
                           "schema": {"type": "number", "minimum": 0.001, "maximum": 10},
                           "expect": "seconds between takeover GARP/NA, 0.001 to 10"},
    "vrrp_garp_refresh": {"kind": "float", "default": 0.0,
                          "schema": {"type": "number", "minimum": 0, "maximum": 3600},
                          "expect": "seconds between GARP/NA refreshes while master, 0 = off"},
    "vrrp_split_brain_handover": {"kind": "int", "default": 0, "schema": {"enum": [0, 1]},
                                  "expect": "1 to make keepalived hand over on split brain, or 0"},
    # --- keepalived configuration (fdpi_cli vrrp keepalived-config) ------------------------
    "vrrp_interface": {"kind": "str", "schema": {"type": "string", "pattern": IFNAME},
                       "expect": "the interface that carries VRRP (not a bridge port)"},
    "vrrp_router_id": {"kind": "int", "default": 51,
                       "schema": {"type": "integer", "minimum": 1, "maximum": 255},
                       "expect": "the virtual router id, 1 to 255, equal on the whole group"},
    "vrrp_priority": {"kind": "int", "default": 100,
                      "schema": {"type": "integer", "minimum": 1, "maximum": 254},
                      "expect": "this appliance's priority, 1 to 254 (higher wins)"},
    "vrrp_advert_int": {"kind": "float", "default": 1.0,
                        "schema": {"type": "number", "minimum": 0.01, "maximum": 255},
                        "expect": "advert interval in seconds (v3: 0.01 to 40.95, v2: 1 to 255)"},
    "vrrp_version": {"kind": "int", "default": 3, "schema": {"enum": [2, 3]},
                     "expect": "the VRRP version, 2 or 3"},
    "vrrp_unicast_src": {"kind": "str", "schema": {"type": "string", "format": "ipv4"},
                         "expect": "this appliance's IPv4 address on vrrp_interface"},
    "vrrp_unicast_peers": {"kind": "addrs",
                           "schema": {"type": "array", "maxItems": 16, "uniqueItems": True,
                                      "items": {"type": "string", "format": "ipv4"}},
                           "expect": "peer IPv4 addresses, comma-separated (none: multicast)"},
    "vrrp_auth_pass": {"kind": "str",
                       "schema": {"type": "string", "pattern": r"^[!-~]{1,8}$"},
                       "expect": "1 to 8 printable characters without spaces (VRRPv2 PASS)"},
    "vrrp_preempt": {"kind": "int", "default": 1, "schema": {"enum": [0, 1]},
                     "expect": "1 (a higher priority takes over) or 0 (nopreempt)"},
    "vrrp_preempt_delay": {"kind": "int", "default": 0,
                           "schema": {"type": "integer", "minimum": 0, "maximum": 1000},
                           "expect": "seconds to wait before preempting, 0 to 1000"},
    "vrrp_script_user": {"kind": "str", "default": "root",
                         "schema": {"type": "string", "pattern": r"^[a-z_][a-z0-9_\-]{0,31}$"},
                         "expect": "an existing system user that runs the notify scripts"},
    "vrrp_mgmt_vip": {"kind": "str", "schema": {"type": "string"},
                      "expect": "the floating management address with prefix, e.g. 192.0.2.10/24"},
    "vrrp_instance": {"kind": "str", "default": "skat_plugin",
                      "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,32}$"},
                      "expect": "the keepalived vrrp_instance whose state is the appliance's "
                                "role (letters, digits, _ . -)"},
    "vrrp_election_pidfile": {"kind": "list",
                              "default": ["/run/keepalived/vrrp.pid", "/run/vrrp.pid"],
                              "schema": {"type": "array", "maxItems": 8, "items": {
                                  "type": "string", "pattern": r"^/[A-Za-z0-9_./\-]{1,200}$"}},
                              "expect": "absolute pid file path(s) of keepalived's VRRP child "
                                        "(or ucarp), ':' between them; empty = do not watch"},
    "vrrp_notify_fifo": {"kind": "str", "default": "/run/skat-plugin/keepalived.fifo",
                         "schema": {"type": "string", "pattern": r"^/[A-Za-z0-9_./\-]{1,200}$"},
                         "expect": "an absolute path for keepalived's notify FIFO"},
}


# --- SKAT's black-list redirect (master only; docs/redirect.md) ----------------------------
_PATH_KEY = r"^/[^\x00-\x1f\x7f]{1,4095}$"
KEYS.update({
    "black_list_redirect": {"kind": "str",
                            "schema": {"type": "string", "pattern": r"^https?://[\x21-\x7e]+$"},
                            "expect": "the notice page's URL, http:// or https://, without "
                                      "spaces (ending in ? or & adds UrlRedir=)"},
    "black_list_url_file": {"kind": "str", "schema": {"type": "string", "pattern": _PATH_KEY},
                            "expect": "an absolute path to the URL list (host or host/path "
                                      "a line)"},
    "black_list_ip_file": {"kind": "str", "schema": {"type": "string", "pattern": _PATH_KEY},
                           "expect": "an absolute path to the address list (addresses and "
                                     "prefixes, IPv4 and IPv6, one a line)"},
    "black_list_sni_file": {"kind": "str", "schema": {"type": "string", "pattern": _PATH_KEY},
                            "expect": "an absolute path to the TLS server name list (*. "
                                      "wildcards allowed)"},
    "black_list_inspect_rate": {"kind": "int", "default": 2000,
                                "schema": {"type": "integer", "minimum": 10,
                                           "maximum": 1000000},
                                "expect": "packets a second the inspector is handed, 10 to "
                                          "1000000; more pass uninspected (counted)"},
})


_INT = re.compile(r"[+-]?(0[xX][0-9A-Fa-f]+|[0-9]+)\Z")
_LEADING_ZERO = re.compile(r"[+-]?0[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")


def _convert(kind: str, raw: str) -> Any:
    """Raw string -> JSON value; what does not convert stays a string for the schema to reject."""
    if kind == "list":
        return raw.split(":") if raw else []
    if kind == "addrs":
        return [p for p in re.split(r"[,\s]+", raw) if p]
    # Numbers are ASCII decimal (ints also 0x hex), finite: Python's int()/float() would also
    # take "1_0", Unicode digits, "nan" and "inf", which no range check can refuse.
    if kind == "int" and _INT.match(raw):
        return int(raw, 0) if not _LEADING_ZERO.match(raw) else int(raw, 10)
    if kind == "float" and _FLOAT.match(raw) and math.isfinite(float(raw)):
        return float(raw)
    return raw


SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {k: v["schema"] for k, v in KEYS.items()},
}
@functools.cache
def _validator() -> Any:
    """Made at the first validation: readers of KEYS alone need no jsonschema."""
    import jsonschema

    return jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def validate(conf: ConfFile) -> dict[str, Any]:
    """Return the plugin's keys as typed values (defaults filled in), or raise ConfigError."""
    path = conf.path

    def fail(key: str, message: str) -> ConfigError:
        entry = conf.get(key)
        return ConfigError(message, path, entry.line if entry else None, key)

    keynames.check(conf, KEYS)  # an unknown vrrp_* key is a typo of one of ours
    for key in KEYS:
        if key in conf.repeated:
            raise fail(key, f"set twice (first on line {conf.repeated[key]}); keep one of them")
    values = {k: _convert(spec["kind"], conf.entries[k].value)
              for k, spec in KEYS.items() if k in conf.entries}

    errors = sorted(_validator().iter_errors(values),
                    key=lambda e: conf.entries[e.path[0]].line if e.path else 0)
    if errors:
        err = errors[0]
        key = str(err.path[0]) if err.path else "?"
        shown = conf.entries[key].value if key in conf.entries else ""
        raise fail(key, f"{shown!r} is not valid: expected {KEYS[key]['expect']}")

    for key, spec in KEYS.items():
        if "default" in spec:
            values.setdefault(key, spec["default"])
    _semantic_checks(values, fail)
    return values


def _semantic_checks(v: dict[str, Any], fail: Any) -> None:
    ins, outs = v.get("in_dev"), v.get("out_dev")
    if ins is None or outs is None:
        missing = "in_dev" if ins is None else "out_dev"
        raise fail(missing, f"missing: set {missing} (and its partner) to the ports to bridge")
    if len(ins) != len(outs):
        raise fail("out_dev", f"has {len(outs)} ports but in_dev has {len(ins)}; "
                              f"each in_dev port is bridged to the out_dev port at its position")
    seen: set[str] = set()
    for key, names in (("in_dev", ins), ("out_dev", outs)):
        for name in names:
            if name in seen:
                raise fail(key, f"port {name!r} is listed twice; each port joins one bridge")
            seen.add(name)

    mac = v.get("bras_arp_mac")
    if mac is not None:
        first = int(mac[:2], 16)
        if first & 1 or mac.replace(":", "") == "0" * 12:
            raise fail("bras_arp_mac", f"{mac!r} is a multicast or zero MAC; expected "
                                       f"{KEYS['bras_arp_mac']['expect']}")
    ip4 = v.get("bras_arp_ip")
    if ip4 is not None:
        a = ipaddress.IPv4Address(ip4)
        if a.is_multicast or a.is_loopback or a.is_unspecified or a.is_link_local \
                or a == ipaddress.IPv4Address("255.255.255.255"):
            raise fail("bras_arp_ip", f"{ip4!r} cannot be a gateway address; expected "
                                      f"{KEYS['bras_arp_ip']['expect']}")
    ll = v.get("bras_ipv6_link_local")
    if ll is not None and not ipaddress.IPv6Address(ll).is_link_local:
        raise fail("bras_ipv6_link_local", f"{ll!r} is not in fe80::/10; expected "
                                           f"{KEYS['bras_ipv6_link_local']['expect']}")
    g6 = v.get("bras_ipv6_address")
    if g6 is not None:
        a6 = ipaddress.IPv6Address(g6)
        if a6.is_link_local or a6.is_multicast or a6.is_loopback or a6.is_unspecified \
                or a6.ipv4_mapped is not None:
            raise fail("bras_ipv6_address", f"{g6!r} is not a global unicast address; "
                                            f"expected {KEYS['bras_ipv6_address']['expect']}")
    if (ll is None) != (g6 is None):
        have, need = ("bras_ipv6_link_local", "bras_ipv6_address") if g6 is None \
            else ("bras_ipv6_address", "bras_ipv6_link_local")
        raise fail(have, f"is set but {need} is not; set both IPv6 keys or neither")
    if v["vrrp_enable"] == 1:
        for key in ("bras_arp_mac", "bras_arp_ip"):
            if v.get(key) is None:
                raise fail("vrrp_enable", f"vrrp_enable=1 needs {key}: set it to the group's "
                                          f"virtual gateway value, equal on every appliance")
    elif (ip4 is not None or ll is not None) and mac is None:
        raise fail("bras_arp_ip" if ip4 is not None else "bras_ipv6_link_local",
                   "the virtual gateway needs bras_arp_mac to answer from; set it")

    _gateway_checks(v, fail)
    _vrrp_checks(v, fail)
    _sync_key_check(v, fail)
    _redirect_checks(v, fail)


def _vrrp_checks(v: dict[str, Any], fail: Any) -> None:
    """Keys that only the keepalived generator reads; checked here so errors come at load."""
    adv, ver = v["vrrp_advert_int"], v["vrrp_version"]
    if ver == 2 and (adv != int(adv) or adv < 1):
        raise fail("vrrp_advert_int", f"{adv:g} is not valid for VRRPv2: expected whole "
                                      f"seconds 1 to 255 (sub-second needs vrrp_version=3)")
    if ver == 3 and adv > 40.95:
        raise fail("vrrp_advert_int", f"{adv:g} is too long for VRRPv3: expected 0.01 to 40.95")
    if ver == 3 and "vrrp_auth_pass" in v:
        raise fail("vrrp_auth_pass", "VRRPv3 has no authentication; remove the key or "
                                     "set vrrp_version=2")
    if v.get("vrrp_unicast_peers") and "vrrp_unicast_src" not in v:
        raise fail("vrrp_unicast_peers", "unicast peers need vrrp_unicast_src, this "
                                         "appliance's own address on vrrp_interface")
    src = v.get("vrrp_unicast_src")
    if src is not None and src in v.get("vrrp_unicast_peers", []):
        raise fail("vrrp_unicast_peers", f"lists {src}, which is vrrp_unicast_src; list "
                                         f"only the other appliances")
    vip = v.get("vrrp_mgmt_vip")
    if vip is not None:
        try:
            iface = ipaddress.ip_interface(vip)
        except ValueError:
            iface = None
        if iface is None or "/" not in vip or iface.version != 4:
            raise fail("vrrp_mgmt_vip", f"{vip!r} is not valid: expected "
                                        f"{KEYS['vrrp_mgmt_vip']['expect']}")
    if v.get("vrrp_interface") in set(v["in_dev"]) | set(v["out_dev"]):
        raise fail("vrrp_interface", "is a bridge port; VRRP needs its own interface "
                                     "(a bridge port would carry adverts into the subscriber "
                                     "network)")


def _sync_key_check(v: dict[str, Any], fail: Any) -> None:
    """The sync's key file is read now: a file others can read, or too short a key, fails
    the load, and the running sync keeps its key."""
    path = v.get("vrrp_sync_key_file")
    if path is None:
        return  # the sync is then off; `fdpi_cli check` says so (gateway/sync.py)
    from ..gateway import syncwire

    try:
        syncwire.load_key(path)
    except syncwire.KeyFileError as e:
        raise fail("vrrp_sync_key_file", str(e)) from None


def _gateway_checks(v: dict[str, Any], fail: Any) -> None:
    """L2 termination and Router Advertisements: what the gateway needs to forward."""
    for key in ("bras_gateway_mac", "bras_gateway_ipv6_mac"):
        mac = v.get(key)
        if mac is not None and (int(mac[:2], 16) & 1 or mac.replace(":", "") == "0" * 12):
            raise fail(key, f"{mac!r} is a multicast or zero MAC; expected {KEYS[key]['expect']}")
    gw4 = v.get("bras_gateway_ip")
    if gw4 is not None and gw4 == v.get("bras_arp_ip"):
        raise fail("bras_gateway_ip", "is bras_arp_ip; expected the border router's own "
                                      "address, not the virtual gateway's")
    gw6 = v.get("bras_gateway_ipv6")
    if gw6 is not None:
        a6 = ipaddress.IPv6Address(gw6)
        if a6.is_multicast or a6.is_unspecified or a6.is_loopback:
            raise fail("bras_gateway_ipv6", f"{gw6!r} is not a unicast address; expected "
                                            f"{KEYS['bras_gateway_ipv6']['expect']}")
    if v["bras_vlan_terminate"] != 0:
        raise fail("bras_vlan_terminate", "is not supported by skat-plugin: this kernel "
                                          "cannot add VLAN tags (no tc vlan action); set it "
                                          "to 0, tags are then kept as they are "
                                          "(docs/gateway.md)")
    if v["bras_terminate_l2"] == 1:
        for key in ("bras_arp_mac", "bras_arp_ip", "bras_gateway_ip", "bras_gateway_mac"):
            if v.get(key) is None:
                raise fail("bras_terminate_l2", f"bras_terminate_l2=1 needs {key}: set it "
                                                f"(SKAT's L2 termination, docs/gateway.md)")
    _subscriber_nets_checks(v, fail)
    if v["bras_icmp6_min_rtradv_interval"] > 0.75 * v["bras_icmp6_max_rtradv_interval"]:
        raise fail("bras_icmp6_min_rtradv_interval",
                   f"{v['bras_icmp6_min_rtradv_interval']} is more than 3/4 of "
                   f"bras_icmp6_max_rtradv_interval ({v['bras_icmp6_max_rtradv_interval']}); "
                   f"RFC 4861 allows at most 0.75 x the maximum")
    life, high = v["bras_icmp6_default_lifetime"], v["bras_icmp6_max_rtradv_interval"]
    if 0 < life < high:  # RFC 4861 6.2.1: else hosts lose the route between two RAs
        raise fail("bras_icmp6_default_lifetime",
                   f"{life} is shorter than bras_icmp6_max_rtradv_interval ({high}): hosts "
                   f"would drop the gateway between two periodic RAs; RFC 4861 6.2.1 asks for "
                   f"0 or at least the maximum interval (default 3 x, here {3 * high})")
    mtu = v["bras_icmp6_rtradv_mtu"]
    if 0 < mtu < 1280:
        raise fail("bras_icmp6_rtradv_mtu", f"{mtu} is below IPv6's minimum MTU; expected "
                                            f"{KEYS['bras_icmp6_rtradv_mtu']['expect']}")


def _subscriber_nets_checks(v: dict[str, Any], fail: Any) -> None:
    """vrrp_subscriber_nets: prefixes (host bits zero), and one per family the gateway
    carries: a family without a prefix would learn no subscriber at all."""
    nets = v.get("vrrp_subscriber_nets")
    if nets is None:
        return
    parsed = []
    for text in nets:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError:
            raise fail("vrrp_subscriber_nets",
                       f"{text!r} is not a prefix with its host bits zero; expected "
                       f"{KEYS['vrrp_subscriber_nets']['expect']}") from None
        if net.is_multicast or net.is_loopback or (net.is_link_local and net.version == 6):
            raise fail("vrrp_subscriber_nets", f"{text!r} holds no subscriber addresses "
                                               f"(multicast, loopback or link-local)")
        parsed.append(net)
    v["vrrp_subscriber_nets"] = [str(n) for n in parsed]
    if v["bras_terminate_l2"] == 1 and v.get("bras_ipv6_address") is not None \
            and not any(n.version == 6 for n in parsed):
        raise fail("vrrp_subscriber_nets", "lists no IPv6 prefix, but the gateway carries "
                                           "IPv6 (bras_ipv6_address): no IPv6 subscriber "
                                           "would be learned; add their prefix")
    if not any(n.version == 4 for n in parsed):
        raise fail("vrrp_subscriber_nets", "lists no IPv4 prefix: no IPv4 subscriber would "
                                           "be learned; add their prefix")


def subscriber_nets_warning(conf: ConfFile) -> str | None:
    """The line `check` prints when the gateway learns from any source
    (bras_terminate_l2=1 without vrrp_subscriber_nets)."""
    entry = conf.get("bras_terminate_l2")
    if entry is None or entry.value.strip() != "1" or conf.get("vrrp_subscriber_nets"):
        return None
    return (f"{conf.path}:{entry.line}: bras_terminate_l2=1 without vrrp_subscriber_nets: "
            f"the gateway learns subscribers from any source address; set it to the "
            f"subscribers' prefixes so that spoofed sources cannot fill its table")


def _redirect_checks(v: dict[str, Any], fail: Any) -> None:
    """The black-list files are read and checked now: a bad line fails the load, naming its
    file and line, and the loaded rules and lists stay as they were."""
    from ..redirect import lists

    try:
        lists.load(v)
    except lists.ListError as e:
        key = next((k for k in lists.FILE_KEYS if v.get(k) == e.path), None)
        raise ConfigError(f"{key}: {e.message}" if key else e.message, e.path, e.line) \
            from None
