"""`fdpi_cli vrrp track`: is this appliance fit to be master? Exit 0 while it is.

    fdpi_cli vrrp track [--require-daemon]

Unfit (exit 1, one line on stderr saying why), checked in this order:
  1. the plugin is not started (no state: `fdpi_cli start` has not run, or `stop` did);
  2. the plugin's rules are not in the kernel;
  3. a port is missing or down, or a port pair is not bridged together;
  4. with --require-daemon: the supervising daemon (`fdpi_cli daemon`) is not running. It
     reads keepalived's notify FIFO and steps the appliance down if keepalived dies, so a
     master without it could outlive the election;
  5. with vrrp_split_brain_handover=1: the daemon reports a split brain (another master
     sends from bras_arp_mac), so that keepalived hands over.

keepalived does not run this in the generated configuration: the daemon reaches the same
verdict (verdict() below) from the events it already follows and writes it to the track
file keepalived watches (trackfile.py). This command is for an operator, for ucarp
setups, and for keepalived without the daemon (`keepalived-config --no-require-daemon`,
which runs it every second). It stays light for that: the configuration comes from the
snapshot the last start/reload saved (no fastdpi.conf parsing, no jsonschema), the ports
are read from sysfs (skat_plugin/ports.py; no pyroute2, which takes ~130 ms to import), and
while the daemon runs the rules are its to keep (it loads them again within milliseconds
when someone removes them), so libnftables is not even loaded.
"""

from __future__ import annotations

import argparse
import sys

from .. import ports, state
from .verdict import DAEMON_DOWN, NOT_STARTED, RULES_NOT_LOADED, verdict

# keepalived (notify FIFO / notify script) state -> appliance role. FAULT and STOP must not
# leave a second master behind: they mean backup.
KEEPALIVED_ROLE = {"MASTER": "master", "BACKUP": "backup", "FAULT": "backup", "STOP": "backup"}
# s a difference between keepalived's last word and the kernel's role may last: a switch
# takes milliseconds, so anything longer is not a change in progress (issue 16).
MISMATCH_AFTER = 2.0


def election_mismatch(kernel_role: str | None, keepalived_state: str | None,
                      began: float, now: float, after: float = MISMATCH_AFTER) -> str | None:
    """The alarm when the kernel's role is not keepalived's latest state, lasting longer
    than `after` seconds; None when they agree, keepalived has not spoken, or the
    difference is younger (a switch in progress).

    kernel_role: the role whose rules the kernel holds (None: no rules); keepalived_state:
    its latest FIFO word; began: when the difference could have begun at the earliest
    (the later of that word and the role's last change), in the same clock as `now`.
    The daemon calls this whenever either side changes and once `after` s later; `vrrp
    show` and the metrics call it with what state.json recorded.
    """
    wanted = KEEPALIVED_ROLE.get(keepalived_state or "")
    if wanted is None or kernel_role == wanted or now - began < after:
        return None
    if kernel_role == "master":
        harm = "a second gateway beside the peer keepalived elected"
    else:
        harm = "keepalived elected this appliance, so the group has no gateway"
    held = kernel_role or "no"
    return (f"keepalived says {keepalived_state} but the kernel holds {held} rules for "
            f"{now - began:.0f} s: {harm}; run 'fdpi_cli vrrp set {wanted}' (or restart "
            f"keepalived) to follow the election")


def unfit_reason(require_daemon: bool = False, daemon: bool | None = None) -> str | None:
    """Why this appliance must not be master now, or None when it is fit.

    daemon: whether the supervising daemon runs, when the caller knows (None: daemon.pid).
    """
    st = state.load()
    if st is None:
        return NOT_STARTED
    cfg = state.config_of(st)
    if daemon is None:
        daemon = state.daemon_alive()
    rules = None
    if not daemon:
        # The daemon puts back rules others remove (docs/daemon.md); without it, look.
        from .. import nftapply  # libnftables: the costliest part of this check

        if nftapply.loaded_role() is None:
            rules = RULES_NOT_LOADED
    split_brain = cfg.get("vrrp_split_brain_handover") == 1 and \
        bool(state.daemon_status().get("split_brain"))
    return verdict(cfg, rules, ports.problems(cfg.pairs),
                   DAEMON_DOWN if require_daemon and not daemon else None, split_brain)


def main(argv: list[str], config_path: str | None = None) -> int:
    """config_path is not read: the track script judges what is running, not the file."""
    p = argparse.ArgumentParser(prog="fdpi_cli vrrp track",
                                description="keepalived track script: exit 0 while this "
                                            "appliance is fit to be master")
    p.add_argument("--require-daemon", action="store_true",
                   help="unfit while the supervising daemon (fdpi_cli daemon) is not running")
    p.add_argument("--write", action="store_true",
                   help="also write the verdict to keepalived's track file "
                        "($SKAT_RUN_DIR/keepalived.track), unless a live daemon keeps it "
                        "(skat-plugin-daemon.service runs this when the daemon ends)")
    args = p.parse_args(argv)
    kept = True
    if args.write:
        from . import restart, trackfile

        if restart.expected() and restart.write_later():
            print(f"fdpi_cli vrrp track: a restart of the daemon is under way: the verdict "
                  f"is written in {restart.GRACE:g} s unless a daemon keeps "
                  f"{trackfile.path()} by then", file=sys.stderr)
            return 0

        # Judged under the daemon's lock: none runs, and none starts before this is written.
        kept, reason = trackfile.write_unless_kept(
            lambda: _checked(args.require_daemon, daemon=False))
        if kept:
            print(f"fdpi_cli vrrp track: not written: the supervising daemon keeps "
                  f"{trackfile.path()}", file=sys.stderr)
    if kept:
        reason = _checked(args.require_daemon, daemon=None)
    if reason is None:
        return 0
    print(f"fdpi_cli vrrp track: unfit: {reason}", file=sys.stderr)
    return 1


def _checked(require_daemon: bool, daemon: bool | None) -> str | None:
    try:
        return unfit_reason(require_daemon, daemon)
    except Exception as e:  # whatever breaks here, keepalived must see "unfit", not a trace
        return f"health check failed: {e}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
