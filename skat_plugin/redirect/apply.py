"""The redirect's part of start/reload and of `vrrp show` (called from role.py).

    load_lists(cfg)   after the role's transaction: the black lists' addresses into the
                      kernel's sets (one transaction; the files were checked at config load)
    show(cfg)         counters: the kernel's (selected, passed uninspected) and the
                      inspector's (redirected, forbidden, reset, allowed), from STATUS_FILE
    wait_for_inspector(cfg)
                      after a reload: until the running inspector has read the list files
                      as they are now, so the new lists are in effect when reload returns
"""

from __future__ import annotations

import json
import select
import time
from typing import Any

from .. import state
from ..config import Config
from . import enabled, kernel, lists

STATUS_FILE = "inspector.json"
# Written every 2 s by a live inspector (inspector.CHECK_EVERY); older than this means it
# is not running.
STATUS_STALE = 5.0

INSPECTOR_COUNTERS = ("redirected", "forbidden", "reset", "allowed", "uninspected_behind",
                      "undecided", "held", "held_acked", "held_expired", "dropped")


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


def _alive(st: dict[str, Any]) -> bool:
    return bool(st) and time.time() - float(st.get("updated", 0)) < STATUS_STALE


def wait_for_inspector(cfg: Config, timeout: float = 10.0) -> str:
    """Wait until the inspector reports the list files' current stamp (it learns of a
    change by inotify and reads the files in a thread: milliseconds for small lists, ~3.5 s
    for 3 x 100,000 entries). Returns what to tell the operator."""
    from ..watch import inotify

    if not enabled(cfg.values):
        return ""
    if not _alive(inspector_status()):
        return ("note: the inspector is not running (skat-plugin-inspector.service): the "
                "address lists are in effect, URL and server-name lists are not inspected")
    notify = inotify.Inotify()
    try:
        notify.watch(state.run_dir())
        deadline = time.monotonic() + timeout
        while True:
            st = inspector_status()
            want = json.loads(json.dumps(lists.stamp(cfg.values)))
            if st.get("lists_stamp") == want:
                if st.get("list_error"):
                    return f"warning: the inspector keeps its old lists: {st['list_error']}"
                return f"black lists in effect in the inspector: {_entries(st)}"
            left = deadline - time.monotonic()
            if left <= 0:
                return (f"warning: the inspector has not read the new lists within {timeout:g}"
                        " s; it goes on with the old ones until it does (fdpi_cli vrrp show)")
            select.select([notify], [], [], left)
            notify.read()
    finally:
        notify.close()


def _entries(st: dict[str, Any]) -> str:
    counts = st.get("lists") or {}
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "empty"


def show(cfg: Config) -> dict[str, Any] | None:
    if not enabled(cfg.values):
        return None
    k = dict.fromkeys(kernel.COUNTERS, 0)
    k.update(kernel.counters() or {})
    st = inspector_status()
    alive = _alive(st)
    mine = st.get("counters", {})
    counters = {name: int(mine.get(name, 0)) for name in INSPECTOR_COUNTERS}
    counters.update(k)
    # Everything selected that went on without a decision: no inspector, over the rate (all
    # subscribers', or one subscriber's own), the inspector behind, or a frame it could not
    # read. (Packets to a blocked address never pass: blocked_down counts those dropped.)
    counters["passed_uninspected"] = (k["uninspected_down"] + k["uninspected_overload"]
                                      + k["uninspected_source"]
                                      + counters["uninspected_behind"] + counters["undecided"])
    return {"counters": counters, "inspector": {"alive": alive, "pid": st.get("pid"),
                                                "lists": st.get("lists", {}),
                                                "list_error": st.get("list_error")}}
