"""Checksum compensation constants for the in-kernel ND responder (see nft/nd-responder.nft).

The rule's raw writes change the ICMPv6 message without fixing its checksum: the flags
(+flags<<8 in word 2), the option type 1 -> 2 (+0x0100) and the option MAC (requester ->
virtual). The later named write `ip6 daddr set ip6 saddr` adds (new - old) of the destination
field to the checksum. Filling the field beforehand with Y = D0 - skipped makes that write add
(S - D0) + skipped: the pseudo-header change plus everything the raw writes skipped.
All sums are 16-bit one's complement.
"""

from __future__ import annotations

import ipaddress
import struct


def _words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def _add(a: int, b: int) -> int:
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def _neg(a: int) -> int:
    return ~a & 0xFFFF


def csum(data: bytes) -> int:
    """One's complement sum of 16-bit words (not inverted); an odd last byte is padded."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for w in _words(data):
        total = _add(total, w)
    return total


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of data: the inverted sum."""
    return ~csum(data) & 0xFFFF


def icmp6_checksum(src: bytes, dst: bytes, icmp: bytes) -> int:
    """ICMPv6's checksum (RFC 4443 2.3) over the pseudo-header (RFC 8200 8.1) and `icmp`
    (its checksum field zero); src and dst are the packed addresses."""
    return inet_checksum(src + dst + struct.pack("!I3xB", len(icmp), 58) + icmp)


def solicited_node(addr: str) -> str:
    a = ipaddress.IPv6Address(addr).packed
    return str(ipaddress.IPv6Address(bytes.fromhex("ff0200000000000000000001ff") + a[13:]))


def k_with_option(dest: str, flags: int, vmac: str) -> int:
    """10-byte constant that follows the requester MAC in the destination field (NS+SLLA).

    sum(K) = D0 - (flags<<8) - 0x0100 - M_virtual; zeros with the sum in the last word do.
    """
    d0 = csum(ipaddress.IPv6Address(dest).packed)
    m_virtual = csum(bytes.fromhex(vmac.replace(":", "")))
    skipped = _add(_add(flags << 8, 0x0100), m_virtual)
    return _add(d0, _neg(skipped))


def k_nonce(dest: str, flags: int, vmac: str) -> int:
    """10-byte constant after the nonce in the destination field (DAD NS + nonce, RFC 7527).

    The nonce option becomes the target link-layer option: type 14 -> 2 (-0x0c00) and the
    nonce -> M_virtual, so sum(K) = D0 - (flags<<8) + 0x0c00 - M_virtual.
    """
    d0 = csum(ipaddress.IPv6Address(dest).packed)
    m_virtual = csum(bytes.fromhex(vmac.replace(":", "")))
    return _add(_add(_add(d0, _neg(flags << 8)), 0x0C00), _neg(m_virtual))


def k_bare(dest: str, flags: int) -> int:
    """16-byte destination value for an NS without options: sum(Y) = D0 - (flags<<8)."""
    d0 = csum(ipaddress.IPv6Address(dest).packed)
    return _add(d0, _neg(flags << 8))
