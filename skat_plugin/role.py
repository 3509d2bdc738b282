"""The role switch: load snapshot -> render -> one transaction -> record state -> report.

Every public function here holds the state lock for its whole length, so concurrent calls
(keepalived's notify scripts run concurrently) are applied one at a time, each returning
only once its rule set is in the kernel.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import bridges, config, nftapply, render, report, state
from .config import Config
from .errors import RoleError, SkatError
from .render import BACKUP, MASTER


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _switch(cfg: Config, role: str, cause: str, old: dict[str, Any] | None) -> dict[str, Any]:
    """Apply `role` with `cfg` and record it. The caller holds the lock."""
    # Counters restart with every new table; keep their totals monotonic across switches.
    base = dict((old or {}).get("counters_base", {}))
    live = nftapply.read_counters() or {}
    for name, value in live.items():
        base[name] = base.get(name, 0) + value

    ruleset = render.render(cfg, role, bridges.own_macs(cfg))
    nftapply.apply(ruleset)

    previous = (old or {}).get("role")
    new = {
        "role": role,
        "since": (old or {}).get("since") if previous == role else _now(),
        "cause": cause,
        "config": cfg.snapshot(),
        "counters_base": base,
    }
    state.save(new)
    if previous != role:
        report.event(f"role {previous or 'none'} -> {role} ({cause})", role=role,
                     previous_role=previous, cause=cause)
    return new


def start_role(cfg: Config) -> str:
    """SKAT: the appliance always starts as master; vrrp_start_role=backup is our opt-in."""
    if cfg.vrrp_enabled and cfg["vrrp_start_role"] == BACKUP:
        return BACKUP
    return MASTER


def start(path: str) -> dict[str, Any]:
    cfg = config.load(path)
    with state.locked():
        bridges.ensure(cfg)
        return _switch(cfg, start_role(cfg), "start", state.load())


def reload(path: str) -> dict[str, Any]:
    """Re-read fastdpi.conf and re-apply the current role; bridges are left alone.

    Validation happens before anything else: on any error the loaded rules, the role and
    the saved snapshot stay exactly as they were.
    """
    cfg = config.load(path)
    with state.locked():
        old = _require_started()
        bridges.check_ports(cfg)
        role = old["role"] if cfg.vrrp_enabled else MASTER  # VRRP off: always master
        return _switch(cfg, role, "reload", old)


def set_role(role: str, cause: str = "cli") -> dict[str, Any]:
    """keepalived's order. Uses the configuration last loaded, never the file on disk."""
    if role not in render.ROLES:
        raise RoleError(f"unknown role {role!r}; expected master or backup")
    with state.locked():
        old = _require_started()
        cfg = Config.from_snapshot(old["config"])
        if not cfg.vrrp_enabled:
            raise RoleError(f"vrrp_enable=0 in {cfg.source}: the appliance stays master; "
                            f"set vrrp_enable=1 and run 'fdpi_cli reload' to let VRRP "
                            f"choose the role")
        return _switch(cfg, role, cause, old)


def stop() -> None:
    with state.locked():
        nftapply.apply(render.render_stop())
        old = state.load()
        state.clear()
    if old:
        report.event(f"stopped (was {old.get('role')}): rules removed", role="stopped",
                     previous_role=old.get("role"), cause="stop")


def show() -> dict[str, Any]:
    """Role, since, counters (monotonic totals) and what the kernel has loaded."""
    st = state.load()
    if st is None:
        return {"role": "stopped", "vrrp_enable": None, "since": None, "counters": {},
                "kernel_role": nftapply.loaded_role()}
    cfg = Config.from_snapshot(st["config"])
    live = nftapply.read_counters() or {}
    base = st.get("counters_base", {})
    counters = {name: base.get(name, 0) + live.get(name, 0) for name in nftapply.COUNTERS}
    return {
        "role": st["role"],
        "vrrp_enable": cfg["vrrp_enable"],
        "since": st["since"],
        "cause": st.get("cause"),
        "config": cfg.source,
        "counters": counters,
        "kernel_role": nftapply.loaded_role(),
    }


def _require_started() -> dict[str, Any]:
    old = state.load()
    if old is None:
        raise SkatError("the plugin is not started; run 'fdpi_cli start' first")
    return old
