"""Errors the operator sees. Each one is a single sentence that names where and how to fix.

Every cause has its own exit status, listed in fdpi_cli(8) (EXIT STATUS). systemd shows a
unit's exit status with a name: 1-7 by their LSB meanings (2/INVALIDARGUMENT, 4/NOPERMISSION,
6/NOTCONFIGURED, ...) and 64-78 by BSD's sysexits. A cause whose LSB meaning fits keeps that
number (usage 2, configuration 6, not started 7); the others take numbers systemd has no
name for (10-13), so that `systemctl status` never shows a misleading one.
"""

from __future__ import annotations

OK = 0
FAILURE = 1         # anything else
USAGE = 2           # wrong command line (argparse's own status)
CONFIG = 6          # fastdpi.conf missing or wrong                          (6/NOTCONFIGURED)
NOT_STARTED = 7     # a command that needs the plugin started                (7/NOTRUNNING)
ROLE_REFUSED = 10   # role change not allowed (vrrp_enable=0)
PORT = 11           # a port of in_dev/out_dev does not exist or is in another bridge
KERNEL = 12         # the kernel refused a rule set or a link change
MISMATCH = 13       # vrrp show: the kernel's rules are not the recorded role's
BROKEN_PIPE = 141   # the reader of our output went away (as a shell reports SIGPIPE: 128+13)


class SkatError(Exception):
    """Base of every error fdpi_cli reports as one line with a non-zero exit."""

    exit_code = FAILURE


class ConfigError(SkatError):
    """fastdpi.conf is wrong: names the file, the line and the key, and what is expected."""

    exit_code = CONFIG

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.message = message
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        who = f"{key}: " if key else ""
        super().__init__(f"{where}{who}{message}")


class NotStartedError(SkatError):
    """The command needs a started plugin (`fdpi_cli start` has not run, or `stop` did)."""

    exit_code = NOT_STARTED


class RoleError(SkatError):
    """A role change that the configuration does not allow (e.g. vrrp_enable=0)."""

    exit_code = ROLE_REFUSED


class PortError(SkatError):
    """A port named by in_dev/out_dev does not exist, or belongs to another bridge."""

    exit_code = PORT


class ApplyError(SkatError):
    """The kernel refused a rule set or a link change; nothing of it was applied."""

    exit_code = KERNEL
