"""The inspector's heartbeat as three nf_tables netlink messages in one batch (issue 19).

libnftables reads the rule set's cache for every command: a heartbeat through it costs
about 0.75 ms of CPU, most of an idle inspector's budget. The same batch built here (add,
delete, add with a timeout: renewed on any kernel, as kernel.heartbeat explains) costs a few
microseconds. Only this one message shape is built; everything else goes through
libnftables. Any failure returns False and the caller falls back to libnftables.
"""

from __future__ import annotations

import os
import socket
import struct
import threading

from ..nfnetlink import (
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    attr,
    message,
    nested,
    netfilter_socket,
)

NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFPROTO_NETDEV = 5
# enum nft_set_elem_list_attributes, nft_set_elem_attributes, nft_data_attributes
LIST_TABLE, LIST_SET, LIST_ELEMENTS = 1, 2, 3
LIST_ELEM = 1
ELEM_KEY, ELEM_DATA, ELEM_TIMEOUT = 1, 2, 4
DATA_VALUE = 1
IFNAMSIZ = 16


def _elements(ports: dict[str, int], timeout_ms: int | None) -> bytes:
    elems = []
    for name, mark in ports.items():
        key = name.encode()[:IFNAMSIZ - 1].ljust(IFNAMSIZ, b"\0")
        parts = [nested(ELEM_KEY, attr(DATA_VALUE, key)),
                 nested(ELEM_DATA, attr(DATA_VALUE, struct.pack("=I", mark)))]
        if timeout_ms is not None:
            parts.append(attr(ELEM_TIMEOUT, struct.pack("!Q", timeout_ms)))
        elems.append(nested(LIST_ELEM, *parts))
    return nested(LIST_ELEMENTS, *elems)


class Beat:
    """One netlink socket, kept; `renew(ports, ms)` and `remove(ports)`."""

    def __init__(self, table: str, set_name: str) -> None:
        self.names = (attr(LIST_TABLE, table.encode() + b"\0")
                      + attr(LIST_SET, set_name.encode() + b"\0"))
        self.sock: socket.socket | None = None
        self.seq = int.from_bytes(os.urandom(3), "big")
        self.lock = threading.Lock()  # the heartbeat thread and the loop share the socket

    def _socket(self) -> socket.socket:
        if self.sock is None:
            self.sock = netfilter_socket(blocking=True)
            self.sock.settimeout(1.0)
        return self.sock

    def _batch(self, ops: list[tuple[int, bytes]]) -> bool:
        with self.lock:
            return self._send(ops)

    def _send(self, ops: list[tuple[int, bytes]]) -> bool:
        sock = self._socket()
        seqs = []
        out = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, self._next(), socket.AF_UNSPEC,
                    NFNL_SUBSYS_NFTABLES)]
        for kind, body in ops:
            seq = self._next()
            seqs.append(seq)
            flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if kind == NFT_MSG_NEWSETELEM
                                                 else 0)
            out.append(message((NFNL_SUBSYS_NFTABLES << 8) | kind, flags, seq, NFPROTO_NETDEV, 0,
                            self.names + body))
        out.append(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, self._next(), socket.AF_UNSPEC,
                        NFNL_SUBSYS_NFTABLES))
        sock.send(b"".join(out))
        pending = set(seqs)
        while pending:
            data = sock.recv(65536)
            at = 0
            while at + 16 <= len(data):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, at)
                if length < 16:
                    return False
                if kind == NLMSG_ERROR and seq in pending:
                    (error,) = struct.unpack_from("=i", data, at + 16)
                    if error != 0:
                        return False
                    pending.discard(seq)
                at += (length + 3) & ~3
        return True

    def _next(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def renew(self, ports: dict[str, int], timeout_ms: int) -> bool:
        """add, delete, add with the timeout: one transaction."""
        plain = _elements(ports, None)
        try:
            return self._batch([(NFT_MSG_NEWSETELEM, plain), (NFT_MSG_DELSETELEM, plain),
                                (NFT_MSG_NEWSETELEM, _elements(ports, timeout_ms))])
        except OSError:
            self.close()
            return False

    def remove(self, ports: dict[str, int]) -> bool:
        plain = _elements(ports, None)
        try:
            return self._batch([(NFT_MSG_NEWSETELEM, plain), (NFT_MSG_DELSETELEM, plain)])
        except OSError:
            self.close()
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
