"""The in-kernel ARP and ND responders: master answers exactly once from the virtual MAC, with
frames the subscriber's kernel accepts; backup answers nothing.

Replies are counted on the wire (tcpdump on the subscriber's port), not only by the tools.
"""

from __future__ import annotations

import json
import re
import socket

from conftest import VGUA, VIP, VLL, VMAC, Topo
from scapy.layers.inet6 import (
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.utils6 import in6_getnsma, in6_getnsmac
from wire import Capture, mac_of, send_frames

SUB_IP = "100.64.0.10"
SUB_GUA = "2001:db8:100::10"
SUB_LL = "fe80::10"  # added by the tests that need a fixed link-local source
UNRELATED = "2001:db8:100::99"  # nobody owns it


def counters(topo: Topo) -> dict[str, int]:
    return topo.app.show()["counters"]


def arp_replies(frames: list) -> list:
    return [f for f in frames if ARP in f and f[ARP].op == 2]


def nas(frames: list, target: str | None = None) -> list:
    return [f for f in frames if ICMPv6ND_NA in f
            and (target is None or f[ICMPv6ND_NA].tgt == target)]


def nss(frames: list, target: str) -> list:
    return [f for f in frames if ICMPv6ND_NS in f and f[ICMPv6ND_NS].tgt == target]


def ns_frame(smac: str, src: str, target: str, dst: str | None = None, option: bool = True,
             hlim: int = 255) -> bytes:
    """A Neighbor Solicitation from the subscriber; multicast unless dst is given."""
    if dst is None:
        group = in6_getnsma(socket.inet_pton(socket.AF_INET6, target))
        dst, edst = socket.inet_ntop(socket.AF_INET6, group), in6_getnsmac(group)
    else:
        edst = VMAC
    pkt = Ether(src=smac, dst=edst) / IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(tgt=target)
    if option:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=smac)
    return bytes(pkt)


def checksum_ok(frame) -> bool:
    """Recompute the ICMPv6 checksum with scapy (drop it and rebuild) and compare."""
    original = frame[ICMPv6ND_NA].cksum
    fresh = Ether(bytes(frame))
    del fresh[ICMPv6ND_NA].cksum
    return Ether(bytes(fresh))[ICMPv6ND_NA].cksum == original


def add_sub_ll(topo: Topo) -> None:
    topo.lab.run(topo.sub, "ip", "addr", "add", f"{SUB_LL}/64", "dev", "s0", "nodad")


# ------------------------------------------------------------------------------------------

def test_master_arping_and_ndisc6_get_exactly_one_reply(topo: Topo) -> None:
    lab, sub = topo.lab, topo.sub
    smac = mac_of(lab, sub, "s0")
    before = counters(topo)
    with Capture(lab, sub, "s0", "arp or icmp6") as cap:
        arping = lab.run(sub, "arping", "-c", "1", "-w", "2", "-I", "s0", VIP).stdout
        nd = {t: lab.run(sub, "ndisc6", "-m", "-n", "-r", "1", "-w", "500", t, "s0").stdout
              for t in (VGUA, VLL)}
    frames = cap.stop()
    after = counters(topo)

    # arping itself: one sent, one received, from the virtual MAC.
    assert re.search(r"1 packets transmitted, 1 packets received", arping), arping
    assert "(0 extra)" in arping, arping
    assert re.findall(r"from ([0-9a-f:]{17})", arping.lower()) == [VMAC], arping
    # ndisc6 -m waits the whole -w window and prints every answer it gets.
    for target, out in nd.items():
        assert out.count("Target link-layer address") == 1, (target, out)
        assert VMAC.upper() in out, (target, out)

    # The wire: exactly one ARP reply and one NA per target, all from the virtual MAC.
    replies = arp_replies(frames)
    assert len(replies) == 1, [f.summary() for f in frames]
    r = replies[0]
    assert (r[Ether].src, r[Ether].dst) == (VMAC, smac)
    assert (r[ARP].hwsrc, r[ARP].psrc, r[ARP].hwdst, r[ARP].pdst) == (VMAC, VIP, smac, SUB_IP)
    for target in (VGUA, VLL):
        answers = nas(frames, target)
        assert len(answers) == 1, (target, [f.summary() for f in frames])
        na = answers[0]
        assert na[Ether].src == VMAC and na[Ether].dst == smac
        assert na[IPv6].src == target and na[IPv6].hlim == 255
        assert na[ICMPv6NDOptDstLLAddr].lladdr == VMAC
        assert checksum_ok(na)

    # Counters moved by exactly what was sent.
    sent_arp = [f for f in frames if ARP in f and f[ARP].op == 1 and f[ARP].pdst == VIP]
    sent_ns = nss(frames, VGUA) + nss(frames, VLL)
    assert len(sent_arp) == 1 and len(sent_ns) == 2
    assert after["arp_replies"] - before["arp_replies"] == len(sent_arp)
    assert after["nd_replies"] - before["nd_replies"] == len(sent_ns)

    # Reply latency as seen on the subscriber's wire (for the closing note).
    arp_us = (r.time - sent_arp[0].time) * 1e6
    nd_us = [(nas(frames, t)[0].time - nss(frames, t)[0].time) * 1e6 for t in (VGUA, VLL)]
    arping_time = re.search(r"time=(\S+ \S+)", arping)
    print(f"\nreply latency on the wire: ARP {float(arp_us):.1f} us, "
          f"ND {float(nd_us[0]):.1f} / {float(nd_us[1]):.1f} us; "
          f"arping: {arping_time.group(1) if arping_time else '?'}")


