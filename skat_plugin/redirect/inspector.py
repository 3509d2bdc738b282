"""The inspector: decides what the kernel selected, and answers or lets it go on.

    fdpi_cli inspector        (units/skat-plugin-inspector.service; tests and containers)

The kernel (nft/redirect.nft.in) takes away the start of each HTTP request and TLS
ClientHello (and the next segments of its flow for a while), and TCP SYNs and data to a
blocked address, on the subscriber ports, and hands a copy to this process on the loopback
device, marked with its port. Every other packet never leaves the kernel. For each packet
handed over:

    to a blocked address            SYN: reset to the subscriber (the server never saw it);
                                    data to port 80: the notice (302/403), whatever it says
    HTTP request, blocked           302 to black_list_redirect (403 without it) to the
      (Host + path; http.py)        subscriber, with FIN; a reset to the server
    ClientHello, blocked name       a reset to the subscriber and one to the server
    a request or hello cut short    held (holds.py) until the flow's next segments complete
                                    it, then decided as a whole; reset when a bound is hit
    a Fast Open SYN with data       decided by its data
    anything else                   re-injected, unchanged, out of the paired uplink port
                                    (with bras_terminate_l2=1 and the frame addressed to
                                    bras_arp_mac: from bras_arp_mac to bras_gateway_mac,
                                    as the gateway would have sent it)

Every frame goes out through one packet socket marked with vrrp_socket_mark: in backup the
guard drops it at the port (nft/backup.nft), whatever this process still believes.

Fail-open (failopen.py): a dead inspector lets the traffic pass at once, a hung or drowning
one within 3 s, uninspected and counted. Fail-closed: what the kernel decides alone
(addresses on black_list_ip_file) stays blocked without this process (nft/redirect.nft.in).
The verdicts are decide.py's; this module follows the configuration and the lists, and runs
the daemon's loop (daemon/loop.py) with three sources: the ports' sockets, the wake-ups
(inotify, the list loader) and a check every CHECK_EVERY.

What it reads: the configuration the plugin last loaded (state.json, as `vrrp set` does),
so `fdpi_cli reload` reaches it; the black-list files, read again when one changes (hot:
the new lists replace the old in one step, a malformed file keeps the old lists and logs
file and line; the address sets in the kernel are replaced in one transaction). It learns
of both by inotify, at once; a check every CHECK_EVERY stays as a safety net. Counters go
to $SKAT_RUN_DIR/inspector.json every CHECK_EVERY, within STATUS_SOON of a decision, and as
soon as a list is read, with the files' stamp it was read from (`lists_stamp`): `fdpi_cli
reload` waits for that stamp, so the lists are in effect when it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import atomicfile, packetsock, report, state
from ..announce import Sender
from ..daemon.loop import Loop
from ..watch import Deadline, Source, inotify
from . import enabled, kernel, lists, port_mark
from .apply import STATUS_FILE
from .decide import Decider, Port
from .failopen import CHECK_EVERY, FailOpen

RCVBUF = 4 << 20
READ_BATCH = 256
STATUS_SOON = 0.1      # s: after a decision, the status file is written within this


def _filter(mark: int) -> list[packetsock.Instruction]:
    """Classic BPF: only the copies the kernel made for this port (mark), as sent (the
    loopback device also receives each one back)."""
    ld_w, jeq, ret = packetsock.LD_W_ABS, packetsock.JEQ_K, packetsock.RET_K
    return [
        (ld_w, 0, 0, (packetsock.SKF_AD_OFF + packetsock.SKF_AD_MARK) & 0xFFFFFFFF),
        (jeq, 0, 3, mark),
        (ld_w, 0, 0, (packetsock.SKF_AD_OFF + packetsock.SKF_AD_PKTTYPE) & 0xFFFFFFFF),
        (jeq, 0, 1, packetsock.PACKET_OUTGOING),
        (ret, 0, 0, 0xFFFF),
        (ret, 0, 0, 0),
    ]


def open_port_socket(mark: int) -> Any:
    return packetsock.open_filtered("lo", _filter(mark), rcvbuf=RCVBUF)


class Inspector:
    """The configuration and the lists the decisions follow, and the status file."""

    priority = 50

    def __init__(self) -> None:
        self.decider = Decider()
        self.failopen = FailOpen(self.decider.counters)
        self.list_stamp: tuple = ()
        self.list_error: str | None = None
        self.read_stamp: tuple | None = None  # the files' stamp the lists were last read from
        self.state_stamp: tuple[int, int, int] | None = None
        self.ports: dict[int, Port] = {}
        self.loader: threading.Thread | None = None
        self.status_at = 0.0
        self.decided = False  # since the status file was last written
        self.look = True  # a file changed or the loader finished: look at once
        # Wake-ups: the run directory and the list files' directories change (inotify); the
        # list loader is done (a pipe). Either makes the loop look at once.
        self.notify = inotify.Inotify()
        self.watched: set[str] = set()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sources = (_Ports(self), _Wakeups(self), _Checks(self))

    @property
    def cfg(self) -> Any:
        return self.decider.cfg

    # -- the loop's view -----------------------------------------------------------------------
    def sources(self) -> Iterable[Source]:
        return self._sources

    def on_turn(self, now: float) -> None:
        self.failopen.progress = now

    def end_of_turn(self, now: float) -> None:
        if self.look:
            self.look = False
            self.check_config()
            self.watch_files()
            self.check_lists()
            self.write_status()
        elif self.decided and now - self.status_at > STATUS_SOON:
            self.write_status()  # `vrrp show` is current within STATUS_SOON

    # -- configuration --------------------------------------------------------------------
    def check_config(self) -> None:
        stamp = state.signature()
        if stamp == self.state_stamp:
            return
        self.state_stamp = stamp
        cfg = state.load_config() if stamp else None
        if cfg is not None and not enabled(cfg.values):
            cfg = None
        old = self.cfg
        if cfg is not None and old is not None and cfg.values == old.values:
            return
        self._close_ports()
        self.decider.cfg = cfg
        if cfg is None:
            return
        if self.decider.sender is None:
            self.decider.sender = Sender(cfg["vrrp_socket_mark"])
        else:
            self.decider.sender.set_mark(cfg["vrrp_socket_mark"])
        for index, (port, uplink) in enumerate(cfg.pairs):
            sock = open_port_socket(port_mark(index))
            self.ports[sock.fileno()] = Port(port, uplink, port_mark(index), sock)
        self.failopen.ready = False  # no heartbeat before the lists of this configuration
        self.failopen.set_ports({p.name: p.mark for p in self.ports.values()})
        self.list_stamp = ()  # read the lists of this configuration
        report.event(f"inspector: inspecting {', '.join(cfg.in_ports)}", cause="inspector")

    def check_lists(self) -> None:
        """A changed list file is read in a thread of its own (100,000 entries take about a
        second): meanwhile the loop goes on deciding with the old lists, and the new ones
        replace them in one step."""
        if self.cfg is None or (self.loader is not None and self.loader.is_alive()):
            return
        stamp = lists.stamp(self.cfg.values)
        if stamp == self.list_stamp:
            return
        self.list_stamp = stamp
        self.loader = threading.Thread(target=self._load_lists, args=(self.cfg, stamp),
                                       name="lists", daemon=True)
        self.loader.start()

    def _load_lists(self, cfg: Any, stamp: tuple) -> None:
        started = time.monotonic()
        try:
            new = lists.load(cfg.values)
            kernel.load_addresses(new)
        except (lists.ListError, OSError) as e:
            self.list_error, self.read_stamp = str(e), stamp
            report.error(f"inspector: black lists not loaded, the old ones stay: {e}",
                         cause="inspector")
            self.wake()
            return
        if cfg is not self.cfg:  # the configuration changed meanwhile: read again
            self.wake()
            return
        self.decider.lists, self.list_error, self.read_stamp = new, None, stamp
        self.failopen.ready = True
        report.event(f"inspector: black lists loaded in {time.monotonic() - started:.3f} s "
                     f"({new.entries})", cause="inspector")
        self.wake()

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_w, b"!")

    def reread(self) -> None:
        """SIGHUP: read the lists again."""
        self.list_stamp = ()
        self.look = True

    def watch_files(self) -> None:
        """inotify on the run directory (state.json) and on each list file's directory
        (files are often replaced by rename; a directory watch sees that)."""
        dirs = {os.path.dirname(f) for f in self.files_of_interest()}
        for d in dirs - self.watched:
            if self.notify.watch(Path(d), inotify.CHANGES | inotify.IN_ATTRIB):
                self.watched.add(d)

    def files_of_interest(self) -> set[str]:
        """state.json and the configured list files, as absolute paths."""
        files = {str(state.run_dir() / "state.json")}
        if self.cfg is not None:
            files |= {os.path.abspath(p) for p in lists.paths(self.cfg.values)}
        return files

    def _close_ports(self) -> None:
        ports, self.ports = self.ports, {}
        self.failopen.set_ports({})
        for p in ports.values():
            p.sock.close()

    def close(self) -> None:
        self.failopen.stop()
        self._close_ports()
        self.write_status()

    # -- status ---------------------------------------------------------------------------------
    def write_status(self) -> None:
        self.status_at = time.monotonic()
        self.decided = False
        status = {"pid": os.getpid(), "updated": time.time(),
                  "counters": self.decider.counters, "lists": self.decider.lists.entries,
                  "list_error": self.list_error, "lists_stamp": self.read_stamp,
                  "ports": [p.name for p in self.ports.values()]}
        with contextlib.suppress(OSError):
            state.run_dir().mkdir(parents=True, exist_ok=True)
            atomicfile.write(state.run_dir() / STATUS_FILE, json.dumps(status))


class _Ports(Source):
    """The ports' sockets: each readable one is read up to READ_BATCH frames a turn."""

    def __init__(self, owner: Inspector) -> None:
        self.owner = owner

    def fds(self) -> list[int]:
        return list(self.owner.ports)

    def handle(self, fd: int, now: float) -> None:
        port = self.owner.ports[fd]
        for _ in range(READ_BATCH):
            try:
                frame = port.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.ENETDOWN:
                    report.warning(f"inspector: {port.name}: {e.strerror or e}")
                break
            self.owner.decider.decide(port, frame)
        self.owner.decided = True


