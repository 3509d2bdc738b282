"""IPv6 subscribers find their router: the master answers Router Solicitations and announces
itself with Router Advertisements from fe80::1 and the virtual MAC; no RA when it is no router.

The frame tests need no root. The namespace tests run the RouterAdvertiser in a driver
process inside the appliance's namespace, on a subscriber port that is a bridge port, as
the plugin's bridges make it, and look at it from a subscriber with the kernel's own router
discovery, rdisc6 and tcpdump.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import BASE_CONF, VLL, VMAC
from netlab import PYTHON, Lab, wait_for
from scapy.layers.inet6 import (
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet
from scapy.utils import rdpcap
from wire import Capture, mac_of, send_frames

from skat_plugin import config
from skat_plugin.gateway import ra

GATEWAY = """bras_terminate_l2=1
bras_gateway_ip=100.64.0.254
bras_gateway_mac=02:00:00:00:00:fe
"""
# Values unlike the defaults, so that a field read from the wrong place shows.
RA_CONF = BASE_CONF + GATEWAY + """bras_ipv6_router_pref=1
bras_icmp6_rtradv_mtu=1400
bras_icmp6_reachable_time=30000
bras_icmp6_hop_limit=61
bras_icmp6_default_lifetime=1200
"""
SUB_LL = "fe80::10"
SUB_MAC = "02:00:00:00:00:10"

# Runs RouterAdvertiser the way the daemon's poll loop does, until SIGTERM; prints one JSON
# line when ready and the counters when stopped. argv: fastdpi.conf, clock speed. A speed
# above 1 makes the product's clock (the `now` it is given) run faster, so that RA intervals
# of seconds pass in tenths.
DRIVER = """
import json, select, signal, sys, time
from skat_plugin import announce, config
from skat_plugin.gateway import ra

cfg = config.load(sys.argv[1])
speed = float(sys.argv[2])
t0 = time.monotonic()
def clock():
    return t0 + (time.monotonic() - t0) * speed
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
adv = ra.RouterAdvertiser(announce.Sender(cfg["vrrp_socket_mark"]))
started = clock()
adv.start(cfg, started)
poller = select.poll()
for fd in adv.fds():
    poller.register(fd, select.POLLIN)
due = adv.next_due()
print(json.dumps({"fds": len(adv.fds()), "in": None if due is None else due - started,
                  **adv.counters()}), flush=True)
while not stopping:
    due = adv.next_due()
    wait = 200 if due is None else min(200, max(0, (due - clock()) / speed * 1000))
    for fd, _ in poller.poll(wait):
        adv.handle(fd, clock())
    adv.run(clock())
