"""Reports to the operator: the journal when there is one, standard error otherwise.

Structured fields (ROLE, PREVIOUS_ROLE, CAUSE, ...) go with every journal entry so that
`journalctl SKAT_ROLE=backup` finds them.
"""

from __future__ import annotations

import os
import sys
import syslog
from typing import Any

try:
    from systemd import journal
except ImportError:  # the package depends on python3-systemd; a bare checkout may lack it
    journal = None

_JOURNAL_SOCKET = "/run/systemd/journal/socket"


def _journal_available() -> bool:
    return journal is not None and os.path.exists(_JOURNAL_SOCKET)


def event(message: str, priority: int = syslog.LOG_INFO, **fields: Any) -> None:
    """One event: to the journal with SKAT_* fields; without a journal, warnings and errors
    (and everything when SKAT_LOG_STDERR=1) as one line on stderr."""
    if _journal_available():
        extra = {f"SKAT_{k.upper()}": str(v) for k, v in fields.items() if v is not None}
        journal.send(message, PRIORITY=str(priority), SYSLOG_IDENTIFIER="skat-plugin", **extra)
    elif priority <= syslog.LOG_WARNING or os.environ.get("SKAT_LOG_STDERR") == "1":
        level = {syslog.LOG_ERR: "error", syslog.LOG_WARNING: "warning"}.get(priority, "info")
        print(f"skat-plugin: {level}: {message}", file=sys.stderr, flush=True)


def error(message: str, **fields: Any) -> None:
    event(message, syslog.LOG_ERR, **fields)


def warning(message: str, **fields: Any) -> None:
    event(message, syslog.LOG_WARNING, **fields)
