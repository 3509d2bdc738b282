"""The gateway's presence on the wire while master: GARP and unsolicited NA (announce.py),
Router Advertisements and answers to Router Solicitations (gateway/ra.py), MLD reports for
its addresses' groups (gateway/mld.py), ICMP Time Exceeded for what expires in it
(gateway/icmp_errors.py). Nothing while backup, nor while a start-rule master awaits the
election.

Priority 50: after the orders of the turn, so a role just left is never announced. The
context re-reads state.json before any timer of the turn (the loop's before-timers hook).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .. import announce
from ..gateway import icmp_errors, mld, ra
from ..render import MASTER
from ..watch import Deadline, Source
from .context import View
from .handler import Handler


class PresenceHandler(Handler):
    priority = 50

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.sender = announce.Sender(int(ctx.configured("vrrp_socket_mark")))
        self.announcer = announce.Announcer(self.sender)
        self.rounds = _Rounds(self.announcer)
        self.advertiser = ra.RouterAdvertiser(self.sender)
        self.mld = mld.Reporter(self.sender, self.advertiser.rng)
        self.icmp = icmp_errors.TimeExceeded(self.sender)
        self.split_brain = False  # the last word of the split-brain handler

    def sources(self) -> Iterable[Source]:
        return (self.rounds, self.advertiser, self.mld, self.icmp)

    def on_state(self, new: View, old: View) -> None:
        cfg = new.cfg
        if cfg is not None and int(cfg.get("vrrp_socket_mark")) != self.sender.mark:
            self.sender.set_mark(int(cfg.get("vrrp_socket_mark")))  # a reload changed it
        if new.role != MASTER or new.awaiting or cfg is None:
            self.announcer.stop()
            for source in (self.advertiser, self.mld, self.icmp):
                source.stop()
            return
        if not self.announcer.active or (old.cfg is not None and old.cfg.values != cfg.values):
            now = time.monotonic()
            self.announcer.start(announce.Plan.from_config(cfg), now)
            for source in (self.advertiser, self.mld, self.icmp):
                source.start(cfg, now)  # the takeover RA and join, then the schedules

    def on_fact(self, name: str, value: Any, now: float) -> None:
        """A split brain cleared: announce again, so the switches learn the one master."""
        if name != "split_brain":
            return
        cleared, self.split_brain = self.split_brain and not value, bool(value)
        if cleared:
            self.ctx.refresh()  # never announce a role another process just left
            view = self.ctx.view
            if view.role == MASTER and not view.awaiting and view.cfg is not None:
                self.announcer.start(announce.Plan.from_config(view.cfg), now)

    def status(self) -> dict[str, Any]:
        return {"announcement_rounds": self.announcer.rounds,
                "burst_rounds": self.announcer.burst_rounds,
                "router_advertisements": {**self.advertiser.counters(),
                                          **self.mld.counters(), **self.icmp.counters()}}

    def close(self) -> None:
        for source in (self.advertiser, self.mld, self.icmp):
            source.stop()
        self.sender.close()


class _Rounds(Deadline):
    """The announcer's rounds as a deadline of the loop (it has no descriptor)."""

    def __init__(self, announcer: announce.Announcer) -> None:
        self.announcer = announcer

    def next_due(self) -> float | None:
        return self.announcer.next_due()

    def run(self, now: float) -> None:
        self.announcer.run(now)
