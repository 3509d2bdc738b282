"""ICMP Time Exceeded from the gateway (RFC 1812 5.3.1, RFC 792; RFC 4443 3.3), with
bras_transparency=0: the gateway then decrements TTL and hop limit like a router, and a
router that discards a packet whose TTL runs out tells its source. Traceroute through the
gateway then shows it instead of a hole.

The kernel's rules (nft/gateway-ttl4.nft, gateway6.nft) drop such packets; nft cannot build
an ICMP error. So the master's daemon takes them in beside the kernel: a packet socket on
every gateway port (subscriber and uplink side) with a classic BPF filter that passes only
frames to the virtual MAC whose TTL or hop limit is 0 or 1, i.e. exactly the packets the
rules will discard. Packet sockets see a frame before the netdev ingress hook, so nothing in
nft changes. The answer goes back out of the port the packet came in on, to the MAC it came
from (the subscriber, or the border router), in its VLAN, from the gateway's address
(bras_arp_ip, bras_ipv6_address) and the virtual MAC, through the marked socket that the
backup guard drops.

What is quoted: as much of the packet as fits in 576 bytes (IPv4, RFC 1812 4.3.2.3) or in
the IPv6 minimum MTU (RFC 4443 2.4 c). What gets no error (RFC 1812 4.3.2.7, RFC 4443
2.4 e): ICMP errors, fragments other than the first, packets from or to a multicast,
broadcast, unspecified, loopback or (IPv6) link-local address, packets to the gateway's
own addresses (not forwarded at all).

Rate limit as the kernel's own (icmp_ratelimit 1000 ms, burst 6 per destination;
icmp_msgs_per_sec 1000, burst 50 in all): PER_DEST_RATE/BURST and TOTAL_RATE/BURST, in
bounded tables; READ_BATCH frames per handle(). A subscriber that floods expiring packets
(MUTE_AFTER refused in a row) has its MAC muted in the port's filter for MUTE_FOR: the
kernel drops its copies before user space (its data still flows: the socket is a tap).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import Any

from .. import ndsum, packetsock, report
from ..announce import ETH_MIN, ETH_P_IPV6, Sender, mac_bytes
from ..config import Config
from . import budget
from .budget import TokenBucket

ETH_P_IP = 0x0800
ETH_HLEN = 14
ICMP_TIME_EXCEEDED = 11
ICMP6_TIME_EXCEEDED = 3
ICMP_ERRORS = {3, 4, 5, 11, 12}  # ICMPv4 types that are errors
IPV4_LIMIT = 576      # bytes of the whole error datagram (RFC 1812 4.3.2.3)
IPV6_LIMIT = 1280     # the IPv6 minimum MTU (RFC 4443 2.4 c)
HOP_LIMIT = 64
PER_DEST_RATE, PER_DEST_BURST = 1.0, 6       # Linux: icmp_ratelimit, XRLIM_BURST_FACTOR
TOTAL_RATE, TOTAL_BURST = 1000.0, 50         # Linux: icmp_msgs_per_sec, icmp_msgs_burst
MAX_DESTS = 4096
READ_BATCH = 64
MUTE_AFTER = 32   # rate-limited packets in a row from one subscriber MAC: it floods, and ...
MUTE_FOR = 1.0    # ... its MAC is muted in the port's filter for a second (subscriber side)
MAX_MUTED = 16
JGT_K = 0x25


def _filter(vmac: bytes) -> list[packetsock.Instruction]:
    """To the virtual MAC, IPv4 with TTL <= 1 or IPv6 with hop limit <= 1."""
    ldw, ldh, ldb, jeq, ret = (packetsock.LD_W_ABS, packetsock.LD_H_ABS, packetsock.LD_B_ABS,
                               packetsock.JEQ_K, packetsock.RET_K)
    return [
        (ldw, 0, 0, 0),
        (jeq, 0, 10, int.from_bytes(vmac[:4], "big")),
        (ldh, 0, 0, 4),
        (jeq, 0, 8, int.from_bytes(vmac[4:], "big")),
        (ldh, 0, 0, 12),
        (jeq, 0, 2, ETH_P_IP),
        (ldb, 0, 0, ETH_HLEN + 8),      # IPv4 TTL
        (JGT_K, 4, 3, 1),
        (jeq, 0, 3, ETH_P_IPV6),
        (ldb, 0, 0, ETH_HLEN + 7),      # IPv6 hop limit
        (JGT_K, 1, 0, 1),
        (ret, 0, 0, 0xFFFF),
        (ret, 0, 0, 0),
    ]


def _bad_v4(a: ipaddress.IPv4Address) -> bool:
    return a.is_multicast or a.is_unspecified or a.is_loopback \
        or a == ipaddress.IPv4Address("255.255.255.255")


def _bad_v6(a: ipaddress.IPv6Address) -> bool:
    return a.is_multicast or a.is_unspecified or a.is_loopback or a.is_link_local


def time_exceeded(cfg: Config, frame: bytes) -> tuple[str, bytes] | None:
    """(the address to answer, the Ethernet frame without VLAN tag) for a packet that
    expires at the gateway, or None when it gets no error. Never raises on any bytes."""
    if len(frame) < ETH_HLEN + 20:
        return None
    kind = frame[12:14]
    if kind == struct.pack("!H", ETH_P_IP):
        return _time_exceeded_v4(cfg, frame)
    if kind == struct.pack("!H", ETH_P_IPV6) and cfg.get("bras_ipv6_address") \
            and len(frame) >= ETH_HLEN + 40:
        return _time_exceeded_v6(cfg, frame)
    return None


def _time_exceeded_v4(cfg: Config, frame: bytes) -> tuple[str, bytes] | None:
    ip = frame[ETH_HLEN:]
    ihl = (ip[0] & 0x0F) * 4
    total = int.from_bytes(ip[2:4], "big")
    if ip[0] >> 4 != 4 or ihl < 20 or total < ihl or len(ip) < total or ip[8] > 1:
        return None
    if int.from_bytes(ip[6:8], "big") & 0x1FFF:  # not the first fragment
        return None
    src, dst = ipaddress.IPv4Address(ip[12:16]), ipaddress.IPv4Address(ip[16:20])
    if _bad_v4(src) or _bad_v4(dst) or str(dst) == cfg.get("bras_arp_ip"):
        return None
    if ip[9] == 1 and (total < ihl + 1 or ip[ihl] in ICMP_ERRORS):
        return None
    me = ipaddress.IPv4Address(cfg["bras_arp_ip"]).packed
    quoted = ip[:min(total, IPV4_LIMIT - 28)]
    icmp = struct.pack("!BBHI", ICMP_TIME_EXCEEDED, 0, 0, 0) + quoted
    icmp = icmp[:2] + struct.pack("!H", ndsum.inet_checksum(icmp)) + icmp[4:]
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(icmp), 0, 0, HOP_LIMIT, 1, 0,
                       me, src.packed)
    head = head[:10] + struct.pack("!H", ndsum.inet_checksum(head)) + head[12:]
    eth = frame[6:12] + mac_bytes(cfg["bras_arp_mac"]) + struct.pack("!H", ETH_P_IP)
    return str(src), (eth + head + icmp).ljust(ETH_MIN, b"\x00")


def _time_exceeded_v6(cfg: Config, frame: bytes) -> tuple[str, bytes] | None:
    ip = frame[ETH_HLEN:]
    length = 40 + int.from_bytes(ip[4:6], "big")
    if ip[0] >> 4 != 6 or ip[7] > 1 or len(ip) < length:
        return None
    src, dst = ipaddress.IPv6Address(ip[8:24]), ipaddress.IPv6Address(ip[24:40])
    if _bad_v6(src) or _bad_v6(dst):
        return None
    if dst in {ipaddress.IPv6Address(cfg[k]) for k in ("bras_ipv6_address",
                                                        "bras_ipv6_link_local") if cfg.get(k)}:
        return None
    if ip[6] == 58 and (length < 41 or ip[40] < 128):  # an ICMPv6 error
        return None
    me = ipaddress.IPv6Address(cfg["bras_ipv6_address"]).packed
    quoted = ip[:min(length, IPV6_LIMIT - 48)]
    icmp = struct.pack("!BBHI", ICMP6_TIME_EXCEEDED, 0, 0, 0) + quoted
    icmp = icmp[:2] + struct.pack("!H", ndsum.icmp6_checksum(me, src.packed, icmp)) + icmp[4:]
    head = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, HOP_LIMIT, me, src.packed)
    eth = frame[6:12] + mac_bytes(cfg["bras_arp_mac"]) + struct.pack("!H", ETH_P_IPV6)
    return str(src), eth + head + icmp



class TimeExceeded:
    """An event source of the daemon's loop (fds/handle), hosted by RouterAdvertiser."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.cfg: Config | None = None
        self.socks: dict[int, tuple[str, socket.socket]] = {}
        self.program: list[packetsock.Instruction] = []
        self.muted: dict[int, dict[bytes, float]] = {}  # fd -> MAC -> until
        self.refusals: dict[tuple[str, bytes], int] = {}
        self.mutes = 0
        self.dests: dict[str, TokenBucket] = {}
        self.total = TokenBucket(TOTAL_RATE, TOTAL_BURST, 0.0)
        self.expired = 0        # packets seen expiring at the gateway
        self.sent = 0           # Time Exceeded sent
        self.rate_limited = 0
        self.no_error = 0       # expired, but owed no error (see the docstring)

    def start(self, cfg: Config, now: float) -> None:
        self.stop()
        if not cfg.terminates or int(cfg.get("bras_transparency")) != 0:
            return
        self.cfg = cfg
        self.program = program = _filter(mac_bytes(cfg["bras_arp_mac"]))
        for port in cfg.ports:
            try:
                sock = packetsock.open_filtered(port, program, ignore_outgoing=True,
                                                auxdata=True)
            except OSError as e:
                report.warning(f"no ICMP time exceeded on {port}: {e.strerror or e}",
                               port=port)
                continue
            self.socks[sock.fileno()] = (port, sock)

    def stop(self) -> None:
        for _, sock in self.socks.values():
            sock.close()
        self.socks.clear()
        self.dests.clear()
        self.muted.clear()
        self.refusals.clear()
        self.cfg = None

    def fds(self) -> list[int]:
        return list(self.socks)

    def handle(self, fd: int, now: float) -> None:
        entry = self.socks.get(fd)
        if entry is None or self.cfg is None:
            return
        port, sock = entry
        for _ in range(READ_BATCH):
            try:
                frame, ancdata, _, addr = sock.recvmsg(2048, socket.CMSG_SPACE(32))
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENETDOWN:
                    continue
                report.warning(f"ICMP time exceeded on {port}: {e.strerror or e}", port=port)
                break
            if addr[2] == packetsock.PACKET_OUTGOING:
                continue
            self.expire(port, frame, packetsock.vlan_tag(ancdata), now)
        self._mute(fd, port, sock, now)

    def expire(self, port: str, frame: bytes, tag: bytes, now: float) -> None:
        """One packet that expires at the gateway: answer it within the limits."""
        if self.cfg is None:
            return
        self.expired += 1
        answer = time_exceeded(self.cfg, frame)
        if answer is None:
            self.no_error += 1
            return
        dest, out = answer
        bucket = self.dests.get(dest)
        if bucket is None:
            if len(self.dests) >= MAX_DESTS:
                self.dests.pop(next(iter(self.dests)))
            bucket = self.dests[dest] = TokenBucket(PER_DEST_RATE, PER_DEST_BURST, now)
        if not bucket.has(now) or not self.total.take(now):
            self.rate_limited += 1
            key = (port, frame[6:12])
            self.refusals[key] = self.refusals.pop(key, 0) + 1
            if len(self.refusals) > MAX_DESTS:
                self.refusals.pop(next(iter(self.refusals)))
            return
        bucket.take(now)
        self.refusals.pop((port, frame[6:12]), None)
        if tag:
            out = out[:12] + tag + out[12:]
        if self.sender.send(port, out):
            self.sent += 1

    def next_due(self) -> float | None:
        ends = [min(m.values()) for m in self.muted.values() if m]
        return min(ends) if ends else None

    def run(self, now: float) -> None:
        """Lift the mutes whose time is over."""
        for fd, macs in self.muted.items():
            if macs and min(macs.values()) <= now and fd in self.socks:
                self._filter(fd, {m: t for m, t in macs.items() if t > now})

    def _mute(self, fd: int, port: str, sock: socket.socket, now: float) -> None:
        if self.cfg is None or port not in self.cfg.in_ports:  # never the border's MAC
            return
        muted = self.muted.get(fd, {})
        flooding = [mac for (p, mac), n in self.refusals.items()
                    if p == port and n >= MUTE_AFTER and mac not in muted]
        if not flooding or len(muted) >= MAX_MUTED:
            return
        for mac in flooding:
            self.refusals.pop((port, mac), None)
        added = {mac: now + MUTE_FOR for mac in flooding[:MAX_MUTED - len(muted)]}
        self.mutes += len(added)
        self._filter(fd, {**muted, **added})

    def _filter(self, fd: int, macs: dict[bytes, float]) -> None:
        port, sock = self.socks[fd]
        try:
            budget.attach(sock, budget.muting(list(macs), self.program))
        except OSError as e:
            report.warning(f"ICMP time exceeded on {port}: cannot mute a flood: "
                           f"{e.strerror or e}", port=port)
            return
        self.muted[fd] = macs

    def counters(self) -> dict[str, Any]:
        return {"ttl_expired_seen": self.expired, "time_exceeded_sent": self.sent,
                "time_exceeded_rate_limited": self.rate_limited,
                "time_exceeded_not_owed": self.no_error, "time_exceeded_mutes": self.mutes}
