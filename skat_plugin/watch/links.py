"""The bridge ports' links as events: rtnetlink's link group (RTMGRP_LINK) through
pyroute2. Any link message (up, down, carrier, master, gone) makes the daemon look at its
ports again (ports.problems(), from sysfs); the messages themselves need no parsing."""

from __future__ import annotations

from collections.abc import Callable

from . import Source


class LinkWatch(Source):
    def __init__(self, on_change: Callable[[], None]) -> None:
        from pyroute2 import IPRoute  # slow to import: only the daemon needs it
        from pyroute2.netlink.rtnl import RTMGRP_LINK

        self.on_change = on_change
        self.ipr = IPRoute()
        self.ipr.bind(groups=RTMGRP_LINK)

    def fds(self) -> list[int]:
        return [self.ipr.fileno()]

    def handle(self, fd: int, now: float) -> None:
        self.ipr.get()  # drain what is there (poll said it is readable)
        self.on_change()

    def close(self) -> None:
        self.ipr.close()
