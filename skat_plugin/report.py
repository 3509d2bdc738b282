"""Reports to the operator: the journal when there is one, standard error otherwise.

Structured fields (ROLE, PREVIOUS_ROLE, CAUSE, ...) go with every journal entry so that
`journalctl SKAT_ROLE=backup` finds them.

console() is for fdpi_cli's own error and warning lines: they go to whoever ran the command
(stderr) and reach the journal at their priority, so that `journalctl -p err` finds a bad
fastdpi.conf or a missing port. Under systemd, where stderr already is the journal, the
line carries the priority as a "<3>" prefix (sd-daemon(3)); elsewhere it is also sent to
the journal directly, once.
"""

from __future__ import annotations

import os
import sys
import syslog
from typing import Any

_JOURNAL_SOCKET = "/run/systemd/journal/socket"
_journal: Any = None  # systemd.journal, imported at first use (it costs ~10 ms)


def _journal_available() -> bool:
    global _journal
    if not os.path.exists(_JOURNAL_SOCKET):
        return False
    if _journal is None:
        try:
            from systemd import journal
        except ImportError:  # the package depends on python3-systemd; a checkout may lack it
            _journal = False
            return False
        _journal = journal
    return bool(_journal)


def _stderr_is_journal() -> bool:
    """systemd connected our stderr to the journal ($JOURNAL_STREAM names that stream)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def event(message: str, priority: int = syslog.LOG_INFO, **fields: Any) -> None:
    """One event: to the journal with SKAT_* fields; without a journal, warnings and errors
    (and everything when SKAT_LOG_STDERR=1) as one line on stderr."""
    if _journal_available():
        extra = {f"SKAT_{k.upper()}": str(v) for k, v in fields.items() if v is not None}
        _journal.send(message, PRIORITY=str(priority), SYSLOG_IDENTIFIER="skat-plugin",
                      **extra)
    elif priority <= syslog.LOG_WARNING or os.environ.get("SKAT_LOG_STDERR") == "1":
        level = {syslog.LOG_ERR: "error", syslog.LOG_WARNING: "warning"}.get(priority, "info")
        print(f"skat-plugin: {level}: {message}", file=sys.stderr, flush=True)


def error(message: str, **fields: Any) -> None:
    event(message, syslog.LOG_ERR, **fields)


def warning(message: str, **fields: Any) -> None:
    event(message, syslog.LOG_WARNING, **fields)


def console(line: str, priority: int = syslog.LOG_ERR, **fields: Any) -> None:
    """One line of fdpi_cli's own on stderr, and in the journal at `priority`."""
    if _stderr_is_journal():
        print(f"<{priority}>{line}", file=sys.stderr, flush=True)
        return
    print(line, file=sys.stderr, flush=True)
    if _journal_available():
        extra = {f"SKAT_{k.upper()}": str(v) for k, v in fields.items() if v is not None}
        _journal.send(line, PRIORITY=str(priority), SYSLOG_IDENTIFIER="fdpi_cli", **extra)
