"""The gateway's subscriber table cannot be flooded (issue 17.3).

A subscriber port sends 60,000 frames to the virtual MAC, each from another spoofed source
(random MAC; half the IPs inside vrrp_subscriber_nets, half outside), with trafgen, while an
established subscriber behind another port pings the host behind the border, and a new
subscriber arrives during the flood:

    sub (s0) ─┐
              sw ── i0 [appliance, its daemon running] o0 ── border ── host
    new (n0) ─┘       i1                               o1 ── sink
                      │
    atk (a0) ─────────┘   trafgen: 60,000 frames, 60,000 sources

What must hold: the established subscriber loses under 1 % of its pings, the new one is
learned and answered within 2 s, the table holds a bounded number of the flood's sources
(the per-port meter), the refusals are counted, and the daemon stays under 150 MiB and
answers `vrrp show`. The figures are printed (pytest -s) for the issue's closing note.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BASE_CONF, VMAC
from daemonlab import start_daemon
from gatewaylab import (
    GATEWAY_CONF,
    GATEWAY_KEYS,
    HOST4,
    HOST6,
    SUB4,
    border_router,
    build,
    host_behind,
    subscriber,
)
from netlab import PYTHON, Lab, wait_for
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from wire import mac_of, send_frames

from skat_plugin.render import LEARN_MAC_BURST, LEARN_MAC_RATE, LEARN_PORT_BURST, LEARN_PORT_RATE

NEW4 = "100.64.0.11"
FLOOD = 60000
# Only the frames inside the prefixes can be learned: 100.64.128.0/17 is inside, 198.18/15
# outside. (The established subscribers' /24 is never spoofed: a known IP with another MAC
# is a MAC change, which no meter may slow down.)
CONF = BASE_CONF.replace("in_dev=i0\nout_dev=o0\n", "in_dev=i0:i1\nout_dev=o0:o1\n") \
    + GATEWAY_KEYS + "vrrp_subscriber_nets=100.64.0.0/16,2001:db8:100::/64\n"

# trafgen: two packets, sent in turn. Bytes 6-11 the source MAC (locally administered
# unicast, 5 random bytes), 26-29 the source IP, csumip the IPv4 header checksum.
TRAFGEN = """
{{ 0x02, 0x00, 0x5e, 0x00, 0x01, 0x01,  0x02, drnd(5),  0x08, 0x00,
   0x45, 0x00, const16(46), drnd(2), 0x00, 0x00, 64, 17, csumip(14, 33),
   {src},  203, 0, 113, 10,
   0x30, 0x39, 0x30, 0x39, const16(26), 0x00, 0x00,  fill(0x00, 18) }}
