"""The role switch: load snapshot -> render -> one transaction -> record state -> report.

Every public function here holds the state lock for its whole length, so concurrent calls
(keepalived's notify scripts run concurrently) are applied one at a time, each returning
only once its rule set is in the kernel.

Ordering: keepalived runs notify scripts concurrently and never waits for them, so an older
script can arrive after a newer one. Its notify FIFO delivers events in order; the daemon
reads it and records keepalived's latest state here (set_role(keepalived_state=...)). While
that daemon lives, a `vrrp set` that contradicts keepalived's latest state is stale and is
ignored (--force overrides, for an operator who knows better).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import nftapply, ports, render, report, state
from .config import Config
from .election import health
from .errors import ApplyError, ConfigError, NotStartedError, RoleError
from .render import BACKUP, MASTER

# keepalived (notify FIFO / notify script) state -> appliance role (health.py, as light as
# the track check needs it).
KEEPALIVED_ROLE = health.KEEPALIVED_ROLE


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _switch(cfg: Config, role: str, cause: str, old: dict[str, Any] | None,
            own_macs: list[str] | None = None, full: bool = True,
            **extra: Any) -> dict[str, Any]:
    """Apply `role` with `cfg` and record it. The caller holds the lock.

    full=False: only flip which role's tables are awake (both were loaded by the last full
    load of this same configuration): a transaction of a few lines, well under a
    millisecond in the kernel. If the tables are not there any more, it loads everything.
    """
    old = old or {}
    base = dict(old.get("counters_base", {}))
    macs = own_macs if own_macs is not None else old.get("own_macs", [])
    if not full:
        try:
            nftapply.apply(render.render_switch(cfg, role))
        except ApplyError as e:
            report.warning(f"the loaded tables cannot be switched ({e}); loading the whole "
                           f"{role} rule set", cause=cause)
            full = True
    if full:
        # Counters restart with the new tables: keep their totals monotonic.
        for name, value in (nftapply.read_counters() or {}).items():
            base[name] = base.get(name, 0) + value
        nftapply.apply(render.render(cfg, role, macs))

    previous = old.get("role")
    new = {**old, **extra,
           "role": role,
           "since": old.get("since") if previous == role else _now(),
           "cause": cause,
           "config": cfg.snapshot(),
           "own_macs": macs,
           "counters_base": base}
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


def start(path: str, wait_ports: float = 0) -> dict[str, Any]:
    """Bridges up and the start role's rules in: master (SKAT), or vrrp_start_role.

    At boot there is no state (/run is new), so this is the start role. On an appliance
    that already runs, the current role stays. wait_ports: seconds to wait for ports that
    do not exist yet (at boot, NIC drivers and renaming may finish after udev's trigger).
    """
    from . import bridges, config  # pyroute2 and jsonschema: only start/reload

    cfg = config.load(path)
    ports.wait_for_ports(cfg, wait_ports)
    with state.locked():
        bridges.ensure(cfg)
        old = state.load()
        if old is not None and nftapply.loaded_role() == old["role"]:
            # Already running (a second `start` by hand): keepalived will not repeat its
            # last word, so the role it set must stay. (`systemctl restart` runs stop
            # first, which forgets the state: that is a start from nothing.)
            keep = old["role"] if cfg.vrrp_enabled else MASTER
            return _with_lists(cfg, _switch, cfg, keep, "start (already running)", old,
                           own_macs=bridges.own_macs(cfg),
                           awaiting_election=cfg.vrrp_enabled and old.get("awaiting_election",
                                                                         False))
        role = start_role(cfg)
        # Master by SKAT's rule alone, VRRP on: nobody elected it yet (the daemon does not
        # announce until an order comes; see docs/daemon.md).
        return _with_lists(cfg, _switch, cfg, role, "start", {}, own_macs=bridges.own_macs(cfg),
                       awaiting_election=role == MASTER and cfg.vrrp_enabled)


def reload(path: str) -> dict[str, Any]:
    """Re-read fastdpi.conf and re-apply the current role; bridges are left alone.

    Validation happens before anything else: on any error the loaded rules, the role and
    the saved snapshot stay exactly as they were.
    """
    from . import bridges, config

    cfg = config.load(path)
    with state.locked():
        old = _require_started()
        loaded = state.config_of(old)
        # A port that does not exist is the error to name first (as `check` does), not a
        # restart that would take the box down and fail on the same port (issue 16).
        missing = [p for p in cfg.ports if p not in loaded.ports and ports.link_up(p) is None]
        if missing:
            ports.check(cfg.pairs, cfg.source)
        if (cfg.in_ports, cfg.ports) != (loaded.in_ports, loaded.ports):
            raise ConfigError("in_dev/out_dev differ from the running bridges "
                              f"({':'.join(loaded['in_dev'])} / {':'.join(loaded['out_dev'])});"
                              " bridges are built at start: restart the plugin to change "
                              "them (systemctl restart skat-plugin, which restarts keepalived "
                              "too: a failover on a running group)", cfg.source)
        ports.check(cfg.pairs, cfg.source)
        role = old["role"] if cfg.vrrp_enabled else MASTER  # VRRP off: always master
        said = KEEPALIVED_ROLE.get((old.get("keepalived") or {}).get("state", ""))
        if cfg.vrrp_enabled and not loaded.vrrp_enabled and said is not None:
            # VRRP on again: keepalived's last word (recorded while it was off too) holds;
            # it will not repeat it, and SKAT's start rule would make a second master.
            role = said
        # VRRP just turned on and keepalived never spoke: a master by SKAT's rule again,
        # until it does.
        awaiting = cfg.vrrp_enabled and role == MASTER and said is None and (
            old.get("awaiting_election", False) or not loaded.vrrp_enabled)
        return _with_lists(cfg, _switch, cfg, role, "reload", old, own_macs=bridges.own_macs(cfg),
                       awaiting_election=awaiting)


def set_role(role: str, cause: str = "cli", *, keepalived_state: str | None = None,
             force: bool = False) -> dict[str, Any]:
    """keepalived's order. Uses the configuration last loaded, never the file on disk.

    keepalived_state: given only by the daemon reading keepalived's notify FIFO (in order).
    Returns the new state; it has "ignored" set when a stale order was dropped.
    """
    if role not in render.ROLES:
        raise RoleError(f"unknown role {role!r}; expected master or backup")
    with state.locked():
        old = _require_started()
        cfg = state.config_of(old)
        if not cfg.vrrp_enabled and keepalived_state is not None:
            # Kept for a reload that turns VRRP on again: it follows keepalived's last word.
            st = {**old, "keepalived": {"state": keepalived_state, "at": _now()}}
            state.save(st)
            why = (f"vrrp_enable=0 in {cfg.source}: keepalived's {keepalived_state} recorded, "
                   f"the appliance stays master")
            report.event(why, role=old["role"], cause=cause, keepalived_state=keepalived_state)
            return {**st, "ignored": why}
        if not cfg.vrrp_enabled:
            raise RoleError(f"vrrp_enable=0 in {cfg.source}: the appliance stays master; "
                            f"set vrrp_enable=1 and run 'fdpi_cli reload' to let VRRP "
                            f"choose the role")
        extra: dict[str, Any] = {"awaiting_election": False}  # an order: the wait is over
        if keepalived_state is not None:
            extra["keepalived"] = {"state": keepalived_state, "at": _now()}
        else:
            latest = old.get("keepalived")
            if latest and state.daemon_alive() and KEEPALIVED_ROLE.get(latest["state"]) != role:
                if force:
                    # Against a live election an order can only make two gateways or none
                    # (issue 16): moving the gateway is keepalived's job.
                    harm = "two gateways" if role == MASTER else "no gateway"
                    raise RoleError(
                        f"vrrp set {role} --force refused: keepalived's latest state is "
                        f"{latest['state']} (notify FIFO, {latest['at']}), and the group "
                        f"would have {harm}; to move the gateway to the peer run 'fdpi_cli "
                        f"vrrp handover' (keepalived hands over), to take it back 'fdpi_cli "
                        f"vrrp handover --cancel'")
                why = (f"keepalived's latest state is {latest['state']} (notify FIFO, "
                       f"{latest['at']}): a stale order")
                report.warning(f"vrrp set {role} ({cause}) ignored: {why}", role=old["role"],
                               cause=cause, keepalived_state=latest["state"])
                return {**old, "ignored": why}
        return _switch(cfg, role, cause, old, full=False, **extra)


def keep(expected: tuple[Any, str] | None) -> tuple[tuple[Any, str] | None, str | None]:
    """Are the plugin's tables what the last change loaded? If not, load them again.

    expected: (state signature, rule-set fingerprint) taken after the last change, or None.
    The same state and another fingerprint mean another writer (a `flush ruleset`, an
    operator's nft command) changed or removed the plugin's tables: the current role and
    configuration are loaded again. A changed state file means the plugin itself loaded new
    rules (under this lock): they become the expectation, once the kernel shows the state's
    role in every table of its configuration (a writer may have struck in between too).
    Returns the new expectation and, after a repair, what was wrong (else None).
    """
    with state.locked():
        st = state.load()
        if st is None:
            return None, None
        sig = state.signature()
        now = nftapply.snapshot()
        current, loaded = now.digest, now.role
        cfg = state.config_of(st)
        missing = render.tables_of(cfg) - now.present
        # Whatever the fingerprints say, the state's role in every table of its
        # configuration is the least (a writer may strike between a load and its check).
        healthy = loaded == st["role"] and not missing
        if healthy and (expected is None or expected[0] != sig or expected[1] == current):
            return (sig, current), None
        what = ("the plugin's tables were removed" if loaded is None else
                f"table(s) {', '.join(f'{f} {t}' for f, t in sorted(missing))} removed"
                if missing else
                f"the kernel holds the {loaded} rules, not the {st['role']}'s"
                if loaded != st["role"] else "the plugin's rules were changed")
        _with_lists(cfg, _switch, cfg, st["role"], "repair", st, full=True)
        return (state.signature(), nftapply.snapshot().digest), what


def end_wait(why: str) -> dict[str, Any]:
    """No election came in time: act as the master SKAT's start rule made (the daemon's
    call). Only the record changes; the rules are already the master's."""
    with state.locked():
        st = _require_started()
        if not st.get("awaiting_election"):
            return st
        st = {**st, "awaiting_election": False, "cause": "no-election"}
        state.save(st)
    report.warning(f"no election yet ({why}): acting as master, SKAT's start role; "
                   f"check keepalived", role=MASTER, cause="no-election")
    return st


def stop() -> None:
    with state.locked():
        nftapply.apply(render.render_stop())
        old = state.load()
        state.clear()
    if old:
        report.event(f"stopped (was {old.get('role')}): rules removed", role="stopped",
                     previous_role=old.get("role"), cause="stop")


def show(subscriber_counts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Role, since, counters (monotonic totals) and what the kernel has loaded.

    Read under the shared lock: a switch applies its rules before it records its role, and
    a look in between would report a mismatch that is only a change in progress.
    subscriber_counts: the gateway's table sizes when the caller has them (the daemon
    counts at most every half minute: counting lists the whole table).
    """
    with state.reading():
        return _show(subscriber_counts)


def _show(subscriber_counts: dict[str, Any] | None) -> dict[str, Any]:
    st = state.load()
    if st is None:
        kernel = nftapply.loaded_role()
        return {"role": "stopped", "vrrp_enable": None, "since": None, "counters": {},
                "kernel_role": kernel, "consistent": kernel is None}
    cfg = state.config_of(st)
    live = nftapply.read_counters() or {}
    base = st.get("counters_base", {})
    kernel = nftapply.loaded_role()
    info = {
        "role": st["role"],
        "vrrp_enable": cfg["vrrp_enable"],
        "since": st["since"],
        "cause": st.get("cause"),
        "config": cfg.source,
        "counters": {name: base.get(name, 0) + live.get(name, 0) for name in nftapply.COUNTERS},
        "kernel_role": kernel,
        "consistent": kernel == st["role"],
        "keepalived": st.get("keepalived"),
        "awaiting_election": bool(st.get("awaiting_election", False)),
        "split_brain": bool(state.daemon_status().get("split_brain", False)),
        "daemon": state.daemon_pid(),
        "gateway": _gateway_show(cfg, subscriber_counts),
        "redirect": _redirect_show(cfg),
    }
    info.update(_health_show(cfg, st, kernel, info["redirect"], info["split_brain"]))
    return info


def _epoch(iso: str | None) -> float:
    try:
        return dt.datetime.fromisoformat(iso).timestamp() if iso else 0.0
    except ValueError:
        return 0.0


def _health_show(cfg: Config, st: dict[str, Any], kernel: str | None,
                 redirect: dict[str, Any] | None, split_brain: bool) -> dict[str, Any]:
    """What an operator must know at a glance (issue 16): the ports, the fitness verdict
    keepalived reads, keepalived's word against the kernel's role, the lists; `attention`
    lists what needs action (`vrrp show` exits 13 when it is not empty)."""
    import time

    from .election import handover

    port_problems = ports.problems(cfg.pairs)
    fitness = _fitness()
    said = (st.get("keepalived") or {})
    began = max(_epoch(said.get("at")), _epoch(st.get("since")))
    mismatch = health.election_mismatch(kernel, said.get("state"), began, time.time()) \
        if cfg.vrrp_enabled else None
    list_error = ((redirect or {}).get("inspector") or {}).get("list_error")
    attention = []
    if kernel != st["role"]:
        attention.append(f"the kernel holds {kernel or 'no'} rules, the recorded role is "
                         f"{st['role']}")
    if mismatch:
        attention.append(mismatch)
    attention += port_problems
    if cfg.vrrp_enabled and fitness["reason"]:
        attention.append(f"unfit to be master: {fitness['reason']}")
    if list_error:
        attention.append(f"list error: {list_error}")
    if split_brain:
        attention.append("split brain: another master sends from bras_arp_mac")
    return {"ports": {"names": cfg.ports, "problems": port_problems}, "fitness": fitness,
            "election_mismatch": mismatch, "handover": handover.value() != 0,
            "list_error": list_error, "attention": list(dict.fromkeys(attention))}


def _fitness() -> dict[str, Any]:
    """The verdict keepalived reads: the daemon's track file while it runs, else judged
    here as `fdpi_cli vrrp track` would."""
    if state.daemon_alive():
        try:
            text = (state.run_dir() / "keepalived.track").read_text()  # trackfile.NAME
        except OSError:
            text = ""
        lines = text.splitlines()
        if lines and lines[0].strip() == "0":
            return {"fit": True, "reason": None, "by": "daemon"}
        if lines:
            reason = lines[1].partition("unfit to be master: ")[2] if len(lines) > 1 else ""
            return {"fit": False, "reason": reason or "unfit", "by": "daemon"}
    reason = health.unfit_reason(require_daemon=False)
    return {"fit": reason is None, "reason": reason, "by": "fdpi_cli vrrp track"}


def _gateway_show(cfg: Config, counts: dict[str, Any] | None) -> dict[str, Any] | None:
    """SKAT's L2 termination: its counters (kept across switches) and the learned table."""
    if not cfg.terminates:
        return None
    if counts is None:
        from .gateway import subscribers

        counts = subscribers.count()
    return {"counters": nftapply.read_gateway_counters() or {}, "subscribers": counts}


def left_without_plugin() -> str | None:
    """After a failed start: what the appliance is left with, in one sentence; None while
    the plugin runs (its state and its rules are there)."""
    if state.load() is not None or nftapply.loaded_role() is not None:
        return None
    from .config import default
    from .election import pidfile

    if any(pidfile.live_pid(p) is not None for p in default("vrrp_election_pidfile")):
        election_text = ("keepalived still runs and may elect this appliance master, which "
                         "would serve nothing: stop it, or fix this now")
    else:
        election_text = ("keepalived is not running (it requires skat-plugin), so this "
                         "appliance takes no part in the election")
    return (f"skat-plugin is down on this appliance: no rules are loaded (the bridges "
            f"forward as plain bridges, nobody answers for the virtual gateway) and "
            f"{election_text}; fix the error above, test with 'fdpi_cli check', then "
            f"'systemctl start skat-plugin' (keepalived starts with it)")


def _with_lists(cfg: Config, switch: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The role's rule set, then the black lists' addresses into its kept sets (issue 8)."""
    st = switch(*args, **kwargs)
    from .redirect import apply as redirect_apply

    redirect_apply.load_lists(cfg)
    return st


def _redirect_show(cfg: Config) -> dict[str, Any] | None:
    from .redirect import apply as redirect_apply

    return redirect_apply.show(cfg)


def _require_started() -> dict[str, Any]:
    old = state.load()
    if old is None:
        raise NotStartedError("the plugin is not started; run 'fdpi_cli start' first")
    return old
