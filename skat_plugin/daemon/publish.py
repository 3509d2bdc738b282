"""What the daemon tells others: daemon.json (read by `vrrp show`), systemd (STATUS, the
watchdog) and the Prometheus textfile. Written at the end of a turn (networkd's dirty
handler), only when something in them changed; the metrics also every metrics.REFRESH
seconds, and systemd's watchdog is fed on its own clock.

Priority 100: last, after every handler's work of the turn.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from typing import Any

from .. import atomicfile, metrics, report, role
from ..clock import now_iso
from ..watch import Deadline, Source
from .handler import Handler

COUNT_EVERY = 30.0  # s between counts of the gateway's table for the metrics


class Notifier:
    """sd_notify when NOTIFY_SOCKET is set (systemd Type=notify); silent otherwise."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.last_status = ""
        usec = os.environ.get("WATCHDOG_USEC", "")
        wd_pid = os.environ.get("WATCHDOG_PID")
        mine = wd_pid is None or wd_pid == str(os.getpid())
        self.watchdog = int(usec) / 2e6 if usec.isdigit() and int(usec) and mine else None

    def send(self, message: str) -> None:
        if self.enabled:
            from systemd import daemon as sd  # python3-systemd: a dependency of the package

            sd.notify(message)

    def status(self, text: str) -> None:
        if text != self.last_status:
            self.last_status = text
            self.send(f"STATUS={text}")


class PublishHandler(Handler):
    priority = 100

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.notifier = Notifier()
        self.metrics_at = _Clock(time.monotonic())  # the metrics' periodic refresh
        self.watchdog = _Clock(time.monotonic() if self.notifier.watchdog else None)
        self.published = ""  # daemon.json as last written, without its time stamp
        self.published_rounds = -1  # announcement_rounds as last written
        self.counts: tuple[float, dict[str, Any]] | None = None  # (when, subscriber counts)

    def sources(self) -> Iterable[Source]:
        return (self.metrics_at, self.watchdog)

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "updated": now_iso()}

    def end_of_turn(self, now: float) -> None:
        counters = False
        if self.ctx.dirty or self.metrics_at.passed(now):
            self.ctx.dirty = False
            self.metrics_at.at = now + metrics.REFRESH
            self.write_metrics()
            counters = True
        if self.watchdog.passed(now):
            assert self.notifier.watchdog is not None
            self.watchdog.at = now + self.notifier.watchdog
            self.notifier.send("WATCHDOG=1")
        self.publish(counters)

    def publish(self, counters: bool = False) -> None:
        """daemon.json and STATUS, when something in them changed. An announcer's refresh
        round (every vrrp_garp_refresh) is not such a change: its count goes out with the
        next one, or with the metrics (counters=True)."""
        st = self.ctx.status()
        news = {k: v for k, v in st.items() if k not in ("updated", "announcement_rounds")}
        content = json.dumps(news, sort_keys=True)
        rounds = st.get("announcement_rounds", 0)
        if content == self.published and not (counters and rounds != self.published_rounds):
            return
        self.published_rounds = rounds
        self.published = content
        st.pop("burst_rounds", None)
        atomicfile.write(self.ctx.run_dir / "daemon.json", json.dumps(st, sort_keys=True))
        alive = {True: "alive", False: "GONE", None: "not seen"}[st.get("election_alive")]
        self.notifier.status(f"role={self.ctx.role} since={self.ctx.view.since or '-'} "
                             f"split_brain={'YES' if st.get('split_brain') else 'no'} "
                             f"election={alive} "
                             f"ports={'; '.join(st.get('port_problems', [])) or 'ok'}")

    def write_metrics(self) -> None:
        path = self.ctx.opts.metrics_file
        if not path:
            return
        try:
            text = metrics.render(role.show(self._subscriber_counts()), self.ctx.status(),
                                  self.ctx.role_changes)
            metrics.write(path, text)
        except Exception as e:  # metrics must never stop the supervisor
            report.warning(f"metrics file {path}: {e}")

    def _subscriber_counts(self) -> dict[str, Any] | None:
        """The gateway's table sizes, counted at most every COUNT_EVERY seconds."""
        cfg = self.ctx.cfg
        if cfg is None or not cfg.terminates:
            return None
        now = time.monotonic()
        if self.counts is None or now - self.counts[0] > COUNT_EVERY:
            from ..gateway import subscribers

            self.counts = (now, subscribers.count())
        return self.counts[1]


class _Clock(Deadline):
    """A deadline the end-of-turn work looks at: its passing only wakes the loop."""

    def __init__(self, at: float | None) -> None:
        self.at = at

    def passed(self, now: float) -> bool:
        return self.at is not None and now >= self.at

    def next_due(self) -> float | None:
        return self.at

    def run(self, now: float) -> None:
        return None  # end_of_turn does the work and moves `at`

