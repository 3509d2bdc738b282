"""Deciding what the kernel selected (docs/redirect.md): a blocked address, an HTTP request,
a TLS ClientHello, a Fast Open SYN, a request cut over segments (held until complete). The
answers (302/403, resets) go to the subscriber's port, the re-injected and the resets
toward the server to its paired uplink port, through one marked packet socket.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from ..announce import Sender, mac_bytes
from ..config import Config
from . import holds, http, lists, packet, tls

ALLOW, BLOCK, MORE, REFUSE = "allow", "block", "more", "refuse"
MAX_BODIES = 16384     # flows whose allowed request's body is still coming
BODY_TTL = 5.0         # s: the kernel follows a flow for FOLLOW_MS only; this is plenty
COUNTERS = ("redirected", "forbidden", "reset", "allowed", "uninspected_behind",
            "undecided", "lost", "held", "held_acked", "held_expired", "dropped")


@dataclass
class Port:
    name: str
    uplink: str
    mark: int
    sock: socket.socket


class Decider:
    """The verdicts, with the inspector's current configuration, lists and sender (it sets
    them when they change) and the flows it holds or follows."""

    def __init__(self) -> None:
        self.cfg: Config | None = None
        self.lists = lists.Lists()
        self.sender: Sender | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.holds = holds.Holds()
        self.bodies: dict[holds.Key, tuple[int, float]] = {}

    def _server_macs(self, seg: packet.Segment) -> tuple[bytes, bytes]:
        """(destination, source) for a frame toward the server: the subscriber's own, or
        the gateway's rewrite for a frame addressed to the virtual MAC."""
        cfg = self.cfg
        assert cfg is not None
        if cfg.terminates and seg.dst_mac == mac_bytes(cfg["bras_arp_mac"]):
            gw = cfg["bras_gateway_mac"]
            if seg.version == 6:
                gw = cfg.get("bras_gateway_ipv6_mac") or gw
            return mac_bytes(gw), seg.dst_mac
        return seg.dst_mac, seg.src_mac

    def decide(self, port: Port, frame: bytes) -> None:
        assert self.cfg is not None and self.sender is not None
        seg = packet.parse(frame)
        if seg is None:  # unreadable (IPv6 extension headers): a blocked address stays so
            dst_ip = packet.destination(frame)
            if dst_ip is not None and self.lists.ip_blocked(dst_ip):
                self.counters["dropped"] += 1
                return
            self.counters["undecided"] += 1
            self.sender.send(port.uplink, frame)
            return
        dst, src = self._server_macs(seg)
        key = holds.key_of(seg)
        if self.lists.ip_blocked(seg.dst_ip):
            self.holds.pop(key)
            self._blocked_address(port, seg, dst, src)
            return
        if seg.flags & packet.SYN:
            self._fast_open(port, seg, dst, src)
            return
        held = self.holds.get(key)
        if held is None and self._in_body(key, seg):
            self._reinject(port, [seg], dst, src)
            return
        if held is not None:
            if seg.seq in held.segments:  # sent again: the sender waits for an ACK (Nagle)
                _data, after, _last = held.data()
                self.sender.send(port.name, packet.ack_to_subscriber(seg, after))
                self.counters["held_acked"] += 1
                return
            if self.holds.add(port.name, seg) is None:
                self._refuse(port, seg, dst, src, held.start)
                return
            data, after, last = held.data()
            start = held.start
        else:
            data, after, last, start = seg.payload, seg.seq + len(seg.payload), seg, seg.seq
        verdict, req = self._verdict(seg, data, start)
        if verdict == MORE:
            if held is None and self.holds.add(port.name, seg) is None:
                self._refuse(port, seg, dst, src, start)
                return
            self.counters["held"] += held is None
            return
        segments = held.ordered() if held is not None else [seg]
        self.holds.pop(key)
        if verdict == REFUSE:
            self._refuse(port, last, dst, src, start, after)
        elif verdict == BLOCK:
            self._block(port, last, dst, src, req, start, after,
                        held.largest if held is not None else 0)
        else:
            self._reinject(port, segments, dst, src)

    def _verdict(self, seg: packet.Segment, data: bytes,
                 start: int | None = None) -> tuple[str, http.Request | None]:
        """ALLOW, BLOCK (with the request that is, for port 80), MORE or REFUSE. `start`:
        the sequence number of data's first byte (an allowed request's body is noted)."""
        if seg.dport == 443:
            status, name = tls.server_name(data)
            if status == tls.MORE:
                return MORE, None
            if status == tls.TOO_BIG:
                return REFUSE, None
            return (BLOCK if name and self.lists.sni_blocked(name) else ALLOW), None
        parsed = http.parse(data)
        for req in parsed.requests:  # pipelined: each one decided; one blocked blocks
            if req.version == "HTTP/0.9":  # no Host to match, and no browser speaks it
                return BLOCK, req
            host = req.host if req.host is not None else str(seg.dst_ip)
            if self.lists.url_blocked(host, req.path):
                return BLOCK, req
        if parsed.too_long:
            return REFUSE, None
        if parsed.incomplete:
            return MORE, None
        if parsed.body_left > 0 and start is not None:
            self._body_until(holds.key_of(seg), (start + len(data) + parsed.body_left)
                             & 0xFFFFFFFF)
        return ALLOW, None

    def _body_until(self, key: holds.Key, end: int) -> None:
        """An allowed request's body (Content-Length) goes on up to `end`: segments that
        start before it are not request starts. (A chunked body's end is not known: its
        segments are read as any, and chunk data is not a request.)"""
        if len(self.bodies) >= MAX_BODIES:
            self.bodies.pop(next(iter(self.bodies)))
        self.bodies[key] = (end, time.monotonic() + BODY_TTL)

    def _in_body(self, key: holds.Key, seg: packet.Segment) -> bool:
        body = self.bodies.get(key)
        if body is None:
            return False
        end, until = body
        if time.monotonic() > until or (seg.seq - end) & 0xFFFFFFFF < 0x80000000:
            del self.bodies[key]
            return False
        return True

    def _answer(self, port: Port, seg: packet.Segment, dst: bytes, src: bytes,
                req: http.Request | None, start: int, after: int, seen: int) -> None:
        """302 (403 without black_list_redirect) to the subscriber, a reset to the server."""
        assert self.cfg is not None and self.sender is not None
        url = self.cfg.get("black_list_redirect")
        host = str(seg.dst_ip) if req is None or not req.host else req.host
        body = packet.http_answer(url, host, req.raw_path if req else "/",
                                  req.method if req else "GET")
        for frame in packet.answer_to_subscriber(seg, body, after,
                                                 packet.answer_mss(seg, seen)):
            self.sender.send(port.name, frame)
        self.sender.send(port.uplink, packet.reset_to_server(seg, dst, src, start))
        self.counters["redirected" if url else "forbidden"] += 1

    def _block(self, port: Port, seg: packet.Segment, dst: bytes, src: bytes,
               req: http.Request | None, start: int, after: int, seen: int) -> None:
        if seg.dport == 443:
            self._refuse(port, seg, dst, src, start, after)
            return
        self._answer(port, seg, dst, src, req, start, after, seen)

    def _refuse(self, port: Port, seg: packet.Segment, dst: bytes, src: bytes, start: int,
                after: int | None = None) -> None:
        """Resets both ways: the flow is blocked, or beyond what the inspector holds."""
        assert self.sender is not None
        self.holds.pop(holds.key_of(seg))
        self.sender.send(port.name, packet.reset_to_subscriber(seg, after))
        self.sender.send(port.uplink, packet.reset_to_server(seg, dst, src, start))
        self.counters["reset"] += 1

    def _blocked_address(self, port: Port, seg: packet.Segment, dst: bytes,
                         src: bytes) -> None:
        """Whatever the payload: an address on black_list_ip_file is blocked."""
        assert self.sender is not None
        if seg.flags & packet.SYN:  # refused, before the server saw anything
            self.sender.send(port.name, packet.reset_to_subscriber(seg))
            self.counters["reset"] += 1
        elif seg.dport == 80 and seg.payload:
            parsed = http.parse(seg.payload)
            req = parsed.requests[0] if parsed.requests else None
            self._answer(port, seg, dst, src, req, seg.seq, seg.seq + len(seg.payload), 0)
        else:
            self._refuse(port, seg, dst, src, seg.seq)

    def _fast_open(self, port: Port, seg: packet.Segment, dst: bytes, src: bytes) -> None:
        """A SYN with data (TCP Fast Open, RFC 7413) to an address that is not blocked:
        decided by its data. A request that is not complete in the SYN goes on without its
        data: the server acknowledges only the SYN, and the subscriber sends the data again
        after the handshake, where it is read as any request."""
        assert self.sender is not None
        verdict, _req = self._verdict(seg, seg.payload) if seg.payload else (ALLOW, None)
        if verdict in (BLOCK, REFUSE):
            self.sender.send(port.name, packet.reset_to_subscriber(seg))
            self.counters["reset"] += 1
            return
        keep = verdict == ALLOW
        self.sender.send(port.uplink, packet.reinjected(seg, dst, src, keep_data=keep))
        self.counters["allowed"] += 1

    def _reinject(self, port: Port, segments: list[packet.Segment], dst: bytes,
                  src: bytes) -> None:
        assert self.sender is not None
        for seg in segments:
            self.sender.send(port.uplink, packet.reinjected(seg, dst, src))
        self.counters["allowed"] += 1

    def expire_holds(self, ports: list[Port]) -> None:
        """Held too long (the rest never came): refused, never passed undecided."""
        for key, held in self.holds.expired(time.monotonic()):
            port = next((p for p in ports if p.name == held.port), None)
            if port is None or self.cfg is None:
                continue
            _data, after, last = held.data()
            dst, src = self._server_macs(last)
            self.holds.flows[key] = held  # _refuse pops it again
            self._refuse(port, last, dst, src, held.start, after)
            self.counters["held_expired"] += 1

