"""Files of the run directory as events: inotify tells when a named file there was
replaced or removed (state.json, written by a CLI process that switched roles while the
daemon was not the one asked), instead of a stat() every tenth of a second."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import Source
from .inotify import Inotify


class FileWatch(Source):
    def __init__(self, directory: Path, names: set[str], on_change: Callable[[], None]) -> None:
        self.names = names
        self.on_change = on_change
        self.inotify = Inotify()
        self.inotify.watch(directory)

    def fds(self) -> list[int]:
        return [self.inotify.fileno()]

    def handle(self, fd: int, now: float) -> None:
        events = self.inotify.read()
        if any(d is None or name in self.names for d, name, _mask in events):
            self.on_change()

    def close(self) -> None:
        self.inotify.close()
