"""`fdpi_cli vrrp set ROLE` while the daemon runs: the lean client path.

keepalived's notify scripts run this at every failover, so it imports only what one
request to the daemon's control socket needs (the C socket module, json): no argparse, no
schema, no libnftables, not even the `socket` module's enums. Anything it does not handle
exactly (another option, no daemon listening) returns None, and the full CLI takes over
with the same arguments; the daemon's answer is printed, or reported as an error, by the
CLI's own code. The protocol is control.py's.
"""

from __future__ import annotations

import _socket
import os

TYPE_CHECKING = False  # typing itself is an import this path avoids
if TYPE_CHECKING:
    from typing import Any

_ROLES = ("master", "backup")
TIMEOUT = 30.0  # as control.CLIENT_TIMEOUT


def _parse(argv: list[str]) -> tuple[str, str, bool] | None:
    """(role, cause, force) of `vrrp set ROLE [--cause C] [--force]`, else None."""
    if len(argv) < 3 or argv[:2] != ["vrrp", "set"] or argv[2] not in _ROLES:
        return None
    role, cause, force, rest = argv[2], "cli", False, argv[3:]
    while rest:
        if rest[0] == "--force":
            force, rest = True, rest[1:]
        elif rest[0] == "--cause" and len(rest) > 1:
            cause, rest = rest[1], rest[2:]
        elif rest[0].startswith("--cause="):
            cause, rest = rest[0].partition("=")[2], rest[1:]
        else:
            return None  # --config, --help, ...: the full CLI's
    return role, cause, force


def request(argv: list[str]) -> dict[str, Any] | None:
    """The daemon's answer to `vrrp set`, or None when the full CLI must handle it."""
    parsed = _parse(argv)
    if parsed is None:
        return None
    role, cause, force = parsed
    path = os.path.join(os.environ.get("SKAT_RUN_DIR") or "/run/skat-plugin", "control.sock")
    import json  # after the cheap checks: a plain `fdpi_cli` run never pays for it

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(path)
        sock.sendall(json.dumps({"op": "set", "role": role, "cause": cause,
                                 "force": force}).encode())
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        answer = json.loads(b"".join(chunks))
    except (OSError, ValueError):
        return None  # no daemon, or it went away: the full CLI acts itself
    finally:
        sock.close()
    return answer if isinstance(answer, dict) and ("role" in answer or "error" in answer) \
        else None
