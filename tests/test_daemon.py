"""The supervising daemon's promises: orders are applied one at a time and in order, the role
converges to keepalived's last word, a dead election means step down within 1 s, and the
daemon tells systemd and Prometheus what it is doing."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BASE_CONF, build_topo
from daemonlab import FAST_CONF, role_of, start_daemon, topo_with_daemon
from netlab import Lab, wait_for

from skat_plugin import control


def test_control_socket_round_trip_and_cli_goes_through_it(lab: Lab, monkeypatch) -> None:
    topo, d = topo_with_daemon(lab)
    monkeypatch.setenv("SKAT_RUN_DIR", str(topo.app.run_dir))
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        answer = control.request({"op": "status"})
        times.append(time.perf_counter() - t0)
    assert answer and answer["pid"] == d.proc.pid and answer["role"] == "master", answer
    print(f"control socket status round trip: median {sorted(times)[10] * 1000:.2f} ms")

    served = answer["requests"]
    out = topo.app.cli("vrrp", "set", "backup", "--cause", "test").stdout
    assert out.strip() == "role: backup"
    assert control.request({"op": "status"})["requests"] == served + 2  # the CLI's set, ours
    assert topo.app.show()["cause"] == "test"
    assert control.request({"op": "set", "role": "bogus"})["error"].startswith("unknown role")
    assert "error" in control.request({"op": "nope"})


def test_no_daemon_means_no_delay(lab: Lab, monkeypatch) -> None:
    run = lab.path("run")
    run.mkdir()
    monkeypatch.setenv("SKAT_RUN_DIR", str(run))
    t0 = time.perf_counter()
    assert control.request({"op": "status"}) is None  # no socket at all
    missing = time.perf_counter() - t0
    stale = socket.socket(socket.AF_UNIX)  # a dead daemon's socket: bound, nobody listens
    stale.bind(str(run / "control.sock"))
    stale.close()
    t0 = time.perf_counter()
    assert control.request({"op": "status"}) is None
    refused = time.perf_counter() - t0
    # Microseconds when idle; the bound only has to show "no wait" (the timeout is 30 s).
    assert missing < 0.1 and refused < 0.1, (missing, refused)


def test_fifo_flaps_converge_to_keepalived_last_state(lab: Lab) -> None:
    topo, d = topo_with_daemon(lab)
    app = topo.app
    t0 = time.monotonic()
    for i in range(50):  # 50 flaps, some in one write, some apart: the last word wins
        d.write("BACKUP", "MASTER") if i % 5 else d.write("MASTER")
        d.write("BACKUP")
        if i % 10 == 0:
            time.sleep(0.02)
    wait_for(lambda: (app.show().get("keepalived") or {}).get("state") == "BACKUP"
             and app.show()["role"] == "backup", 10, 0.05, "role backup after 50 flaps")
    print(f"50 flaps ending BACKUP converged in {time.monotonic() - t0:.2f} s")
    time.sleep(0.3)  # nothing late may flip it back
    assert app.show()["role"] == "backup"
    assert app.show()["kernel_role"] == "backup"

    for _ in range(50):
        d.write("MASTER", "FAULT")
    d.write("MASTER")
    wait_for(lambda: (app.show().get("keepalived") or {}).get("state") == "MASTER"
             and role_of(app) == "master", 10, 0.05, "role master after flaps")
    assert app.show()["kernel_role"] == "master"
    d.write("STOP")
    wait_for(lambda: role_of(app) == "backup", 5, 0.02, "STOP means backup")


def test_an_event_that_changes_no_state_does_not_hide_the_last_change(lab: Lab) -> None:
    """keepalived writes MASTER_RX_LOWER_PRI (a master heard a lower priority) after its
    MASTER in the same batch: the MASTER still counts (the flaps of a group's test once
    left a master's keepalived with a backup's data plane)."""
    topo, d = topo_with_daemon(lab)
    app = topo.app
    d.write("BACKUP")
    wait_for(lambda: role_of(app) == "backup", 5, 0.02, "backup")
    d.write("FAULT", "BACKUP", "MASTER", "MASTER_RX_LOWER_PRI")
    wait_for(lambda: role_of(app) == "master", 5, 0.02, "MASTER applied")
    assert app.show()["keepalived"]["state"] == "MASTER"


def test_stale_notify_script_after_fifo_backup_is_ignored(lab: Lab) -> None:
    topo, d = topo_with_daemon(lab)
    app = topo.app
    d.write("MASTER", "BACKUP")
    wait_for(lambda: (app.show().get("keepalived") or {}).get("state") == "BACKUP",
             5, 0.02, "FIFO BACKUP applied")
    res = app.cli("vrrp", "set", "master", check=False)  # keepalived's notify_master, late
    out = res.stdout
    assert res.returncode == 10, res  # nothing changed (issue 16 item 9)
    assert out.startswith("ignored:"), out
    assert app.show()["role"] == "backup"
    # keepalived throws the script's output away: the operator must find it in the log.
    wait_for(lambda: "vrrp set master (cli) ignored" in d.output(), 2, 0.02,
             "the dropped order in the log")
    # --force against keepalived's BACKUP would make two gateways: refused (issue 16).
    res = app.cli("vrrp", "set", "master", "--force", check=False)
    assert res.returncode == 10 and "vrrp handover" in res.stderr, res
    assert app.show()["role"] == "backup"
    d.write("MASTER")
    wait_for(lambda: role_of(app) == "master", 5, 0.02, "the next FIFO event wins")


def test_only_the_configured_instance_moves_the_role(lab: Lab) -> None:
    """Another vrrp_instance of the same keepalived (a management address, say) must not
    move the data plane; vrrp_instance names the one that does."""
    topo, d = topo_with_daemon(lab)
    d.write("BACKUP")
    wait_for(lambda: role_of(topo.app) == "backup", 5, 0.02, "our instance to move the role")
    # daemon.json follows each change: count the role changes once it shows this one.
    wait_for(lambda: d.status["role"] == "backup", 2, 0.02, "the daemon's status")
    changes = d.status["role_changes"]
    d.write("MASTER", instance="mgmt_vip")  # would make a second master if it were followed
    wait_for(lambda: "'mgmt_vip' is not 'skat_plugin'" in d.output(), 5, 0.02,
             "the foreign instance to be reported")
    # The report is written once the event was handled; daemon.json is written at every
    # change, so a role change would show by now.
    assert role_of(topo.app) == "backup"
    assert d.status["role_changes"] == changes
    d.write("MASTER")
    wait_for(lambda: role_of(topo.app) == "master", 5, 0.02, "our instance to move it back")


def test_fifo_closed_and_reopened_is_a_reload_not_a_step_down(lab: Lab) -> None:
    """keepalived closes and reopens its notify FIFO on every reload (SIGHUP): that alone
    must never silence a master. Events written after the reopen still arrive."""
    topo, d = topo_with_daemon(lab)
    d.write("MASTER")
    wait_for(lambda: "keepalived" in (topo.app.show() or {}), 5, 0.02, "MASTER applied")
    d.release_fifo()
    wait_for(lambda: "closed its notify FIFO" in d.output(), 2, 0.02, "the close noticed")
    time.sleep(0.5)
    assert role_of(topo.app) == "master"
    assert "stepping down" not in d.output()
    d.write("BACKUP")  # the reloaded keepalived speaks again
    wait_for(lambda: role_of(topo.app) == "backup", 5, 0.02, "events after the reopen")
    assert "no watched pid file" in d.output()  # keepalived speaks, nothing watches it


def test_watched_pid_dies_as_zombie_while_master_steps_down(lab: Lab) -> None:
    """ucarp or keepalived watched by pid file; a killed, unreaped process is a zombie."""
    topo = build_topo(lab, FAST_CONF)
    pidfile = topo.app.dir / "ucarp.pid"
    fake = subprocess.Popen(["sleep", "600"])  # stands in for ucarp; we do not reap it
    try:
        pidfile.write_text(f"{fake.pid}\n")
        d = start_daemon(topo.app, "--no-fifo", "--watch-pidfile", str(pidfile))
        wait_for(lambda: d.status["election_alive"] is True, 5, 0.02, "election seen")
        assert role_of(topo.app) == "master"
        t0 = time.monotonic()
        os.kill(fake.pid, signal.SIGKILL)
        wait_for(lambda: role_of(topo.app) == "backup", 2, 0.01, "step down")
        took = time.monotonic() - t0
        assert Path(f"/proc/{fake.pid}").exists()  # still a zombie: kill -0 would succeed
        print(f"step down after kill -9 of the watched pid: {took * 1000:.0f} ms")
        assert took < 1.0
    finally:
        fake.kill()
        fake.wait()


KEEPALIVED_CONF = """global_defs {{
{fifo_line}
    script_user root
    enable_script_security
    vrrp_garp_master_delay 0
}}
vrrp_instance skat_plugin {{
    state BACKUP
    interface v0
    virtual_router_id 77
    priority 150
    advert_int 0.1
    version 3
    virtual_ipaddress {{
        192.0.2.100/24
    }}
}}
"""


@pytest.mark.parametrize("detect", ["fifo", "pidfile"])
def test_kill9_of_real_keepalived_while_master_steps_down_within_1s(lab: Lab,
                                                                    detect: str) -> None:
    """The watched VRRP child's pid file names a dead (zombie) process: step down. "fifo":
    keepalived also writes the notify FIFO (production); "pidfile": no FIFO (as ucarp)."""
    topo = build_topo(lab, FAST_CONF)
    app = topo.app
    peer = lab.ns("peer")
    lab.veth(app.ns, "v0", peer, "v1")
    lab.run(app.ns, "ip", "addr", "add", "192.0.2.1/24", "dev", "v0")
    if detect == "fifo":
        d = start_daemon(app, "--watch-pidfile", str(app.dir / "vrrp.pid"))
        fifo_line = f"    notify_fifo {d.fifo}"
    else:  # keepalived without notify_fifo, as ucarp would be: only the pid file tells
        d = start_daemon(app, "--no-fifo", "--watch-pidfile", str(app.dir / "vrrp.pid"))
        fifo_line = ""
    conf = app.dir / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF.format(fifo_line=fifo_line))
    pids = {k: app.dir / f"{k}.pid" for k in ("main", "vrrp", "check")}
    with open(app.dir / "keepalived.log", "w") as log:
        lab.popen(app.ns, "keepalived", "-n", "-l", "-D", "-f", str(conf),
                  "-p", str(pids["main"]), "-r", str(pids["vrrp"]), "-c", str(pids["check"]),
                  stdout=log)
    if detect == "fifo":
        wait_for(lambda: (app.show().get("keepalived") or {}).get("state") == "MASTER", 10,
                 0.05, "keepalived MASTER through the FIFO")
    else:
        wait_for(lambda: "Entering MASTER" in (app.dir / "keepalived.log").read_text(), 10,
                 0.05, "keepalived MASTER in its log")
    assert role_of(app) == "master"
    wait_for(lambda: d.status["election_alive"] is True, 2, 0.02, "election seen alive")

    t0 = time.monotonic()
    for name in ("main", "vrrp"):  # a crash: no STOP event, no priority 0
        os.kill(int(pids[name].read_text()), signal.SIGKILL)
    wait_for(lambda: role_of(app) == "backup", 2, 0.01, "step down")
    took = time.monotonic() - t0
    print(f"step down after kill -9 of keepalived ({detect}): {took * 1000:.0f} ms")
    assert took < 1.0
    assert app.show()["kernel_role"] == "backup"
    if detect == "fifo":
        assert app.show()["keepalived"]["state"] == "STOP"  # a late notify_master is stale
        assert app.cli("vrrp", "set", "master", check=False).stdout.startswith("ignored:")


def _parse_prometheus(text: str) -> dict[str, float]:
    """Strict enough for the textfile collector: TYPE before samples, one sample a line."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("gauge", "counter"), line
            typed.add(name)
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = re.fullmatch(r'([a-z_:][a-z0-9_:]*)(\{[a-z_]+="[^"]*"\})? (-?[0-9.e+]+)', line)
        assert m, f"not Prometheus text: {line!r}"
        assert m.group(1) in typed, f"sample before its TYPE: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def test_metrics_file_is_prometheus_text(lab: Lab) -> None:
    topo, d = topo_with_daemon(lab)
    lab.run(topo.sub, "arping", "-c", "2", "-w", "3", "-I", "s0", "100.64.0.1")
    topo.app.cli("vrrp", "set", "backup")

    def current() -> dict[str, float]:
        return _parse_prometheus(d.metrics.read_text())

    wait_for(lambda: current().get('skat_plugin_role{role="backup"}') == 1, 5, 0.05,
             "metrics to show backup")
    m = current()
    assert m['skat_plugin_role{role="master"}'] == 0
    assert m["skat_plugin_vrrp_enable"] == 1
    assert m["skat_plugin_role_changes_total"] == 1
    assert m["skat_plugin_arp_replies_total"] == 2  # monotonic across the switch
    assert m["skat_plugin_split_brain"] == 0
    assert abs(m["skat_plugin_role_since_seconds"] - time.time()) < 30
    for name in ("nd_replies", "foreign_master_frames", "guard_drops"):
        assert f"skat_plugin_{name}_total" in m
    assert not list(d.metrics.parent.glob(".*.tmp"))  # written by rename, nothing left over


