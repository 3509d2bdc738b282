"""fdpi_cli daemon: the supervising process (docs/daemon.md).

One thread, one loop (loop.py) that names no subsystem, and one handler per subsystem, each
owning its event sources, timers, state and part of the status. Everything that changes
the role is applied one at a time, in the order it arrived. The handlers, with the
priority that orders their work within a turn:

     5 statefile   state.json written by another process (inotify)
    10 election    keepalived's election process (pidfd, pid file), the start-rule wait
    15 mismatch    keepalived's word against the role: a lasting difference is an alarm
    20 orders      keepalived's notify FIFO, the control socket, SIGHUP
    30 repair      rules others removed, loaded again (nftables' events)
    30 ports       the bridge ports' links (rtnetlink)
    40 splitbrain  frames from another master (NFLOG)
    50 presence    GARP/NA, Router Advertisements, RS answers
    60 tablesync   the subscriber table to the other appliances
    90 trackfile   keepalived's track file: the verdict, once a turn when a fact changed
   100 publish     daemon.json, systemd (STATUS, watchdog), the metrics file

A new event source is a watch/ module and a handler (or one more source of a handler),
plus one line in HANDLERS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys

from .. import atomicfile, control, metrics, report, state
from ..errors import SkatError
from .context import Context
from .election import ElectionHandler
from .handler import Handler
from .loop import Loop
from .mismatch import MismatchHandler
from .orders import DEFAULT_FIFO, OrdersHandler
from .ports import PortsHandler
from .presence import PresenceHandler
from .publish import PublishHandler
from .repair import RepairHandler
from .splitbrain import SplitBrainHandler
from .statefile import StateFileHandler
from .tablesync import TableSyncHandler
from .trackfile import TrackFileHandler

# In the order they are made: the track file's lock first (a guardian of an earlier daemon
# may still be writing), the orders' control socket before the watches.
HANDLERS = [TrackFileHandler, OrdersHandler, ElectionHandler, MismatchHandler, StateFileHandler,
            PresenceHandler, TableSyncHandler, PortsHandler, RepairHandler, SplitBrainHandler,
            PublishHandler]


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


class Daemon:
    """The assembly: a context, the handlers, a loop; the run directory's pid file."""

    def __init__(self, opts: argparse.Namespace, config_path: str) -> None:
        self.loop = Loop()
        self.ctx = Context(opts, config_path, self.loop)
        self.handlers: list[Handler] = []
        self.owns_run_dir = False  # set once our pid file is written

    def setup(self) -> None:
        run_dir = self.ctx.run_dir
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        other = state.daemon_pid()
        if other is not None and other != os.getpid():
            raise SkatError(f"another daemon (pid {other}) already runs for {run_dir}")
        # The pid file first: from now on `vrrp set` treats keepalived's FIFO state as final.
        atomicfile.write(run_dir / "daemon.pid", f"{os.getpid()}\n")
        self.owns_run_dir = True
        self.ctx.refresh()  # the loaded configuration names the FIFO and the pid files
        self.handlers = [make(self.ctx) for make in HANDLERS]
        for handler in self.handlers:
            self.loop.add(handler)
        self.loop.before_timers.append(self.ctx.refresh)
        self.ctx.attach(self.handlers)
        now = self.loop.clock()
        for handler in sorted(self.handlers, key=lambda h: h.priority):
            handler.start(now)

    def run(self) -> int:
        self.loop.on_signal(signal.SIGTERM, self.loop.stop)
        self.loop.on_signal(signal.SIGINT, self.loop.stop)
        self.setup()
        for handler in sorted(self.handlers, key=lambda h: h.priority):
            handler.end_of_turn(self.loop.clock())  # the verdict and status, before READY
        publish = next(h for h in self.handlers if isinstance(h, PublishHandler))
        publish.notifier.send("READY=1")
        st = self.ctx.status()
        report.event(f"daemon ready: role {self.ctx.role}, fifo {st['fifo'] or 'off'}, "
                     f"control {control.socket_path()}",
                     role=self.ctx.role, cause="daemon-start")
        self.loop.run()
        report.event(f"daemon stopping (role {self.ctx.role}; rules stay loaded)",
                     role=self.ctx.role, cause="daemon-stop")
        publish.notifier.send("STOPPING=1")
        return 0

    def teardown(self) -> None:
        # The track file first (unfit: no daemon judges any more), publishing last.
        for handler in sorted(self.handlers, key=lambda h: h.priority == 90, reverse=True):
            handler.close()
        self.loop.close()
        if not self.owns_run_dir:
            return  # another daemon's files
        for name in ("daemon.json", "daemon.pid"):
            with contextlib.suppress(OSError):
                (self.ctx.run_dir / name).unlink()


def main(argv: list[str] | None = None, config_path: str | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.verbose:
        os.environ["SKAT_LOG_STDERR"] = "1"
    from .. import config

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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
