"""The daemon's loop with fake sources: no root, no kernel, only the ordering rules.

The rules the daemon relies on (docs/daemon.md): the election is looked at before any
order; state is refreshed before any due timer; at most CONTROL_PER_TURN control requests
a turn; one publish a turn; an idle loop sleeps without a timeout.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from skat_plugin.daemon.loop import Loop
from skat_plugin.daemon.orders import CONTROL_PER_TURN, _Control
from skat_plugin.watch import Source


class Pipe(Source):
    """A readable descriptor: a pipe the test writes to."""

    def __init__(self, log: list[str], name: str) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK)
        self.log, self.name = log, name

    def poke(self) -> None:
        os.write(self.w, b"x")

    def fds(self) -> list[int]:
        return [self.r]

    def handle(self, fd: int, now: float) -> None:
        os.read(self.r, 4096)
        self.log.append(self.name)


class Timer(Source):
    def __init__(self, log: list[str], name: str, at: float | None) -> None:
        self.log, self.name, self.at = log, name, at

    def fds(self) -> list[int]:
        return []

    def handle(self, fd: int, now: float) -> None:
        raise AssertionError("a timer has no descriptor")

    def next_due(self) -> float | None:
        return self.at

    def run(self, now: float) -> None:
        self.at = None
        self.log.append(self.name)


class Owner:
    def __init__(self, priority: int, sources: list[Source], log: list[str] | None = None,
                 name: str = "") -> None:
        self.priority = priority
        self._sources = sources
        self.log, self.name = log, name
        self.ends = 0

    def sources(self) -> Iterable[Source]:
        return self._sources

    def on_turn(self, now: float) -> None:
        if self.log is not None and self.name:
            self.log.append(f"{self.name}:turn")

    def end_of_turn(self, now: float) -> None:
        self.ends += 1


def test_the_election_is_looked_at_before_any_order() -> None:
    log: list[str] = []
    fifo, pidfd = Pipe(log, "fifo"), Pipe(log, "pidfd")
    loop = Loop()
    # Added in the "wrong" order: priorities decide, not the order of registration.
    loop.add(Owner(20, [fifo]))
    loop.add(Owner(10, [pidfd], log, "election"))
    fifo.poke()
    pidfd.poke()
    loop.turn(max_wait=1.0)
    assert log == ["election:turn", "pidfd", "fifo"]


def test_state_is_refreshed_once_before_due_timers_and_not_otherwise() -> None:
    log: list[str] = []
    loop = Loop()
    loop.before_timers.append(lambda: log.append("refresh"))
    pipe = Pipe(log, "event")
    loop.add(Owner(50, [Timer(log, "announce", 0.0), Timer(log, "sync", 0.0), pipe]))
    loop.turn(max_wait=1.0)
    assert log == ["refresh", "announce", "sync"]
    log.clear()
    pipe.poke()
    loop.turn(max_wait=1.0)
    assert log == ["event"]  # no timer due: state.json is not looked at


def test_a_timer_cleared_earlier_in_the_turn_does_not_run() -> None:
    log: list[str] = []
    late = Timer(log, "late", 0.0)

    class Canceller(Timer):
        def run(self, now: float) -> None:
            super().run(now)
            late.at = None  # e.g. a role change stops the announcer

    loop = Loop()
    loop.add(Owner(20, [Canceller(log, "order", 0.0)]))
    loop.add(Owner(50, [late]))
    loop.turn(max_wait=1.0)
    assert log == ["order"]


def test_at_most_a_bounded_number_of_control_requests_a_turn() -> None:
    served: list[int] = []

    class Server:
        def __init__(self) -> None:
            self.r, self.w = os.pipe2(os.O_NONBLOCK)
            os.write(self.w, b"x")
            self.waiting = 100

        def fileno(self) -> int:
            return self.r

        def handle_one(self, handler: Any) -> bool:
            if not self.waiting:
                return False
            self.waiting -= 1
            served.append(1)
            return True

    class Context:
        settled = 0

        def settle(self) -> None:  # after each answer: the handlers hear of the change
            self.settled += 1

    class Orders:
        ctx = Context()

        def request(self, msg: dict[str, Any]) -> dict[str, Any]:
            return {}

    server = Server()
    loop = Loop()
    loop.add(Owner(20, [_Control(Orders(), server)]))  # type: ignore[arg-type]
    loop.turn(max_wait=1.0)
    assert len(served) == CONTROL_PER_TURN
    assert Orders.ctx.settled == CONTROL_PER_TURN
    loop.turn(max_wait=1.0)
    assert len(served) == 2 * CONTROL_PER_TURN


def test_end_of_turn_runs_once_a_turn_whatever_the_turn_did() -> None:
    log: list[str] = []
    pipes = [Pipe(log, f"p{i}") for i in range(5)]
    publisher = Owner(100, [])
    loop = Loop()
    loop.add(Owner(30, pipes))
    loop.add(publisher)
    for p in pipes:
        p.poke()
    loop.turn(max_wait=1.0)
    assert sorted(log) == [f"p{i}" for i in range(5)]
    assert publisher.ends == 1


def test_an_idle_loop_sleeps_without_a_timeout() -> None:
    """No deadline anywhere: poll(2) gets no timeout, and the loop wakes only for an event."""
    log: list[str] = []
    pipe = Pipe(log, "event")
    loop = Loop()
    loop.add(Owner(50, [pipe, Timer(log, "never", None)]))
    timeouts: list[Any] = []
    real = loop._poller

    class Spy:
        def register(self, fd: int, mask: int) -> None:
            real.register(fd, mask)

        def unregister(self, fd: int) -> None:
            real.unregister(fd)

        def poll(self, timeout: Any = None) -> list[tuple[int, int]]:
            timeouts.append(timeout)
            return real.poll(timeout)

    loop._poller = Spy()  # type: ignore[assignment]
    threading.Timer(0.3, pipe.poke).start()
    started = time.monotonic()
    loop.turn()
    assert timeouts == [None]
    assert log == ["event"] and time.monotonic() - started >= 0.25
    assert loop.turns == 1


def test_a_signal_runs_its_callback_inside_the_turn() -> None:
    import signal

    log: list[str] = []
    loop = Loop()
    loop.add(Owner(50, []))
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        loop.on_signal(signal.SIGUSR1, lambda: log.append("usr1"))
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        loop.turn(max_wait=5.0)
        assert log == ["usr1"]
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.set_wakeup_fd(-1)
        loop.close()


def test_descriptors_follow_the_sources() -> None:
    """A source's descriptors may change between turns (RS listeners open with the role)."""
    log: list[str] = []
    a, b = Pipe(log, "a"), Pipe(log, "b")
    owner = Owner(50, [a])
    loop = Loop()
    loop.add(owner)
    b.poke()
    loop.turn(max_wait=0.05)
    assert log == []  # b is not polled yet
    owner._sources = [b]
    loop.turn(max_wait=1.0)
    assert log == ["b"]
