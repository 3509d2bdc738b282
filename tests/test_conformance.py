"""Every frame kind the master emits, captured on the wire and checked twice: by tshark's
dissectors (no malformed frame, no expert error, checksums verified) and against the RFC
points the product claims (docs/gateway.md, the conformance table), with real client
stacks where one exists: the subscriber's kernel (router discovery, DAD), rdisc6, ndisc6,
iputils `arping -D`.

One takeover of a real daemon in a gateway topology produces them all: GARP, unsolicited NA,
RA (takeover, periodic, answers), NA and ARP answers from the kernel's responders, MLD
reports (join and answers to a query); a backup then emits none of them.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import VGUA, VIP, VLL, VMAC
from daemonlab import start_daemon
from gatewaylab import GATEWAY_CONF, build
from netlab import Lab, wait_for
from scapy.layers.inet6 import (
    ICMPv6MLDMultAddrRec,
    ICMPv6MLQuery2,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)
from scapy.layers.l2 import ARP, Ether
from scapy.utils6 import in6_getnsma, in6_getnsmac
from wire import Capture, mac_of, send_frames

from skat_plugin import announce
from skat_plugin.gateway import mld, ra

CONF = GATEWAY_CONF + """vrrp_election_pidfile=
bras_icmp6_min_rtradv_interval=3
bras_icmp6_max_rtradv_interval=4
bras_icmp6_default_lifetime=12
vrrp_garp_refresh=2
"""
SOLNODES = {mld.solicited_node(VLL), mld.solicited_node(VGUA)}
SUB_LL = "fe80::10"
CHECKSUM_PREFS = ["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                  "-o", "tcp.check_checksum:TRUE"]


@pytest.fixture(scope="module")
def iputils_arping(tmp_path_factory: pytest.TempPathFactory) -> str:
    """iputils' arping (RFC 5227 -D), unpacked beside Debian's arping, which it conflicts
    with (design.md section 7)."""
    where = tmp_path_factory.mktemp("iputils")
    res = subprocess.run(["apt-get", "download", "iputils-arping"], cwd=where,
                         capture_output=True, text=True, timeout=120)
    debs = list(where.glob("iputils-arping_*.deb"))
    if res.returncode != 0 or not debs:
        pytest.skip(f"iputils-arping cannot be downloaded here: {res.stderr.strip()}")
    subprocess.run(["dpkg", "-x", str(debs[0]), str(where / "root")], check=True)
    return str(where / "root" / "usr" / "bin" / "arping")


def expert(pcap: Path) -> tuple[str, list[str]]:
    """tshark's expert summary of a capture, and its error and malformed lines."""
    res = subprocess.run(["tshark", "-r", str(pcap), "-q", "-z", "expert", *CHECKSUM_PREFS],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    bad, section = [], ""
    for line in res.stdout.splitlines():
        if re.match(r"^\w+ \(\d+\)$", line.strip()):
            section = line.strip().split()[0]
            continue
        entry = re.match(r"^\s+\d+\s+(\S+)\s+(\S+)\s+(.*)$", line)
        # Errors, and warnings too: tshark files a bad checksum or a length beyond the
        # frame under "Warns".
        if entry and section in ("Errors", "Warns"):
            bad.append(line.strip())
    return res.stdout, bad


def dissected(pcap: Path) -> int:
    res = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.number",
                          *CHECKSUM_PREFS], capture_output=True, text=True, timeout=60)
    return len(res.stdout.split())


def from_gateway(frames: list) -> list:
    return [f for f in frames if Ether in f and f[Ether].src == VMAC]


def solicitation(smac: str, src: str, target: str, dst: str | None = None,
                 slla: bool = True) -> bytes:
    """A Neighbor Solicitation: to the target's solicited-node group unless dst is given."""
    import socket

    if dst is None:
        group = in6_getnsma(socket.inet_pton(socket.AF_INET6, target))
        dst, edst = socket.inet_ntop(socket.AF_INET6, group), in6_getnsmac(group)
    else:
        edst = VMAC
    pkt = Ether(src=smac, dst=edst) / IPv6(src=src, dst=dst) / ICMPv6ND_NS(tgt=target)
    if slla:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=smac)
    return bytes(pkt)


def records(f: Ether) -> list[ICMPv6MLDMultAddrRec]:
    """An MLDv2 report's records (scapy chains the second onwards as payloads)."""
    out = []
    for r in f[ICMPv6MLReport2].records:
        while isinstance(r, ICMPv6MLDMultAddrRec):
            out.append(r)
            r = r.payload
    assert len(out) == f[ICMPv6MLReport2].records_number
    return out


