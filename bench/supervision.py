"""Supervision: role switches, step-down, idle cost, ARP reply cost, side by side in one run.

    /usr/bin/python3 bench/supervision.py [--quick] [--only PART]...
                                              (root; Markdown tables on stdout)

1. Role switch inside the daemon. A client that keeps its imports loaded sends `set` on the
   control socket (control.request), 20 ms apart and back to back; it times the round trip
   (socket included) and, by a thread on nftables' netlink group (what `nft monitor`
   reads), the moment the kernel committed the new role. Beside it, with the daemon
   stopped: role.set_role() in process (the daemon's work: lock, state, flip, state.json
   with fsync), the same with the run directory on the VM's disk instead of tmpfs, and the
   nft flip alone (nftapply.apply(render.render_switch(cfg, role))). Blocks interleave
   round by round. The appliance's run directory is on tmpfs (/dev/shm), as /run is on an
   appliance; this VM's /tmp is on its disk.
2. `fdpi_cli vrrp set` as a process, with the daemon running, beside the bare interpreter
   (`python3 -c pass`, `python3 -I -S -c pass`), interleaved: the package's /usr/bin/fdpi_cli
   (debian/fdpi_cli: `python3 -IS`, the lean client), keepalived/vrrp-set in a checkout
   (sh, then the same client) and `python3 -m skat_plugin` (site and runpy, as the tests
   run it). Spawned from a process already inside the namespace (no `ip netns exec`).
3. Step-down: the daemon watches a pid file (--watch-pidfile) naming a `sleep` that stands
   in for keepalived's VRRP child (started before the file is written, as PidWatch wants);
   the appliance is master; kill -9; time until state.json says backup (polled every
   0.5 ms) and until the kernel committed the flip (netlink), then the master's table is
   checked dormant.
4. Idle cost: a group of two appliances with real keepalived (lab/group.py, 1 s adverts),
   quiet: a master and a backup side by side for the same window. CPU from /proc/PID/stat
   (utime+stime, and cutime+cstime: the scripts a process ran and reaped), RSS, wake-ups
   (voluntary context switches, all threads) per second.
5. CPU per ARP reply. trafgen sends ARP requests for the virtual IP at a fixed rate from a
   generator namespace, over its own veth to each responder: the plugin in master (nft,
   in the kernel), the host stack (the address on an interface), a user-space packet
   socket responder (`_responder` below, in Python), and nobody (the generator alone).
   Replies are counted at the generator (rx_packets; then dropped there). CPU: all CPUs
   from /proc/stat (raw, and minus the median of idle windows taken among the cases: the
   machine is shared), and the scheduler's runtime of the generator, the responder process
   and every ksoftirqd (what this traffic runs in, on veth). Cases rotate within each
   round. The user-space responder asks for a 4 MiB receive buffer (SO_RCVBUFFORCE).

Internal steps (run inside a namespace): `_switch`, `_cli`, `_stepdown`, `_responder`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "lab"))

from conftest import BASE_CONF, VIP, VMAC  # noqa: E402  (the tests' appliance)
from machine import loadavg, machine  # noqa: E402
from netlab import PYTHON, Lab, wait_for  # noqa: E402

REQUESTER_IP = "100.64.0.10"
CONF = BASE_CONF + "vrrp_election_pidfile=\n"
# /usr/bin/fdpi_cli as the package installs it (debian/fdpi_cli), with this checkout put
# first on its path: the one line added, as the package's own skat_plugin is not installed.
INSTALLED = (REPO / "debian/fdpi_cli").read_text()
PACKAGE_SCRIPT = INSTALLED.replace("\nsys.path.append(", f"\nsys.path.insert(0, {str(REPO)!r})"
                                   "\nsys.path.append(", 1)
assert PACKAGE_SCRIPT != INSTALLED, "debian/fdpi_cli no longer appends dist-packages"
TICK = os.sysconf("SC_CLK_TCK")
PARTS = ("switch", "cli", "stepdown", "arp", "idle")  # --only


# --- small statistics ---------------------------------------------------------------------
def q(v: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(v)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]


def row_ms(name: str, v: list[float], rounds: list[list[float]] | None = None) -> str:
    spread = ""
    if rounds:
        meds = [statistics.median(r) for r in rounds if r]
        spread = f"{min(meds):.2f}-{max(meds):.2f}"
    return (f"| {name} | {len(v)} | {statistics.median(v):.2f} | {q(v, 0.95):.2f} | "
            f"{min(v):.2f} | {max(v):.2f} | {spread or '-'} |")


MS_HEADER = ("| what | n | p50 ms | p95 ms | min | max | round medians |\n"
             "|---|---:|---:|---:|---:|---:|---:|")


# --- the kernel's commits, as nft monitor sees them -----------------------------------------
NFT_QUIET = {12, 13, 14}  # NEWSETELEM, GETSETELEM, DELSETELEM: no rule changes


class CommitClock:
    """A thread blocked on nftables' netlink group notes when each rule-set commit arrives
    (set elements aside), so that a client can tell when the kernel held the new role."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 12)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))
        self.sock.setsockopt(270, 1, 7)  # SOL_NETLINK, ADD_MEMBERSHIP, NFNLGRP_NFTABLES
        self.times: list[float] = []
        threading.Thread(target=self._run, daemon=True).start()

    def pause(self, off: bool = True) -> None:
        """Leave the group (or join it again): while in-process switches are timed, this
        thread must not wake up and take the interpreter's lock."""
        self.sock.setsockopt(270, 2 if off else 1, 7)  # NETLINK_DROP/ADD_MEMBERSHIP

    def _run(self) -> None:
        while True:
            data = self.sock.recv(1 << 16)
            t = time.perf_counter()
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind >> 8 == 10 and kind & 0xFF not in NFT_QUIET:
                    self.times.append(t)
                    break
                if length < 16:
                    break
                off += (length + 3) & ~3

    def first_after(self, t0: float, wait: float = 0.05) -> float | None:
        deadline = time.perf_counter() + wait
        while True:
            later = [t for t in self.times if t >= t0]
            if later:
                return min(later)
            if time.perf_counter() > deadline:
                return None
            time.sleep(0.0002)


