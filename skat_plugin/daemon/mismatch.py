"""keepalived's word against the role (issue 16): a difference that lasts longer than a
switch takes is an alarm. It is said at err in the journal, shown by `vrrp show` and the
metrics (which judge it themselves from state.json), and it makes the appliance unfit (the
fact "election_mismatch"): keepalived goes to FAULT, whose order makes a second master a
backup, and whose hand-over lets the peer take a gateway that nobody serves. The decision
is health.election_mismatch(), shared with `vrrp show`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Any

from .. import report
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
        if reason and not self.reason:
            report.error(f"election mismatch: {reason}", role=view.role,
                         cause="election-mismatch", keepalived_state=view.keepalived)
        elif self.reason and not reason:
            report.event("keepalived's word and the role agree again", role=view.role,
                         cause="election-agrees")
        self.reason = reason
        self.ctx.report_fact("election_mismatch", reason, now)

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
