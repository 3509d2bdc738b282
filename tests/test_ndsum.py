"""The ND responder's checksum constants, proven without the kernel.

nft/nd-responder.nft is read and its rules are executed here, statement by statement, on an
NS built with scapy: raw writes (@th/@nh) change bytes without touching the checksum, named
writes (icmpv6 type, ip6 saddr/daddr) fix it incrementally (RFC 1624), as the kernel does.
The result must carry the checksum a fresh computation gives. The defines come from
render.py, exactly what `vrrp set master` passes to nft.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from hypothesis import example, given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Ether
from scapy.utils6 import in6_getnsma

from skat_plugin import render
from skat_plugin.config import Config, conffile, schema

NFT = render.nft_dir() / "nd-responder.nft"
ETH, NH, TH = 0, 14, 54  # offsets of the link, network and transport headers
STMT = re.compile(r"(ether daddr|ether saddr|ip6 daddr|ip6 saddr|icmpv6 type|@(?:th|nh),\d+,\d+)"
                  r" set (ether saddr|ip6 saddr|\S+)")
FIELDS = {"ether daddr": (ETH, 0, 6), "ether saddr": (ETH, 6, 6), "ip6 saddr": (NH, 8, 16),
          "ip6 daddr": (NH, 24, 16), "icmpv6 type": (TH, 0, 1)}
NAMED_WITH_CSUM = {"ip6 saddr", "ip6 daddr", "icmpv6 type"}


def rules() -> list[dict]:
    """The responder rules of the .nft file: their match keys and their statements in order."""
    text = NFT.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if "counter name nd_replies" not in line:
            continue
        match, action = line.split("counter name nd_replies")
        found.append({
            "daddr": re.search(r"ip6 daddr (\$\w+)", match).group(1),
            "length": int(re.search(r"ip6 length (\d+)", match).group(1)),
            "target": re.search(r"@th,64,128 (\$\w+)", match).group(1),
            "statements": STMT.findall(action),
            "fwd": action.strip().endswith("fwd to meta iif"),
        })
    return found


def _add(a: int, b: int) -> int:
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def _sum(data: bytes) -> int:
    total = 0
    for i in range(0, len(data), 2):
        total = _add(total, int.from_bytes(data[i:i + 2].ljust(2, b"\0"), "big"))
    return total


class Frame:
    def __init__(self, data: bytes, defines: dict[str, str]) -> None:
        self.b = bytearray(data)
        self.defines = defines

    def _span(self, field: str) -> tuple[int, int]:
        if field.startswith("@"):
            base, off, length = field[1:].split(",")
            start = (TH if base == "th" else NH) + int(off) // 8
            assert int(off) % 8 == 0 and int(length) % 8 == 0, field
            return start, int(length) // 8
        base, off, length = FIELDS[field]
        return base + off, length

    def read(self, field: str) -> bytes:
        start, length = self._span(field)
        return bytes(self.b[start:start + length])

    def value(self, src: str, length: int) -> bytes:
        if src.startswith("$"):
            src = self.defines[src[1:]]
        if src in FIELDS or src.startswith("@"):
            return self.read(src)
        if src == "nd-neighbor-advert":
            return bytes([136])
        if re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", src):
            return bytes.fromhex(src.replace(":", ""))
        if ":" in src:
            return ipaddress.IPv6Address(src).packed
        return int(src, 0).to_bytes(length, "big")

    def set(self, field: str, src: str) -> None:
        start, length = self._span(field)
        new = self.value(src, length)
        assert len(new) == length, (field, src)
        if field in NAMED_WITH_CSUM:
            # The kernel's incremental update of the ICMPv6 checksum: HC' = ~(~HC + ~m + m')
            # over the 16-bit words that hold the field.
            w0, w1 = start - (start - TH) % 2 if start >= TH else start, start + length
            w1 += (w1 - w0) % 2
            old_words = bytes(self.b[w0:w1])
            self.b[start:start + length] = new
            new_words = bytes(self.b[w0:w1])
            hc = int.from_bytes(self.b[TH + 2:TH + 4], "big")
            hc = ~_add(_add(~hc & 0xFFFF, ~_sum(old_words) & 0xFFFF), _sum(new_words)) & 0xFFFF
            self.b[TH + 2:TH + 4] = hc.to_bytes(2, "big")
        else:
            self.b[start:start + length] = new


def solicited_node(addr: str) -> str:
    return socket.inet_ntop(socket.AF_INET6,
                            in6_getnsma(socket.inet_pton(socket.AF_INET6, addr)))


def run_responder(cfg_values: dict, variant: str, which: str, requester_mac: str,
                  requester_ip: str) -> tuple[bytes, bytes]:
    """(NS as sent, NA as the rule leaves it)."""
    text = "".join(f"{k}={v}\n" for k, v in cfg_values.items())
    cfg = Config("test", schema.validate(conffile.parse_text(text, "test")))
    defines = render.render(cfg, "master", []).defines
    target = cfg_values["bras_ipv6_address" if which == "gua" else "bras_ipv6_link_local"]
    dst = solicited_node(target) if variant == "mc" else target
    ns = Ether(src=requester_mac, dst="33:33:ff:00:00:01") \
        / IPv6(src=requester_ip, dst=dst, hlim=255) / ICMPv6ND_NS(tgt=target)
    if variant != "bare":
        ns = ns / ICMPv6NDOptSrcLLAddr(lladdr=requester_mac)
    sent = bytes(ns)
    daddr_define = f"$nd_{which}_solnode" if variant == "mc" else f"$nd_{which}_addr"
    chosen = [r for r in rules() if r["daddr"] == daddr_define
              and r["length"] == len(sent) - TH and r["target"] == f"$nd_{which}_target"]
    assert len(chosen) == 1, (variant, which, chosen)
    frame = Frame(sent, defines)
    for field, src in chosen[0]["statements"]:
        frame.set(field, src)
    assert chosen[0]["fwd"]
    return sent, bytes(frame.b)


def fresh_checksum(frame: bytes) -> int:
    pkt = Ether(frame)
    del pkt[ICMPv6ND_NA].cksum
    return Ether(bytes(pkt))[ICMPv6ND_NA].cksum


macs = st.binary(min_size=6, max_size=6).map(
    lambda b: ":".join(f"{x:02x}" for x in bytes([b[0] & 0xFE | 0x02]) + b[1:]))
globals_ = st.binary(min_size=16, max_size=16).map(
    lambda b: str(ipaddress.IPv6Address(b"\x20\x01" + b[2:])))
link_locals = st.binary(min_size=8, max_size=8).map(
    lambda b: str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + b)))


def test_rules_of_the_file_are_all_understood() -> None:
    found = rules()
    assert len(found) == 6
    assert all(r["fwd"] and len(r["statements"]) >= 6 for r in found)
    assert {(r["daddr"], r["length"]) for r in found} == {
        (f"$nd_{w}_{d}", n) for w in ("gua", "ll")
        for d, n in (("solnode", 32), ("addr", 32), ("addr", 24))}


@settings(max_examples=150, deadline=None)
@given(vmac=macs, rmac=macs, gua=globals_, ll=link_locals, rip=globals_,
       router=st.sampled_from([0, 1]), variant=st.sampled_from(["mc", "uc", "bare"]),
       which=st.sampled_from(["gua", "ll"]))
@example(vmac="02:00:5e:00:01:01", rmac="52:54:00:12:34:56", gua="2001:db8:100::1",
         ll="fe80::1", rip="2001:db8:100::10", router=1, variant="mc", which="gua")
def test_transformed_ns_has_the_checksum_of_a_fresh_computation(
        vmac, rmac, gua, ll, rip, router, variant, which) -> None:
    values = {"bras_arp_mac": vmac, "bras_ipv6_address": gua, "bras_ipv6_link_local": ll,
              "vrrp_nd_router_flag": router, "in_dev": "i0", "out_dev": "o0"}
    sent, out = run_responder(values, variant, which, rmac, rip)
    na = Ether(out)
    target = gua if which == "gua" else ll
    assert len(out) == len(sent)
    assert na[ICMPv6ND_NA].type == 136 and na[ICMPv6ND_NA].tgt == target
    # O (0x20) only where the NA carries the target link-layer option (RFC 4861 7.2.4).
    override = 0 if variant == "bare" else 0x20
    assert out[TH + 4] == (0xC0 if router else 0x40) | override
    assert (na[IPv6].src, na[IPv6].dst) == (target, rip)
    assert (na[Ether].src, na[Ether].dst) == (vmac, rmac)
    if variant != "bare":
        assert na[ICMPv6NDOptDstLLAddr].lladdr == vmac
    ck, fresh = na[ICMPv6ND_NA].cksum, fresh_checksum(out)
    # 0x0000 and 0xffff are the same one's complement number; either is a valid checksum.
    assert ck == fresh or {ck, fresh} == {0, 0xFFFF}, (hex(ck), hex(fresh))


def test_a_wrong_constant_is_caught(monkeypatch) -> None:
    """The check above can fail: one bit off in K gives a wrong checksum."""
    values = {"bras_arp_mac": "02:00:5e:00:01:01", "bras_ipv6_address": "2001:db8:100::1",
              "bras_ipv6_link_local": "fe80::1", "vrrp_nd_router_flag": 1,
              "in_dev": "i0", "out_dev": "o0"}
    real = render.render

    def skewed(cfg, role, macs):
        rs = real(cfg, role, macs)
        rs.defines["nd_gua_k_mc"] = hex(int(rs.defines["nd_gua_k_mc"], 16) ^ 1)
        return rs

    monkeypatch.setattr(render, "render", skewed)
    _sent, out = run_responder(values, "mc", "gua", "52:54:00:12:34:56", "2001:db8:100::10")
    assert Ether(out)[ICMPv6ND_NA].cksum != fresh_checksum(out)
