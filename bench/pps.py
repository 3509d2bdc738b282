"""Packet rate: 64-byte frames a second through one appliance, counted at the receiver.

    /usr/bin/python3 bench/pps.py [--rounds 6] [--seconds 2.5] [--gro]   (root; or bench/run-pps)

    generator --veth-- appliance (i0 <-> o0: skatbr0, by fdpi_cli start) --veth-- receiver
    s0 (or u0)                                                                   u0 (or s0)

trafgen (netsniff-ng, TX_RING, one process on one CPU) sends one 60-byte frame (64 on a wire
with its FCS: Ethernet, IPv4, UDP, 18 bytes of payload) as fast as it can. The rate is read
from the receiving interface's own counter (rx_packets in /proc/PID/net/dev of a process in
the receiving namespace: the same counter `ip -s link` shows), never from the generator.

On veth everything happens on the generator's CPU: its sendmsg runs the appliance's ingress
hooks, the bridge or `fwd`, and the receiver's stack, one frame after the other. So the rate
is 1 / (the whole path's CPU time a frame), and a rule that costs more lowers it. That CPU
time is also read directly (the scheduler's runtime of trafgen and of that CPU's ksoftirqd,
per packet received): it does not depend on how much of the CPU the generator got.

The receivers drop every frame at their ingress (after the counter), and the appliance's
namespace has bridge-nf-call-{ip,ip6,arp}tables=0, as on a stock Debian kernel where
br_netfilter is not loaded (here it is built in, and on by default: case bare-brnf).
trafgen's TX_RING frames carry IP and UDP headers in page fragments, so every nft payload
load takes skb_copy_bits(); --gro turns GRO on at the appliance's ports, which pulls the
headers into the linear area as a NIC driver would.

Cases (the appliance is rebuilt for each visit; the cases rotate within each round, so the
machine's other load hits them alike):
  bare          the bridge alone (`fdpi_cli stop`), subscriber -> uplink: the reference
  bare-down     the same, uplink -> subscriber (is the path symmetric?)
  bare-brnf     the bare bridge with br_netfilter's hooks on (this kernel's default)
  master        vrrp_enable=1, master rule set (responders), no termination
  backup        the backup rule set (`fdpi_cli vrrp set backup`)
  term-up       bras_terminate_l2=1: frames to the virtual MAC, rewritten and `fwd` to o0
  term-up-ttl   the same with bras_transparency=0 (TTL decrement via a verdict map)
  term-down-N   uplink -> virtual MAC -> subscriber, N subscribers loaded in map sub4
  probe-X       the bare bridge plus one small table (PROBES): what one hook, one rule, one
                set or map lookup, one counter, one egress hook cost here
  NAME@old      with --old DIR: the case with the rule files of DIR (before/after, one run)

`pps.py _fill N IP MAC` is an internal step (run inside the appliance's namespace).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import BASE_CONF, VMAC  # noqa: E402  (the tests' appliance)
from machine import loadavg, machine  # noqa: E402
from netlab import PYTHON, Lab  # noqa: E402

SUB_IP = "100.64.0.10"       # the subscriber (receiver of term-down, source of term-up)
NET_IP = "203.0.113.7"       # somewhere on the Internet
GW_IP = "198.51.100.1"       # bras_gateway_ip
FILL_BATCH = 10_000


@dataclass(frozen=True)
class Case:
    name: str
    up: bool                  # subscriber -> uplink (else uplink -> subscriber)
    role: str | None          # None: no plugin rules (fdpi_cli stop)
    terminate: bool = False
    transparency: int = 1
    subscribers: int = 0
    br_netfilter: bool = False  # bridged IPv4/IPv6/ARP through the inet hooks (sysctls)
    probe: str = ""           # no plugin: the bare bridge plus this nft table (PROBES)
    nft_dir: str = ""         # the plugin's rule files from here (--old): before/after

    @property
    def counter(self) -> str | None:
        if not self.terminate:
            return None
        return "forwarded_up" if self.up else "forwarded_down"


# What one thing costs on the subscriber port's ingress (and the uplink port's egress, where
# the backup guard sits): the bare bridge plus one small table. Bridged frames to u0's MAC;
# no rule matches, so each pays the lookup or the compare and goes on.
_HOOK = 'table netdev probe {{\n{objs}\nchain c {{ type filter hook {hook} device "{dev}" ' \
    'priority 0; policy accept; {rule} }}\n}}'
PROBES = {
    "hook": _HOOK.format(objs="", hook="ingress", dev="i0", rule=""),
    "rule": _HOOK.format(objs="", hook="ingress", dev="i0",
                         rule="ether daddr 02:00:00:00:00:99 drop;"),
    "set": _HOOK.format(objs="set s { type ipv4_addr; elements = { 192.0.2.1 }; }",
                        hook="ingress", dev="i0", rule="ip saddr @s drop;"),
    "map": _HOOK.format(objs="map m { typeof ip saddr : meta mark; elements = { 192.0.2.1 : 1 }; }",
                        hook="ingress", dev="i0", rule="meta mark set ip saddr map @m;"),
    "meta3": _HOOK.format(objs="chain x { }", hook="ingress", dev="i0",
                          rule="meta protocol ip6 jump x; meta protocol arp jump x; "
                               "meta protocol 8021q jump x;"),
    "counter": _HOOK.format(objs="counter n { }", hook="ingress", dev="i0",
                            rule="counter name n;"),
    "vmap": _HOOK.format(objs="chain x { }", hook="ingress", dev="i0",
                         rule="meta protocol vmap { ip6 : jump x, arp : jump x };"),
    "egress": _HOOK.format(objs="", hook="egress", dev="o0", rule=""),
    "egress-2rules": _HOOK.format(objs="", hook="egress", dev="o0",
                                  rule="meta mark 0x5ca7 drop; ether saddr "
                                       "{ 02:00:00:00:00:98, 02:00:00:00:00:99 } drop;"),
}

CASES = [
    Case("bare", True, None),
    Case("bare-down", False, None),
    Case("bare-brnf", True, None, br_netfilter=True),
    Case("master", True, "master"),
    Case("backup", True, "backup"),
    Case("term-up", True, "master", terminate=True),
    Case("term-up-ttl", True, "master", terminate=True, transparency=0),
    Case("term-down-1", False, "master", terminate=True, subscribers=1),
    Case("term-down-1k", False, "master", terminate=True, subscribers=1_000),
    Case("term-down-100k", False, "master", terminate=True, subscribers=100_000),
    *(Case(f"probe-{name}", True, None, probe=name) for name in PROBES),
]


def with_old(cases: list[Case], directory: str) -> list[Case]:
    """Each case with the plugin's rules also as `NAME@old`: the same case with the rule
    files of `directory` (e.g. `git archive OLD nft | tar -x -C /tmp/old`), side by side."""
    out = []
    for c in cases:
        out.append(c)
        if c.role is not None:
            out.append(Case(f"{c.name}@old", c.up, c.role, c.terminate, c.transparency,
                            c.subscribers, c.br_netfilter, nft_dir=directory))
    return out


# --- inside the appliance's namespace ---------------------------------------------------------
def fill(n: int, target_ip: str, target_mac: str) -> None:
    """Load n subscribers into sub4: the target and n-1 others, in batches, one context each."""
    from nftables import Nftables

    elems = [f"{target_ip} : {target_mac}"]
    base = int(ipaddress.IPv4Address("100.64.1.0"))
    for k in range(n - 1):
        m = k.to_bytes(4, "big")
        elems.append(f"{ipaddress.IPv4Address(base + k)} : 02:5b:{m[0]:02x}:{m[1]:02x}:"
                     f"{m[2]:02x}:{m[3]:02x}")
    for i in range(0, len(elems), FILL_BATCH):
        nft = Nftables()  # a fresh context per command: its cache stays small
        cmd = ("add element netdev skat_plugin_gateway sub4 { "
               + ", ".join(elems[i:i + FILL_BATCH]) + " }")
        rc, _, err = nft.cmd(cmd)
        if rc != 0:
            raise SystemExit(f"add element failed at {i}: {err.strip()}")


# --- the bench --------------------------------------------------------------------------------
def mac_of(lab: Lab, ns: str, dev: str) -> str:
    out = lab.run(ns, "ip", "-j", "link", "show", dev).stdout
    return json.loads(out)[0]["address"]


def rx_packets(pid: int, dev: str) -> int:
    """rx_packets of dev in the namespace of process pid (/proc/PID/net/dev is per netns)."""
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == dev:
                return int(rest.split()[1])
    raise AssertionError(f"{dev} not in /proc/{pid}/net/dev")


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def runtime(pids: list[int]) -> int:
    """CPU time the tasks have run, ns (the scheduler's sum_exec_runtime)."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{p}/schedstat").read_text().split()[0])
    return total


def busy(c: list[int]) -> float:
    return (sum(c) - c[3] - c[4]) / max(1, sum(c))


def cpu_times() -> list[list[int]]:
    """Per CPU: user nice system idle iowait irq softirq steal (clock ticks)."""
    with open("/proc/stat") as f:
        return [[int(x) for x in line.split()[1:9]] for line in f
                if line.startswith("cpu") and line[3].isdigit()]


def trafgen_cfg(da: str, sa: str, src: str, dst: str) -> str:
    # 14 + 20 + 8 + 18 = 60 bytes; trafgen fills in the IPv4 and UDP checksums.
    return (f"{{ eth(da={da}, sa={sa}, type=0x0800), ipv4(saddr={src}, daddr={dst}, ttl=64), "
            f"udp(sp=4000, dp=9), fill(0x00, 18) }}\n")


class Bench:
    def __init__(self, lab: Lab, seconds: float, gro: bool) -> None:
        self.lab = lab
        self.seconds = seconds
        self.sub = lab.ns("sub")
        self.upl = lab.ns("up")
        self.app = lab.appliance("app", BASE_CONF)
        lab.veth(self.sub, "s0", self.app.ns, "i0")
        lab.veth(self.upl, "u0", self.app.ns, "o0")
        for ns, dev in ((self.sub, "s0"), (self.upl, "u0")):
            lab.run(ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            # The receiver is a sink: the frame is counted (rx_packets) as it enters the
            # interface, then dropped at once, so that its cost is small and the same in
            # every case, and the differences between cases show undiluted.
            lab.run(ns, "nft", f"table netdev sink {{ chain in {{ type filter hook ingress "
                    f"device {dev} priority 0; policy drop; }}; }}")
        self.s0_mac = mac_of(lab, self.sub, "s0")
        self.u0_mac = mac_of(lab, self.upl, "u0")
        # A process in each end namespace whose /proc/PID/net/dev shows that namespace.
        self.anchor = {ns: lab.popen(ns, "sleep", "infinity").pid for ns in (self.sub, self.upl)}
        self.cfg = {}
        for up in (True, False):
            for to_vmac in (True, False):
                if up:
                    text = trafgen_cfg(VMAC if to_vmac else self.u0_mac, self.s0_mac, SUB_IP,
                                       NET_IP)
                else:
                    text = trafgen_cfg(VMAC if to_vmac else self.s0_mac, self.u0_mac, NET_IP,
                                       SUB_IP)
                path = lab.path(f"gen-{'up' if up else 'down'}-{'vmac' if to_vmac else 'mac'}.cfg")
                path.write_text(text)
                self.cfg[up, to_vmac] = path
        if gro:
            for dev in ("i0", "o0"):
                lab.run(self.app.ns, "ethtool", "-K", dev, "gro", "on")
        self.app.cli("start")
        self.filled: set[int] = set()

    def conf(self, case: Case) -> str:
        text = BASE_CONF
        if case.terminate:
            text += (f"bras_terminate_l2=1\nbras_gateway_ip={GW_IP}\n"
                     f"bras_gateway_mac={self.u0_mac}\nbras_transparency={case.transparency}\n")
        return text

    def prepare(self, case: Case) -> None:
        app = self.app
        on = int(case.br_netfilter)
        self.lab.run(app.ns, "sysctl", "-qw", f"net.bridge.bridge-nf-call-iptables={on}",
                     f"net.bridge.bridge-nf-call-ip6tables={on}",
                     f"net.bridge.bridge-nf-call-arptables={on}")
        app.cli("stop")
        if "netdev probe" in self.lab.run(app.ns, "nft", "list", "tables").stdout:
            self.lab.run(app.ns, "nft", "delete", "table", "netdev", "probe")
        if case.nft_dir:
            os.environ["SKAT_NFT_DIR"] = case.nft_dir  # app.cli's environment
        else:
            os.environ.pop("SKAT_NFT_DIR", None)
        if case.role is None:  # bare means bare: no table of the plugin's left behind
            left = self.lab.run(app.ns, "nft", "list", "tables").stdout.strip()
            assert not left, f"after fdpi_cli stop: {left}"
            if case.probe:
                path = self.lab.path("probe.nft")
                path.write_text(PROBES[case.probe] + "\n")
                self.lab.run(app.ns, "nft", "-f", str(path))
        else:
            app.write_conf(self.conf(case))
            app.cli("start")
            app.cli("vrrp", "set", case.role)
        # The bridge knows both ends (static entries survive stop/start: the bridge stays).
        for mac, port in ((self.u0_mac, "o0"), (self.s0_mac, "i0")):
            self.lab.run(app.ns, "bridge", "fdb", "replace", mac, "dev", port, "master",
                         "static")
        if case.subscribers:
            self.lab.run(app.ns, PYTHON, str(Path(__file__).resolve()), "_fill",
                         str(case.subscribers), SUB_IP, self.s0_mac, timeout=120)
            if case.subscribers not in self.filled:  # once per size: did they all arrive?
                out = self.lab.run(app.ns, "nft", "-j", "list", "map", "netdev",
                                   "skat_plugin_gateway", "sub4", timeout=120).stdout
                got = [len(o["map"].get("elem", [])) for o in json.loads(out)["nftables"]
                       if "map" in o]
                assert got == [case.subscribers], (case.name, got)
                self.filled.add(case.subscribers)

    def counter(self, name: str) -> int:
        out = self.lab.run(self.app.ns, "nft", "-j", "list", "counter", "netdev",
                           "skat_plugin_gateway", name).stdout
        return next(o["counter"]["packets"] for o in json.loads(out)["nftables"]
                    if "counter" in o)

    def measure(self, case: Case) -> dict:
        gen_ns, gen_dev = (self.sub, "s0") if case.up else (self.upl, "u0")
        rx_ns, rx_dev = (self.upl, "u0") if case.up else (self.sub, "s0")
        pid = self.anchor[rx_ns]
        first = rx_packets(pid, rx_dev)
        # --cpus 1: one worker process, which trafgen pins to CPU 0 itself; --prio-high
        # (nice -20) keeps the machine's other work off that CPU. --no-sock-mem: this
        # container may not raise the socket memory sysctls. Qdisc bypass is the default.
        log = self.lab.path("trafgen.log")
        with open(log, "w") as out:
            gen = self.lab.popen(gen_ns, "trafgen", "--dev", gen_dev, "--conf",
                                 str(self.cfg[case.up, case.terminate]), "--cpus", "1",
                                 "--prio-high", "--no-sock-mem", "--no-cpu-stats",
                                 "--notouch-irq", stdout=out.fileno())
        try:
            time.sleep(0.5)  # ring set up, rate settled
            if gen.poll() is not None:
                raise AssertionError(f"trafgen exited with {gen.returncode}: "
                                     f"{log.read_text()[-2000:]}")
            workers = children(gen.pid)
            cpus = {c for w in workers for c in os.sched_getaffinity(w)}
            # Everything a frame costs runs on the generator's CPU: trafgen's own time
            # includes the softirqs run at its local_bh_enable (no IRQ time accounting
            # here); what spills over runs in that CPU's ksoftirqd.
            tasks = [gen.pid, *workers, *self.ksoftirqd(cpus)]
            c0, s0, r0, t0 = cpu_times(), runtime(tasks), rx_packets(pid, rx_dev), \
                time.perf_counter()
            time.sleep(self.seconds)
            c1, s1, r1, t1 = cpu_times(), runtime(tasks), rx_packets(pid, rx_dev), \
                time.perf_counter()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gen.pid, signal.SIGINT)
            try:
                gen.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(gen.pid, signal.SIGKILL)
                gen.wait(5)
        time.sleep(0.05)
        total = rx_packets(pid, rx_dev) - first
        pkts = r1 - r0
        d = [[b - a for a, b in zip(x, y, strict=True)] for x, y in zip(c0, c1, strict=True)]
        other = [busy(c) for i, c in enumerate(d) if i not in cpus]
        res = {"pps": pkts / (t1 - t0), "ns_pkt": (s1 - s0) / max(1, pkts),
               "busy_gen": max(busy(d[i]) for i in cpus),
               "busy_other": max(other, default=0.0), "total": total, "cpus": cpus}
        if case.counter:
            res["gw_share"] = self.counter(case.counter) / max(1, total)
        return res

    @staticmethod
    def ksoftirqd(cpus: set[int]) -> list[int]:
        names = {f"ksoftirqd/{c}" for c in cpus}
        found = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError):
                    if (d / "comm").read_text().strip() in names:
                        found.append(int(d.name))
        return found


def pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def quartiles(v: list[float]) -> tuple[float, float]:
    if len(v) < 4:
        return min(v), max(v)
    q = statistics.quantiles(v, n=4)
    return q[0], q[2]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_fill":
        fill(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=2.5, help="measuring window per visit")
    ap.add_argument("--cases", default=",".join(c.name for c in CASES),
                    help="comma-separated subset (bare is always measured)")
    ap.add_argument("--gro", action="store_true",
                    help="GRO on the appliance's ports, as on a NIC (headers in the linear area)")
    ap.add_argument("--old", metavar="DIR", default="",
                    help="also run each plugin case with the rule files of DIR (NAME@old)")
    a = ap.parse_args()
    wanted = set(a.cases.split(",")) | {"bare"}
    cases = [c for c in CASES if c.name in wanted]
    if a.old:
        cases = with_old(cases, a.old)
    print(f"command: /usr/bin/python3 bench/pps.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {machine()}; load before: {loadavg()}", flush=True)
    runs: dict[str, list[dict]] = {c.name: [] for c in cases}
    started = time.monotonic()
    with Lab("pps") as lab:
        bench = Bench(lab, a.seconds, a.gro)
        for r in range(a.rounds):
            k = r % len(cases)
            for case in cases[k:] + cases[:k]:
                bench.prepare(case)
                res = bench.measure(case)
                runs[case.name].append(res)
                print(f"  round {r + 1} {case.name:15} {res['pps'] / 1e3:8.1f} kpps "
                      f"{res['ns_pkt']:6.0f} ns/pkt "
                      f"(other CPU busy {pct(res['busy_other'])})", file=sys.stderr, flush=True)
    bare = [x["pps"] for x in runs["bare"]]
    bare_med = statistics.median(bare)
    bare_ns = statistics.median(x["ns_pkt"] for x in runs["bare"])
    every = [x for rs in runs.values() for x in rs]
    gen_cpus = sorted({c for x in every for c in x["cpus"]})
    print(f"rounds {a.rounds} x {a.seconds:g} s per case, trafgen on CPU {gen_cpus} "
          f"(busy >= {pct(min(x['busy_gen'] for x in every))} in every window), "
          f"{time.monotonic() - started:.0f} s in all; load after: {loadavg()}")
    print()
    print("| case | median kpps | spread min-max | IQR | vs bare | per-round vs bare | "
          "CPU ns/pkt | its spread | ns/pkt vs bare | other CPU busy | gateway counter / rx |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        rs = runs[case.name]
        pps = [x["pps"] for x in rs]
        med = statistics.median(pps)
        q1, q3 = quartiles(pps)
        ratios = [x / b for x, b in zip(pps, bare, strict=True)]
        nss = [x["ns_pkt"] for x in rs]
        ns = statistics.median(nss)
        share = f"{min(x['gw_share'] for x in rs):.3f}" if case.counter else "-"
        print(f"| {case.name} | {med / 1e3:.0f} | {pct((max(pps) - min(pps)) / med)} | "
              f"{pct((q3 - q1) / med)} | {med / bare_med:.2f} | "
              f"{min(ratios):.2f}-{max(ratios):.2f} | {ns:.0f} | "
              f"{pct((max(nss) - min(nss)) / ns)} | {ns / bare_ns:.2f} | "
              f"{pct(statistics.median(x['busy_other'] for x in rs))} | {share} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