def test_port_watch_reports_a_port_going_down_and_coming_back(lab: Lab) -> None:
    topo, d = topo_with_daemon(lab)
    assert d.status["port_problems"] == []
    lab.run(topo.app.ns, "ip", "link", "set", "o0", "down")
    wait_for(lambda: d.status["port_problems"] == ["o0 is down"], 3, 0.05,
             "the daemon to see o0 down")
    wait_for(lambda: _parse_prometheus(d.metrics.read_text()).get(
        "skat_plugin_port_problems") == 1, 5, 0.05, "metrics to count the port problem")
    assert "port problem: o0 is down" in d.output()
    lab.run(topo.app.ns, "ip", "link", "set", "o0", "up")
    wait_for(lambda: d.status["port_problems"] == [], 3, 0.05, "the daemon to see o0 up")
    assert "port recovered: o0 is down no longer" in d.output()


def test_sd_notify_ready_status_watchdog_and_signals(lab: Lab) -> None:
    topo = build_topo(lab, FAST_CONF)
    path = lab.path("notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    got: list[str] = []

    def drain_until(pred, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"sd_notify messages so far: {got}"
            with contextlib.suppress(TimeoutError):
                got.extend(sock.recv(4096).decode().splitlines())

    try:
        d = start_daemon(topo.app, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        drain_until(lambda: "READY=1" in got and "WATCHDOG=1" in got)
        assert any(m.startswith("STATUS=role=master since=") and "split_brain=no" in m
                   for m in got), got
        topo.app.cli("vrrp", "set", "backup")
        drain_until(lambda: any(m.startswith("STATUS=role=backup") for m in got))

        topo.app.write_conf(BASE_CONF.replace("vrrp_enable=1", "vrrp_enable=0"))
        d.proc.send_signal(signal.SIGHUP)  # reload: vrrp_enable=0 means master
        wait_for(lambda: role_of(topo.app) == "master", 5, 0.05, "SIGHUP reload")
        assert topo.app.show()["cause"] == "reload"

        assert d.stop() == 0
        drain_until(lambda: "STOPPING=1" in got)
        assert not (topo.app.run_dir / "daemon.pid").exists()
        assert not (topo.app.run_dir / "control.sock").exists()
        assert topo.app.show()["kernel_role"] == "master"  # rules stay: ExecStopPost's job
    finally:
        sock.close()


def test_second_daemon_refuses_and_cli_daemon_runs_from_config(lab: Lab) -> None:
    fifo = lab.path("from-conf.fifo")
    topo = build_topo(lab, FAST_CONF + f"vrrp_notify_fifo={fifo}\n")
    d = start_daemon(topo.app, via_cli=True)
    assert d.status["fifo"] == str(fifo) and fifo.is_fifo()
    assert oct(fifo.stat().st_mode & 0o777) == "0o600"
    second = topo.app.cli("daemon", check=False)
    assert second.returncode != 0 and "already runs" in second.stderr
    assert d.status["pid"] == d.proc.pid  # the first one's files are untouched
    assert json.loads((topo.app.run_dir / "daemon.pid").read_text()) == d.proc.pid


def test_errors_through_the_daemon_keep_their_exit_codes(lab: Lab) -> None:
    """With or without the daemon in between, an operator's script sees the same codes."""
    topo, d = topo_with_daemon(lab)
    app = topo.app
    rules = lab.run(app.ns, "nft", "list", "ruleset").stdout
    app.write_conf(FAST_CONF.replace("bras_arp_ip=100.64.0.1", "bras_arp_ip=300.1.1.1"))
    res = app.cli("reload", check=False)
    assert res.returncode == 6, res
    assert len(res.stderr.strip().splitlines()) == 1 and "bras_arp_ip" in res.stderr
    assert lab.run(app.ns, "nft", "list", "ruleset").stdout == rules
    app.write_conf(FAST_CONF.replace("vrrp_enable=1", "vrrp_enable=0"))
    app.cli("reload")
    res = app.cli("vrrp", "set", "backup", check=False)
    assert res.returncode == 10 and "vrrp_enable=0" in res.stderr, res
    wait_for(lambda: d.status["requests"] >= 3, 2, 0.05, "all three through the daemon")


def test_pid_watch_ignores_a_stranger_and_follows_a_restart(lab: Lab) -> None:
    """A stale pid file whose pid now belongs to a process started later is not the
    election; a restarted election process (new pid written) is followed without a step
    down, and its death is still seen."""
    topo = build_topo(lab, FAST_CONF)
    pidfile = topo.app.dir / "vrrp.pid"
    procs = [subprocess.Popen(["sleep", "600"])]
    old = procs[0]
    pidfile.write_text(f"{old.pid}\n")
    os.utime(pidfile, (time.time() - 60, time.time() - 60))  # written a minute ago...
    try:
        d = start_daemon(topo.app, "--no-fifo", "--watch-pidfile", str(pidfile))
        time.sleep(0.3)
        assert d.status["election_alive"] is None  # ...by somebody else: not adopted
        os.utime(pidfile)  # now it is the writer's file
        wait_for(lambda: d.status["election_alive"] is True, 3, 0.02, "adopted")
        new = subprocess.Popen(["sleep", "600"])  # a restart: the new process writes its pid
        procs.append(new)
        pidfile.write_text(f"{new.pid}\n")
        old.kill()
        old.wait()
        time.sleep(0.3)
        assert role_of(topo.app) == "master", d.output()
        assert "stepping down" not in d.output()
        new.kill()
        wait_for(lambda: role_of(topo.app) == "backup", 2, 0.01, "step down")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_election_that_died_while_the_daemon_was_down_is_seen_at_start(lab: Lab) -> None:
    topo = build_topo(lab, FAST_CONF)
    pidfile = topo.app.dir / "vrrp.pid"
    election = subprocess.Popen(["sleep", "600"])
    pidfile.write_text(f"{election.pid}\n")
    try:
        d = start_daemon(topo.app, "--no-fifo", "--watch-pidfile", str(pidfile))
        wait_for(lambda: d.status["election_alive"] is True, 3, 0.02, "election seen")
        assert d.stop() == 0
        election.kill()  # keepalived dies while no daemon watches
        election.wait()
        assert role_of(topo.app) == "master"
        d = start_daemon(topo.app, "--no-fifo", "--watch-pidfile", str(pidfile))
        wait_for(lambda: role_of(topo.app) == "backup", 3, 0.02, "step down at start")
        assert "died" in d.output()
    finally:
        election.kill()
        election.wait()


def test_a_lasting_difference_from_keepalived_is_an_alarm_and_followed(lab: Lab) -> None:
    """Issue 16: keepalived said MASTER, the role is backup (an order given while no daemon
    ran: the group may have no gateway): after health.MISMATCH_AFTER the daemon says so at
    err and follows keepalived's word, which restores the gateway."""
    from skat_plugin.election import health

    topo, d = topo_with_daemon(lab)
    app = topo.app
    d.write("MASTER")
    wait_for(lambda: role_of(app) == "master", 5, 0.02, "MASTER applied")
    assert d.stop() == 0
    assert app.cli("vrrp", "set", "backup").stdout.strip() == "role: backup"  # no daemon
    t0 = time.monotonic()
    d = start_daemon(app)
    wait_for(lambda: role_of(app) == "master", health.MISMATCH_AFTER + 3, 0.05,
             "keepalived's word followed")
    assert time.monotonic() - t0 >= health.MISMATCH_AFTER - 0.5  # not a switch in progress
    assert "election mismatch" in d.output()
    assert json.loads((app.run_dir / "state.json").read_text())["cause"] == \
        "election-mismatch"
    wait_for(lambda: d.status["election_mismatch"] is None, 2, 0.02, "agreed again")
    assert (app.run_dir / "keepalived.track").read_text().startswith("0")
