"""The redirect's part of start/reload and of `vrrp show` (called from role.py).

    load_lists(cfg)   after the role's transaction: the black lists' addresses into the
                      kernel's sets (one transaction; the files were checked at config load)
    show(cfg)         counters: the kernel's (selected, passed uninspected) and the
                      inspector's (redirected, forbidden, reset, allowed), from STATUS_FILE
"""

from __future__ import annotations

import json
import time
from typing import Any

from .. import state
from ..config import Config
from . import enabled, kernel, lists

STATUS_FILE = "inspector.json"
# Written every second by a live inspector; older than this means it is not running.
STATUS_STALE = 3.0

INSPECTOR_COUNTERS = ("redirected", "forbidden", "reset", "allowed", "uninspected_behind",
                      "undecided")


def load_lists(cfg: Config) -> None:
    if not enabled(cfg.values):
        return
    kernel.load_addresses(lists.load(cfg.values))


def inspector_status() -> dict[str, Any]:
    try:
        with open(state.run_dir() / STATUS_FILE) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


def show(cfg: Config) -> dict[str, Any] | None:
    if not enabled(cfg.values):
        return None
    k = kernel.counters() or {name: 0 for name in kernel.COUNTERS}
    st = inspector_status()
    alive = bool(st) and time.time() - float(st.get("updated", 0)) < STATUS_STALE
    mine = st.get("counters", {})
    counters = {name: int(mine.get(name, 0)) for name in INSPECTOR_COUNTERS}
    counters.update(k)
    # Everything selected that went on without a decision: no inspector, over the rate,
    # the inspector behind, or a request it could not read (first segment without Host).
    counters["passed_uninspected"] = (k["uninspected_down"] + k["uninspected_overload"]
                                      + counters["uninspected_behind"] + counters["undecided"])
    return {"counters": counters, "inspector": {"alive": alive, "pid": st.get("pid"),
                                                "lists": st.get("lists", {}),
                                                "list_error": st.get("list_error")}}
