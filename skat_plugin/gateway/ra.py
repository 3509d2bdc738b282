"""Router Advertisements from the virtual gateway (RFC 4861, router preference RFC 4191).

SKAT's BNG announces itself as the subscribers' IPv6 router. While master, and only when the
gateway forwards IPv6 (Config.advertises_router: bras_terminate_l2=1, IPv6 keys set,
bras_ipv6_router_pref != -1), this module:
- answers every valid Router Solicitation on a subscriber port (in_dev) with an RA, unicast
  to the solicitor (its link-layer address from the RS's option, else the frame's source),
  or to all-nodes when the RS came from :: (RFC 4861 6.2.6);
- sends one RA to all-nodes on every subscriber port at takeover, like the GARPs;
- with bras_icmp6_send_rtradv=1, sends unsolicited RAs to all-nodes at a random interval in
  [bras_icmp6_min_rtradv_interval, bras_icmp6_max_rtradv_interval]; the first two after
  takeover come within 16 s at most (MAX_INITIAL_RTR_ADVERT_INTERVAL, RFC 4861 6.2.4).
A backup sends none.

The RA comes from bras_ipv6_link_local and the virtual MAC (bras_arp_mac), carries the
source link-layer option (the virtual MAC, so hosts need no ND round trip), the MTU option
(bras_icmp6_rtradv_mtu; 0 = none), cur hop limit, router lifetime, reachable time and the
2-bit preference. M and O stay clear and there is no Prefix Information option: subscribers'
addresses come from elsewhere (the BNG's own address assignment), the RA only tells them
which router to use. Hosts install "default via fe80::1" with the configured preference.

RS are rare, so the responder lives in the supervising daemon, not in nft. Each subscriber
port gets one AF_PACKET socket with a classic BPF filter that passes only ICMPv6 type 133,
so Python never sees data traffic. The socket is bound with ETH_P_ALL on purpose: the port is
a bridge port, and the bridge consumes frames before protocol-specific packet sockets
(ETH_P_IPV6) would see them; ETH_P_ALL taps run first, before the netdev ingress hook too.
PACKET_IGNORE_OUTGOING keeps the kernel from cloning every frame sent out of the port for us.
Answers go out through the marked socket of announce.Sender, so an RA that races with a
switch to backup is dropped by the backup rule set at the port's egress.

An RS that arrived with a VLAN tag (single tag, moved into skb metadata by the kernel) is
answered with the same tag. Takeover and unsolicited RAs go out untagged: which VLANs have
subscribers is not known here.

Leaving master sends no final RA with lifetime 0 (RFC 4861 6.2.5): the new master serves the
same fe80::1 from the same MAC, and a zero lifetime would make every host drop its route.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from .. import ndsum, packetsock, report
from ..announce import ALL_NODES, ETH_P_IPV6, Sender, mac_bytes
from ..config import Config

ICMPV6 = 58
ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
OPT_SOURCE_LLADDR = 1
OPT_MTU = 5
ALL_NODES_MAC = "33:33:00:00:00:01"
ALL_ROUTERS = "ff02::2"
ETH_HLEN = 14
IP6_HLEN = 40
ICMP_AT = ETH_HLEN + IP6_HLEN  # no extension headers: an RS has none in practice

# The same defaults as schema.KEYS: an older snapshot may lack the keys.
DEFAULTS: dict[str, int] = {
    "bras_ipv6_router_pref": 0,
    "bras_icmp6_send_rtradv": 0,
    "bras_icmp6_min_rtradv_interval": 200,
    "bras_icmp6_max_rtradv_interval": 600,
    "bras_icmp6_rtradv_mtu": 1500,
    "bras_icmp6_reachable_time": 0,
    "bras_icmp6_hop_limit": 64,
    "bras_icmp6_default_lifetime": 1800,
}

MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0  # s, RFC 4861 10
MAX_INITIAL_RTR_ADVERTISEMENTS = 3      # the takeover RA is the first
ANSWER_RATE = 10.0   # answers per second and port (token bucket refill)
ANSWER_BURST = 10    # bucket size
READ_BATCH = 64      # frames per handle(): the daemon's timers must not starve in a flood

TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata


def _value(cfg: Config, key: str) -> int:
    return int(cfg.get(key, DEFAULTS[key]))


def _icmp6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), ICMPV6)
    return ~ndsum.csum(pseudo + icmp) & 0xFFFF


# -- frames ----------------------------------------------------------------------------------
def router_advertisement(cfg: Config, dst_ip: str, dst_mac: str) -> bytes:
    """The gateway's RA as a complete Ethernet frame, from bras_ipv6_link_local and the
    virtual MAC to dst_ip/dst_mac. Needs bras_ipv6_router_pref != -1 (-1: not a router)."""
    pref = _value(cfg, "bras_ipv6_router_pref")
    if pref not in (0, 1, 3):
        raise ValueError(f"bras_ipv6_router_pref={pref}: no Router Advertisement")
    lifetime = _value(cfg, "bras_icmp6_default_lifetime")
    # RFC 4191 2.2: a router with lifetime 0 must send Prf 00; 2 (reserved) never reaches here.
    flags = (pref if lifetime else 0) << 3  # M (0x80), O (0x40), H clear: no DHCPv6 hint
    vmac = mac_bytes(cfg["bras_arp_mac"])
    src = ipaddress.IPv6Address(cfg["bras_ipv6_link_local"]).packed
    dst = ipaddress.IPv6Address(dst_ip).packed
    body = struct.pack("!BBHBBHII", ND_ROUTER_ADVERT, 0, 0, _value(cfg, "bras_icmp6_hop_limit"),
                       flags, lifetime, _value(cfg, "bras_icmp6_reachable_time"),
                       0)  # retrans timer: unspecified, hosts keep their own
    body += struct.pack("!BB6s", OPT_SOURCE_LLADDR, 1, vmac)
    mtu = _value(cfg, "bras_icmp6_rtradv_mtu")
    if mtu:
        body += struct.pack("!BBHI", OPT_MTU, 1, 0, mtu)
    body = body[:2] + struct.pack("!H", _icmp6_checksum(src, dst, body)) + body[4:]
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(body), ICMPV6, 255, src, dst)
    return mac_bytes(dst_mac) + vmac + struct.pack("!H", ETH_P_IPV6) + ip6 + body


class Solicitation(NamedTuple):
    src_ip: str             # "::" for a host without an address yet
    src_mac: str | None     # the source link-layer address option, if present


def parse_rs(frame: bytes) -> Solicitation | None:
    """A valid Router Solicitation (RFC 4861 6.1.1) in an untagged Ethernet frame, else None."""
    if len(frame) < ICMP_AT + 8 or frame[12:14] != struct.pack("!H", ETH_P_IPV6):
        return None
    ip6 = frame[ETH_HLEN:ICMP_AT]
    if ip6[0] >> 4 != 6 or ip6[6] != ICMPV6 or ip6[7] != 255:  # 255: not from off-link
        return None
    length = int.from_bytes(ip6[4:6], "big")
    icmp = frame[ICMP_AT:ICMP_AT + length]  # Ethernet padding after the payload is fine
    if length < 8 or len(icmp) < length:
        return None
    if icmp[0] != ND_ROUTER_SOLICIT or icmp[1] != 0:
        return None
    src, dst = ip6[8:24], ip6[24:40]
    if _icmp6_checksum(src, dst, icmp) != 0:  # the kernel checks nothing for packet sockets
        return None
    src_ip = ipaddress.IPv6Address(src)
    if src_ip.is_multicast:
        return None
    mac: str | None = None
    options, at = icmp[8:], 0
    while at < len(options):
        if len(options) - at < 2:
            return None
        size = options[at + 1] * 8
        if size == 0 or at + size > len(options):
            return None
        if options[at] == OPT_SOURCE_LLADDR:
            if src_ip.is_unspecified:
                return None
            mac = options[at + 2:at + 8].hex(":")
        at += size
    return Solicitation(str(src_ip), mac)


def _addressed_to_us(frame: bytes, cfg: Config) -> bool:
    """All-routers or one of the gateway's addresses: an RS unicast to another router is
    that router's to answer."""
    dst = ipaddress.IPv6Address(frame[ETH_HLEN + 24:ICMP_AT])
    ours = {ALL_ROUTERS, cfg.get("bras_ipv6_link_local"), cfg.get("bras_ipv6_address")}
    return any(a is not None and dst == ipaddress.IPv6Address(a) for a in ours)


