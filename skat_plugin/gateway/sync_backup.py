"""The backup's side of the table sync (sync.py): one stream per master, gaps asked for
again or counted lost, acknowledgements, and the pairs stored into the dormant table."""

from __future__ import annotations

import math
from typing import Any

from . import subscribers, syncwire
from .sync_link import RETAIN, SILENT

RECV_BURST = 8          # datagrams per handle(), stored in one transaction
ACK_INTERVAL = 0.02     # s between a backup's acknowledgements to one master
NACK_DELAY = 0.01       # s a missing dseq waits (reordering) before it is asked for
RENACK = 0.05           # s after asking, and the socket emptied since: ask again
REQUEST_RETRY = 3.0     # s between requests for the whole table
LOST_REQUEST_GAP = 0.5  # s: after a loss, the next request (sooner than a retry)
MAX_MISSING = 2 * RETAIN  # dseqs a backup asks for; older ones cannot be resent anyway


class Stream:
    """What a backup knows of one master's data stream."""

    __slots__ = ("acked_at", "addr", "base", "heard", "high", "missing", "request_at",
                 "requested_at", "unacked", "want_dump")

    def __init__(self, addr: str, base: int, now: float) -> None:
        self.addr = addr
        self.base = base        # every dseq after it is ours to receive (or count lost)
        self.high = base        # the highest dseq known to exist
        # dseq -> [when it may be asked for (again), asked before]
        self.missing: dict[int, list[Any]] = {}
        self.unacked = False    # something arrived since the last ACK
        self.acked_at = -math.inf
        self.want_dump = True   # a first contact: ask for the whole table
        self.request_at = now
        self.requested_at = -math.inf
        self.heard = now

    def through(self) -> int:
        """Every dseq up to this one has arrived or is given up."""
        return min(self.missing) - 1 if self.missing else self.high


