"""Split brain: frames from another master, as the kernel reports them (watch/foreign.py).

Only an elected master can see another master: awaiting the election, a second master on
the wire is SKAT's documented start window (the real master refreshing), and in backup it
is the master. The alarm is the fact "split_brain" (the track file's verdict with
vrrp_split_brain_handover=1; presence announces again once it clears).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .. import nftapply, report
from ..election.splitbrain import Change, Watch
from ..render import MASTER, SPLIT_BRAIN_GROUP
from ..watch import Source
from ..watch.foreign import ForeignFrames
from .context import View
from .handler import Handler


class SplitBrainHandler(Handler):
    priority = 40

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.foreign = ForeignFrames(SPLIT_BRAIN_GROUP, self.changed,
                                     lambda: nftapply.read_counter("foreign_master_frames"))
        self.watch: Watch = self.foreign.watch
        if self.foreign.fallback:
            report.warning(f"split-brain watch: {self.foreign.fallback}", cause="split-brain")

    def sources(self) -> Iterable[Source]:
        return (self.foreign,)

    def on_state(self, new: View, old: View) -> None:
        now = time.monotonic()
        self.foreign.look(new.role == MASTER and not new.awaiting, now)
        self.ctx.report_fact("split_brain", self.watch.active, now)  # not looking: over

    def status(self) -> dict[str, Any]:
        return {"split_brain": self.watch.active, "split_brain_since": self.watch.since}

    def close(self) -> None:
        self.foreign.close()

    def changed(self, change: Change, watch: Watch) -> None:
        ctx = self.ctx
        if change.raised:
            where = f" on {', '.join(sorted(watch.ports))}" if watch.ports else ""
            report.error(f"split brain: another master sends from the virtual MAC "
                         f"({change.new_frames} frame(s) arrived{where})",
                         role=ctx.role, cause="split-brain", split_brain=1,
                         foreign_frames=change.new_frames)
        elif change.cleared:
            report.event(f"split brain over (no frame from another master for "
                         f"{watch.window:g} s): announcing again", role=ctx.role,
                         cause="split-brain-cleared", split_brain=0)
        ctx.dirty = True
        ctx.report_fact("split_brain", watch.active, time.monotonic())
