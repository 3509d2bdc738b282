"""Router Advertisements from the virtual gateway (RFC 4861, router preference RFC 4191).

SKAT's BNG announces itself as the subscribers' IPv6 router. While master, and only when the
gateway forwards IPv6 (Config.advertises_router: bras_terminate_l2=1, IPv6 keys set,
bras_ipv6_router_pref != -1), this module, per subscriber port (in_dev):
- sends one RA to all-nodes at takeover, then unsolicited RAs to all-nodes at a random
  interval in [bras_icmp6_min_rtradv_interval, bras_icmp6_max_rtradv_interval] for as long
  as the master lives (RFC 4861 6.2.1/6.2.4: an advertising interface sends them; Linux
  does not solicit again when its router expires, so without them every subscriber loses
  its default route one router lifetime after the last RA). The first three come within
  16 s of each other at most (MAX_INITIAL_RTR_ADVERT_INTERVAL);
- answers valid Router Solicitations (RFC 4861 6.2.6): every answer is delayed by a random
  0-0.5 s (MAX_RA_DELAY_TIME); an RS from a host with an address gets a unicast RA, one
  from :: the next multicast RA, which is never closer than 3 s (MIN_DELAY_BETWEEN_RAS) to
  the previous multicast RA on that link; one scheduled multicast RA serves every RS that
  comes before it, and sending it restarts the link's periodic timer;
- keeps the time of the last multicast RA per link across stop()/start(), so a reload or a
  quick role flap adds no multicast RA within 3 s of the previous one.
A backup sends none.

Budgets, because every byte from a subscriber port is hostile (issue 17.7: one subscriber's
92k RS/s): each source (link, MAC, IP) has its own answer budget (SOURCE_BURST, then one per
SOURCE_PERIOD); a source that has an answer pending or no budget is refused before its frame
is even parsed, so a flood costs one recvmsg and one dict look-up a frame; after
MUTE_AFTER refusals in a row the source's MAC goes into the listener's BPF filter for
MUTE_FOR seconds (at most MAX_MUTED a port), and the kernel drops the flood before user
space sees it. At most READ_BATCH frames are read per handle() and SEND_BATCH answers sent
per run(): the daemon's other timers never starve. The tables are bounded (MAX_SOURCES,
MAX_PENDING); a flood from spoofed sources is bounded by TOTAL_RATE answers a second.

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
answered with the same tag (a multicast answer too, on that VLAN). Takeover and periodic RAs
go out untagged: which VLANs have subscribers is not known here.

The MLD reports for the gateway's groups (mld.py) and the ICMP Time Exceeded of a gateway
that decrements TTLs (icmp_errors.py) ride along: start() starts them too, and their
listeners are among fds(), so the daemon needs no other event source.

Leaving master sends no final RA with lifetime 0 (RFC 4861 6.2.5): the new master serves the
same fe80::1 from the same MAC, and a zero lifetime would make every host drop its route.
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .. import ndsum, packetsock, report
from ..announce import ALL_NODES, ETH_P_IPV6, Sender, mac_bytes
from ..config import Config
from . import budget
from .budget import TokenBucket

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
MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0  # s, RFC 4861 10
MAX_INITIAL_RTR_ADVERTISEMENTS = 3      # the takeover RA is the first
MAX_RA_DELAY_TIME = 0.5                 # s, RFC 4861 10: answers wait 0 to this, at random
MIN_DELAY_BETWEEN_RAS = 3.0             # s, RFC 4861 10: between two multicast RAs on a link
SOURCE_BURST = 3      # answers a source (link, MAC, IP) may have at once: Linux sends 3 RS
SOURCE_PERIOD = 4.0   # s per further answer (RTR_SOLICITATION_INTERVAL)
MAX_SOURCES = 4096    # budgets remembered; the oldest is forgotten first
MAX_PENDING = 256     # unicast answers waiting for their delay
TOTAL_RATE = 100.0    # answers a second in all: the bound for spoofed sources
READ_BATCH = 64       # frames per handle(): the daemon's timers must not starve in a flood
SEND_BATCH = 64       # answers per run()
MAX_LINKS = 1024      # (port, VLAN tag) pairs with a multicast schedule
RCVBUF = 1 << 20      # a flood's burst waits in the kernel rather than drowning others' RS
MUTE_AFTER = 32       # refusals in a row from one source: it floods; its MAC is muted ...
MUTE_FOR = SOURCE_PERIOD  # ... in the kernel's filter until its budget has room again
MAX_MUTED = 16        # MACs per port (each costs 4 BPF instructions a frame)



def _value(cfg: Config, key: str) -> int:
    return int(cfg.get(key))  # the schema's default where an old snapshot lacks the key


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
    body = body[:2] + struct.pack("!H", ndsum.icmp6_checksum(src, dst, body)) + body[4:]
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
    if ndsum.icmp6_checksum(src, dst, icmp) != 0:  # the kernel checks nothing for packet sockets
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


def _muting(macs: list[bytes]) -> list[packetsock.Instruction]:
    """_rs_filter() behind a test of the frame's source MAC (budget.muting)."""
    return budget.muting(macs, _rs_filter())


