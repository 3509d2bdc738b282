"""The day-2 soak: a VRRP group of appliances living through an operator's routine week.

    lab/soak --minutes 60                     a random sequence of actions for an hour
    lab/soak --actions 40 --seed 7            forty actions, repeatable: same seed, same sequence
    lab/soak --skip daemon-restart,force      leave out the kinds a known issue breaks
    lab/soak --kinds link-flap@master         only these (KIND, or KIND@master/@backup)
    lab/soak --list                           the kinds and what each one expects

Two (--size 3: three) appliances in network namespaces, as lab/lab.py builds them: real
keepalived, `fdpi_cli start` and `fdpi_cli daemon` on each, SKAT's L2 termination
(bras_terminate_l2=1) with a border router and a host behind it. While the soak runs, a
subscriber pings the host every 5 ms, reads a TCP stream from it, and sends an ARP request
for the gateway every 5 ms, each with its own sender address; a tap on the subscribers'
switch counts which switch ports (so which appliances) answered each request. Nothing of
that reads the plugin's state files.

Each step picks an action kind and a target (the master or a backup) from the seed, runs
it, waits until the highest-priority appliance answers alone again (preempt is on, and
every action leaves the appliances whole), and checks the invariants over the window:

  - exactly one appliance answers the gateway (by the tap): no request answered by two,
    none unanswered once settled; two answering is dual-master time, which must be 0
    (a VRRP partition and vrrp_enable=0 on a backup make two masters by their nature or by
    the operator's order: their time is reported apart, as split-brain and ordered time);
  - keepalived's state and the kernel's role (the gateway table awake or dormant) agree on
    every appliance, or differ for less than 2 x the master-down interval;
  - an action that should not hand over loses no ping and keeps the TCP stream; one that
    hands over (or may) brings the ping back within 1.0 x the master-down interval; the TCP
    connection is never reset;
  - no traceback in a daemon's log; the daemons' RSS flat (summary).

A violation prints the seed and the step and exits 1 (--keep-going: goes on, exits 1 at the
end). The summary gives the actions per kind, handovers, the longest ping gap per kind
against the master-down interval, dual-master and no-gateway time, and RSS first/last.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VIP = "100.64.0.1"
HOST4 = "203.0.113.10"
PORT = 5001
INTERVAL = 0.005  # ping and ARP probes, s
RSS_WARMUP = 120.0  # s of a daemon's life before its RSS counts (imports, caches: ~61 MB)
IDS, CLOSE = 64, 40  # ARP requests told apart by their sender address; closed 40 later


def say(text: str) -> None:
    print(text, flush=True)


# == helpers that run inside the subscriber's namespace ===========================================

def arp_tap(iface: str, sw_netns: str, ports: list[str], interval: float) -> None:
    """Send an ARP request for the gateway every `interval` from `iface` (this namespace)
    and watch the switch's ports (in `sw_netns`): print a JSON line whenever the set of ports
    that answered one request changes, and a heartbeat every second."""
    from probe import Prober

    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    other = os.open(f"/run/netns/{sw_netns}", os.O_RDONLY)
    if libc.setns(other, 0x40000000) != 0:  # CLONE_NEWNET: the tap's socket lives there
        raise OSError(ctypes.get_errno(), "setns to the switch")
    # ETH_P_ALL: a bridge port's frames reach only the taps for every protocol (the bridge
    # takes them before any per-protocol socket); a BPF filter keeps ARP alone.
    tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    arp_only = [(0x28, 0, 0, 12), (0x15, 0, 1, 0x0806), (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]
    prog = b"".join(struct.pack("HBBI", *ins) for ins in arp_only)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", len(arp_only), ctypes.addressof(buf))
    tap.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
    tap.setblocking(False)
    if libc.setns(own, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns back")
    tx = Prober(iface, VIP, None, None)
    # Each request carries its own sender address (100.64.0.128-191, one per request in
    # turn): the answer's target address names the request it answers, so a late answer
    # is never taken for an answer to the next request.
    ids = [socket.inet_aton(f"100.64.0.{128 + i}") for i in range(IDS)]
    frames = [tx._arp_request(spa) for spa in ids]
    by_spa = {spa: i for i, spa in enumerate(ids)}
    vip = socket.inet_aton(VIP)
    wanted = set(ports)
    last: list[str] | None = None
    pending: dict[int, tuple[float, set[str]]] = {}  # id -> (sent at, ports that answered)
    sent = 0
    beat = time.time()
    next_t = time.time()
    while True:
        now = time.time()
        if now >= next_t:
            i = sent % IDS
            # A request's answers are counted CLOSE requests later (0.2 s at 5 ms).
            done = (sent - CLOSE) % IDS
            if sent >= CLOSE and done in pending:
                t, answered = pending.pop(done)
                who = sorted(answered)
                if who != last:
                    print(json.dumps({"t": t, "who": who}), flush=True)
                    last = who
            tx.sock.send(frames[i])
            pending[i] = (time.time(), set())
            sent += 1
            next_t += interval
            if next_t < now:
                next_t = now + interval
            if now - beat >= 1.0:
                print(json.dumps({"t": now, "hb": sent}), flush=True)
                beat = now
        if not select.select([tap], [], [], max(0.0, next_t - time.time()))[0]:
            continue
        while True:
            try:
                f, addr = tap.recvfrom(2048)
            except BlockingIOError:
                break
            # An answer to one of our requests, entering the switch from an appliance's
            # port (not the copy leaving towards the subscriber: PACKET_OUTGOING).
            if (addr[0] in wanted and addr[2] != socket.PACKET_OUTGOING and len(f) >= 42
                    and f[20:22] == b"\x00\x02" and f[28:32] == vip
                    and (i := by_spa.get(f[38:42])) is not None and i in pending):
                pending[i][1].add(addr[0])


def tcp_watch(host: str, port: int) -> None:
    """Read the host's stream; print every gap over 20 ms and every loss of the connection
    (then connect again)."""
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=5)
        except OSError as e:
            print(json.dumps({"t": time.time(), "error": f"connect: {e}"}), flush=True)
            time.sleep(0.5)
            continue
        print(json.dumps({"t": time.time(), "connected": True}), flush=True)
        sock.settimeout(0.5)
        last = time.time()
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                print(json.dumps({"t": time.time(), "error": str(e)}), flush=True)
                break
            now = time.time()
            if not data:
                print(json.dumps({"t": now, "error": "closed by the peer"}), flush=True)
                break
            if now - last > 0.02:
                print(json.dumps({"t": now, "gap_ms": round((now - last) * 1000, 1)}),
                      flush=True)
            last = now
        sock.close()


# == the observers (threads of the soak) ==========================================================

class Reader(threading.Thread):
    """Reads a helper's output line by line into `handle`."""

    def __init__(self, proc: subprocess.Popen, handle: Callable[[str], None]) -> None:
        super().__init__(daemon=True)
        self.proc, self.handle = proc, handle

    def run(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError, IndexError, KeyError):
                self.handle(line)


