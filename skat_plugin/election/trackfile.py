"""keepalived's track file: the daemon's verdict on this appliance's fitness to be master.

    $SKAT_RUN_DIR/keepalived.track      (default /run/skat-plugin/keepalived.track)

keepalived watches it (`track_file` with weight 0, docs/keepalived.md) by inotify and reads
the number at its start: 0 = fit, anything else = FAULT; the comment line after it says why,
for the operator. The daemon learns of every change that makes the verdict (the state file,
link events, rule repairs, split brain) and writes the file, atomically, only when the
verdict changes, saying so once in the journal. Nothing runs on a timer: keepalived used to
start the track script every second (a Python process a second, ~7 % of a core).

The verdict is verdict.verdict(), the one `fdpi_cli vrrp track` gives, from the daemon's own
facts: the loaded configuration (state.json), the ports (sysfs, at every link event), the
rules (the daemon keeps them; unfit only while a repair fails), and the split brain
(vrrp_split_brain_handover=1). A split brain keeps the appliance unfit for HOLD seconds
after it was last reported: becoming backup ends the daemon's look, and an instant "fit"
would take the master role straight back into the split.

"The supervising daemon is not running" is the verdict whenever no daemon judges, however
its life ended (keepalived reads a missing file as 0, fit, so the file is never removed):
  - a clean exit: close() writes it;
  - any other end (kill -9, a crash, the OOM killer): the guardian, started by start(),
    waits for the lock the daemon holds for its whole life (flock(1)); the kernel releases
    the lock however the daemon ends, and the guardian writes the verdict and exits. It
    ignores SIGTERM, so systemd's sweep of the unit's processes does not stop it first;
  - under systemd also ExecStopPost (`fdpi_cli vrrp track --require-daemon --write`),
    which writes it unless a live daemon holds the lock;
  - keepalived starting before any daemon wrote it: `init_file 1` creates it unfit.
While the daemon lives, the file is its own: a change by anyone else (an edit, a removal)
is undone at once (inotify on the run directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from .. import atomicfile, ports, report, state
from ..config import Config
from ..watch import Source
from ..watch.inotify import IN_CLOSE_WRITE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO, Inotify
from . import restart, splitbrain, verdict

NAME = "keepalived.track"
HOLD = splitbrain.WINDOW  # s a split brain's verdict outlives its last report
_CHANGED = IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM

# The guardian: sh ignores the signals that end a session or a service (ignored signals stay
# ignored across exec), flock(1) blocks until the daemon's lock is free, then the verdict
# replaces the file as atomically as the daemon's own writes do (a rename).
_GUARDIAN = ('trap "" TERM HUP INT; exec /usr/bin/flock "$1" /bin/sh -c '
             '\'printf %s "$3" > "$2.gone" && exec /bin/mv -f "$2.gone" "$2"\' guard "$@"')


def path() -> Path:
    return state.run_dir() / NAME


def lock_path(file: Path) -> Path:
    """Held by the daemon for its whole life: free means no daemon keeps `file`."""
    return file.with_name(file.name + ".lock")


def content(reason: str | None) -> str:
    """The file's text: keepalived reads the leading number, an operator the line after."""
    if reason is None:
        return "0\n# fit to be master\n"
    return f"1\n# unfit to be master: {reason}\n"


