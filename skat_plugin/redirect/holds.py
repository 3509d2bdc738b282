"""Segments the inspector holds until a request (or a ClientHello) is complete enough to decide.

A request whose Host or path is not in its first segment, or a ClientHello whose server name
is not, is not passed undecided: its segments are held (never delivered, never acknowledged
to the server) until the next segments of the flow arrive (the kernel selects them for a
while after a request start: @follow4/@follow6), then decided as a whole: re-injected in
order, or answered.

Bounded, since every byte comes from the network: MAX_BYTES a flow, MAX_PER_SOURCE flows a
subscriber address, MAX_FLOWS in all, and TTL seconds. A flow that would exceed a bound, or
outlives TTL, is refused by the caller (reset): fail closed for that flow only, never
passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .packet import Segment

MAX_BYTES = 32 * 1024
MAX_PER_SOURCE = 8
MAX_FLOWS = 4096
TTL = 3.0  # s; a sender waiting for an ACK retransmits within ~1 s (and is then ACKed)

Key = tuple[bytes, bytes, int, int]


def key_of(seg: Segment) -> Key:
    return (seg.src, seg.dst, seg.sport, seg.dport)


@dataclass
class Held:
    port: str
    start: int                      # sequence number of the first held byte
    since: float
    segments: dict[int, Segment] = field(default_factory=dict)  # seq -> segment
    size: int = 0
    largest: int = 0                # largest payload seen: a hint of the subscriber's MSS

    def data(self) -> tuple[bytes, int, Segment]:
        """The contiguous bytes from `start`, the sequence number after them, and the
        segment that ends them."""
        out = bytearray()
        seq = self.start
        last = self.segments[self.start]
        while seq in self.segments:
            last = self.segments[seq]
            out += last.payload
            if not last.payload:
                break
            seq = (seq + len(last.payload)) & 0xFFFFFFFF
        return bytes(out), seq, last

    def ordered(self) -> list[Segment]:
        return sorted(self.segments.values(), key=lambda s: (s.seq - self.start) & 0xFFFFFFFF)


class Holds:
    def __init__(self) -> None:
        self.flows: dict[Key, Held] = {}
        self.per_source: dict[bytes, int] = {}

    def get(self, key: Key) -> Held | None:
        return self.flows.get(key)

    def add(self, port: str, seg: Segment) -> Held | None:
        """`seg` held (a new flow or one more segment); None when a bound refuses it."""
        key = key_of(seg)
        held = self.flows.get(key)
        if held is None:
            if (len(self.flows) >= MAX_FLOWS
                    or self.per_source.get(seg.src, 0) >= MAX_PER_SOURCE):
                return None
            held = Held(port, seg.seq, time.monotonic())
            self.flows[key] = held
            self.per_source[seg.src] = self.per_source.get(seg.src, 0) + 1
        if seg.seq in held.segments:
            return held
        if held.size + len(seg.payload) > MAX_BYTES:
            return None
        held.segments[seg.seq] = seg
        held.size += len(seg.payload)
        held.largest = max(held.largest, len(seg.payload))
        return held

    def pop(self, key: Key) -> Held | None:
        held = self.flows.pop(key, None)
        if held is not None:
            left = self.per_source.get(key[0], 1) - 1
            if left > 0:
                self.per_source[key[0]] = left
            else:
                self.per_source.pop(key[0], None)
        return held

    def expired(self, now: float) -> list[tuple[Key, Held]]:
        old = [(k, h) for k, h in self.flows.items() if now - h.since > TTL]
        for k, _ in old:
            self.pop(k)
        return old
