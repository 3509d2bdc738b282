"""Prometheus text exposition for node_exporter's textfile collector (docs/metrics.md).

The daemon renders the file every REFRESH seconds and at every change, and replaces it
atomically (temporary file in the same directory, rename), as the collector requires.
A missing directory means no node_exporter here: nothing is written, nothing is logged.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from . import atomicfile
from .nftapply import COUNTERS, GATEWAY_COUNTERS, LEARN_COUNTERS

DEFAULT_PATH = "/var/lib/prometheus/node-exporter/skat_plugin.prom"
REFRESH = 15.0  # and at every change the daemon sees
ROLES = ("master", "backup", "stopped")
PREFIX = "skat_plugin"

COUNTER_HELP = {
    "arp_replies": "ARP requests for bras_arp_ip answered in the kernel.",
    "nd_replies": "Neighbor Solicitations for the virtual gateway answered in the kernel.",
    "foreign_master_frames": "Frames from bras_arp_mac that arrived while master "
                             "(another master on the wire).",
    "guard_drops": "Frames of this appliance dropped by the backup guard.",
    "address_defences": "ARP probes and DAD probes for the gateway's addresses answered.",
}
GATEWAY_HELP = {
    "forwarded_up": "Subscriber frames carried to the border router (L2 termination).",
    "forwarded_down": "Border frames carried to a subscriber (L2 termination).",
    "unknown_subscriber": "Border frames to an IP never learned, dropped.",
    "ttl_expired": "Frames whose TTL or hop limit ran out (bras_transparency=0), dropped.",
    "not_forwarded": "Frames to the gateway itself or link-local, not forwarded.",
    "learn_outside": "New sources refused: outside vrrp_subscriber_nets.",
    "learn_limited": "New sources refused: over the port's or the MAC's learning rate.",
    "learn_table_full": "New sources refused: the subscriber table is full.",
}


def _timestamp(iso: str | None) -> float:
    if not iso:
        return 0.0
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def _number(value: float) -> str:
    # Integers exactly (counters grow past %g's precision); timestamps to the millisecond.
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def render(show: dict[str, Any], daemon: dict[str, Any], role_changes: int) -> str:
    """show: role.show(); daemon: the daemon's status (split_brain, election_alive)."""
    lines: list[str] = []

    def metric(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        full = f"{PREFIX}_{name}"
        lines.append(f"# HELP {full} {text}")
        lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            lines.append(f"{full}{labels} {_number(value)}")

    role = show.get("role") or "stopped"
    metric("role", "gauge", "1 for the appliance's current role, 0 for the others.",
           [(f'{{role="{r}"}}', 1 if r == role else 0) for r in ROLES])
    metric("vrrp_enable", "gauge", "fastdpi.conf vrrp_enable of the loaded configuration.",
           [("", int(show.get("vrrp_enable") or 0))])
    metric("role_since_seconds", "gauge", "Unix time the current role was entered.",
           [("", _timestamp(show.get("since")))])
    metric("role_changes_total", "counter",
           "Role changes seen by the daemon since it started.", [("", role_changes)])
    counters = show.get("counters") or {}
    for name in COUNTERS:
        metric(f"{name}_total", "counter", COUNTER_HELP[name], [("", counters.get(name, 0))])
    gateway = show.get("gateway") or {}
    for name in GATEWAY_COUNTERS + LEARN_COUNTERS:
        metric(f"gateway_{name}_total", "counter", GATEWAY_HELP[name],
               [("", (gateway.get("counters") or {}).get(name, 0))])
    subs = gateway.get("subscribers") or {}
    metric("gateway_subscribers", "gauge", "Subscribers in the gateway's table (learned or "
           "received from the group's master).",
           [(f'{{family="{f}"}}', subs.get(f) or 0) for f in ("ipv4", "ipv6")])
    metric("rule_repairs_total", "counter", "Times the daemon loaded its rules again after "
           "another writer removed or changed them.", [("", daemon.get("rule_repairs", 0))])
    _redirect_metrics(metric, show.get("redirect"))
    metric("split_brain", "gauge", "1 while another master sends from the virtual MAC.",
           [("", 1 if daemon.get("split_brain") else 0)])
    problems = daemon.get("port_problems")
    if problems is None:  # no daemon: what `vrrp show` saw
        problems = (show.get("ports") or {}).get("problems") or []
    metric("port_problems", "gauge", "Bridge ports missing, down or not bridged right now.",
           [("", len(problems))])
    _health_metrics(metric, show, daemon)
    alive = daemon.get("election_alive")
    metric("election_alive", "gauge",
           "1 while keepalived/ucarp is seen alive, 0 once it died, -1 before it was seen.",
           [("", -1 if alive is None else int(bool(alive)))])
    return "\n".join(lines) + "\n"


KEEPALIVED_STATES = ("MASTER", "BACKUP", "FAULT", "STOP")


def _health_metrics(metric: Any, show: dict[str, Any], daemon: dict[str, Any]) -> None:
    """What `vrrp show` lists under NEEDS ACTION, one series each (issue 16)."""
    said = (show.get("keepalived") or {}).get("state")
    metric("keepalived_state", "gauge", "1 for keepalived's latest notify FIFO state, 0 for "
           "the others (all 0 before it spoke).",
           [(f'{{state="{k}"}}', 1 if k == said else 0) for k in KEEPALIVED_STATES])
    metric("election_mismatch", "gauge", "1 while the kernel's role has differed from "
           "keepalived's latest state for longer than a switch takes.",
           [("", 1 if show.get("election_mismatch") else 0)])
    fitness = show.get("fitness")
    metric("fit", "gauge", "1 while fit to be master (the verdict keepalived reads), 0 "
           "unfit, -1 stopped.", [("", -1 if not fitness else int(bool(fitness["fit"])))])
    metric("handover", "gauge", "1 while 'fdpi_cli vrrp handover' holds this appliance back.",
           [("", 1 if show.get("handover") else 0)])
    metric("needs_action", "gauge", "Things 'fdpi_cli vrrp show' lists under NEEDS ACTION.",
           [("", len(show.get("attention") or []))])


REDIRECT_HELP = {
    "redirected": "Blocked HTTP requests answered with 302 to black_list_redirect.",
    "forbidden": "Blocked HTTP requests answered with 403 (no black_list_redirect).",
    "reset": "Connections reset: blocked TLS server names and addresses.",
    "allowed": "Inspected packets let through (re-injected).",
    "inspected": "Packets the kernel handed to the inspector.",
    "passed_uninspected": "Selected packets passed without a decision (no inspector, "
                          "over black_list_inspect_rate, inspector behind, unreadable).",
}


def _redirect_metrics(metric: Any, redirect: dict[str, Any] | None) -> None:
    """SKAT's black-list redirect (issue 8), when configured."""
    if not redirect:
        return
    counters = redirect.get("counters") or {}
    for name, text in REDIRECT_HELP.items():
        metric(f"redirect_{name}_total", "counter", text, [("", counters.get(name, 0))])
    inspector = redirect.get("inspector") or {}
    metric("redirect_inspector_alive", "gauge", "1 while the inspector reports itself alive.",
           [("", int(bool(inspector.get("alive"))))])
    metric("redirect_list_error", "gauge", "1 while a black list cannot be read (the "
           "inspector keeps the last good lists).", [("", 1 if inspector.get("list_error")
                                                        else 0)])


def write(path: str | Path, text: str) -> bool:
    """Atomic replace; False (silently) when the collector's directory does not exist."""
    if not Path(path).parent.is_dir():
        return False
    atomicfile.write(path, text)
    return True
