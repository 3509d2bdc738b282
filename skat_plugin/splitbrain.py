"""Split brain: another master sending from the virtual MAC, seen by a kernel counter.

While master, nft/master.nft counts frames that ARRIVE on a subscriber port with source MAC
bras_arp_mac (foreign_master_frames): only another master sends from it. The daemon reads
the counter every POLL seconds, while master. split_brain is true while the counter grew
within the last WINDOW seconds, so a peer announcing every second (vrrp_garp_refresh=1)
keeps it true, and it clears WINDOW seconds after the last foreign frame.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

POLL = 1.0  # master only; a peer's refresh (every vrrp_garp_refresh) keeps it up
WINDOW = 3.0


@dataclass
class Change:
    """What check() found: the alarm was raised or cleared now."""
    raised: bool
    cleared: bool
    new_frames: int


class Watch:
    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self.last_value: int | None = None
        self.last_seen: float | None = None  # monotonic time of the latest growth
        self.active = False
        self.since: str | None = None         # wall clock, for status and the journal
        self.frames = 0                       # foreign frames counted during this episode

    def reset(self, baseline: int | None = 0) -> None:
        """A new rule set was loaded (its counter starts at 0), or we left master."""
        self.last_value = baseline
        self.last_seen = None
        self.active = False
        self.since = None
        self.frames = 0

    def check(self, value: int | None, now: float) -> Change:
        """value: foreign_master_frames now (None: no rule set loaded)."""
        grown = 0
        if value is not None:
            if self.last_value is not None:
                # A new table (role switch, reload) restarts the counter at zero.
                grown = value - self.last_value if value >= self.last_value else value
            self.last_value = value
        if grown:
            self.last_seen = now
        was = self.active
        self.active = self.last_seen is not None and now - self.last_seen < self.window
        if self.active and not was:
            self.since = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
            self.frames = 0
        if self.active:
            self.frames += grown
        if not self.active:
            self.since = None
        return Change(self.active and not was, was and not self.active, grown)
