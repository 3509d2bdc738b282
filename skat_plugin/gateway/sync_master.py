"""The master's side of the table sync (sync.py): what it sends, paced within a window of
the backups' acknowledgements, resends, and the dumps of the whole table."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator

from . import subscribers, syncwire
from .sync_link import RETAIN, SILENT
from .syncwire import REC4, REC6, ROOM

SEND_BURST = 16         # datagrams per run() ...
PACE = 0.01             # ... then the next run() after this many seconds
WINDOW = 512            # datagrams sent beyond the slowest backup's acknowledgement
RECEIVER_TTL = 2.0      # s: a backup not heard for this long no longer holds the window
RESEND_HOLDOFF = 0.25   # s: one dseq is resent to one backup at most this often
DUMP_GAP = 2.0          # s between the starts of two dumps of the whole table
BROADCAST = "255.255.255.255"
_DSEQ = itertools.count(1)   # DATA only
_last_dseq = 0  # the highest dseq sent by this process (_send moves it)


class Records:
    """Pairs waiting to be sent, packed (10 or 22 bytes each): a million take 10-22 MB
    where a list of tuples of strings would take ~200 MB. A fed source (a dump of the
    whole table) is packed as it is sent, REFILL pairs at a time: a turn of the loop pays
    only for what it sends."""

    __slots__ = ("at4", "at6", "source", "v4", "v6")
    REFILL = 1024

    def __init__(self, pairs: Iterable[subscribers.Pair] = ()) -> None:
        self.v4, self.v6 = bytearray(), bytearray()
        self.at4 = self.at6 = 0
        self.source: Iterator[subscribers.Pair] | None = None
        self.add(pairs)

    def add(self, pairs: Iterable[subscribers.Pair]) -> None:
        for ip, mac in pairs:
            (self.v6 if ":" in ip else self.v4).extend(syncwire.record(ip, mac))

    def feed(self, source: Iterable[subscribers.Pair]) -> None:
        self.source = iter(source)

    def __len__(self) -> int:
        """Packed and not sent yet (a fed source may hold more)."""
        return (len(self.v4) - self.at4) // REC4 + (len(self.v6) - self.at6) // REC6

    def __bool__(self) -> bool:
        return self.source is not None or len(self) > 0

    def take(self) -> tuple[int, int, bytes]:
        """One datagram's records from the head: (n4, n6, records), IPv4 first."""
        while self.source is not None and len(self) < ROOM // REC4:
            chunk = list(itertools.islice(self.source, self.REFILL))
            if len(chunk) < self.REFILL:
                self.source = None
            self.add(chunk)
        n4 = min((len(self.v4) - self.at4) // REC4, ROOM // REC4)
        n6 = min((len(self.v6) - self.at6) // REC6, (ROOM - n4 * REC4) // REC6)
        out = bytes(self.v4[self.at4:self.at4 + n4 * REC4]
                    + self.v6[self.at6:self.at6 + n6 * REC6])
        self.at4 += n4 * REC4
        self.at6 += n6 * REC6
        if not self:
            self.clear()
        return n4, n6, out

    def clear(self) -> None:
        self.v4, self.v6 = bytearray(), bytearray()
        self.at4 = self.at6 = 0
        self.source = None


class Receiver:
    """What a master knows of one backup (from its ACKs)."""

    __slots__ = ("addr", "heard", "through")

    def __init__(self, addr: str, through: int, heard: float) -> None:
        self.addr, self.through, self.heard = addr, through, heard


class MasterSide:
    """TableSync's methods while master (its state is set up by TableSync.__init__)."""

    def _on_ack(self, msg: syncwire.Message, addr: str, now: float) -> None:
        if not self.is_master or msg.target != self.sender_id:
            return
        rec = self.receivers.get(msg.sender)
        if rec is None:
            if len(self.receivers) >= syncwire.MAX_SENDERS:
                del self.receivers[min(self.receivers, key=lambda s: self.receivers[s].heard)]
            rec = self.receivers[msg.sender] = Receiver(addr, msg.ref, now)
        rec.addr, rec.through, rec.heard = addr, msg.ref, now
        budget = 4 * SEND_BURST  # dseqs looked at per ACK: bounded work, whatever it asks
        for first, last in msg.ranges:
            dseq = first
            while dseq <= last and budget > 0:
                budget -= 1
                key = (addr, dseq)
                if now >= self.resent_at.get(key, -math.inf) + RESEND_HOLDOFF:
                    if dseq in self.retain:
                        self.resent_at[key] = now
                        if len(self.resends) < RETAIN:
                            self.resends.append((dseq, addr))
                    else:  # gone: STATUS tells the backup (it counts it lost)
                        self.resent_at[key] = now + SILENT  # counted once, not every ACK
                        self.count["unavailable"] += 1
                dseq += 1
        if len(self.resent_at) > 4 * RETAIN:  # bounded, whatever the ACKs ask
            self.resent_at = {k: t for k, t in self.resent_at.items()
                              if now < t + RESEND_HOLDOFF}
            if len(self.resent_at) > 2 * RETAIN:
                self.resent_at.clear()
        self.next_at = min(self.next_at, now)

    def _on_request(self, msg: syncwire.Message, now: float) -> None:
        if not self.is_master or msg.target != self.sender_id:
            return
        self.count["requests_received"] += 1
        if (self.dump_first and self.dump_first > msg.ref) or self.dump_done[0] > msg.ref:
            return  # the running (or the last) dump reaches the requester whole
        self.dump_wanted = True
        self.next_at = min(self.next_at, max(now, self.dump_not_before))

    def _run_master(self, now: float) -> None:
        if not self.offers and now >= self.round_at:
            try:
                fresh = subscribers.read_fresh()
            except Exception as e:  # never the daemon's end; the next round tries again
                self._once("read-error", f"subscriber-table sync: reading @fresh failed: {e}")
                fresh = []
            self.offers.add(self._offers(fresh, now))
        if self.dump_wanted and not self.dump_first and now >= self.dump_not_before:
            self._start_dump(now)
        self._send(now)
        if self.sock is None:
            return
        if self.dump_first and not self.dump:  # the dump's last datagram went out
            self.dump_done = (self.dump_first, _last_dseq)
            self.dump_first = 0
            self.count["dumps"] += 1
            self.round_at = now  # say so now: the backups stop asking
        if now >= self.round_at:
            self._status()
        if self.resends or self.offers or self.dump:
            self.next_at = now + PACE
        elif self.dump_wanted:
            self.next_at = max(now + PACE, self.dump_not_before)

    def _offers(self, fresh: Iterable[subscribers.Pair], now: float) -> list[subscribers.Pair]:
        """The fresh pairs not offered with the same MAC within resend_after."""
        self.sent = {ip: v for ip, v in self.sent.items() if now - v[1] < self.resend_after}
        out = [(ip, mac) for ip, mac in fresh if self.sent.get(ip, ("",))[0] != mac]
        for ip, mac in out:
            self.sent[ip] = (mac, now)
        return out

    def _start_dump(self, now: float) -> None:
        self.dump_wanted = False
        self.dump_not_before = now + DUMP_GAP
        try:
            table = subscribers.read()
        except Exception as e:
            self._once("dump-error", f"subscriber-table sync: reading the table failed: {e}")
            return
        self.dump.feed((sub.ip, sub.mac) for sub in table)
        self.dump_first = _last_dseq + 1

    def _window_open(self, now: float) -> bool:
        """Room to send: a live backup never misses more than we keep for resending."""
        live = [r.through for r in self.receivers.values() if now - r.heard < RECEIVER_TTL]
        return not live or _last_dseq - min(live) < min(WINDOW, RETAIN)

    def _send(self, now: float) -> None:
        global _last_dseq
        targets = self.peers or [BROADCAST]
        for _ in range(SEND_BURST):
            if self.sock is None:
                return
            if self.resends:
                dseq, addr = self.resends.popleft()
                kept = self.retain.get(dseq)
                if kept is not None and self._sendto(
                        syncwire.data(*self._header(), dseq, *kept), addr, now):
                    self.count["resent"] += 1
                continue
            queue = self.offers if self.offers else self.dump
            if not queue:
                return
            if not self._window_open(now):
                self.count["window_full"] += 1
                return
            n4, n6, records = queue.take()
            if not n4 + n6:  # a fed source that ran dry
                continue
            if queue is self.dump:
                self.count["dump_pairs"] += n4 + n6
            dseq = _last_dseq = next(_DSEQ)
            self.retain[dseq] = (n4, n6, records)
            if len(self.retain) > RETAIN:
                self.retain.popitem(last=False)
            data = syncwire.data(*self._header(), dseq, n4, n6, records)
            delivered = [self._sendto(data, target, now) for target in targets]
            if any(delivered):
                self.count["sent_messages"] += 1
                self.count["sent_pairs"] += n4 + n6

    def _status(self) -> None:
        kept = next(iter(self.retain)) if self.retain else _last_dseq + 1
        data = syncwire.status(*self._header(), _last_dseq, self.dump_done, kept)
        for target in self.peers or [BROADCAST]:
            if self._sendto(data, target, time.monotonic()):
                self.count["status_sent"] += 1

