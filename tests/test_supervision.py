"""The daemon reacts to the kernel instead of polling it (issue 9).

Rules removed or altered by another writer come back in the current role; the operator's
own tables are left alone; a writer that keeps undoing the repair is reported and backed
off from; the election process's death is a step-down in milliseconds (pidfd); a quiet
daemon does not wake up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import build_topo
from daemonlab import FAST_CONF, role_of, start_daemon
from netlab import Lab, nft_tables, wait_for

PLUGIN_TABLES = ["bridge skat_plugin_backup", "netdev skat_plugin_backup",
                 "netdev skat_plugin_master"]
OPERATOR = """table inet operator {
    chain input {
        type filter hook input priority 10; policy accept;
        tcp dport 22 counter accept
    }
}
"""


def plugin_tables(lab: Lab, ns: str) -> list[str]:
    return [t for t in nft_tables(lab, ns) if "skat_plugin" in t]


def wait_repaired(lab: Lab, ns: str, expected: list[str], timeout: float = 2.0) -> float:
    """Seconds until the plugin's tables are back as `expected` (polled every 2 ms)."""
    t0 = time.monotonic()
    wait_for(lambda: plugin_tables(lab, ns) == expected, timeout, 0.002, "the repair")
    return time.monotonic() - t0


@pytest.mark.parametrize("role", ["master", "backup"])
def test_removed_or_altered_rules_come_back_and_the_operators_tables_stay(
        lab: Lab, role: str) -> None:
    topo = build_topo(lab, FAST_CONF)
    app, ns = topo.app, topo.app.ns
    d = start_daemon(app)
    try:
        app.cli("vrrp", "set", role)
        expected = plugin_tables(lab, ns)
        assert expected == [f"{t} dormant" if ("backup" in t) == (role == "master") else t
                            for t in PLUGIN_TABLES], expected
        rules = lab.run(ns, "nft", "list", "table", "netdev", "skat_plugin_master").stdout
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=OPERATOR,
                       text=True, check=True)
        times = {}

        # 1. One table deleted: back, the operator's table untouched.
        lab.run(ns, "nft", "delete", "table", "netdev", "skat_plugin_master")
        times["one table"] = wait_repaired(lab, ns, expected)
        assert "table inet operator" in lab.run(ns, "nft", "list", "tables").stdout

        # 2. A rule deleted inside a chain (the split-brain counter's, first in port_in).
        listing = lab.run(ns, "nft", "-a", "list", "chain", "netdev", "skat_plugin_master",
                          "port_in").stdout
        handle = re.search(r"foreign_master_frames.*# handle (\d+)", listing).group(1)
        lab.run(ns, "nft", "delete", "rule", "netdev", "skat_plugin_master", "port_in",
                "handle", handle)
        t0 = time.monotonic()
        wait_for(lambda: "foreign_master_frames\"" in lab.run(
            ns, "nft", "list", "chain", "netdev", "skat_plugin_master", "port_in").stdout,
            2, 0.002, "the deleted rule to come back")
        times["one rule"] = time.monotonic() - t0

        # 3. The whole rule set flushed (Debian's nftables.service does it).
        lab.run(ns, "nft", "flush", "ruleset")
        times["flush ruleset"] = wait_repaired(lab, ns, expected)

        assert lab.run(ns, "nft", "list", "table", "netdev",
                       "skat_plugin_master").stdout == rules
        info = app.show()
        assert (info["role"], info["kernel_role"]) == (role, role)
        print(f"\n{role}: repaired in " +
              ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items()))
        # The bound is 100 ms; the test leaves room for a loaded 2-core CI.
        assert max(times.values()) < 0.5, times
        wait_for(lambda: d.status["rule_repairs"] >= 3, 3, what="the repairs counted")
        assert d.output().count("rules repaired") >= 3
        assert "skat_plugin_rule_repairs_total" in d.metrics.read_text()
    finally:
        d.stop()
        print(d.output()[-3000:])  # shown when the test fails


