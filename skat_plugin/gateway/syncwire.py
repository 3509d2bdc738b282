"""The subscriber-table sync's wire format: fixed binary layouts, explicit lengths, a keyed MAC.

Every datagram, big-endian, at most MAX_DATAGRAM bytes (no IP fragments):

    offset size
     0      4   magic "SKTS"
     4      1   version (1)
     5      1   type: DATA 1, STATUS 2, ACK 3, REQUEST 4
     6      1   vrrp_router_id of the group
     7      1   flags: 0 (reserved; anything else is refused)
     8      8   sender id: random, one per daemon process
    16      8   seq: the sender's message counter, from 1, every type (against replay)
    24      8   time: the sender's clock, milliseconds since the Unix epoch (against replay
                to a receiver that has never heard of this sender)
    32      8   ref: DATA: its data sequence number (dseq); STATUS: the last dseq sent;
                ACK: every dseq up to this one is received or given up; REQUEST: the
                requester receives every dseq after this one (a dump that starts later
                reaches it whole)
    40      2   n4: DATA: IPv4 records; ACK: missing ranges; else 0
    42      2   n6: DATA: IPv6 records; else 0
    44          body:
                DATA     n4 x (IPv4 address 4, MAC 6), then n6 x (IPv6 address 16, MAC 6)
                STATUS   the last complete full-table dump: its first dseq 8, its last 8;
                         the oldest dseq the sender can still resend 8
                ACK      the master's sender id 8, then n4 x (first dseq 8, last dseq 8)
                REQUEST  the master's sender id 8
    end-32 32   HMAC-SHA256 with the group key (vrrp_sync_key_file) over everything before it

decode() never raises, whatever the bytes: it returns a Message or a refusal, one of the
short strings in REFUSALS (the counters' names). The order of its checks: the length and
the fixed fields first (cheap, and what a stray datagram fails), the router id (another
group on the segment, with its own key), then the MAC over the whole datagram, and only
then the records, which must all be subscribers' pairs (one that is not refuses the
datagram: an authenticated sender that sends one is broken or not ours).

What decode() cannot see needs state: a datagram may be replayed. Replay keeps, per sender
(a bounded number of them), the highest seq and which of the WINDOW before it were seen,
and refuses a datagram whose time is more than TIME_WINDOW from the receiver's clock (a
receiver that forgot the sender, or never knew it). The group's clocks must agree within
that (NTP).

The key: load_key() reads it (root's file, no group or other bits, at least MIN_KEY bytes
once surrounding white space is stripped); fingerprint() names it without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import stat
import struct
from collections import OrderedDict
from typing import NamedTuple

MAGIC = b"SKTS"
VERSION = 1
DATA, STATUS, ACK, REQUEST = 1, 2, 3, 4
TYPES = {DATA: "DATA", STATUS: "STATUS", ACK: "ACK", REQUEST: "REQUEST"}
HEADER = struct.Struct("!4sBBBB8sQQQHH")
MAC_SIZE = 32
MAX_DATAGRAM = 1400     # stays under any Ethernet MTU with IP and UDP headers
REC4, REC6, RANGE = 10, 22, 16
ROOM = MAX_DATAGRAM - HEADER.size - MAC_SIZE   # body bytes in one datagram: 1324
MAX_RANGES = (ROOM - 8) // RANGE
MIN_KEY = 32            # bytes: a 256-bit key, as HMAC-SHA256 wants
TIME_WINDOW = 30.0      # seconds of clock difference (and age) a datagram may have
WINDOW = 1024           # seqs below the highest still accepted once (reordering)
MAX_SENDERS = 64        # senders remembered; the least recently heard is forgotten first
CHECK_LABEL = b"skat-sync-check"

# A refusal: the counter's name, and what it means for the operator.
REFUSALS = {
    "short": "shorter than a header and its MAC",
    "long": f"longer than {MAX_DATAGRAM} bytes",
    "magic": "not a sync datagram (wrong magic)",
    "version": f"another version of the sync (this one speaks {VERSION})",
    "type": "an unknown message type",
    "flags": "reserved flags set",
    "length": "its length does not match its record counts",
    "router_id": "another vrrp_router_id (another group on this segment)",
    "mac": "a wrong MAC: another vrrp_sync_key_file than ours (fdpi_cli vrrp check-group), "
           "or forged",
    "pair": "a record that is no subscriber's (IP, MAC) pair",
    "stale": f"its time is more than {TIME_WINDOW:g} s from ours (a replay, or clocks that "
             f"differ: check NTP on the group)",
    "replay": "a sequence number seen before (a replay)",
    "peer": "from an address that is not in vrrp_unicast_peers",
    "internal": "an internal error while handling it (a bug; the datagram was dropped)",
}


class Message(NamedTuple):
    type: int
    router_id: int
    sender: bytes
    seq: int
    time_ms: int
    ref: int
    pairs: list[tuple[str, str]]        # DATA: (ip, mac), IPv4 first
    ranges: list[tuple[int, int]]       # ACK: missing dseq ranges, first <= last
    target: bytes                       # ACK, REQUEST: the master's sender id
    dump: tuple[int, int]               # STATUS: (first, last) dseq of the last full dump
    kept: int                           # STATUS: the oldest dseq the sender can resend


# -- encoding -----------------------------------------------------------------------------

def record(ip: str, mac: str) -> bytes:
    """One DATA record of a pair that passed subscribers.normalize()."""
    raw = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    return raw + bytes.fromhex(mac.replace(":", ""))


def _seal(key: bytes, kind: int, router_id: int, sender: bytes, seq: int, time_ms: int,
          ref: int, n4: int, n6: int, body: bytes) -> bytes:
    head = HEADER.pack(MAGIC, VERSION, kind, router_id, 0, sender, seq, time_ms, ref, n4, n6)
    return head + body + hmac.digest(key, head + body, "sha256")


def data(key: bytes, router_id: int, sender: bytes, seq: int, time_ms: int, dseq: int,
         n4: int, n6: int, records: bytes) -> bytes:
    """records: n4 IPv4 records, then n6 IPv6 ones, at most ROOM bytes."""
    return _seal(key, DATA, router_id, sender, seq, time_ms, dseq, n4, n6, records)


def status(key: bytes, router_id: int, sender: bytes, seq: int, time_ms: int, last: int,
           dump: tuple[int, int], kept: int) -> bytes:
    return _seal(key, STATUS, router_id, sender, seq, time_ms, last, 0, 0,
                 struct.pack("!QQQ", *dump, kept))


def ack(key: bytes, router_id: int, sender: bytes, seq: int, time_ms: int, target: bytes,
        through: int, ranges: list[tuple[int, int]]) -> bytes:
    ranges = ranges[:MAX_RANGES]
    body = target + b"".join(struct.pack("!QQ", a, b) for a, b in ranges)
    return _seal(key, ACK, router_id, sender, seq, time_ms, through, len(ranges), 0, body)


def request(key: bytes, router_id: int, sender: bytes, seq: int, time_ms: int,
            target: bytes, after: int) -> bytes:
    """after: the requester receives (or counts lost) every dseq after this one."""
    return _seal(key, REQUEST, router_id, sender, seq, time_ms, after, 0, 0, target)


# -- decoding -----------------------------------------------------------------------------

_BAD6 = (bytes(16), bytes(15) + b"\x01")
_U64 = struct.Struct("!Q")
_RANGE = struct.Struct("!QQ")


def _body_size(kind: int, n4: int, n6: int) -> int | None:
    """The body length the counts imply, or None for counts the type cannot have."""
    if kind == DATA:
        return n4 * REC4 + n6 * REC6 if n4 + n6 > 0 else None
    if kind == ACK:
        return 8 + n4 * RANGE if n6 == 0 and n4 <= MAX_RANGES else None
    if n4 or n6:
        return None
    return 24 if kind == STATUS else 8


def _mac_ok(raw: bytes) -> bool:
    return not raw[0] & 1 and raw != bytes(6)


def _pairs(body: bytes, n4: int, n6: int) -> list[tuple[str, str]] | None:
    """The records as (ip, mac) in the kernel's spelling, or None if one is no subscriber's
    pair (the rules of subscribers.normalize(), on the bytes)."""
    out = []
    ntop = socket.inet_ntop
    for i in range(0, n4 * REC4, REC4):
        ip, mac = body[i:i + 4], body[i + 4:i + REC4]
        if ip[0] in (0, 127) or ip[0] >= 224 or not _mac_ok(mac):
            return None
        out.append((ntop(socket.AF_INET, ip), mac.hex(":")))
    for i in range(n4 * REC4, n4 * REC4 + n6 * REC6, REC6):
        ip, mac = body[i:i + 16], body[i + 16:i + REC6]
        if ip[0] == 0xFF or (ip[0] == 0xFE and ip[1] & 0xC0 == 0x80) or ip in _BAD6 \
                or not _mac_ok(mac):
            return None
        out.append((ntop(socket.AF_INET6, ip), mac.hex(":")))
    return out


def decode(datagram: bytes, key: bytes, router_id: int) -> Message | str:
    """A well-formed, authenticated message of our group, or the refusal's name."""
    size = len(datagram)
    if size < HEADER.size + MAC_SIZE:
        return "short"
    if size > MAX_DATAGRAM:
        return "long"
    magic, version, kind, rid, flags, sender, seq, time_ms, ref, n4, n6 = \
        HEADER.unpack_from(datagram)
    if magic != MAGIC:
        return "magic"
    if version != VERSION:
        return "version"
    if kind not in TYPES:
        return "type"
    if flags:
        return "flags"
    body_size = _body_size(kind, n4, n6)
    if body_size is None or HEADER.size + body_size + MAC_SIZE != size:
        return "length"
    if rid != router_id:
        return "router_id"
    signed = datagram[:-MAC_SIZE]
    if not hmac.compare_digest(hmac.digest(key, signed, "sha256"), datagram[-MAC_SIZE:]):
        return "mac"
    body = signed[HEADER.size:]
    pairs: list[tuple[str, str]] = []
    ranges: list[tuple[int, int]] = []
    target = b""
    dump = (0, 0)
    kept = 0
    if kind == DATA:
        found = _pairs(body, n4, n6)
        if found is None:
            return "pair"
        pairs = found
    elif kind == STATUS:
        dump = _RANGE.unpack_from(body)
        kept = _U64.unpack_from(body, 16)[0]
    elif kind == ACK:
        target = body[:8]
        ranges = [_RANGE.unpack_from(body, 8 + i * RANGE) for i in range(n4)]
        if any(a > b for a, b in ranges):
            return "length"
    else:
        target = body[:8]
    return Message(kind, rid, sender, seq, time_ms, ref, pairs, ranges, target, dump, kept)