"""
INSIDE = "100, 64, dinc(128, 255), drnd(1)"
OUTSIDE = "198, 18, drnd(2)"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture
def flood_lab(lab: Lab):
    sub, new, sw = lab.ns("sub"), lab.ns("new"), lab.ns("sw")
    atk, sink, border, host = lab.ns("atk"), lab.ns("sink"), lab.ns("border"), lab.ns("host")
    app = lab.appliance("app", CONF)
    lab.veth(sub, "s0", sw, "p0")
    lab.veth(new, "n0", sw, "p1")
    lab.veth(sw, "p2", app.ns, "i0")
    lab.switch(sw, "br0", ["p0", "p1", "p2"])
    lab.veth(atk, "a0", app.ns, "i1")
    lab.veth(border, "u0", app.ns, "o0")
    lab.veth(sink, "k0", app.ns, "o1")
    subscriber(lab, sub, "s0")
    subscriber(lab, new, "n0", ip4=NEW4, ip6="")
    border_router(lab, border, "u0")
    host_behind(lab, border, host)
    app.cli("start")
    daemon = start_daemon(app)
    daemon.write("MASTER")
    wait_for(lambda: app.show()["role"] == "master", 10, 0.1, "the daemon to make it master")
    yield lab, app, daemon, sub, new, atk
    daemon.stop()


def learned(app) -> set[str]:
    return {s["ip"] for s in json.loads(app.cli("vrrp", "subscribers", "--json").stdout)}


def test_a_60000_source_flood_leaves_the_table_and_the_daemon_standing(flood_lab) -> None:
    lab, app, daemon, sub, new, atk = flood_lab
    lab.run(sub, "ping", "-c", "2", "-i", "0.2", "-W", "1", HOST4)  # established
    assert "100.64.0.10" in learned(app)
    rss_before = rss_mib(daemon.proc.pid)

    conf = lab.path("flood.cfg")
    conf.write_text(TRAFGEN.format(src=INSIDE) + TRAFGEN.format(src=OUTSIDE))
    # About 20,000 frames a second: 3 s of flood, while the pings run.
    flood_start = time.monotonic()
    flood = lab.popen(atk, "trafgen", "-i", str(conf), "-o", "a0", "-n", str(FLOOD),
                      "-t", "50us", "-q", stdout=subprocess.DEVNULL)
    pings = lab.popen(sub, "ping", "-c", "300", "-i", "0.01", "-W", "1", HOST4)
    time.sleep(0.5)  # the flood is under way
    # A new subscriber arrives during the flood: answered within 2 s (learning included).
    started = time.monotonic()
    res = lab.run(new, "ping", "-c", "1", "-W", "2", HOST4, check=False)
    new_after = time.monotonic() - started
    assert res.returncode == 0, f"the new subscriber got no answer: {res.stdout}"
    # The daemon answers during the flood.
    started = time.monotonic()
    show = app.show()
    show_s = time.monotonic() - started
    rss_during = rss_mib(daemon.proc.pid)
    out, _ = pings.communicate(timeout=30)
    assert flood.wait(timeout=60) == 0
    flood_s = time.monotonic() - flood_start
    loss = float(re.search(r"([\d.]+)% packet loss", out).group(1))

    time.sleep(1.5)  # the daemon's sync and counting turns catch up
    state = show["gateway"]
    counters = app.show()["gateway"]["counters"]
    count = app.show()["gateway"]["subscribers"]["ipv4"]
    rss_after = rss_mib(daemon.proc.pid)
    print(f"\nflood {FLOOD} frames in {flood_s:.1f} s: established loss {loss} %, new "
          f"subscriber answered in {new_after:.2f} s, table {count} IPv4 subscribers, "
          f"counters {counters}, "
          f"vrrp show {show_s * 1000:.0f} ms, daemon RSS {rss_before:.0f} -> "
          f"{rss_during:.0f} -> {rss_after:.0f} MiB")
    assert loss < 1.0, out
    assert NEW4 in learned(app)
    assert state["subscribers"]["ipv4"] is not None
    # Half the sources were outside the prefixes; of the rest (about 19,500 distinct IPs:
    # drnd repeats some, and a repeated IP is known, not new), the port's meter let at most
    # its burst and its rate for the flood's duration through, nowhere near all.
    assert counters["learn_outside"] == FLOOD // 2
    admitted = LEARN_PORT_BURST + LEARN_PORT_RATE * (flood_s + 1)
    assert counters["learn_limited"] > 5000
    assert 0 < count - 2 <= admitted  # the two subscribers, and the flood's share
    assert max(rss_before, rss_during, rss_after) < 150
    assert daemon.proc.poll() is None


def test_one_mac_teaches_few_ips_and_foreign_prefixes_none(lab: Lab) -> None:
    """The per-MAC meter: one MAC sending from 300 new IPs in a burst is learned for about
    its burst (LEARN_MAC_BURST), not 300. A source outside vrrp_subscriber_nets, IPv4 or
    IPv6, is never learned. The subscriber of that MAC keeps its own IP working."""
    gw = build(lab, GATEWAY_CONF + "vrrp_subscriber_nets=100.64.0.0/16,2001:db8:100::/64\n")
    lab.run(gw.sub, "ping", "-c", "1", "-W", "1", HOST4)
    mac = mac_of(lab, gw.sub, "s0")
    frames = [Ether(src=mac, dst=VMAC) / IP(src=f"100.64.{1 + i // 200}.{1 + i % 200}",
                                           dst=HOST4) / UDP(dport=9) for i in range(300)]
    frames += [Ether(src=mac, dst=VMAC) / IP(src="192.0.2.7", dst=HOST4) / UDP(dport=9),
               Ether(src=mac, dst=VMAC) / IPv6(src="2001:db8:999::7", dst=HOST6)
               / UDP(dport=9)]
    started = time.monotonic()
    send_frames(lab, gw.sub, "s0", frames)
    took = time.monotonic() - started
    ips = learned(gw.app)
    counters = gw.app.show()["gateway"]["counters"]
    flood_ips = {ip for ip in ips if ip.startswith("100.64.") and ip != SUB4}
    print(f"\none MAC, 300 new IPs in {took:.2f} s: {len(flood_ips)} learned, "
          f"counters {counters}")
    assert 0 < len(flood_ips) <= LEARN_MAC_BURST + LEARN_MAC_RATE * (took + 1)
    assert counters["learn_limited"] >= 300 - len(flood_ips)
    assert "192.0.2.7" not in ips and "2001:db8:999::7" not in ips
    assert counters["learn_outside"] == 2
    lab.run(gw.sub, "ping", "-c", "3", "-i", "0.2", "-W", "1", HOST4)  # still served


STEPS = r"""
import json, time
from skat_plugin.gateway import subscribers
reader, steps, got, worst, first = subscribers.FreshReader(), 0, set(), 0.0, None
while True:
    t = time.perf_counter()
    pairs, done = reader.step(0.0005)
    if first is None:
        first = time.perf_counter() - t  # opens the reader's socket
    else:
        worst = max(worst, time.perf_counter() - t)
    got |= set(pairs)
    steps += 1
    if done:
        break
print(json.dumps({"steps": steps, "stepped": sorted(got), "worst_ms": worst * 1000,
                  "first_ms": first * 1000,
                  "whole": sorted(subscribers.read_fresh())}))
"""


def test_the_fresh_pairs_read_in_steps_are_the_whole(lab: Lab) -> None:
    """FreshReader: small steps, resumed, give what one whole read gives (the sync's
    bounded variant of read_fresh)."""
    gw = build(lab, GATEWAY_CONF)
    # 2,000 new subscribers from 200 MACs (10 each, under the MAC meter's burst).
    frames = [Ether(src=f"02:aa:00:00:{i // 10 // 256:02x}:{i // 10 % 256:02x}", dst=VMAC)
              / IP(src=f"100.64.{8 + i // 250}.{1 + i % 250}", dst=HOST4) / UDP(dport=9)
              for i in range(2000)]
    send_frames(lab, gw.sub, "s0", frames)
    res = lab.run(gw.app.ns, PYTHON, "-c", STEPS, env=gw.app.env())
    found = json.loads(res.stdout)
    print(f"\n{len(found['whole'])} fresh pairs in {found['steps']} steps: the first (opening "
          f"the socket) {found['first_ms']:.1f} ms, the longest other {found['worst_ms']:.1f} ms")
    assert len(found["whole"]) >= 1500, found["whole"][:5]
    assert [tuple(p) for p in found["stepped"]] == [tuple(p) for p in found["whole"]]
    assert found["steps"] > 1
