"""keepalived's track file (election/trackfile.py): the verdict on this appliance's fitness,
judged once at the end of a turn in which one of its facts changed (the loaded state, the
ports, a failed repair, split brain), written only when it changes. The file's own sources
(its guardian, inotify on its directory, the end of a split brain's hold) are its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..election.trackfile import TrackFile
from ..watch import Source
from .context import View
from .handler import Handler

FACTS = {"ports", "rules", "split_brain", "election_mismatch"}


class TrackFileHandler(Handler):
    priority = 90

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.file = TrackFile()
        self.file.start()  # the lock for the daemon's life, and the guardian
        self.dirty = True

    def sources(self) -> Iterable[Source]:
        return (self.file,)

    def on_state(self, new: View, old: View) -> None:
        self.dirty = True

    def on_fact(self, name: str, value: Any, now: float) -> None:
        self.dirty |= name in FACTS

    def end_of_turn(self, now: float) -> None:
        if self.dirty:
            self.dirty = False
            facts = self.ctx.facts
            self.file.judge(self.ctx.cfg, facts.get("rules"), bool(facts.get("split_brain")),
                            time.monotonic(), facts.get("election_mismatch"))

    def close(self) -> None:
        self.file.close()  # unfit: no daemon judges any more
