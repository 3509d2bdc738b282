"""Backup is a pure bridge: not one frame of its own on the wire, whatever is sent at it.

Captures run on both sides of the appliance (the subscriber's s0 and the uplink's u0) and are
read back with scapy: every frame seen on one side must come from one of the two hosts.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from conftest import VGUA, VIP, VLL, VMAC, Topo
from netlab import wait_for
from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import Ether
from wire import Capture, mac_of, send_frames

SUB_IP, SUB_GUA = "100.64.0.10", "2001:db8:100::10"
UP_IP, UP_GUA = "100.64.0.20", "2001:db8:100::20"
MARK = 0x5CA7  # vrrp_socket_mark's default
PROBE_TYPE = 0x88B5  # IEEE local experimental EtherType: nobody else sends it


def appliance_macs(topo: Topo) -> set[str]:
    return {mac_of(topo.lab, topo.app.ns, d) for d in ("i0", "o0", "skatbr0")} | {VMAC}


def nft_counter(topo: Topo, family: str, name: str) -> int:
    out = topo.lab.run(topo.app.ns, "nft", "-j", "list", "counter", family,
                       "skat_plugin_backup", name).stdout
    return next(i["counter"]["packets"] for i in json.loads(out)["nftables"] if "counter" in i)


def unicast_ns(smac: str, src: str, target: str, option: bool) -> bytes:
    pkt = Ether(src=smac, dst=VMAC) / IPv6(src=src, dst=target) / ICMPv6ND_NS(tgt=target)
    return bytes(pkt / ICMPv6NDOptSrcLLAddr(lladdr=smac) if option else pkt)


def test_backup_emits_nothing_during_a_window_of_probes(topo: Topo) -> None:
    lab, sub, up, app = topo.lab, topo.sub, topo.up, topo.app
    app.cli("vrrp", "set", "backup")
    smac, umac = mac_of(lab, sub, "s0"), mac_of(lab, up, "u0")
    own = appliance_macs(topo)
    window = 3.0

    with Capture(lab, sub, "s0") as cap_s, Capture(lab, up, "u0") as cap_u:
        t0 = time.monotonic()
        # At the appliance: ARP and NS for the virtual gateway, from both sides.
        lab.run(sub, "arping", "-c", "2", "-w", "1", "-I", "s0", VIP, check=False)
        lab.run(up, "arping", "-c", "1", "-w", "1", "-I", "u0", VIP, check=False)
        for target in (VGUA, VLL):
            lab.run(sub, "ndisc6", "-n", "-r", "2", "-w", "200", target, "s0", check=False)
        lab.run(up, "ndisc6", "-n", "-r", "1", "-w", "200", VGUA, "u0", check=False)
        send_frames(lab, sub, "s0", [unicast_ns(smac, SUB_GUA, VGUA, True),
                                     unicast_ns(smac, SUB_GUA, VGUA, False),
                                     unicast_ns(smac, SUB_GUA, VLL, True)])
        lab.run(sub, "ping", "-c", "1", "-W", "1", VIP, check=False)
        # Ordinary traffic through it, both ways, IPv4 and IPv6: it must pass.
        for ns, dst in ((sub, UP_IP), (sub, UP_GUA), (up, SUB_IP), (up, SUB_GUA)):
            lab.run(ns, "ping", "-c", "3", "-i", "0.1", "-W", "1", dst)
        lab.run(sub, "arping", "-c", "1", "-w", "1", "-I", "s0", UP_IP)
        time.sleep(max(0.0, window - (time.monotonic() - t0)))
        frames_s = cap_s.stop()
        frames_u = cap_u.stop()

    def describe(frames: list) -> str:
        return "\n".join(f.summary() for f in frames[:40])

    # The window really had traffic, and it crossed the appliance in both directions.
    from_up_on_s = [f for f in frames_s if f[Ether].src == umac]
    from_sub_on_u = [f for f in frames_u if f[Ether].src == smac]
    assert len(from_up_on_s) >= 10, describe(frames_s)
    assert len(from_sub_on_u) >= 10, describe(frames_u)
    assert any(ICMPv6ND_NS in f and f[ICMPv6ND_NS].tgt == VGUA for f in frames_s)
    # Not one frame from anybody but the two hosts.
    stray_s = [f for f in frames_s if f[Ether].src not in (smac, umac)]
    stray_u = [f for f in frames_u if f[Ether].src not in (smac, umac)]
    assert stray_s == [], describe(stray_s)
    assert stray_u == [], describe(stray_u)
    assert not own & {f[Ether].src for f in frames_s + frames_u}


def test_egress_guard_drops_marked_frames_in_backup_only(topo: Topo) -> None:
    lab, sub, up, app = topo.lab, topo.sub, topo.up, topo.app
    smac, umac = mac_of(lab, sub, "s0"), mac_of(lab, up, "u0")

    def probe(dst: str, tag: str) -> bytes:
        # A source MAC that is none of the appliance's: only the mark can get it dropped.
        return bytes(Ether(src="02:11:22:33:44:55", dst=dst, type=PROBE_TYPE)
                     / (b"skat-guard:" + tag.encode()).ljust(46, b"."))

    def seen(frames: list) -> set[str]:
        return {bytes(f)[14:].split(b".")[0].decode().removeprefix("skat-guard:")
                for f in frames}

    def round_(tag: str) -> tuple[set[str], set[str], int, int]:
        bpf = f"ether proto {PROBE_TYPE:#x}"
        with Capture(lab, sub, "s0", bpf) as cap_s, Capture(lab, up, "u0", bpf) as cap_u:
            refused_marked = (
                send_frames(lab, app.ns, "i0", [probe(smac, f"{tag}-marked")], mark=MARK)
                + send_frames(lab, app.ns, "o0", [probe(umac, f"{tag}-marked")], mark=MARK))
            refused_plain = (send_frames(lab, app.ns, "i0", [probe(smac, f"{tag}-plain")])
                             + send_frames(lab, app.ns, "o0", [probe(umac, f"{tag}-plain")]))
            return (seen(cap_s.stop(settle=0.2)), seen(cap_u.stop(settle=0.0)),
                    refused_marked, refused_plain)

    # Master: the plugin's senders must reach the wire (GARP on takeover needs this).
    s, u, refused_marked, refused_plain = round_("master")
    assert s == {"master-marked", "master-plain"}, s
    assert u == {"master-marked", "master-plain"}, u
    assert (refused_marked, refused_plain) == (0, 0)

    app.cli("vrrp", "set", "backup")
    before = nft_counter(topo, "netdev", "guard_drops")
    s, u, refused_marked, refused_plain = round_("backup")
    # The unmarked control frame passes, so the marked one was dropped by its mark.
    assert s == {"backup-plain"}, s
    assert u == {"backup-plain"}, u
    # The sender learns it (ENOBUFS): the plugin's own senders must expect that in backup.
    assert (refused_marked, refused_plain) == (2, 0)
    assert nft_counter(topo, "netdev", "guard_drops") - before == 2


def test_host_stack_frames_into_the_bridge_are_dropped_in_backup(topo: Topo) -> None:
    lab, sub, up, app = topo.lab, topo.sub, topo.up, topo.app
    lab.run(app.ns, "ip", "addr", "add", "100.64.0.5/24", "dev", "skatbr0")
    brmac = mac_of(lab, app.ns, "skatbr0")

    # Master: the host stack may talk through the bridge (the control).
    lab.run(app.ns, "ping", "-c", "1", "-W", "2", SUB_IP)

    app.cli("vrrp", "set", "backup")
    lab.run(app.ns, "ip", "neigh", "flush", "dev", "skatbr0")
    before = nft_counter(topo, "bridge", "host_drops")
    with Capture(lab, sub, "s0") as cap_s, Capture(lab, up, "u0") as cap_u:
        res = lab.run(app.ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", SUB_IP, check=False)
        frames = cap_s.stop() + cap_u.stop(settle=0.0)
    assert res.returncode != 0, res.stdout
    assert [f.summary() for f in frames if f[Ether].src == brmac] == []
    # ARP requests for 100.64.0.10 were sent by the stack and dropped at the bridge's output.
    assert nft_counter(topo, "bridge", "host_drops") - before >= 2


def test_traffic_passes_in_both_roles(topo: Topo) -> None:
    lab, sub, up, app = topo.lab, topo.sub, topo.up, topo.app
    www = lab.path("www")
    www.mkdir()
    blob = os.urandom(4 << 20)
    (www / "blob").write_bytes(blob)
    lab.popen(up, "/usr/bin/python3", "-m", "http.server", "--bind", "::", "--directory",
              str(www), "8080", stdout=None)
    out = lab.path("got")

    def fetch(url: str) -> bool:
        res = lab.run(sub, "curl", "-sS", "-g", "--max-time", "10", "-o", str(out), url,
                      check=False)
        return res.returncode == 0

    wait_for(lambda: fetch(f"http://{UP_IP}:8080/blob"), timeout=10, what="http.server")
    for role in ("master", "backup", "master"):
        app.cli("vrrp", "set", role)
        assert app.show()["kernel_role"] == role
        for ns, dst in ((sub, UP_IP), (sub, UP_GUA), (up, SUB_IP), (up, SUB_GUA)):
            lab.run(ns, "ping", "-c", "2", "-i", "0.1", "-W", "1", dst)
        for url in (f"http://{UP_IP}:8080/blob", f"http://[{UP_GUA}]:8080/blob"):
            out.unlink(missing_ok=True)
            assert fetch(url), (role, url)
            assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(blob).digest()


def test_start_and_role_switches_emit_nothing_but_the_virtual_gateway(lab) -> None:
    """From the first moment: the bridge and its ports never speak (no IGMP, MLD, RS, STP).

    The appliance's ports stay down until `start` brings them up, as on a fresh boot. In
    master only the virtual gateway may send (ARP/ND, takeover announcements), from VMAC.
    """
    from conftest import BASE_CONF
    from scapy.layers.inet6 import ICMPv6ND_NA
    from scapy.layers.l2 import ARP

    sub, up = lab.ns("sub"), lab.ns("up")
    app = lab.appliance("app", BASE_CONF)
    lab.veth(sub, "s0", app.ns, "i0", up=False)
    lab.veth(up, "u0", app.ns, "o0", up=False)
    lab.run(sub, "ip", "link", "set", "s0", "up")
    lab.run(up, "ip", "link", "set", "u0", "up")
    smac, umac = mac_of(lab, sub, "s0"), mac_of(lab, up, "u0")
    with Capture(lab, sub, "s0") as cap_s, Capture(lab, up, "u0") as cap_u:
        app.cli("start")
        time.sleep(1.5)  # IGMP/MLD unsolicited reports repeat after about a second
        app.cli("vrrp", "set", "backup")
        app.cli("vrrp", "set", "master")
        time.sleep(0.5)
        frames = cap_s.stop() + cap_u.stop(settle=0.0)
    own = {mac_of(lab, app.ns, d) for d in ("i0", "o0", "skatbr0")}
    assert [f.summary() for f in frames if f[Ether].src in own] == []
    from_vmac = [f for f in frames if f[Ether].src == VMAC]
    assert all(ARP in f or ICMPv6ND_NA in f for f in from_vmac), [f.summary() for f in from_vmac]
    assert {f[Ether].src for f in frames} <= {smac, umac, VMAC}
    # The ports came up under the plugin: their IPv6 was off before they could speak.
    for dev in ("i0", "o0", "skatbr0"):
        assert lab.run(app.ns, "sysctl", "-n", f"net.ipv6.conf.{dev}.disable_ipv6").stdout == "1\n"