class BackupSide:
    """TableSync's methods while backup (its state is set up by TableSync.__init__)."""

    def _stream(self, sender: bytes, addr: str, base: int, now: float) -> Stream:
        st = self.streams.get(sender)
        if st is None:
            if len(self.streams) >= syncwire.MAX_SENDERS:  # forget the longest silent
                del self.streams[min(self.streams, key=lambda s: self.streams[s].heard)]
            st = self.streams[sender] = Stream(addr, base, now)
            self.next_at = 0.0  # ask for the whole table at once
        st.addr, st.heard = addr, now
        return st

    def _on_data(self, msg: syncwire.Message, addr: str, now: float) -> list[subscribers.Pair]:
        if self.is_master:  # never into the live table: the master's own learning rules
            self.count["ignored_pairs"] += len(msg.pairs)
            return []
        st = self._stream(msg.sender, addr, max(0, msg.ref - 1), now)
        dseq = msg.ref
        if dseq > st.high:
            self._missing(st, st.high + 1, dseq - 1, now)
            st.high = dseq
        elif st.missing.pop(dseq, None) is not None:
            self.count["recovered"] += 1
        else:
            self.count["duplicates"] += 1
            return []
        st.unacked = True
        self.next_at = min(self.next_at, max(now, st.acked_at + ACK_INTERVAL))
        self.count["received_messages"] += 1
        self.count["received_pairs"] += len(msg.pairs)
        return msg.pairs

    def _missing(self, st: Stream, first: int, last: int, now: float) -> None:
        """dseqs first..last did not arrive (yet)."""
        if last < first:
            return
        self.count["gaps"] += last - first + 1
        room = MAX_MISSING - len(st.missing)
        if last - first + 1 > room:  # too many to ask for: lost now, a dump repairs them
            self.count["lost"] += last - first + 1 - max(room, 0)
            first = last - max(room, 0) + 1
            self._want_dump(st, now)
        for dseq in range(first, last + 1):
            st.missing[dseq] = [now + NACK_DELAY, False]
        self.next_at = min(self.next_at, now + NACK_DELAY)

    def _lose(self, sender: bytes, st: Stream, dseqs: list[int], why: str, now: float) -> None:
        """These will not come: counted, and a dump asked for."""
        for dseq in dseqs:
            del st.missing[dseq]
        self.count["lost"] += len(dseqs)
        self._once(f"lost:{sender.hex()}", f"subscriber-table sync: {len(dseqs)} "
                   f"datagram(s) from {st.addr} lost ({why}; counted in `lost`); asking for "
                   f"the whole table again")
        self._want_dump(st, now)

    def _want_dump(self, st: Stream, now: float) -> None:
        """Something is lost: only a dump that starts after now repairs it."""
        st.want_dump = True
        st.base = st.high
        st.request_at = min(st.request_at, max(now, st.requested_at + LOST_REQUEST_GAP))

    def _on_status(self, msg: syncwire.Message, addr: str, now: float) -> None:
        if self.is_master:
            return
        st = self._stream(msg.sender, addr, msg.ref, now)
        if msg.ref > st.high:  # the tail of a burst did not arrive (yet)
            self._missing(st, st.high + 1, msg.ref, now)
            st.high = msg.ref
        gone = [dseq for dseq in st.missing if dseq < msg.kept]
        if gone:
            self._lose(msg.sender, st, gone, "the master no longer keeps them", now)
        first, last = msg.dump
        if st.want_dump and first > st.base and st.through() >= last:
            st.want_dump = False  # a whole dump after our request has arrived
            self.count["full_syncs"] += 1

    def _store(self, pairs: list[subscribers.Pair]) -> None:
        pairs = list(dict(pairs).items())  # the last word on an IP wins, as in store()
        try:
            stored = subscribers.store(pairs)
        except Exception as e:  # the kernel's table is not ours to crash the daemon over
            self._once("store-error", f"subscriber-table sync: storing failed: {e}")
            return
        self.count["stored_pairs"] += stored
        if stored < len(pairs):
            self._once("store-short", f"subscriber-table sync: {len(pairs) - stored} of "
                       f"{len(pairs)} received pairs not stored (no such map here: is the "
                       f"gateway, or its IPv6, configured alike on the group?)")

    def _run_backup(self, now: float) -> None:
        for sender, st in list(self.streams.items()):
            if st.missing and now - st.heard >= SILENT:
                self._lose(sender, st, list(st.missing), f"silent for {SILENT:g} s", now)
            if st.want_dump and now >= st.request_at:
                st.request_at, st.requested_at = now + REQUEST_RETRY, now
                data = syncwire.request(*self._header(), sender, st.base)
                if self._sendto(data, st.addr, now):
                    self.count["requests_sent"] += 1
            if (st.unacked or st.missing) and now >= st.acked_at + ACK_INTERVAL:
                self._ack(sender, st, now)
            if self.sock is None:
                return
            if st.unacked or st.missing:
                self.next_at = min(self.next_at, st.acked_at + ACK_INTERVAL)
            if st.missing:
                self.next_at = min(self.next_at, st.heard + SILENT)
            if st.want_dump:
                self.next_at = min(self.next_at, st.request_at)

    def _ack(self, sender: bytes, st: Stream, now: float) -> None:
        """What arrived (through) and what to resend. A dseq is asked for once it had time
        to arrive out of order (NACK_DELAY), and again only once the socket was empty
        after RENACK: a resend queued behind a burst is not asked for twice."""
        ranges: list[tuple[int, int]] = []
        for dseq in sorted(st.missing):
            due = st.missing[dseq]
            if now < due[0] or (due[1] and self.drained_at < due[0]):
                continue
            if ranges and ranges[-1][1] == dseq - 1:
                ranges[-1] = (ranges[-1][0], dseq)
            elif len(ranges) < syncwire.MAX_RANGES:
                ranges.append((dseq, dseq))
            else:
                break
            due[0], due[1] = now + RENACK, True
        if not ranges and not st.unacked:
            st.acked_at = now  # nothing to say: look again after ACK_INTERVAL
            return
        data = syncwire.ack(*self._header(), sender, st.through(), ranges)
        st.acked_at, st.unacked = now, False
        if self._sendto(data, st.addr, now):
            self.count["acks_sent"] += 1

