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
from email.utils import formatdate
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


def destination(frame: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP destination of a frame `parse` refused (IPv6 extension headers, say): enough
    to keep a blocked address blocked."""
    at = 12
    while len(frame) >= at + 4 and int.from_bytes(frame[at:at + 2], "big") in VLAN_TPIDS:
        at += 4
    kind = int.from_bytes(frame[at:at + 2], "big") if len(frame) >= at + 2 else 0
    l3 = at + 2
    if kind == ETH_P_IP and len(frame) >= l3 + 20:
        return ipaddress.IPv4Address(frame[l3 + 16:l3 + 20])
    if kind == ETH_P_IPV6 and len(frame) >= l3 + 40:
        return ipaddress.IPv6Address(frame[l3 + 24:l3 + 40])
    return None


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


def answer_to_subscriber(seg: Segment, data: bytes, ack: int | None = None,
                         mss: int | None = None) -> list[bytes]:
    """`data` (the HTTP answer) from the server, the last segment with FIN: the subscriber's
    request is done. Cut to `mss` bytes a segment (RFC 9293 3.7.1: never more than the peer
    can take): a long Location does not make one frame over the MTU. `ack`: the end of the
    subscriber's data (default: the end of `seg`)."""
    ack = seg.seq + _consumed(seg) if ack is None else ack
    size = answer_mss(seg) if mss is None else mss
    frames = []
    seq = seg.ack
    for at in range(0, len(data), size):
        part = data[at:at + size]
        last = at + size >= len(data)
        flags = (FIN | PSH | ACK) if last else ACK
        frames.append(tcp_frame(seg.src_mac, seg.dst_mac, seg.tags, seg.version, seg.dst,
                                seg.src, seg.dport, seg.sport, seq, ack, flags, part))
        seq += len(part)
    return frames


# The subscriber's MSS was in its SYN, which the inspector does not see. Without it: the
# minimum every host takes (RFC 9293 3.7.1: 536 over IPv4; IPv6's 1280-byte MTU less 60),
# or the size of the subscriber's own segments when larger (its link carried them), never
# more than a 1500-byte Ethernet frame carries.
MIN_MSS = {4: 536, 6: 1220}
MAX_MSS = {4: 1460, 6: 1440}


def answer_mss(seg: Segment, seen: int = 0) -> int:
    return min(MAX_MSS[seg.version], max(MIN_MSS[seg.version], seen, len(seg.payload)))


def ack_to_subscriber(seg: Segment, ack: int) -> bytes:
    """An ACK "from the server" for data the inspector holds: a sender that waits for it
    (Nagle) sends the rest of its request."""
    return tcp_frame(seg.src_mac, seg.dst_mac, seg.tags, seg.version, seg.dst, seg.src,
                     seg.dport, seg.sport, seg.ack, ack, ACK)


def reset_to_subscriber(seg: Segment, ack: int | None = None) -> bytes:
    ack = seg.seq + _consumed(seg) if ack is None else ack
    return tcp_frame(seg.src_mac, seg.dst_mac, seg.tags, seg.version, seg.dst, seg.src,
                     seg.dport, seg.sport, seg.ack, ack, RST | ACK)


def reset_to_server(seg: Segment, dst_mac: bytes, src_mac: bytes, seq: int | None = None) -> bytes:
    """`seq`: the first byte the server has not seen (default: `seg`'s)."""
    return tcp_frame(dst_mac, src_mac, seg.tags, seg.version, seg.src, seg.dst, seg.sport,
                     seg.dport, seg.seq if seq is None else seq, seg.ack, RST | ACK)


def reinjected(seg: Segment, dst_mac: bytes, src_mac: bytes, keep_data: bool = True) -> bytes:
    """The selected frame as it was (but for the MACs), its TCP checksum computed again.
    keep_data=False: without its data (a Fast Open SYN whose request is not complete: the
    subscriber sends the data again after the handshake, where it is read whole)."""
    f = seg.frame
    data_at = seg.end - len(seg.payload)
    tcp = bytearray(f[seg.l4:seg.end] if keep_data else f[seg.l4:data_at])
    head = bytearray(f[seg.l3:seg.l4])
    if not keep_data:
        if seg.version == 4:
            head[2:4] = struct.pack("!H", len(head) + len(tcp))
            head[10:12] = b"\x00\x00"
            head[10:12] = struct.pack("!H", checksum(bytes(head)))
        else:
            head[4:6] = struct.pack("!H", len(head) - 40 + len(tcp))
    tcp[16:18] = b"\x00\x00"
    csum = checksum(_pseudo(seg.version, seg.src, seg.dst, len(tcp)) + bytes(tcp))
    tcp[16:18] = struct.pack("!H", csum)
    return (dst_mac + src_mac + f[12:seg.l3] + bytes(head) + bytes(tcp)).ljust(ETH_MIN, b"\x00")


# -- HTTP answers -------------------------------------------------------------------------------
def http_answer(redirect_url: str | None, host: str, path: str, method: str = "GET",
                now: float | None = None) -> bytes:
    """SKAT's answer: 302 to black_list_redirect (with UrlRedir= when it ends in ? or &),
    or 403 without it. RFC 9110: a Date (6.6.1), no body to HEAD (9.3.2); the notice must
    not be cached (RFC 9111 5.2.2: no-store; Expires as an HTTP date in the past, for
    HTTP/1.0 caches)."""
    date = formatdate(now, usegmt=True)
    head = (f"Date: {date}\r\nCache-Control: no-cache, no-store, must-revalidate\r\n"
            "Pragma: no-cache\r\nExpires: Thu, 01 Jan 1970 00:00:00 GMT\r\n")
    if redirect_url:
        location = redirect_url
        if location.endswith(("?", "&")):
            location += "UrlRedir=" + quote(f"http://{host}{path}", safe="")
        return (f"HTTP/1.1 302 Found\r\nLocation: {location}\r\n{head}"
                "Content-Length: 0\r\nConnection: close\r\n\r\n").encode("latin-1")
    body = "Forbidden\n"
    text = (f"HTTP/1.1 403 Forbidden\r\n{head}Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    if method != "HEAD":
        text += body
    return text.encode("latin-1")
