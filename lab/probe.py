"""A subscriber's view of the virtual gateway: ARP/ND requests on a timer, every reply timed.

Runs inside a subscriber namespace (test and lab tooling, not product code):

    probe.py watch --iface s0 --ip 100.64.0.1 --interval 0.005 --duration 5
        one ARP request every 5 ms; prints JSON: replies per source MAC, the longest gap
        between replies, the longest run of requests without a reply (max_unanswered_ms:
        the failover time as the subscriber sees it, whatever the prober's own scheduling),
        requests without a reply (unanswered; replies beyond sent - unanswered were
        answered twice: two gateways).
    probe.py rtt --iface s0 --ip 100.64.0.1 --count 1000   (or --ip6 2001:db8::1)
        one request at a time; prints JSON with the round trip times (median, p99) in us.

Raw AF_PACKET sockets and struct, so that 5 ms timers hold and nothing else is needed.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import select
import socket
import statistics
import struct
import sys
import time

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD


def _mac(iface: str) -> bytes:
    with open(f"/sys/class/net/{iface}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


def _ipv4_of(iface: str) -> bytes:
    import fcntl

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        req = struct.pack("256s", iface.encode()[:15])
        return fcntl.ioctl(s.fileno(), 0x8915, req)[20:24]  # SIOCGIFADDR
    finally:
        s.close()


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Prober:
    """Builds one kind of request and recognises its reply."""

    def __init__(self, iface: str, ip: str | None, ip6: str | None, src6: str | None) -> None:
        self.iface = iface
        self.mac = _mac(iface)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                  socket.htons(ETH_P_ARP if ip else ETH_P_IPV6))
        self.sock.bind((iface, 0))
        self.sock.setblocking(False)
        if ip:
            self.target = ipaddress.IPv4Address(ip).packed
            self.frame = self._arp_request(_ipv4_of(iface))
            self.is_reply = self._is_arp_reply
        else:
            self.target = ipaddress.IPv6Address(ip6).packed
            self.src6 = ipaddress.IPv6Address(src6 or "fe80::1:2:3:4").packed
            self.frame = self._ns()
            self.is_reply = self._is_na

    def _arp_request(self, spa: bytes) -> bytes:
        eth = b"\xff" * 6 + self.mac + struct.pack("!H", ETH_P_ARP)
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + self.mac + spa + b"\0" * 6 + self.target
        return eth + arp

    def _ns(self) -> bytes:
        sol = bytes.fromhex("ff0200000000000000000001ff") + self.target[13:]
        dst_mac = b"\x33\x33" + sol[12:]
        body = struct.pack("!BBHI", 135, 0, 0, 0) + self.target + bytes([1, 1]) + self.mac
        pseudo = self.src6 + sol + struct.pack("!I3xB", len(body), 58)
        body = body[:2] + struct.pack("!H", _csum(pseudo + body)) + body[4:]
        ip6 = struct.pack("!IHBB", 0x60000000, len(body), 58, 255) + self.src6 + sol
        return dst_mac + self.mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body

    def _is_arp_reply(self, f: bytes) -> bool:
        return (len(f) >= 42 and f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02"
                and f[28:32] == self.target and f[6:12] != self.mac)

    def _is_na(self, f: bytes) -> bool:
        # Solicited NAs only (S flag): the master's unsolicited refresh NAs are no answer.
        return (len(f) >= 78 and f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 136
                and f[58] & 0x40 and f[62:78] == self.target)

    def send(self) -> None:
        self.sock.send(self.frame)

    def replies(self, timeout: float) -> list[tuple[float, str]]:
        """(time, source MAC) of every reply that arrives within `timeout`."""
        out = []
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return out
            while True:
                try:
                    f = self.sock.recv(2048)
                except BlockingIOError:
                    break
                if self.is_reply(f):
                    out.append((time.monotonic(), f[6:12].hex(":")))
            if out:
                return out


def watch(p: Prober, interval: float, duration: float) -> dict:
    start = time.monotonic()
    sent = 0
    replies: list[tuple[float, str]] = []
    # Per request: when it was sent and how many replies came before the next one. A run
    # of unanswered requests is the gap the subscriber saw, whatever this process's own
    # scheduling (a stalled prober reads its replies late, not never).
    windows: list[tuple[float, int]] = []
    next_send = start
    while time.monotonic() - start < duration:
        p.send()
        sent += 1
        windows.append((time.monotonic(), 0))
        next_send += interval
        end = next_send
        while (left := end - time.monotonic()) > 0:
            got = p.replies(left)
            replies.extend(got)
            windows[-1] = (windows[-1][0], windows[-1][1] + len(got))
            if not got:
                break
    last = p.replies(0.05)
    replies.extend(last)
    if windows:
        windows[-1] = (windows[-1][0], windows[-1][1] + len(last))
    unanswered, first = 0.0, None
    for t, n in windows:
        if n == 0 and first is None:
            first = t
        elif n and first is not None:
            unanswered, first = max(unanswered, t - first), None
    times = [t for t, _ in replies]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    by_mac: dict[str, int] = {}
    for _, mac in replies:
        by_mac[mac] = by_mac.get(mac, 0) + 1
    longest = max(gaps, default=None)
    at = times[gaps.index(longest)] - start if longest is not None else None
    return {"sent": sent, "replies": len(replies), "by_mac": by_mac,
            "max_gap_ms": round(longest * 1000, 2) if longest is not None else None,
            "max_gap_at_s": round(at, 3) if at is not None else None,
            "max_unanswered_ms": round(unanswered * 1000, 2),
            "unanswered": sum(1 for _, n in windows if n == 0),
            "first_reply_s": round(times[0] - start, 3) if times else None,
            "duration_s": round(time.monotonic() - start, 3)}


def rtt(p: Prober, count: int) -> dict:
    samples, lost = [], 0
    for _ in range(count):
        t0 = time.monotonic()
        p.send()
        got = p.replies(0.2)
        if got:
            samples.append((got[0][0] - t0) * 1e6)
        else:
            lost += 1
    samples.sort()
    return {"count": count, "lost": lost,
            "median_us": round(statistics.median(samples), 1) if samples else None,
            "p99_us": round(samples[int(len(samples) * 0.99) - 1], 1) if samples else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["watch", "rtt"])
    ap.add_argument("--iface", required=True)
    ap.add_argument("--ip", help="IPv4 target (ARP)")
    ap.add_argument("--ip6", help="IPv6 target (NS)")
    ap.add_argument("--src6", help="IPv6 source for NS (default fe80::1:2:3:4)")
    ap.add_argument("--interval", type=float, default=0.005)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--count", type=int, default=1000)
    a = ap.parse_args(argv)
    if bool(a.ip) == bool(a.ip6):
        ap.error("give exactly one of --ip, --ip6")
    p = Prober(a.iface, a.ip, a.ip6, a.src6)
    result = watch(p, a.interval, a.duration) if a.mode == "watch" else rtt(p, a.count)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