def _answer(cfg: Config, sol: Solicitation, frame: bytes) -> bytes:
    if sol.src_ip == "::":  # it cannot receive unicast yet
        return router_advertisement(cfg, ALL_NODES, ALL_NODES_MAC)
    return router_advertisement(cfg, sol.src_ip, sol.src_mac or frame[6:12].hex(":"))


def _vlan_tag(ancdata: list[tuple[int, int, bytes]]) -> bytes:
    """The frame's VLAN tag, which the kernel moved into metadata, as 4 bytes (or none)."""
    for level, kind, data in ancdata:
        if (level, kind) == (packetsock.SOL_PACKET, packetsock.PACKET_AUXDATA) \
                and len(data) >= AUXDATA.size:
            status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                return struct.pack("!HH", tpid, tci)
    return b""


# -- listening -------------------------------------------------------------------------------
def _rs_filter() -> list[packetsock.Instruction]:
    """Classic BPF on the frame from its Ethernet header: IPv6, next header 58, type 133.
    Runs in the kernel for every frame of the port, so the ethertype test comes first."""
    ldh, ldb, jeq, ret = (packetsock.LD_H_ABS, packetsock.LD_B_ABS, packetsock.JEQ_K,
                          packetsock.RET_K)
    return [
        (ldh, 0, 0, 12),
        (jeq, 0, 5, ETH_P_IPV6),
        (ldb, 0, 0, ETH_HLEN + 6),          # next header
        (jeq, 0, 3, ICMPV6),
        (ldb, 0, 0, ICMP_AT),               # ICMPv6 type
        (jeq, 0, 1, ND_ROUTER_SOLICIT),
        (ret, 0, 0, 0xFFFF),
        (ret, 0, 0, 0),
    ]