adv.stop()
print(json.dumps(adv.counters()), flush=True)
"""


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "fastdpi.conf"
    path.write_text(text)
    return config.load(str(path))


def checksum_ok(frame: Ether) -> bool:
    """scapy recomputes the ICMPv6 checksum; it must equal the one we sent."""
    icmp = frame[IPv6].payload
    sent = icmp.cksum
    del icmp.cksum
    return Ether(bytes(frame))[IPv6].payload.cksum == sent


def rs(src: str = SUB_LL, dst: str = "ff02::2", hlim: int = 255, slla: bool = True,
       options: Packet | None = None, **icmp: int) -> bytes:
    """A Router Solicitation as the subscriber would send it, built by scapy."""
    eth_dst = "33:33:00:00:00:02" if dst.startswith("ff02") else VMAC
    pkt = Ether(src=SUB_MAC, dst=eth_dst) / IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_RS(**icmp)
    if slla:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=SUB_MAC)
    if options is not None:
        pkt = pkt / options
    return bytes(pkt)


# -- frames, no root -------------------------------------------------------------------------
@pytest.mark.parametrize(("pref", "prf"), [(0, 0), (1, 1), (3, 3)])
@pytest.mark.parametrize("mtu", [1400, 0])
def test_router_advertisement_fields(tmp_path: Path, pref: int, prf: int, mtu: int) -> None:
    cfg = load(tmp_path, RA_CONF.replace("bras_ipv6_router_pref=1", f"bras_ipv6_router_pref={pref}")
               .replace("rtradv_mtu=1400", f"rtradv_mtu={mtu}"))
    f = Ether(ra.router_advertisement(cfg, SUB_LL, SUB_MAC))
    assert (f.src, f.dst, f.type) == (VMAC, SUB_MAC, 0x86DD)
    assert (f[IPv6].src, f[IPv6].dst, f[IPv6].hlim, f[IPv6].nh) == (VLL, SUB_LL, 255, 58)
    adv = f[ICMPv6ND_RA]
    assert (adv.code, adv.chlim, adv.M, adv.O, adv.H, adv.prf, adv.P) == (0, 61, 0, 0, 0, prf, 0)
    assert (adv.routerlifetime, adv.reachabletime, adv.retranstimer) == (1200, 30000, 0)
    assert f[ICMPv6NDOptSrcLLAddr].lladdr == VMAC
    assert ICMPv6NDOptPrefixInfo not in f  # addresses come from elsewhere
    if mtu:
        assert f[ICMPv6NDOptMTU].mtu == mtu
    else:
        assert ICMPv6NDOptMTU not in f
    assert f[IPv6].plen == 16 + 8 + (8 if mtu else 0) == len(f[IPv6].payload)
    assert checksum_ok(f)


def test_router_advertisement_edge_cases(tmp_path: Path) -> None:
    cfg = load(tmp_path, RA_CONF.replace("lifetime=1200", "lifetime=0"))
    f = Ether(ra.router_advertisement(cfg, "ff02::1", ra.ALL_NODES_MAC))
    assert f.dst == "33:33:00:00:00:01" and f[IPv6].dst == "ff02::1"
    # RFC 4191 2.2: a router that is no default router (lifetime 0) sends preference medium.
    assert (f[ICMPv6ND_RA].routerlifetime, f[ICMPv6ND_RA].prf) == (0, 0)
    assert checksum_ok(f)
    cfg = load(tmp_path, RA_CONF.replace("bras_ipv6_router_pref=1", "bras_ipv6_router_pref=-1"))
    assert not cfg.advertises_router
    with pytest.raises(ValueError):
        ra.router_advertisement(cfg, "ff02::1", ra.ALL_NODES_MAC)
    defaults = load(tmp_path, BASE_CONF + GATEWAY)
    d = Ether(ra.router_advertisement(defaults, "ff02::1", ra.ALL_NODES_MAC))[ICMPv6ND_RA]
    assert (d.chlim, d.prf, d.routerlifetime, d.reachabletime) == (64, 0, 1800, 0)
    assert d[ICMPv6NDOptMTU].mtu == 1500


def test_parse_rs_accepts_valid_solicitations() -> None:
    assert ra.parse_rs(rs()) == (SUB_LL, SUB_MAC)
    assert ra.parse_rs(rs(slla=False)) == (SUB_LL, None)
    assert ra.parse_rs(rs(src="::", slla=False)) == ("::", None)
    assert ra.parse_rs(rs(dst=VLL)) == (SUB_LL, SUB_MAC)
    assert ra.parse_rs(rs() + bytes(20)) == (SUB_LL, SUB_MAC)  # Ethernet padding
    two_options = rs(options=ICMPv6NDOptMTU(mtu=1500))  # not an RS option: skipped
    assert Ether(two_options)[IPv6].plen == 8 + 8 + 8
    assert ra.parse_rs(two_options) == (SUB_LL, SUB_MAC)


def test_parse_rs_refuses_what_rfc_4861_refuses() -> None:
    good = rs()
    bad = {
        "hop limit 64 (from off-link)": rs(hlim=64),
        ":: with a source link-layer option": rs(src="::"),
        "code 1": rs(code=1),
        "wrong checksum": rs(cksum=0x1234),
        "multicast source": rs(src="ff02::5"),
        "option length 0": rs(slla=False, options=ICMPv6NDOptSrcLLAddr(len=0, lladdr=SUB_MAC)),
        "option longer than the message": rs(slla=False,
                                             options=ICMPv6NDOptSrcLLAddr(len=2, lladdr=SUB_MAC)),
        "a neighbour solicitation": bytes(Ether(dst="33:33:00:00:00:02") /
                                          IPv6(src=SUB_LL, dst="ff02::2") /
                                          ICMPv6ND_NS(tgt=VLL)),
        "VLAN-tagged": bytes(Ether(good[:14]) / Dot1Q(vlan=5) / IPv6(good[14:])),
        "payload length beyond the frame": good[:18] + b"\x00\x30" + good[20:],
        "ICMP shorter than 8 bytes": good[:18] + b"\x00\x04" + good[20:],
    }
    for what, frame in bad.items():
        assert ra.parse_rs(frame) is None, what
    for cut in range(len(good)):
        assert ra.parse_rs(good[:cut]) is None, f"truncated to {cut} bytes"


# -- on the wire -----------------------------------------------------------------------------
class Driver:
    """The RouterAdvertiser in the appliance's namespace, fed by a poll loop like the daemon's."""

    def __init__(self, lab: Lab, ns: str, conf: Path, speed: float = 1.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        self.proc = lab.popen(ns, PYTHON, "-c", DRIVER, str(conf), str(speed), env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        try:
            self.ready = json.loads(line)
        except ValueError:
            raise AssertionError(f"driver did not start: {line}{self.proc.stdout.read()}") \
                from None

    def stop(self) -> dict[str, int]:
        os.killpg(self.proc.pid, signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, out
        return json.loads(out.strip().splitlines()[-1])


def subscriber_lab(lab: Lab, conf: str) -> tuple[str, str, Path]:
    """sub:s0 <-> app:i0, i0 and o0 bridged in app (o0's peer o1 is a dead end)."""
    sub = lab.ns("sub")
    app = lab.appliance("app", conf)
    lab.veth(sub, "s0", app.ns, "i0", up=False)
    lab.veth(app.ns, "o0", app.ns, "o1", up=False)
    lab.run(app.ns, "sysctl", "-qw", "net.ipv6.conf.o1.disable_ipv6=1")
    lab.run(app.ns, "ip", "link", "set", "o1", "up")
    lab.switch(app.ns, "br0", ["i0", "o0"])  # as bridges.py builds it: i0 is a bridge port
    # A host that takes RAs; its kernel sends no RS of its own, so every RS here is the
    # test's and every RA the host learns from before rdisc6 is the takeover RA.
    lab.run(sub, "sysctl", "-qw", "net.ipv6.conf.s0.accept_ra=2",
            "net.ipv6.conf.s0.router_solicitations=0", "net.ipv6.conf.s0.accept_ra_rtr_pref=1")
    lab.run(sub, "ip", "link", "set", "s0", "up")
    wait_for(lambda: "fe80::" in lab.run(sub, "ip", "-6", "addr", "show", "dev", "s0").stdout,
             5, 0.02, "the subscriber's link-local address")
    return sub, app.ns, app.conf_path


def ras(frames: list) -> list:
    return [f for f in frames if ICMPv6ND_RA in f]


def default_route(lab: Lab, sub: str) -> str:
    return lab.run(sub, "ip", "-6", "route", "show", "default").stdout.strip()


def test_subscriber_takes_the_gateway_as_its_default_router(lab: Lab) -> None:
    sub, app, conf = subscriber_lab(lab, RA_CONF)
    s0_mac = mac_of(lab, sub, "s0")
    s0_ll = json.loads(lab.run(sub, "ip", "-j", "-6", "addr", "show", "dev", "s0", "scope",
                               "link").stdout)[0]["addr_info"][0]["local"]
    with Capture(lab, sub, "s0", "icmp6") as cap:
        drv = Driver(lab, app, conf)
        assert drv.ready["fds"] == 1 and drv.ready["in"] is None  # send_rtradv=0: no timer
        # The takeover RA alone teaches the host its router (it sends no RS itself).
        route = wait_for(lambda: "via fe80::1 dev s0" in default_route(lab, sub)
                         and default_route(lab, sub), 3, 0.02, "a default route via fe80::1")
        assert "pref high" in route and "hoplimit 61" in route, route
        assert lab.run(sub, "cat", "/proc/sys/net/ipv6/conf/s0/mtu").stdout.strip() == "1400"
        found = lab.run(sub, "rdisc6", "-r", "1", "-w", "700", "s0", check=False)
        counters = drv.stop()
    out = found.stdout
    assert found.returncode == 0, out + found.stderr
    assert out.count("from fe80::1") == 1, out  # exactly one answer
    for field, value in (("Hop limit", "61"), ("Router preference", "high"),
                         ("Router lifetime", "1200"), ("Reachable time", "30000"),
                         ("MTU", "1400"), ("Source link-layer address", VMAC.upper())):
        assert re.search(rf"{field}\s*:\s*{value}\b", out), (field, out)
    assert "Prefix" not in out

    takeover, answer = ras(cap.frames)  # and no other RA
    for f in (takeover, answer):
        assert (f[Ether].src, f[IPv6].src, f[IPv6].hlim) == (VMAC, VLL, 255)
        assert f[ICMPv6ND_RA].prf == 1 and checksum_ok(f)
    assert (takeover[Ether].dst, takeover[IPv6].dst) == ("33:33:00:00:00:01", "ff02::1")
    assert (answer[Ether].dst, answer[IPv6].dst) == (s0_mac, s0_ll)  # unicast to the solicitor
    assert counters == {"rs_received": 1, "rs_ignored": 0, "rs_rate_limited": 0, "ra_sent": 2}


def test_unsolicited_advertisements_at_random_intervals(lab: Lab) -> None:
    conf = RA_CONF + ("bras_icmp6_send_rtradv=1\nbras_icmp6_min_rtradv_interval=3\n"
                      "bras_icmp6_max_rtradv_interval=4\n")
    sub, app, path = subscriber_lab(lab, conf)
    speed = 10.0  # 3-4 s of the product's clock pass in 0.3-0.4 s
    with Capture(lab, sub, "s0", "icmp6") as cap:
        drv = Driver(lab, app, path, speed)
        assert 3 <= drv.ready["in"] <= 4
        time.sleep(1.75)
        counters = drv.stop()
    sent = ras(cap.frames)
    assert all((f[Ether].src, f[Ether].dst, f[IPv6].src, f[IPv6].dst)
               == (VMAC, "33:33:00:00:00:01", VLL, "ff02::1") for f in sent)
    gaps = [(float(b.time) - float(a.time)) * speed for a, b in itertools.pairwise(sent)]
    print(f"RA intervals on the product's clock: {[round(g, 2) for g in gaps]} s")
    assert len(sent) >= 4, gaps  # takeover + one per 0.3-0.4 s
    assert all(2.5 < g < 5.0 for g in gaps), gaps  # [3, 4] s, plus up to 0.1 s jitter x 10
    assert len(set(round(g, 1) for g in gaps)) > 1, gaps  # random, not a fixed period
    assert counters["ra_sent"] == len(sent) and counters["rs_received"] == 0


def test_not_a_router_sends_no_advertisement(lab: Lab) -> None:
    conf = RA_CONF.replace("bras_ipv6_router_pref=1", "bras_ipv6_router_pref=-1") \
        + "bras_icmp6_send_rtradv=1\n"
    sub, app, path = subscriber_lab(lab, conf)
    with Capture(lab, sub, "s0", "icmp6") as cap:
        drv = Driver(lab, app, path)
        assert drv.ready["fds"] == 0 and drv.ready["in"] is None
        found = lab.run(sub, "rdisc6", "-r", "1", "-w", "600", "s0", check=False)
        counters = drv.stop()
    assert found.returncode == 2, found.stdout  # "No response."
    assert ras(cap.frames) == []
    assert [f for f in cap.frames if f[Ether].src == VMAC] == []
    assert "default" not in default_route(lab, sub)
    assert counters == {"rs_received": 0, "rs_ignored": 0, "rs_rate_limited": 0, "ra_sent": 0}


def test_bad_solicitations_are_ignored_and_answers_rate_limited(lab: Lab) -> None:
    sub, app, path = subscriber_lab(lab, RA_CONF)
    burst = 30
    with Capture(lab, sub, "s0", "icmp6") as cap:
        drv = Driver(lab, app, path)
        bad = [rs(hlim=64), rs(src="::"), rs(dst="fe80::99")]  # the last: another router's
        send_frames(lab, sub, "s0", bad + [rs()] * burst)
        wait_for(lambda: len(ras(cap_frames(cap))) >= 1 + ra.ANSWER_BURST, 3, 0.05, "answers")
        time.sleep(0.3)  # the bucket refills (10/s): room for the next two
        tagged = bytes(Ether(src=SUB_MAC, dst="33:33:00:00:00:02") / Dot1Q(vlan=100) /
                       IPv6(rs()[14:]))
        send_frames(lab, sub, "s0", [rs(src="::", slla=False), tagged])
        # An RS from the uplink side leaves through i0: not a subscriber's, not heard.
        send_frames(lab, app, "o1", [rs(src="fe80::20")])
        time.sleep(0.3)
        counters = drv.stop()
    sent = ras(cap.frames)
    unicast = [f for f in sent if f[IPv6].dst == SUB_LL and Dot1Q not in f]
    anonymous = [f for f in sent[1:] if f[IPv6].dst == "ff02::1"]
    in_vlan = [f for f in sent if Dot1Q in f]
    print(f"answered {len(unicast)} of a burst of {burst}; counters {counters}")
    # 10 at once, maybe one more refilled while the burst was read
    assert ra.ANSWER_BURST <= len(unicast) <= ra.ANSWER_BURST + 1, len(unicast)
    assert all(f[Ether].dst == SUB_MAC for f in unicast)
    assert len(anonymous) == 1 and anonymous[0][Ether].dst == "33:33:00:00:00:01"
    assert len(in_vlan) == 1 and in_vlan[0][Dot1Q].vlan == 100
    assert in_vlan[0][IPv6].dst == SUB_LL and checksum_ok(in_vlan[0])
    bridged = [f for f in cap.frames if ICMPv6ND_RS in f and f[IPv6].src == "fe80::20"]
    assert len(bridged) == 1 and not [f for f in sent if f[IPv6].dst == "fe80::20"]
    assert counters == {"rs_received": len(bad) + burst + 2, "rs_ignored": len(bad),
                        "rs_rate_limited": burst - len(unicast),
                        "ra_sent": 1 + len(unicast) + 2}


def cap_frames(cap: Capture) -> list:
    """What tcpdump wrote so far (it flushes every packet: -U)."""
    try:
        return list(rdpcap(str(cap.path)))
    except Exception:  # not written yet, or a record half-written
        return []