# --- helpers that run inside the appliance's namespace ---------------------------------------
def start_daemon(log: str, *args: str) -> subprocess.Popen[bytes]:
    from skat_plugin import control

    with open(log, "a") as out:
        proc = subprocess.Popen([PYTHON, "-m", "skat_plugin.daemon", "--no-fifo",
                                 "--metrics-file", "", *args], stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while control.request({"op": "status"}, timeout=5) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon did not start: {Path(log).read_text()[-2000:]}")
        time.sleep(0.02)
    return proc


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


def other(role: str) -> str:
    return "master" if role == "backup" else "backup"


def helper_switch(n: int, rounds: int, b2b: int, gap: float, log: str, disk: str) -> None:
    from skat_plugin import control, nftapply, render, role, state

    sys.setswitchinterval(0.0002)
    clock = CommitClock()
    keys = ("daemon_rt", "daemon_kernel", "daemon_b2b", "inproc", "inproc_disk", "flip")
    res: dict[str, list[list[float]]] = {k: [] for k in keys}
    run_dir = state.run_dir()
    current = state.load()["role"]

    def daemon_blocks() -> None:
        nonlocal current
        clock.pause(False)
        d = start_daemon(log)
        rt, kern, fast = [], [], []
        for i in range(n + 2 + b2b):
            target = other(current)
            if i < n + 2:
                time.sleep(gap)
            t0 = time.perf_counter()
            ans = control.request({"op": "set", "role": target, "cause": "bench"})
            t1 = time.perf_counter()
            assert ans and ans.get("role") == target, ans
            current = target
            if i < 2:
                continue  # warm-up
            if i < n + 2:
                tk = clock.first_after(t0)
                assert tk is not None, "no commit seen"
                rt.append((t1 - t0) * 1e3)
                kern.append((tk - t0) * 1e3)  # later than the answer: the thread woke late
            else:
                fast.append((t1 - t0) * 1e3)
        stop_daemon(d)
        clock.pause()
        res["daemon_rt"].append(rt)
        res["daemon_kernel"].append(kern)
        res["daemon_b2b"].append(fast)

    def inproc(key: str) -> None:
        nonlocal current
        if key == "inproc_disk":
            for name in ("state.json", "lock"):
                shutil.copy(run_dir / name, Path(disk) / name)
            os.environ["SKAT_RUN_DIR"] = disk
        cfg = state.load_config()
        out = []
        for i in range(n + 2):
            target = other(current)
            time.sleep(gap)
            t0 = time.perf_counter()
            if key == "flip":
                nftapply.apply(render.render_switch(cfg, target))
            else:
                role.set_role(target, "bench")
            t1 = time.perf_counter()
            current = target
            if i >= 2:
                out.append((t1 - t0) * 1e3)
        if key == "flip" and current != state.load()["role"]:  # state.json follows the kernel
            role.set_role(current, "bench")
        if key == "inproc_disk":
            shutil.copy(Path(disk) / "state.json", run_dir / "state.json")
            os.environ["SKAT_RUN_DIR"] = str(run_dir)
        res[key].append(out)

    for r in range(rounds):
        blocks = ["inproc", "inproc_disk", "flip"]
        blocks = blocks[r % 3:] + blocks[:r % 3]
        if r % 2 == 0:
            daemon_blocks()
        for b in blocks:
            inproc(b)
        if r % 2 == 1:
            daemon_blocks()
        print(f"  switch round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    assert nftapply.loaded_role() == state.load()["role"]
    print(json.dumps(res))


def spawn(argv: list[str]) -> tuple[float, int]:
    devnull = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=devnull)
    _, status = os.waitpid(pid, 0)
    return (time.perf_counter() - t0) * 1e3, os.waitstatus_to_exitcode(status)


def helper_cli(n: int, log: str, script: str) -> None:
    from skat_plugin import state

    d = start_daemon(log)
    current = state.load()["role"]
    vrrp_set = str(REPO / "keepalived/vrrp-set")
    cmds = {"pkg": lambda role: [script, "vrrp", "set", role],
            "sh": lambda role: [vrrp_set, role, "bench"],
            "mod": lambda role: [PYTHON, "-m", "skat_plugin", "vrrp", "set", role],
            "bare": lambda _: [PYTHON, "-c", "pass"],
            "isolated": lambda _: [PYTHON, "-I", "-S", "-c", "pass"]}
    res: dict[str, list[float]] = {k: [] for k in cmds}
    names = list(cmds)
    for i in range(n + 2):
        for k in names[i % len(names):] + names[:i % len(names)]:
            target = other(current)
            argv = cmds[k](target)
            ms, rc = spawn(argv)
            if rc != 0:
                out = subprocess.run(argv, capture_output=True, text=True)
                raise SystemExit(f"{argv} exited {rc}: {out.stdout}{out.stderr}")
            if "pass" not in argv:
                current = target
                assert state.load()["role"] == target
            if i >= 2:
                res[k].append(ms)
    stop_daemon(d)
    print(json.dumps(res))


def helper_stepdown(k: int, log: str, pidfile: str) -> None:
    from skat_plugin import control, nftapply, state

    sys.setswitchinterval(0.0002)
    clock = CommitClock()
    d = start_daemon(log, "--watch-pidfile", pidfile)
    path = state.run_dir() / "state.json"
    res: dict[str, list[float]] = {"state": [], "kernel": []}
    for _ in range(k):
        fake = subprocess.Popen(["sleep", "1000"])  # started before its pid file is written
        Path(pidfile).write_text(f"{fake.pid}\n")
        wait_for(lambda: (control.request({"op": "status"}) or {}).get("election_alive"),
                 5, 0.005, "the daemon to see the new process")
        ans = control.request({"op": "set", "role": "master", "cause": "bench"})
        assert ans and ans.get("role") == "master", ans
        time.sleep(0.2)  # the takeover's own aftermath (rule-set check, state.json event)
        st = os.stat(path)
        sig = (st.st_mtime_ns, st.st_ino)
        t0 = time.perf_counter()
        os.kill(fake.pid, signal.SIGKILL)
        t_state = None
        while time.perf_counter() - t0 < 3:
            time.sleep(0.0005)
            st = os.stat(path)
            if (st.st_mtime_ns, st.st_ino) != sig:
                sig = (st.st_mtime_ns, st.st_ino)
                if state.load()["role"] == "backup":
                    t_state = time.perf_counter()
                    break
        assert t_state is not None, "no step-down within 3 s"
        tk = clock.first_after(t0)
        assert tk is not None, "no commit seen"
        assert nftapply.loaded_role() == "backup", "master table not dormant"
        res["state"].append((t_state - t0) * 1e3)
        res["kernel"].append((tk - t0) * 1e3)
        fake.wait()
    stop_daemon(d)
    print(json.dumps(res))


# --- the user-space ARP responder: what one would write instead of the nft rules ------------
def helper_responder(iface: str, vip: str, vmac: str) -> None:
    """A packet socket that only sees ARP requests for `vip` (classic BPF) and answers each
    from Python."""
    import ctypes

    ip = socket.inet_aton(vip)
    mac = bytes.fromhex(vmac.replace(":", ""))
    prog = [(0x28, 0, 0, 12), (0x15, 0, 5, 0x0806),         # ldh [12]; ARP?
            (0x28, 0, 0, 20), (0x15, 0, 3, 1),              # ldh [20]; request?
            (0x20, 0, 0, 38), (0x15, 0, 1, struct.unpack("!I", ip)[0]),  # ld [38]; vip?
            (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]
    code = b"".join(struct.pack("=HBBI", *i) for i in prog)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(buf))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
    # SO_RCVBUFFORCE: with the default buffer this loses a fifth of the requests at 2,000/s
    sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)
    sock.bind((iface, 0x0806))
    head = b"\x08\x06\x00\x01\x08\x00\x06\x04\x00\x02" + mac + ip
    pad = bytes(18)
    print("ready", flush=True)
    try:
        while True:
            req = sock.recv(128)
            # Ethernet: to the requester, from the virtual MAC; ARP reply: sender = virtual
            # MAC/IP, target = the requester's hardware and protocol address.
            sock.send(req[6:12] + mac + head + req[22:32] + pad)
    except KeyboardInterrupt:
        # PACKET_STATISTICS: requests queued to the socket, and dropped for a full buffer
        packets, drops = struct.unpack("II", sock.getsockopt(263, 6, 8))
        print(json.dumps({"queued": packets, "drops": drops}), flush=True)


