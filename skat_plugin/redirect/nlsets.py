"""Replace the contents of hash sets in one nf_tables transaction, as netlink messages.

libnftables parses every element of a command's text: a million addresses take seconds
(issue 19: lists of 1,000,000 entries in under 2 s). A hash set's elements are only keys,
so the batch is built here directly: flush (a DELSETELEM without elements) and NEWSETELEM
messages of as many elements as an attribute holds, all in one batch, which the kernel
applies or refuses as a whole: a packet sees the old set or the new one. Interval sets stay
with libnftables.
"""

from __future__ import annotations

import socket
import struct

from ..nfnetlink import (
    NETLINK_NETFILTER,
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES,
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    attr,
    message,
)
from .nlbeat import (
    DATA_VALUE,
    ELEM_KEY,
    LIST_ELEM,
    LIST_ELEMENTS,
    LIST_SET,
    LIST_TABLE,
    NFPROTO_NETDEV,
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWSETELEM,
)

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
ATTR_MAX = 65000  # an attribute's length is 16 bits: elements a message, by key size


def _element_prefix(keylen: int) -> bytes:
    value = struct.pack("=HH", 4 + keylen, DATA_VALUE)
    key = struct.pack("=HH", 8 + keylen, ELEM_KEY | NLA_F_NESTED)
    elem = struct.pack("=HH", 12 + keylen, LIST_ELEM | NLA_F_NESTED)
    return elem + key + value


def replace(table: str, sets: dict[str, list[bytes]]) -> bool:
    """Each set (name -> keys, all of one length, 4-byte aligned) holds exactly `keys`
    after one transaction. False (nothing changed) on any error."""
    names = {name: attr(LIST_TABLE, table.encode() + b"\0")
             + attr(LIST_SET, name.encode() + b"\0") for name in sets}
    seq = 1
    msgs = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC,
                 NFNL_SUBSYS_NFTABLES)]
    acks = []
    for name, keys in sets.items():
        seq += 1
        acks.append(seq)
        msgs.append(message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM,
                         NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO_NETDEV, 0, names[name]))
        size = len(keys[0]) if keys else 4
        chunk = ATTR_MAX // (12 + size)
        prefix = _element_prefix(size)
        for at in range(0, len(keys), chunk):
            part = keys[at:at + chunk]
            body = prefix + prefix.join(part)
            elements = struct.pack("=HH", 4 + len(body), LIST_ELEMENTS | NLA_F_NESTED) + body
            seq += 1
            acks.append(seq)
            msgs.append(message((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM,
                             NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq, NFPROTO_NETDEV, 0,
                             names[name] + elements))
    seq += 1
    msgs.append(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, socket.AF_UNSPEC,
                     NFNL_SUBSYS_NFTABLES))
    batch = b"".join(msgs)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                           NETLINK_NETFILTER) as sock:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(batch) + (1 << 20))
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 * len(acks) + (1 << 20))
            sock.settimeout(30)
            sock.bind((0, 0))
            sock.send(batch)
            pending = set(acks)
            while pending:
                data = sock.recv(1 << 20)
                at = 0
                while at + 16 <= len(data):
                    length, kind, _flags, got, _pid = struct.unpack_from("=IHHII", data, at)
                    if length < 16:
                        return False
                    if kind == NLMSG_ERROR:
                        (error,) = struct.unpack_from("=i", data, at + 16)
                        if error != 0:
                            return False
                        pending.discard(got)
                    at += (length + 3) & ~3
    except OSError:
        return False
    return True
