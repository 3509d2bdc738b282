"""Loads a RuleSet into the kernel in one libnftables transaction, and reads its counters.

A fresh Nftables context per call keeps calls independent (libnftables 1.0.6 even corrupts
its heap when a context given variables with add_var runs a second command; the defines are
therefore part of the script, see RuleSet.script).
"""

from __future__ import annotations

import json
from pathlib import Path

import nftables

from .errors import ApplyError
from .render import GATEWAY_TABLE, TABLE, RuleSet, nft_dir

COUNTERS = ("arp_replies", "nd_replies", "address_defences", "foreign_master_frames",
            "guard_drops")
# The gateway's table lives across role switches, and so do its counters.
GATEWAY_COUNTERS = ("forwarded_up", "forwarded_down", "unknown_subscriber", "ttl_expired",
                    "not_forwarded")


def _context() -> nftables.Nftables:
    nft = nftables.Nftables()
    nft.set_handle_output(False)
    return nft


def apply(ruleset: RuleSet, directory: Path | None = None) -> None:
    """All of the rule set, or (on any error) none of it: the kernel keeps what it had."""
    nft = _context()
    nft.add_include_path(str(directory or nft_dir()))
    rc, _out, err = nft.cmd(ruleset.script(directory))
    if rc != 0:
        raise ApplyError(f"the kernel refused the {ruleset.role} rule set, nothing was "
                         f"changed: {err.strip()}")


def read_counters() -> dict[str, int] | None:
    """Packets per named counter of the plugin's tables; None when the plugin is not loaded."""
    nft = _context()
    nft.set_json_output(True)
    rc, out, _err = nft.cmd(f"list counters table netdev {TABLE}")
    if rc != 0:
        return None
    result = {name: 0 for name in COUNTERS}
    for item in json.loads(out).get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("name") in result:
            result[counter["name"]] = int(counter["packets"])
    rc, out, _err = nft.cmd(f"list counters table bridge {TABLE}")
    if rc == 0:
        for item in json.loads(out).get("nftables", []):
            counter = item.get("counter")
            if counter and counter.get("name") == "host_drops":
                result["guard_drops"] += int(counter["packets"])
    return result


def read_gateway_counters() -> dict[str, int] | None:
    """Packets per counter of the gateway's table; None when it is not loaded."""
    nft = _context()
    nft.set_json_output(True)
    rc, out, _err = nft.cmd(f"list counters table netdev {GATEWAY_TABLE}")
    if rc != 0:
        return None
    result = {name: 0 for name in GATEWAY_COUNTERS}
    for item in json.loads(out).get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("name") in result:
            result[counter["name"]] = int(counter["packets"])
    return result


def loaded_role() -> str | None:
    """Which role's rule set is in the kernel, judged from the kernel itself."""
    nft = _context()
    nft.set_json_output(True)
    rc, out, _err = nft.cmd("list chains netdev")
    if rc != 0:
        return None
    chains = {item["chain"]["name"] for item in json.loads(out).get("nftables", [])
              if "chain" in item and item["chain"].get("table") == TABLE}
    if not chains:
        return None
    return "backup" if "port_out" in chains else "master"
