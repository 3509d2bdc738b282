"""HTTP request heads read the way servers read them (nginx 1.22 as the reference).

A filter that is stricter than the server is walked around: whatever nginx accepts as a
request, this module must recognise as the same request. So, as nginx does:

- empty lines (CRLF or bare LF) before a request line are skipped;
- lines may end with a bare LF; runs of spaces separate the request line's parts;
- any method of the characters A-Z, `_` and `-` (not only the seven common ones);
- `GET /path` without a version is HTTP/0.9 (no headers);
- the target may be in absolute form (`http://host/path`): that host wins over Host;
- the path is compared after percent-decoding, merging `//` and resolving `/./` and `/../`
  (what nginx's location matching sees); the query is kept as sent;
- requests are pipelined: after a head and its body (Content-Length or chunked), the next
  request may follow in the same bytes; each one is decided.

`parse(data)` never raises: it returns what it could read and whether more bytes are needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEAD = 32 * 1024  # nginx's large_client_header_buffers (4 x 8k), with room

_METHOD = re.compile(rb"[A-Z_-]+\Z")
_HEX = re.compile(r"%([0-9A-Fa-f]{2})")
_START = re.compile(rb"[A-Z_-]{1,32}(?: |\t|\Z)")  # a method, then a space (or the end so far)
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})[^\n]*\n")


@dataclass
class Request:
    method: str
    host: str | None  # None: no Host header and no absolute target
    path: str         # normalised (see normalise_path), with the query as sent
    raw_target: str   # as sent
    raw_path: str     # the path and query as sent (for the notice page's UrlRedir=)
    version: str     # "HTTP/1.1", "HTTP/0.9", ...


@dataclass
class Parsed:
    requests: list[Request] = field(default_factory=list)
    incomplete: bool = False   # the last request's head (or a body before it) needs more bytes
    invalid: bool = False      # not HTTP as a server would read it (the server refuses it too)
    too_long: bool = False     # a head beyond MAX_HEAD: no server serves it; neither do we
    body_left: int = 0         # the last request's body goes on for this many bytes after
                               # `data` (-1: chunked, its end unknown)


def normalise_path(target: str) -> str:
    """The path as a server matches it: percent-decoded, `//` merged, dot segments resolved.
    The query (after `?`) is kept as sent. Never raises."""
    path, q, query = target.partition("?")
    path = path.partition("#")[0]  # a fragment ends the path (an encoded %23 does not)
    path = _HEX.sub(lambda m: chr(int(m.group(1), 16)), path)
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    norm = "/" + "/".join(out)
    if (path.endswith("/") or path.endswith("/.") or path.endswith("/..")) and norm != "/":
        norm += "/"
    return norm + q + query


def _lines(head: bytes) -> list[bytes]:
    return [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]


def _head_end(data: bytes, start: int) -> int:
    """Index just past the empty line that ends the head starting at `start`, or -1."""
    at = start
    while True:
        nl = data.find(b"\n", at)
        if nl < 0:
            return -1
        line = data[at:nl]
        if line in (b"", b"\r") and at > start:
            return nl + 1
        at = nl + 1


def _request_line(line: bytes) -> tuple[str, str, str] | None:
    parts = line.replace(b"\t", b" ").split()
    if len(parts) not in (2, 3) or not _METHOD.match(parts[0]):
        return None
    version = parts[2].decode("latin-1") if len(parts) == 3 else "HTTP/0.9"
    if len(parts) == 3 and not version.upper().startswith("HTTP/"):
        return None
    return parts[0].decode("latin-1"), parts[1].decode("latin-1"), version


def _body_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """Content-Length, 0 when there is none; None for chunked."""
    length = 0
    for name, value in headers:
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return None
        if name == b"content-length":
            try:
                length = max(length, int(value.strip() or b"0"))
            except ValueError:
                length = 0
    return length


def _skip_chunked(data: bytes, at: int) -> int:
    """Index past a chunked body starting at `at`, or -1 when it goes beyond data."""
    while True:
        m = _CHUNK.match(data, at)
        if m is None:
            return -1
        size = int(m.group(1), 16)
        at = m.end()
        if size == 0:  # trailers, then the empty line
            end = _head_end(b"x\n" + data[at:], 0)
            return -1 if end < 0 else at + end - 2
        at += size
        nl = data.find(b"\n", at)
        if nl < 0 or nl - at > 1:
            return -1
        at = nl + 1


def parse(data: bytes, limit: int = 64) -> Parsed:
    """Every request in `data` (at most `limit`), as a server would read them."""
    out = Parsed()
    try:
        at = 0
        while at < len(data) and len(out.requests) < limit:
            while at < len(data) and data[at] in b"\r\n":
                at += 1
            if at >= len(data):
                break
            if not _START.match(data, at):
                out.invalid = True  # e.g. a body's bytes: no method followed by a space
                return out
            nl = data.find(b"\n", at)
            if nl < 0:
                out.incomplete = True
                out.too_long = len(data) - at > MAX_HEAD
                return out
            parsed = _request_line(_lines(data[at:nl])[0])
            if parsed is None:
                out.invalid = True
                return out
            method, target, version = parsed
            if version == "HTTP/0.9":
                out.requests.append(_request(method, target, version, []))
                at = nl + 1
                continue
            end = _head_end(data, at)
            if end < 0:
                out.incomplete = True
                out.too_long = len(data) - at > MAX_HEAD
                return out
            headers = []
            for line in _lines(data[nl + 1:end])[:-1]:
                name, colon, value = line.partition(b":")
                if colon:
                    headers.append((name.strip().lower(), value.strip()))
            out.requests.append(_request(method, target, version, headers))
            length = _body_length(headers)
            if length is None:
                at = _skip_chunked(data, end)
                if at < 0:
                    out.body_left = -1  # the body goes on beyond these bytes
                    return out
            else:
                at = end + length
                if at > len(data):
                    out.body_left = at - len(data)
                    return out
    except (ValueError, IndexError, OverflowError):
        out.invalid = True
    return out


def _request(method: str, target: str, version: str,
             headers: list[tuple[bytes, bytes]]) -> Request:
    host = None
    for name, value in headers:
        if name == b"host":
            host = value.decode("latin-1")
            break
    path = target
    scheme, sep, rest = target.partition("://")
    if sep and scheme.isalpha():  # absolute form: the target names the host
        host, slash, tail = rest.partition("/")
        host = host.rpartition("@")[2]
        path = slash + tail or "/"
    if not path.startswith("/"):
        path = "/" + path if path != "*" else "/"
    return Request(method, host, normalise_path(path), target, path, version)