def mld_query(smac: str, max_ms: int = 1000) -> bytes:
    return bytes(Ether(src=smac, dst="33:33:00:00:00:01")
                 / IPv6(src=SUB_LL, dst="ff02::1", hlim=1)
                 / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
                 / ICMPv6MLQuery2(mrd=max_ms))


def test_every_frame_the_master_emits_conforms(lab: Lab, iputils_arping: str) -> None:
    topo = build(lab, CONF)
    sub = topo.sub
    lab.run(sub, "ip", "addr", "add", f"{SUB_LL}/64", "dev", "s0", "nodad")
    lab.run(sub, "ip", "-6", "route", "del", "default")
    lab.run(sub, "sysctl", "-qw", "net.ipv6.conf.s0.accept_ra=2",
            "net.ipv6.conf.s0.router_solicitations=0")
    smac = mac_of(lab, sub, "s0")
    daemon = start_daemon(topo.app)
    try:
        with Capture(lab, sub, "s0") as cap, Capture(lab, topo.border, "u0") as up:
            t0 = time.time()
            topo.app.cli("vrrp", "set", "master")  # keepalived's word: the takeover
            # The kernel's own router discovery takes the takeover RA.
            wait_for(lambda: "via fe80::1" in lab.run(sub, "ip", "-6", "route", "show",
                                                      "default").stdout, 5, 0.05, "route")
            time.sleep(2.5)  # the takeover's NAs (0, 1, 2 s) and MLD joins
            rdisc = lab.run(sub, "rdisc6", "-r", "1", "-w", "1500", "s0")  # RS -> unicast RA
            nd = [lab.run(sub, "ndisc6", "-n", "-r", "1", "-w", "500", t, "s0").stdout
                  for t in (VGUA, VLL)]  # multicast NS -> NA with TLLA
            arp = lab.run(sub, "arping", "-c", "1", "-w", "2", "-I", "s0", VIP).stdout
            dad4 = lab.run(sub, iputils_arping, "-D", "-c", "2", "-w", "3", "-I", "s0", VIP,
                           check=False)  # RFC 5227 probe: the gateway defends its address
            bare = [solicitation(smac, SUB_LL, t, dst=t, slla=False) for t in (VGUA, VLL)]
            dad_bare = [solicitation(smac, "::", t, slla=False) for t in (VGUA, VLL)]
            anonymous_rs = bytes(Ether(src=smac, dst="33:33:00:00:00:02")
                                 / IPv6(src="::", dst="ff02::2") / ICMPv6ND_RS())
            send_frames(lab, sub, "s0", [*bare, *dad_bare, anonymous_rs, mld_query(smac)])
            queried = time.time()
            # The kernel's own DAD (with its RFC 7527 nonce) for the gateway's address.
            lab.run(sub, "sysctl", "-qw", "net.ipv6.conf.s0.accept_dad=1")
            lab.run(sub, "ip", "addr", "add", f"{VGUA}/64", "dev", "s0")
            wait_for(lambda: "dadfailed" in lab.run(sub, "ip", "-6", "addr", "show", "dev",
                                                    "s0").stdout, 5, 0.1, "DAD to fail")
            time.sleep(4.5)  # a periodic RA (3-4 s) after the answer to the anonymous RS
        frames, uplink = cap.frames, up.frames
    finally:
        daemon.stop()

    # -- tshark: every frame dissects cleanly, checksums included -------------------------
    for pcap, got in ((cap.path, frames), (up.path, uplink)):
        summary, bad = expert(pcap)
        print(summary)
        assert bad == [], summary
        assert dissected(pcap) == len(got)
    mine = from_gateway(frames)
    kinds = {"GARP": [f for f in mine if ARP in f and f[ARP].op == 1],
             "ARP reply": [f for f in mine if ARP in f and f[ARP].op == 2],
             "NA": [f for f in mine if ICMPv6ND_NA in f],
             "RA": [f for f in mine if ICMPv6ND_RA in f],
             "MLD report": [f for f in mine if ICMPv6MLReport2 in f]}
    print({k: len(v) for k, v in kinds.items()}, f"of {len(mine)} frames from the gateway")
    assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
    assert sum(len(v) for v in kinds.values()) == len(mine), [f.summary() for f in mine]

    # -- GARP (RFC 5227 announcement, RFC 5798 6.4.2) ---------------------------------------
    for f in kinds["GARP"]:
        assert f[Ether].dst == "ff:ff:ff:ff:ff:ff" and f[ARP].hwsrc == VMAC
        assert f[ARP].psrc == f[ARP].pdst == VIP and f[ARP].hwdst == "00:00:00:00:00:00"
    garp_times = [float(f.time) - t0 for f in kinds["GARP"]]
    assert len([t for t in garp_times if t < 1.5]) == 5, garp_times  # vrrp_garp_count

    # -- unsolicited NA (RFC 4861 7.2.6): at most 3 per address, at least 1 s apart ---------
    probes = [(float(f.time), f[ICMPv6ND_NS].tgt) for f in frames
              if ICMPv6ND_NS in f and f[IPv6].src == "::"]

    def answers_a_probe(f: Ether) -> bool:  # a DAD defence, not an announcement
        return any(0 <= float(f.time) - t < 0.05 and target == f[ICMPv6ND_NA].tgt
                   for t, target in probes)
    unsolicited = [f for f in kinds["NA"] if f[IPv6].dst == "ff02::1" and not answers_a_probe(f)]
    for target in (VLL, VGUA):
        times = [float(f.time) for f in unsolicited if f[ICMPv6ND_NA].tgt == target]
        assert len(times) == announce.MAX_NEIGHBOR_ADVERTISEMENT, (target, times)
        assert all(b - a >= 0.98 for a, b in itertools.pairwise(times)), times
    for f in unsolicited:
        assert (f[ICMPv6ND_NA].S, f[IPv6].hlim) == (0, 255)
        assert f[ICMPv6NDOptDstLLAddr].lladdr == VMAC

    # -- solicited NA (RFC 4861 7.2.4) -------------------------------------------------------
    for out in nd:
        assert out.count("Target link-layer address") == 1 and VMAC.upper() in out, out
    answers = [f for f in kinds["NA"] if f not in unsolicited]
    for f in answers:
        na = f[ICMPv6ND_NA]
        has_tlla = ICMPv6NDOptDstLLAddr in f
        assert has_tlla == na.O, f.summary()  # override only with the MAC in the option
        if f[IPv6].dst == "ff02::1":  # DAD defence: solicited clear
            assert na.S == 0 and answers_a_probe(f)
        else:
            assert na.S == 1 and f[Ether].dst == smac
        if f[IPv6].dst != "ff02::1" and f[IPv6].dst != SUB_LL:  # answers to multicast NS
            assert has_tlla
    to_bare = [f for f in answers if f[IPv6].dst == SUB_LL and ICMPv6NDOptDstLLAddr not in f]
    assert len(to_bare) == 2  # the NUD probes: no option, O=0
    assert "dadfailed" in lab.run(sub, "ip", "-6", "addr", "show", "dev", "s0").stdout

    # -- ARP (RFC 826, RFC 5227 defence) -----------------------------------------------------
    assert "1 packets received" in arp, arp
    assert dad4.returncode != 0 and re.search(r"Received [1-9]\d* response", dad4.stdout), \
        dad4.stdout  # iputils: "Received 1 response(s)" = the address is in use
    for f in kinds["ARP reply"]:
        assert f[ARP].hwsrc == VMAC and f[ARP].psrc == VIP and f[Ether].dst == smac

    # -- RA (RFC 4861 4.2, 6.2.4, 6.2.6) -----------------------------------------------------
    assert "from fe80::1" in rdisc.stdout, rdisc.stdout
    multicast = [float(f.time) for f in kinds["RA"] if f[IPv6].dst == "ff02::1"]
    assert len(multicast) >= 3, multicast  # takeover, the anonymous RS's answer, periodic
    assert all(b - a >= ra.MIN_DELAY_BETWEEN_RAS - 0.02
               for a, b in itertools.pairwise(multicast)), multicast
    rs_times = [float(f.time) for f in frames if ICMPv6ND_RS in f and f[IPv6].src != "::"]
    for f in kinds["RA"]:
        assert (f[IPv6].src, f[IPv6].hlim) == (VLL, 255)
        assert f[ICMPv6NDOptSrcLLAddr].lladdr == VMAC
        assert f[ICMPv6ND_RA].routerlifetime == 12 >= 4  # 0 or >= MaxRtrAdvInterval
        if f[IPv6].dst != "ff02::1":  # an answer: 0-0.5 s after its RS
            delay = float(f.time) - max(t for t in rs_times if t <= float(f.time))
            assert 0 <= delay <= ra.MAX_RA_DELAY_TIME + 0.05, delay

    # -- MLD (RFC 3810 5.2, RFC 5798 6.4.2) --------------------------------------------------
    for f in kinds["MLD report"]:
        assert (f[IPv6].src, f[IPv6].dst, f[IPv6].hlim) == (VLL, "ff02::16", 1)
        assert any(isinstance(o, RouterAlert) for o in f[IPv6ExtHdrHopByHop].options)
        groups = {r.dst for r in records(f)}
        assert groups == SOLNODES | {"ff02::2"}, groups
    joins = [f for f in kinds["MLD report"] if {r.rtype for r in records(f)} == {4}]
    answered = [f for f in kinds["MLD report"] if {r.rtype for r in records(f)} == {2}]
    assert len(joins) == mld.ROBUSTNESS, [f.summary() for f in kinds["MLD report"]]
    assert len(answered) == 1 and 0 <= float(answered[0].time) - queried <= 1.05

    # -- the uplink side (terminating: the border resolves the gateway there) ----------------
    up_mine = from_gateway(uplink)
    assert [f for f in up_mine if ICMPv6ND_RA in f] == []  # RAs are for subscribers only
    assert len([f for f in up_mine if ARP in f and f[ARP].op == 1]) >= 3
    assert len([f for f in up_mine if ICMPv6MLReport2 in f]) == mld.ROBUSTNESS