def open_listener(port: str) -> socket.socket:
    """A non-blocking packet socket on `port` that receives only Router Solicitations."""
    return packetsock.open_filtered(port, _rs_filter(), ignore_outgoing=True, auxdata=True,
                                    rcvbuf=RCVBUF)


@dataclass
class _Listener:
    port: str
    sock: socket.socket
    muted: dict[bytes, float] = field(default_factory=dict)  # source MAC -> until

    def read(self) -> Iterator[tuple[bytes, bytes]]:
        """(frame, its VLAN tag or b"") of the RS waiting, up to READ_BATCH (poll says when
        more wait)."""
        for _ in range(READ_BATCH):
            try:
                frame, ancdata, _, addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(32))
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENETDOWN:  # the port went down: the kernel says so once,
                    continue                   # the socket hears again once it is back up
                report.warning(f"router solicitations on {self.port}: {e.strerror or e}",
                               port=self.port)
                return
            if addr[2] != packetsock.PACKET_OUTGOING:  # the filter cannot see direction
                yield frame, packetsock.vlan_tag(ancdata)

    def mute(self, macs: dict[bytes, float]) -> None:
        self.muted = macs
        try:
            budget.attach(self.sock, _muting(list(macs)))
        except OSError as e:  # the plain filter stays: every RS is still read and budgeted
            report.warning(f"router solicitations on {self.port}: cannot mute a flood: "
                           f"{e.strerror or e}", port=self.port)


@dataclass
class _Link:
    """One port, untagged or in one VLAN: where multicast RAs are scheduled."""
    port: str
    tag: bytes                      # b"" untagged, else the 4-byte 802.1Q/802.1ad tag
    next_at: float | None = None    # the next multicast RA (periodic or an answer)
    periodic: bool = False          # untagged links get the periodic RAs
    initial_left: int = 0           # of the first RAs, how many more come within 16 s


@dataclass(order=True)
class _Pending:
    due: float
    seq: int
    port: str = field(compare=False)
    frame: bytes = field(compare=False)
    source: bytes = field(compare=False)


class FloodGuard:
    """A source refused MUTE_AFTER times in a row (an answer on its way, no budget) floods:
    its MAC goes into its port's kernel filter for MUTE_FOR, so its frames are dropped
    before user space. A muted MAC gets no answer, as it would have got none anyway."""

    def __init__(self) -> None:
        self.refusals: dict[bytes, int] = {}  # source -> refusals since its last answer
        self.wanted: dict[tuple[str, bytes], float] = {}  # (port, MAC) -> until
        self.mutes = 0  # times a flooding source's MAC was muted in the kernel

    def clear(self) -> None:
        self.refusals.clear()
        self.wanted.clear()

    def answered(self, source: bytes) -> None:
        self.refusals.pop(source, None)

    def refused(self, port: str, source: bytes, mac: bytes, now: float) -> None:
        """Count a source's refusals in a row; at MUTE_AFTER it floods: have its MAC muted."""
        count = self.refusals.pop(source, 0) + 1
        self.refusals[source] = count  # re-inserted: the dict stays in order of activity
        if len(self.refusals) > MAX_SOURCES:
            self.refusals.pop(next(iter(self.refusals)))
        if count >= MUTE_AFTER and len(self.wanted) < MAX_MUTED:
            self.refusals[source] = 0
            self.wanted[(port, mac)] = now + MUTE_FOR

    def apply(self, listener: _Listener, now: float) -> None:
        """This port's flooding sources: their MACs into its kernel filter."""
        wanted = {mac: until for (port, mac), until in self.wanted.items()
                  if port == listener.port and mac not in listener.muted}
        if not wanted:
            return
        for key in [k for k in self.wanted if k[0] == listener.port]:
            del self.wanted[key]
        room = MAX_MUTED - len(listener.muted)
        if room <= 0:
            return
        added = dict(list(wanted.items())[:room])
        self.mutes += len(added)
        listener.mute({**listener.muted, **added})


