"""Fail-open: the kernel takes packets away for the inspector only while it keeps its ports
in the kernel's @alive map (timeout 3 s). A thread renews them every HEARTBEAT_EVERY (a
netlink batch of ~40 us: kernel.heartbeat), but only while the inspector's loop has turned
within PROGRESS_LIMIT and its sockets lost nothing. A guardian child blocks on a pipe and
removes the ports the moment the inspector ends, however it ends. So a dead inspector lets
the traffic pass at once, a hung or drowning one within 3 s, uninspected and counted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
import time

from .. import packetsock, report
from . import HEARTBEAT_EVERY, kernel

CHECK_EVERY = 2.0  # s: the inspector's loop turns at least this often
PROGRESS_LIMIT = CHECK_EVERY + 1.0  # s: a loop that has not turned for this long is hung
BEHIND = 2.0  # s passed uninspected after the sockets lost packets


class FailOpen:
    def __init__(self, counters: dict[str, int]) -> None:
        self.counters = counters
        self.lock = threading.Lock()  # the ports, between the loop and the heartbeat
        self.ports: dict[str, int] = {}  # name -> mark: what the heartbeat renews
        self.ready = False  # the lists of the current configuration are loaded
        self.progress = time.monotonic()  # the loop's last turn
        self.behind_until = 0.0
        self.stopping = threading.Event()
        self.guardian: int | None = None

    def start(self) -> None:
        """The guardian (forked before any thread starts), then the heartbeat thread."""
        self._start_guardian()
        threading.Thread(target=self._beat, name="heartbeat", daemon=True).start()

    def set_ports(self, ports: dict[str, int]) -> None:
        with self.lock:
            old, self.ports = self.ports, ports
        if old:
            kernel.stop_heartbeat(old)
        self._tell_guardian(ports)

    def stop(self) -> None:
        self.stopping.set()
        self.set_ports({})

    def _beat(self) -> None:
        while not self.stopping.wait(HEARTBEAT_EVERY):
            with self.lock:
                names = dict(self.ports)
            now = time.monotonic()
            if not names or not self.ready:
                continue
            if now - self.progress > PROGRESS_LIMIT or now < self.behind_until:
                kernel.stop_heartbeat(names)  # fail open: the kernel lets packets pass
                continue
            kernel.heartbeat(names)

    def check_losses(self, socks: list[socket.socket]) -> None:
        """Packets the sockets dropped were taken away by the kernel and are lost (the
        subscriber sends them again): fall back to passing for a while."""
        lost = 0
        for sock in socks:
            with contextlib.suppress(OSError):
                stats = sock.getsockopt(packetsock.SOL_PACKET, packetsock.PACKET_STATISTICS, 8)
                lost += struct.unpack("II", stats)[1]
        if lost:
            self.counters["lost"] += lost
            self.behind_until = time.monotonic() + BEHIND
            with self.lock:
                names = dict(self.ports)
            kernel.stop_heartbeat(names)
            report.warning(f"inspector: {lost} selected packets lost (falling behind); "
                           f"passing uninspected for {BEHIND:g} s", cause="inspector")

    # -- the guardian: fail open the moment this process dies, however it dies ---------------
    def _start_guardian(self) -> None:
        """A child that blocks on a pipe (no CPU at all) and learns the ports from it; when
        the pipe closes (this process ended: a crash, SIGKILL, an exception) it removes the
        ports from @alive, so the kernel passes packets at once instead of a heartbeat
        timeout later."""
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the guardian
            os.close(w)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)  # stays until its parent is gone
            ports: dict[str, int] = {}
            code = 0
            try:
                with os.fdopen(r, "rb", buffering=0) as pipe:
                    for line in pipe:
                        ports = dict((name, int(mark, 16)) for name, mark in
                                     (item.split("=") for item in line.decode().split()))
                kernel.stop_heartbeat(ports)
            except Exception:  # a guardian never prints a traceback
                code = 1
            os._exit(code)
        os.close(r)
        self.guardian = w

    def _tell_guardian(self, ports: dict[str, int]) -> None:
        if self.guardian is None:
            return
        line = " ".join(f"{name}={mark:#x}" for name, mark in ports.items()) + "\n"
        with contextlib.suppress(OSError):
            os.write(self.guardian, line.encode())
