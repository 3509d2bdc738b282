"""The VRRP firewall: only the group's appliances reach keepalived and the subscriber-table
sync, in either role.

    [app] v0 192.0.2.11  ──veth──  v1 [net]  192.0.2.12 (the peer), 192.0.2.99 (a stranger)

A raw IP-protocol-112 socket in the appliance stands in for keepalived's and records what it
is given; the other namespace sends raw VRRP packets from each address. For the sync, a UDP
socket on vrrp_sync_port stands in for the daemon's, and the other namespace sends datagrams
with a chosen source and TTL.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

from conftest import BASE_CONF
from netlab import PYTHON, Appliance, Lab

ME, PEER, STRANGER = "192.0.2.11", "192.0.2.12", "192.0.2.99"
GROUP = "224.0.0.18"

# Everything VRRP this host is given, as the list of [source, destination] it saw.
LISTENER = textwrap.dedent("""
    import json, socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    mreq = socket.inet_aton("224.0.0.18") + socket.inet_aton(sys.argv[1])
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.settimeout(0.05)
    print("ready", flush=True)
    seen, end = [], time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        try:
            pkt = s.recv(2048)
        except TimeoutError:
            continue
        seen.append([socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])])
    print(json.dumps(seen), flush=True)
""")

# One VRRPv3-looking advert from argv[1] to argv[2] (the firewall only reads the IP header).
SENDER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    s.bind((sys.argv[1], 0))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    for _ in range(3):
        s.sendto(bytes([0x31, 51, 100, 1, 0, 100, 0, 0]) + socket.inet_aton("192.0.2.10"),
                 (sys.argv[2], 0))
""")


def _conf(peers: str | None) -> str:
    conf = BASE_CONF + "vrrp_interface=v0\nvrrp_mgmt_vip=192.0.2.10/24\n"
    if peers:
        conf += f"vrrp_unicast_src={ME}\nvrrp_unicast_peers={peers}\n"
    return conf


def _build(lab: Lab, conf: str) -> tuple[Appliance, str]:
    app = lab.appliance("app", conf)
    net = lab.ns("net")
    lab.veth(app.ns, "i0", app.ns, "i0p")  # the bridged ports are not under test here
    lab.veth(app.ns, "o0", app.ns, "o0p")
    lab.veth(app.ns, "v0", net, "v1")
    lab.run(app.ns, "ip", "addr", "add", f"{ME}/24", "dev", "v0")
    for addr in (PEER, STRANGER):
        lab.run(net, "ip", "addr", "add", f"{addr}/24", "dev", "v1")
    app.cli("start")
    return app, net