class RouterAdvertiser:
    """An event source of the daemon's poll loop: listener fds (fds/handle) and one timer
    (next_due/run). start() on entering master, stop() on leaving it. Times are the
    daemon's monotonic clock."""

    def __init__(self, sender: Sender, rng: random.Random | None = None) -> None:
        self.sender = sender
        self.rng = rng or random.Random()
        self.cfg: Config | None = None
        self.listeners: dict[int, _Listener] = {}
        self.links: dict[tuple[str, bytes], _Link] = {}
        self.pending: list[_Pending] = []           # heap of unicast answers
        self.pending_sources: set[bytes] = set()    # sources with an answer in the heap
        self.sources: dict[bytes, TokenBucket] = {}
        self.total = TokenBucket(TOTAL_RATE, int(TOTAL_RATE), 0.0)
        # Kept across stop()/start(): the 3 s between multicast RAs hold over a reload.
        self.last_multicast: dict[tuple[str, bytes], float] = {}
        self.guard = FloodGuard()
        self._seq = 0
        self._all_nodes_ra = b""
        # Totals since the daemon started (for metrics and tests).
        self.rs_received = 0      # RS frames read from the ports
        self.rs_ignored = 0       # invalid (RFC 4861 6.1.1) or addressed to another router
        self.rs_rate_limited = 0  # over the source's (or the total) answer budget
        self.rs_coalesced = 0     # served by an answer already scheduled
        self.ra_sent = 0          # solicited, takeover and unsolicited, per port
        self.multicast_sent = 0   # of which to all-nodes

    # -- role ----------------------------------------------------------------------------------
    def start(self, cfg: Config, now: float) -> None:
        """Entering master (or a new configuration while master): listen, announce, schedule.
        Sends no RA when the gateway is no IPv6 router. fds() changes: re-register them."""
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
            else:
                self.listeners[sock.fileno()] = _Listener(port, sock)
            # The takeover RA, at once unless a multicast RA left this link less than 3 s ago.
            link = _Link(port, b"", periodic=True,
                         initial_left=MAX_INITIAL_RTR_ADVERTISEMENTS - 1)
            link.next_at = max(now, self.last_multicast.get((port, b""), -1e9)
                               + MIN_DELAY_BETWEEN_RAS)
            self.links[(port, b"")] = link
        self.run(now)

    def stop(self) -> None:
        """Backup or stopped: not one more RA from here (and none with lifetime 0, see above)."""
        for listener in self.listeners.values():
            listener.sock.close()
        self.listeners.clear()
        self.links.clear()
        self.pending.clear()
        self.pending_sources.clear()
        self.sources.clear()
        self.guard.clear()
        self.cfg = None

    @property
    def active(self) -> bool:
        return self.cfg is not None

    # -- event source --------------------------------------------------------------------------
    def fds(self) -> list[int]:
        return list(self.listeners)

    def handle(self, fd: int, now: float) -> None:
        """Read the pending RS on `fd` (up to READ_BATCH; poll says when more wait) and
        schedule answers within each source's budget."""
        listener = self.listeners.get(fd)
        if listener is None or self.cfg is None:
            return
        for frame, tag in listener.read():
            self.solicit(listener.port, frame, tag, now)
        self.guard.apply(listener, now)

    def next_due(self) -> float | None:
        times = [link.next_at for link in self.links.values() if link.next_at is not None]
        if self.pending:
            times.append(self.pending[0].due)
        times += [min(lst.muted.values()) for lst in self.listeners.values() if lst.muted]
        return min(times) if times else None

    def run(self, now: float) -> None:
        """Send what is due: unicast answers, multicast RAs (periodic or answers)."""
        if self.cfg is None:
            return
        for listener in self.listeners.values():
            if listener.muted and min(listener.muted.values()) <= now:
                listener.mute({mac: t for mac, t in listener.muted.items() if t > now})
        for _ in range(SEND_BATCH):
            if not self.pending or self.pending[0].due > now:
                break
            answer = heapq.heappop(self.pending)
            self.pending_sources.discard(answer.source)
            if self.sender.send(answer.port, answer.frame):
                self.ra_sent += 1
        for key, link in list(self.links.items()):
            if link.next_at is not None and now >= link.next_at:
                self._send_multicast(link, now)
                if not link.periodic:
                    del self.links[key]

    def counters(self) -> dict[str, Any]:
        return {"rs_received": self.rs_received, "rs_ignored": self.rs_ignored,
                "rs_rate_limited": self.rs_rate_limited, "rs_coalesced": self.rs_coalesced,
                "rs_mutes": self.guard.mutes,
                "ra_sent": self.ra_sent, "ra_multicast": self.multicast_sent}

    # -- one solicitation (handle() reads them; tests feed them) -------------------------------
    def solicit(self, port: str, frame: bytes, tag: bytes, now: float) -> None:
        """One RS frame read from `port` (`tag`: its VLAN tag, b"" untagged): refuse it
        cheaply when its source has an answer coming or no budget, else validate it and
        schedule the answer."""
        if self.cfg is None:
            return
        self.rs_received += 1
        # The source as the frame claims it (MAC, IPv6 source): enough to share budgets fairly,
        # read before any parsing so that a flooding source costs almost nothing.
        source = port.encode() + tag + frame[6:12] + frame[ETH_HLEN + 8:ETH_HLEN + 24]
        bucket = self.sources.get(source)
        if source in self.pending_sources:
            self.rs_coalesced += 1  # its answer is on its way
            self.guard.refused(port, source, frame[6:12], now)
            return
        if bucket is not None and not bucket.has(now):
            self.rs_rate_limited += 1
            self.guard.refused(port, source, frame[6:12], now)
            return
        sol = parse_rs(frame)
        if sol is None or not _addressed_to_us(frame, self.cfg):
            self.rs_ignored += 1
            return
        delay = self.rng.uniform(0, MAX_RA_DELAY_TIME)
        if sol.src_ip == "::":  # it cannot receive unicast yet: the link's next multicast RA
            self._multicast_answer(port, tag, now, delay)
            return
        if bucket is None:
            if len(self.sources) >= MAX_SOURCES:
                self.sources.pop(next(iter(self.sources)))
            bucket = self.sources[source] = TokenBucket(1 / SOURCE_PERIOD, SOURCE_BURST, now)
        if len(self.pending) >= MAX_PENDING or not self.total.take(now):
            self.rs_rate_limited += 1
            return
        bucket.take(now)
        answer = router_advertisement(self.cfg, sol.src_ip, sol.src_mac or frame[6:12].hex(":"))
        if tag:  # back into the VLAN it came from
            answer = answer[:12] + tag + answer[12:]
        self._seq += 1
        heapq.heappush(self.pending, _Pending(now + delay, self._seq, port, answer, source))
        self.pending_sources.add(source)
        self.guard.answered(source)

    # -- inside ----------------------------------------------------------------------------------
    def _multicast_answer(self, port: str, tag: bytes, now: float, delay: float) -> None:
        """RFC 4861 6.2.6: the answer to an RS from :: is a multicast RA, delayed, never
        within 3 s of the link's previous one; an RA already scheduled sooner serves it."""
        key = (port, tag)
        last = self.last_multicast.get(key)
        base = now
        if last is not None and now - last < MIN_DELAY_BETWEEN_RAS:
            base = last + MIN_DELAY_BETWEEN_RAS
        link = self.links.get(key)
        # An RA already due within this RS's own window serves it too.
        if link is not None and link.next_at is not None \
                and link.next_at <= base + MAX_RA_DELAY_TIME:
            self.rs_coalesced += 1
            return
        due = base + delay
        if link is None:
            if len(self.links) >= MAX_LINKS:
                self.rs_rate_limited += 1
                return
            link = self.links[key] = _Link(port, tag)
        link.next_at = due

    def _send_multicast(self, link: _Link, now: float) -> None:
        frame = self._all_nodes_ra
        if link.tag:
            frame = frame[:12] + link.tag + frame[12:]
        if self.sender.send(link.port, frame):
            self.ra_sent += 1
            self.multicast_sent += 1
        self.last_multicast[(link.port, link.tag)] = now
        if len(self.last_multicast) > MAX_LINKS:
            self.last_multicast.pop(next(iter(self.last_multicast)))
        # Sent, whatever the cause: the link's periodic timer starts again (RFC 4861 6.2.6).
        link.next_at = _periodic_next(self.cfg, self.rng, link, now) \
            if link.periodic else None


def _periodic_next(cfg: Config | None, rng: random.Random, link: _Link, now: float) -> float:
    """The link's next unsolicited RA: at random between the interval keys; the first
    MAX_INITIAL_RTR_ADVERTISEMENTS no more than MAX_INITIAL_RTR_ADVERT_INTERVAL apart (a lost
    takeover RA is repeated soon, RFC 4861 6.2.4)."""
    assert cfg is not None
    interval = rng.uniform(_value(cfg, "bras_icmp6_min_rtradv_interval"),
                           _value(cfg, "bras_icmp6_max_rtradv_interval"))
    if link.initial_left > 0:
        link.initial_left -= 1
        interval = min(interval, MAX_INITIAL_RTR_ADVERT_INTERVAL)
    return now + interval
