"""The operator's promises for a VRRP group, with real keepalived in namespaces.

Exactly one appliance answers for the virtual gateway, before and after any failover; an
appliance whose election daemon dies steps down by itself; the roles always converge to
keepalived's last word; a partition is reported as split brain on both sides.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))

from group import VMAC, Group, master_down_interval, master_window
from netlab import wait_for
from wire import Capture

from skat_plugin.election import trackfile

ADVERT = 0.1  # VRRPv3 sub-second adverts keep every test short


def role_now(node) -> str:
    """The node's role from its state.json: no CLI process, so timings stay honest."""
    return json.loads((node.app.run_dir / "state.json").read_text())["role"]


def answers_once(g: Group, seconds: float = 1.0) -> dict:
    """The subscriber probes ARP, then ND: every request is answered exactly once, and by one
    appliance only (the one whose kernel counter moved)."""
    result = {}
    for ip6, counter in ((False, "arp_replies"), (True, "nd_replies")):
        before = {n.name: n.app.show()["counters"][counter] for n in g.nodes}
        r = g.watch(seconds, ip6=ip6).result()
        after = {n.name: n.app.show()["counters"][counter] for n in g.nodes}
        moved = [k for k in before if after[k] > before[k]]
        assert r["replies"] > 0.9 * r["sent"], (counter, r)
        assert r["replies"] <= r["sent"], f"duplicate answers ({counter}): {r}"
        assert len(moved) == 1, f"{counter}: answered by {moved}"
        result[counter] = r
    return result


@pytest.fixture
def pair(lab):
    g = Group(lab, 2, advert_int=ADVERT)
    for n in g.nodes:
        g.start(n)
    assert g.wait_one_master(20) == "a"
    return g


def test_kill_master_keepalived_backup_takes_over_and_old_master_steps_down(pair: Group):
    a, b = pair.nodes
    answers_once(pair)
    for round_ in ("first crash", "crash after a restart"):  # the watch follows new pids
        t0 = time.monotonic()
        pair.kill_keepalived(a)  # -9 of parent and VRRP child: no stop event, no priority 0
        wait_for(lambda: role_now(a) == "backup", 2, 0.005, f"a to step down ({round_})")
        stepped_down = time.monotonic() - t0
        assert stepped_down < 1.0, f"{round_}: a stepped down after {stepped_down:.2f} s"
        wait_for(lambda: b.role() == "master", 3, 0.02, "b to take over")
        assert pair.masters() == ["b"]
        answers_once(pair)
        pair.start_keepalived(a)
        wait_for(lambda: pair.masters() == ["a"], 10, 0.05, "a to preempt back")


def test_link_down_fails_over_and_failback_preempts(pair: Group):
    a, _b = pair.nodes
    pair.link(a, False)
    wait_for(lambda: pair.masters() == ["b"], 10, 0.05, "b alone master after a's link down")
    assert a.keepalived_state() in ("FAULT", "BACKUP")
    answers_once(pair)
    pair.link(a, True)
    wait_for(lambda: pair.masters() == ["a"], 10, 0.05, "a to preempt after its link returns")
    answers_once(pair)


@pytest.mark.parametrize("pidfile", [True, False], ids=["pidfile", "fifo-only"])
def test_keepalived_reload_keeps_the_master_with_the_units_capabilities(lab, pidfile):
    """`systemctl reload keepalived` reopens the notify FIFO; under the unit's capabilities
    the daemon cannot read keepalived's fds. A reload must never silence the master."""
    g = Group(lab, 2, advert_int=ADVERT, unit_caps=True, watch_pidfile=pidfile)
    for n in g.nodes:
        g.start(n)
    assert g.wait_one_master(20) == "a"
    a = g.nodes[0]
    for _ in range(3):
        os.kill(int(a.pids["main"].read_text().split()[0]), signal.SIGHUP)
        time.sleep(0.5)
    time.sleep(1)
    assert a.keepalived_state() == "MASTER"
    assert g.masters() == ["a"], g.roles()
    answers_once(g)
    log = (a.app.dir / "daemon.log").read_text()
    assert "stepping down" not in log
    if not pidfile:
        assert "no watched pid file" in log


