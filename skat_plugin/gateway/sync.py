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

import math
import secrets
import socket
import time
from collections import Counter, OrderedDict, deque

from .. import report
from ..config import Config
from . import subscribers, syncwire
from .sync_backup import RECV_BURST, BackupSide, Stream
from .sync_link import KEY_CHECK, REOPEN, LinkSide
from .sync_master import MasterSide, Receiver, Records
from .syncwire import MAX_DATAGRAM

# One sender id per process, and its counters: a socket reopened after a reload goes on
# with the same stream (the backups see no new master), and knows its own broadcasts.
PROCESS_SENDER_ID = secrets.token_bytes(8)


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


class TableSync(LinkSide, MasterSide, BackupSide):
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






    # -- a backup's turn ---------------------------------------------------------------------


    # -- the key -----------------------------------------------------------------------------


    # -- reporting ---------------------------------------------------------------------------

