"""`fdpi_cli check`: everything `start`, `reload` and `vrrp set` would refuse, changing nothing.

    fdpi_cli check [--config PATH] [--wait-ports-at-boot SECONDS]

In the order start meets them: fastdpi.conf (every key, as start and reload validate it;
unknown vrrp_* keys included), the ports (they exist, a pair is not split over two bridges
or enslaved to a bond), then both roles' rule sets, sent to the kernel as a dry run (the
transaction is aborted at its end, as `nft --check` does). skat-plugin.service runs it
before `start` (ExecStartPre), so a wrong port fails there, at once, with its own status.

At boot a NIC may appear after udev's trigger: --wait-ports-at-boot waits for missing ports
while systemd is still booting the system, and only then; an operator's `systemctl
restart` with a wrong port fails at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import ports
from .config import Config

KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"  # what Debian's keepalived.service reads


def _port_macs(cfg: Config) -> list[str]:
    macs = []
    for port in cfg.ports:
        try:
            macs.append((ports.SYS_NET / port / "address").read_text().strip())
        except OSError:
            continue
    return macs


def run(path: str, wait_at_boot: float = 0) -> dict[str, Any]:
    """Raises the error start would meet first (ConfigError, PortError, ApplyError).

    Returns what was checked, notes (not errors for start, but the operator should know:
    a reload that would refuse changed ports), warnings (said at err: a group about to have
    two gateways or none, a subscriber-table sync without its key) and the sync key's
    fingerprint, to compare across the group.
    """
    from . import config, nftapply, render, role, state

    cfg = config.load(path)
    ports.wait_for_ports(cfg, wait_at_boot, only_at_boot=True)
    ports.check(cfg.pairs, cfg.source)
    macs = _port_macs(cfg)
    for name in render.ROLES:  # `vrrp set` may load either one
        nftapply.dry_run(render.render(cfg, name, macs))
    notes = []
    warnings = election_warnings(cfg)
    st = state.load()
    if st is not None:
        running = state.config_of(st)
        if (running.in_ports, running.ports) != (cfg.in_ports, cfg.ports):
            notes.append("in_dev/out_dev differ from the running bridges: 'fdpi_cli reload' "
                         "refuses that; 'systemctl restart skat-plugin' applies it (and "
                         "restarts keepalived: a failover on a running group)")
        if st["role"] == render.BACKUP and not cfg.vrrp_enabled:
            warnings.append("vrrp_enable=0 makes this running backup a master at the next "
                            "reload: two gateways in the group (every ARP request answered "
                            "twice) until the other appliance steps down; hand the gateway "
                            "over first or keep vrrp_enable=1")
    from .gateway import sync

    key, _why = sync.key_of(cfg)
    warnings += [w for w in (sync.warning_for(cfg),) if w]
    return {"config": str(Path(cfg.source)), "ports": cfg.ports, "pairs": len(cfg.pairs),
            "vrrp_enable": cfg["vrrp_enable"], "start_role": role.start_role(cfg),
            "running_role": st["role"] if st else None, "notes": notes, "warnings": warnings,
            "sync_key": sync.syncwire.fingerprint(key) if key else None}


def election_warnings(cfg: Config) -> list[str]:
    """VRRP on and no election configured or running: SKAT's start rule makes this appliance
    a master, and beside a running master a second one (issue 16). The fix, in one line.
    At boot keepalived starts after the plugin: configured and enabled is enough."""
    from . import role
    from .election import pidfile

    pidfiles = cfg.get("vrrp_election_pidfile") or []
    if not cfg.vrrp_enabled or not pidfiles:
        return []  # VRRP off, or the operator runs the election without watching it
    if any(pidfile.live_pid(path) is not None for path in pidfiles):
        return []  # keepalived (or ucarp) runs
    conf = Path(keepalived_conf_path())
    configured = conf.is_file() and conf.stat().st_size > 0
    if configured and conf == Path(KEEPALIVED_CONF) and _keepalived_enabled():
        return []  # not running yet: skat-plugin.service starts it after the plugin
    if role.start_role(cfg) == "master":
        harm = ("this appliance is master by SKAT's start rule, a second gateway beside a "
                "running master")
    else:
        harm = "this appliance stays backup (vrrp_start_role) and nobody can elect it"
    if configured:
        return [f"vrrp_enable=1 but keepalived is not running (no live process in "
                f"{', '.join(pidfiles)}) nor enabled: {harm}; start it: 'systemctl enable "
                f"--now keepalived'"]
    return [f"vrrp_enable=1 but no election is configured ({conf} is missing and no "
            f"keepalived runs): {harm}; write it with 'fdpi_cli vrrp keepalived-config "
            f"--output {conf}' (needs vrrp_interface and vrrp_mgmt_vip), then 'systemctl "
            f"restart keepalived'"]


def _keepalived_enabled() -> bool:
    """systemd will start keepalived with KEEPALIVED_CONF (with the plugin, or at boot);
    False without systemd."""
    import subprocess

    try:
        return subprocess.run(["systemctl", "--quiet", "is-enabled", "keepalived.service"],
                              capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def keepalived_conf_path() -> str:
    """Where Debian's keepalived.service reads its configuration ($SKAT_KEEPALIVED_CONF
    for tests)."""
    return os.environ.get("SKAT_KEEPALIVED_CONF") or KEEPALIVED_CONF