def test_backup_sends_no_mld_report_nor_anything_else(lab: Lab) -> None:
    """RFC 5798 6.4.2 asks the master to join; a backup must not pull the groups to itself."""
    topo = build(lab, CONF)
    smac = mac_of(lab, topo.sub, "s0")
    daemon = start_daemon(topo.app)
    try:
        topo.app.cli("vrrp", "set", "master")
        wait_for(lambda: daemon.status["router_advertisements"].get("mld_reports_sent", 0)
                 >= 2, 5, 0.05, "the master's MLD join")
        topo.app.cli("vrrp", "set", "backup")
        with Capture(lab, topo.sub, "s0") as cap:
            send_frames(lab, topo.sub, "s0", [mld_query(smac, max_ms=200),
                                              solicitation(smac, "::", VGUA, slla=False)])
            time.sleep(1.5)
    finally:
        daemon.stop()
    assert [f for f in cap.frames if ICMPv6MLQuery2 in f], "the query was on the wire"
    assert from_gateway(cap.frames) == [], [f.summary() for f in from_gateway(cap.frames)]


def test_the_tshark_check_sees_a_bad_frame(tmp_path: Path) -> None:
    """The check above is only worth something if tshark flags what is wrong: a wrong
    ICMPv6 checksum and a truncated MLD report."""
    from scapy.utils import wrpcap

    good = announce.unsolicited_na(VMAC, VGUA, True)
    bad_sum = bytearray(good)
    bad_sum[14 + 40 + 2] ^= 0xFF
    report = mld.report_v2(VMAC, VLL, sorted(SOLNODES), mld.CHANGE_TO_EXCLUDE_MODE)
    pcap = tmp_path / "bad.pcap"
    wrpcap(str(pcap), [Ether(good), Ether(bytes(bad_sum)), Ether(report[:-6])])
    summary, bad = expert(pcap)
    assert len([b for b in bad if "Bad checksum" in b]) >= 1, summary
    assert len([b for b in bad if "Malformed" in b]) == 1, summary
    clean = tmp_path / "good.pcap"
    wrpcap(str(clean), [Ether(good), Ether(report)])
    summary, bad = expert(clean)
    assert bad == [], summary


