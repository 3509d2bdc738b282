"""state.json written by another process (a CLI that switched roles while the daemon was
not the one asked, `fdpi_cli stop`, `start`): inotify on the run directory (watch/files.py)
makes the context look at it again. Priority 5: the first thing a turn learns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..watch import Source
from ..watch.files import FileWatch
from .handler import Handler


class StateFileHandler(Handler):
    priority = 5

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        # Forced: the file's signature (mtime, inode, size) can repeat within one clock tick
        # (master and backup are words of one length, ext4 reuses the inode just freed).
        self.watch = FileWatch(ctx.run_dir, {"state.json"}, lambda: ctx.refresh(force=True))

    def sources(self) -> Iterable[Source]:
        return (self.watch,)

    def close(self) -> None:
        self.watch.close()
