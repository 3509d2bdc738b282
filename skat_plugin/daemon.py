"""fdpi_cli daemon: the supervising process (docs/daemon.md).

One thread, one poll loop, so everything that changes the role is applied one at a time in
the order it arrived: keepalived's notify FIFO, the control socket (`fdpi_cli vrrp set`,
`reload`), SIGHUP. Around that it waits on the kernel's events (watch/: rule-set changes,
the election process, links, state.json written by another process, frames from another
master) and keeps the few timers that are periodic by nature: announcements, the metrics
file and the systemd watchdog.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from . import announce, atomicfile, control, metrics, ports, report, role
from . import state as statefile
from .config import Config
from .election import fifo as keepalived_fifo
from .election import pidfile as election
from .election import splitbrain, trackfile
from .errors import SkatError
from .gateway import ra
from .gateway import sync as tablesync
from .render import BACKUP, MASTER, SPLIT_BRAIN_GROUP
from .watch.election import ElectionWatch
from .watch.files import FileWatch
from .watch.foreign import ForeignFrames
from .watch.links import LinkWatch
from .watch.ruleset import RulesetWatch

ELECTION_GRACE = 10.0  # s (+ 3 adverts) a start-rule master waits for keepalived to speak
# Repairs of the rule set: more than REPAIR_BURST within REPAIR_WINDOW seconds means a
# writer keeps undoing them; the daemon then waits, doubling up to REPAIR_BACKOFF_MAX.
REPAIR_BURST = 3
REPAIR_WINDOW = 10.0
REPAIR_BACKOFF_MAX = 60.0
COUNT_EVERY = 30.0   # s between counts of the gateway's table for the metrics (a full list)
DEFAULT_FIFO = "/run/skat-plugin/keepalived.fifo"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fdpi_cli daemon",
                                description="skat-plugin supervising daemon (foreground)")
    p.add_argument("--fifo", metavar="PATH",
                   help="keepalived's notify FIFO (default: vrrp_notify_fifo of the loaded "
                        f"configuration, else {DEFAULT_FIFO})")
    p.add_argument("--no-fifo", action="store_true",
                   help="do not read a notify FIFO (ucarp, or keepalived without notify_fifo)")
    p.add_argument("--watch-pidfile", metavar="PATH", action="append", default=[],
                   help="pid file of the election process (keepalived's VRRP child -r file, "
                        "ucarp's); its death while master means step down. Repeatable "
                        "(default: vrrp_election_pidfile of the loaded configuration)")
    p.add_argument("--metrics-file", metavar="PATH", default=metrics.DEFAULT_PATH,
                   help="Prometheus textfile (default: %(default)s; '' = off; skipped when "
                        "its directory does not exist)")
    p.add_argument("--verbose", action="store_true", help="log every event to stderr too")
    return p


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


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Daemon:
    def __init__(self, opts: argparse.Namespace, config_path: str) -> None:
        self.opts = opts
        self.config_path = config_path
        self.run_dir = statefile.run_dir()
        self.stopping = False
        self.reload_requested = False
        self.notifier = Notifier()
        # What we know of the appliance (from state.json).
        self.state_sig: tuple[int, int, int] | None = None
        self.role = "unknown"
        self.since: str | None = None
        self.cfg: Config | None = None
        self.role_changes = 0
        self.requests = 0  # served on the control socket
        # Watches.
        self.sb = splitbrain.Watch()  # the split-brain source's, once it exists (setup)
        self.port_problems: list[str] = []
        self.pidwatches: list[election.PidWatch] = []
        self.fifo: keepalived_fifo.Fifo | None = None
        self.warned_unwatched = False  # keepalived speaks but no pid file shows it
        self.awaiting_election = False  # master by the start rule only (see _on_state)
        self.awaiting_since = 0.0
        self.foreign_instances: set[str] = set()  # other vrrp_instances seen on the FIFO
        self.sender: announce.Sender | None = None
        self.announcer: announce.Announcer | None = None
        self.server: control.Server | None = None
        # Event sources of the gateway (bras_terminate_l2=1): each has fds(), handle(fd,
        # now), next_due() and run(now); the loop polls their descriptors and deadlines.
        self.advertiser: ra.RouterAdvertiser | None = None
        self.table_sync: tablesync.TableSync | None = None
        # The kernel's events (watch/): rule-set changes, the election process, links, and
        # the run directory's files (state.json written by a CLI process).
        self.ruleset_watch: RulesetWatch | None = None
        self.election_watch: ElectionWatch | None = None
        self.link_watch: LinkWatch | None = None
        self.file_watch: FileWatch | None = None
        self.foreign: ForeignFrames | None = None
        self.expected: tuple[Any, str] | None = None  # (state signature, rules fingerprint)
        self.repairs: list[float] = []  # monotonic times of recent repairs
        self.repairs_total = 0
        self.repair_backoff = 0.0
        self.repair_not_before = 0.0
        self.metrics_dirty = True
        self.published = ""  # daemon.json as last written, without its time stamp
        self.published_rounds = -1  # announcement_rounds as last written
        self.subscriber_counts: tuple[float, dict[str, Any]] | None = None  # (when, counts)
        self.owns_run_dir = False  # set once our pid file is written
        # keepalived's track file: the verdict on fitness, written when it changes.
        self.track_file = trackfile.TrackFile()
        self.rules_problem: str | None = None  # a repair that failed

    # -- start and stop ----------------------------------------------------------------------
    def setup(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        other = statefile.daemon_pid()
        if other is not None and other != os.getpid():
            raise SkatError(f"another daemon (pid {other}) already runs for {self.run_dir}")
        # The pid file first: from now on `vrrp set` treats keepalived's FIFO state as final.
        atomicfile.write(self.run_dir / "daemon.pid", f"{os.getpid()}\n")
        self.owns_run_dir = True
        self.track_file.start()
        self.refresh_state()
        self.server = control.Server()
        from .config.schema import KEYS  # the same default as fastdpi.conf's, for old snapshots

        pidfiles = self.opts.watch_pidfile or self._configured(
            "vrrp_election_pidfile", KEYS["vrrp_election_pidfile"]["default"])
        self.pidwatches = [election.PidWatch(p) for p in pidfiles]
        self.restore_election()
        if not self.opts.no_fifo:
            self.fifo = keepalived_fifo.Fifo(self.opts.fifo or self._configured(
                "vrrp_notify_fifo", DEFAULT_FIFO))
        self.sender = announce.Sender(self._mark())
        self.announcer = announce.Announcer(self.sender)
        self.advertiser = ra.RouterAdvertiser(self.sender)
        self.refresh_state(force=True)
        self.check_election()  # also: keepalived died while this daemon was down
        self.election_watch = ElectionWatch(self.pidwatches, self.check_election)
        self.file_watch = FileWatch(self.run_dir, {"state.json"}, self.refresh_state)
        self.link_watch = LinkWatch(self.check_ports)
        self.ruleset_watch = RulesetWatch(self.check_rules)
        self.foreign = ForeignFrames(SPLIT_BRAIN_GROUP, self.on_split_brain,
                                     self._foreign_frames)
        self.sb = self.foreign.watch
        if self.foreign.fallback:
            report.warning(f"split-brain watch: {self.foreign.fallback}", cause="split-brain")
        self._look_for_foreign_frames()
        self.check_rules(time.monotonic())  # also: flushed while this daemon was down
        self.check_ports()
        self.judge()

    def teardown(self) -> None:
        self.track_file.close()  # unfit: no daemon judges any more
        if self.server:
            self.server.close()
        if self.fifo:
            self.fifo.close()
        if self.advertiser:
            self.advertiser.stop()
        for source in (self.table_sync, self.election_watch, self.file_watch,
                       self.link_watch, self.ruleset_watch, self.foreign):
            if source:
                source.close()
        if self.sender:
            self.sender.close()
        if not self.owns_run_dir:
            return  # another daemon's files
        for name in ("daemon.json", "daemon.pid"):
            with contextlib.suppress(OSError):
                (self.run_dir / name).unlink()

    def _configured(self, key: str, default: str) -> str:
        """A key of the loaded configuration (state.json's snapshot), else of fastdpi.conf.

        Read at start only: a changed value needs a daemon restart.
        """
        if self.cfg is not None:
            return self.cfg.get(key, default)
        with contextlib.suppress(SkatError, OSError):
            from . import config
            return config.load(self.config_path).get(key, default)
        return default

    def _mark(self) -> int:
        if self.cfg is not None:
            return int(self.cfg.get("vrrp_socket_mark", 0x5CA7))
        return 0x5CA7

    # -- the appliance's state -------------------------------------------------------------
    def refresh_state(self, force: bool = False) -> None:
        """Cheap: one stat(); loads state.json only when it changed (or force)."""
        try:
            st = os.stat(self.run_dir / "state.json")
            sig = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            sig = None
        if sig == self.state_sig and not force:
            return
        self.state_sig = sig
        self._on_state(statefile.load() if sig else None)

    def _on_state(self, st: dict[str, Any] | None) -> None:
        new_role = st["role"] if st else "stopped"
        old_role = self.role
        old_cfg = self.cfg
        self.cfg = Config.from_snapshot(st["config"]) if st else None
        self.since = st.get("since") if st else None
        if new_role != old_role and old_role != "unknown":
            self.role_changes += 1
        self.role = new_role
        self.metrics_dirty = True
        if self.announcer is None or self.sender is None:
            return
        if self.table_sync is None or old_cfg is None or self.cfg is None \
                or old_cfg.values != self.cfg.values:
            self._renew_table_sync()
        if self.table_sync:
            self.table_sync.is_master = new_role == MASTER
        if self.cfg is not None and self._mark() != self.sender.mark:
            self.sender.set_mark(self._mark())  # a reload changed vrrp_socket_mark
        # Master only by SKAT's start rule, with VRRP on: keepalived has not elected this
        # appliance yet. It answers (SKAT's rule) but does not announce: a booting backup's
        # GARPs would pull the switches' tables from the real master. Any later order
        # (keepalived, ucarp, an operator) ends the wait.
        was_waiting = self.awaiting_election
        self.awaiting_election = bool(new_role == MASTER and st
                                      and st.get("awaiting_election", False))
        if self.awaiting_election and not was_waiting:
            self.awaiting_since = time.monotonic()
        self._look_for_foreign_frames()
        if new_role == MASTER and not self.awaiting_election:
            if not self.announcer.active or (old_cfg and old_cfg.values != self.cfg.values):
                self.announcer.start(announce.Plan.from_config(self.cfg), time.monotonic())
                if self.advertiser:  # the takeover RA, then the responder and schedule
                    self.advertiser.stop()
                    self.advertiser.start(self.cfg, time.monotonic())
        else:
            self.announcer.stop()
            if self.advertiser:
                self.advertiser.stop()
        self.judge()

    def _renew_table_sync(self) -> None:
        """The subscriber-table sync follows the loaded configuration (its own socket)."""
        if self.table_sync:
            self.table_sync.close()
            self.table_sync = None
        if self.cfg is not None:
            try:
                self.table_sync = tablesync.TableSync(self.cfg)
            except Exception as e:  # the sync is not worth the supervisor
                report.error(f"subscriber-table sync off: cannot start it: {e!r}",
                             cause="sync")

    # -- orders ----------------------------------------------------------------------------
    def apply(self, what: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run one role change; its result, or {"error": ...}. The daemon survives all."""
        try:
            result = action()
        except SkatError as e:
            report.warning(f"{what}: {e}")
            return {"error": str(e), "exit_code": e.exit_code}
        except Exception as e:  # a bug must not take the supervisor down
            report.error(f"{what}: internal error: {e!r}")
            return {"error": f"internal error: {e!r}"}
        finally:
            self.refresh_state()
        return result

    def handle_request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        op = msg.get("op")
        if op == "set":
            return self.apply("vrrp set", lambda: role.set_role(
                str(msg.get("role")), str(msg.get("cause") or "cli"),
                force=bool(msg.get("force"))))
        if op == "reload":
            path = str(msg.get("config") or self.config_path)
            return self.apply("reload", lambda: role.reload(path))
        if op == "status":
            return self.status()
        return {"error": f"unknown op {op!r}; expected set, reload or status"}

    def handle_fifo(self, now: float) -> None:
        assert self.fifo is not None
        events, eof = self.fifo.read_events()
        # Only the latest state of each instance matters: older events in the same batch
        # are already history, and applying an obsolete MASTER would announce a gateway
        # this appliance no longer is.
        latest: dict[str, keepalived_fifo.Event] = {}
        superseded = 0  # events of our instance read in this batch
        ours = self._configured("vrrp_instance", "skat_plugin")
        for ev in events:
            if ev.name != ours:
                # Another instance of the same keepalived (e.g. a management address)
                # must not move the data plane.
                if ev.name not in self.foreign_instances:
                    self.foreign_instances.add(ev.name)
                    report.warning(f"keepalived instance {ev.name!r} is not {ours!r} "
                                   f"(vrrp_instance): its events are ignored",
                                   cause="keepalived")
                continue
            latest.pop(ev.name, None)
            latest[ev.name] = ev
            superseded += 1
        if superseded > len(latest):
            report.event(f"keepalived FIFO: {superseded - len(latest)} superseded "
                         f"event(s) skipped", cause="keepalived")
        for ev in latest.values():
            new_role = role.KEEPALIVED_ROLE.get(ev.state)
            if new_role is None:
                continue
            self.apply(f"keepalived {ev.name} {ev.state}", lambda r=new_role, s=ev.state:
                       role.set_role(r, "keepalived", keepalived_state=s))
        if latest:
            self.warn_if_unwatched()
        if eof:
            # keepalived closed the FIFO: it exited, or it reloads (it closes and reopens
            # the FIFO on SIGHUP). That alone proves nothing; a crash is the pid watch's to
            # see. Reopen, so that poll() stops reporting the hang-up.
            report.event("keepalived closed its notify FIFO (a reload or an exit)",
                         cause="keepalived")
            self.fifo.open()

    def warn_if_unwatched(self) -> None:
        """keepalived speaks, yet no watched pid file shows a live process: say so once."""
        if self.warned_unwatched or any(w.alive for w in self.pidwatches):
            return
        self.warned_unwatched = True
        files = ", ".join(str(w.path) for w in self.pidwatches) or "none"
        report.warning(f"keepalived writes the notify FIFO but no watched pid file ({files}) "
                       f"names a live process: a crash of keepalived would not be seen; set "
                       f"vrrp_election_pidfile to its VRRP child's pid file",
                       cause="election-unwatched")

    def check_election(self) -> None:
        """Every watched pid file; a process seen alive and gone with no successor = lost."""
        before = [w.seen for w in self.pidwatches]
        for w in self.pidwatches:
            if w.check():
                self.election_lost(f"process of {w.path} died")
        if [w.seen for w in self.pidwatches] != before:
            self.save_election()

    def save_election(self) -> None:
        """What the watches saw, so that a restarted daemon can tell that keepalived died
        while it was down (it would otherwise only know "not seen yet")."""
        seen = {str(w.path): list(w.seen) for w in self.pidwatches if w.seen}
        atomicfile.write(self.run_dir / "election.json", json.dumps(seen))

    def restore_election(self) -> None:
        try:
            seen = json.loads((self.run_dir / "election.json").read_text())
        except (OSError, ValueError):
            return
        for w in self.pidwatches:
            ident = seen.pop(str(w.path), None)
            if ident:
                w.seen, w.ever_seen = (int(ident[0]), int(ident[1])), True
        if seen:  # vrrp_election_pidfile changed while the daemon was down
            report.warning(f"forgot election process(es) seen at {', '.join(seen)}: not "
                           f"watched any more (vrrp_election_pidfile changed)",
                           cause="election-unwatched")

    def election_lost(self, why: str) -> None:
        """keepalived/ucarp is gone with no stop event: the peer takes over; be silent."""
        self.metrics_dirty = True
        self.refresh_state()
        if self.role != MASTER or self.cfg is None or not self.cfg.vrrp_enabled:
            report.warning(f"election process gone ({why}); role {self.role}: nothing to do")
            return
        report.error(f"election process gone ({why}) while master: stepping down to backup",
                     role=BACKUP, previous_role=MASTER, cause="election-lost")
        st = statefile.load() or {}
        if st.get("keepalived"):
            # Record it as keepalived's last word, so that a notify_master script still in
            # flight from before the crash is stale and ignored.
            self.apply("step down", lambda: role.set_role(
                BACKUP, "election-lost", keepalived_state="STOP"))
        else:
            self.apply("step down", lambda: role.set_role(BACKUP, "election-lost", force=True))

    # -- status ------------------------------------------------------------------------------
    def election_alive(self) -> bool | None:
        known = [w.alive for w in self.pidwatches if w.alive is not None]
        if not known:
            return None
        return all(known)

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "role": self.role, "since": self.since,
                "split_brain": self.sb.active, "split_brain_since": self.sb.since,
                "election_alive": self.election_alive(),
                "port_problems": self.port_problems,
                "awaiting_election": self.awaiting_election,
                "fifo": str(self.fifo.path) if self.fifo else None,
                "watch_pidfiles": [str(w.path) for w in self.pidwatches],
                "announcement_rounds": self.announcer.rounds if self.announcer else 0,
                "router_advertisements": self.advertiser.counters() if self.advertiser else {},
                "table_sync": self.table_sync.counters() if self.table_sync else {},
                "role_changes": self.role_changes, "requests": self.requests,
                "rule_repairs": self.repairs_total,
                "updated": _now_iso()}

    def publish(self, counters: bool = False) -> None:
        """daemon.json (read by `vrrp show`) and systemd's STATUS, written when something in
        them changed (not at every tick of a timer). A refresh round of the announcer (every
        vrrp_garp_refresh) is not such a change: its count goes out with the next one, or
        with the metrics (counters=True, every metrics.REFRESH seconds)."""
        st = self.status()
        news = {k: v for k, v in st.items() if k not in ("updated", "announcement_rounds")}
        if self.announcer is not None:
            news["burst_rounds"] = self.announcer.burst_rounds
        content = json.dumps(news, sort_keys=True)
        if content == self.published and not (
                counters and st["announcement_rounds"] != self.published_rounds):
            return
        self.published_rounds = st["announcement_rounds"]
        self.published = content
        atomicfile.write(self.run_dir / "daemon.json", json.dumps(st, sort_keys=True))
        alive = {True: "alive", False: "GONE", None: "not seen"}[st["election_alive"]]
        self.notifier.status(f"role={self.role} since={self.since or '-'} "
                             f"split_brain={'YES' if self.sb.active else 'no'} "
                             f"election={alive} "
                             f"ports={'; '.join(self.port_problems) or 'ok'}")

    def write_metrics(self) -> None:
        if not self.opts.metrics_file:
            return
        try:
            text = metrics.render(role.show(self._subscriber_counts()), self.status(),
                                  self.role_changes)
            metrics.write(self.opts.metrics_file, text)
        except Exception as e:  # metrics must never stop the supervisor
            report.warning(f"metrics file {self.opts.metrics_file}: {e}")

    def _subscriber_counts(self) -> dict[str, Any] | None:
        """The gateway's table sizes, counted at most every COUNT_EVERY seconds."""
        if self.cfg is None or not self.cfg.terminates:
            return None
        now = time.monotonic()
        if self.subscriber_counts is None or now - self.subscriber_counts[0] > COUNT_EVERY:
            from .gateway import subscribers

            self.subscriber_counts = (now, subscribers.count())
        return self.subscriber_counts[1]

    def _look_for_foreign_frames(self) -> None:
        """Only an elected master can see another master. Awaiting the election, a second
        master on the wire is SKAT's documented start window (the real master
        refreshing), and in backup it is the master: neither is a split brain."""
        if self.foreign:
            self.foreign.look(self.role == MASTER and not self.awaiting_election,
                              time.monotonic())

    @staticmethod
    def _foreign_frames() -> int | None:
        from . import nftapply  # the fallback's look, without NFLOG

        return nftapply.read_counter("foreign_master_frames")

    def on_split_brain(self, change: splitbrain.Change, watch: splitbrain.Watch) -> None:
        now = time.monotonic()
        if change.raised:
            where = f" on {', '.join(sorted(watch.ports))}" if watch.ports else ""
            report.error(f"split brain: another master sends from the virtual MAC "
                         f"({change.new_frames} frame(s) arrived{where})",
                         role=self.role, cause="split-brain", split_brain=1,
                         foreign_frames=change.new_frames)
        elif change.cleared:
            report.event(f"split brain over (no frame from another master for "
                         f"{watch.window:g} s): announcing again", role=self.role,
                         cause="split-brain-cleared", split_brain=0)
            if self.role == MASTER and self.announcer and self.cfg:
                self.refresh_state()  # never announce a role another process just left
                self.announcer.start(announce.Plan.from_config(self.cfg), now)
        self.metrics_dirty = True
        self.judge()

    def check_rules(self, now: float) -> None:
        """The rule set changed (any writer): are the plugin's tables still what its last
        change loaded? If not, load them again, report it, and back off from a writer that
        keeps undoing the repair."""
        if now < self.repair_not_before:
            if self.ruleset_watch:
                self.ruleset_watch.check_at(self.repair_not_before)
            return
        try:
            self.expected, what = role.keep(self.expected)
        except SkatError as e:
            report.error(f"rules could not be repaired: {e}", role=self.role,
                         cause="rules-repair-failed")
            self.rules_problem = f"the plugin's rules could not be repaired: {e}"
            self.judge()
            return
        except Exception as e:  # a bug must not take the supervisor down
            report.error(f"rules check: internal error: {e!r}")
            return
        if self.rules_problem:
            self.rules_problem = None
            self.judge()
        if what is None:
            return
        self.repairs_total += 1
        self.metrics_dirty = True
        self.repairs = [t for t in self.repairs if now - t < REPAIR_WINDOW] + [now]
        report.warning(f"rules repaired: {what}; the {self.role} rule set is loaded again",
                       role=self.role, cause="rules-repaired")
        if len(self.repairs) > REPAIR_BURST:
            self.repair_backoff = min(REPAIR_BACKOFF_MAX, max(1.0, 2 * self.repair_backoff))
            self.repair_not_before = now + self.repair_backoff
            report.error(f"another writer keeps changing the plugin's rules "
                         f"({len(self.repairs)} repairs within {REPAIR_WINDOW:g} s): the next "
                         f"repair waits {self.repair_backoff:g} s", role=self.role,
                         cause="rules-flapping")
        elif len(self.repairs) == 1:
            self.repair_backoff = 0.0

    def check_ports(self) -> None:
        """Report each change of the ports' fitness once (the journal, STATUS, metrics).

        Failover on a port failure is keepalived's job (track_interface and the track
        file, judged first); this makes the cause visible to the operator.
        """
        self.judge()
        if self.cfg is None:
            return
        found = ports.problems(self.cfg.pairs)
        if found == self.port_problems:
            return
        fixed = [p for p in self.port_problems if p not in found]
        new = [p for p in found if p not in self.port_problems]
        self.port_problems = found
        self.metrics_dirty = True
        for problem in new:
            report.error(f"port problem: {problem}", role=self.role, cause="port-down",
                         port=problem.split()[0])
        for problem in fixed:
            report.event(f"port recovered: {problem} no longer", role=self.role,
                         cause="port-up", port=problem.split()[0])

    def judge(self) -> None:
        """keepalived's track file follows the verdict (trackfile.py: written on a change)."""
        self.track_file.judge(self.cfg, self.rules_problem, self.sb.active, time.monotonic())

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        self.setup()
        assert self.server is not None and self.announcer is not None
        poller = select.poll()
        poller.register(wake_r, select.POLLIN)
        poller.register(self.server.fileno(), select.POLLIN)
        fifo_fd = -1
        if self.fifo:
            fifo_fd = self.fifo.fileno()
            poller.register(fifo_fd, select.POLLIN)
        self.publish()
        self.notifier.send("READY=1")
        report.event(f"daemon ready: role {self.role}, fifo "
                     f"{self.fifo.path if self.fifo else 'off'}, control {self.server.path}",
                     role=self.role, cause="daemon-start")

        now = time.monotonic()
        # What is left on a clock is what is periodic by nature: the master's refreshes,
        # the metrics file, systemd's watchdog, the end of a wait.
        timers = {"metrics": now, "watchdog": now}
        polled: dict[int, Any] = {}  # descriptor -> its event source
        while not self.stopping:
            polled = self._poll_sources(poller, polled)
            deadlines = [*timers.values(), self.announcer.next_due(), self._wait_ends(),
                         *(src.next_due() for src in self._sources())]
            first = min(d for d in deadlines if d is not None)
            # Nothing due: sleep until an event (poll without a timeout).
            timeout = None if first == math.inf else max(0.0, first - time.monotonic()) * 1000
            ready = dict(poller.poll(timeout))
            now = time.monotonic()
            for fd in ready:
                if fd in polled:
                    polled[fd].handle(fd, now)
            due = [src for src in self._sources()
                   if (at := src.next_due()) is not None and now >= at]
            if due:
                self.refresh_state()  # never act for a role another process just left
            for src in due:
                src.run(now)
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            if self.reload_requested:
                self.reload_requested = False
                self.apply("reload (SIGHUP)", lambda: role.reload(self.config_path))
            # A dead election first: a keepalived that died and came back must not have its
            # new MASTER applied and then undone by the old one's death.
            self.check_election()
            if fifo_fd in ready and self.fifo:
                self.handle_fifo(now)
                if self.fifo.fileno() != fifo_fd:  # reopened
                    poller.unregister(fifo_fd)
                    fifo_fd = self.fifo.fileno()
                    poller.register(fifo_fd, select.POLLIN)
            if self.server.fileno() in ready:
                for _ in range(16):  # bounded: timers must not starve under a flood
                    if not self.server.handle_one(self.handle_request):
                        break
            self._timers(timers, time.monotonic())
        report.event(f"daemon stopping (role {self.role}; rules stay loaded)",
                     role=self.role, cause="daemon-stop")
        self.notifier.send("STOPPING=1")
        return 0

    def _sources(self) -> list[Any]:
        return [src for src in (self.election_watch, self.file_watch, self.link_watch,
                                self.ruleset_watch, self.foreign, self.advertiser,
                                self.table_sync, self.track_file)
                if src is not None]

    def _poll_sources(self, poller: select.poll, polled: dict[int, Any]) -> dict[int, Any]:
        """Keep the poller in step with the sources' descriptors (they open and close with
        the role: the RS listeners exist only while master)."""
        wanted = {fd: src for src in self._sources() for fd in src.fds()}
        for fd in polled.keys() - wanted.keys():
            with contextlib.suppress(KeyError, ValueError):
                poller.unregister(fd)
        for fd in wanted.keys() - polled.keys():
            poller.register(fd, select.POLLIN)
        return wanted

    def _wait_ends(self) -> float | None:
        """When a start-rule master stops waiting for the election (a deadline, no poll)."""
        if not self.awaiting_election or self.cfg is None:
            return None
        return self.awaiting_since + ELECTION_GRACE + 3 * float(self.cfg["vrrp_advert_int"])

    def _timers(self, timers: dict[str, float], now: float) -> None:
        if self.announcer and self.announcer.next_due() is not None \
                and now >= self.announcer.next_due():
            self.refresh_state()  # never announce a role another process just left
            self.announcer.run(now)
        ends = self._wait_ends()
        if ends is not None and now >= ends:
            # The wait is bounded: keepalived may be broken, absent, or was already running
            # before this start and will not repeat itself. Then SKAT's rule stands.
            grace = ends - self.awaiting_since
            self.awaiting_since = now  # once; end_wait() changes state.json
            why = f"nothing from keepalived for {grace:.0f} s"
            if self.pidwatches and not self.election_alive():
                # The likely cause, named: on a running group this is a second master.
                why += (", and no election process runs (watched: "
                        f"{', '.join(str(w.path) for w in self.pidwatches)}; "
                        f"systemctl start keepalived)")
            self.apply("end of the wait for an election", lambda: role.end_wait(why))
        if self.metrics_dirty or now >= timers["metrics"]:
            self.metrics_dirty = False
            timers["metrics"] = now + metrics.REFRESH
            self.write_metrics()
            self.publish(counters=True)
        if self.notifier.watchdog is None:
            timers["watchdog"] = math.inf
        elif now >= timers["watchdog"]:
            timers["watchdog"] = now + self.notifier.watchdog
            self.notifier.send("WATCHDOG=1")
        self.publish()  # daemon.json follows what this turn of the loop changed, if anything

    def _on_stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _on_hup(self, signum: int, _frame: object) -> None:
        self.reload_requested = True


def main(argv: list[str] | None = None, config_path: str | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.verbose:
        os.environ["SKAT_LOG_STDERR"] = "1"
    from . import config
    daemon = Daemon(opts, config.config_path(config_path))
    try:
        return daemon.run()
    except SkatError as e:
        report.console(f"fdpi_cli daemon: {e}")  # priority err, in the journal too
        return e.exit_code
    except OSError as e:
        report.console(f"fdpi_cli daemon: {e}")
        return 1
    finally:
        daemon.teardown()


if __name__ == "__main__":  # python3 -m skat_plugin.daemon [options]
    sys.exit(main(sys.argv[1:]))
