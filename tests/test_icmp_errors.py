"""ICMP Time Exceeded from a gateway that decrements TTLs (bras_transparency=0, issue 18.9):
ping -t 1 through the gateway names it, from the subscriber side and from the Internet,
IPv4 and IPv6; the frames pass tshark; no error for what RFC 1812/4443 exempt; the kernel's
rate limit; nothing with bras_transparency=1 or from a backup.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import VGUA, VIP, VMAC
from daemonlab import start_daemon
from gatewaylab import GATEWAY_CONF, HOST4, HOST6, SUB4, SUB6, build
from hypothesis import given, settings
from hypothesis import strategies as st
from netlab import Lab, wait_for
from scapy.layers.inet import ICMP, IP, UDP, IPerror
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6TimeExceeded, IPerror6, IPv6
from scapy.layers.l2 import Ether
from wire import Capture, send_frames

from skat_plugin import config
from skat_plugin.gateway import icmp_errors

CONF = GATEWAY_CONF + "bras_transparency=0\nvrrp_election_pidfile=\n"
SUB_MAC = "02:00:00:00:00:10"


def load(tmp_path: Path, text: str = CONF) -> config.Config:
    (tmp_path / "fastdpi.conf").write_text(text)
    return config.load(str(tmp_path / "fastdpi.conf"))


def v4(ttl: int = 1, src: str = SUB4, dst: str = HOST4, payload=None) -> bytes:
    return bytes(Ether(src=SUB_MAC, dst=VMAC) / IP(src=src, dst=dst, ttl=ttl)
                 / (payload if payload is not None else UDP(dport=33434) / (b"x" * 32)))


def v6(hlim: int = 1, src: str = SUB6, dst: str = HOST6, payload=None) -> bytes:
    return bytes(Ether(src=SUB_MAC, dst=VMAC) / IPv6(src=src, dst=dst, hlim=hlim)
                 / (payload if payload is not None else ICMPv6EchoRequest()))


def test_the_errors_quote_the_packet_and_come_from_the_gateway(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    dest, raw = icmp_errors.time_exceeded(cfg, v4())
    f = Ether(raw)
    assert dest == SUB4 and (f.src, f.dst) == (VMAC, SUB_MAC)
    assert (f[IP].src, f[IP].dst, f[ICMP].type, f[ICMP].code) == (VIP, SUB4, 11, 0)
    assert f[IPerror].dst == HOST4 and f[IPerror].ttl == 1
    for layer in (IP, ICMP):  # scapy recomputes both checksums: they must be ours
        sent = f[layer].chksum
        g = Ether(raw)
        del g[layer].chksum
        assert Ether(bytes(g))[layer].chksum == sent
    big = icmp_errors.time_exceeded(cfg, v4(payload=UDP() / (b"x" * 1400)))[1]
    assert len(big) - 14 == icmp_errors.IPV4_LIMIT  # RFC 1812 4.3.2.3
    dest6, raw6 = icmp_errors.time_exceeded(cfg, v6())
    f6 = Ether(raw6)
    assert dest6 == SUB6 and (f6[IPv6].src, f6[IPv6].dst) == (VGUA, SUB6)
    assert f6[ICMPv6TimeExceeded].code == 0 and f6[IPerror6].dst == HOST6
    sent = f6[ICMPv6TimeExceeded].cksum
    del f6[ICMPv6TimeExceeded].cksum
    assert Ether(bytes(f6))[ICMPv6TimeExceeded].cksum == sent
    big6 = icmp_errors.time_exceeded(cfg, v6(payload=ICMPv6EchoRequest(data=b"x" * 1400)))[1]
    assert len(big6) - 14 == icmp_errors.IPV6_LIMIT  # RFC 4443 2.4 c


def test_no_error_where_the_rfcs_say_none(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    exempt = {
        "TTL 2: not expiring": v4(ttl=2),
        "an ICMP error": v4(payload=ICMP(type=3)),
        "to a multicast group": v4(dst="224.0.0.5"),
        "to broadcast": v4(dst="255.255.255.255"),
        "from 0.0.0.0": v4(src="0.0.0.0"),
        "to the gateway itself": v4(dst=VIP),
        "a later fragment": bytes(Ether(src=SUB_MAC, dst=VMAC)
                                  / IP(src=SUB4, dst=HOST4, ttl=1, frag=10) / (b"x" * 16)),
        "IPv6 hop limit 2": v6(hlim=2),
        "an ICMPv6 error": v6(payload=ICMPv6TimeExceeded()),
        "to a link-local address": v6(dst="fe80::99"),
        "from a link-local address": v6(src="fe80::10"),
        "to multicast": v6(dst="ff02::1"),
    }
    for what, frame in exempt.items():
        assert icmp_errors.time_exceeded(cfg, frame) is None, what
    good = v4()
    for cut in range(len(good)):
        icmp_errors.time_exceeded(cfg, good[:cut])  # never raises


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=100), st.integers(0, 70), st.binary(min_size=1, max_size=8))
def test_hostile_bytes_never_raise(tail: bytes, at: int, patch: bytes) -> None:
    cfg = config.Config.from_snapshot({"source": "test", "values": {
        "in_dev": ["i0"], "out_dev": ["o0"], "bras_terminate_l2": 1, "bras_transparency": 0,
        "bras_arp_mac": VMAC, "bras_arp_ip": VIP, "bras_ipv6_address": VGUA,
        "bras_ipv6_link_local": "fe80::1"}})
    icmp_errors.time_exceeded(cfg, tail)
    for base in (v4(), v6()):
        frame = bytearray(base)
        frame[at:at + len(patch)] = patch
        icmp_errors.time_exceeded(cfg, bytes(frame))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, port: str, frame: bytes) -> bool:
        self.sent.append((port, frame))
        return True


def test_rate_limited_like_the_kernel(tmp_path: Path) -> None:
    rec = Recorder()
    te = icmp_errors.TimeExceeded(rec)  # type: ignore[arg-type]
    te.start(load(tmp_path), 0.0)  # no ports here: no listener, expire() is the way in
    te.cfg = load(tmp_path)
    for i in range(100):  # 100 expiring packets from one source in 1 s
        te.expire("i0", v4(), b"", i / 100)
    assert len(rec.sent) == icmp_errors.PER_DEST_BURST  # the burst; 0.99 s refill no token
    other = v4(src="100.64.0.11")
    te.expire("i0", other, b"\x81\x00\x00\x64", 1.0)  # another source: its own budget
    assert len(rec.sent) == icmp_errors.PER_DEST_BURST + 1
    assert Ether(rec.sent[-1][1]).vlan == 100  # back into its VLAN
    assert te.counters()["time_exceeded_rate_limited"] == 100 - icmp_errors.PER_DEST_BURST


def ping(lab: Lab, ns: str, *args: str) -> str:
    res = lab.run(ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", *args, check=False)
    return res.stdout + res.stderr


def test_ping_with_ttl_1_names_the_gateway(lab: Lab) -> None:
    topo = build(lab, CONF)
    daemon = start_daemon(topo.app)
    try:
        topo.app.cli("vrrp", "set", "master")
        wait_for(lambda: len(daemon.status["router_advertisements"]) > 0, 5, 0.05, "master")
        with Capture(lab, topo.sub, "s0", "icmp or icmp6") as cap:
            up4 = ping(lab, topo.sub, "-t", "1", HOST4)
            up6 = ping(lab, topo.sub, "-6", "-t", "1", HOST6)
        # From the Internet: the border takes one off, the gateway the last one.
        down4 = ping(lab, topo.host, "-t", "2", SUB4)
        down6 = ping(lab, topo.host, "-6", "-t", "2", SUB6)
        counters = daemon.status["router_advertisements"]
    finally:
        daemon.stop()
    assert re.search(rf"From {re.escape(VIP)} icmp_seq=1 Time to live exceeded", up4), up4
    assert re.search(rf"From {re.escape(VGUA)} icmp_seq=1 Time exceeded: Hop limit", up6), up6
    assert f"From {VIP}" in down4 and "Time to live exceeded" in down4, down4
    assert f"From {VGUA}" in down6 and "Time exceeded" in down6, down6
    assert counters["time_exceeded_sent"] >= 8, counters
    res = subprocess.run(["tshark", "-r", str(cap.path), "-q", "-z", "expert",
                          "-o", "ip.check_checksum:TRUE"], capture_output=True, text=True)
    assert "Errors (" not in res.stdout and "Warns (" not in res.stdout, res.stdout
    errors = [f for f in cap.frames if f[Ether].src == VMAC
              and ((ICMP in f and f[ICMP].type == 11) or ICMPv6TimeExceeded in f)]
    assert len(errors) == 4, [f.summary() for f in cap.frames]  # 2 pings x IPv4, IPv6


@pytest.mark.parametrize("role", ["transparent", "backup"])
def test_no_error_when_transparent_or_backup(lab: Lab, role: str) -> None:
    conf = CONF.replace("bras_transparency=0", "bras_transparency=1") \
        if role == "transparent" else CONF
    topo = build(lab, conf)
    daemon = start_daemon(topo.app)
    try:
        topo.app.cli("vrrp", "set", "master" if role == "transparent" else "backup")
        with Capture(lab, topo.sub, "s0", "icmp") as cap:
            out = ping(lab, topo.sub, "-t", "1", HOST4)
    finally:
        daemon.stop()
    assert f"From {VIP}" not in out, out
    # (Transparent, the border's own Time Exceeded comes back through the gateway.)
    assert [f for f in cap.frames if IP in f and f[IP].src == VIP] == []



def test_a_flood_of_expiring_packets_is_muted_in_the_kernel(lab: Lab) -> None:
    """One subscriber sends TTL-1 packets as fast as trafgen can: it gets its rate-limited
    errors, its MAC is muted in the port's filter (the kernel drops the copies), another
    subscriber still gets its error, and the daemon's process stays idle."""
    topo = build(lab, CONF)
    daemon = start_daemon(topo.app)
    flood_n = 300000
    other = bytes(Ether(src="02:00:00:00:00:11", dst=VMAC)
                  / IP(src="100.64.0.11", dst=HOST4, ttl=1) / UDP(dport=33434))
    try:
        topo.app.cli("vrrp", "set", "master")
        wait_for(lambda: len(daemon.status["router_advertisements"]) > 0, 5, 0.05, "master")
        conf = lab.path("ttl-flood.cfg")
        conf.write_text("{ " + ", ".join(f"0x{b:02x}" for b in v4()) + " }\n")
        pid = daemon.proc.pid
        cpu = _cpu(pid)
        with Capture(lab, topo.sub, "s0", "icmp and ip dst 100.64.0.11") as cap:
            began = time.monotonic()
            flood = lab.popen(topo.sub, "trafgen", "-o", "s0", "-c", str(conf), "-n",
                              str(flood_n), "-q")
            time.sleep(0.5)
            send_frames(lab, topo.sub, "s0", [other])
            assert flood.wait(timeout=60) == 0
            lasted = time.monotonic() - began
            share = (_cpu(pid) - cpu) / lasted
        wait_for(lambda: daemon.status["router_advertisements"]["ttl_expired_seen"] > 0, 3,
                 0.1, "the daemon's counters")
        counters = daemon.status["router_advertisements"]
    finally:
        daemon.stop()
    seen = counters["ttl_expired_seen"]
    print(f"TTL-1 flood: {flood_n} frames in {lasted:.2f} s ({flood_n / lasted:.0f}/s), "
          f"{seen} reached the daemon, {counters['time_exceeded_sent']} errors sent, "
          f"{counters['time_exceeded_mutes']} mutes; the daemon used {share:.0%} of a core")
    assert len([f for f in cap.frames if f[ICMP].type == 11]) == 1  # the other's error
    assert counters["time_exceeded_mutes"] >= 1 and seen < flood_n / 10, counters
    assert counters["time_exceeded_sent"] <= icmp_errors.PER_DEST_BURST + lasted + 2


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
