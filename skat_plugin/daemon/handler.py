"""The one interface every subsystem of the daemon has (conntrackd's modes, FRR's routers).

A handler is given the context (daemon/context.py) when it is made, opens what it needs
then, and owns it: its event sources, its timers (a source's deadline), its state and its
part of the status. The loop (daemon/loop.py) calls sources(), on_turn() and end_of_turn();
the context calls on_state() when the loaded role or configuration changes and on_fact()
when another handler reports a fact (split brain, rule repairs, ports).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..watch import Source

if TYPE_CHECKING:
    from .context import Context, View


class Handler:
    priority = 50  # lower runs first within a turn (docs/daemon.md lists them)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def start(self, now: float) -> None:
        """Once, after every handler exists and the state is loaded: look at what changed
        while no daemon was running."""

    def sources(self) -> Iterable[Source]:
        return ()

    def on_turn(self, now: float) -> None:
        """Every turn of the loop, at this handler's priority (before its sources)."""

    def end_of_turn(self, now: float) -> None:
        """After all the turn's work, in priority order: write out what is dirty."""

    def on_state(self, new: View, old: View) -> None:
        """The role, the configuration or keepalived's last word changed (state.json)."""

    def on_fact(self, name: str, value: Any, now: float) -> None:
        """Another handler reported a fact (Context.report_fact)."""

    def status(self) -> dict[str, Any]:
        """This handler's part of daemon.json (`vrrp show`, metrics)."""
        return {}

    def close(self) -> None:
        """The daemon ends: close what this handler opened."""
