"""The subscriber-table sync: the master tells the group which subscribers it carries.

Why: with bras_terminate_l2=1 the master's kernel learns each subscriber's IP -> MAC
(nft/gateway.nft). Border traffic to a subscriber the gateway has not learned is dropped,
and a quiet subscriber may not speak for minutes. So that a new master carries every
subscriber active within bras_subscriber_timeout at once after a takeover, each appliance
keeps a copy of the master's table in its own (dormant, in backup) maps. Like conntrackd,
but the table is tiny: one IP and one MAC per subscriber.

How:
- The kernel offers pairs: a pair new to it, with a changed MAC, or due again (every
  max(5, timeout/3) s while the subscriber is active) is put into @fresh4/@fresh6 for
  max(3, 3 x vrrp_sync_interval) s. Nothing tells user space about packet-path additions,
  so the master reads those small sets every vrrp_sync_interval s (0 = off) and sends what
  it did not send in the last few seconds with the same MAC.
- Transport: UDP port vrrp_sync_port on vrrp_interface (never a bridge port), marked with
  vrrp_socket_mark like every sender of the plugin. Unicast to each of vrrp_unicast_peers
  when they are set, else broadcast to 255.255.255.255 on that interface.
- Message: one JSON object per datagram of at most 1400 bytes (no IP fragments):
  {"v": 1, "router_id": vrrp_router_id, "sender": id, "pairs": [[ip, mac], ...]}.
- Receiving, in any role: the pairs of a message are written into sub4/sub6 with the full
  timeout (subscribers.store: replaces a different MAC, renews a known one). Refused and
  counted: another router id (another group on the same segment), a malformed message,
  and with unicast peers, a source that is not one of them. Each reason is logged once.
  The appliance's own broadcasts come back to it and are ignored by their sender id.

The daemon drives it as an event source: fds() and handle(fd, now) for the socket,
next_due() and run(now) for the timer; the daemon sets is_master with the role. The
socket is opened when the sync is on; an interface that is missing yet is retried every
few seconds.
"""

from __future__ import annotations

import errno
import json
import math
import secrets
import socket
from collections.abc import Iterable
from typing import Any

from .. import report
from ..config import Config
from . import subscribers

VERSION = 1
MAX_DATAGRAM = 1400     # stays under any Ethernet MTU with IP and UDP headers
SEND_BURST = 32         # datagrams per run(); the rest follows after PACE (a takeover's
PACE = 0.02             # first offers can be the whole table)
RECV_BURST = 64         # datagrams per handle(), stored in one transaction
RCVBUF = 4 << 20        # a burst of offers must not overflow the default 208 KiB
REOPEN = 5.0            # seconds between attempts to open the socket
BROADCAST = "255.255.255.255"
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python 3.11 lacks the name

# One id per process: a socket reopened after a reload still knows its own broadcasts.
PROCESS_SENDER_ID = secrets.token_hex(8)


