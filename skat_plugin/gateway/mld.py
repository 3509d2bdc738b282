"""MLD reports for the virtual gateway's multicast groups (RFC 3810 MLDv2, RFC 2710 MLDv1).

Subscribers resolve the gateway with a Neighbor Solicitation to the solicited-node group of
its address (ff02::1:ffXX:XXXX). A switch that snoops MLD forwards such a group only to the
ports that reported it; a gateway that never reports may never hear the NS (RFC 5798 6.4.2:
a new master "joins" the solicited-node groups of its addresses). So, while master and only
then, for the solicited-node groups of bras_ipv6_link_local and bras_ipv6_address, and for
all-routers (ff02::2) when the gateway advertises itself as a router (RS go there):
- at takeover, an MLDv2 state-change report (CHANGE_TO_EXCLUDE, i.e. join) on every port
  the ND responder answers on, repeated once after a random 0-1 s (Robustness Variable 2,
  Unsolicited Report Interval 1 s, RFC 3810 9.1/9.11);
- in answer to a query on such a port: a current-state report (MODE_IS_EXCLUDE) for the
  groups asked about, after a random delay within the query's Maximum Response Delay
  (capped at MAX_ANSWER_DELAY); an MLDv1 query gets MLDv1 reports (RFC 3810 8.2.1).
A backup sends none: stop() drops what is scheduled, and the frames carry the plugin's
socket mark, which the backup guard drops at the ports' egress.

Reports come from bras_ipv6_link_local and the virtual MAC, to ff02::16 (MLDv2) or the group
(MLDv1), hop limit 1, with a Router Alert option in a Hop-by-Hop header (RFC 3810 5).

Queries are taken in by a packet socket per port whose classic BPF filter passes only
ICMPv6 type 130 behind an 8-byte Hop-by-Hop header (what queriers send: Router Alert and
padding). Budget: one report scheduled per port at a time, reports on a port at least
MIN_REPORT_GAP apart, READ_BATCH frames per handle(): a query flood costs a bounded amount of
work and yields at most one report a second per port. Tagged queries are answered untagged:
the gateway's addresses live on the untagged link, as its takeover announcements do.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from .. import ndsum, packetsock, report
from ..announce import ETH_P_IPV6, Sender, mac_bytes
from ..config import Config

ICMPV6 = 58
HOP_BY_HOP = 0
MLD_QUERY = 130
MLD1_REPORT = 131
MLD2_REPORT = 143
MODE_IS_EXCLUDE = 2
CHANGE_TO_EXCLUDE_MODE = 4
ALL_MLDV2_ROUTERS = "ff02::16"
ALL_ROUTERS = "ff02::2"
ETH_HLEN = 14
IP6_HLEN = 40
HBH_AT = ETH_HLEN + IP6_HLEN
ICMP_AT = HBH_AT + 8  # queries with an 8-byte Hop-by-Hop header, as every querier sends them
# Hop-by-Hop header: next header ICMPv6, length 0 (8 bytes), Router Alert (MLD), PadN (2).
HBH_ROUTER_ALERT = bytes([ICMPV6, 0, 5, 2, 0, 0, 1, 0])

UNSOLICITED_REPORT_INTERVAL = 1.0  # s, RFC 3810 9.11
ROBUSTNESS = 2                     # RFC 3810 9.1: the join goes out this many times
MAX_ANSWER_DELAY = 10.0            # s: the default Query Response Interval (RFC 3810 9.3)
MIN_REPORT_GAP = 1.0               # s between two answers on a port: a query flood's bound
READ_BATCH = 64


def solicited_node(addr: str) -> str:
    return ndsum.solicited_node(addr)


def groups(cfg: Config) -> list[str]:
    """The gateway's groups, in a stable order, without duplicates."""
    out: list[str] = []
    for key in ("bras_ipv6_link_local", "bras_ipv6_address"):
        if cfg.get(key):
            out.append(solicited_node(cfg[key]))
    if cfg.advertises_router:
        out.append(ALL_ROUTERS)
    return list(dict.fromkeys(out))


def _group_mac(group: str) -> bytes:
    return b"\x33\x33" + ipaddress.IPv6Address(group).packed[12:]


