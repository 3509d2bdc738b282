"""SKAT's L2 termination (bras_terminate_l2=1): the master is the subscribers' gateway.

Real clients on both sides: ping, curl and a TCP download from a subscriber to a host behind
the border router and back, IPv4 and IPv6; what a backup does (nothing); the border's view
(ARP/ND for the gateway on the uplink side); the learned table (MAC change, timeout,
unknown subscribers); the gateway's addresses defended; tagged subscribers.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import VGUA, VIP, VLL, VMAC
from gatewaylab import GATEWAY_CONF, GW_MAC, HOST4, HOST6, SUB4, SUB6, GatewayTopo, build
from netlab import PYTHON, Lab, nft_rules, nft_tables, wait_for
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from wire import Capture, mac_of, send_frames, src_macs


@pytest.fixture
def gw(lab: Lab) -> GatewayTopo:
    return build(lab)


def gateway(topo: GatewayTopo) -> dict:
    return topo.app.show()["gateway"]


def subscribers(topo: GatewayTopo) -> list[dict]:
    return json.loads(topo.app.cli("vrrp", "subscribers", "--json").stdout)


def ping(lab: Lab, ns: str, dst: str, count: int = 3, check: bool = True) -> str:
    res = lab.run(ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", dst, check=False)
    if check:
        assert f"{count} received" in res.stdout, res.stdout + res.stderr
    return res.stdout


def serve_http(topo: GatewayTopo, size_mb: int = 8) -> None:
    """A real HTTP server on the host behind the border, dual stack, with one big file."""
    root = topo.lab.path("www")
    root.mkdir()
    (root / "big").write_bytes(b"\x5a" * (size_mb << 20))
    (root / "index.html").write_text("behind the border\n")
    topo.lab.popen(topo.host, PYTHON, "-m", "http.server", "--bind", "::", "--directory",
                   str(root), "8080")
    wait_for(lambda: topo.lab.run(topo.host, "ss", "-Hltn", "sport = :8080").stdout.strip(),
             what="the HTTP server to listen")


def loaded_rules(topo: GatewayTopo) -> list[str]:
    """Tables, chains and rules in the kernel, without counters and learned elements."""
    return sorted([*nft_tables(topo.lab, topo.app.ns),
                   *(json.dumps(i, sort_keys=True) for i in nft_rules(topo.lab, topo.app.ns))])


def curl(topo: GatewayTopo, url: str, *extra: str) -> str:
    res = topo.lab.run(topo.sub, "curl", "-sS", "--max-time", "10", *extra, url, check=False)
    assert res.returncode == 0, f"curl {url}: {res.stderr}"
    return res.stdout


# ------------------------------------------------------------------------------------------

def test_subscriber_reaches_the_internet_through_the_gateway(gw: GatewayTopo) -> None:
    lab = gw.lab
    serve_http(gw)
    ping(lab, gw.sub, HOST4)
    ping(lab, gw.sub, HOST6)
    assert curl(gw, f"http://{HOST4}:8080/") == "behind the border\n"
    assert curl(gw, f"http://[{HOST6}]:8080/") == "behind the border\n"
    # A TCP stream both ways: 8 MiB down, the ACKs up.
    for url in (f"http://{HOST4}:8080/big", f"http://[{HOST6}]:8080/big"):
        got = curl(gw, url, "-o", "/dev/null", "-w", "%{size_download} %{speed_download}")
        size, speed = got.split()
        assert int(size) == 8 << 20, got
        print(f"\n{url}: {float(speed) * 8 / 1e9:.2f} Gbit/s through the gateway")

    counters = gateway(gw)["counters"]
    # veth aggregates segments (GRO): 16 MiB down is a few hundred 64 KiB frames here.
    assert counters["forwarded_up"] > 100 and counters["forwarded_down"] > 200, counters
    assert counters["unknown_subscriber"] == 0, counters
    learned = {(s["ip"], s["mac"]) for s in subscribers(gw)}
    smac = mac_of(lab, gw.sub, "s0")
    assert learned == {(SUB4, smac), (SUB6, smac)}, learned
    assert gateway(gw)["subscribers"] == {"ipv4": 1, "ipv6": 1}


def test_frames_carry_skats_addresses_on_both_sides(gw: GatewayTopo) -> None:
    """Up: source bras_arp_mac, destination bras_gateway_mac. Down: source bras_arp_mac,
    destination the subscriber's MAC. TTL untouched (bras_transparency=1, SKAT's default)."""
    lab = gw.lab
    smac = mac_of(lab, gw.sub, "s0")
    with Capture(lab, gw.border, "u0", "icmp or icmp6") as up, \
            Capture(lab, gw.sub, "s0", "icmp or icmp6") as down:
        ping(lab, gw.sub, HOST4, count=2)
        ping(lab, gw.sub, HOST6, count=2)
    requests = [f for f in up.stop() if (ICMP in f and f[ICMP].type == 8)
                or ICMPv6EchoRequest in f]
    assert len(requests) == 4, [f.summary() for f in up.frames]
    for f in requests:
        assert (f[Ether].src, f[Ether].dst) == (VMAC, GW_MAC), f.summary()
        assert (f[IP].ttl if IP in f else f[IPv6].hlim) == 64, "TTL must stay as sent"
    replies = [f for f in down.stop() if f[Ether].src == VMAC
               and ((ICMP in f and f[ICMP].type == 0) or ICMPv6EchoReply in f)]
    assert len(replies) == 4, [f.summary() for f in down.frames]
    assert {f[Ether].dst for f in replies} == {smac}


def test_ttl_is_decremented_like_a_router_with_transparency_0(lab: Lab) -> None:
    topo = build(lab, GATEWAY_CONF + "bras_transparency=0\n")
    # host -> border (-1) -> gateway (-1): the subscriber sees 62 where it saw 63.
    assert "ttl=62" in ping(lab, topo.sub, HOST4, count=2)
    assert "ttl=62" in ping(lab, topo.sub, HOST6, count=2)
    # A packet that would leave with TTL 0 is dropped and counted.
    before = gateway(topo)["counters"]["ttl_expired"]
    lab.run(topo.sub, "ping", "-c", "2", "-W", "1", "-t", "1", HOST4, check=False)
    assert gateway(topo)["counters"]["ttl_expired"] - before == 2


def test_the_border_resolves_the_gateway_on_the_uplink_side_only(gw: GatewayTopo) -> None:
    lab = gw.lab
    ping(lab, gw.sub, HOST4, count=1)
    ping(lab, gw.sub, HOST6, count=1)
    neigh = json.loads(lab.run(gw.border, "ip", "-j", "neigh", "show", "dev", "u0").stdout)
    by_dst = {n["dst"]: n.get("lladdr", "").lower() for n in neigh}
    assert by_dst.get(VIP) == VMAC and by_dst.get(VLL) == VMAC, neigh
    # SKAT does not answer the border's ARP for a subscriber's own address: the subscriber
    # answers it itself (through the bridge), never the virtual MAC.
    with Capture(lab, gw.border, "u0", "arp") as cap:
        lab.run(gw.border, "arping", "-c", "2", "-w", "2", "-I", "u0", SUB4, check=False)
    answers = [f for f in cap.stop() if ARP in f and f[ARP].op == 2]
    assert answers and all(f[ARP].hwsrc != VMAC for f in answers), \
        [f.summary() for f in answers]


def test_border_reaches_every_learned_subscriber_and_unknown_ones_are_counted(
        gw: GatewayTopo) -> None:
    lab = gw.lab
    ping(lab, gw.sub, HOST4, count=1)
    ping(lab, gw.sub, HOST6, count=1)
    # Now from the Internet side, without the subscriber speaking first.
    ping(lab, gw.host, SUB4)
    ping(lab, gw.host, SUB6)
    before = gateway(gw)["counters"]["unknown_subscriber"]
    with Capture(lab, gw.sub, "s0", "icmp or icmp6") as cap:
        lab.run(gw.host, "ping", "-c", "3", "-i", "0.2", "-W", "1", "100.64.0.77", check=False)
        lab.run(gw.host, "ping", "-c", "3", "-i", "0.2", "-W", "1", "2001:db8:100::77",
                check=False)
    assert gateway(gw)["counters"]["unknown_subscriber"] - before == 6
    assert not [f for f in cap.stop() if VMAC in src_macs([f])], "unknown: nothing delivered"


def test_a_subscriber_that_changes_its_mac_keeps_working(gw: GatewayTopo) -> None:
    lab = gw.lab
    ping(lab, gw.sub, HOST4, count=1)
    old = mac_of(lab, gw.sub, "s0")
    new = "02:00:00:00:0a:0b"
    lab.run(gw.sub, "ip", "link", "set", "s0", "address", new)
    ping(lab, gw.sub, HOST4, count=2)
    assert {s["mac"] for s in subscribers(gw) if s["ip"] == SUB4} == {new}, old
    ping(lab, gw.host, SUB4)  # downstream goes to the new MAC
    # ... and back to the old card after more than a second (the pair memory).
    time.sleep(1.2)
    lab.run(gw.sub, "ip", "link", "set", "s0", "address", old)
    ping(lab, gw.sub, HOST4, count=2)
    assert {s["mac"] for s in subscribers(gw) if s["ip"] == SUB4} == {old}
    ping(lab, gw.host, SUB4)


def test_a_silent_subscriber_is_forgotten_after_the_timeout(lab: Lab) -> None:
    topo = build(lab, GATEWAY_CONF + "bras_subscriber_timeout=10\n")
    ping(lab, topo.sub, HOST4, count=1)
    assert [s for s in subscribers(topo) if s["ip"] == SUB4]
    expires = next(s["expires"] for s in subscribers(topo) if s["ip"] == SUB4)
    assert 8 <= expires <= 10, expires
    wait_for(lambda: not [s for s in subscribers(topo) if s["ip"] == SUB4], timeout=15,
             interval=0.5, what="the subscriber to expire")
    before = gateway(topo)["counters"]["unknown_subscriber"]
    lab.run(topo.host, "ping", "-c", "1", "-W", "1", SUB4, check=False)
    assert gateway(topo)["counters"]["unknown_subscriber"] == before + 1


def test_backup_carries_nothing_and_emits_nothing(gw: GatewayTopo) -> None:
    lab, app = gw.lab, gw.app
    ping(lab, gw.sub, HOST4, count=1)
    app.cli("vrrp", "set", "backup")
    own = {mac_of(lab, app.ns, d) for d in ("i0", "o0")} | {VMAC}
    with Capture(lab, gw.sub, "s0") as sc, Capture(lab, gw.border, "u0") as uc:
        lab.run(gw.sub, "ping", "-c", "3", "-i", "0.2", "-W", "1", HOST4, check=False)
        lab.run(gw.sub, "ping", "-c", "3", "-i", "0.2", "-W", "1", HOST6, check=False)
        lab.run(gw.host, "ping", "-c", "3", "-i", "0.2", "-W", "1", SUB4, check=False)
        lab.run(gw.sub, "arping", "-c", "2", "-w", "2", "-I", "s0", VIP, check=False)
    emitted = [f for f in sc.stop() + uc.stop() if set(src_macs([f])) & own]
    assert not emitted, [f.summary() for f in emitted]
    # The subscriber's frames to the virtual MAC reach the border unchanged (a pure bridge):
    # nothing rewritten, so the border does not take them.
    assert [f for f in uc.frames if Ether in f and f[Ether].dst == VMAC]
    assert all(f[Ether].dst != GW_MAC for f in uc.frames if Ether in f)
    # The table is kept for the next takeover.
    assert {s["ip"] for s in subscribers(gw)} >= {SUB4}
    app.cli("vrrp", "set", "master")
    ping(lab, gw.host, SUB4)  # at once, from what the backup kept


def test_the_gateways_addresses_are_defended(gw: GatewayTopo) -> None:
    lab = gw.lab
    before = gw.app.show()["counters"]["address_defences"]
    # ARP probe (RFC 5227: sender 0.0.0.0): answered, so the prober sees the address taken.
    out = lab.run(gw.sub, "arping", "-0", "-c", "2", "-w", "2", "-I", "s0", VIP,
                  check=False).stdout
    assert "2 packets received" in out, out
    # DAD (RFC 4862) for both IPv6 addresses, by the subscriber's own kernel.
    lab.run(gw.sub, "sysctl", "-qw", "net.ipv6.conf.s0.accept_dad=1")
    for addr in (VGUA, "fe80::1"):
        lab.run(gw.sub, "ip", "addr", "add", f"{addr}/64", "dev", "s0")

    def dad_failed() -> bool:
        out = lab.run(gw.sub, "ip", "-6", "addr", "show", "dev", "s0").stdout
        return all(re.search(rf"{re.escape(a)}/64 .*dadfailed", out) for a in (VGUA, VLL))
    wait_for(dad_failed, timeout=5, what="DAD to fail for the gateway's addresses")
    assert gw.app.show()["counters"]["address_defences"] - before == 4


def test_tagged_subscriber_8021q_is_answered_and_terminated_with_its_tag(
        gw: GatewayTopo) -> None:
    lab = gw.lab
    smac = mac_of(lab, gw.sub, "s0")
    arp = Ether(src=smac, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=100) / ARP(
        hwsrc=smac, psrc="100.64.0.11", pdst=VIP)
    echo = Ether(src=smac, dst=VMAC) / Dot1Q(vlan=100) / IP(src="100.64.0.11", dst=HOST4) \
        / ICMP(id=7, seq=1)
    with Capture(lab, gw.sub, "s0", "vlan") as sc, Capture(lab, gw.border, "u0", "vlan") as uc:
        send_frames(lab, gw.sub, "s0", [bytes(arp), bytes(echo)])
    replies = [f for f in sc.stop() if ARP in f and f[ARP].op == 2]
    assert len(replies) == 1 and replies[0][Dot1Q].vlan == 100, [f.summary() for f in sc.frames]
    assert replies[0][Ether].src == VMAC
    up = [f for f in uc.stop() if ICMP in f]
    assert len(up) == 1, [f.summary() for f in uc.frames]
    assert up[0][Dot1Q].vlan == 100 and (up[0][Ether].src, up[0][Ether].dst) == (VMAC, GW_MAC)
    assert {s["ip"] for s in subscribers(gw)} >= {"100.64.0.11"}


def test_termination_is_hot_and_bad_keys_change_nothing(lab: Lab) -> None:
    topo = build(lab, GATEWAY_CONF.replace("bras_terminate_l2=1", "bras_terminate_l2=0"))
    app = topo.app
    assert app.show()["gateway"] is None
    lab.run(topo.sub, "ping", "-c", "1", "-W", "1", HOST4, check=False)
    assert "1 received" not in ping(lab, topo.sub, HOST4, count=1, check=False)
    app.write_conf(GATEWAY_CONF)
    app.cli("reload")
    ping(lab, topo.sub, HOST4)
    rules = loaded_rules(topo)

    for bad, key in (("bras_gateway_mac=01:00:5e:00:00:01", "bras_gateway_mac"),
                     ("bras_gateway_mac=", "bras_gateway_mac"),
                     ("bras_transparency=2", "bras_transparency"),
                     ("bras_vlan_terminate=1", "bras_vlan_terminate")):
        text = GATEWAY_CONF.replace(f"bras_gateway_mac={GW_MAC}", "") + bad + "\n"
        if key != "bras_gateway_mac":
            text = GATEWAY_CONF + bad + "\n"
        app.write_conf(text)
        res = app.cli("reload", check=False)
        assert res.returncode != 0
        err = res.stderr.strip().splitlines()
        assert len(err) == 1 and str(app.conf_path) in err[0], res.stderr
        assert key in err[0] or "bras_terminate_l2" in err[0], err
        assert loaded_rules(topo) == rules, f"{bad}: the loaded rules changed"
    missing = GATEWAY_CONF.replace(f"bras_gateway_mac={GW_MAC}\n", "")
    app.write_conf(missing)
    res = app.cli("reload", check=False)
    assert "bras_terminate_l2=1 needs bras_gateway_mac" in res.stderr, res.stderr
    ping(lab, topo.sub, HOST4)  # still carried, by the rules loaded before

    app.write_conf(GATEWAY_CONF.replace("bras_terminate_l2=1", "bras_terminate_l2=0"))
    app.cli("reload")
    assert "skat_plugin_gateway" not in lab.run(app.ns, "nft", "list", "tables").stdout
    app.cli("stop")
    assert "skat_plugin_gateway" not in lab.run(app.ns, "nft", "list", "tables").stdout


def test_ipv6_subscriber_takes_its_default_route_from_the_masters_ra(lab: Lab) -> None:
    """The daemon's RA at takeover: a subscriber with no static route gets its default
    router (fe80::1, the virtual MAC) from it and reaches the host; rdisc6 gets one answer;
    in backup an RS gets none."""
    from daemonlab import start_daemon

    topo = build(lab, GATEWAY_CONF + "vrrp_election_pidfile=\nbras_ipv6_router_pref=1\n")
    lab.run(topo.sub, "ip", "-6", "route", "del", "default")
    lab.run(topo.sub, "sysctl", "-qw", "net.ipv6.conf.s0.accept_ra=1",
            "net.ipv6.conf.s0.accept_ra_defrtr=1", "net.ipv6.conf.s0.forwarding=0")
    daemon = start_daemon(topo.app)
    try:
        topo.app.cli("vrrp", "set", "master")  # keepalived's word ends the wait: takeover

        def default_route() -> str:
            return lab.run(topo.sub, "ip", "-6", "route", "show", "default").stdout
        route = wait_for(default_route, 5, 0.05, "a default route from the takeover RA")
        assert "via fe80::1 dev s0" in route and "pref high" in route, route
        ping(lab, topo.sub, HOST6)
        out = lab.run(topo.sub, "rdisc6", "-1", "-w", "1000", "s0").stdout
        assert out.count("Hop limit") == 1 and VMAC.upper() in out.upper(), out
        # daemon.json is published a moment later.
        wait_for(lambda: daemon.status["router_advertisements"]["ra_sent"] >= 2, 3,
                 what="the takeover RA and rdisc6's answer in the daemon's counters")

        topo.app.cli("vrrp", "set", "backup")
        res = lab.run(topo.sub, "rdisc6", "-1", "-w", "1000", "s0", check=False)
        assert res.returncode != 0 and "Hop limit" not in res.stdout, res.stdout
    finally:
        daemon.stop()
