"""Loads a RuleSet into the kernel in one libnftables transaction, and reads its counters.

A fresh Nftables context per call keeps calls independent (libnftables 1.0.6 even corrupts
its heap when a context given variables with add_var runs a second command; the defines are
therefore part of the script, see RuleSet.script).
"""

from __future__ import annotations

import json
from pathlib import Path

import nftables

from .errors import ApplyError, SkatError
from .render import TABLE, RuleSet, nft_dir

COUNTERS = ("arp_replies", "nd_replies", "foreign_master_frames", "guard_drops")


def _context() -> nftables.Nftables:
    nft = nftables.Nftables()
    nft.set_handle_output(False)
    return nft


def apply(ruleset: RuleSet, directory: Path | None = None) -> None:
    """All of the rule set, or (on any error) none of it: the kernel keeps what it had."""
    nft = _context()
    nft.add_include_path(str(directory or nft_dir()))
    rc, _out, err = nft.cmd(ruleset.script())
    if rc != 0:
        raise ApplyError(f"the kernel refused the {ruleset.role} rule set, nothing was "
                         f"changed: {err.strip()}")


def dry_run(ruleset: RuleSet, directory: Path | None = None) -> None:
    """Would the kernel take this rule set? The whole transaction goes to the kernel and is
    aborted at its end (nft --check): nothing is changed, whatever the answer."""
    nft = _context()
    nft.set_dry_run(True)
    nft.add_include_path(str(directory or nft_dir()))
    rc, _out, err = nft.cmd(ruleset.script())
    if rc != 0:
        if "Operation not permitted" in err:
            raise SkatError("cannot ask the kernel whether it takes the rule sets: that "
                            "needs CAP_NET_ADMIN (run as root)")
        raise ApplyError(f"the kernel would refuse the {ruleset.role} rule set: "
                         f"{err.strip()}")


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
