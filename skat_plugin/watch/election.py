"""The election process's life as events: its death by pidfd, a new one by inotify.

election.PidWatch knows which process a pid file names and whether it is the one seen
before. This source makes the kernel say when to ask it: a pidfd (pidfd_open(2)) of the
process seen alive becomes readable the moment it exits, and an inotify watch on the pid
file's directory fires when keepalived (re)writes or removes its pid file. The handler is
the daemon's check_election(). Nothing is read on a timer: a step-down follows the death
within the time it takes to run the switch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from ..election.pidfile import PidWatch
from . import Source
from .inotify import CHANGES, IN_ATTRIB, IN_CREATE, IN_MOVED_TO, Inotify

# A pid file written, replaced or removed; or touched: the process it names is judged by
# being older than the file (election.PidWatch), so a new mtime may adopt it.
PIDFILE_CHANGES = CHANGES | IN_ATTRIB


class ElectionWatch(Source):
    def __init__(self, watches: list[PidWatch], on_change: Callable[[], None]) -> None:
        self.watches = watches
        self.on_change = on_change
        self.inotify = Inotify()
        self.pidfds: dict[tuple[int, int], int] = {}  # process identity -> its pidfd
        self.waiting_for: dict[Path, Path] = {}  # missing directory -> the watched parent
        for w in watches:
            self._watch_dir(w.path.parent)
        self.sync()

    def _watch_dir(self, directory: Path) -> None:
        """The pid file's directory; while it does not exist (keepalived creates
        /run/keepalived), its nearest existing ancestor, for the directory's creation."""
        if self.inotify.watch(directory, PIDFILE_CHANGES):
            return
        parent = directory.parent
        while parent != parent.parent and not parent.is_dir():
            parent = parent.parent
        if self.inotify.watch(parent, IN_CREATE | IN_MOVED_TO):
            self.waiting_for[directory] = parent

    def sync(self) -> None:
        """A pidfd for every process seen alive, none for the others (after each check)."""
        alive = {w.seen for w in self.watches if w.seen is not None}
        for ident in list(self.pidfds):
            if ident not in alive:
                os.close(self.pidfds.pop(ident))
        for ident in alive - self.pidfds.keys():
            try:
                self.pidfds[ident] = os.pidfd_open(ident[0])
            except ProcessLookupError:
                continue  # already gone: the next check sees it
            # PidWatch took it for the process it saw; the pid may have been reused between
            # that look and pidfd_open: look again through the pidfd's own process.
            if not _same(ident):
                os.close(self.pidfds.pop(ident))

    def fds(self) -> list[int]:
        return [self.inotify.fileno(), *self.pidfds.values()]

    def handle(self, fd: int, now: float) -> None:
        if fd == self.inotify.fileno():
            events = self.inotify.read()
            for directory in list(self.waiting_for):
                if directory.is_dir():
                    del self.waiting_for[directory]
                    self._watch_dir(directory)
            if not any(d is None or mask & PIDFILE_CHANGES for d, _name, mask in events):
                return
        self.on_change()
        self.sync()

    def close(self) -> None:
        for fd in self.pidfds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pidfds.clear()
        self.inotify.close()


def _same(ident: tuple[int, int]) -> bool:
    from ..election.pidfile import Unknown, proc_identity

    try:
        return proc_identity(ident[0]) == ident
    except Unknown:
        return True