def _received(lab: Lab, app: Appliance, net: str,
              sends: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Send 3 adverts per (source, destination); what the appliance's raw socket got."""
    listener = lab.popen(app.ns, PYTHON, "-c", LISTENER, ME, "1.0")
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    for src, dst in sends:
        lab.run(net, PYTHON, "-c", SENDER, src, dst)
    out, _ = listener.communicate(timeout=10)
    return [tuple(x) for x in json.loads(out.strip().splitlines()[-1])]


def _counters(lab: Lab, app: Appliance, prefix: str = "vrrp_") -> dict[str, int]:
    res = lab.run(app.ns, "nft", "-j", "list", "counters", "table", "inet", "skat_plugin_vrrp")
    return {c["counter"]["name"]: c["counter"]["packets"]
            for c in json.loads(res.stdout)["nftables"]
            if "counter" in c and c["counter"]["name"].startswith(prefix)}


def test_unicast_accepts_only_the_configured_peer_in_both_roles(lab: Lab) -> None:
    app, net = _build(lab, _conf(PEER))
    sends = [(PEER, ME), (STRANGER, ME), (STRANGER, GROUP)]

    assert _received(lab, app, net, sends) == [(PEER, ME)] * 3
    assert _counters(lab, app) == {"vrrp_accepted": 3, "vrrp_dropped": 6}

    app.cli("vrrp", "set", "backup")
    assert _received(lab, app, net, sends) == [(PEER, ME)] * 3, "backup must filter too"

    # Without the plugin's rules the stranger gets through: the filtering above was ours.
    app.cli("stop")
    got = _received(lab, app, net, sends)
    assert (STRANGER, ME) in got and (PEER, ME) in got


def test_multicast_accepts_the_vrrp_group_only(lab: Lab) -> None:
    app, net = _build(lab, _conf(None))
    got = _received(lab, app, net, [(STRANGER, GROUP), (STRANGER, ME), (PEER, ME)])
    assert got == [(STRANGER, GROUP)] * 3
    assert _counters(lab, app) == {"vrrp_accepted": 3, "vrrp_dropped": 6}


def test_no_vrrp_interface_no_firewall(lab: Lab) -> None:
    app = lab.appliance("app", BASE_CONF)
    lab.veth(app.ns, "i0", app.ns, "i0p")
    lab.veth(app.ns, "o0", app.ns, "o0p")
    app.cli("start")
    res = lab.run(app.ns, "nft", "list", "table", "inet", "skat_plugin_vrrp", check=False)
    assert res.returncode != 0, res.stdout


def test_rule_set_is_valid_nft() -> None:
    """The files render to valid nft input without root (nft -c checks syntax only here)."""
    from skat_plugin import render
    from skat_plugin.config import Config

    values = {"in_dev": ["i0"], "out_dev": ["o0"], "vrrp_enable": 1, "vrrp_interface": "v0",
              "vrrp_unicast_peers": [PEER, "192.0.2.13"], "bras_arp_mac": "02:00:5e:00:01:01",
              "bras_arp_ip": "100.64.0.1", "vrrp_socket_mark": 0x5CA7,
              "vrrp_nd_router_flag": 1, "vrrp_sync_port": 23720}
    for role in render.ROLES:
        rs = render.render(Config("x", values), role, [])
        at = rs.files.index("vrrp-firewall.nft")
        assert rs.files[at:at + 2] == ["vrrp-firewall.nft", "vrrp-from-peers.nft"]
        assert rs.defines["vrrp_peers"] == "{ 192.0.2.12, 192.0.2.13 }"
        assert rs.defines["sync_port"] == "23720"
    res = subprocess.run(["nft", "-c", "-I", str(render.nft_dir()), "-f", "-"],
                         input=rs.script(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# IPv6: keepalived's VRRPv3-over-IPv6 socket, joined to ff02::12 on v0 (without a member the
# kernel drops the multicast before the firewall could judge it).
LISTENER6 = textwrap.dedent("""
    import json, socket, struct, sys, time
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112)
    idx = socket.if_nametoindex("v0")
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                 socket.inet_pton(socket.AF_INET6, "ff02::12") + struct.pack("@I", idx))
    s.settimeout(0.05)
    print("ready", flush=True)
    n, end = 0, time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        try:
            s.recv(2048)
            n += 1
        except TimeoutError:
            continue
    print(json.dumps(n), flush=True)
""")


def test_multicast_ipv6_accepts_ff02_12_and_drops_unicast_vrrp(lab: Lab) -> None:
    app, net = _build(lab, _conf(None))
    lab.run(app.ns, "ip", "addr", "add", "2001:db8:2::11/64", "dev", "v0", "nodad")
    lab.run(net, "ip", "addr", "add", "2001:db8:2::99/64", "dev", "v1", "nodad")
    listener = lab.popen(app.ns, PYTHON, "-c", LISTENER6, "1.5")
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    app_mac = lab.run(app.ns, "cat", "/sys/class/net/v0/address").stdout.strip()
    lab.run(net, PYTHON, "-c", textwrap.dedent(f"""
        from scapy.all import Ether, IPv6, Raw, sendp
        advert = Raw(bytes([0x31, 51, 100, 1, 0, 100, 0, 0]) + bytes(16))
        group = Ether(dst="33:33:00:00:00:12") / IPv6(src="fe80::99", dst="ff02::12",
                                                        nh=112, hlim=255) / advert
        unicast = Ether(dst="{app_mac}") / IPv6(src="2001:db8:2::99", dst="2001:db8:2::11",
                                                 nh=112, hlim=255) / advert
        sendp([group] * 3 + [unicast] * 2, iface="v1", verbose=False)
    """))
    out, _ = listener.communicate(timeout=10)
    assert json.loads(out.strip().splitlines()[-1]) == 3  # the group's adverts only
    assert _counters(lab, app) == {"vrrp_accepted": 3, "vrrp_dropped": 2}


# -- the subscriber-table sync's port --------------------------------------------------------

SYNC_PORT = 23720
# What the sync's socket is given: [source, payload] of each datagram, for argv[1] seconds.
SYNC_LISTENER = textwrap.dedent(f"""
    import json, socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"v0")
    s.bind(("", {SYNC_PORT}))
    s.settimeout(0.05)
    print("ready", flush=True)
    seen, end = [], time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        try:
            data, (src, _) = s.recvfrom(2048)
        except TimeoutError:
            continue
        seen.append([src, data.decode()])
    print(json.dumps(seen), flush=True)
""")

# Datagrams with a chosen source and TTL (argv: JSON list of [source, destination, ttl, text]).
SYNC_SENDER = textwrap.dedent(f"""
    import json, socket, sys
    for src, dst, ttl, text in json.loads(sys.argv[1]):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        s.bind((src, 0))
        s.sendto(text.encode(), (dst, {SYNC_PORT}))
        s.close()
""")


def _sync_received(lab: Lab, app: Appliance, net: str,
                   sends: list[tuple[str, str, int, str]]) -> set[str]:
    listener = lab.popen(app.ns, PYTHON, "-c", SYNC_LISTENER, "1.0")
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    lab.run(net, PYTHON, "-c", SYNC_SENDER, json.dumps(sends))
    out, _ = listener.communicate(timeout=10)
    return {text for _src, text in json.loads(out.strip().splitlines()[-1])}


def test_sync_port_takes_ttl_255_from_the_peers_only_in_both_roles(lab: Lab) -> None:
    """A stranger on the link, the peer's address spoofed from two hops away (TTL below
    255), and the peer itself: only the last reaches the sync's socket."""
    app, net = _build(lab, _conf(PEER))
    sends = [(PEER, ME, 255, "peer"), (PEER, ME, 254, "peer-routed"),
             (PEER, ME, 64, "peer-ttl64"), (STRANGER, ME, 255, "stranger"),
             (STRANGER, "192.0.2.255", 255, "stranger-broadcast"),
             (PEER, "255.255.255.255", 255, "peer-broadcast")]
    for role in ("master", "backup"):
        if role == "backup":
            app.cli("vrrp", "set", "backup")
        before = _counters(lab, app, "sync_")
        assert _sync_received(lab, app, net, sends) == {"peer", "peer-broadcast"}, role
        after = _counters(lab, app, "sync_")
        assert after["sync_dropped"] - before["sync_dropped"] == 4, (role, after)
        assert after["sync_accepted"] - before["sync_accepted"] == 2, (role, after)
    # Without the plugin's rules they all get through: the filtering above was ours.
    app.cli("stop")
    assert len(_sync_received(lab, app, net, sends)) == len(sends)


def test_sync_port_without_peers_takes_ttl_255_only(lab: Lab) -> None:
    """Broadcast mode (no vrrp_unicast_peers): any source on the link, TTL 255 only. The key
    (gateway/sync.py) is what keeps the stranger's datagram from being believed."""
    app, net = _build(lab, _conf(None))
    sends = [(STRANGER, "255.255.255.255", 255, "link"), (STRANGER, ME, 255, "link-unicast"),
             (PEER, ME, 254, "routed"), (PEER, "255.255.255.255", 1, "ttl1")]
    assert _sync_received(lab, app, net, sends) == {"link", "link-unicast"}
    assert _counters(lab, app, "sync_") == {"sync_accepted": 2, "sync_dropped": 2}