class Wire:
    """What the subscriber sees: who answers the gateway, ping replies, the TCP stream."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.who: list[tuple[float, tuple[str, ...]]] = []
        self.heartbeat = 0.0
        self.pings: list[tuple[float, int]] = []
        self.dups: list[float] = []
        self.tcp_gaps: list[tuple[float, float]] = []
        self.tcp_errors: list[tuple[float, str]] = []
        self._seq_base = 0
        self._last_seq = -1

    def on_tap(self, line: str) -> None:
        d = json.loads(line)
        with self.lock:
            if "hb" in d:
                self.heartbeat = d["t"]
            else:
                self.who.append((d["t"], tuple(d["who"])))

    def on_ping(self, line: str) -> None:
        m = re.match(r"\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)", line)
        if not m:
            return
        t, seq = float(m[1]), int(m[2])
        with self.lock:
            if "DUP!" in line:
                self.dups.append(t)
                return
            if seq + self._seq_base < self._last_seq - 30000:  # icmp_seq wrapped at 65536
                self._seq_base += 65536
            seq += self._seq_base
            self._last_seq = max(self._last_seq, seq)
            self.pings.append((t, seq))

    def on_tcp(self, line: str) -> None:
        d = json.loads(line)
        with self.lock:
            if "gap_ms" in d:
                self.tcp_gaps.append((d["t"], d["gap_ms"]))
            elif "error" in d:
                self.tcp_errors.append((d["t"], d["error"]))

    # -- questions over a window --------------------------------------------------------------
    def answering(self, t0: float, t1: float) -> dict[tuple[str, ...], float]:
        """Seconds in [t0, t1] that each set of answering ports held."""
        with self.lock:
            who = list(self.who)
        out: dict[tuple[str, ...], float] = {}
        for i, (t, w) in enumerate(who):
            end = who[i + 1][0] if i + 1 < len(who) else t1
            a, b = max(t, t0), min(end, t1)
            if b > a:
                out[w] = out.get(w, 0.0) + b - a
        return out

    def now_answering(self) -> tuple[str, ...] | None:
        with self.lock:
            return self.who[-1][1] if self.who else None

    def since(self) -> float:
        with self.lock:
            return self.who[-1][0] if self.who else 0.0

    def ping_window(self, t0: float, t1: float) -> tuple[float, int]:
        """(longest gap between replies across [t0, t1] in s, pings lost in it)."""
        with self.lock:
            pings = list(self.pings)
        before = [p for p in pings if p[0] < t0][-1:]
        inside = [p for p in pings if t0 <= p[0] <= t1]
        after = [p for p in pings if p[0] > t1][:1]
        seq = before + inside + after
        if len(seq) < 2:
            return t1 - t0, 0
        gap = max(b[0] - a[0] for a, b in itertools.pairwise(seq))
        got = {s for _, s in seq}
        lost = (seq[-1][1] - seq[0][1] + 1) - len(got)
        return gap, lost


@dataclass
class Sample:
    t: float
    kernel: dict[str, str]       # name -> master/backup/none (the gateway table's state)
    keepalived: dict[str, str]   # name -> MASTER/BACKUP/FAULT/dead/-


@dataclass
class Episode:
    """A node whose kernel role differs from keepalived's word, since `start`."""
    start: float
    reported: bool = False