def _frame(vmac: str, src: str, dst: str, icmp: bytes) -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    icmp = icmp[:2] + struct.pack("!H", ndsum.icmp6_checksum(s, d, icmp)) + icmp[4:]
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(HBH_ROUTER_ALERT) + len(icmp), HOP_BY_HOP, 1,
                      s, d)
    return _group_mac(dst) + mac_bytes(vmac) + struct.pack("!H", ETH_P_IPV6) + ip6 \
        + HBH_ROUTER_ALERT + icmp


def report_v2(vmac: str, src: str, group_list: list[str], record_type: int) -> bytes:
    """One MLDv2 report (RFC 3810 5.2) with one record per group, no sources."""
    records = b"".join(struct.pack("!BBH16s", record_type, 0, 0,
                                   ipaddress.IPv6Address(g).packed) for g in group_list)
    icmp = struct.pack("!BBHHH", MLD2_REPORT, 0, 0, 0, len(group_list)) + records
    return _frame(vmac, src, ALL_MLDV2_ROUTERS, icmp)


def report_v1(vmac: str, src: str, group: str) -> bytes:
    """One MLDv1 report (RFC 2710 3), sent to the group itself."""
    icmp = struct.pack("!BBHHH16s", MLD1_REPORT, 0, 0, 0, 0, ipaddress.IPv6Address(group).packed)
    return _frame(vmac, src, group, icmp)


@dataclass
class Query:
    version: int         # 1 or 2
    group: str           # "::" for a general query
    max_delay: float     # seconds


def _max_response(code: int, version: int) -> float:
    if version == 1 or code < 0x8000:
        return code / 1000
    mant, exp = code & 0x0FFF, (code >> 12) & 0x7  # RFC 3810 5.1.3
    return ((mant | 0x1000) << (exp + 3)) / 1000


def parse_query(frame: bytes) -> Query | None:
    """A valid MLD query in an Ethernet frame (8-byte Hop-by-Hop header), else None."""
    if len(frame) < ICMP_AT + 24 or frame[12:14] != struct.pack("!H", ETH_P_IPV6):
        return None
    ip6 = frame[ETH_HLEN:HBH_AT]
    if ip6[0] >> 4 != 6 or ip6[6] != HOP_BY_HOP or ip6[7] != 1:  # MLD: hop limit 1
        return None
    if frame[HBH_AT] != ICMPV6 or frame[HBH_AT + 1] != 0:
        return None
    length = int.from_bytes(ip6[4:6], "big") - 8
    icmp = frame[ICMP_AT:ICMP_AT + length]
    if length < 24 or len(icmp) < length or icmp[0] != MLD_QUERY:
        return None
    src, dst = ip6[8:24], ip6[24:40]
    if not ipaddress.IPv6Address(src).is_link_local:  # RFC 3810 5.1.14, RFC 2710 5
        return None
    pseudo = src + dst + struct.pack("!I3xB", length, ICMPV6)
    if ~ndsum.csum(pseudo + icmp) & 0xFFFF != 0:
        return None
    version = 1 if length == 24 else 2
    if version == 2 and length < 28:
        return None
    group = ipaddress.IPv6Address(icmp[8:24])
    if not (group.is_unspecified or group.is_multicast):
        return None
    code = int.from_bytes(icmp[4:6], "big")
    return Query(version, str(group), _max_response(code, version))


def _query_filter() -> list[packetsock.Instruction]:
    """Classic BPF: IPv6, next header Hop-by-Hop, whose next header is ICMPv6 and length 8,
    then ICMPv6 type 130."""
    ldh, ldb, jeq, ret = (packetsock.LD_H_ABS, packetsock.LD_B_ABS, packetsock.JEQ_K,
                          packetsock.RET_K)
    return [
        (ldh, 0, 0, 12),
        (jeq, 0, 9, ETH_P_IPV6),
        (ldb, 0, 0, ETH_HLEN + 6),
        (jeq, 0, 7, HOP_BY_HOP),
        (ldb, 0, 0, HBH_AT),
        (jeq, 0, 5, ICMPV6),
        (ldb, 0, 0, HBH_AT + 1),
        (jeq, 0, 3, 0),
        (ldb, 0, 0, ICMP_AT),
        (jeq, 0, 1, MLD_QUERY),
        (ret, 0, 0, 0xFFFF),
        (ret, 0, 0, 0),
    ]


