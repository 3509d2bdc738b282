"""What every handler of the daemon reads, in one place (firewalld's core, networkd's Manager).

The view of the appliance comes from state.json, which every role change writes (the
daemon's own orders and any `fdpi_cli` process). refresh() looks at the file's signature
(one stat) and, when it changed, loads it once and calls each handler's on_state(new, old):
the handlers decide what the change means for them. Facts that one handler finds and others
act on (split brain, a failed repair, the ports) go through report_fact(). Anything that
changes what the daemon publishes marks the context dirty; the end-of-turn writers (the
track file, daemon.json) look at that.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import report, state
from ..config import Config
from ..errors import SkatError

if TYPE_CHECKING:
    from .handler import Handler
    from .loop import Loop


class View(NamedTuple):
    """The appliance as state.json says: role, configuration, and the election's word."""

    role: str
    cfg: Config | None
    since: str | None
    awaiting: bool  # master by SKAT's start rule only: keepalived has not spoken yet
    keepalived: str | None  # keepalived's last state for our instance (MASTER, BACKUP...)
    keepalived_at: str | None  # when keepalived said it (ISO)


UNKNOWN = View("unknown", None, None, False, None, None)


def view_of(st: dict[str, Any] | None) -> View:
    if st is None:
        return View("stopped", None, None, False, None, None)
    role = st["role"]
    said = st.get("keepalived") or {}
    return View(role, state.config_of(st), st.get("since"),
                bool(role == "master" and st.get("awaiting_election", False)),
                said.get("state"), said.get("at"))


class Context:
    def __init__(self, opts: argparse.Namespace, config_path: str, loop: Loop) -> None:
        self.opts = opts
        self.loop = loop  # for a handler's signal (loop.on_signal)
        self.config_path = config_path
        self.run_dir = state.run_dir()
        self.view = UNKNOWN
        self.handlers: list[Handler] = []
        self.facts: dict[str, Any] = {}
        self.role_changes = 0
        self.dirty = True  # something published changed since the end of the last turn
        self.unsettled = False  # a change applied, not yet heard by the handlers
        self._signature: tuple[int, int, int] | None = None

    @property
    def role(self) -> str:
        return self.view.role

    @property
    def cfg(self) -> Config | None:
        return self.view.cfg

    def refresh(self, force: bool = False) -> None:
        """Cheap: one stat(); loads state.json and tells the handlers only when it changed."""
        sig = state.signature()
        if sig == self._signature and not force:
            return
        self._signature = sig
        new = view_of(state.load() if sig else None)
        old, self.view = self.view, new
        if new.role != old.role and old.role != "unknown":
            self.role_changes += 1
        self.dirty = True
        for handler in self.handlers:
            handler.on_state(new, old)

    def attach(self, handlers: list[Handler]) -> None:
        """The handlers exist: each hears the current view as news."""
        self.handlers = handlers
        for handler in handlers:
            handler.on_state(self.view, UNKNOWN)

    def apply(self, what: str, action: Callable[[], dict[str, Any]],
              asked: bool = False) -> dict[str, Any]:
        """Run one role change; its result, or {"error": ...}. The daemon survives all.
        asked: a client's request, whose command reports a refusal itself (not twice), and
        which is answered before the handlers hear of the change (settle() after the
        answer): `fdpi_cli vrrp set` waits for the kernel, not for the announcements."""
        try:
            result = action()
        except SkatError as e:
            if not asked:
                report.warning(f"{what}: {e}")
            return {"error": str(e), "exit_code": e.exit_code}
        except Exception as e:  # a bug must not take the supervisor down
            report.error(f"{what}: internal error: {e!r}")
            return {"error": f"internal error: {e!r}"}
        finally:
            # It wrote state.json: no need to trust a signature.
            self.unsettled = True
            if not asked:
                self.settle()
        return result

    def settle(self) -> None:
        """The handlers hear of the last change (apply's state.json), if not yet."""
        if self.unsettled:
            self.unsettled = False
            self.refresh(force=True)

    def report_fact(self, name: str, value: Any, now: float) -> None:
        """A handler's finding that others act on; they hear of it only when it changed."""
        if name in self.facts and self.facts[name] == value:
            return
        self.facts[name] = value
        self.dirty = True
        for handler in self.handlers:
            handler.on_fact(name, value, now)

    def configured(self, key: str) -> Any:
        """A key of the loaded configuration (state.json's snapshot), else of fastdpi.conf,
        else its documented default. Read at start only: a changed value needs a restart."""
        if self.cfg is not None:
            return self.cfg.get(key)
        with contextlib.suppress(SkatError, OSError):
            from .. import config

            return config.load(self.config_path).get(key)
        from ..config import default

        return default(key)

    def status(self) -> dict[str, Any]:
        """daemon.json: the appliance's view and every handler's part."""
        out: dict[str, Any] = {"role": self.role, "since": self.view.since,
                               "role_changes": self.role_changes}
        for handler in self.handlers:
            out.update(handler.status())
        return out