class TableSync:
    """The sync of one configuration; the daemon makes a new one when it changes."""

    def __init__(self, cfg: Config, sender_id: str | None = None) -> None:
        self.is_master = False  # the daemon follows the role; only a master sends
        self.interval = float(cfg.get("vrrp_sync_interval", 1.0))
        self.router_id = int(cfg.get("vrrp_router_id", 51))
        self.port = int(cfg.get("vrrp_sync_port", 23720))
        self.ifname: str | None = cfg.get("vrrp_interface")
        self.peers: list[str] = list(cfg.get("vrrp_unicast_peers") or [])
        self.source: str | None = cfg.get("vrrp_unicast_src")
        self.mark = int(cfg.get("vrrp_socket_mark", 0x5CA7))
        self.sender_id = sender_id or PROCESS_SENDER_ID
        timeout = int(cfg.get("bras_subscriber_timeout", 300))
        # As render.py sets them: how long an offer stays in @fresh, and how often a live
        # subscriber is offered again. An offer seen once is not sent again while it can
        # still be in @fresh (but always before it can be due again).
        fresh = max(3, math.ceil(3 * self.interval))
        self.resend_after = float(min(fresh, max(5, timeout // 3)))
        self.enabled = bool(cfg.vrrp_enabled and cfg.terminates and self.ifname
                            and self.interval > 0)
        self.sock: socket.socket | None = None
        self.next_at = 0.0                  # the next run() with something to do: at once
        self.round_at = 0.0                 # the next read of @fresh
        self.reopen_at = 0.0
        self.backlog: list[subscribers.Pair] = []
        self.sent: dict[str, tuple[str, float]] = {}  # ip -> (mac, when) of the last send
        self.logged: set[str] = set()  # problems already reported once
        self.sent_pairs = 0
        self.sent_messages = 0
        self.received_pairs = 0
        self.received_messages = 0
        self.stored_pairs = 0
        self.refused_messages = 0
        self.send_errors = 0
        if self.enabled:
            self._open()

    # -- the socket --------------------------------------------------------------------------
    def _open(self) -> bool:
        assert self.ifname is not None
        sock = socket.socket(socket.AF_INET,
                             socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.ifname.encode())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            try:  # root may go past net.core.rmem_max
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
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
        report.event(f"subscriber-table sync on {self.ifname} port {self.port}: "
                     + (f"unicast to {', '.join(self.peers)}" if self.peers else "broadcast"),
                     cause="sync")
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
                break
            except OSError as e:  # e.g. an ICMP error queued for an earlier send
                self._once(f"recv:{e.errno}", f"subscriber-table sync: receive: {e}")
                break
            accepted = self.accept(data, addr)
            if accepted is not None:
                pairs += accepted
        if pairs:
            self._store(pairs)

    def accept(self, data: bytes, addr: str) -> list[subscribers.Pair] | None:
        """The pairs of one datagram, or None when it is refused or our own."""
        if self.peers and addr not in self.peers:
            return self._refuse("peer", f"from {addr}, which is not in vrrp_unicast_peers")
        msg = _decode(data)
        if isinstance(msg, str):
            return self._refuse("malformed", f"from {addr}: {msg}")
        if msg["sender"] == self.sender_id:
            return None  # our own broadcast, looped back
        if msg["router_id"] != self.router_id:
            return self._refuse("router_id", f"from {addr} for router id "
                                f"{msg['router_id']}, ours is {self.router_id}")
        self.received_messages += 1
        self.received_pairs += len(msg["pairs"])
        return msg["pairs"]

    def _refuse(self, reason: str, text: str) -> None:
        self.refused_messages += 1
        self._once(f"refused:{reason}", f"subscriber-table sync: refused a message {text} "
                                        f"(logged once; see refused_messages)")
        return None

    def _store(self, pairs: list[subscribers.Pair]) -> None:
        try:
            stored = subscribers.store(pairs)
        except Exception as e:  # the kernel's table is not ours to crash the daemon over
            self._once("store-error", f"subscriber-table sync: storing failed: {e}")
            return
        self.stored_pairs += stored
        if stored < len(pairs):
            self._once("store-short", f"subscriber-table sync: {len(pairs) - stored} of "
                       f"{len(pairs)} received pairs not stored (no such map here: is the "
                       f"gateway, or its IPv6, configured alike on the group?)")

    # -- sending -----------------------------------------------------------------------------
    def next_due(self) -> float | None:
        if not self.enabled:
            return None
        if self.sock is None:
            return self.reopen_at
        return self.next_at

    def run(self, now: float) -> None:
        if not self.enabled:
            return
        if self.sock is None:
            if now >= self.reopen_at and not self._open():
                self.reopen_at = now + REOPEN
            if self.sock is None:
                return
        if now < self.next_at:
            return
        if not self.is_master:  # a backup sends nothing; a former master's backlog is stale
            self.backlog.clear()
        elif not self.backlog and now >= self.round_at:
            self.round_at = now + self.interval
            try:
                fresh = subscribers.read_fresh()
            except Exception as e:  # never the daemon's end; the next round tries again
                self._once("read-error", f"subscriber-table sync: reading @fresh failed: {e}")
                fresh = []
            self.backlog = self._offers(fresh, now)
        if self.backlog:
            self._send(now)
        if now >= self.round_at:  # a backup keeps the rhythm too
            self.round_at = now + self.interval
        self.next_at = now + PACE if self.backlog else self.round_at

    def _offers(self, fresh: Iterable[subscribers.Pair], now: float) -> list[subscribers.Pair]:
        """The fresh pairs not sent with the same MAC within resend_after."""
        self.sent = {ip: v for ip, v in self.sent.items() if now - v[1] < self.resend_after}
        return [(ip, mac) for ip, mac in fresh if self.sent.get(ip, ("",))[0] != mac]

    def _send(self, now: float) -> None:
        assert self.sock is not None
        targets = self.peers or [BROADCAST]
        for _ in range(SEND_BURST):
            if not self.backlog:
                return
            # A datagram holds at most ~40 pairs; pack() looks at the head only.
            data, count = pack(self.backlog[:64], self.router_id, self.sender_id)
            batch = self.backlog[:count]
            del self.backlog[:count]
            delivered = False
            for target in targets:
                try:
                    self.sock.sendto(data, (target, self.port))
                except OSError as e:  # the peer's copy is renewed by a later offer
                    self.send_errors += 1
                    self._once(f"send:{target}:{e.errno}", f"subscriber-table sync: send "
                               f"to {target} on {self.ifname}: {e.strerror or e}")
                    if e.errno in (errno.ENODEV, errno.ENXIO):  # interface gone: reopen
                        self.backlog.clear()
                        self._drop_socket(now)
                        return
                    continue
                delivered = True
                if self.logged:  # a failure that ends is reported again when it recurs
                    self.logged = {k for k in self.logged if not k.startswith(f"send:{target}:")}
            if delivered:
                self.sent_messages += 1
                self.sent_pairs += len(batch)
                for ip, mac in batch:
                    self.sent[ip] = (mac, now)

    # -- reporting ---------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return {"sent_pairs": self.sent_pairs, "sent_messages": self.sent_messages,
                "received_pairs": self.received_pairs,
                "received_messages": self.received_messages,
                "stored_pairs": self.stored_pairs, "refused_messages": self.refused_messages,
                "send_errors": self.send_errors}

    def _once(self, key: str, text: str) -> None:
        if key not in self.logged:
            self.logged.add(key)
            report.warning(text, cause="sync")


def pack(pairs: list[subscribers.Pair], router_id: int, sender_id: str) -> tuple[bytes, int]:
    """One datagram of at most MAX_DATAGRAM bytes from the head of `pairs`; how many it
    holds (at least one: a single pair is under 70 bytes)."""
    head = json.dumps({"v": VERSION, "router_id": router_id, "sender": sender_id,
                       "pairs": []}, separators=(",", ":")).encode()
    size = len(head)
    parts: list[bytes] = []
    for ip, mac in pairs:
        part = json.dumps([ip, mac], separators=(",", ":")).encode()
        if parts and size + len(part) + 1 > MAX_DATAGRAM:
            break
        size += len(part) + (1 if parts else 0)
        parts.append(part)
    return head[:-2] + b",".join(parts) + b"]}", len(parts)


def _decode(data: bytes) -> dict[str, Any] | str:
    """A well-formed message with its pairs normalized, or what is wrong with it."""
    if len(data) > MAX_DATAGRAM:
        return f"longer than {MAX_DATAGRAM} bytes"
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return "not JSON"
    if not isinstance(msg, dict):
        return "not a JSON object"
    if msg.get("v") != VERSION:
        return f"version {msg.get('v')!r}, expected {VERSION}"
    if type(msg.get("router_id")) is not int or not isinstance(msg.get("sender"), str) \
            or not isinstance(msg.get("pairs"), list):
        return "router_id, sender or pairs missing or of the wrong type"
    pairs = []
    for item in msg["pairs"]:
        pair = subscribers.normalize(*item) if isinstance(item, list) and len(item) == 2 \
            else None
        if pair is None:  # one bad pair makes the whole message suspect
            return f"not a subscriber's [ip, mac]: {json.dumps(item)[:60]}"
        pairs.append(pair)
    msg["pairs"] = pairs
    return msg