def test_nopreempt_keeps_the_new_master(lab):
    g = Group(lab, 2, advert_int=ADVERT, preempt=False)
    for n in g.nodes:
        g.start(n)
    first = g.wait_one_master(20)
    old = g.node(first)
    other = next(n for n in g.nodes if n is not old)
    g.kill_keepalived(old)
    wait_for(lambda: g.masters() == [other.name], 5, 0.05, "the peer to take over")
    g.start_keepalived(old)
    time.sleep(10 * ADVERT + 1)  # long enough for a preemption that must not happen
    assert g.masters() == [other.name]
    assert old.keepalived_state() == "BACKUP"


def test_three_appliances_elect_one_and_survive_the_loss_of_any(lab):
    g = Group(lab, 3, advert_int=ADVERT)
    for n in g.nodes:
        g.start(n)
    g.wait_one_master(20)
    for victim in g.nodes:
        g.kill_keepalived(victim)
        wait_for(lambda v=victim: v.role() == "backup", 2, 0.05, f"{victim.name} down")
        survivor = g.wait_one_master(5)
        assert survivor != victim.name
        answers_once(g, 0.5)
        g.start_keepalived(victim)
        g.wait_one_master(10)


def test_rapid_flaps_converge_to_keepalived_final_state(pair: Group):
    a, b = pair.nodes
    # 50 flaps of a's VRRP link: keepalived on both sides changes state as fast as it can.
    for _ in range(50):
        pair.lab.run(a.app.ns, "ip", "link", "set", "v0", "down")
        time.sleep(0.02)
        pair.lab.run(a.app.ns, "ip", "link", "set", "v0", "up")
        time.sleep(0.02)

    def settled() -> bool:
        return all(n.role() == ("master" if n.keepalived_state() == "MASTER" else "backup")
                   for n in pair.nodes) and len(pair.masters()) == 1
    wait_for(settled, 10, 0.1, "every role equal to its keepalived's final state")
    time.sleep(master_down_interval(ADVERT, b.priority) * 2)
    assert settled()


def test_partition_is_split_brain_on_both_and_clears(pair: Group):
    lab = pair.lab
    # Block VRRP (IP protocol 112) on the VRRP network's switch: a partition.
    lab.run(pair.mgmt, "nft", "add table bridge part; add chain bridge part block { type filter "
            "hook forward priority 0; policy accept; }; add rule bridge part block ip protocol "
            "112 drop")
    wait_for(lambda: len(pair.masters()) == 2, 5, 0.05, "both to become master")
    t0 = time.monotonic()
    wait_for(lambda: all(n.app.show()["split_brain"] for n in pair.nodes), 2, 0.05,
             "split_brain on both within 2 s")
    detected = time.monotonic() - t0
    # VRRP back: a (priority 200) stays master. Watch what it sends into the switch.
    with Capture(lab, pair.sw, "p1", "inbound and arp") as cap:
        lab.run(pair.mgmt, "nft", "delete table bridge part")
        assert pair.wait_one_master(10) == "a"
        a = pair.nodes[0]
        status = a.app.run_dir / "daemon.json"
        wait_for(lambda: not json.loads(status.read_text())["split_brain"], 10, 0.01,
                 "split_brain to clear")
        cleared = time.time()
        time.sleep(1.0)
    garps = [f.time for f in cap.stop() if f.src.lower() == VMAC and f.op == 1
             and f.psrc == f.pdst]
    # The survivor announces again when the split clears: a burst (vrrp_garp_count=5,
    # 0.1 s apart), where the 1 s refresh alone would send one.
    burst = [t for t in garps if cleared - 0.3 <= t <= cleared + 0.9]
    assert len(burst) >= 3, (cleared, garps)
    wait_for(lambda: not any(n.app.show()["split_brain"] for n in pair.nodes), 10, 0.1,
             "split_brain to clear on b too")
    answers_once(pair)
    print(f"split brain seen on both {detected:.2f} s after both became master")


