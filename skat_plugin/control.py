"""The daemon's control socket: $SKAT_RUN_DIR/control.sock, AF_UNIX stream.

Protocol: one JSON object per connection. The client writes its request and shuts down its
sending side; the daemon answers with one JSON object and closes. Requests:

    {"op": "set", "role": "master"|"backup", "cause": "...", "force": false}  -> state dict
    {"op": "reload", "config": "/etc/dpi/fastdpi.conf"}                       -> state dict
    {"op": "status"}                                          -> the daemon's status dict

A SkatError becomes {"error": "one sentence", "exit_code": N}. The daemon serves one
connection at a time, so requests are applied in the order they were accepted, between
keepalived's FIFO events.

`"brief": true` in a `set` asks for a short answer: a success (the role switched or kept)
is then exactly the text `{"role": "master"}` or `{"role": "backup"}` (BRIEF), so that the
lean client (quickset.py) can compare bytes instead of importing json; an error or an
ignored order is answered in full, as without it. Old clients send no "brief" and get the
state dict; an old daemon ignores "brief" and the lean client hands its answer to the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import report, state

MAX_REQUEST = 64 * 1024
# A role switch is one nft transaction (tens of ms); a queue of them behind a keepalived
# flap still ends well inside this.
CLIENT_TIMEOUT = 30.0
BRIEF = '{"role": "%s"}'  # a brief `set` that succeeded (quickset.DONE compares these bytes)


def socket_path() -> Path:
    return state.run_dir() / "control.sock"


def request(message: dict[str, Any], timeout: float = CLIENT_TIMEOUT) -> dict[str, Any] | None:
    """Send one request to the daemon; None when no daemon listens (the caller acts itself).

    A missing socket or a refused connection fails at connect(), without waiting.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(socket_path()))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError,
                PermissionError):
            return None
        sock.sendall(json.dumps(message).encode())
        sock.shutdown(socket.SHUT_WR)
        answer = _read_all(sock)
    except TimeoutError:
        # Never leave keepalived's script hanging: act directly; the state lock orders us.
        report.warning(f"the daemon did not answer {message.get('op')!r} within {timeout:g} s; "
                       f"applying it directly")
        return None
    except OSError:
        return None  # the daemon went away mid-request: the caller applies it itself
    finally:
        sock.close()
    return decode(answer)


def decode(raw: bytes | None) -> dict[str, Any] | None:
    """An answer as request() returns it: None for none (the daemon went away mid-request)
    or one that is not an object."""
    if not raw:
        return None
    try:
        answer = json.loads(raw)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        if sum(len(c) for c in chunks) > MAX_REQUEST * 16:
            break
    return b"".join(chunks)


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class Server:
    """Listening side, driven by the daemon's poll loop (fileno() + handle_one())."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or socket_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of a dead daemon (the pid file says so)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o077)  # root only: this socket switches roles
        try:
            self.sock.bind(str(self.path))
        finally:
            os.umask(old)
        self.sock.listen(64)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle_one(self, handler: Handler) -> bool:
        """Serve one pending connection, if any. Returns False when none was waiting."""
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        with conn:
            conn.setblocking(True)
            conn.settimeout(2.0)  # a client that never finishes its request loses its turn
            try:
                raw = _read_all(conn)
                message = json.loads(raw)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError) as e:
                _send(conn, {"error": f"bad request: {e}"})
                return True
            answer = handler(message)
            if message.get("brief") is True and message.get("op") == "set" \
                    and answer.get("role") in ("master", "backup") \
                    and not answer.get("error") and not answer.get("ignored"):
                with contextlib.suppress(OSError):  # the client gave up: nothing to tell it
                    conn.sendall((BRIEF % answer["role"]).encode())
                return True
            _send(conn, answer)
        return True

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _send(conn: socket.socket, answer: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the client gave up: nothing to tell it
        conn.sendall(json.dumps(answer).encode())
