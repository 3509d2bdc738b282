"""QinQ subscribers (outer tag 0x88a8 or 0x8100, inner 0x8100): issue 7, "Tagged subscribers".

The plugin is started normally (fdpi_cli start, L2 termination on) and the QinQ files are
loaded on top in the appliance's namespace with the plugin's own defines, as render.py would
once it includes them:  qinq-responder.nft (table skat_plugin), gateway-qinq-maps.nft.in and
gateway-qinq.nft (table skat_plugin_gateway). No VLAN interfaces (no 8021q module here): raw frames
are sent from packet sockets and captured with tcpdump, both tags on the wire.

Found on this kernel (6.x) and nft 1.0.6, and relied on here: the outer tag is in skb
metadata at the netdev ingress hook, the inner one in the packet; link-layer loads AND
writes (`@ll,...`) see the frame as on the wire, outer tag included; `fwd` puts the outer
tag back. `meta protocol 8021q @nh,...` loads but makes `nft list` abort, so the files use
`@ll` only; the tests check that the rule set still lists.
Not done, and why (see the files' headers): a QinQ ND responder (the NA's ICMPv6 checksum
can only be fixed by named-field writes, which do not work behind an inner tag), QinQ IPv6
termination, the TTL decrement of bras_transparency=0 for QinQ frames, and the group sync
of QinQ subscribers.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
from conftest import VIP, VMAC
from gatewaylab import GW_MAC, HOST4, GatewayTopo, build
from netlab import REPO, Lab
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from wire import Capture, mac_of, send_frames

from skat_plugin import config, render

QINQ_FILES = ["qinq-responder.nft", "gateway-qinq-maps.nft.in", "gateway-qinq.nft"]
SUBQ = "100.64.0.11"          # a QinQ subscriber (never configured on an interface)
OUTER, INNER = 100, 200


def qinq_defines(defines: dict[str, str]) -> dict[str, str]:
    """The one define the QinQ files add to the plugin's: bras_arp_ip as a number."""
    return {**defines, "bras_ip_hex": hex(int(ipaddress.IPv4Address(defines["bras_ip"])))}


def load_qinq(gw: GatewayTopo) -> None:
    base = render.render(config.load(str(gw.app.conf_path)), render.MASTER, [])
    rs = render.RuleSet(render.MASTER, QINQ_FILES, qinq_defines(base.defines))
    script = gw.lab.path("qinq.nft")
    script.write_text(rs.script(REPO / "nft"))
    gw.lab.run(gw.app.ns, "nft", "-I", str(REPO / "nft"), "-f", str(script))


@pytest.fixture
def gw(lab: Lab) -> GatewayTopo:
    topo = build(lab)
    load_qinq(topo)
    return topo


def counters(gw: GatewayTopo) -> dict[str, int]:
    show = gw.app.show()
    return {**show["counters"], **show["gateway"]["counters"]}


def tags(frame) -> tuple:
    """(outer TPID, outer VID, outer PCP, inner TPID, inner VID, inner PCP, inner type)."""
    outer = frame[Ether].payload
    inner = outer.payload
    return (frame[Ether].type, outer.vlan, outer.prio, outer.type, inner.vlan, inner.prio,
            inner.type)


def qinq(src: str, dst: str, outer_tpid: int = 0x88A8, outer_prio: int = 3,
         inner_prio: int = 5):
    outer = Dot1AD(vlan=OUTER, prio=outer_prio) if outer_tpid == 0x88A8 \
        else Dot1Q(vlan=OUTER, prio=outer_prio)
    return Ether(src=src, dst=dst) / outer / Dot1Q(vlan=INNER, prio=inner_prio)


def arp_replies(frames: list) -> list:
    return [f for f in frames if ARP in f and f[ARP].op == 2]


# ------------------------------------------------------------------------------------------

def test_the_rule_set_still_lists(gw: GatewayTopo) -> None:
    """nft 1.0.6 aborts listing `meta protocol 8021q @nh,...`: the plugin lists its rules."""
    for args in (("list", "ruleset"), ("-j", "list", "ruleset")):
        res = gw.lab.run(gw.app.ns, "nft", *args, check=False)
        assert res.returncode == 0, f"nft {' '.join(args)}: {res.stderr[-300:]}"
    text = gw.lab.run(gw.app.ns, "nft", "list", "ruleset").stdout
    assert text.count("meta protocol 8021q") >= 2 + 2, "the QinQ rules are not loaded"
    assert gw.app.show()["gateway"]["counters"] is not None