@dataclass
class _Port:
    name: str
    sock: socket.socket | None
    due: float | None = None          # the next report on this port
    record: int = CHANGE_TO_EXCLUDE_MODE
    groups: set[str] = field(default_factory=set)
    version: int = 2
    last_sent: float = -1e9
    joins_left: int = 0               # unsolicited repetitions still to send


class Reporter:
    """MLD reports while master; the same event-source shape as RouterAdvertiser, which
    hosts it (the daemon sees one source)."""

    def __init__(self, sender: Sender, rng: random.Random | None = None) -> None:
        self.sender = sender
        self.rng = rng or random.Random()
        self.cfg: Config | None = None
        self.groups: list[str] = []
        self.ports: dict[str, _Port] = {}
        self.by_fd: dict[int, _Port] = {}
        self.queries = 0
        self.queries_ignored = 0
        self.reports_sent = 0

    def start(self, cfg: Config, now: float) -> None:
        self.stop()
        if not cfg.has_ipv6:
            return
        self.cfg = cfg
        self.groups = groups(cfg)
        for name in cfg.ports if cfg.terminates else cfg.in_ports:
            try:
                sock: socket.socket | None = packetsock.open_filtered(
                    name, _query_filter(), ignore_outgoing=True)
            except OSError as e:
                report.warning(f"MLD queries on {name} go unanswered: {e.strerror or e}",
                               port=name)
                sock = None
            port = _Port(name, sock, due=now, groups=set(self.groups),
                         joins_left=ROBUSTNESS - 1)
            self.ports[name] = port
            if sock is not None:
                self.by_fd[sock.fileno()] = port

    def stop(self) -> None:
        for port in self.ports.values():
            if port.sock is not None:
                port.sock.close()
        self.ports.clear()
        self.by_fd.clear()
        self.cfg = None

    def fds(self) -> list[int]:
        return list(self.by_fd)

    def handle(self, fd: int, now: float) -> None:
        port = self.by_fd.get(fd)
        if port is None or port.sock is None:
            return
        for _ in range(READ_BATCH):
            try:
                frame, addr = port.sock.recvfrom(2048)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENETDOWN:
                    continue
                report.warning(f"MLD queries on {port.name}: {e.strerror or e}", port=port.name)
                return
            if addr[2] == packetsock.PACKET_OUTGOING:
                continue
            self.queries += 1
            query = parse_query(frame)
            if query is None:
                self.queries_ignored += 1
                continue
            self._answer(port, query, now)

    def next_due(self) -> float | None:
        times = [p.due for p in self.ports.values() if p.due is not None]
        return min(times) if times else None

    def run(self, now: float) -> None:
        if self.cfg is None:
            return
        for port in self.ports.values():
            if port.due is None or now < port.due:
                continue
            self._send(port, now)
            if port.joins_left > 0:  # the join's repetition
                port.joins_left -= 1
                port.due = now + self.rng.uniform(0, UNSOLICITED_REPORT_INTERVAL)
            else:
                port.due = None
                port.record = MODE_IS_EXCLUDE
                port.groups = set()

    def counters(self) -> dict[str, Any]:
        return {"mld_queries": self.queries, "mld_queries_ignored": self.queries_ignored,
                "mld_reports_sent": self.reports_sent}

    # -- inside ----------------------------------------------------------------------------------
    def _answer(self, port: _Port, query: Query, now: float) -> None:
        # Both sides are in ipaddress's normal form (groups() and parse_query()).
        asked = self.groups if query.group == "::" else \
            [g for g in self.groups if g == query.group]
        if not asked:
            return
        port.version = query.version
        due = now + self.rng.uniform(0, min(query.max_delay, MAX_ANSWER_DELAY))
        due = max(due, port.last_sent + MIN_REPORT_GAP)
        port.groups.update(asked)
        if port.due is None or due < port.due:
            port.due = due
        if port.joins_left == 0:
            port.record = MODE_IS_EXCLUDE

    def _send(self, port: _Port, now: float) -> None:
        assert self.cfg is not None
        vmac, src = self.cfg["bras_arp_mac"], self.cfg["bras_ipv6_link_local"]
        chosen = [g for g in self.groups if g in port.groups] or self.groups
        if port.version == 1:
            frames = [report_v1(vmac, src, g) for g in chosen]
        else:
            frames = [report_v2(vmac, src, chosen, port.record)]
        for frame in frames:
            if self.sender.send(port.name, frame):
                self.reports_sent += 1
        port.last_sent = now
