"""keepalived's word against the role (issue 16): a difference that lasts longer than a
switch takes is an alarm. It is said at err in the journal and shown by `vrrp show` and the
metrics (which judge it themselves from state.json; the decision is
health.election_mismatch(), shared). The daemon then follows keepalived's word, the
election being the authority; while the difference stays (that switch failed), the
appliance is unfit (the fact "election_mismatch"): keepalived's FAULT makes a second master
a backup, and lets the peer take a gateway that nobody serves.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Any

from .. import report, role
from ..election import health
from ..role import KEEPALIVED_ROLE
from ..watch import Deadline, Source
from .context import View
from .handler import Handler


def _epoch(iso: str | None) -> float:
    try:
        return dt.datetime.fromisoformat(iso).timestamp() if iso else 0.0
    except ValueError:
        return 0.0


class MismatchHandler(Handler):
    priority = 15  # after the election's look, before the turn's orders

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.deadline = _Look(self)
        self.began = 0.0  # wall clock: when the difference could have begun at the earliest
        self.reason: str | None = None

    def sources(self) -> Iterable[Source]:
        return (self.deadline,)

    def on_state(self, new: View, old: View) -> None:
        self.began = max(_epoch(new.keepalived_at), _epoch(new.since))
        self.judge(time.monotonic())

    def judge(self, now: float) -> None:
        view = self.ctx.view
        enabled = view.cfg is not None and view.cfg.vrrp_enabled
        reason = health.election_mismatch(view.role, view.keepalived, self.began,
                                          time.time()) if enabled else None
        wanted = KEEPALIVED_ROLE.get(view.keepalived or "")
        differs = enabled and wanted is not None and wanted != view.role
        # A difference younger than the bound is a switch in progress: look again then.
        self.deadline.at = (now + max(0.0, self.began + health.MISMATCH_AFTER - time.time())
                            if differs and reason is None else None)
        first = bool(reason and not self.reason)
        if first:
            report.error(f"election mismatch: {reason}; following keepalived", role=view.role,
                         cause="election-mismatch", keepalived_state=view.keepalived)
        elif self.reason and not reason:
            report.event("keepalived's word and the role agree again", role=view.role,
                         cause="election-agrees")
        self.reason = reason
        self.ctx.report_fact("election_mismatch", reason, now)
        if first and wanted is not None:
            said = view.keepalived
            self.ctx.apply("follow keepalived", lambda: role.set_role(
                wanted, "election-mismatch", keepalived_state=said))

    def status(self) -> dict[str, Any]:
        return {"election_mismatch": self.reason}


class _Look(Deadline):
    def __init__(self, owner: MismatchHandler) -> None:
        self.owner = owner
        self.at: float | None = None

    def next_due(self) -> float | None:
        return self.at

    def run(self, now: float) -> None:
        self.at = None
        self.owner.judge(now)
