"""Netfilter netlink, as plain sockets: what the nftables monitor (ruleset.py) and the NFLOG
listener (foreign.py) share. python3-nftables has no event API and pyroute2 neither an
nftables monitor nor NFLOG, and both sources need only headers and a few attributes.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
NFGEN = struct.Struct("=BBH")     # nfgenmsg: family, version, res_id (big endian)
ATTR = struct.Struct("=HH")       # nlattr: len, type


def netfilter_socket(rcvbuf: int) -> socket.socket:
    """A bound, non-blocking NETLINK_NETFILTER socket."""
    sock = socket.socket(socket.AF_NETLINK,
                         socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                         NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(message type, offset, length) of each message in a datagram; stops at a header
    that cannot be (a length shorter than the header)."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _flags, _seq, _pid = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            return
        yield kind, offset, length
        offset += (length + 3) & ~3


def attributes(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(attribute type, payload offset, payload length) of the attributes in data[start:end]."""
    while start + ATTR.size <= end:
        size, kind = ATTR.unpack_from(data, start)
        if size < ATTR.size:
            return
        yield kind & 0x7FFF, start + ATTR.size, size - ATTR.size
        start += (size + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    data = ATTR.pack(ATTR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)
