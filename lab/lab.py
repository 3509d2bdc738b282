"""The live lab: two appliances with real keepalived in network namespaces.

    lab/run                       scripted tour: election, failover (kill -9, link down),
                                  failback; prints the failover times measured by a subscriber
    lab/run --advert 0.1          the same with VRRPv3 sub-second adverts
    lab/run --interactive         you trigger failovers yourself

The appliances are the subscribers' gateway (SKAT's L2 termination, bras_terminate_l2=1):
a border router and a host behind it sit on the uplink side. Across each failover the lab
measures what a subscriber feels: a ping to the host every 5 ms (its longest gap between
replies), a TCP stream from the host (its longest gap, and whether the connection
survived), and ARP requests to the gateway every 5 ms. VRRP's own bound for the gap is the
master-down interval, 3 x advert + skew; the lab prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from group import REPO, Group, Node, master_down_interval, master_window
from netlab import PYTHON, Lab, wait_for

HOST4 = "203.0.113.10"
STREAM = str(REPO / "lab" / "stream.py")


def say(text: str) -> None:
    print(text, flush=True)


def keepalived_word(n: Node) -> str:
    """keepalived's last state from its log, or 'dead' when its process is gone."""
    last = n.keepalived_state() or "-"
    if n.keepalived is None or n.keepalived.poll() is not None:
        return f"dead (last said {last})" if last != "-" else "not running"
    return last


def status(g: Group) -> None:
    for n in g.nodes:
        info = n.app.show()
        c = info["counters"]
        gw = info.get("gateway") or {}
        subs = gw.get("subscribers") or {}
        say(f"  {n.name}: role={info['role']:<7} keepalived={keepalived_word(n):<7} "
            f"arp_replies={c['arp_replies']:<5} nd_replies={c['nd_replies']:<5} "
            f"carried up/down={gw.get('counters', {}).get('forwarded_up', 0)}/"
            f"{gw.get('counters', {}).get('forwarded_down', 0)} "
            f"subscribers={subs.get('ipv4', 0)}+{subs.get('ipv6', 0)} "
            f"split_brain={info['split_brain']}")


def measured(g: Group, what: str, action, seconds: float, backup: Node) -> dict:
    """Run `action` while the subscriber pings the host, streams TCP from it and probes
    the gateway's ARP; report the gaps, the TCP connection's fate and who answered."""
    before = {n.name: n.app.show()["counters"]["arp_replies"] for n in g.nodes}
    w = g.watch(seconds)
    pinger = g.lab.popen(g.sub, PYTHON, STREAM, "ping", "--host", HOST4,
                         "--duration", str(seconds))
    tcp = g.lab.popen(g.sub, PYTHON, STREAM, "recv", "--host", HOST4,
                      "--duration", str(seconds))
    time.sleep(0.5)
    action()
    r = w.result()
    p = _json_of(pinger)
    t = _json_of(tcp)
    after = {n.name: n.app.show()["counters"]["arp_replies"] for n in g.nodes}
    answered = {k: after[k] - before[k] for k in before}
    mdi = master_down_interval(g.advert_int, backup.priority)
    ratio = p["max_gap_ms"] / 1000 / mdi
    say(f"  {what}: ping every 5 ms: longest gap {p['max_gap_ms']:.0f} ms = {ratio:.2f} x "
        f"master-down interval ({mdi * 1000:.0f} ms), {p['received']}/{p['sent']} replies")
    say(f"    TCP stream: longest gap {t['max_gap_ms']:.0f} ms, "
        f"{t['bytes'] / 1e6:.1f} MB, connection "
        f"{'SURVIVED' if t['alive'] else 'LOST: ' + str(t['error'])}")
    say(f"    ARP to the gateway: longest gap {r['max_gap_ms']:.0f} ms, {r['sent']} requests, "
        f"{r['replies']} replies (duplicates: {max(0, r['replies'] - r['sent'])}); "
        f"answered per appliance: {answered}")
    return {"what": what, "gap_ms": p["max_gap_ms"], "mdi_ms": mdi * 1000, "ratio": ratio,
            "tcp_gap_ms": t["max_gap_ms"], "tcp": "survived" if t["alive"] else "lost"}


def _json_of(proc) -> dict:
    out, _ = proc.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])


