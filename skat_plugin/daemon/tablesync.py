"""The subscriber-table sync between the appliances (gateway/sync.py): one per loaded
configuration, made anew when it changes; it sends while master and stores while backup.
A sync that cannot start is reported and left off: it is not worth the supervisor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import report
from ..gateway import sync as tablesync
from ..render import MASTER
from ..watch import Source
from .context import View
from .handler import Handler


class TableSyncHandler(Handler):
    priority = 60

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.sync: tablesync.TableSync | None = None

    def sources(self) -> Iterable[Source]:
        return (self.sync,) if self.sync else ()

    def on_state(self, new: View, old: View) -> None:
        if self.sync is None or new.cfg is None or old.cfg is None \
                or new.cfg.values != old.cfg.values:
            self._renew(new)
        if self.sync:
            self.sync.is_master = new.role == MASTER

    def status(self) -> dict[str, Any]:
        return {"table_sync": self.sync.counters() if self.sync else {}}

    def close(self) -> None:
        if self.sync:
            self.sync.close()
            self.sync = None

    def _renew(self, view: View) -> None:
        self.close()
        if view.cfg is None:
            return
        try:
            self.sync = tablesync.TableSync(view.cfg)
        except Exception as e:  # the sync is not worth the supervisor
            report.error(f"subscriber-table sync off: cannot start it: {e!r}", cause="sync")
