"""Takeover announcements: gratuitous ARP and unsolicited NA from the virtual MAC.

On entering master, out of every subscriber port (in_dev), and every uplink port too with
bras_terminate_l2=1 (the border resolves the gateway there):
- vrrp_garp_count gratuitous ARPs for bras_arp_ip, vrrp_garp_interval apart (default 5,
  0.1 s apart; keepalived's garp_master_repeat sends 5 at once): the first moves the
  switches at once, the others cover a lost frame;
- unsolicited NAs to ff02::1 for each IPv6 address (bras_ipv6_link_local,
  bras_ipv6_address), override flag and target link-layer option: at most
  MAX_NEIGHBOR_ADVERTISEMENT (3) of each, at least RETRANS_TIMER (1 s) apart, whatever
  vrrp_garp_count and vrrp_garp_interval say (RFC 4861 7.2.6: MUST);
- while master, one gratuitous ARP every vrrp_garp_refresh seconds (default 0: off, as
  keepalived's garp_master_refresh). The refresh carries no NA: 7.2.6 allows a few NAs when
  the link-layer address changes, not a stream, and the virtual MAC never changes; the GARP
  alone makes switches relearn the MAC's port and a second master visible.
Switches relearn the virtual MAC's port at once, hosts update their neighbour entries
(override flag), and a second master becomes visible on the wire (split brain, see
splitbrain.py).

Frames go out through an AF_PACKET socket marked with vrrp_socket_mark: in backup the
rule set drops marked frames at the ports' egress (nft/backup.nft), so a round that races
with a role change is silenced by the kernel, not by luck.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field

from . import ndsum, report
from .config import Config

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
ALL_NODES = "ff02::1"
ALL_NODES_MAC = bytes.fromhex("333300000001")
ETH_MIN = 60  # without FCS: real NICs pad, veth does not; pad ourselves
MAX_NEIGHBOR_ADVERTISEMENT = 3  # RFC 4861 10
RETRANS_TIMER = 1.0             # s, RFC 4861 10: the least time between unsolicited NAs


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def garp(vmac: str, vip: str) -> bytes:
    """ARP announcement: a request for our own address (sender = target = vip)."""
    mac = mac_bytes(vmac)
    ip = ipaddress.IPv4Address(vip).packed
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\x00" * 6, ip)
    return (eth + arp).ljust(ETH_MIN, b"\x00")


def unsolicited_na(vmac: str, target: str, router: bool) -> bytes:
    """Unsolicited NA (RFC 4861 7.2.6): to all-nodes, override set, solicited clear,
    router as configured, with the target link-layer address option."""
    mac = mac_bytes(vmac)
    src = ipaddress.IPv6Address(target).packed
    dst = ipaddress.IPv6Address(ALL_NODES).packed
    flags = (0x80 if router else 0) | 0x20  # R, O; S (0x40) stays clear
    body = struct.pack("!BBHB3x16sBB6s", 136, 0, 0, flags, src, 2, 1, mac)
    body = body[:2] + struct.pack("!H", ndsum.icmp6_checksum(src, dst, body)) + body[4:]
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 255, src, dst)
    return ALL_NODES_MAC + mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def frames(cfg: Config) -> list[bytes]:
    """One takeover round's frames for one port: the GARP, then the NAs."""
    return arp_frames(cfg) + na_frames(cfg)


def arp_frames(cfg: Config) -> list[bytes]:
    return [garp(cfg["bras_arp_mac"], cfg["bras_arp_ip"])]


def na_frames(cfg: Config) -> list[bytes]:
    router = bool(cfg.get("vrrp_nd_router_flag"))
    return [unsolicited_na(cfg["bras_arp_mac"], cfg[key], router)
            for key in ("bras_ipv6_link_local", "bras_ipv6_address") if cfg.get(key)]


