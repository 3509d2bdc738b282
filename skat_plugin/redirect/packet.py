"""TCP frames as the inspector reads and writes them: parse, answer, reset, re-inject.

A frame comes with its Ethernet header, and a VLAN tag, if any, inside the frame (the copy
to the loopback device carries it there). Every frame built here keeps the tags of the frame
it answers, so a tagged subscriber is answered in its VLAN.

Sequence numbers, from the selected segment S (subscriber -> server, never delivered):
- the answer to the subscriber comes "from the server": seq = S.ack (what the subscriber
  expects next), ack = S.seq + len(S.payload), FIN with the data: the connection ends there;
- a reset to the subscriber: seq = S.ack, ack as above (a SYN counts one);
- the reset to the server comes "from the subscriber": seq = S.seq, which is exactly what the
  server expects next, since S never reached it (RFC 5961 accepts only that).
Checksums are always computed here: a frame from a local sender may carry only a partial
TCP checksum (the NIC's job), and a re-injected frame would be refused with it.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass
from urllib.parse import quote

from .. import ndsum

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8)
ETH_MIN = 60
TTL = 64
WINDOW = 65535


checksum = ndsum.inet_checksum  # the Internet checksum (RFC 1071), the product's one sum


@dataclass
class Segment:
    frame: bytes
    dst_mac: bytes
    src_mac: bytes
    tags: bytes          # VLAN tags as in the frame (4 bytes each), b"" untagged
    version: int         # 4 or 6
    src: bytes           # IP addresses, packed
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    l3: int              # offsets in frame: IP header, TCP header, end of the IP packet
    l4: int
    end: int
    payload: bytes

    @property
    def dst_ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.dst)


def parse(frame: bytes) -> Segment | None:
    """A TCP segment over IPv4 (any header length) or IPv6 (no extension headers)."""
    at, tags = 12, b""
    while len(frame) >= at + 4 and int.from_bytes(frame[at:at + 2], "big") in VLAN_TPIDS:
        tags += frame[at:at + 4]
        at += 4
    if len(frame) < at + 2:
        return None
    ethertype = int.from_bytes(frame[at:at + 2], "big")
    l3 = at + 2
    if ethertype == ETH_P_IP and len(frame) >= l3 + 20:
        ihl = (frame[l3] & 0x0F) * 4
        if frame[l3] >> 4 != 4 or ihl < 20 or frame[l3 + 9] != 6:
            return None
        end = l3 + int.from_bytes(frame[l3 + 2:l3 + 4], "big")
        src, dst, l4, version = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20], l3 + ihl, 4
    elif ethertype == ETH_P_IPV6 and len(frame) >= l3 + 40:
        if frame[l3] >> 4 != 6 or frame[l3 + 6] != 6:
            return None
        end = l3 + 40 + int.from_bytes(frame[l3 + 4:l3 + 6], "big")
        src, dst, l4, version = frame[l3 + 8:l3 + 24], frame[l3 + 24:l3 + 40], l3 + 40, 6
    else:
        return None
    if end > len(frame) or end < l4 + 20:
        return None
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", frame, l4)
    data = l4 + (off >> 4) * 4
    if data > end:
        return None
    return Segment(frame, frame[0:6], frame[6:12], tags, version, src, dst, sport, dport, seq,
                   ack, flags, l3, l4, end, frame[data:end])


def _ip_header(version: int, src: bytes, dst: bytes, length: int) -> bytes:
    if version == 4:
        ident = int.from_bytes(os.urandom(2), "big")
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, ident, 0x4000, TTL, 6, 0,
                           src, dst)
        return head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return struct.pack("!IHBB16s16s", 6 << 28, length, 6, TTL, src, dst)


def _pseudo(version: int, src: bytes, dst: bytes, length: int) -> bytes:
    if version == 4:
        return src + dst + struct.pack("!BBH", 0, 6, length)
    return src + dst + struct.pack("!I3xB", length, 6)


def tcp_frame(dst_mac: bytes, src_mac: bytes, tags: bytes, version: int, src: bytes,
              dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      5 << 4, flags, WINDOW, 0, 0) + payload
    csum = checksum(_pseudo(version, src, dst, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ethertype = ETH_P_IP if version == 4 else ETH_P_IPV6
    frame = (dst_mac + src_mac + tags + struct.pack("!H", ethertype)
             + _ip_header(version, src, dst, len(tcp)) + tcp)
    return frame.ljust(ETH_MIN, b"\x00")


def _consumed(seg: Segment) -> int:
    return len(seg.payload) + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)


def answer_to_subscriber(seg: Segment, data: bytes) -> bytes:
    """`data` (the HTTP answer) from the server, with FIN: the subscriber's request is done."""
    return tcp_frame(seg.src_mac, seg.dst_mac, seg.tags, seg.version, seg.dst, seg.src,
                     seg.dport, seg.sport, seg.ack, seg.seq + _consumed(seg),
                     FIN | PSH | ACK, data)


