"""The bridge ports' fitness, at every link event (watch/links.py: rtnetlink).

Failover on a port failure is keepalived's job (track_interface, and the track file, which
reads the ports itself); this handler makes the cause visible to the operator: each change
once in the journal, in STATUS and the metrics, and as the fact "ports".
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .. import ports, report
from ..watch import Source
from ..watch.links import LinkWatch
from .context import View
from .handler import Handler


class PortsHandler(Handler):
    priority = 30

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.problems: list[str] = []
        self.watch = LinkWatch(self.check)

    def start(self, now: float) -> None:
        self.check()

    def sources(self) -> Iterable[Source]:
        return (self.watch,)

    def on_state(self, new: View, old: View) -> None:
        if new.cfg != old.cfg:
            self.check()

    def status(self) -> dict[str, Any]:
        return {"port_problems": self.problems}

    def close(self) -> None:
        self.watch.close()

    def check(self) -> None:
        """Report each change of the ports' fitness once."""
        ctx = self.ctx
        if ctx.cfg is None:
            return
        found = ports.problems(ctx.cfg.pairs)
        ctx.report_fact("ports", found, time.monotonic())
        if found == self.problems:
            return
        fixed = [p for p in self.problems if p not in found]
        new = [p for p in found if p not in self.problems]
        self.problems = found
        ctx.dirty = True
        for problem in new:
            report.error(f"port problem: {problem}", role=ctx.role, cause="port-down",
                         port=problem.split()[0])
        for problem in fixed:
            report.event(f"port recovered: {problem} no longer", role=ctx.role,
                         cause="port-up", port=problem.split()[0])
