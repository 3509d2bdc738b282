"""Wall-clock time as the plugin writes it (state.json, daemon.json, the journal): UTC,
ISO 8601, milliseconds."""

from __future__ import annotations

import datetime as dt


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