# -- replay -------------------------------------------------------------------------------

class Replay:
    """Which (sender, seq) were seen, per sender: the highest seq and a bitmap of the WINDOW
    below it (IPsec's anti-replay window, RFC 4303 3.4.3). At most MAX_SENDERS senders."""

    def __init__(self) -> None:
        self.senders: OrderedDict[bytes, tuple[int, int]] = OrderedDict()  # (high, bitmap)

    def check(self, msg: Message, now_ms: int) -> str | None:
        """None if `msg` is new (and remember it), else the refusal's name."""
        if abs(now_ms - msg.time_ms) > TIME_WINDOW * 1000:
            return "stale"
        known = self.senders.get(msg.sender)
        if known is None:
            state = (msg.seq, 1)
        else:
            high, seen = known
            if msg.seq > high:
                shift = msg.seq - high
                state = (msg.seq, ((seen << shift) | 1) & ((1 << WINDOW) - 1)
                         if shift < WINDOW else 1)
            else:
                back = high - msg.seq
                if back >= WINDOW or seen >> back & 1:
                    return "replay"
                state = (high, seen | 1 << back)
        self.senders[msg.sender] = state
        self.senders.move_to_end(msg.sender)
        while len(self.senders) > MAX_SENDERS:
            self.senders.popitem(last=False)
        return None