class _Wakeups(Source):
    """inotify (a file of interest changed; not the status file written beside state.json)
    and the loader's pipe (the lists are read): a look at the end of the turn."""

    def __init__(self, owner: Inspector) -> None:
        self.owner = owner

    def fds(self) -> list[int]:
        return [self.owner.notify.fileno(), self.owner.wake_r]

    def handle(self, fd: int, now: float) -> None:
        owner = self.owner
        if fd == owner.wake_r:
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 4096)
            owner.look = True
            return
        files = owner.files_of_interest()
        if any(d is None or os.path.join(d, name) in files
               for d, name, _ in owner.notify.read()):
            owner.look = True


class _Checks(Deadline):
    """Every CHECK_EVERY: the sockets' losses, holds that waited too long, and a look (the
    safety net behind inotify). It also keeps the loop turning for the heartbeat's sake."""

    def __init__(self, owner: Inspector) -> None:
        self.owner = owner
        self.at = 0.0

    def next_due(self) -> float | None:
        return self.at

    def run(self, now: float) -> None:
        owner = self.owner
        self.at = now + CHECK_EVERY
        owner.failopen.check_losses([p.sock for p in owner.ports.values()])
        owner.decider.expire_holds(list(owner.ports.values()))
        owner.look = True


LOCK_FILE = "inspector.lock"


def _lock() -> int | None:
    """One inspector per run directory (two would answer every blocked request twice and
    reset the server twice): an flock held for the process's life, released by the kernel
    when it ends, however it ends. None, with the reason on stderr, when another holds it."""
    import fcntl
    import sys

    path = state.run_dir() / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        print(f"fdpi_cli inspector: another inspector (pid {other}) is running for "
              f"{state.run_dir()}; refusing to start a second one", file=sys.stderr)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def main(argv: list[str], config_path: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fdpi_cli inspector",
        description="the black-list inspector (SKAT's DPI redirect); runs until SIGTERM. "
                    "It follows the configuration the plugin last loaded (fdpi_cli "
                    "start/reload) and the black-list files.")
    parser.parse_args(argv)
    lock = _lock()
    if lock is None:
        return 1
    inspector = Inspector()
    loop = Loop()
    loop.add(inspector)
    loop.on_signal(signal.SIGTERM, loop.stop)
    loop.on_signal(signal.SIGINT, loop.stop)
    loop.on_signal(signal.SIGHUP, inspector.reread)
    inspector.failopen.start()  # the guardian is forked before any thread starts
    try:
        loop.run()
    finally:
        inspector.close()
        loop.close()
    return 0
