"""keepalived's notify FIFO: its events in order, and whether anybody still writes it.

keepalived opens the FIFO O_RDWR once and writes one line per event:

    INSTANCE "VI_1" MASTER 100
    GROUP "G1" BACKUP              (sync groups: their instances report too; ignored)

Liveness: when the last process holding the FIFO for writing goes away (keepalived killed,
even with -9: a zombie has already closed its files), poll() reports POLLHUP and read()
returns EOF. A clean stop writes STOP/BACKUP first. POLLHUP alone is not proof: keepalived
closes and reopens the FIFO on every reload (SIGHUP). The daemon therefore asks the watched
pid file first (a reload keeps keepalived's pids); only without one does `holders()` look for
another process that has the FIFO open. Reading other processes' fds needs ptrace rights,
which the hardened unit does not have: then holders() cannot tell (None), never "nobody".
"""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Event:
    kind: str       # INSTANCE (others are ignored by the daemon)
    name: str       # the vrrp_instance's name
    state: str      # MASTER, BACKUP, FAULT, STOP, ...
    priority: int | None


def parse(line: str) -> Event | None:
    """One FIFO line -> Event; None for lines that are not an instance's state."""
    try:
        parts = shlex.split(line)
    except ValueError:
        return None
    if len(parts) < 3 or parts[0] != "INSTANCE":
        return None
    prio = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None
    return Event(parts[0], parts[1], parts[2].upper(), prio)


class Fifo:
    """The reading end, non-blocking, for the daemon's poll loop."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ensure()
        self.fd = -1
        self._buf = b""
        self.open()

    def _ensure(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            os.mkfifo(self.path, 0o600)
            return
        if not stat.S_ISFIFO(st.st_mode):
            raise OSError(f"{self.path} exists and is not a FIFO; remove it or set "
                          f"vrrp_notify_fifo to another path")

    def open(self) -> None:
        """(Re)open. Opened with no writer present, the kernel reports no POLLHUP until a
        writer has come and gone, so a reopened FIFO waits quietly for the next keepalived."""
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        st = os.fstat(self.fd)
        self.ident = (st.st_dev, st.st_ino)

    def fileno(self) -> int:
        return self.fd

    def read_events(self) -> tuple[list[Event], bool]:
        """Every complete line available now, in order; and whether the writers are gone."""
        eof = False
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        events = [e for e in (parse(raw.decode(errors="replace")) for raw in lines) if e]
        return events, eof

    def holders(self) -> list[int] | None:
        """Pids of other processes that have this FIFO open (keepalived holds it O_RDWR).

        None: some process's fds could not be read (no ptrace rights), so nobody can say.
        """
        me = os.getpid()
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                if self._holds(entry.name):
                    found.append(int(entry.name))
            except PermissionError:
                return found or None  # one holder is proof enough; none is no proof
        return found

    def _holds(self, pid: str) -> bool:
        # Without ptrace rights over `pid` the fd directory may still list (root owns it)
        # while each readlink fails with EACCES: PermissionError goes up from either.
        try:
            fds = list(os.scandir(f"/proc/{pid}/fd"))
        except PermissionError:
            raise
        except OSError:
            return False  # gone
        for fd in fds:
            try:
                # readlink is cheap and rules out almost everything; stat confirms.
                if os.readlink(fd.path).endswith(self.path.name):
                    st = os.stat(fd.path)
                    if (st.st_dev, st.st_ino) == self.ident:
                        return True
            except PermissionError:
                raise
            except OSError:
                continue  # fds come and go while we look
        return False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