# == the soak ======================================================================================

KINDS: dict[str, str] = {
    "daemon-restart": "SIGTERM to the daemon, start it again: no handover, no packet lost",
    "daemon-kill": "kill -9 of the daemon, start again 2 s later (RestartSec=2s): on the "
                   "master it may hand over (gap <= master-down interval), else no packet lost",
    "keepalived-restart": "SIGTERM to keepalived, start again: on the master two handovers "
                          "(out and preempt back), each gap <= master-down interval",
    "keepalived-kill": "kill -9 of keepalived, start again 2 s later: on the master a "
                       "failover and a failback, each gap <= master-down interval",
    "reload-changed": "fdpi_cli reload after a harmless key changed: exit 0, no packet lost",
    "reload-broken": "fdpi_cli reload of a broken file: exit non-zero, nothing changes",
    "vrrp-enable": "vrrp_enable=0 + reload, then vrrp_enable=1 + reload: ends as it began "
                   "(on a backup the 0 makes a second master by order: reported apart)",
    "force": "fdpi_cli vrrp set backup --force on the master: refused (nothing changes) or a "
             "handover through keepalived (gap <= master-down interval); never 0 or 2 masters",
    "link-flap": "a port down for 0.5-3 s and up: the master hands over and back (gap <= "
                 "master-down interval), a backup's flap loses nothing",
    "nft-flush": "nft flush ruleset in an appliance: the daemon repairs; the master's gap <= "
                 "master-down interval, a backup loses nothing",
    "partition": "VRRP (protocol 112) blocked on the VRRP switch for 2-5 s, then healed: "
                 "split brain while it lasts (reported apart), one master after",
}


@dataclass
class Step:
    n: int
    kind: str
    target: str
    role: str            # the target's role when picked
    t0: float = 0.0
    t1: float = 0.0
    expect: str = "quiet"  # quiet | handover | either
    note: str = ""
    gap: float = 0.0
    lost: int = 0
    handover: bool = False
    dual: float = 0.0          # s two appliances answered
    excused_dual: float = 0.0  # of which in a partition or an ordered vrrp_enable=0
    none: float = 0.0          # s nobody answered
    tcp_gap: float = 0.0
    violations: list[str] = field(default_factory=list)


class Violation(Exception):
    pass