def tour(g: Group) -> list[dict]:
    a, b = g.nodes
    results = []
    mdi = master_down_interval(g.advert_int, b.priority)
    window = max(3.0, mdi * 2 + 1.5)

    say("\n== 1. Both appliances start as master (SKAT's default); keepalived elects one")
    t0 = time.monotonic()
    for n in g.nodes:
        g.start(n)
    m = g.wait_one_master(30)
    say(f"  exactly one master after {time.monotonic() - t0:.2f} s: {m}")
    for what, ip6 in (("ARP", False), ("ND", True)):
        r = g.watch(0.5, ip6=ip6).result()
        say(f"  the subscriber resolves the gateway by {what}: {r['sent']} requests, "
            f"{r['replies']} answers, from {sorted(r['by_mac'])}")
    status(g)

    say("\n== 2. Failover: kill -9 of the master's keepalived (a crash: no goodbye)")
    results.append(measured(g, "kill -9", lambda: g.kill_keepalived(a), window, b))
    g.wait_one_master(10)
    status(g)

    say("\n== 3. Failback: keepalived of A returns; A has the higher priority and preempts")
    results.append(measured(g, "failback", lambda: g.start_keepalived(a), window + 2, b))
    g.wait_one_master(10)
    status(g)

    say("\n== 4. Failover: the master's subscriber port goes down (track_interface -> FAULT)")
    results.append(measured(g, "link down", lambda: g.link(a, False), window + 2, b))
    g.wait_one_master(10)
    status(g)
    g.link(a, True)
    wait_for(lambda: g.masters() == ["a"], 20, 0.1, "a to preempt after its link returns")
    say("  link restored: a is fit again (the daemon's track file) and preempts")
    status(g)

    say("\n== 5. A backup appliance boots: SKAT starts it as master until keepalived speaks")
    for start_role in ("master", "backup"):
        g.stop(b)
        if start_role == "backup":
            b.app.write_conf(b.app.conf_path.read_text() + "vrrp_start_role=backup\n")
        window = master_window(g.role_timeline(b, lambda: g.start(b), 1.0))
        g.wait_one_master(10)
        say(f"  vrrp_start_role={start_role}: b was a second master for {window * 1000:.0f} ms")
        results.append({"what": f"boot as {start_role}: dual-master window",
                        "gap_ms": window * 1000, "mdi_ms": mdi * 1000, "ratio": window / mdi})
    return results


def interactive(g: Group) -> None:
    for n in g.nodes:
        g.start(n)
    g.wait_one_master(30)
    help_text = ("commands: s = status, k NAME = kill -9 keepalived, r NAME = restart "
                 "keepalived, d NAME = link down, u NAME = link up, q = quit")
    say(help_text)
    while True:
        status(g)
        try:
            line = input("lab> ").split()
        except EOFError:
            return
        if not line or line[0] == "s":
            continue
        if line[0] == "q":
            return
        if len(line) != 2 or line[0] not in "krdu":
            say(help_text)
            continue
        node = g.node(line[1])
        if line[0] == "k":
            g.kill_keepalived(node)
        elif line[0] == "r":
            g.start_keepalived(node)
        else:
            g.link(node, line[0] == "u")
        time.sleep(master_down_interval(g.advert_int, 100) + 0.3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--advert", type=float, default=1.0, help="advert interval, s (default 1)")
    ap.add_argument("--unicast", action="store_true", help="unicast peers instead of multicast")
    ap.add_argument("--interactive", action="store_true")
    a = ap.parse_args()
    with Lab("lab") as lab:
        g = Group(lab, 2, advert_int=a.advert, unicast=a.unicast, border=True)
        g.lab.popen(g.host, PYTHON, STREAM, "serve")
        say(f"lab: 2 appliances (a: priority {g.nodes[0].priority}, b: "
            f"{g.nodes[1].priority}), VRRPv3 advert {a.advert:g} s, "
            f"{'unicast' if a.unicast else 'multicast'}; namespaces {lab.tag}-*")
        if a.interactive:
            interactive(g)
            return 0
        results = tour(g)
    say("\n== Summary (failover as the subscriber sees it)")
    say("| event | ping gap ms | master-down interval ms | ratio | TCP gap ms | TCP |")
    say("|---|---:|---:|---:|---:|---|")
    for r in results:
        tcp = (f"{r['tcp_gap_ms']:.0f} | {r['tcp']}" if "tcp" in r else "- | -")
        say(f"| {r['what']} | {r['gap_ms']:.0f} | {r['mdi_ms']:.0f} | {r['ratio']:.2f} | "
            f"{tcp} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