def test_a_reload_adds_no_multicast_ra_within_three_seconds(lab: Lab) -> None:
    """Issue 18.4: a reload that changes the RA used to add a multicast RA 1.7 s after the
    previous one. The daemon restarts the advertiser; the new RA waits for the 3 s."""
    topo = build(lab, CONF)
    daemon = start_daemon(topo.app)
    try:
        with Capture(lab, topo.sub, "s0", "icmp6 and ip6[40] == 134") as cap:
            topo.app.cli("vrrp", "set", "master")
            wait_for(lambda: daemon.status["router_advertisements"].get("ra_multicast", 0)
                     >= 1, 5, 0.02, "the takeover RA")
            time.sleep(1.0)
            topo.app.write_conf(CONF + "bras_icmp6_hop_limit=33\n")
            topo.app.cli("reload")
            time.sleep(3.5)
    finally:
        daemon.stop()
    sent = [(float(f.time), f[ICMPv6ND_RA].chlim) for f in cap.frames
            if ICMPv6ND_RA in f and f[IPv6].dst == "ff02::1"]
    assert len(sent) >= 2 and sent[0][1] == 64, sent
    assert 33 in [hl for _, hl in sent], sent  # the reload's RA came, with the new value
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent)]
    assert all(g >= ra.MIN_DELAY_BETWEEN_RAS - 0.02 for g in gaps), sent


