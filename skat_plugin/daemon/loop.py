"""The daemon's loop: one thread, one poll(2), dispatch by priority. It names no subsystem.

What it is given are handlers (daemon/handler.py): each owns event sources (watch.Source:
descriptors to poll, a deadline of its own) and has a priority. One turn of the loop:

  1. poll every source's descriptors (and the wake pipe that signals write to), with no
     timeout when no source has a deadline: an idle loop sleeps until the kernel wakes it;
  2. the "before timers" hooks, once, when a deadline has passed (the context re-reads
     state.json there: no timer acts for a role another process just left);
  3. the work of the turn in priority order (lower first; equal priorities keep the order
     in which the handlers were added): each handler's per-turn look (on_turn), then the
     sources whose descriptor is readable, then those whose deadline has passed;
  4. each handler's end_of_turn, in priority order (the track file's verdict, daemon.json:
     written once a turn, only when something changed).

Ordering rules live in the priorities, not in the order of statements here (docs/daemon.md
lists them). Signals are delivered through the wake pipe and run their callbacks inside the
turn, never inside the signal handler.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ..watch import Source


class Owner(Protocol):
    """What the loop needs of a handler (the full interface is daemon/handler.py)."""

    priority: int

    def sources(self) -> Iterable[Source]: ...
    def on_turn(self, now: float) -> None: ...
    def end_of_turn(self, now: float) -> None: ...


class Loop:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.owners: list[Owner] = []
        self.before_timers: list[Callable[[], None]] = []
        self.stopping = False
        self.turns = 0  # turns run (a test's view of how often the loop woke)
        self._signals: dict[int, Callable[[], None]] = {}
        self._pending: list[int] = []
        self._poller = select.poll()
        self._polled: dict[int, tuple[int, Source]] = {}  # fd -> (owner index, source)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller.register(self._wake_r, select.POLLIN)

    # -- set-up ------------------------------------------------------------------------------
    def add(self, owner: Owner) -> None:
        self.owners.append(owner)

    def on_signal(self, signum: int, callback: Callable[[], None]) -> None:
        """callback() runs at the start of the next turn (the wake pipe ends the poll)."""
        self._signals[signum] = callback
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signum, self._caught)

    def _caught(self, signum: int, _frame: object) -> None:
        self._pending.append(signum)

    def stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stopping:
            self.turn()

    def turn(self, max_wait: float | None = None) -> None:
        """One turn; max_wait caps the sleep (seconds; tests), None sleeps until an event."""
        order = sorted(range(len(self.owners)), key=lambda i: self.owners[i].priority)
        sources = [(i, src) for i in order for src in self.owners[i].sources()]
        self._register(sources)
        deadlines = [d for _i, src in sources if (d := src.next_due()) is not None]
        first = min(deadlines, default=math.inf)
        wait = None if first == math.inf else max(0.0, first - self.clock())
        if max_wait is not None:
            wait = max_wait if wait is None else min(wait, max_wait)
        ready = self._poller.poll(None if wait is None else wait * 1000)
        self.turns += 1
        now = self.clock()
        if any(fd == self._wake_r for fd, _ev in ready):
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        while self._pending:
            callback = self._signals.get(self._pending.pop(0))
            if callback:
                callback()
        readable = {fd for fd, _ev in ready}
        due = [(i, src) for i, src in sources
               if (at := src.next_due()) is not None and now >= at]
        if due:
            for hook in self.before_timers:
                hook()
        # (priority rank, phase, n): per-turn looks, then readable descriptors, then timers.
        rank = {i: r for r, i in enumerate(order)}
        work: list[tuple[int, int, int, Callable[[], None]]] = []
        for i in order:
            work.append((rank[i], 0, 0, lambda o=self.owners[i]: o.on_turn(now)))
        for n, (fd, (i, src)) in enumerate(self._polled.items()):
            if fd in readable:
                work.append((rank[i], 1, n, lambda s=src, f=fd: _handle_if_open(s, f, now)))
        for n, (i, src) in enumerate(due):
            work.append((rank[i], 2, n, lambda s=src: _run_if_due(s, now)))
        for *_key, call in sorted(work, key=lambda w: w[:3]):
            call()
        for i in order:
            self.owners[i].end_of_turn(self.clock())

    def _register(self, sources: list[tuple[int, Source]]) -> None:
        """Keep the poller in step with the sources' descriptors: they open and close with
        the role and the configuration (the RS listeners exist only while master)."""
        wanted = {fd: (i, src) for i, src in sources for fd in src.fds()}
        for fd in self._polled.keys() - wanted.keys():
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(fd)
        for fd in wanted.keys() - self._polled.keys():
            self._poller.register(fd, select.POLLIN)
        self._polled = wanted


def _handle_if_open(source: Source, fd: int, now: float) -> None:
    """An earlier piece of work in the same turn may have closed the descriptor (a role
    change closes the RS listeners, a reload renews the sync's socket)."""
    if fd in source.fds():
        source.handle(fd, now)


def _run_if_due(source: Source, now: float) -> None:
    """An earlier piece of work in the same turn may have moved or cleared the deadline."""
    at = source.next_due()
    if at is not None and now >= at:
        source.run(now)