class Sender:
    """A marked AF_PACKET socket. Frames are complete; the kernel adds nothing."""

    def __init__(self, mark: int) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self.set_mark(mark)
        self._failing: set[tuple[str, int]] = set()

    def set_mark(self, mark: int) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        self.mark = mark

    def send(self, port: str, frame: bytes) -> bool:
        try:
            self.sock.sendto(frame, (port, 0))
        except OSError as e:
            key = (port, e.errno or 0)
            if key not in self._failing:  # once per port and cause, not once per frame
                self._failing.add(key)
                report.warning(f"announcement on {port} failed: {e.strerror or e}", port=port)
            return False
        self._failing = {k for k in self._failing if k[0] != port}
        return True

    def close(self) -> None:
        self.sock.close()


@dataclass
class Plan:
    ports: list[str]
    frames: list[bytes]       # every takeover round: the GARP
    count: int
    interval: float
    refresh: float
    na_frames: list[bytes] = field(default_factory=list)  # at most 3 times, 1 s apart

    @classmethod
    def from_config(cls, cfg: Config) -> Plan:
        # Terminating, the border resolves the gateway on the uplink side: announce there too.
        ports = cfg.ports if cfg.terminates else cfg.in_ports
        return cls(ports, arp_frames(cfg), int(cfg.get("vrrp_garp_count")),
                   float(cfg.get("vrrp_garp_interval")),
                   float(cfg.get("vrrp_garp_refresh")), na_frames(cfg))

    @property
    def na_count(self) -> int:
        return min(self.count, MAX_NEIGHBOR_ADVERTISEMENT) if self.na_frames else 0

    @property
    def na_interval(self) -> float:
        return max(self.interval, RETRANS_TIMER)


class Announcer:
    """Timing of the rounds, driven by the daemon's loop: next_due() and run(now)."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.plan: Plan | None = None
        self.burst_left = 0
        self.na_left = 0
        self.next_at: float | None = None     # the next GARP round
        self.next_na_at: float | None = None  # the next unsolicited NAs
        self.rounds = 0  # GARP rounds sent since the daemon started (for tests and metrics)
        self.burst_rounds = 0  # of which in takeover bursts (not the periodic refresh)
        self.na_rounds = 0  # unsolicited NA rounds (each: one NA per address and port)

    def start(self, plan: Plan, now: float) -> None:
        """Entering master (or announcing again after a split brain): a fresh burst."""
        self.plan = plan
        self.burst_left = plan.count
        self.next_at = now if plan.count else self._refresh_at(now)
        self.na_left = plan.na_count
        self.next_na_at = now if self.na_left else None

    def stop(self) -> None:
        """Backup: not one more frame from here."""
        self.plan = None
        self.burst_left = 0
        self.na_left = 0
        self.next_at = None
        self.next_na_at = None

    @property
    def active(self) -> bool:
        return self.plan is not None

    def next_due(self) -> float | None:
        times = [t for t in (self.next_at, self.next_na_at) if t is not None]
        return min(times) if times else None

    def run(self, now: float) -> None:
        if self.plan is None:
            return
        if self.next_at is not None and now >= self.next_at:
            self._send(self.plan.frames)
            self.rounds += 1
            if self.burst_left > 0:
                self.burst_left -= 1
                self.burst_rounds += 1
            if self.burst_left > 0:
                self.next_at = now + self.plan.interval
            else:
                self.next_at = self._refresh_at(now)
        if self.next_na_at is not None and now >= self.next_na_at:
            self._send(self.plan.na_frames)
            self.na_rounds += 1
            self.na_left -= 1
            self.next_na_at = now + self.plan.na_interval if self.na_left > 0 else None

    def send_round(self) -> None:
        """One GARP and the NAs on every port, now (tests force one through this)."""
        assert self.plan is not None
        self._send(self.plan.frames + self.plan.na_frames)
        self.rounds += 1

    def _send(self, frames: list[bytes]) -> None:
        assert self.plan is not None
        for port in self.plan.ports:
            for frame in frames:
                self.sender.send(port, frame)

    def _refresh_at(self, now: float) -> float | None:
        assert self.plan is not None
        return now + self.plan.refresh if self.plan.refresh > 0 else None