def test_an_mld_snooping_switch_forwards_the_subscribers_ns_once_the_master_joined(
        lab: Lab) -> None:
    """RFC 5798 6.4.2 in practice: between the subscriber and the appliance a switch that
    snoops MLD and does not flood unregistered multicast (a Linux bridge with
    mcast_snooping, its own querier, mcast_flood off on the other ports). Without the
    master's report the subscriber's NS for the gateway never arrives; after the takeover's
    join it does, and the answers to the switch's queries keep the membership."""
    from conftest import BASE_CONF

    sub, sw, up, host = lab.ns("sub"), lab.ns("sw"), lab.ns("up"), lab.ns("host")
    app = lab.appliance("app", BASE_CONF + "vrrp_election_pidfile=\n")
    lab.veth(sub, "s0", sw, "p0")
    lab.veth(sw, "p1", app.ns, "i0")
    lab.veth(sw, "p2", host, "h0")  # a plain host: its kernel reports its own groups
    lab.veth(up, "u0", app.ns, "o0")
    lab.run(sw, "ip", "link", "add", "br0", "type", "bridge", "stp_state", "0",
            "mcast_snooping", "1", "mcast_querier", "1", "mcast_query_interval", "300",
            "mcast_query_response_interval", "100", "mcast_startup_query_count", "30",
            "mcast_startup_query_interval", "100")  # centiseconds: a query every second
    for port in ("p0", "p1", "p2"):
        lab.run(sw, "ip", "link", "set", port, "master", "br0")
    for port in ("p1", "p2"):
        lab.run(sw, "bridge", "link", "set", "dev", port, "mcast_flood", "off")
    lab.run(sw, "ip", "link", "set", "br0", "up")
    lab.run(sub, "ip", "addr", "add", "2001:db8:100::10/64", "dev", "s0", "nodad")
    lab.run(host, "ip", "addr", "add", "2001:db8:100::77/64", "dev", "h0", "nodad")
    app.cli("start")
    app.cli("vrrp", "set", "master")  # the responders answer; no daemon: nobody reports

    def resolves(target: str) -> bool:
        res = lab.run(sub, "ndisc6", "-n", "-r", "1", "-w", "300", target, "s0", check=False)
        return res.returncode == 0 and "Target link-layer" in res.stdout

    def joined() -> bool:  # the gateway's group (not the subscriber's ff02::1:ff00:10)
        members = lab.run(sw, "bridge", "mdb", "show", "dev", "br0", "port", "p1").stdout
        return re.search(r"grp ff02::1:ff00:1\s", members) is not None

    # The switch snoops once its querier runs (about 10 s after it came up, here): the
    # host, which reported its group, is reached; the gateway, which did not, is not.
    wait_for(lambda: resolves("2001:db8:100::77"), 60, 0.2, "the switch to snoop")
    assert not resolves(VGUA), "the NS was flooded to the appliance"
    assert not joined()
    daemon = start_daemon(app)
    try:
        app.cli("vrrp", "set", "master")  # an order: the takeover, with its join
        wait_for(joined, 5, 0.1, "the switch to learn the gateway's group")
        wait_for(lambda: resolves(VGUA), 3, 0.1, "the NS to reach the master")
        # The switch's next queries (every 3 s) are answered: the membership holds.
        wait_for(lambda: daemon.status["router_advertisements"]["mld_queries"] >= 2, 10, 0.2,
                 "two queries from the switch")
        # ... within their response delay (1 s): in MLDv1, the switch's version.
        wait_for(lambda: daemon.status["router_advertisements"]["mld_reports_sent"]
                 >= mld.ROBUSTNESS + 1, 5, 0.2, "an answer to a query")
        assert joined() and resolves(VGUA)
        counters = daemon.status["router_advertisements"]
    finally:
        daemon.stop()
    print(f"MLD: {counters['mld_queries']} queries from the switch heard, "
          f"{counters['mld_reports_sent']} reports sent")
