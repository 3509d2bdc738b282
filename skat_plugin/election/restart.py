"""Is the daemon's absence a restart? The track file's verdict "the supervising daemon is not
running" hands the gateway over (keepalived: FAULT). A restart of the daemon (an operator's
`systemctl restart`, a package upgrade, systemd bringing back a daemon that crashed) leaves
the data plane in the kernel untouched; turning those seconds into two failovers would cost
the subscribers what the restart itself does not. So:

  - systemd will start the daemon again by itself: a restart job is queued for its unit, or
    it ended by a failure that Restart=on-failure answers. The verdict is then written
    GRACE seconds later, by a transient timer outside the daemon's unit, unless a daemon
    holds the track file's lock by then (`fdpi_cli vrrp track --require-daemon --write`);
  - anything else (a stop, a clean exit, no systemd): written at once, as before.

keepalived is meanwhile still watched for: a new daemon reads election.json and steps down
if keepalived died while no daemon ran (daemon/election.py).
"""

from __future__ import annotations

import os
import subprocess

UNIT = "skat-plugin-daemon.service"
GRACE = 10.0  # s a restart may take (RestartSec=2s, then Python starting on a busy box)
STARTS = {"start", "restart", "try-restart", "reload-or-start", "verify-active"}


def under_systemd() -> bool:
    """Run by systemd as a service (it sets INVOCATION_ID for every service it starts)."""
    return bool(os.environ.get("INVOCATION_ID"))


def expected() -> bool:
    """Will systemd start the daemon again by itself?"""
    if not under_systemd():
        return False
    try:
        jobs = subprocess.run(["systemctl", "list-jobs", "--plain", "--no-legend", UNIT],
                              capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return False  # cannot tell: the safe answer is "gone"
    kinds = {f[2] for line in jobs.splitlines() if len(f := line.split()) >= 3 and f[1] == UNIT}
    if "stop" in kinds:
        return False
    if kinds & STARTS:
        return True
    # ExecStopPost learns how the daemon ended; Restart=on-failure starts it again after
    # any end but a clean one (a start limit reached is what the grace timer is for).
    return os.environ.get("SERVICE_RESULT", "success") != "success"


def write_later(grace: float = GRACE) -> bool:
    """Have the verdict written in `grace` seconds unless a daemon keeps the file by then,
    by a transient timer of systemd's (it outlives this unit's processes). False when it
    could not be arranged: the caller writes now."""
    env = [f"--setenv=SKAT_RUN_DIR={os.environ['SKAT_RUN_DIR']}"] \
        if os.environ.get("SKAT_RUN_DIR") else []
    try:
        done = subprocess.run(
            ["systemd-run", "--quiet", "--collect", f"--on-active={grace:g}s",
             "--timer-property=AccuracySec=100ms", *env,
             "--description=skat-plugin: the track file's verdict after a daemon restart",
             "/usr/bin/fdpi_cli", "vrrp", "track", "--require-daemon", "--write"],
            capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0
