"""Benchmarks, each a ratio of two things measured side by side in one run.

    /usr/bin/python3 bench/bench.py [--quick]      (root; prints a Markdown table)

1. Gateway answer time seen by a subscriber: the in-kernel nft responder vs. the host
   stack answering for the same address on the bridge (what a "VIP on the bridge" setup does).
2. Bridged TCP throughput (iperf3) with the master and with the backup rule set, vs. the
   bare bridge with no plugin rules.
3. One role switch: `fdpi_cli vrrp set` (a process, as keepalived calls it) vs. the same rule
   set loaded in-process (library call), vs. `nft -f` of the identical script.
4. Memory: the supervising daemon's resident set (master, announcing, watching) vs. a bare
   python3 interpreter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import BASE_CONF, VGUA, VIP, build_topo  # noqa: E402
from netlab import PYTHON, Lab  # noqa: E402


def probe(lab: Lab, ns: str, *args: str) -> dict:
    out = lab.run(ns, PYTHON, str(REPO / "lab/probe.py"), *args, "--iface", "s0").stdout
    return json.loads(out)


def responder(lab: Lab, topo, count: int) -> list[tuple[str, float, float]]:
    rows = []
    nft_arp = probe(lab, topo.sub, "rtt", "--ip", VIP, "--count", str(count))
    nft_nd = probe(lab, topo.sub, "rtt", "--ip6", VGUA, "--count", str(count))
    # Baseline: no plugin rules, the gateway addresses on the appliance's bridge instead.
    topo.app.cli("stop")
    lab.run(topo.app.ns, "sysctl", "-qw", "net.ipv6.conf.skatbr0.disable_ipv6=0")
    lab.run(topo.app.ns, "ip", "addr", "add", f"{VIP}/24", "dev", "skatbr0")
    lab.run(topo.app.ns, "ip", "addr", "add", f"{VGUA}/64", "dev", "skatbr0", "nodad")
    host_arp = probe(lab, topo.sub, "rtt", "--ip", VIP, "--count", str(count))
    host_nd = probe(lab, topo.sub, "rtt", "--ip6", VGUA, "--count", str(count))
    lab.run(topo.app.ns, "ip", "addr", "flush", "dev", "skatbr0")
    lab.run(topo.app.ns, "sysctl", "-qw", "net.ipv6.conf.skatbr0.disable_ipv6=1")
    topo.app.cli("start")
    for what, a, b in (("ARP", nft_arp, host_arp), ("ND", nft_nd, host_nd)):
        assert a["lost"] == 0 and b["lost"] == 0, (a, b)
        rows.append((f"{what} answer, median us: nft responder / host stack",
                     a["median_us"], b["median_us"]))
        rows.append((f"{what} answer, p99 us: nft responder / host stack",
                     a["p99_us"], b["p99_us"]))
    return rows


def iperf(lab: Lab, topo, seconds: int) -> float:
    server = lab.popen(topo.up, "iperf3", "-s", "-1", "-B", "100.64.0.20")
    time.sleep(0.3)
    out = lab.run(topo.sub, "iperf3", "-c", "100.64.0.20", "-t", str(seconds), "-J",
                  timeout=seconds + 20).stdout
    server.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def throughput(lab: Lab, topo, seconds: int, rounds: int) -> list[tuple[str, float, float]]:
    # Interleaved rounds, medians: the machine's other load hits all three alike.
    runs: dict[str, list[float]] = {"master": [], "backup": [], "bare": []}
    for _ in range(rounds):
        topo.app.cli("vrrp", "set", "master")
        runs["master"].append(iperf(lab, topo, seconds))
        topo.app.cli("vrrp", "set", "backup")
        runs["backup"].append(iperf(lab, topo, seconds))
        topo.app.cli("stop")
        runs["bare"].append(iperf(lab, topo, seconds))
        topo.app.cli("start")
    med = {k: round(statistics.median(v), 2) for k, v in runs.items()}
    return [("TCP Gbit/s through the bridge: master rules / no rules", med["master"],
             med["bare"]),
            ("TCP Gbit/s through the bridge: backup rules / no rules", med["backup"],
             med["bare"])]


def switching(lab: Lab, topo, n: int) -> list[tuple[str, float, float]]:
    def timed(fn) -> float:
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            fn("backup" if i % 2 == 0 else "master")
            samples.append((time.perf_counter() - t0) * 1000)
        return round(statistics.median(samples), 1)

    cli = timed(lambda r: topo.app.cli("vrrp", "set", r))
    inproc = lab.run(topo.app.ns, PYTHON, "-c", f"""
import time, statistics
from skat_plugin import role
s = []
for i in range({n}):
    t0 = time.perf_counter(); role.set_role("backup" if i % 2 == 0 else "master")
    s.append((time.perf_counter() - t0) * 1000)
print(round(statistics.median(s), 1))
""", env=topo.app.env()).stdout
    script = lab.run(topo.app.ns, PYTHON, "-c", """
from skat_plugin import state, render
from skat_plugin.config import Config
st = state.load()
print(render.render(state.config_of(st), "backup", st["own_macs"]).script())
""", env=topo.app.env()).stdout
    path = lab.path("switch.nft")
    path.write_text(script)

    def nft_f(_role: str) -> None:
        lab.run(topo.app.ns, "nft", "-I", str(REPO / "nft"), "-f", str(path))

    raw = timed(nft_f)
    return [("role switch ms: fdpi_cli process / nft -f of the same script", cli, raw),
            ("role switch ms: in-process library call / nft -f of the same script",
             float(inproc), raw)]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def memory(lab: Lab, topo) -> list[tuple[str, float, float]]:
    env = topo.app.env()
    daemon = lab.popen(topo.app.ns, PYTHON, "-m", "skat_plugin", "daemon", "--metrics-file",
                       "", env=env)
    bare = lab.popen(topo.app.ns, PYTHON, "-c", "import time; time.sleep(60)")
    deadline = time.monotonic() + 10
    while not (topo.app.run_dir / "daemon.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2)  # a few split-brain polls, a refresh round, metrics
    # `ip netns exec` execs the command: the Popen pid is the process itself.
    row = ("resident memory MiB: daemon / bare python3", round(rss_kib(daemon.pid) / 1024, 1),
           round(rss_kib(bare.pid) / 1024, 1))
    for proc in (daemon, bare):
        proc.terminate()
        proc.wait(10)
    return [row]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples (CI smoke run)")
    a = ap.parse_args()
    count, seconds, rounds, n = (200, 1, 1, 10) if a.quick else (2000, 3, 5, 40)
    rows: list[tuple[str, float, float]] = []
    with Lab("bench") as lab:
        topo = build_topo(lab, BASE_CONF)
        rows += responder(lab, topo, count)
        rows += throughput(lab, topo, seconds, rounds)
        rows += switching(lab, topo, n)
        rows += memory(lab, topo)
    print("| measurement (A / B) | A | B | A/B |")
    print("|---|---:|---:|---:|")
    for what, x, y in rows:
        print(f"| {what} | {x} | {y} | {x / y:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
