"""Is the election process (keepalived's VRRP child, ucarp) still alive? Watched by pid file.

Works for keepalived and ucarp alike: `--watch-pidfile PATH` names the file its pid is in
(keepalived: the -r VRRP child pid file; ucarp: whatever pid file its unit writes).
Alive means /proc/PID/stat exists and is not a zombie: killed processes stay zombies for a
while, and `kill -0` would still succeed on them. The process start time is remembered with
the pid, so a reused pid does not pass for the process we saw.
"""

from __future__ import annotations

from pathlib import Path


def proc_identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time in clock ticks) of a live, non-zombie process; None otherwise."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return pid, int(fields[19])  # field 22 of stat(5), counted after "(comm)"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class PidWatch:
    """One watched pid file. check() says "lost" once when the process seen alive dies."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.seen: tuple[int, int] | None = None  # the process last seen alive
        self.ever_seen = False

    @property
    def alive(self) -> bool | None:
        """True/False once a process was seen; None before (not started yet)."""
        return (self.seen is not None) if self.ever_seen else None

    def check(self) -> bool:
        """Returns True exactly when the process we saw alive is gone (lost the election)."""
        if self.seen is not None and proc_identity(self.seen[0]) != self.seen:
            self.seen = None
            self._pick_up()  # a restarted one may already be there; it is a new process
            return True
        if self.seen is None:
            self._pick_up()
        return False

    def _pick_up(self) -> None:
        pid = read_pid(self.path)
        if pid is not None:
            ident = proc_identity(pid)
            if ident is not None:
                self.seen = ident
                self.ever_seen = True
