"""The server name of a TLS ClientHello, read across records and segments (RFC 8446 5.1,
4.1.2; RFC 6066 3).

A ClientHello may be split over several TLS records (a handshake message may be fragmented)
and the records over several TCP segments. `server_name(data)` reads the handshake records
at the start of `data` (what the flow carried so far), joins their fragments and reads the
hello up to its server_name extension. It never raises:

    (FOUND, name)     the server name
    (NONE, None)      a complete hello without one, or not a ClientHello at all
    (MORE, None)      the bytes end before the server name: wait for the next segment
    (TOO_BIG, None)   a hello longer than MAX_HELLO: not waited for (the caller refuses it)
"""

from __future__ import annotations

FOUND, NONE, MORE, TOO_BIG = "found", "none", "more", "too big"
MAX_HELLO = 32 * 1024  # a hello bigger than this is not waited for (post-quantum ~ 2 KiB)


def _handshake(data: bytes) -> tuple[bytes, bool]:
    """The handshake bytes of the leading records, and whether a record is cut short."""
    out = bytearray()
    at = 0
    while at < len(data):
        if at + 5 > len(data):
            return bytes(out), True
        if data[at] != 0x16:
            return bytes(out), False
        size = int.from_bytes(data[at + 3:at + 5], "big")
        out += data[at + 5:at + 5 + size]
        if at + 5 + size > len(data):
            return bytes(out), True
        at += 5 + size
    return bytes(out), False


def server_name(data: bytes) -> tuple[str, str | None]:
    try:
        return _server_name(data)
    except (IndexError, ValueError, UnicodeDecodeError):
        return NONE, None


def _server_name(data: bytes) -> tuple[str, str | None]:
    if len(data) < 6 or data[0] != 0x16 or data[5] != 0x01:
        return NONE, None
    hs, cut = _handshake(data)
    if len(hs) < 4:
        return (MORE if cut else NONE), None
    total = 4 + int.from_bytes(hs[1:4], "big")
    if total > MAX_HELLO:
        return TOO_BIG, None
    more = MORE if len(hs) < total else NONE
    hello = hs[:total]

    def need(end: int) -> bool:
        return end > len(hello)

    at = 4 + 2 + 32                       # handshake header, version, random
    if need(at + 1):
        return more, None
    at += 1 + hello[at]                   # session id
    if need(at + 2):
        return more, None
    at += 2 + int.from_bytes(hello[at:at + 2], "big")  # cipher suites
    if need(at + 1):
        return more, None
    at += 1 + hello[at]                   # compression methods
    if need(at + 2):
        return more, None
    end = at + 2 + int.from_bytes(hello[at:at + 2], "big")
    at += 2
    while at < end:
        if need(at + 4):
            return more, None
        kind = int.from_bytes(hello[at:at + 2], "big")
        size = int.from_bytes(hello[at + 2:at + 4], "big")
        if kind == 0:  # server_name: list length (2), type (1) = host_name, length (2), name
            if need(at + 4 + size):
                return more, None
            if size < 5 or hello[at + 6] != 0:
                return NONE, None
            n = int.from_bytes(hello[at + 7:at + 9], "big")
            name = hello[at + 9:at + 9 + n]
            if len(name) != n or n == 0:
                return NONE, None
            return FOUND, name.decode("ascii")
        at += 4 + size
    return NONE, None
