"""Is the election process (keepalived's VRRP child, ucarp) still alive? Watched by pid file.

Works for keepalived and ucarp alike: the pid file names the process (keepalived: its VRRP
child's file; ucarp: whatever pid file its unit writes). Alive means /proc/PID/stat exists
and is not a zombie: killed processes stay zombies for a while, and `kill -0` would still
succeed on them.

A pid file outlives a crash, and its pid may be reused by an unrelated process. A process
is therefore taken for the election process only if it started before the pid file was
written (a daemon writes its pid file after it starts), and the start time is remembered
with the pid, so a reused pid never passes for the process seen before. The file is read
again at every check: a restarted keepalived writes a new pid, which is followed silently.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    with open("/proc/stat") as f:
        return float(next(line.split()[1] for line in f if line.startswith("btime")))


_BTIME = _boot_time()


class Unknown(Exception):
    """/proc could not be read for a reason that says nothing about the process."""


def proc_identity(pid: int) -> tuple[int, int] | None:
    """(pid, start time in clock ticks) of a live, non-zombie process; None when it is gone.

    Raises Unknown for other errors (e.g. out of file descriptors): not proof of death.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as e:
        raise Unknown(str(e)) from e
    if fields[0] in ("Z", "X"):
        return None
    return pid, int(fields[19])  # field 22 of stat(5), counted after "(comm)"


def started_before(ident: tuple[int, int], when: float) -> bool:
    """Did the process start before wall-clock time `when` (with 1 s of slack)?

    /proc gives the start in ticks since boot; boot time in wall-clock terms moves when
    the clock is stepped (NTP at boot), so either the boot time read at import or the one
    read now may be the one the pid file's mtime was written against: either will do.
    """
    since_boot = ident[1] / _TICKS
    return any(btime + since_boot <= when + 1.0 for btime in (_BTIME, _boot_time()))


def read_pid(path: str | Path) -> int | None:
    """The pid a pid file names (its first word), or None: missing, empty or not a number."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def live_pid(path: str | Path) -> int | None:
    """The pid a pid file names if that process is alive (a zombie does not count)."""
    pid = read_pid(path)
    if pid is None:
        return None
    try:
        return pid if proc_identity(pid) is not None else None
    except Unknown:
        return pid  # /proc unreadable for a moment: the pid file stands


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

    def named(self) -> tuple[int, int] | None:
        """The live process the pid file names, if it can be the file's writer."""
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return None
        pid = read_pid(self.path)
        if pid is None:
            return None
        ident = proc_identity(pid)
        # Started after the file was written: a stranger that reused a stale pid.
        if ident is None or not started_before(ident, mtime):
            return None
        return ident

    def check(self) -> bool:
        """True exactly when the process we saw alive is gone and nothing replaced it."""
        try:
            current = self.named()
            if self.seen is not None and current not in (None, self.seen):
                self.seen = current  # keepalived restarted: its new process speaks now
                return False
            if self.seen is not None and proc_identity(self.seen[0]) != self.seen:
                self.seen = None
                return True
        except Unknown:
            return False  # cannot look now; keep what we know and look again
        if self.seen is None and current is not None:
            self.seen = current
            self.ever_seen = True
        return False
