"""Are the bridge ports fit to carry traffic? Read from sysfs, the kernel's per-namespace view.

The track script (every second) and the daemon's port watch ask this often, so it must be
cheap: a few small reads under /sys/class/net, no netlink library to import (pyroute2 alone
takes ~130 ms to import) and no protocol written by hand.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PortError

if TYPE_CHECKING:
    from .config import Config

PORT_REPORT_EVERY = 5.0  # s: a boot that stalls on a port says so this often

SYS_NET = Path("/sys/class/net")
_IFF_UP = 0x1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # e.g. `carrier` of an interface that is administratively down
        return None


def link_up(name: str) -> bool | None:
    """True: up with carrier; False: down; None: no such interface.

    The carrier counts, not operstate: operstate follows the carrier up to a second later.
    """
    d = SYS_NET / name
    flags = _read(d / "flags")
    if flags is None:
        return None
    return bool(int(flags, 16) & _IFF_UP) and _read(d / "carrier") == "1"


def bridge_of(name: str) -> str | None:
    try:
        return os.path.basename(os.readlink(SYS_NET / name / "master"))
    except OSError:
        return None


def problems(pairs: list[tuple[str, str]]) -> list[str]:
    """What makes the ports unfit, one phrase each (empty: all well)."""
    found = []
    for in_port, out_port in pairs:
        bridges = set()
        for port in (in_port, out_port):
            up = link_up(port)
            if up is None:
                found.append(f"{port} is missing")
                continue
            if not up:
                found.append(f"{port} is down")
            bridges.add(bridge_of(port))
        if len(bridges) != 1 or None in bridges:
            found.append(f"{in_port} and {out_port} are not bridged together")
    return found


def check(pairs: list[tuple[str, str]], source: str) -> None:
    """What `start` would refuse about the ports, as a PortError (exit 11) naming them.

    Every port must exist (the kernel binds a chain even to a missing device), and a pair
    must not be split over two existing bridges, nor be enslaved to something that is not
    a bridge (a bond): the plugin adopts a bridge it finds, it does not move ports.
    """
    missing = [p for pair in pairs for p in pair if link_up(p) is None]
    if missing:
        raise PortError(f"port(s) {', '.join(missing)} do not exist; fix in_dev/out_dev in "
                        f"{source} or create the interfaces")
    for in_port, out_port in pairs:
        masters = {p: bridge_of(p) for p in (in_port, out_port)}
        for port, master in masters.items():
            if master is not None and not (SYS_NET / master / "bridge").is_dir():
                raise PortError(f"{port} is enslaved to {master}, which is not a bridge; "
                                f"release it or fix in_dev/out_dev in {source}")
        if None not in masters.values() and masters[in_port] != masters[out_port]:
            raise PortError(f"{out_port} is already a port of another bridge "
                            f"({masters[out_port]}, {in_port} is in {masters[in_port]}); "
                            f"remove it there or fix in_dev/out_dev in {source}")


def system_state() -> str | None:
    """systemd's word for the system: "starting" while it boots, then "running", ...;
    None without systemd (a test in a network namespace)."""
    import subprocess  # only start and check ask; the track script never does

    try:
        res = subprocess.run(["systemctl", "is-system-running"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None


def system_booting() -> bool:
    """systemd is still running the boot transaction ("initializing" or "starting")."""
    return system_state() in ("initializing", "starting")


def missing(cfg: Config) -> list[str]:
    return [p for p in cfg.ports if link_up(p) is None]


def wait_for_ports(cfg: Config, seconds: float, only_at_boot: bool = False) -> None:
    """Wait up to `seconds` for ports that do not exist yet; the caller then checks them."""
    from . import report

    start = told = time.monotonic()
    if only_at_boot and seconds > 0 and missing(cfg) and not system_booting():
        return  # not a boot: nothing is coming, fail at once
    while time.monotonic() - start < seconds:
        absent = missing(cfg)
        if not absent:
            return
        if time.monotonic() - told >= PORT_REPORT_EVERY:
            told = time.monotonic()
            report.warning(f"waiting for port(s) {', '.join(absent)} "
                           f"({told - start:.0f} of {seconds:g} s)", cause="start")
        time.sleep(0.1)