def reset_to_subscriber(seg: Segment) -> bytes:
    return tcp_frame(seg.src_mac, seg.dst_mac, seg.tags, seg.version, seg.dst, seg.src,
                     seg.dport, seg.sport, seg.ack, seg.seq + _consumed(seg), RST | ACK)


def reset_to_server(seg: Segment, dst_mac: bytes, src_mac: bytes) -> bytes:
    return tcp_frame(dst_mac, src_mac, seg.tags, seg.version, seg.src, seg.dst, seg.sport,
                     seg.dport, seg.seq, seg.ack, RST | ACK)


def reinjected(seg: Segment, dst_mac: bytes, src_mac: bytes) -> bytes:
    """The selected frame as it was (but for the MACs), its TCP checksum computed again."""
    f = seg.frame
    tcp = bytearray(f[seg.l4:seg.end])
    tcp[16:18] = b"\x00\x00"
    csum = checksum(_pseudo(seg.version, seg.src, seg.dst, len(tcp)) + bytes(tcp))
    tcp[16:18] = struct.pack("!H", csum)
    return (dst_mac + src_mac + f[12:seg.l4] + bytes(tcp)).ljust(ETH_MIN, b"\x00")


# -- HTTP -------------------------------------------------------------------------------------
def http_request(payload: bytes) -> tuple[str, str] | None:
    """(host, path) of the request that starts this payload, or None when the first segment
    does not hold the request line and a Host header (the request then passes, counted)."""
    head = payload.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    target = parts[1].decode("latin-1")
    host = None
    if target.lower().startswith("http://"):  # absolute form: the target names the host
        rest = target[7:]
        host, slash, path = rest.partition("/")
        target = slash + path or "/"
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"host":
            host = host or value.strip().decode("latin-1")
            break
    if not host or not target.startswith("/"):
        return None
    return host, target


def http_answer(redirect_url: str | None, host: str, path: str) -> bytes:
    """SKAT's answer: 302 to black_list_redirect (with UrlRedir= when it ends in ? or &),
    or 403 without it. The notice must not be cached."""
    nocache = ("Cache-Control: no-cache, no-store, must-revalidate\r\n"
               "Pragma: no-cache\r\nExpires: 0\r\n")
    if redirect_url:
        location = redirect_url
        if location.endswith(("?", "&")):
            location += "UrlRedir=" + quote(f"http://{host}{path}", safe="")
        return (f"HTTP/1.1 302 Found\r\nLocation: {location}\r\n{nocache}"
                "Content-Length: 0\r\nConnection: close\r\n\r\n").encode("latin-1")
    body = "Forbidden\n"
    return (f"HTTP/1.1 403 Forbidden\r\n{nocache}Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode("latin-1")


# -- TLS --------------------------------------------------------------------------------------
def tls_server_name(payload: bytes) -> str | None:
    """The server_name of the ClientHello that starts this payload (RFC 8446 4.1.2,
    RFC 6066 3); None when it has none or it is not within this segment."""
    try:
        if payload[0] != 0x16 or payload[5] != 0x01:
            return None
        at = 5 + 4 + 2 + 32                       # handshake header, version, random
        at += 1 + payload[at]                     # session id
        at += 2 + int.from_bytes(payload[at:at + 2], "big")  # cipher suites
        at += 1 + payload[at]                     # compression methods
        end = at + 2 + int.from_bytes(payload[at:at + 2], "big")
        at += 2
        while at + 4 <= min(end, len(payload)):
            kind = int.from_bytes(payload[at:at + 2], "big")
            size = int.from_bytes(payload[at + 2:at + 4], "big")
            if kind == 0:  # server_name: list length (2), type (1) = host_name, length (2)
                if payload[at + 6] != 0:
                    return None
                n = int.from_bytes(payload[at + 7:at + 9], "big")
                name = payload[at + 9:at + 9 + n]
                return name.decode("ascii") if len(name) == n else None
            at += 4 + size
    except (IndexError, UnicodeDecodeError):
        return None
    return None