def test_old_master_emits_nothing_once_backup(pair: Group):
    a = pair.nodes[0]
    pair.kill_keepalived(a)
    wait_for(lambda: pair.masters() == ["b"], 5, 0.05, "b to take over")
    # a is backup now. Capture what a sends into the switch while the subscriber talks to
    # the gateway (ARP and ND) and a's uplink host pings the subscriber through a's bridge.
    a_macs = {pair.lab.run(a.app.ns, "cat", f"/sys/class/net/{dev}/address").stdout.strip()
              for dev in ("i0", "o0", "skatbr0")} | {VMAC}
    up_mac = pair.lab.run(a.up, "cat", "/sys/class/net/u0/address").stdout.strip()
    with Capture(pair.lab, pair.sw, "p1", "inbound") as cap:
        ping = pair.lab.popen(a.up, "ping", "-c", "20", "-i", "0.05", "100.64.0.10")
        answers_once(pair, 1.0)
        ping.wait(10)
    frames = cap.stop()
    ours = [f for f in frames if f.src.lower() in a_macs]
    assert ours == [], f"backup a emitted {len(ours)} frames: {ours[:3]}"
    bridged = [f for f in frames if f.src.lower() == up_mac]
    assert len(bridged) >= 10, f"the capture saw too little of a's bridged traffic: {frames}"


def test_booting_backup_dual_master_window_and_start_as_backup(pair: Group):
    """SKAT starts every appliance as master: a booting backup is a second master until its
    keepalived says BACKUP. Measured here; vrrp_start_role=backup closes the window."""


    b = pair.nodes[1]

    def boot() -> None:
        pair.start(b)
        wait_for(lambda: role_now(b) == "backup", 10, 0.01, "b's keepalived to say BACKUP")

    pair.stop(b)
    timeline = pair.role_timeline(b, boot, 0.2)
    window = master_window(timeline)
    assert 0 < window < 3.0, timeline
    assert pair.masters() == ["a"]
    print(f"dual-master window while b boots as master: {window * 1000:.0f} ms")

    pair.stop(b)
    b.app.write_conf(b.app.conf_path.read_text() + "vrrp_start_role=backup\n")
    timeline = pair.role_timeline(b, boot, 0.2)
    assert master_window(timeline) == 0, timeline
    assert pair.masters() == ["a"]
    answers_once(pair)


# -- fitness: the daemon's track file (issue 9: no track script every second) ---------------
def _unbridge(g: Group, n) -> None:
    g.lab.run(n.app.ns, "ip", "link", "set", "o0", "nomaster")


def _rebridge(g: Group, n) -> None:
    g.lab.run(n.app.ns, "ip", "link", "set", "o0", "master", "skatbr0")


def _kill_daemon(g: Group, n) -> None:
    n.daemon.kill()  # -9: no clean exit; the guardian writes the verdict
    n.daemon.wait()


def _stop_plugin(g: Group, n) -> None:
    n.app.cli("stop")


def _start_plugin(g: Group, n) -> None:
    n.app.cli("start")


UNFIT = {  # what makes a master unfit, what mends it; only the track file sees these
    "ports-not-bridged": (_unbridge, _rebridge),
    "daemon-killed": (_kill_daemon, lambda g, n: g.start_daemon(n)),
    "plugin-stopped": (_stop_plugin, _start_plugin),
}


@pytest.mark.parametrize("cause", list(UNFIT))
def test_unfit_master_hands_over_at_once_and_takes_back_once_fit(pair: Group, cause: str):
    a, b = pair.nodes
    unfit, mend = UNFIT[cause]
    t0 = time.monotonic()
    unfit(pair, a)
    wait_for(lambda: a.keepalived_state() == "FAULT", 2, 0.005, "a's keepalived in FAULT")
    fault = time.monotonic() - t0
    wait_for(lambda: role_now(b) == "master", 2, 0.005, "b to take over")
    took = time.monotonic() - t0
    print(f"{cause}: a in FAULT after {fault * 1000:.0f} ms, b master after "
          f"{took * 1000:.0f} ms")
    # The track script needed two failed runs a second apart (fall 2) before FAULT alone.
    assert took < 1.0, took
    assert pair.masters() == ["b"]
    if cause != "plugin-stopped":  # a stopped plugin has no counters to compare
        answers_once(pair)
    mend(pair, a)
    wait_for(lambda: pair.masters() == ["a"], 10, 0.05, "a fit again, to preempt")
    assert a.keepalived_state() == "MASTER"
    answers_once(pair)


