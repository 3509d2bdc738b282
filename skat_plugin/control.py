"""Client and server of the daemon's control socket. Placeholder until the daemon lands."""

from __future__ import annotations

from typing import Any


def request(message: dict[str, Any]) -> dict[str, Any] | None:
    """Send one request to the daemon; None when no daemon listens."""
    return None