def test_master_replies_are_accepted_by_the_subscriber_kernel(topo: Topo) -> None:
    lab, sub = topo.lab, topo.sub
    # Nobody answers the echo requests (the gateway address lives nowhere); the point is the
    # address resolution the kernel does first.
    lab.run(sub, "ping", "-c", "1", "-W", "1", VIP, check=False)
    lab.run(sub, "ping", "-6", "-c", "1", "-W", "1", f"{VLL}%s0", check=False)
    lab.run(sub, "ping", "-6", "-c", "1", "-W", "1", VGUA, check=False)
    neigh = json.loads(lab.run(sub, "ip", "-j", "neigh", "show", "dev", "s0").stdout)
    by_dst = {n["dst"]: n for n in neigh}
    for addr in (VIP, VLL, VGUA):
        entry = by_dst.get(addr)
        assert entry is not None, (addr, neigh)
        assert entry.get("lladdr", "").lower() == VMAC, entry
        assert "REACHABLE" in entry["state"], entry


def test_master_answers_unicast_ns_with_and_without_option(topo: Topo) -> None:
    lab, sub = topo.lab, topo.sub
    add_sub_ll(topo)
    smac = mac_of(lab, sub, "s0")
    cases = [(VGUA, SUB_GUA, True), (VGUA, SUB_GUA, False),
             (VLL, SUB_LL, True), (VLL, SUB_LL, False)]
    before = counters(topo)
    for target, src, option in cases:
        with Capture(lab, sub, "s0", "icmp6") as cap:
            send_frames(lab, sub, "s0", [ns_frame(smac, src, target, dst=target, option=option)])
        answers = [f for f in nas(cap.stop(), target) if f[Ether].src == VMAC]
        case = f"target {target}, {'with' if option else 'without'} source link-layer option"
        assert len(answers) == 1, case
        na = answers[0]
        icmp = na[ICMPv6ND_NA]
        assert icmp.type == 136 and icmp.code == 0, case
        assert checksum_ok(na), case
        assert icmp.tgt == target, case
        # RFC 4861 7.2.4: override set with the target link-layer option, clear without it.
        flags = (0xE0, (1, 1, 1)) if option else (0xC0, (1, 1, 0))
        assert bytes(icmp)[4] == flags[0] and flags[1] == (icmp.R, icmp.S, icmp.O), case
        assert (na[Ether].src, na[Ether].dst) == (VMAC, smac), case
        assert (na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == (target, src, 255), case
        if option:
            assert na[IPv6].plen == 32, case
            assert na[ICMPv6NDOptDstLLAddr].lladdr == VMAC, case
        else:
            assert na[IPv6].plen == 24 and ICMPv6NDOptDstLLAddr not in na, case
    after = counters(topo)
    assert after["nd_replies"] - before["nd_replies"] == len(cases)
    assert after["arp_replies"] == before["arp_replies"]


def test_master_defends_its_addresses_against_dad(topo: Topo) -> None:
    """RFC 4862 5.4.3: a DAD probe (NS from ::) for a gateway address gets an NA to
    all-nodes, solicited clear, with a valid checksum; a probe with a nonce option (Linux,
    RFC 7527) gets the NA with the target link-layer option and override, a probe without
    one an NA of its own length: no option, override clear."""
    lab, sub = topo.lab, topo.sub
    smac = mac_of(lab, sub, "s0")
    nonce = ICMPv6NDOptSrcLLAddr(lladdr="6791f386047b")  # same shape; the type is patched
    before = counters(topo)
    for target in (VGUA, VLL):
        bare = ns_frame(smac, "::", target, option=False)
        with_nonce = bytearray(bytes(Ether(bare)[Ether] / nonce))
        with_nonce[18:20] = (32).to_bytes(2, "big")     # IPv6 payload length
        with_nonce[78] = 14                              # option type: nonce
        fixed = Ether(bytes(with_nonce))
        del fixed[ICMPv6ND_NS].cksum
        for probe, option in ((bare, False), (bytes(Ether(bytes(fixed))), True)):
            with Capture(lab, sub, "s0", "icmp6") as cap:
                send_frames(lab, sub, "s0", [probe])
            answers = [f for f in nas(cap.stop(), target) if f[Ether].src == VMAC]
            assert len(answers) == 1, (target, option)
            na = answers[0]
            assert (na[Ether].dst, na[IPv6].dst, na[IPv6].src) == \
                ("33:33:00:00:00:01", "ff02::1", target)
            # Override only with the option that carries the MAC (RFC 4861 7.2.4).
            assert (1, 0, option) == (na[ICMPv6ND_NA].R, na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O)
            assert (ICMPv6NDOptDstLLAddr in na) == option
            if option:
                assert na[ICMPv6NDOptDstLLAddr].lladdr == VMAC
            assert checksum_ok(na), (target, option)
    assert counters(topo)["address_defences"] - before["address_defences"] == 4
    assert counters(topo)["nd_replies"] == before["nd_replies"]


def test_master_ignores_unrelated_and_invalid_ns(topo: Topo) -> None:
    lab, sub = topo.lab, topo.sub
    smac = mac_of(lab, sub, "s0")
    probes = [
        ns_frame(smac, "::", VGUA, option=True),             # invalid: DAD never carries SLLA
        ns_frame(smac, SUB_GUA, UNRELATED),                  # somebody else's address
        ns_frame(smac, SUB_GUA, UNRELATED, dst=UNRELATED, option=False),
        ns_frame(smac, SUB_GUA, VGUA, hlim=64),              # invalid: ND needs hop limit 255
    ]
    before = counters(topo)
    with Capture(lab, sub, "s0", "icmp6") as cap:
        send_frames(lab, sub, "s0", probes)
        frames = cap.stop(settle=0.3)
    for probe in probes:  # every probe really was on the wire
        assert any(bytes(f) == probe for f in frames), Ether(probe).summary()
    assert nas(frames) == [], [f.summary() for f in nas(frames)]
    assert counters(topo)["nd_replies"] == before["nd_replies"]


def test_backup_answers_nothing(topo: Topo) -> None:
    lab, sub, app = topo.lab, topo.sub, topo.app
    app.cli("vrrp", "set", "backup")
    add_sub_ll(topo)
    smac = mac_of(lab, sub, "s0")
    before = counters(topo)
    with Capture(lab, sub, "s0", "arp or icmp6") as cap:
        arping = lab.run(sub, "arping", "-c", "1", "-w", "1", "-I", "s0", VIP, check=False)
        nd = [lab.run(sub, "ndisc6", "-n", "-r", "1", "-w", "300", t, "s0", check=False)
              for t in (VGUA, VLL)]
        send_frames(lab, sub, "s0", [ns_frame(smac, SUB_GUA, VGUA, dst=VGUA),
                                     ns_frame(smac, SUB_GUA, VGUA, dst=VGUA, option=False),
                                     ns_frame(smac, SUB_LL, VLL, dst=VLL)])
        frames = cap.stop(settle=0.3)
    assert arping.returncode != 0 and "0 packets received" in arping.stdout, arping.stdout
    for res in nd:
        assert res.returncode != 0 and "Target link-layer" not in res.stdout, res.stdout
    assert len([f for f in frames if ICMPv6ND_NS in f]) >= 5  # the probes were really sent
    assert arp_replies(frames) == [] and nas(frames) == [], [f.summary() for f in frames]
    assert all(f[Ether].src != VMAC for f in frames)
    after = counters(topo)
    assert (after["arp_replies"], after["nd_replies"]) == (before["arp_replies"],
                                                           before["nd_replies"])


def test_master_without_router_flag_answers_0x60(lab) -> None:
    from conftest import BASE_CONF, build_topo

    topo = build_topo(lab, BASE_CONF + "vrrp_nd_router_flag=0\n")
    sub = topo.sub
    add_sub_ll(topo)
    smac = mac_of(lab, sub, "s0")
    probes = [ns_frame(smac, SUB_GUA, VGUA), ns_frame(smac, SUB_GUA, VGUA, dst=VGUA),
              ns_frame(smac, SUB_LL, VLL, dst=VLL, option=False)]
    with Capture(lab, sub, "s0", "icmp6") as cap:
        send_frames(lab, sub, "s0", probes)
        answers = [f for f in nas(cap.stop()) if f[Ether].src == VMAC]
    assert len(answers) == len(probes)
    for na in answers:
        icmp = na[ICMPv6ND_NA]
        if ICMPv6NDOptDstLLAddr in na:
            assert bytes(icmp)[4] == 0x60 and (icmp.R, icmp.S, icmp.O) == (0, 1, 1)
        else:  # the bare probe: no option, no override
            assert bytes(icmp)[4] == 0x40 and (icmp.R, icmp.S, icmp.O) == (0, 1, 0)
        assert checksum_ok(na)
    assert len([na for na in answers if ICMPv6NDOptDstLLAddr not in na]) == 1