def open_listener(port: str) -> socket.socket:
    """A non-blocking packet socket on `port` that receives only Router Solicitations."""
    return packetsock.open_filtered(port, _rs_filter(), ignore_outgoing=True, auxdata=True)


class TokenBucket:
    """`rate` answers a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class _Listener:
    port: str
    sock: socket.socket
    bucket: TokenBucket


class RouterAdvertiser:
    """An event source of the daemon's poll loop: listener fds (fds/handle) and one timer
    (next_due/run). start() on entering master, stop() on leaving it. Times are the
    daemon's monotonic clock."""

    def __init__(self, sender: Sender, rng: random.Random | None = None) -> None:
        self.sender = sender
        self.rng = rng or random.Random()
        self.cfg: Config | None = None
        self.listeners: dict[int, _Listener] = {}
        self.next_at: float | None = None
        self.initial_left = 0
        self._all_nodes_ra = b""
        # Totals since the daemon started (for metrics and tests).
        self.rs_received = 0      # RS frames read from the ports
        self.rs_ignored = 0       # invalid (RFC 4861 6.1.1) or addressed to another router
        self.rs_rate_limited = 0  # valid, but over the port's answer budget
        self.ra_sent = 0          # solicited, takeover and unsolicited, per port

    # -- role ----------------------------------------------------------------------------------
    def start(self, cfg: Config, now: float) -> None:
        """Entering master (or a new configuration while master): listen, announce, schedule.
        Does nothing when the gateway is no IPv6 router. fds() changes: re-register them."""
        self.stop()
        if not cfg.advertises_router:
            return
        self.cfg = cfg
        self._all_nodes_ra = router_advertisement(cfg, ALL_NODES, ALL_NODES_MAC)
        for port in cfg.in_ports:
            try:
                sock = open_listener(port)
            except OSError as e:
                report.warning(f"router solicitations on {port} go unanswered: "
                               f"{e.strerror or e}", port=port)
                continue
            self.listeners[sock.fileno()] = _Listener(
                port, sock, TokenBucket(ANSWER_RATE, ANSWER_BURST, now))
        self._send_to_all_nodes()
        if _value(cfg, "bras_icmp6_send_rtradv"):
            self.initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS - 1
            self.next_at = self._next_time(now)

    def stop(self) -> None:
        """Backup or stopped: not one more RA from here (and none with lifetime 0, see above)."""
        for listener in self.listeners.values():
            listener.sock.close()
        self.listeners.clear()
        self.cfg = None
        self.next_at = None
        self.initial_left = 0

    @property
    def active(self) -> bool:
        return self.cfg is not None

    # -- event source --------------------------------------------------------------------------
    def fds(self) -> list[int]:
        return list(self.listeners)

    def handle(self, fd: int, now: float) -> None:
        """Read the pending RS on `fd` (up to READ_BATCH; poll says when more wait) and answer
        the valid ones within the port's budget."""
        listener = self.listeners.get(fd)
        if listener is None or self.cfg is None:
            return
        for _ in range(READ_BATCH):
            try:
                frame, ancdata, _, addr = listener.sock.recvmsg(2048, socket.CMSG_SPACE(32))
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENETDOWN:  # the port went down: the kernel says so once,
                    continue                   # the socket hears again once it is back up
                report.warning(f"router solicitations on {listener.port}: {e.strerror or e}",
                               port=listener.port)
                return
            if addr[2] == packetsock.PACKET_OUTGOING:  # the filter cannot see direction; be sure
                continue
            self.rs_received += 1
            sol = parse_rs(frame)
            if sol is None or not _addressed_to_us(frame, self.cfg):
                self.rs_ignored += 1
                continue
            if not listener.bucket.take(now):
                self.rs_rate_limited += 1
                continue
            answer = _answer(self.cfg, sol, frame)
            tag = _vlan_tag(ancdata)
            if tag:  # back into the VLAN it came from
                answer = answer[:12] + tag + answer[12:]
            if self.sender.send(listener.port, answer):
                self.ra_sent += 1

    def next_due(self) -> float | None:
        return self.next_at

    def run(self, now: float) -> None:
        """Send a due unsolicited RA on every subscriber port and schedule the next one."""
        if self.cfg is None or self.next_at is None or now < self.next_at:
            return
        self._send_to_all_nodes()
        self.next_at = self._next_time(now)

    def counters(self) -> dict[str, Any]:
        return {"rs_received": self.rs_received, "rs_ignored": self.rs_ignored,
                "rs_rate_limited": self.rs_rate_limited, "ra_sent": self.ra_sent}

    # -- inside ----------------------------------------------------------------------------------
    def _send_to_all_nodes(self) -> None:
        assert self.cfg is not None
        for port in self.cfg.in_ports:
            if self.sender.send(port, self._all_nodes_ra):
                self.ra_sent += 1

    def _next_time(self, now: float) -> float:
        assert self.cfg is not None
        low = _value(self.cfg, "bras_icmp6_min_rtradv_interval")
        high = _value(self.cfg, "bras_icmp6_max_rtradv_interval")
        interval = self.rng.uniform(low, high)
        if self.initial_left > 0:  # a lost takeover RA is repeated soon (RFC 4861 6.2.4)
            self.initial_left -= 1
            interval = min(interval, MAX_INITIAL_RTR_ADVERT_INTERVAL)
        return now + interval
