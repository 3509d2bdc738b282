"""The table sync's link (sync.py): its UDP socket on vrrp_interface, each message's
header, and the group key, taken again when its file changes."""

from __future__ import annotations

import errno
import itertools
import os
import socket
import time
from typing import Any

from .. import report
from . import subscribers, syncwire

# Bounds both sides share.
RETAIN = 2048           # datagrams kept for resending (at most ~2.7 MB)
SILENT = 10.0           # s without a word from a master: what it still owes us is lost

RCVBUF = 4 << 20        # a window of datagrams must fit: 512 x ~2.3 KiB
SNDBUF = 1 << 20
REOPEN = 5.0            # seconds between attempts to open the socket
KEY_CHECK = 5.0         # seconds between looks at the key file (a new key is taken)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux; Python 3.11 lacks the name
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_SEQ = itertools.count(1)    # every message


class LinkSide:
    """TableSync's socket and key (their state is set up by TableSync.__init__)."""

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

    def _refuse(self, reason: str, text: str) -> list[subscribers.Pair]:
        self.refused[reason] += 1
        self._once(f"refused:{reason}", f"subscriber-table sync: refused a message {text}: "
                   f"{syncwire.REFUSALS.get(reason, reason)} (logged once; counted in "
                   f"refused.{reason})")
        return []

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