# --- the bench (root namespace) --------------------------------------------------------------
def helper(lab: Lab, ns: str, env: dict[str, str], *args: str, timeout: float = 300) -> dict:
    out = lab.run(ns, PYTHON, str(Path(__file__).resolve()), *args, env=env, timeout=timeout)
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def part_switch(lab: Lab, app, env: dict[str, str], a) -> list[str]:
    disk = lab.path("run-on-disk")
    disk.mkdir()
    r = helper(lab, app.ns, env, "_switch", str(a.switches), str(a.rounds), str(a.b2b),
               str(a.gap), str(lab.path("daemon-switch.log")), str(disk))
    flat = {k: [x for rr in v for x in rr] for k, v in r.items()}
    names = [
        ("daemon_kernel", "daemon: request sent -> kernel committed (netlink event)"),
        ("daemon_rt", "daemon: control.request round trip (socket, switch, state.json, answer)"),
        ("daemon_b2b", "daemon: round trip, requests back to back (a flap)"),
        ("inproc", "role.set_role() in process, run dir on tmpfs (daemon stopped)"),
        ("inproc_disk", "role.set_role() in process, run dir on the VM's disk"),
        ("flip", "nft flip alone: nftapply.apply(render.render_switch(cfg, role))"),
    ]
    return [MS_HEADER] + [row_ms(label, flat[k], r[k]) for k, label in names]


