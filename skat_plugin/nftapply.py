"""Loads a RuleSet into the kernel in one libnftables transaction, and reads its counters.

Writes go through libnft.run (the process's contexts, kept per kind). Reads (which tables
exist, which are dormant, counters, the rules' fingerprint) go over netlink (nfnl.py):
libnftables fills its cache with every element of every set before it answers even
`list tables`, which took 95 s with a million learned subscribers; these reads take well
under a millisecond whatever the sets hold.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

from . import libnft, nfnl
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
    """(family, name) of every table in the kernel."""
    return nfnl.tables()


def _counters(family: str, table: str) -> dict[str, int] | None:
    return nfnl.counters(family, table)


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
    netlink request for it alone."""
    found = nfnl.counter(family, table, name)
    return None if found is None else found[0]


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
    """Each table's definition without counter values or set elements (nfnl.table_digest),
    so that only a change of the rules themselves (or of a table's flags) changes the
    digest."""
    digest = hashlib.sha256()
    present = set()
    for family, table in ALL_TABLES:
        found = nfnl.table_digest(family, table)
        digest.update(found if found is not None else f"no {family} {table}\n".encode())
        if found is not None:
            present.add((family, table))
    return Snapshot(digest.hexdigest(), frozenset(present), loaded_role())


def loaded_role() -> str | None:
    """Which role's tables are awake in the kernel, judged from the kernel itself: the
    master's table is dormant in backup."""
    flags = nfnl.table_flags("netdev", MASTER_TABLE)
    if flags is None:
        return None
    return "backup" if flags & nfnl.TABLE_FLAG_DORMANT else "master"
