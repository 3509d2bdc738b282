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

import subprocess
import time
from pathlib import Path
from typing import Any

from . import ports, report
from .config import Config

PORT_REPORT_EVERY = 5.0  # s: a boot that stalls on a port says so this often


def system_state() -> str | None:
    """systemd's word for the system: "starting" while it boots, then "running", ...;
    None without systemd (a test in a network namespace)."""
    try:
        res = subprocess.run(["systemctl", "is-system-running"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None


def system_booting() -> bool:
    """systemd is still running the boot transaction ("initializing" or "starting")."""
    return system_state() in ("initializing", "starting")


def wait_for_ports(cfg: Config, seconds: float, only_at_boot: bool = False) -> None:
    """Wait up to `seconds` for ports that do not exist yet; the caller then checks them."""
    start = told = time.monotonic()
    if only_at_boot and seconds > 0 and _missing(cfg) and not system_booting():
        return  # not a boot: nothing is coming, fail at once
    while time.monotonic() - start < seconds:
        missing = _missing(cfg)
        if not missing:
            return
        if time.monotonic() - told >= PORT_REPORT_EVERY:
            told = time.monotonic()
            report.warning(f"waiting for port(s) {', '.join(missing)} "
                           f"({told - start:.0f} of {seconds:g} s)", cause="start")
        time.sleep(0.1)


def _missing(cfg: Config) -> list[str]:
    return [p for p in cfg.ports if ports.link_up(p) is None]


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

    Returns what was checked, and notes: things that are not errors for start but that the
    operator should know (a reload that would refuse changed ports); warnings: what works
    less than configured (a subscriber-table sync without its key); the sync key's
    fingerprint, to compare across the group.
    """
    from . import config, nftapply, render, role, state

    cfg = config.load(path)
    wait_for_ports(cfg, wait_at_boot, only_at_boot=True)
    ports.check(cfg.pairs, cfg.source)
    macs = _port_macs(cfg)
    for name in render.ROLES:  # `vrrp set` may load either one
        nftapply.dry_run(render.render(cfg, name, macs))
    notes = []
    st = state.load()
    if st is not None:
        running = Config.from_snapshot(st["config"])
        if (running.in_ports, running.ports) != (cfg.in_ports, cfg.ports):
            notes.append("in_dev/out_dev differ from the running bridges: 'fdpi_cli reload' "
                         "refuses that; 'systemctl restart skat-plugin' applies it (and "
                         "restarts keepalived: a failover on a running group)")
    from .gateway import sync

    key, _why = sync.key_of(cfg)
    warnings = [w for w in (sync.warning_for(cfg),) if w]
    return {"config": str(Path(cfg.source)), "ports": cfg.ports, "pairs": len(cfg.pairs),
            "vrrp_enable": cfg["vrrp_enable"], "start_role": role.start_role(cfg),
            "running_role": st["role"] if st else None, "notes": notes, "warnings": warnings,
            "sync_key": sync.syncwire.fingerprint(key) if key else None}
