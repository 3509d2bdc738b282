"""The budgets that keep hostile senders from eating the daemon (RS answers, ICMP errors):
token buckets, and muting a flooding MAC in a listener's kernel filter, so that its frames
are dropped before user space."""

from __future__ import annotations

import ctypes
import socket
import struct

from .. import packetsock


class TokenBucket:
    """`rate` tokens a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now

    def has(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1

    def take(self, now: float) -> bool:
        if self.has(now):
            self.tokens -= 1
            return True
        return False


def muting(macs: list[bytes], program: list[packetsock.Instruction]
           ) -> list[packetsock.Instruction]:
    """`program` (whose last instruction returns 0: drop) behind a test of the frame's
    source MAC: frames from `macs` are dropped, 4 instructions a MAC."""
    ldw, ldh, jeq = packetsock.LD_W_ABS, packetsock.LD_H_ABS, packetsock.JEQ_K
    reject = 4 * len(macs) + len(program) - 1
    out: list[packetsock.Instruction] = []
    for mac in macs:
        at = len(out)
        out += [(ldw, 0, 0, 6), (jeq, 0, 2, int.from_bytes(mac[:4], "big")),
                (ldh, 0, 0, 10), (jeq, reject - (at + 4), 0, int.from_bytes(mac[4:], "big"))]
    return out + program


def attach(sock: socket.socket, program: list[packetsock.Instruction]) -> None:
    """Replace the socket's filter (atomic in the kernel, which copies the program)."""
    code = packetsock.assemble(program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(code) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, packetsock.SO_ATTACH_FILTER, fprog)
