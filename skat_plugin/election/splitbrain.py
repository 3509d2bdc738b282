"""Split brain: another master sending from the virtual MAC.

While master, nft/master.nft counts frames that ARRIVE on a gateway port with source MAC
bras_arp_mac (foreign_master_frames): only another master sends from it. The kernel also
reports them to the daemon as they come (NFLOG, watch/foreign.py), so nothing is read on a
timer; where the NFLOG group cannot be had, the daemon reads the counter every POLL seconds
instead. split_brain is true while such frames came within the last WINDOW seconds, so a
peer refreshing its GARPs every second (vrrp_garp_refresh=1) keeps it true, and it clears WINDOW
seconds after the last one.

This module is the pure logic: frames in, alarm raised or cleared out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..clock import now_iso

POLL = 1.0  # only without NFLOG, and only while master
WINDOW = 3.0


@dataclass
class Change:
    """What a look found: the alarm was raised or cleared now."""
    raised: bool
    cleared: bool
    new_frames: int


class Watch:
    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self.last_value: int | None = None    # the counter at the last look (polling only)
        self.last_seen: float | None = None   # monotonic time of the latest foreign frame
        self.active = False
        self.since: str | None = None         # wall clock, for status and the journal
        self.frames = 0                       # foreign frames counted during this episode
        self.ports: set[str] = set()          # where they came in, this episode (NFLOG)

    def reset(self) -> None:
        """Not looking any more, or looking anew: frames counted before are not an alarm."""
        self.last_value = None
        self.last_seen = None
        self.active = False
        self.since = None
        self.frames = 0
        self.ports = set()

    def seen(self, frames: int, now: float, ports: set[str] | None = None) -> Change:
        """`frames` foreign frames now (0: just let time pass)."""
        if frames:
            self.last_seen = now
        was = self.active
        self.active = self.last_seen is not None and now - self.last_seen < self.window
        if self.active and not was:
            self.since = now_iso()
            self.frames = 0
            self.ports = set()
        if self.active:
            self.frames += frames
            self.ports |= ports or set()
        else:
            self.since = None
        return Change(self.active and not was, was and not self.active, frames)

    def counted(self, value: int | None, now: float) -> Change:
        """foreign_master_frames read now (None: no rule set loaded). The first reading
        after reset() is the baseline."""
        grown = 0
        if value is not None:
            if self.last_value is not None:
                # A full load (reload, repair) restarts the counter at zero.
                grown = value - self.last_value if value >= self.last_value else value
            self.last_value = value
        return self.seen(grown, now)

    def clears_at(self) -> float | None:
        """When the alarm clears unless another frame comes."""
        return self.last_seen + self.window if self.active and self.last_seen else None