def part_cli(lab: Lab, app, env: dict[str, str], a) -> list[str]:
    script = lab.path("fdpi_cli")
    script.write_text(PACKAGE_SCRIPT)
    script.chmod(0o755)
    r = helper(lab, app.ns, env, "_cli", str(a.cli_runs), str(lab.path("daemon-cli.log")),
               str(script))
    names = [("pkg", "`fdpi_cli vrrp set` (the package's /usr/bin/fdpi_cli, `python3 -IS`)"),
             ("sh", "`keepalived/vrrp-set ROLE CAUSE` in a checkout (sh + `python3 -IS -c`)"),
             ("mod", "`python3 -m skat_plugin vrrp set` (site, runpy: as the tests run it)"),
             ("bare", "`python3 -c pass`"),
             ("isolated", "`python3 -I -S -c pass`")]
    return [MS_HEADER] + [row_ms(label, r[k]) for k, label in names]


def part_stepdown(lab: Lab, app, env: dict[str, str], a) -> list[str]:
    r = helper(lab, app.ns, env, "_stepdown", str(a.kills), str(lab.path("daemon-kill.log")),
               str(lab.path("vrrp.pid")))
    return [MS_HEADER,
            row_ms("kill -9 -> kernel committed backup (netlink event)", r["kernel"]),
            row_ms("kill -9 -> state.json says backup (polled every 0.5 ms)", r["state"])]


