"""Netfilter's netlink, as plain sockets: the few primitives every user here shares.

python3-nftables has no event API and answers every read by listing whole sets, and
pyroute2 speaks neither nf_tables' messages nor NFLOG; the users need only headers, a few
attributes and fixed message shapes. So: the daemon's event sources (watch/ruleset.py: the
nftables monitor; watch/foreign.py: NFLOG), the reads that must not list a million elements
(nfnl.py), and the inspector's heartbeat and hash-set loads (redirect/nlbeat.py, nlsets.py)
build and read their messages with these. Numbers from include/uapi/linux/netlink.h and
netfilter/nfnetlink.h.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
NFGEN = struct.Struct("=BBH")     # nfgenmsg: family, version, res_id (big endian)
ATTR = struct.Struct("=HH")       # nlattr: len, type


def netfilter_socket(rcvbuf: int | None = None, blocking: bool = False) -> socket.socket:
    """A bound NETLINK_NETFILTER socket."""
    flags = socket.SOCK_RAW | socket.SOCK_CLOEXEC | (0 if blocking else socket.SOCK_NONBLOCK)
    sock = socket.socket(socket.AF_NETLINK, flags, NETLINK_NETFILTER)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def attr(kind: int, payload: bytes) -> bytes:
    data = ATTR.pack(ATTR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def nested(kind: int, *inner: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(inner))


def string(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def message(kind: int, flags: int, seq: int, family: int, res_id: int,
            body: bytes = b"") -> bytes:
    """One netfilter message: the header, nfgenmsg (res_id big endian), the attributes."""
    payload = NFGEN.pack(family, 0, socket.htons(res_id)) + body
    return HEADER.pack(HEADER.size + len(payload), kind, flags, seq, 0) + payload


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


def attrs(data: bytes | memoryview, start: int = 0, end: int | None = None
          ) -> Iterator[tuple[int, memoryview]]:
    """(type, payload) of each attribute in data[start:end], the flags masked off."""
    view = memoryview(data)
    end = len(view) if end is None else min(end, len(view))
    i = start
    while i + ATTR.size <= end:
        length, kind = ATTR.unpack_from(view, i)
        if length < ATTR.size:
            return
        yield kind & NLA_TYPE_MASK, view[i + ATTR.size:i + length]
        i += (length + 3) & ~3
