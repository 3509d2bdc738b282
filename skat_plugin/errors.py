"""Errors the operator sees. Each one is a single sentence that names where and how to fix."""

from __future__ import annotations


class SkatError(Exception):
    """Base of every error fdpi_cli reports as one line with a non-zero exit."""

    exit_code = 1


class ConfigError(SkatError):
    """fastdpi.conf is wrong: names the file, the line and the key, and what is expected."""

    exit_code = 2

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


class RoleError(SkatError):
    """A role change that the configuration does not allow (e.g. vrrp_enable=0)."""

    exit_code = 3


class ApplyError(SkatError):
    """The kernel refused a rule set or a link change; nothing of it was applied."""

    exit_code = 4