class TrackFile(Source):
    """The verdict, written when it changes; an event source of the daemon's loop (the
    guardian's pidfd, inotify on the file's directory, the end of a split brain's hold)."""

    def __init__(self, file: Path | None = None) -> None:
        self.path = file or path()
        self.lock_path = lock_path(self.path)
        self.written: str | None = None  # the text last written
        self.reason: str | None = None
        self.inputs: tuple[Config | None, str | None, bool, str | None] = \
            (None, None, False, None)
        self.split_until = 0.0  # monotonic end of a split brain's hold
        self.lock = -1
        self.guardian: subprocess.Popen[bytes] | None = None
        self.pidfd = -1
        self.inotify: Inotify | None = None

    # -- life --------------------------------------------------------------------------------
    def start(self) -> None:
        """Take the lock for the daemon's life and start the guardian that waits for it."""
        self.lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # Blocking: a guardian of an earlier daemon may be writing its verdict (milliseconds).
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        if not restart.under_systemd():  # systemd's ExecStopPost is the guardian there
            self._spawn_guardian()
        self.inotify = Inotify()
        self.inotify.watch(self.path.parent, _CHANGED)

    def _spawn_guardian(self) -> None:
        # close_fds (the default): the guardian must not hold the lock's descriptor itself.
        self.guardian = subprocess.Popen(
            ["/bin/sh", "-c", _GUARDIAN, "guard", str(self.lock_path), str(self.path),
             content(verdict.DAEMON_DOWN)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.pidfd = os.pidfd_open(self.guardian.pid)

    def close(self) -> None:
        """The daemon ends: unfit, written by the daemon itself; the guardian is not needed."""
        if self.lock < 0:
            return  # never started: another daemon's file, or none
        try:
            if restart.under_systemd():
                # ExecStopPost decides, after this process: at once, or restart.GRACE s
                # later when systemd starts the daemon again (a postinst's restart job may
                # not show yet from here).
                report.event("daemon ending under systemd: its ExecStopPost writes the "
                             "verdict (at once for a stop, after a grace for a restart)",
                             cause="daemon-restart" if restart.expected() else "daemon-stop")
            else:
                self._write(verdict.DAEMON_DOWN)
        except OSError:
            self.guardian = None  # let it try, once the lock is free
        if self.guardian is not None:
            with contextlib.suppress(ProcessLookupError):
                self.guardian.send_signal(signal.SIGKILL)  # it ignores SIGTERM
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.guardian.wait(timeout=5)
        for fd in (self.pidfd, self.lock):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pidfd = self.lock = -1
        if self.inotify:
            self.inotify.close()

    # -- the verdict -------------------------------------------------------------------------
    def judge(self, cfg: Config | None, rules: str | None, split_brain: bool,
              now: float, election: str | None = None) -> None:
        """Called by the daemon whenever one of its facts may have changed."""
        if self.lock < 0:
            return
        self.inputs = (cfg, rules, split_brain, election)
        if split_brain:
            self.split_until = now + HOLD
        elif now >= self.split_until:
            self.split_until = 0.0
        problems = ports.problems(cfg.pairs) if cfg is not None else []
        reason = verdict.verdict(cfg, rules, problems, None, split_brain or self.held(),
                                 election)
        if reason == verdict.SPLIT_BRAIN and not split_brain:
            reason += f" (held {HOLD:g} s after the last report)"
        if content(reason) == self.written:
            return
        try:
            self._write(reason)
        except OSError as e:  # the next judgement tries again; the supervisor carries on
            report.error(f"cannot write {self.path}: {e}; keepalived still reads the "
                         f"previous verdict", cause="track-file")
            return
        was, self.reason = self.reason, reason
        if reason is None:
            report.event("fit to be master" + (f" again ({was}: no longer)" if was else ""),
                         cause="fit")
        elif was is None:
            report.warning(f"unfit to be master: {reason}", cause="unfit")
        else:
            report.event(f"still unfit to be master: {reason}", cause="unfit")

    def held(self) -> bool:
        """A split brain's verdict outlives its report (see the module's docstring)."""
        return self.split_until > 0 and not self.inputs[2]

    def _write(self, reason: str | None) -> None:
        text = content(reason)
        atomicfile.write(self.path, text)  # keepalived reads it whole or not at all
        self.written = text

    # -- as an event source ------------------------------------------------------------------
    def fds(self) -> list[int]:
        return [fd for fd in (self.pidfd, self.inotify.fileno() if self.inotify else -1)
                if fd >= 0]

    def handle(self, fd: int, now: float) -> None:
        if fd == self.pidfd:
            self._guardian_ended()
        elif self.inotify and fd == self.inotify.fileno():
            names = {name for _d, name, _m in self.inotify.read()}
            if (self.path.name in names or "" in names) and self.written is not None \
                    and _read(self.path) != self.written:
                report.warning(f"{self.path} was changed or removed by someone else: the "
                               f"daemon's verdict is written again", cause="track-file")
                self._write(self.reason)

    def _guardian_ended(self) -> None:
        """The guardian cannot get the lock while we hold it: it was killed, or cannot run."""
        assert self.guardian is not None
        status = self.guardian.wait()
        os.close(self.pidfd)
        self.pidfd = -1
        if status >= 0:
            # It ended by itself (flock(1) missing?): starting it again would only spin.
            report.error(f"the track file's guardian cannot run (exit status {status}): if "
                         f"this daemon is killed, {self.path} keeps its last verdict",
                         cause="track-file")
            return
        report.warning(f"the track file's guardian (pid {self.guardian.pid}) was killed "
                       f"(signal {-status}): started again", cause="track-file")
        self._spawn_guardian()

    def next_due(self) -> float | None:
        return self.split_until if self.held() else None

    def run(self, now: float) -> None:
        cfg, rules, split_brain, election = self.inputs
        self.judge(cfg, rules, split_brain, now, election)


def _read(file: Path) -> str | None:
    try:
        return file.read_text()
    except OSError:
        return None


def write_unless_kept(judge: Callable[[], str | None]) -> tuple[bool, str | None]:
    """Write judge()'s verdict unless a live daemon holds the lock (the file is its own):
    (True, None) when kept, else (False, the verdict written). For `fdpi_cli vrrp track
    --write`, which skat-plugin-daemon.service runs after the daemon, however it ended."""
    file = path()
    lock = os.open(lock_path(file), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, None
        reason = judge()
        atomicfile.write(file, content(reason))
        return False, reason
    finally:
        os.close(lock)