# -- 4. idle ----------------------------------------------------------------------------------
def proc_sample(pid: int) -> dict[str, float]:
    """utime+stime, cutime+cstime (ticks), RSS (KiB), voluntary switches of every thread."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
               .splitlines() if line.startswith("VmRSS:"))
    vol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
    return {"cpu": int(fields[11]) + int(fields[12]),
            "children": int(fields[13]) + int(fields[14]), "rss": rss, "wake": vol}


def part_idle(a) -> list[str]:
    import group as grouplab

    with Lab("supidle") as lab:
        g = grouplab.Group(lab, size=2, advert_int=1.0)
        for node in g.nodes:
            g.start(node)
        g.wait_one_master(20)
        wait_for(lambda: g.roles() == {"a": "master", "b": "backup"}, 20, 0.1,
                 "a master, b backup")
        time.sleep(3)  # takeover bursts and keepalived's own start-up over
        procs = []
        for node in g.nodes:
            r = node.role()
            procs.append((f"daemon ({r})", node.daemon.pid))
            for key in ("main", "vrrp", "check"):
                with contextlib.suppress(OSError, ValueError):
                    pid = int(node.pids[key].read_text().split()[0])
                    procs.append((f"keepalived {key} ({r})", pid))
        busy0 = cpu_times()
        s0 = {pid: proc_sample(pid) for _, pid in procs}
        t0 = time.monotonic()
        time.sleep(a.idle)
        s1 = {pid: proc_sample(pid) for _, pid in procs}
        w = time.monotonic() - t0
        busy = (sum(map(sum, cpu_times())) - sum(map(sum, busy0))) / TICK
        assert g.roles() == {"a": "master", "b": "backup"}, "roles changed during the window"
        lines = [f"window {w:.1f} s, both appliances at once; the machine's CPUs were busy "
                 f"{busy:.1f} CPU-s of {w * os.cpu_count():.0f} meanwhile (others' work)", "",
                 "| process | CPU % of a core | its children's CPU % (scripts it ran) | "
                 "RSS MiB | wake-ups/s |", "|---|---:|---:|---:|---:|"]
        for name, pid in procs:
            x, y = s0[pid], s1[pid]
            lines.append(f"| {name} | {100 * (y['cpu'] - x['cpu']) / TICK / w:.2f} | "
                         f"{100 * (y['children'] - x['children']) / TICK / w:.2f} | "
                         f"{y['rss'] / 1024:.1f} | {(y['wake'] - x['wake']) / w:.1f} |")
        return lines


# -- 5. ARP replies ---------------------------------------------------------------------------
def cpu_times() -> list[list[int]]:
    """Per CPU: busy ticks (user nice system irq softirq steal; not idle, not iowait)."""
    with open("/proc/stat") as f:
        return [[int(x) for i, x in enumerate(line.split()[1:9]) if i not in (3, 4)]
                for line in f if line.startswith("cpu") and line[3].isdigit()]


def netdev(pid: int, dev: str) -> tuple[int, int]:
    """(rx_packets, tx_packets) of dev in the namespace of process pid."""
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == dev:
                v = rest.split()
                return int(v[1]), int(v[9])
    raise AssertionError(f"{dev} not in /proc/{pid}/net/dev")


def runtime(pids: list[int]) -> int:
    """CPU time the processes' threads have run, ns (the scheduler's sum_exec_runtime)."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    total += int((task / "schedstat").read_text().split()[0])
    return total


