"""Rules others remove come back: nftables' own events say when the rule set changed
(watch/ruleset.py); the handler compares the plugin's tables with what the last change
loaded and loads them again, reporting it. A writer that keeps undoing the repair (more
than REPAIR_BURST within REPAIR_WINDOW seconds) is backed off from, doubling up to
REPAIR_BACKOFF_MAX; meanwhile the appliance may sit without its rules, so it declares
itself unfit (the fact "rules", the track file's verdict) and keepalived hands the gateway
over, until REPAIR_WINDOW seconds pass without a repair. A repair that fails is unfit too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import report, role
from ..errors import SkatError
from ..watch import Source
from ..watch.ruleset import RulesetWatch
from .handler import Handler

REPAIR_BURST = 3
REPAIR_WINDOW = 10.0
REPAIR_BACKOFF_MAX = 60.0
RETRY = 1.0  # s after a check that failed by an internal error


class RepairHandler(Handler):
    priority = 30

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.watch = RulesetWatch(self.check)
        self.expected: tuple[Any, str] | None = None  # (state signature, rules fingerprint)
        self.recent: list[float] = []  # monotonic times of recent repairs
        self.total = 0
        self.backoff = 0.0
        self.not_before = 0.0
        self.flapping: str | None = None  # why unfit while a writer keeps undoing repairs

    def start(self, now: float) -> None:
        self.check(now)  # flushed while this daemon was down

    def sources(self) -> Iterable[Source]:
        return (self.watch,)

    def status(self) -> dict[str, Any]:
        return {"rule_repairs": self.total}

    def close(self) -> None:
        self.watch.close()

    def check(self, now: float) -> None:
        """The rule set changed (any writer): are the plugin's tables still what its last
        change loaded? If not, load them again, report it, and back off from a writer that
        keeps undoing the repair."""
        if now < self.not_before:
            self.watch.check_at(self.not_before)
            return
        ctx = self.ctx
        self.recent = [t for t in self.recent if now - t < REPAIR_WINDOW]
        try:
            self.expected, what = role.keep(self.expected)
        except SkatError as e:
            report.error(f"rules could not be repaired: {e}", role=ctx.role,
                         cause="rules-repair-failed")
            ctx.report_fact("rules", f"the plugin's rules could not be repaired: {e}", now)
            return
        except Exception as e:  # a bug must not take the supervisor down
            report.error(f"rules check: internal error: {e!r}; looking again in "
                         f"{RETRY:g} s")
            self.watch.check_at(now + RETRY)  # the rules may still need their repair
            return
        if what is None:
            if self.flapping and not self.recent:
                report.event("rules: no repair needed for "
                             f"{REPAIR_WINDOW:g} s; fit again as far as the rules go",
                             role=ctx.role, cause="rules-steady")
                self.flapping = None
            elif self.flapping:
                self.watch.check_at(self.recent[-1] + REPAIR_WINDOW)
            ctx.report_fact("rules", self.flapping, now)
            return
        self.total += 1
        ctx.dirty = True
        self.recent.append(now)
        self.watch.check_at(now + REPAIR_WINDOW)  # to see the writer has stopped
        report.warning(f"rules repaired: {what}; the {ctx.role} rule set is loaded again",
                       role=ctx.role, cause="rules-repaired")
        if len(self.recent) > REPAIR_BURST:
            self.backoff = min(REPAIR_BACKOFF_MAX, max(1.0, 2 * self.backoff))
            self.not_before = now + self.backoff
            self.flapping = (f"another writer keeps removing the plugin's rules "
                             f"({len(self.recent)} repairs within {REPAIR_WINDOW:g} s)")
            report.error(f"{self.flapping}: the next repair waits {self.backoff:g} s, and "
                         f"the appliance is unfit to be master meanwhile", role=ctx.role,
                         cause="rules-flapping")
        elif len(self.recent) == 1:
            self.backoff = 0.0
        ctx.report_fact("rules", self.flapping, now)