# -- the key ------------------------------------------------------------------------------

class KeyFileError(ValueError):
    """What is wrong with the key file, and how to fix it (one sentence)."""


def load_key(path: str) -> bytes:
    """The group key from `path`: a regular file of root's with no group or other
    permissions, at least MIN_KEY bytes once surrounding white space is stripped."""
    fix = (f"make one on one appliance with `umask 077; openssl rand -hex 32 > {path}` and "
           f"copy it to the group's other appliances (root-only, mode 0600)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise KeyFileError(f"cannot open {path}: {e.strerror or e}; {fix}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path} is not a regular file; {fix}")
        if st.st_uid != 0:
            raise KeyFileError(f"{path} belongs to uid {st.st_uid}, not root: "
                            f"`chown root:root {path}`")
        if st.st_mode & 0o077:
            raise KeyFileError(f"{path} is readable or writable by group or others (mode "
                            f"{stat.S_IMODE(st.st_mode):04o}): `chmod 600 {path}`")
        raw = os.read(fd, 4097)
    finally:
        os.close(fd)
    key = raw.strip()
    if len(raw) > 4096:
        raise KeyFileError(f"{path} is longer than 4096 bytes: is it the right file? {fix}")
    if len(key) < MIN_KEY:
        raise KeyFileError(f"{path} holds {len(key)} bytes, fewer than {MIN_KEY}; {fix}")
    return key


def fingerprint(key: bytes) -> str:
    """Names a key without revealing it: HMAC(key, "skat-sync-check"), 16 hex digits.
    Equal keys give equal fingerprints; `vrrp check-group` and `check` show it."""
    return hmac.new(key, CHECK_LABEL, hashlib.sha256).hexdigest()[:16]