class Soak:
    def __init__(self, g, seed: int, kinds: list[tuple[str, str]], mdi: float,
                 logs: Path | None = None) -> None:
        self.logs = logs
        self.last_rss = 0.0
        self.preferred = max(g.nodes, key=lambda n: n.priority).name
        self.g = g
        self.lab = g.lab
        self.seed = seed
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.mdi = mdi
        self.bound = 2 * mdi  # keepalived vs kernel may differ this long
        self.wire = Wire()
        self.port_of = {n.name: f"p{i + 1}" for i, n in enumerate(g.nodes)}
        self.node_of = {v: k for k, v in self.port_of.items()}
        self.samples: list[Sample] = []
        self.episodes: dict[str, Episode] = {}
        self.excused: set[str] = set()     # nodes under vrrp_enable=0 (the operator's order)
        self.split = False                 # a partition is on
        self.ordered: list[tuple[float, float]] = []   # windows of ordered second masters
        self.splits: list[tuple[float, float]] = []    # partition windows
        self.rss: dict[int, list[tuple[str, float, int]]] = {}  # pid -> [(node, t, kB)]
        self.log_seen: dict[str, int] = {}
        self.steps: list[Step] = []
        self.current: Step | None = None
        self.pending: list[str] = []       # violations found by the monitor thread
        self.stop = threading.Event()
        self.monitor = threading.Thread(target=self._monitor, daemon=True)

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        from netlab import PYTHON

        g, lab = self.g, self.lab
        me = str(Path(__file__).resolve())
        lab.popen(g.host, PYTHON, str(Path(me).parent / "stream.py"), "serve",
                  "--port", str(PORT))
        for n in g.nodes:
            g.start(n)
        g.wait_one_master(60)
        ports = ",".join(self.port_of.values())
        tap = lab.popen(g.sub, PYTHON, me, "_tap", "--sw", g.sw, "--ports", ports)
        ping = lab.popen(g.sub, "stdbuf", "-oL", "ping", "-D", "-n", "-i", str(INTERVAL),
                         HOST4)
        time.sleep(0.5)
        tcp = lab.popen(g.sub, PYTHON, me, "_tcp", "--host", HOST4, "--port", str(PORT))
        for proc, fn in ((tap, self.wire.on_tap), (ping, self.wire.on_ping),
                         (tcp, self.wire.on_tcp)):
            Reader(proc, fn).start()
        self.monitor.start()
        self.settle(60, "the group at start")
        time.sleep(1.0)

    # -- what the kernel and keepalived say ----------------------------------------------------
    def kernel_role(self, n) -> str:
        r = self.lab.run(n.app.ns, "nft", "list", "tables", check=False)
        m = re.search(r"^table netdev skat_plugin_gateway(.*)$", r.stdout, re.M)
        if not m:
            return "none"
        if "dormant" in m[1]:
            return "backup"
        # `list tables` prints no flags in nft 1.0.6: ask the table itself.
        r = self.lab.run(n.app.ns, "nft", "list", "table", "netdev", "skat_plugin_gateway",
                         check=False)
        return "backup" if "flags dormant" in r.stdout else "master"

    @staticmethod
    def ka_word(n) -> str:
        if n.keepalived is None or n.keepalived.poll() is not None:
            return "dead"
        return n.keepalived_state() or "-"

    def _monitor(self) -> None:
        while not self.stop.is_set():
            try:
                self._sample()
            except Exception as e:  # the soak's own fault: say so, never stop watching
                self.pending.append(f"the soak's monitor failed: {e!r}")
            self.stop.wait(0.25)

    def _sample(self) -> None:
        t = time.time()
        s = Sample(t, {n.name: self.kernel_role(n) for n in self.g.nodes},
                   {n.name: self.ka_word(n) for n in self.g.nodes})
        self.samples.append(s)
        for name, kr in s.kernel.items():
            ka = s.keepalived[name]
            want = "master" if ka == "MASTER" else "backup"
            if kr == want or name in self.excused or ka == "-":
                self.episodes.pop(name, None)
                continue
            ep = self.episodes.setdefault(name, Episode(t))
            if t - ep.start > self.bound and not ep.reported:
                ep.reported = True
                self.pending.append(f"{name}: kernel role {kr} but keepalived {ka} for "
                                    f"over {self.bound:.1f} s (2 x master-down interval)")
        if t - self.last_rss > 2.0:
            self.last_rss = t
            for n in self.g.nodes:
                pid = n.daemon.pid if n.daemon is not None and n.daemon.poll() is None \
                    else None
                with contextlib.suppress(OSError, ValueError, IndexError, TypeError):
                    kb = int(re.search(r"VmRSS:\s+(\d+)",
                                       Path(f"/proc/{pid}/status").read_text())[1])
                    self.rss.setdefault(pid, []).append((n.name, t, kb))

    # -- settling and checking -----------------------------------------------------------------
    def masters_on_wire(self) -> tuple[str, ...] | None:
        who = self.wire.now_answering()
        return None if who is None else tuple(self.node_of[p] for p in who)

    def settled(self) -> bool:
        """One appliance answers (for 0.5 s now), every kernel agrees with keepalived, and
        the one is the highest priority: every action ends with every appliance whole, and
        with preempt on the group must come back to it (else a late preempt would fall into
        the next step)."""
        who = self.wire.now_answering()
        if who is None or len(who) != 1 or time.time() - self.wire.since() < 0.5:
            return False
        if not self.samples:
            return False
        s = self.samples[-1]
        if time.time() - s.t > 2:
            return False
        for name, kr in s.kernel.items():
            ka = s.keepalived[name]
            if name in self.excused:
                continue
            if kr != ("master" if ka == "MASTER" else "backup"):
                return False
        master = self.node_of[who[0]]
        if master != self.preferred:
            return False
        return s.kernel[master] == "master" and \
            sum(k == "master" for k in s.kernel.values()) == 1

    def settle(self, timeout: float, what: str) -> float:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.settled():
                return time.time() - t0
            time.sleep(0.05)
        raise Violation(f"{what}: not settled within {timeout:.1f} s (one answering master, "
                        f"{self.preferred}, kernels as keepalived says): answering "
                        f"{self.masters_on_wire()}, kernel/keepalived "
                        f"{self._last_roles()}")

    def _last_roles(self) -> dict[str, tuple[str, str]]:
        if not self.samples:
            return {}
        s = self.samples[-1]
        return {k: (s.kernel[k], s.keepalived[k]) for k in s.kernel}

    def tracebacks(self) -> list[str]:
        found = []
        for n in self.g.nodes:
            path = n.app.dir / "daemon.log"
            with contextlib.suppress(FileNotFoundError):
                text = path.read_text(errors="replace")
                new = text[self.log_seen.get(n.name, 0):]
                self.log_seen[n.name] = len(text)
                if "Traceback" in new:
                    i = new.index("Traceback")
                    found.append(f"{n.name}: daemon traceback: {new[i:i + 600]!r}")
        return found

    # -- the actions ---------------------------------------------------------------------------
    def current_master(self) -> str:
        who = self.masters_on_wire()
        assert who and len(who) == 1, who
        return who[0]

    def pick(self, n: int) -> Step:
        kind, side = self.rng.choice(self.kinds)
        master = self.current_master()
        if side == "master":
            target = master
        else:
            target = self.rng.choice([x.name for x in self.g.nodes if x.name != master])
        return Step(n, kind, target, side)

    def run_step(self, step: Step) -> None:
        g = self.g
        node = g.node(step.target)
        on_master = step.role == "master"
        self.current = step
        step.t0 = time.time()
        step.expect = "quiet"
        k = step.kind
        if k == "daemon-restart":
            node.daemon.send_signal(signal.SIGTERM)
            node.daemon.wait(timeout=20)
            g.start_daemon(node)
        elif k == "daemon-kill":
            node.daemon.send_signal(signal.SIGKILL)
            node.daemon.wait(timeout=20)
            time.sleep(2.0)
            g.start_daemon(node)
            step.expect = "either" if on_master else "quiet"
        elif k in ("keepalived-restart", "keepalived-kill"):
            if k == "keepalived-restart":
                g.kill_keepalived(node, signal.SIGTERM)
            else:
                g.kill_keepalived(node)
                time.sleep(2.0)
            g.start_keepalived(node)
            step.expect = "handover" if on_master else "quiet"
        elif k == "reload-changed":
            text = node.app.conf_path.read_text()
            m = re.search(r"^bras_subscriber_timeout=(\d+)\n", text, re.M)
            value = 301 if not m or m[1] == "300" else 300
            text = re.sub(r"^bras_subscriber_timeout=\d+\n", "", text, flags=re.M)
            node.app.write_conf(text + f"bras_subscriber_timeout={value}\n")
            r = node.app.cli("reload", check=False)
            step.note = f"bras_subscriber_timeout={value}: reload exit {r.returncode}"
            if r.returncode != 0:
                step.violations.append(f"reload of a valid change failed ({r.returncode}): "
                                       f"{(r.stdout + r.stderr).strip()[-300:]}")
        elif k == "reload-broken":
            good = node.app.conf_path.read_text()
            node.app.write_conf(good.replace(f"bras_arp_ip={VIP}", "bras_arp_ip=100.64.0.999"))
            r = node.app.cli("reload", check=False)
            node.app.write_conf(good)
            step.note = f"reload exit {r.returncode}"
            if r.returncode == 0:
                step.violations.append("reload of a broken file exited 0")
        elif k == "vrrp-enable":
            good = node.app.conf_path.read_text()
            if not on_master:
                self.excused.add(node.name)
                t_ord = time.time()
            node.app.write_conf(good.replace("vrrp_enable=1", "vrrp_enable=0"))
            r0 = node.app.cli("reload", check=False)
            time.sleep(self.rng.uniform(0.5, 2.0))
            node.app.write_conf(good)
            r1 = node.app.cli("reload", check=False)
            step.note = f"reload exits {r0.returncode}, {r1.returncode}"
            if r0.returncode or r1.returncode:
                step.violations.append(f"a reload failed: {step.note}: "
                                       f"{(r0.stderr + r1.stderr).strip()[-300:]}")
            if not on_master:
                # The order ends with the reload to 1; from here the node must follow
                # keepalived again within the usual bound.
                self.excused.discard(node.name)
                self.episodes.pop(node.name, None)
                self.ordered.append((t_ord, time.time()))
            step.expect = "either"
        elif k == "force":
            r = node.app.cli("vrrp", "set", "backup", "--force", check=False)
            step.note = f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[-160:]}"
            step.expect = "quiet" if r.returncode else "handover"
        elif k == "link-flap":
            dev = self.rng.choice(["i0", "o0"])
            down = self.rng.uniform(0.5, 3.0)
            self.lab.run(node.app.ns, "ip", "link", "set", dev, "down")
            time.sleep(down)
            self.lab.run(node.app.ns, "ip", "link", "set", dev, "up")
            step.note = f"{dev} down {down:.1f} s"
            step.expect = "either" if on_master else "quiet"
        elif k == "nft-flush":
            self.lab.run(node.app.ns, "nft", "flush", "ruleset")
            step.expect = "either" if on_master else "quiet"
        elif k == "partition":
            self.split = True
            t_split = time.time()
            self.lab.run(g.mgmt, "nft", "add table bridge soakpart; add chain bridge soakpart "
                         "block { type filter hook forward priority 0; policy accept; }; "
                         "add rule bridge soakpart block ip protocol 112 drop")
            hold = self.rng.uniform(2.0, 5.0)
            time.sleep(hold)
            self.lab.run(g.mgmt, "nft", "delete table bridge soakpart")
            healed = time.time()
            # The split brain lasts until the first advert after the heal reaches the lower
            # priority and its kernel follows keepalived: within one advert interval plus
            # the master-down interval, or it outlived the partition.
            limit = g.advert_int + self.mdi
            while time.time() - healed < limit:
                who = self.wire.now_answering()
                if who is not None and len(who) == 1:
                    break
                time.sleep(0.02)
            else:
                step.violations.append(f"split brain outlived the partition by more than "
                                       f"{limit:.1f} s (advert + master-down interval)")
            resolved = max(self.wire.since(), healed)
            step.note = f"{hold:.1f} s, split brain resolved {resolved - healed:.2f} s " \
                        f"after the heal"
            self.splits.append((t_split, resolved))
            self.split = False
            step.expect = "either"
        else:
            raise ValueError(k)
        # Settle: the group must come back to one answering master within a bound that
        # covers a failover and a preempt back, then stay a while (late effects).
        try:
            self.settle(4 * self.mdi + 10, f"after {k}")
        except Violation as e:
            step.violations.append(str(e))
        time.sleep(self.mdi + 0.5)
        with contextlib.suppress(Violation):
            self.settle(self.mdi * 2 + 5, f"after {k}")
        step.t1 = time.time()
        time.sleep(0.2)  # a ping after the window closes it
        self.check(step)

    def check(self, step: Step) -> None:
        w = self.wire
        if time.time() - w.heartbeat > 3:
            step.violations.append("the ARP prober stopped")
        ans = w.answering(step.t0, step.t1)
        dual = sum(v for who, v in ans.items() if len(who) > 1)
        none = ans.get((), 0.0)
        excused = sum(_overlap(step.t0, step.t1, a, b) for a, b in self.ordered + self.splits)
        step.dual = dual
        step.none = none
        step.excused_dual = min(dual, excused)
        if dual - excused > 1e-6:
            step.violations.append(f"two appliances answered the gateway for "
                                   f"{(dual - excused) * 1000:.0f} ms")
        step.handover = len({who for who in ans if len(who) == 1}) > 1
        step.gap, step.lost = w.ping_window(step.t0, step.t1)
        if step.expect == "quiet" and step.lost:
            step.violations.append(f"{step.lost} pings lost (longest gap "
                                   f"{step.gap * 1000:.0f} ms) where nothing should hand over")
        if step.expect != "quiet" and step.gap > self.mdi:
            step.violations.append(f"ping gap {step.gap * 1000:.0f} ms > 1.0 x master-down "
                                   f"interval ({self.mdi * 1000:.0f} ms)")
        if step.expect == "quiet" and step.handover:
            step.violations.append("the gateway moved where nothing should hand over")
        with w.lock:
            step.tcp_gap = max((gp for t, gp in w.tcp_gaps if step.t0 <= t <= step.t1 + 0.2),
                               default=0.0) / 1000
            errors = [e for t, e in w.tcp_errors if step.t0 <= t <= step.t1 + 0.2]
            dups = [t for t in w.dups if step.t0 <= t <= step.t1]
        if errors:
            step.violations.append(f"the TCP stream was lost: {errors[0]}")
        if dups:
            step.violations.append(f"{len(dups)} duplicate ping replies (two forwarding paths)")
        while self.pending:
            step.violations.append(self.pending.pop(0))
        step.violations += self.tracebacks()

    def save_logs(self, step: Step) -> None:
        """The appliances' logs as they were at a failing step (the lab's directory goes
        at the end): daemon.log and keepalived.log of each, in --logs."""
        if not self.logs:
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        for n in self.g.nodes:
            for name in ("daemon.log", "keepalived.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(n.app.dir / name,
                                self.logs / f"step{step.n:03}-{step.kind}-{n.name}-{name}")
        say(f"  logs of step {step.n}: {self.logs}")

    def recover(self, step: Step) -> None:
        """--keep-going after a group left broken: what an operator would do by hand, a
        clean stop and start of every appliance (keepalived, daemon, rules)."""
        say(f"  recovering: every appliance stopped and started again (after step {step.n})")
        for n in self.g.nodes:
            with contextlib.suppress(Exception):
                self.g.stop(n)
        for n in self.g.nodes:
            self.g.start(n)
        self.episodes.clear()
        self.settle(60, f"recovery after step {step.n}")
        self.pending.clear()
        time.sleep(1.0)

    # -- the run -------------------------------------------------------------------------------
    def run(self, actions: int | None, minutes: float | None, keep_going: bool) -> int:
        end = time.time() + minutes * 60 if minutes else None
        n = 0
        while True:
            n += 1
            if actions is not None and n > actions:
                break
            if end is not None and time.time() >= end:
                break
            step = self.pick(n)
            self.steps.append(step)
            self.run_step(step)
            mark = "FAIL" if step.violations else "ok"
            say(f"step {n:>3} {mark:<4} {step.kind:<18} on {step.target} ({step.role:<6}) "
                f"gap {step.gap * 1000:6.0f} ms lost {step.lost:>4} "
                f"tcp {step.tcp_gap * 1000:5.0f} ms handover {'yes' if step.handover else 'no '}"
                f" {step.note}")
            for v in step.violations:
                say(f"  VIOLATION (seed {self.seed}, step {n}, {step.kind} on {step.target} "
                    f"as {step.role}): {v}")
            if step.violations:
                self.save_logs(step)
            if step.violations and not keep_going:
                break
            if step.violations and not self.settled():
                self.recover(step)
        return 1 if any(s.violations for s in self.steps) else 0

    def summary(self) -> dict:
        kinds: dict[str, dict] = {}
        for s in self.steps:
            k = kinds.setdefault(s.kind, {"runs": 0, "on_master": 0, "handovers": 0,
                                          "gap_ms": 0.0, "tcp_gap_ms": 0.0, "lost": 0,
                                          "violations": 0})
            k["runs"] += 1
            k["on_master"] += s.role == "master"
            k["handovers"] += s.handover
            k["gap_ms"] = max(k["gap_ms"], round(s.gap * 1000, 1))
            k["tcp_gap_ms"] = max(k["tcp_gap_ms"], round(s.tcp_gap * 1000, 1))
            k["lost"] += s.lost
            k["violations"] += bool(s.violations)
        done = [s for s in self.steps if s.t1]
        # Per appliance, its longest-lived daemon: RSS at start, after a minute of warm-up
        # (imports and caches that the first reload, repair or switch fills), and last.
        rss = {}
        for pid, xs in self.rss.items():
            name, born = xs[0][0], xs[0][1]
            if len(xs) >= 2 and (name not in rss or xs[-1][1] - born > rss[name]["s"]):
                warm = next((x for x in xs if x[1] - born >= RSS_WARMUP), None)
                rss[name] = {"pid": pid, "s": round(xs[-1][1] - born), "start_kb": xs[0][2],
                             "first_kb": warm[2] if warm else None,
                             "flat_s": round(xs[-1][1] - warm[1]) if warm else 0,
                             "last_kb": xs[-1][2]}
        return {
            "seed": self.seed, "actions": len(self.steps), "kinds": kinds,
            "handovers": sum(s.handover for s in self.steps),
            "master_down_interval_ms": round(self.mdi * 1000),
            "dual_master_ms": round(sum(s.dual - s.excused_dual
                                        for s in done) * 1000, 1),
            "split_brain_and_ordered_ms": round(sum(s.excused_dual
                                                    for s in done) * 1000, 1),
            "no_gateway_outside_handovers_ms": round(
                sum(s.none for s in done if s.expect == "quiet") * 1000, 1),
            "no_gateway_in_handovers_ms": round(
                sum(s.none for s in done if s.expect != "quiet") * 1000, 1),
            "rss": rss,
            "violations": [(s.n, s.kind, s.target, s.role, v) for s in self.steps
                           for v in s.violations],
        }


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def print_summary(s: dict, rss_margin: float) -> list[str]:
    say(f"\n== Summary (seed {s['seed']}): {s['actions']} actions, {s['handovers']} with a "
        f"handover; master-down interval {s['master_down_interval_ms']} ms")
    say("| action | runs | on master | handovers | longest ping gap ms | x master-down "
        "| longest TCP gap ms | pings lost | steps failed |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    mdi = s["master_down_interval_ms"]
    for k, v in sorted(s["kinds"].items()):
        say(f"| {k} | {v['runs']} | {v['on_master']} | {v['handovers']} | {v['gap_ms']:.0f} | "
            f"{v['gap_ms'] / mdi:.2f} | {v['tcp_gap_ms']:.0f} | {v['lost']} | "
            f"{v['violations']} |")
    say(f"dual-master time: {s['dual_master_ms']:.0f} ms (must be 0); split brain of "
        f"partitions and vrrp_enable=0 on a backup: {s['split_brain_and_ordered_ms']:.0f} ms")
    say(f"no-gateway time outside intended handovers: "
        f"{s['no_gateway_outside_handovers_ms']:.0f} ms; within them: "
        f"{s['no_gateway_in_handovers_ms']:.0f} ms")
    bad = []
    for name, r in sorted(s["rss"].items()):
        say(f"daemon RSS of {name} (pid {r['pid']}, its longest-lived daemon, {r['s']} s): "
            f"{r['start_kb']} kB at start, {r['first_kb']} kB after {RSS_WARMUP:g} s, "
            f"{r['last_kb']} kB last")
        # Flat: judged over at least a minute after the warm-up.
        if r["first_kb"] and r["flat_s"] >= 60 and \
                r["last_kb"] - r["first_kb"] > r["first_kb"] * rss_margin + 2048:
            bad.append(f"daemon RSS of {name} grew {r['first_kb']} -> {r['last_kb']} kB in "
                       f"{r['flat_s']} s")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("helper", nargs="?", choices=["_tap", "_tcp"], help=argparse.SUPPRESS)
    ap.add_argument("--sw", help=argparse.SUPPRESS)
    ap.add_argument("--ports", help=argparse.SUPPRESS)
    ap.add_argument("--host", default=HOST4, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=PORT, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help="the sequence's seed (default: random, printed)")
    ap.add_argument("--minutes", type=float, help="run this long")
    ap.add_argument("--actions", type=int, help="run this many actions (default 20 when "
                    "--minutes is not given)")
    ap.add_argument("--kinds", help="only these actions (comma-separated KIND or "
                    "KIND@master / KIND@backup: the target's role)")
    ap.add_argument("--skip", help="leave these actions out (same form as --kinds)")
    ap.add_argument("--size", type=int, default=2, choices=[2, 3], help="appliances")
    ap.add_argument("--advert", type=float, default=1.0, help="VRRP advert interval, s")
    ap.add_argument("--keep-going", action="store_true",
                    help="record violations and go on (exit 1 at the end)")
    ap.add_argument("--rss-margin", type=float, default=0.05,
                    help="daemon RSS may grow this fraction (+2 MB) first to last")
    ap.add_argument("--json", help="write the summary here as JSON")
    ap.add_argument("--logs", help="copy the appliances' logs here at each failing step")
    ap.add_argument("--list", action="store_true", help="list the action kinds and exit")
    a = ap.parse_args(argv)
    if a.helper == "_tap":
        arp_tap("s0", a.sw, a.ports.split(","), INTERVAL)
        return 0
    if a.helper == "_tcp":
        tcp_watch(a.host, a.port)
        return 0
    if a.list:
        for k, v in KINDS.items():
            say(f"{k:<20} {v}")
        return 0
    # (kind, side) pairs: --kinds and --skip take KIND (both sides) or KIND@master/@backup.
    pairs = [(k, side) for k in KINDS for side in ("master", "backup")
             if not (k == "force" and side == "backup")]

    def chosen(spec: str) -> set[tuple[str, str]]:
        out = set()
        for item in filter(None, (x.strip() for x in spec.split(","))):
            kind, _, side = item.partition("@")
            if kind not in KINDS or side not in ("", "master", "backup"):
                ap.error(f"unknown action {item!r}; --list shows them")
            out |= {(k, sd) for k, sd in pairs if k == kind and sd == (side or sd)}
        return out

    if a.kinds:
        pairs = [p for p in pairs if p in chosen(a.kinds)]
    if a.skip:
        pairs = [p for p in pairs if p not in chosen(a.skip)]
    if not pairs:
        ap.error("no action left to run; --list shows them")
    kinds = pairs
    if a.actions is None and a.minutes is None:
        a.actions = 20
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)

    from group import Group, master_down_interval
    from netlab import Lab

    # Ctrl-C and SIGTERM end the run through the Lab's cleanup.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with Lab("soak") as lab:
        g = Group(lab, a.size, advert_int=a.advert, border=True)
        mdi = master_down_interval(a.advert, min(n.priority for n in g.nodes))
        say(f"soak: seed {seed}, {a.size} appliances, advert {a.advert:g} s, master-down "
            f"interval {mdi * 1000:.0f} ms; namespaces {lab.tag}-*")
        say("actions: " + ", ".join(f"{k}@{sd}" for k, sd in kinds))
        soak = Soak(g, seed, kinds, mdi, Path(a.logs) if a.logs else None)
        rc = 0
        try:
            soak.start()
            rc = soak.run(a.actions, a.minutes, a.keep_going)
        except Violation as e:
            say(f"VIOLATION (seed {seed}, at start): {e}")
            rc = 1
        except KeyboardInterrupt:
            say("interrupted")
            rc = 130
        finally:
            soak.stop.set()
        s = soak.summary()
        bad = print_summary(s, a.rss_margin)
        for b in bad:
            say(f"VIOLATION (seed {seed}): {b}")
        if bad:
            s["violations"] += [(None, "rss", "", "", b) for b in bad]
            rc = rc or 1
        if rc:
            failed = next((st for st in soak.steps if st.violations), None)
            where = f"step {failed.n} ({failed.kind} on {failed.target})" if failed else "-"
            say(f"FAILED: seed {seed}, first failing {where}; repeat with --seed {seed}")
        if a.json:
            s["violations"] = [list(v) for v in s["violations"]]
            Path(a.json).write_text(json.dumps(s, indent=1, default=str))
    return rc


if __name__ == "__main__":
    sys.exit(main())