def test_keepalived_before_any_daemon_is_fault_until_one_judges(lab):
    """A track file no daemon wrote is not "fit": keepalived creates it unfit (init_file)."""
    g = Group(lab, 2, advert_int=ADVERT)
    a, b = g.nodes
    g.start(b)
    assert g.wait_one_master(20) == "b"
    a.app.cli("start")  # the plugin, no daemon yet
    track = a.app.run_dir / trackfile.NAME
    assert not track.exists()
    g.start_keepalived(a)
    # At its start keepalived says "entering FAULT state (tracked file ...)", in lower case.
    wait_for(lambda: "entering FAULT state (tracked file skat_fitness" in a.log.read_text(),
             5, 0.02, "a's keepalived in FAULT from the start")
    time.sleep(master_down_interval(ADVERT, a.priority) * 3)
    assert a.keepalived_state() is None, "a's keepalived left FAULT"
    assert track.read_text() == "1\n"
    wait_for(lambda: g.masters() == ["b"], 5, 0.05, "a backup (notify-fault)")
    g.start_daemon(a)
    wait_for(lambda: g.masters() == ["a"], 10, 0.05, "a fit, to preempt")
    assert track.read_text().startswith("0\n")


class ProcEvents:
    """The kernel's process events (the proc connector, what keepalived's track_process
    reads): who forked, as it happens. Only in the initial network namespace: this test
    process, not the appliances, listens."""

    NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC = 11, 1, 1
    PROC_CN_MCAST_LISTEN, PROC_EVENT_FORK = 1, 0x1

    def __enter__(self) -> ProcEvents:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, self.NETLINK_CONNECTOR)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, self.CN_IDX_PROC))
        op = struct.pack("=I", self.PROC_CN_MCAST_LISTEN)
        cn = struct.pack("=IIIIHH", self.CN_IDX_PROC, self.CN_VAL_PROC, 0, 0, len(op), 0) + op
        self.sock.send(struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn)  # NLMSG_DONE
        self.sock.settimeout(0.1)
        self.forks: list[tuple[int, int]] = []  # (parent tgid, child pid)
        self.lost = False
        self.stopping = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        while not self.stopping:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # ENOBUFS: the machine forked faster than we read
                self.lost = True
                continue
            # nlmsghdr (16) + cn_msg (20) + proc_event: what, cpu, timestamp, then the fork's
            # parent pid, parent tgid, child pid, child tgid.
            if len(data) >= 68 and struct.unpack_from("=I", data, 36)[0] == \
                    self.PROC_EVENT_FORK:
                _ppid, ptgid, cpid, ctgid = struct.unpack_from("=IIII", data, 52)
                if cpid == ctgid:  # a process, not a thread
                    self.forks.append((ptgid, cpid))

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.thread.join()
        self.sock.close()


def test_idle_group_starts_no_process(pair: Group):
    """Quiet, neither keepalived nor the daemon starts a process (the track script was a
    python3 a second on every appliance). The detector is shown to see keepalived's forks."""
    time.sleep(1.0)  # the takeover's notify scripts are over
    who = {}
    for n in pair.nodes:
        who[n.daemon.pid] = f"{n.name}: daemon"
        for key in ("main", "vrrp"):
            who[int(n.pids[key].read_text().split()[0])] = f"{n.name}: keepalived {key}"
    with ProcEvents() as ev:
        time.sleep(5.0)
        quiet = [(who[p], c) for p, c in ev.forks if p in who]
        pair.link(pair.nodes[1], False)  # b to FAULT: keepalived runs notify-fault
        wait_for(lambda: any(who.get(p) == "b: keepalived vrrp" for p, _ in ev.forks), 5,
                 0.02, "the fork of b's notify script to be seen")
    pair.link(pair.nodes[1], True)
    assert not ev.lost, "events were lost: the machine forked faster than the test read"
    print(f"forks by keepalived and the daemons in 5 quiet seconds: {quiet}")
    assert quiet == []
