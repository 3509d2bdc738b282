"""Loads a RuleSet into the kernel in one libnftables transaction, and reads its counters.

Every command goes through libnft.run (the process's contexts, kept per kind).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import NamedTuple

from . import libnft
from .errors import ApplyError, SkatError
from .render import BACKUP_TABLE, GATEWAY_TABLE, MASTER_TABLE, RuleSet, nft_dir

COUNTERS = ("arp_replies", "nd_replies", "address_defences", "foreign_master_frames",
            "guard_drops")
# The gateway's table lives across role switches, and so do its counters.
GATEWAY_COUNTERS = ("forwarded_up", "forwarded_down", "unknown_subscriber", "ttl_expired",
                    "not_forwarded")
# Learnings the gateway refused (nft/gateway.nft, admit): in `vrrp show`'s gateway counters.
LEARN_COUNTERS = ("learn_outside", "learn_limited", "learn_table_full")


def apply(ruleset: RuleSet, directory: Path | None = None) -> None:
    """All of the rule set, or (on any error) none of it: the kernel keeps what it had."""
    present = _tables() if ruleset.replaces else frozenset()
    rc, _out, err = libnft.run(ruleset.script(directory, present),
                               include=str(directory or nft_dir()), fresh=bool(ruleset.defines))
    if rc != 0:
        raise ApplyError(f"the kernel refused the {ruleset.role} rule set, nothing was "
                         f"changed: {err.strip()}")


def dry_run(ruleset: RuleSet, directory: Path | None = None) -> None:
    """Would the kernel take this rule set? The whole transaction goes to the kernel and is
    aborted at its end (nft --check): nothing is changed, whatever the answer."""
    present = _tables() if ruleset.replaces else frozenset()
    rc, _out, err = libnft.run(ruleset.script(directory, present), dry_run=True,
                               include=str(directory or nft_dir()), fresh=bool(ruleset.defines))
    if rc != 0:
        if "Operation not permitted" in err:
            raise SkatError("cannot ask the kernel whether it takes the rule sets: that "
                            "needs CAP_NET_ADMIN (run as root)")
        raise ApplyError(f"the kernel would refuse the {ruleset.role} rule set: "
                         f"{err.strip()}")


def _tables() -> frozenset[tuple[str, str]]:
    """(family, name) of every table in the kernel (text listing: see loaded_role)."""
    rc, out, _err = libnft.run("list tables")
    return frozenset(re.findall(r"^table (\w+) (\S+)$", out, re.M)) if rc == 0 else frozenset()


def _counters(family: str, table: str) -> dict[str, int] | None:
    rc, out, _err = libnft.run(f"list counters table {family} {table}", json=True)
    if rc != 0:
        return None
    return {item["counter"]["name"]: int(item["counter"]["packets"])
            for item in json.loads(out).get("nftables", []) if "counter" in item}


def read_counters() -> dict[str, int] | None:
    """Packets per named counter of the role tables; None when the plugin is not loaded.

    Both roles' tables stay loaded, so their counters run on across role switches; they
    start again at a full load (start, reload).
    """
    master = _counters("netdev", MASTER_TABLE)
    if master is None:
        return None
    found = {**master, **(_counters("netdev", BACKUP_TABLE) or {})}
    result = {name: found.get(name, 0) for name in COUNTERS}
    result["guard_drops"] += (_counters("bridge", BACKUP_TABLE) or {}).get("host_drops", 0)
    return result


def read_counter(name: str, family: str = "netdev", table: str = MASTER_TABLE) -> int | None:
    """One named counter's packets (the split-brain look, every second while master): one
    small listing instead of every counter of every table."""
    rc, out, _err = libnft.run(f"list counter {family} {table} {name}", json=True)
    if rc != 0:
        return None
    for item in json.loads(out).get("nftables", []):
        if "counter" in item:
            return int(item["counter"]["packets"])
    return None


def table_counters(family: str, table: str, names: tuple[str, ...]) -> dict[str, int] | None:
    """Packets of the named counters of one table (0 for one it lacks); None when the table
    is not loaded."""
    found = _counters(family, table)
    return None if found is None else {name: found.get(name, 0) for name in names}


def read_gateway_counters() -> dict[str, int] | None:
    """Packets per counter of the gateway's table; None when it is not loaded.

    Asked one counter at a time over netlink (nfnl.counter): libnftables would first fill
    its cache with every element of the table's maps (over a minute and a GiB at a million
    subscribers)."""
    from . import nfnl

    found = {name: nfnl.counter("netdev", GATEWAY_TABLE, name)
             for name in GATEWAY_COUNTERS + LEARN_COUNTERS}
    if found[GATEWAY_COUNTERS[0]] is None:
        return None
    return {name: value[0] if value else 0 for name, value in found.items()}


# Every table of the plugin: what a repair puts back, and what a fingerprint covers.
ALL_TABLES = (("netdev", MASTER_TABLE), ("netdev", BACKUP_TABLE), ("bridge", BACKUP_TABLE),
              ("inet", "skat_plugin_vrrp"), ("netdev", GATEWAY_TABLE),
              ("netdev", "skat_plugin_redirect"))


class Snapshot(NamedTuple):
    """The plugin's tables as the kernel holds them, from one listing of each."""
    digest: str                                # rules, chains, sets, table flags
    present: frozenset[tuple[str, str]]        # which of ALL_TABLES exist
    role: str | None                           # whose tables are awake (see loaded_role)


def snapshot() -> Snapshot:
    """Listed terse and stateless (no counter values, no set elements), so that only a
    change of the rules themselves changes the digest."""
    digest = hashlib.sha256()
    present = set()
    role = None
    for family, table in ALL_TABLES:
        rc, out, _err = libnft.run(f"list table {family} {table}", terse=True,
                                   stateless=True)
        digest.update(out.encode() if rc == 0 else f"no {family} {table}\n".encode())
        if rc == 0:
            present.add((family, table))
            if (family, table) == ("netdev", MASTER_TABLE):
                role = _role_of(out)
    return Snapshot(digest.hexdigest(), frozenset(present), role)


def loaded_role() -> str | None:
    """Which role's tables are awake in the kernel, judged from the kernel itself.

    The master's table is dormant in backup. (Read from the text listing: nft 1.0.6 prints
    table flags wrongly in JSON.)
    """
    rc, out, _err = libnft.run(f"list table netdev {MASTER_TABLE}")
    return _role_of(out) if rc == 0 else None


def _role_of(master_listing: str) -> str:
    head = master_listing.split("chain", 1)[0].split("counter", 1)[0]
    return "backup" if re.search(r"^\s*flags\s.*\bdormant\b", head, re.M) else "master"
