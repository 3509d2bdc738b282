"""The subscriber-table sync: the master tells the group which subscribers it carries.

Why: with bras_terminate_l2=1 the master's kernel learns each subscriber's IP -> MAC
(nft/gateway.nft). Border traffic to a subscriber the gateway has not learned is dropped,
and a quiet subscriber may not speak for minutes. So that a new master carries every
subscriber active within bras_subscriber_timeout at once after a takeover, each backup
keeps a copy of the master's table in its own dormant maps. Like conntrackd, but the table
is small: one IP and one MAC per subscriber.

What may send to it, and what it believes (docs/security.md, "Table sync"):
- Only datagrams that pass nft reach the socket: UDP vrrp_sync_port on vrrp_interface with
  TTL 255 (never routed), and with vrrp_unicast_peers only from a peer
  (nft/vrrp-firewall.nft). The socket is bound to that interface; it checks the peers too.
- Every datagram carries an HMAC-SHA256 with the group key (vrrp_sync_key_file), a per-
  sender sequence number and a time stamp (syncwire.py). decode() never raises; what it or
  the replay check refuses is counted per reason (counters()["refused"]) and logged once
  per reason. Each datagram is handled inside its own error boundary: none ends the daemon.
- Without a key (vrrp_sync_key_file unset or unusable) the sync is off: no socket, nothing
  sent or taken, said once in the journal and by `fdpi_cli check` (warning_for()).
- A master never writes what it receives into its (live) table: it counts it
  (ignored_pairs). Only a backup stores pairs, into its dormant table.

How (the data stream):
- The kernel offers pairs: a pair new to it, with a changed MAC, or due again (every
  max(5, timeout/3) s while the subscriber is active) is put into @fresh4/@fresh6 for
  max(3, 3 x vrrp_sync_interval) s. The master reads those small sets every
  vrrp_sync_interval s (0 = off) and sends what it did not send in the last few seconds.
- A backup that hears a master for the first time asks it for the whole table (REQUEST);
  the master reads its map once and sends it, paced, after the fresh offers. STATUS, every
  vrrp_sync_interval, says how far the master's stream goes and which dump it sent last.
- Every DATA datagram has a data sequence number (dseq). A backup acknowledges what it
  got (ACK, at most every ACK_INTERVAL) and lists the dseqs it misses; the master resends
  those from the last RETAIN datagrams. A dseq the master no longer keeps (its STATUS
  says from where it keeps them), or that a master silent for SILENT s still owes, is
  counted lost, and the backup asks for the whole table again. So a burst arrives whole,
  or every lost datagram is counted (`lost`) and repaired by a dump.
- Pacing: at most SEND_BURST datagrams per PACE s, and at most WINDOW datagrams beyond
  the slowest backup's acknowledgement (backups heard within RECEIVER_TTL): the receivers'
  socket buffers never overflow, however large the table.
- A backup takes at most RECV_BURST datagrams per turn of the daemon's loop and stores
  their pairs in one transaction (subscribers.store): about 1,000 pairs, a few ms.
- Transport: UDP vrrp_sync_port on vrrp_interface (never a bridge port), TTL 255, marked
  with vrrp_socket_mark like every sender of the plugin. Unicast to each of
  vrrp_unicast_peers when they are set, else broadcast to 255.255.255.255 on that
  interface; ACK and REQUEST go to the master's address.

The daemon drives it as an event source: fds() and handle(fd, now) for the socket,
next_due() and run(now) for the timer; the daemon sets is_master with the role.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import secrets
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Any

from .. import report
from ..config import Config
from . import subscribers, syncwire
from .syncwire import MAX_DATAGRAM, REC4, REC6, ROOM

SEND_BURST = 16         # datagrams per run() ...
PACE = 0.01             # ... then the next run() after this many seconds
WINDOW = 512            # datagrams sent beyond the slowest backup's acknowledgement
RETAIN = 2048           # datagrams kept for resending (at most ~2.7 MB)
RECEIVER_TTL = 2.0      # s: a backup not heard for this long no longer holds the window
RECV_BURST = 8          # datagrams per handle(), stored in one transaction
ACK_INTERVAL = 0.02     # s between a backup's acknowledgements to one master
NACK_DELAY = 0.01       # s a missing dseq waits (reordering) before it is asked for
RENACK = 0.05           # s after asking, and the socket emptied since: ask again
SILENT = 10.0           # s without a word from a master: what it still owes us is lost
RESEND_HOLDOFF = 0.25   # s: one dseq is resent to one backup at most this often
REQUEST_RETRY = 3.0     # s between requests for the whole table
LOST_REQUEST_GAP = 0.5  # s: after a loss, the next request (sooner than a retry)
DUMP_GAP = 2.0          # s between the starts of two dumps of the whole table
MAX_MISSING = 2 * RETAIN  # dseqs a backup asks for; older ones cannot be resent anyway
RCVBUF = 4 << 20        # a window of datagrams must fit: 512 x ~2.3 KiB
SNDBUF = 1 << 20
REOPEN = 5.0            # seconds between attempts to open the socket
KEY_CHECK = 5.0         # seconds between looks at the key file (a new key is taken)
BROADCAST = "255.255.255.255"
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python 3.11 lacks the name
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

# One sender id per process, and its counters: a socket reopened after a reload goes on
# with the same stream (the backups see no new master), and knows its own broadcasts.
PROCESS_SENDER_ID = secrets.token_bytes(8)
_SEQ = itertools.count(1)    # every message
_DSEQ = itertools.count(1)   # DATA only
_last_dseq = 0


def key_of(cfg: Config) -> tuple[bytes | None, str | None]:
    """(the group key, None), or (None, why the sync cannot run)."""
    path = cfg.get("vrrp_sync_key_file")
    if path is None:
        return None, ("vrrp_sync_key_file is not set: the subscriber-table sync is off (it "
                      "takes no unauthenticated messages), so a new master learns each "
                      "subscriber only when it speaks. Fix: `umask 077; openssl rand -hex "
                      "32 > /etc/dpi/sync.key` on one appliance, copy the file to the "
                      "others, set vrrp_sync_key_file=/etc/dpi/sync.key on all, and "
                      "`fdpi_cli reload`")
    try:
        return syncwire.load_key(path), None
    except syncwire.KeyFileError as e:
        return None, f"vrrp_sync_key_file: {e}; the subscriber-table sync is off"


def wanted(cfg: Config) -> bool:
    """Does this configuration ask for a sync (with or without a key)?"""
    return bool(cfg.vrrp_enabled and cfg.terminates and cfg.get("vrrp_interface")
                and float(cfg.get("vrrp_sync_interval", 1.0)) > 0)


def warning_for(cfg: Config) -> str | None:
    """What `fdpi_cli check` says at warning level about the sync, if anything."""
    return key_of(cfg)[1] if wanted(cfg) else None


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


class Receiver:
    """What a master knows of one backup (from its ACKs)."""

    __slots__ = ("addr", "heard", "through")

    def __init__(self, addr: str, through: int, heard: float) -> None:
        self.addr, self.through, self.heard = addr, through, heard


class TableSync:
    """The sync of one configuration; the daemon makes a new one when it changes."""

    def __init__(self, cfg: Config, sender_id: bytes | None = None,
                 key: bytes | None = None) -> None:
        self._master = False  # the daemon follows the role; only a master sends data
        self.interval = float(cfg.get("vrrp_sync_interval", 1.0))
        self.router_id = int(cfg.get("vrrp_router_id", 51))
        self.port = int(cfg.get("vrrp_sync_port", 23720))
        self.ifname: str | None = cfg.get("vrrp_interface")
        self.peers: list[str] = list(cfg.get("vrrp_unicast_peers") or [])
        self.source: str | None = cfg.get("vrrp_unicast_src")
        self.mark = int(cfg.get("vrrp_socket_mark", 0x5CA7))
        self.sender_id = sender_id or PROCESS_SENDER_ID
        self.key_file: str | None = cfg.get("vrrp_sync_key_file")
        timeout = int(cfg.get("bras_subscriber_timeout", 300))
        # As render.py sets them: how long an offer stays in @fresh, and how often a live
        # subscriber is offered again. An offer seen once is not sent again while it can
        # still be in @fresh (but always before it can be due again).
        fresh = max(3, math.ceil(3 * self.interval))
        self.resend_after = float(min(fresh, max(5, timeout // 3)))
        self.logged: set[str] = set()  # problems already reported once
        self.count: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.off_reason: str | None = None
        self.key: bytes | None = key
        self.key_sig: tuple[int, int, int] | None = None
        self.key_checked = 0.0
        self.enabled = wanted(cfg)
        if self.enabled and self.key is None:
            self.key, self.off_reason = key_of(cfg)
            if self.key is None:
                self.enabled = False
                report.warning(f"subscriber-table sync: {self.off_reason}", cause="sync")
            else:
                self.key_sig = self._key_sig()
        self.sock: socket.socket | None = None
        self.next_at = 0.0                  # the next run() with something to do: at once
        self.round_at = 0.0                 # the next read of @fresh, and STATUS
        self.reopen_at = 0.0
        self.replay = syncwire.Replay()
        # The master's side.
        self.offers = Records()             # fresh pairs, sent first
        self.dump = Records()               # the whole table, for a backup that asked
        self.sent: dict[str, tuple[str, float]] = {}  # ip -> (mac, when) of the last offer
        self.retain: OrderedDict[int, tuple[int, int, bytes]] = OrderedDict()
        self.resends: deque[tuple[int, str]] = deque()  # (dseq, backup's address), in order
        self.resent_at: dict[tuple[str, int], float] = {}
        self.receivers: dict[bytes, Receiver] = {}
        self.dump_wanted = False
        self.dump_first = 0                 # the running dump's first dseq (0: none)
        self.dump_done = (0, 0)             # the last complete dump's (first, last) dseq
        self.dump_not_before = 0.0
        # The backups' side: one stream per master heard.
        self.streams: dict[bytes, Stream] = {}
        self.drained_at = -math.inf         # when the socket was last found empty
        if self.enabled:
            self._open()

    # -- the role ----------------------------------------------------------------------------
    @property
    def is_master(self) -> bool:
        return self._master

    @is_master.setter
    def is_master(self, value: bool) -> None:
        if value == self._master:
            return
        self._master = value
        if value:  # what we knew as a backup is stale when we are backup again
            self.streams.clear()
        else:      # a former master's queues are stale
            self.offers.clear()
            self.dump.clear()
            self.resends.clear()
            self.receivers.clear()
            self.dump_first, self.dump_wanted = 0, False
        self.next_at = 0.0

    # -- the socket --------------------------------------------------------------------------
    def _open(self) -> bool:
        assert self.ifname is not None
        sock = socket.socket(socket.AF_INET,
                             socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.ifname.encode())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            # Never routed: the peers' nft accepts TTL 255 only (RFC 5082's idea).
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
            for force, plain, size in ((SO_RCVBUFFORCE, socket.SO_RCVBUF, RCVBUF),
                                       (SO_SNDBUFFORCE, socket.SO_SNDBUF, SNDBUF)):
                try:  # root may go past net.core.rmem_max
                    sock.setsockopt(socket.SOL_SOCKET, force, size)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, plain, size)
            if self.peers and self.source:
                # Bound to our own address: peers see the source they expect. FREEBIND: the
                # address may come up after the daemon.
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                sock.bind((self.source, self.port))
            else:
                sock.bind(("", self.port))
        except OSError as e:
            sock.close()
            self._once(f"open:{e.errno}", f"subscriber-table sync: cannot open UDP port "
                       f"{self.port} on {self.ifname}: {e.strerror or e}; retrying every "
                       f"{REOPEN:g} s")
            return False
        self.sock = sock
        self.logged = {k for k in self.logged if not k.startswith("open:")}
        assert self.key is not None
        report.event(f"subscriber-table sync on {self.ifname} port {self.port}: "
                     + (f"unicast to {', '.join(self.peers)}" if self.peers else "broadcast")
                     + f", key {syncwire.fingerprint(self.key)}", cause="sync")
        return True

    def _drop_socket(self, now: float) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.reopen_at = now + REOPEN

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.enabled = False

    def fds(self) -> list[int]:
        return [self.sock.fileno()] if self.sock is not None else []

    def _sendto(self, data: bytes, target: str, now: float) -> bool:
        if self.sock is None:  # dropped a moment ago (the interface went)
            return False
        try:
            self.sock.sendto(data, (target, self.port))
        except OSError as e:
            self.count["send_errors"] += 1
            self._once(f"send:{target}:{e.errno}", f"subscriber-table sync: send to {target} "
                       f"on {self.ifname}: {e.strerror or e}")
            if e.errno in (errno.ENODEV, errno.ENXIO):  # interface gone: reopen
                self.offers.clear()
                self.dump.clear()
                self.dump_first = 0
                self._drop_socket(now)
            return False
        if self.logged:  # a failure that ends is reported again when it recurs
            self.logged = {k for k in self.logged if not k.startswith(f"send:{target}:")}
        return True

    def _header(self) -> tuple[bytes, int, bytes, int, int]:
        assert self.key is not None
        return self.key, self.router_id, self.sender_id, next(_SEQ), int(time.time() * 1000)

    # -- receiving ---------------------------------------------------------------------------
    def handle(self, fd: int, now: float) -> None:
        """Receive what is pending (bounded), and store the accepted pairs in one go."""
        if self.sock is None or fd != self.sock.fileno():
            return
        pairs: list[subscribers.Pair] = []
        for _ in range(RECV_BURST):
            try:
                data, (addr, _port) = self.sock.recvfrom(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                self.drained_at = now  # all that was sent to us before now is read
                break
            except OSError as e:  # e.g. an ICMP error queued for an earlier send
                self._once(f"recv:{e.errno}", f"subscriber-table sync: receive: {e}")
                break
            try:  # one datagram's error boundary: it is dropped and counted, never fatal
                pairs += self.accept(data, addr, now)
            except Exception as e:
                self._refuse("internal", f"from {addr}: {e!r}")
        if pairs:
            self._store(pairs)

    def accept(self, data: bytes, addr: str, now: float | None = None) -> list[subscribers.Pair]:
        """One datagram: the pairs to store (a backup's share of DATA), else []."""
        now = time.monotonic() if now is None else now
        if self.peers and addr not in self.peers:
            return self._refuse("peer", f"from {addr}")
        assert self.key is not None
        msg = syncwire.decode(data, self.key, self.router_id)
        if isinstance(msg, str):
            return self._refuse(msg, f"from {addr}")
        if msg.sender == self.sender_id:
            return []  # our own broadcast, looped back
        why = self.replay.check(msg, int(time.time() * 1000))
        if why is not None:
            return self._refuse(why, f"from {addr}")
        if msg.type == syncwire.DATA:
            return self._on_data(msg, addr, now)
        if msg.type == syncwire.STATUS:
            self._on_status(msg, addr, now)
        elif msg.type == syncwire.ACK:
            self._on_ack(msg, addr, now)
        else:
            self._on_request(msg, now)
        return []

    def _refuse(self, reason: str, text: str) -> list[subscribers.Pair]:
        self.refused[reason] += 1
        self._once(f"refused:{reason}", f"subscriber-table sync: refused a message {text}: "
                   f"{syncwire.REFUSALS.get(reason, reason)} (logged once; counted in "
                   f"refused.{reason})")
        return []

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

    # -- the timer ---------------------------------------------------------------------------
    def next_due(self) -> float | None:
        if not self.enabled:
            return None
        if self.sock is None:
            return self.reopen_at
        return min(self.next_at, self.round_at)

    def run(self, now: float) -> None:
        if not self.enabled:
            return
        if self.sock is None:
            if now >= self.reopen_at and not self._open():
                self.reopen_at = now + REOPEN
            if self.sock is None:
                return
        if now >= self.key_checked + KEY_CHECK:
            self._check_key(now)
        if now < self.next_at and now < self.round_at:
            return
        self.next_at = math.inf
        try:  # the timer's error boundary: a bug here must not end the daemon either
            if self.is_master:
                self._run_master(now)
            else:
                self._run_backup(now)
        except Exception as e:
            self.count["internal_errors"] += 1
            self._once("run-error", f"subscriber-table sync: internal error: {e!r}")
            self.next_at = now + REOPEN
        if now >= self.round_at:
            self.round_at = now + self.interval

    # -- the master's turn -------------------------------------------------------------------
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

    # -- a backup's turn ---------------------------------------------------------------------
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

    # -- the key -----------------------------------------------------------------------------
    def _key_sig(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.key_file) if self.key_file else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size) if st else None

    def _check_key(self, now: float) -> None:
        """A changed key file is taken at once (rotating the key needs no reload)."""
        self.key_checked = now
        if not self.key_file:
            return
        sig = self._key_sig()
        if sig == self.key_sig:
            return
        self.key_sig = sig
        try:
            key = syncwire.load_key(self.key_file)
        except syncwire.KeyFileError as e:
            self._once("key", f"subscriber-table sync: vrrp_sync_key_file: {e}; keeping "
                       f"the key loaded before")
            return
        self.logged.discard("key")
        if key != self.key:
            self.key = key
            report.event(f"subscriber-table sync: new key {syncwire.fingerprint(key)} "
                         f"from {self.key_file}", cause="sync")

    # -- reporting ---------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        names = ("sent_pairs", "sent_messages", "resent", "unavailable", "window_full",
                 "status_sent", "dumps", "dump_pairs", "requests_received",
                 "received_pairs", "received_messages", "stored_pairs", "ignored_pairs",
                 "duplicates", "gaps", "recovered", "lost", "acks_sent", "requests_sent",
                 "full_syncs", "send_errors", "internal_errors")
        out: dict[str, Any] = {name: self.count[name] for name in names}
        out["refused_messages"] = sum(self.refused.values())
        out["refused"] = dict(self.refused)
        out["state"] = "on" if self.enabled else f"off: {self.off_reason or 'not configured'}"
        if self.key is not None:
            out["key"] = syncwire.fingerprint(self.key)
        return out

    def _once(self, key: str, text: str) -> None:
        if key not in self.logged:
            self.logged.add(key)
            report.warning(text, cause="sync")