def ksoftirqd() -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().startswith("ksoftirqd/"):
                    found.append(int(d.name))
    return found


def stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def part_arp(lab: Lab, app, gen: str, host: str, user: str, a) -> list[str]:
    app.cli("vrrp", "set", "master")
    devs = {"nft": "g1", "host": "g2", "user": "g3", "none": "g3"}
    cfgs = {}
    for dev in ("g1", "g2", "g3"):
        mac = json.loads(lab.run(gen, "ip", "-j", "link", "show", dev).stdout)[0]["address"]
        path = lab.path(f"arp-{dev}.cfg")
        path.write_text(f"{{ eth(da=ff:ff:ff:ff:ff:ff, sa={mac}, type=0x0806), arp(op=request, "
                        f"smac={mac}, sip={REQUESTER_IP}, tmac=00:00:00:00:00:00, tip={VIP}), "
                        f"fill(0x00, 18) }}\n")
        cfgs[dev] = path
    anchor = lab.popen(gen, "sleep", "infinity").pid
    soft = ksoftirqd()
    cases = ["idle", "none", "nft", "host", "user"]
    runs: dict[str, list[dict]] = {c: [] for c in cases}
    for r in range(a.arp_rounds):
        k = r % len(cases)
        for case in cases[k:] + cases[:k]:
            tasks = list(soft)
            procs = []
            if case == "user":
                resp = lab.popen(user, PYTHON, str(Path(__file__).resolve()), "_responder",
                                 "x0", VIP, VMAC)
                assert resp.stdout.readline().strip() == "ready"
                procs.append(resp)
                tasks.append(resp.pid)
            if case != "idle":
                log = open(lab.path("trafgen.log"), "w")  # noqa: SIM115
                gen_p = lab.popen(gen, "trafgen", "--dev", devs[case], "--conf",
                                  str(cfgs[devs[case]]), "--cpus", "1", "--rate",
                                  f"{a.arp_rate}pps", "--no-sock-mem", "--no-cpu-stats",
                                  "--notouch-irq", stdout=log.fileno())
                log.close()
                procs.append(gen_p)
                time.sleep(0.5)
                assert gen_p.poll() is None, lab.path("trafgen.log").read_text()[-2000:]
                kids = Path(f"/proc/{gen_p.pid}/task/{gen_p.pid}/children").read_text().split()
                tasks += [gen_p.pid, *map(int, kids)]
            else:
                time.sleep(0.5)
            dev = devs.get(case, "g1")
            c0, s0, n0, t0 = cpu_times(), runtime(tasks), netdev(anchor, dev), time.monotonic()
            time.sleep(a.arp_seconds)
            c1, s1, n1, t1 = cpu_times(), runtime(tasks), netdev(anchor, dev), time.monotonic()
            for p in reversed(procs):
                stop(p)
            drops = 0
            if case == "user":
                drops = json.loads(procs[0].stdout.read().strip().splitlines()[-1])["drops"]
            w = t1 - t0
            runs[case].append({
                "w": w, "total": (sum(map(sum, c1)) - sum(map(sum, c0))) / TICK,
                "tasks": (s1 - s0) / 1e9, "rx": n1[0] - n0[0], "tx": n1[1] - n0[1],
                "drops": drops})
            x = runs[case][-1]
            print(f"  arp round {r + 1} {case:5} sent {x['tx'] / w:7.0f}/s replies "
                  f"{x['rx'] / w:7.0f}/s total CPU {x['total']:.2f} s", file=sys.stderr,
                  flush=True)
    lines = ["| responder | requests/s sent | replies/s | replies / request | "
             "CPU us per reply, all CPUs (raw) | minus the idle windows' median | its rounds | "
             "generator + responder + ksoftirqd runtime, us per reply |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    idle = [x["total"] / x["w"] for x in runs["idle"]]
    idle_med = statistics.median(idle)  # the machine's other work, subtracted below
    lines.append(f"| (idle window: no traffic) | - | - | - | busy {idle_med:.2f} "
                 f"CPU-s/s ({min(idle):.2f}-{max(idle):.2f}) | - | - | - |")
    labels = {"none": "nobody (the generator alone; per request sent)",
              "nft": "the plugin in master (nft, in the kernel)",
              "host": "the host stack (the address on the interface)",
              "user": "user space (Python, packet socket + BPF)"}
    for case in ("none", "nft", "host", "user"):
        rs = runs[case]
        per = [max(1, x["rx"] if case != "none" else x["tx"]) for x in rs]
        raw = [x["total"] / p * 1e6 for x, p in zip(rs, per, strict=True)]
        net = [(x["total"] - idle_med * x["w"]) / p * 1e6 for x, p in zip(rs, per, strict=True)]
        att = [x["tasks"] / p * 1e6 for x, p in zip(rs, per, strict=True)]
        sent = statistics.median(x["tx"] / x["w"] for x in rs)
        got = statistics.median(x["rx"] / x["w"] for x in rs)
        ratio = min(x["rx"] / max(1, x["tx"]) for x in rs)
        lines.append(f"| {labels[case]} | {sent:.0f} | {got:.0f} | "
                     f"{'-' if case == 'none' else f'{ratio:.3f}'} | "
                     f"{statistics.median(raw):.1f} | {statistics.median(net):.1f} | "
                     f"{min(net):.1f}-{max(net):.1f} | {statistics.median(att):.1f} |")
    lines += ["", f"{a.arp_rounds} rounds x {a.arp_seconds:g} s a case at {a.arp_rate}/s; the "
              f"user-space responder's socket dropped {sum(x['drops'] for x in runs['user'])} "
              f"requests in all (PACKET_STATISTICS, 4 MiB receive buffer)"]
    return lines


def build(lab: Lab, shm: Path):
    gen, upl, host, user = lab.ns("gen"), lab.ns("upl"), lab.ns("host"), lab.ns("user")
    app = lab.appliance("app", CONF)
    app.run_dir = shm  # tmpfs, as /run is on an appliance (the lab's tmp is on disk here)
    lab.veth(gen, "g1", app.ns, "i0")
    lab.veth(upl, "u0", app.ns, "o0")
    lab.veth(gen, "g2", host, "h0")
    lab.veth(gen, "g3", user, "x0")
    for ns, dev in ((gen, "g1"), (gen, "g2"), (gen, "g3"), (host, "h0"), (user, "x0"),
                    (upl, "u0")):
        lab.run(ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
    for dev in ("g1", "g2", "g3"):  # replies are counted (rx_packets), then dropped
        lab.run(gen, "nft", f"table netdev sink_{dev} {{ chain in {{ type filter hook ingress "
                f"device {dev} priority 0; policy drop; }}; }}")
    lab.run(host, "ip", "addr", "add", f"{VIP}/24", "dev", "h0")
    lab.run(user, "ip", "link", "set", "x0", "arp", "off")  # the kernel leaves ARP alone
    app.cli("start")
    return app, gen, host, user


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        cmd, args = sys.argv[1], sys.argv[2:]
        if cmd == "_switch":
            helper_switch(int(args[0]), int(args[1]), int(args[2]), float(args[3]), args[4],
                          args[5])
        elif cmd == "_cli":
            helper_cli(int(args[0]), args[1], args[2])
        elif cmd == "_stepdown":
            helper_stepdown(int(args[0]), args[1], args[2])
        elif cmd == "_responder":
            helper_responder(*args)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run (few samples)")
    ap.add_argument("--rounds", type=int, default=4, help="switch rounds")
    ap.add_argument("--switches", type=int, default=60, help="switches per block and round")
    ap.add_argument("--b2b", type=int, default=30, help="back-to-back requests per round")
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between spaced switches")
    ap.add_argument("--cli-runs", type=int, default=60)
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--idle", type=float, default=30, help="idle window, seconds")
    ap.add_argument("--arp-rate", type=int, default=10000, help="ARP requests a second")
    ap.add_argument("--arp-seconds", type=float, default=5)
    ap.add_argument("--arp-rounds", type=int, default=3)
    ap.add_argument("--only", choices=PARTS, action="append",
                    help="run only this part (repeatable; default: all)")
    a = ap.parse_args()
    only = set(a.only or PARTS)
    if a.quick:
        a.rounds, a.switches, a.b2b, a.cli_runs, a.kills = 2, 10, 5, 5, 3
        a.idle, a.arp_seconds, a.arp_rounds = 3, 1, 1
    started = time.monotonic()
    head = [f"command: /usr/bin/python3 bench/supervision.py {' '.join(sys.argv[1:])}".rstrip(),
            f"machine: {machine()}; load before: {loadavg()}"]
    print("\n".join(head), file=sys.stderr, flush=True)
    out: list[tuple[str, list[str]]] = []
    with Lab("sup") as lab:
        shm = Path("/dev/shm") / f"{lab.tag}-run"
        try:
            app, gen, host, user = build(lab, shm)
            env = app.env()
            for part, title, fn in (
                    ("switch", "1. Role switch", part_switch),
                    ("cli", "2. `fdpi_cli vrrp set` as a process, daemon running", part_cli),
                    ("stepdown", "3. Step-down after kill -9 of the watched process",
                     part_stepdown)):
                if part in only:
                    out.append((title, fn(lab, app, env, a)))
                    print(f"{title}: done, {time.monotonic() - started:.0f} s",
                          file=sys.stderr, flush=True)
            if "arp" in only:
                out.append(("5. CPU per ARP reply", part_arp(lab, app, gen, host, user, a)))
        finally:
            shutil.rmtree(shm, ignore_errors=True)
    if "idle" in only:
        out.append(("4. Idle: daemon and keepalived", part_idle(a)))
    print("\n".join(head))
    for title, lines in sorted(out):
        print(f"\n{title}\n")
        print("\n".join(lines))
    print(f"\n{time.monotonic() - started:.0f} s in all; load after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