def test_a_writer_that_keeps_deleting_is_reported_and_backed_off(lab: Lab) -> None:
    """A flush storm: the daemon backs off from the writer, and meanwhile the appliance is
    unfit (keepalived hands over) instead of a master sitting without its rules."""
    from skat_plugin.daemon import repair

    topo = build_topo(lab, FAST_CONF)
    app, ns = topo.app, topo.app.ns
    track = app.run_dir / "keepalived.track"
    d = start_daemon(app)
    try:
        wait_for(lambda: track.read_text().startswith("0"), 3, what="fit at first")
        expected = plugin_tables(lab, ns)
        for _ in range(12):
            lab.run(ns, "nft", "delete", "table", "netdev", "skat_plugin_master",
                    check=False)
            time.sleep(0.05)
        wait_for(lambda: "keeps removing the plugin's rules" in d.output(), 3,
                 what="the flapping writer reported")
        wait_for(lambda: "keeps removing the plugin's rules" in track.read_text(), 2, 0.01,
                 what="unfit while backing off")
        repairs = d.status["rule_repairs"]
        assert 3 <= repairs < 12, repairs
        # The back-off ends: the rules come back once the writer stops, and the appliance
        # is fit again once a repair window passed without a repair.
        wait_repaired(lab, ns, expected, timeout=5)
        wait_for(lambda: track.read_text().startswith("0"), repair.REPAIR_WINDOW + 5, 0.1,
                 what="fit again after a quiet repair window")
    finally:
        d.stop()


def test_killed_election_process_steps_down_in_milliseconds(lab: Lab) -> None:
    topo = build_topo(lab, FAST_CONF)
    pidfile = topo.app.dir / "vrrp.pid"
    took = []
    d = None
    try:
        for _ in range(3):
            fake = subprocess.Popen(["sleep", "600"])  # keepalived's VRRP child stands in
            pidfile.write_text(f"{fake.pid}\n")
            if d is None:
                d = start_daemon(topo.app, "--no-fifo", "--watch-pidfile", str(pidfile))
            wait_for(lambda d=d: d.status["election_alive"] is True, 5, 0.01, "election seen")
            topo.app.cli("vrrp", "set", "master")
            assert role_of(topo.app) == "master"
            t0 = time.monotonic()
            os.kill(fake.pid, signal.SIGKILL)
            wait_for(lambda: role_of(topo.app) == "backup", 2, 0.0005, "step down")
            took.append(time.monotonic() - t0)
            fake.wait()
        print(f"\nstep-down after kill -9: {', '.join(f'{t * 1000:.1f}' for t in took)} ms")
        # The bound is 5 ms; room here for a loaded CI (a poll every 20 ms before).
        assert min(took) < 0.05, took
    finally:
        if d is not None:
            d.stop()


@pytest.mark.parametrize("role", ["backup", "master"])
def test_a_quiet_daemon_does_not_wake_up(lab: Lab, role: str) -> None:
    """Nothing happening: the daemon sleeps in poll() (metrics every 15 s aside). The
    master too, its periodic GARP refresh off: the split-brain watch is the kernel's NFLOG
    report of a foreign frame, not a look at a counter."""
    topo = build_topo(lab, FAST_CONF.replace("vrrp_garp_refresh=0.5", "vrrp_garp_refresh=0"))
    d = start_daemon(topo.app)
    try:
        if role == "backup":
            topo.app.cli("vrrp", "set", "backup")
        else:
            d.write("MASTER")  # elected: the split-brain watch is on
            wait_for(lambda: d.status["announcement_rounds"] >= 3, 5, 0.02, "takeover burst")
        time.sleep(1.0)  # let the switch's own events settle

        proc = Path(f"/proc/{d.proc.pid}")

        def wakeups() -> int:
            text = (proc / "status").read_text()
            return int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", text).group(1))

        def cpu_ticks() -> int:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        w0, c0 = wakeups(), cpu_ticks()
        time.sleep(4.0)
        woke, ticks = wakeups() - w0, cpu_ticks() - c0
        print(f"\nquiet {role} daemon over 4 s: {woke} wake-ups, {ticks} CPU ticks")
        assert woke <= 3, woke  # a metrics refresh may fall in the window
        assert ticks <= 2, ticks  # 0.2 % of a core over 4 s is under one 10 ms tick
        assert json.loads((topo.app.run_dir / "daemon.json").read_text())["role"] == role
    finally:
        d.stop()
