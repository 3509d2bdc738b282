"""Orders: keepalived's notify FIFO, the control socket (`fdpi_cli vrrp set`, `reload`,
`status`) and SIGHUP. Each is applied one at a time through role.py, in the order it came.

Priority 20: after the election's look (a dead keepalived first), before anything that
announces. At most CONTROL_PER_TURN control requests are served a turn, so a flood of
clients cannot starve the timers.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from typing import Any

from .. import control, report, role
from ..election import fifo as keepalived_fifo
from ..watch import Deadline, Source
from .handler import Handler

CONTROL_PER_TURN = 16
DEFAULT_FIFO = "/run/skat-plugin/keepalived.fifo"


class OrdersHandler(Handler):
    priority = 20

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.requests = 0  # served on the control socket
        self.server = _Control(self, control.Server())
        self.fifo: _Fifo | None = None
        if not ctx.opts.no_fifo:
            self.fifo = _Fifo(self, keepalived_fifo.Fifo(
                ctx.opts.fifo or ctx.configured("vrrp_notify_fifo") or DEFAULT_FIFO))
        self.hup = _Flag(lambda: ctx.apply("reload (SIGHUP)",
                                           lambda: role.reload(ctx.config_path)))
        ctx.loop.on_signal(signal.SIGHUP, self.hup.set)

    def sources(self) -> Iterable[Source]:
        return (self.hup, self.server) + ((self.fifo,) if self.fifo else ())

    def status(self) -> dict[str, Any]:
        return {"fifo": str(self.fifo.fifo.path) if self.fifo else None,
                "requests": self.requests}

    def close(self) -> None:
        self.server.server.close()
        if self.fifo:
            self.fifo.fifo.close()

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        ctx = self.ctx
        op = msg.get("op")
        if op == "set":
            return ctx.apply("vrrp set", lambda: role.set_role(
                str(msg.get("role")), str(msg.get("cause") or "cli"),
                force=bool(msg.get("force"))), asked=True)
        if op == "reload":
            path = str(msg.get("config") or ctx.config_path)
            return ctx.apply("reload", lambda: role.reload(path), asked=True)
        if op == "status":
            return ctx.status()
        return {"error": f"unknown op {op!r}; expected set, reload or status"}


class _Control(Source):
    def __init__(self, owner: OrdersHandler, server: control.Server) -> None:
        self.owner = owner
        self.server = server

    def fds(self) -> list[int]:
        return [self.server.fileno()]

    def handle(self, fd: int, now: float) -> None:
        for _ in range(CONTROL_PER_TURN):  # bounded: timers must not starve under a flood
            served = self.server.handle_one(self.owner.request)
            self.owner.ctx.settle()  # the client has its answer: now the handlers hear
            if not served:
                break


class _Fifo(Source):
    """keepalived's notify FIFO, read in batches: only the latest state of each instance
    matters (an obsolete MASTER would announce a gateway this appliance no longer is)."""

    def __init__(self, owner: OrdersHandler, fifo: keepalived_fifo.Fifo) -> None:
        self.owner = owner
        self.fifo = fifo
        self.ours = owner.ctx.configured("vrrp_instance")
        self.foreign_instances: set[str] = set()  # other vrrp_instances seen on the FIFO

    def fds(self) -> list[int]:
        return [self.fifo.fileno()]  # a new descriptor after a reopen: the loop follows

    def handle(self, fd: int, now: float) -> None:
        events, eof = self.fifo.read_events()
        for ev in self._latest(events):
            new_role = role.KEEPALIVED_ROLE[ev.state]
            self.owner.ctx.apply(f"keepalived {ev.name} {ev.state}",
                                 lambda r=new_role, s=ev.state:
                                 role.set_role(r, "keepalived", keepalived_state=s))
        if eof:
            # keepalived closed the FIFO: it exited, or it reloads (it closes and reopens
            # the FIFO on SIGHUP). That alone proves nothing; a crash is the pid watch's to
            # see. Reopen, so that poll() stops reporting the hang-up.
            report.event("keepalived closed its notify FIFO (a reload or an exit)",
                         cause="keepalived")
            self.fifo.open()

    def _latest(self, events: list[keepalived_fifo.Event]) -> list[keepalived_fifo.Event]:
        latest: dict[str, keepalived_fifo.Event] = {}
        ours = 0  # events of our instance read in this batch
        for ev in events:
            if ev.name != self.ours:
                # Another instance of the same keepalived (e.g. a management address)
                # must not move the data plane.
                if ev.name not in self.foreign_instances:
                    self.foreign_instances.add(ev.name)
                    report.warning(f"keepalived instance {ev.name!r} is not {self.ours!r} "
                                   f"(vrrp_instance): its events are ignored",
                                   cause="keepalived")
                continue
            if ev.state not in role.KEEPALIVED_ROLE:
                continue  # not a change of state (MASTER_RX_LOWER_PRI): it supersedes none
            latest.pop(ev.name, None)
            latest[ev.name] = ev
            ours += 1
        if ours > len(latest):
            report.event(f"keepalived FIFO: {ours - len(latest)} superseded event(s) skipped",
                         cause="keepalived")
        return list(latest.values())


class _Flag(Deadline):
    """A signal's order: set in the turn the signal woke, run at the owner's priority."""

    def __init__(self, action: Any) -> None:
        self.action = action
        self.raised = False

    def set(self) -> None:
        self.raised = True

    def next_due(self) -> float | None:
        return 0.0 if self.raised else None

    def run(self, now: float) -> None:
        self.raised = False
        self.action()