@pytest.mark.parametrize("outer_tpid", [0x88A8, 0x8100])
def test_qinq_arp_request_and_probe_get_one_reply_each_with_both_tags(
        gw: GatewayTopo, outer_tpid: int) -> None:
    lab = gw.lab
    smac = mac_of(lab, gw.sub, "s0")
    request = qinq(smac, "ff:ff:ff:ff:ff:ff", outer_tpid) / ARP(hwsrc=smac, psrc=SUBQ, pdst=VIP)
    probe = qinq(smac, "ff:ff:ff:ff:ff:ff", outer_tpid, 1, 6) / ARP(hwsrc=smac, psrc="0.0.0.0",
                                                                    pdst=VIP)
    other = qinq(smac, "ff:ff:ff:ff:ff:ff", outer_tpid) / ARP(hwsrc=smac, psrc=SUBQ,
                                                              pdst="100.64.0.77")
    before = counters(gw)
    with Capture(lab, gw.sub, "s0") as cap:
        send_frames(lab, gw.sub, "s0", [bytes(request)])
    replies = arp_replies(cap.stop())
    assert len(replies) == 1, [f.summary() for f in cap.frames]
    r = replies[0]
    assert tags(r) == (outer_tpid, OUTER, 3, 0x8100, INNER, 5, 0x0806), r.show2(dump=True)
    assert (r[Ether].src, r[Ether].dst) == (VMAC, smac)
    a = r[ARP]
    assert (a.hwtype, a.ptype, a.hwlen, a.plen) == (1, 0x0800, 6, 4)
    assert (a.hwsrc, a.psrc, a.hwdst, a.pdst) == (VMAC, VIP, smac, SUBQ), a.summary()
    assert len(bytes(r)) == len(bytes(request)), "the reply is the request rewritten in place"

    with Capture(lab, gw.sub, "s0") as cap:
        send_frames(lab, gw.sub, "s0", [bytes(probe), bytes(other)])
    replies = arp_replies(cap.stop())
    assert len(replies) == 1, [f.summary() for f in cap.frames]
    r = replies[0]
    assert tags(r) == (outer_tpid, OUTER, 1, 0x8100, INNER, 6, 0x0806)
    assert (r[ARP].hwsrc, r[ARP].psrc, r[ARP].hwdst, r[ARP].pdst) == (VMAC, VIP, smac, "0.0.0.0")
    after = counters(gw)
    assert after["arp_replies"] - before["arp_replies"] == 1, (before, after)
    assert after["address_defences"] - before["address_defences"] == 1, (before, after)


def test_qinq_arp_from_the_border_side_is_answered_there(gw: GatewayTopo) -> None:
    """Terminating, the uplink port answers too: a border resolving the gateway in QinQ."""
    bmac = mac_of(gw.lab, gw.border, "u0")
    request = qinq(bmac, "ff:ff:ff:ff:ff:ff") / ARP(hwsrc=bmac, psrc="198.51.100.1", pdst=VIP)
    with Capture(gw.lab, gw.border, "u0") as cap:
        send_frames(gw.lab, gw.border, "u0", [bytes(request)])
    replies = arp_replies(cap.stop())
    assert len(replies) == 1 and replies[0][Ether].src == VMAC, [f.summary() for f in cap.frames]
    assert tags(replies[0])[:5] == (0x88A8, OUTER, 3, 0x8100, INNER)


