"""The election process's life: step down the moment keepalived (or ucarp) dies while master.

Owns the pid watches (election/pidfile.py), their event source (watch/election.py: a pidfd
of the process seen alive, inotify on its pid file), election.json (what the watches saw,
so that a restarted daemon knows keepalived died while it was down) and the wait of a
master by SKAT's start rule for keepalived's first word. Priority 10: the election is looked
at before any order of the turn, so a keepalived that died and came back cannot have its
new MASTER applied and then undone by the old one's death.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from .. import atomicfile, report, role
from ..election.pidfile import PidWatch
from ..render import BACKUP, MASTER
from ..watch import Deadline, Source
from ..watch.election import ElectionWatch
from .context import View
from .handler import Handler

ELECTION_GRACE = 10.0  # s (+ 3 adverts) a start-rule master waits for keepalived to speak


class ElectionHandler(Handler):
    priority = 10

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.file = ctx.run_dir / "election.json"
        pidfiles = ctx.opts.watch_pidfile or ctx.configured("vrrp_election_pidfile")
        self.watches = [PidWatch(p) for p in pidfiles]
        self._restore()
        self.watch = ElectionWatch(self.watches, self.check)
        self.wait = _Wait(self)
        self.warned_unwatched = False  # keepalived speaks but no pid file shows it

    def start(self, now: float) -> None:
        self.check()  # keepalived died while this daemon was down

    def sources(self) -> Iterable[Source]:
        return (self.watch, self.wait)

    def on_turn(self, now: float) -> None:
        self.check()

    def on_state(self, new: View, old: View) -> None:
        self.wait.follow(new)
        if new.keepalived and new.keepalived != old.keepalived:
            self._warn_if_unwatched()

    def status(self) -> dict[str, Any]:
        return {"election_alive": self.alive(),
                "awaiting_election": self.ctx.view.awaiting,
                "watch_pidfiles": [str(w.path) for w in self.watches]}

    def close(self) -> None:
        self.watch.close()

    # -- the watches -------------------------------------------------------------------------
    def alive(self) -> bool | None:
        known = [w.alive for w in self.watches if w.alive is not None]
        return all(known) if known else None

    def check(self) -> None:
        """Every watched pid file; a process seen alive and gone with no successor = lost."""
        before = [w.seen for w in self.watches]
        for w in self.watches:
            if w.check():
                self._lost(f"process of {w.path} died")
        if [w.seen for w in self.watches] != before:
            self.ctx.dirty = True
            seen = {str(w.path): list(w.seen) for w in self.watches if w.seen}
            atomicfile.write(self.file, json.dumps(seen))

    def _restore(self) -> None:
        try:
            seen = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return
        for w in self.watches:
            ident = seen.pop(str(w.path), None)
            if ident:
                w.seen, w.ever_seen = (int(ident[0]), int(ident[1])), True
        if seen:  # vrrp_election_pidfile changed while the daemon was down
            report.warning(f"forgot election process(es) seen at {', '.join(seen)}: not "
                           f"watched any more (vrrp_election_pidfile changed)",
                           cause="election-unwatched")

    def _lost(self, why: str) -> None:
        """keepalived/ucarp is gone with no stop event: the peer takes over; be silent."""
        ctx = self.ctx
        ctx.dirty = True
        ctx.refresh()
        if ctx.role != MASTER or ctx.cfg is None or not ctx.cfg.vrrp_enabled:
            report.warning(f"election process gone ({why}); role {ctx.role}: nothing to do")
            return
        report.error(f"election process gone ({why}) while master: stepping down to backup",
                     role=BACKUP, previous_role=MASTER, cause="election-lost")
        if ctx.view.keepalived:
            # Record it as keepalived's last word, so that a notify_master script still in
            # flight from before the crash is stale and ignored.
            ctx.apply("step down", lambda: role.set_role(
                BACKUP, "election-lost", keepalived_state="STOP"))
        else:
            ctx.apply("step down", lambda: role.set_role(BACKUP, "election-lost", force=True))

    def _warn_if_unwatched(self) -> None:
        """keepalived speaks, yet no watched pid file shows a live process: say so once."""
        if self.warned_unwatched or any(w.alive for w in self.watches):
            return
        self.warned_unwatched = True
        files = ", ".join(str(w.path) for w in self.watches) or "none"
        report.warning(f"keepalived writes the notify FIFO but no watched pid file ({files}) "
                       f"names a live process: a crash of keepalived would not be seen; set "
                       f"vrrp_election_pidfile to its VRRP child's pid file",
                       cause="election-unwatched")


class _Wait(Deadline):
    """A master by SKAT's start rule alone, with VRRP on, answers but does not announce
    until keepalived speaks (a booting backup's GARPs would pull the switches away from the
    real master). The wait is bounded: keepalived may be broken, absent, or was running
    before this start and will not repeat itself. Then SKAT's rule stands."""

    def __init__(self, owner: ElectionHandler) -> None:
        self.owner = owner
        self.since: float | None = None  # monotonic start of the wait; None: not waiting

    def follow(self, view: View) -> None:
        if not view.awaiting:
            self.since = None
        elif self.since is None:
            self.since = time.monotonic()

    def next_due(self) -> float | None:
        cfg = self.owner.ctx.cfg
        if self.since is None or cfg is None:
            return None
        return self.since + ELECTION_GRACE + 3 * float(cfg["vrrp_advert_int"])

    def run(self, now: float) -> None:
        ends = self.next_due()
        assert ends is not None and self.since is not None
        grace = ends - self.since
        self.since = now  # once; end_wait() changes state.json, which ends the wait
        why = f"nothing from keepalived for {grace:.0f} s"
        watches = self.owner.watches
        if watches and not self.owner.alive():
            # The likely cause, named: on a running group this is a second master.
            why += (", and no election process runs (watched: "
                    f"{', '.join(str(w.path) for w in watches)}; systemctl start keepalived)")
        self.owner.ctx.apply("end of the wait for an election", lambda: role.end_wait(why))
