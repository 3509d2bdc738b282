"""The supervising daemon's event sources: each is a file descriptor the kernel makes
readable when something happened (nftables changed, a process died, a link moved, a file
was written), and the handler that reacts. The daemon's loop polls them; none polls the
kernel itself."""


class Source:
    """What the daemon's loop asks of an event source: fds() to poll, handle(fd, now) when
    one of them is readable, and, for a source with a deadline of its own, next_due() (None:
    none) and run(now) once it has passed."""

    def fds(self) -> list[int]:
        raise NotImplementedError

    def handle(self, fd: int, now: float) -> None:
        raise NotImplementedError

    def next_due(self) -> float | None:
        return None

    def run(self, now: float) -> None:
        return None

    def close(self) -> None:
        return None


class Deadline(Source):
    """A source with a deadline and no descriptor (a burst's next round, the end of a wait,
    a signal's order to run in the turn it woke)."""

    def fds(self) -> list[int]:
        return []

    def handle(self, fd: int, now: float) -> None:
        return None
