"""keepalived's notify FIFO: its events in order, and whether anybody still writes it.

keepalived opens the FIFO O_RDWR once and writes one line per event:

    INSTANCE "skat_plugin" MASTER 100
    GROUP "G1" BACKUP              (sync groups: their instances report too; ignored)

The FIFO says nothing reliable about keepalived's life: it closes and reopens the FIFO on
every reload (SIGHUP), just as it closes it when it dies. A crash is seen by the watched pid
file (election.py) instead.
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

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