def test_qinq_upstream_reaches_the_border_with_both_tags_and_skats_macs(
        gw: GatewayTopo) -> None:
    lab = gw.lab
    smac = mac_of(lab, gw.sub, "s0")
    echo = qinq(smac, VMAC) / IP(src=SUBQ, dst=HOST4, ttl=64) / ICMP(id=7, seq=1)
    to_gateway = qinq(smac, VMAC) / IP(src=SUBQ, dst=VIP) / ICMP(id=7, seq=2)
    before = counters(gw)
    with Capture(lab, gw.border, "u0") as cap:
        send_frames(lab, gw.sub, "s0", [bytes(echo), bytes(to_gateway)])
    up = [f for f in cap.stop() if ICMP in f]
    assert len(up) == 1, [f.summary() for f in cap.frames]
    f = up[0]
    assert tags(f) == (0x88A8, OUTER, 3, 0x8100, INNER, 5, 0x0800)
    assert (f[Ether].src, f[Ether].dst) == (VMAC, GW_MAC)
    assert bytes(f[IP]) == bytes(echo[IP]), "the IP packet must pass untouched (TTL, checksum)"
    after = counters(gw)
    assert after["forwarded_up"] - before["forwarded_up"] == 1, (before, after)
    assert after["not_forwarded"] - before["not_forwarded"] == 1, (before, after)
    learned = json.loads(gw.app.cli("vrrp", "subscribers", "--json").stdout)
    assert {(s["ip"], s["mac"]) for s in learned} >= {(SUBQ, smac)}, learned


def test_qinq_downstream_reaches_the_learned_subscriber_with_both_tags(
        gw: GatewayTopo) -> None:
    lab = gw.lab
    smac = mac_of(lab, gw.sub, "s0")
    bmac = mac_of(lab, gw.border, "u0")
    send_frames(lab, gw.sub, "s0", [bytes(qinq(smac, VMAC) / IP(src=SUBQ, dst=HOST4) / ICMP())])
    reply = qinq(bmac, VMAC, 0x88A8, 2, 4) / IP(src=HOST4, dst=SUBQ) / ICMP(type=0, id=9)
    stranger = qinq(bmac, VMAC) / IP(src=HOST4, dst="100.64.0.99") / ICMP(type=0, id=10)
    before = counters(gw)
    with Capture(lab, gw.sub, "s0") as cap:
        send_frames(lab, gw.border, "u0", [bytes(reply), bytes(stranger)])
    down = [f for f in cap.stop() if ICMP in f and f[Ether].src != smac]
    assert len(down) == 1, [f.summary() for f in cap.frames]
    f = down[0]
    assert tags(f) == (0x88A8, OUTER, 2, 0x8100, INNER, 4, 0x0800)
    assert (f[Ether].src, f[Ether].dst) == (VMAC, smac)
    assert bytes(f[IP]) == bytes(reply[IP])
    after = counters(gw)
    assert after["forwarded_down"] - before["forwarded_down"] == 1, (before, after)
    assert after["unknown_subscriber"] - before["unknown_subscriber"] == 1, (before, after)


def test_untagged_and_single_tag_are_unchanged(gw: GatewayTopo) -> None:
    """The QinQ rules take only frames with an inner tag: one reply each, as before."""
    lab = gw.lab
    smac = mac_of(lab, gw.sub, "s0")
    plain = Ether(src=smac, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=smac, psrc=SUBQ, pdst=VIP)
    tagged = Ether(src=smac, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=OUTER) / ARP(
        hwsrc=smac, psrc=SUBQ, pdst=VIP)
    ad = Ether(src=smac, dst="ff:ff:ff:ff:ff:ff") / Dot1AD(vlan=OUTER) / ARP(
        hwsrc=smac, psrc=SUBQ, pdst=VIP)
    with Capture(lab, gw.sub, "s0") as cap:
        send_frames(lab, gw.sub, "s0", [bytes(plain), bytes(tagged), bytes(ad)])
    replies = arp_replies(cap.stop())
    assert len(replies) == 3, [f.summary() for f in cap.frames]
    assert Dot1Q not in replies[0] and Dot1AD not in replies[0]
    assert replies[1][Ether].type == 0x8100 and replies[1][Dot1Q].vlan == OUTER
    assert Dot1Q not in replies[1][Dot1Q].payload
    assert replies[2][Ether].type == 0x88A8 and replies[2][Dot1AD].vlan == OUTER
    assert Dot1Q not in replies[2]
    res = lab.run(gw.sub, "ping", "-c", "2", "-i", "0.2", "-W", "1", HOST4, check=False)
    assert "2 received" in res.stdout, res.stdout
