"""The verdict on this appliance's fitness to be master, and its reasons.

One function and one phrase per reason, shared by `fdpi_cli vrrp track` (health.py) and the
track file the daemon writes for keepalived (trackfile.py), so that an operator finds one
cause under one name wherever it shows.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config import Config

NOT_STARTED = "plugin not started (run 'fdpi_cli start')"
RULES_NOT_LOADED = "the plugin's nftables rules are not loaded"
DAEMON_DOWN = "the supervising daemon (fdpi_cli daemon) is not running"
SPLIT_BRAIN = "split brain: another master sends from bras_arp_mac (vrrp_split_brain_handover=1)"


def verdict(cfg: Config | None, rules: str | None, port_problems: list[str],
            daemon: str | None, split_brain: bool, election: str | None = None) -> str | None:
    """The first reason in the documented order, or None when fit.

    cfg: the loaded configuration (None: not started); rules, daemon: what is wrong with
    them, or None; split_brain: a split brain is reported now; election: a lasting
    difference between keepalived's word and the role (the daemon's alarm): unfit puts
    keepalived in FAULT, whose order (or the peer's takeover) restores one gateway.
    """
    if cfg is None:
        return NOT_STARTED
    if rules:
        return rules
    if port_problems:
        return "; ".join(port_problems)
    if daemon:
        return daemon
    if election:
        return election
    if split_brain and cfg.get("vrrp_split_brain_handover") == 1:
        return SPLIT_BRAIN
    return None
