"""Fit to be master? The track script (`fdpi_cli vrrp track`, keepalived/track): exit 0 while
the appliance is fit, 1 with a reason if not, run as keepalived runs it in the appliance's
namespace. The daemon's track file (trackfile.py): the same verdict, written at each change,
and "the daemon is not running" however the daemon ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import BASE_CONF, VIP, VMAC, Topo, build_topo
from daemonlab import FAST_CONF, start_daemon
from netlab import REPO, Lab, wait_for
from wire import send_frames

from skat_plugin import announce
from skat_plugin.election import health, splitbrain, trackfile, verdict

TRACK = str(REPO / "keepalived" / "track")


def track(topo: Topo, *args: str) -> subprocess.CompletedProcess[str]:
    return topo.lab.run(topo.app.ns, TRACK, *args, check=False, env=topo.app.env())


def assert_unfit(res: subprocess.CompletedProcess[str], reason: str) -> None:
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert res.stderr.count("\n") == 1 and reason in res.stderr, res.stderr


def fake_daemon(topo: Topo, status: dict[str, object]) -> subprocess.Popen[str]:
    """A live process in daemon.pid and its daemon.json: what state.daemon_status() reads."""
    proc = topo.lab.popen(topo.app.ns, "sleep", "60")
    (topo.app.run_dir / "daemon.pid").write_text(f"{proc.pid}\n")
    (topo.app.run_dir / "daemon.json").write_text(json.dumps({"pid": proc.pid, **status}))
    return proc


def test_not_started(lab: Lab) -> None:
    topo = build_topo(lab, start=False)
    assert_unfit(track(topo), "plugin not started")


def test_fit_then_each_port_problem(topo: Topo) -> None:
    ns = topo.app.ns
    res = track(topo)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert topo.lab.run(ns, "/usr/bin/python3", "-m", "skat_plugin", "vrrp", "track",
                        env=topo.app.env(), check=False).returncode == 0

    topo.lab.run(ns, "ip", "link", "set", "o0", "down")
    assert_unfit(track(topo), "o0 is down")
    topo.lab.run(ns, "ip", "link", "set", "o0", "up")
    assert track(topo).returncode == 0

    topo.lab.run(topo.sub, "ip", "link", "set", "s0", "down")  # carrier lost on i0
    assert_unfit(track(topo), "i0 is down")
    topo.lab.run(topo.sub, "ip", "link", "set", "s0", "up")
    assert track(topo).returncode == 0

    topo.lab.run(ns, "ip", "link", "set", "o0", "nomaster")
    assert_unfit(track(topo), "i0 and o0 are not bridged together")
    topo.lab.run(ns, "ip", "link", "del", "o0")
    assert_unfit(track(topo), "o0 is missing")


def test_rules_not_loaded(topo: Topo) -> None:
    topo.lab.run(topo.app.ns, "nft", "delete", "table", "netdev", "skat_plugin_master")
    assert_unfit(track(topo), "nftables rules are not loaded")


def test_backup_is_fit_too(topo: Topo) -> None:
    """Fit to be master is about the appliance, not its current role."""
    topo.app.cli("vrrp", "set", "backup")
    assert track(topo).returncode == 0


def test_daemon_required_only_when_asked(topo: Topo) -> None:
    assert track(topo).returncode == 0
    assert_unfit(track(topo, "--require-daemon"), "supervising daemon")
    proc = fake_daemon(topo, {"split_brain": False})
    assert track(topo, "--require-daemon").returncode == 0
    proc.kill()
    proc.wait()
    assert_unfit(track(topo, "--require-daemon"), "supervising daemon")


def test_split_brain_hands_over_only_when_configured(lab: Lab) -> None:
    topo = build_topo(lab)
    fake_daemon(topo, {"split_brain": True})
    assert track(topo).returncode == 0, "vrrp_split_brain_handover=0: keep the role"

    topo.app.write_conf(BASE_CONF + "vrrp_split_brain_handover=1\n")
    topo.app.cli("reload")
    assert_unfit(track(topo, "--require-daemon"), "split brain")
    (topo.app.run_dir / "daemon.json").write_text(json.dumps({"split_brain": False}))
    assert track(topo, "--require-daemon").returncode == 0


def test_run_time(topo: Topo) -> None:
    """keepalived runs it every second; it must stay far below its 1 s timeout."""
    runs = 20
    t0 = time.perf_counter()
    for _ in range(runs):
        assert track(topo).returncode == 0
    mean = (time.perf_counter() - t0) / runs
    print(f"track script: {mean * 1000:.1f} ms per run (mean of {runs}, incl. ip netns exec)")
    assert mean < 0.6, f"track script takes {mean * 1000:.0f} ms"  # keepalived: 1 s timeout


# -- the daemon's verdict: keepalived's track file (trackfile.py) --------------------------
def verdict_of(app) -> str | None:
    """The track file as keepalived reads it: '0 ...' fit, '1 <reason>' unfit."""
    try:
        text = (app.run_dir / trackfile.NAME).read_text()
    except FileNotFoundError:
        return None
    number, _, comment = text.partition("\n")
    return number + (" " + comment.split(": ", 1)[1].strip() if number != "0" else "")


def wait_verdict(app, expected: str, timeout: float = 2.0) -> float:
    """Seconds until the file says `expected` (an exact '0', or '1 <part of the reason>')."""
    t0 = time.monotonic()
    wait_for(lambda: (v := verdict_of(app)) is not None and
             (v == expected if expected == "0" else v.startswith("1") and expected[2:] in v),
             timeout, 0.002, f"track file to say {expected!r} (it says {verdict_of(app)!r})")
    return time.monotonic() - t0


def guardians(lab: Lab, ns: str) -> list[int]:
    """The track file's guardians alive in the namespace (flock waiting for the lock)."""
    found = []
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    for pid in (int(p) for p in pids.split()):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if cmd[0] == b"/usr/bin/flock" and cmd[1].endswith(b".lock"):
                found.append(pid)
    return found


def test_daemon_writes_each_change_of_the_verdict_once(lab: Lab) -> None:
    topo = build_topo(lab, FAST_CONF)
    app, ns, file = topo.app, topo.app.ns, topo.app.run_dir / trackfile.NAME
    d = start_daemon(app)
    wait_verdict(app, "0")
    before = file.stat()
    app.cli("vrrp", "set", "backup")  # a role is not a fitness: nothing is written
    app.cli("vrrp", "set", "master")
    lab.run(ns, "ip", "link", "set", "lo", "down")  # a link event about another link
    time.sleep(0.2)
    assert (file.stat().st_ino, file.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    took = {}
    for what, break_it, mend, reason in (
            ("port down", ("ip", "link", "set", "o0", "down"),
             ("ip", "link", "set", "o0", "up"), "o0 is down"),
            ("not bridged", ("ip", "link", "set", "o0", "nomaster"),
             ("ip", "link", "set", "o0", "master", "skatbr0"), "i0 and o0 are not bridged")):
        lab.run(ns, *break_it)
        took[what] = wait_verdict(app, f"1 {reason}")
        lab.run(ns, *mend)
        wait_verdict(app, "0")
    app.cli("stop")
    took["plugin stopped"] = wait_verdict(app, f"1 {verdict.NOT_STARTED}")
    app.cli("start")
    wait_verdict(app, "0")
    print("track file unfit after: " + ", ".join(f"{k} {v * 1000:.0f} ms"
                                                   for k, v in took.items()))
    assert max(took.values()) < 0.5, took
    log = d.output()
    assert log.count("unfit to be master: o0 is down") == 1, log
    assert log.count("fit to be master again (o0 is down: no longer)") == 1, log

    # The file is the daemon's while it lives: removed (keepalived would read 0, fit) or
    # overwritten, it says the daemon's verdict again.
    lab.run(ns, "ip", "link", "set", "o0", "down")
    wait_verdict(app, "1 o0 is down")
    file.unlink()
    wait_verdict(app, "1 o0 is down", 0.5)
    file.write_text("0\n")
    wait_verdict(app, "1 o0 is down", 0.5)
    assert "was changed or removed by someone else" in d.output()
    lab.run(ns, "ip", "link", "set", "o0", "up")
    wait_verdict(app, "0")
    assert d.stop() == 0
    assert verdict_of(app) == f"1 {verdict.DAEMON_DOWN}"  # a clean exit says so itself
    assert guardians(lab, ns) == []


def test_daemon_death_however_it_comes_makes_the_appliance_unfit(lab: Lab) -> None:
    topo = build_topo(lab, FAST_CONF)
    app, ns = topo.app, topo.app.ns
    for round_ in ("kill -9", "kill -9 after its guardian was killed"):
        d = start_daemon(app)
        wait_verdict(app, "0")
        assert len(guardians(lab, ns)) == 1
        if round_ != "kill -9":
            (guardian,) = guardians(lab, ns)
            os.kill(guardian, signal.SIGTERM)  # as systemd's sweep: ignored
            time.sleep(0.2)
            assert guardians(lab, ns) == [guardian]
            os.kill(guardian, signal.SIGKILL)
            wait_for(lambda g=guardian: guardians(lab, ns) not in ([], [g]), 2, 0.01,
                     "the daemon to start its guardian again")
            assert "guardian" in d.output() and "started again" in d.output()
        # ExecStopPost's command leaves a live daemon's verdict alone.
        kept = app.cli("vrrp", "track", "--require-daemon", "--write")
        assert "not written: the supervising daemon keeps" in kept.stderr, kept.stderr
        assert verdict_of(app) == "0"
        d.proc.kill()
        took = wait_verdict(app, f"1 {verdict.DAEMON_DOWN}", 1.0)
        print(f"{round_}: track file unfit {took * 1000:.0f} ms after the daemon's death")
        d.proc.wait()
        wait_for(lambda: guardians(lab, ns) == [], 2, 0.01, "the guardian to finish")

    # Without a guardian (systemd killed the whole unit at once): ExecStopPost writes it.
    d = start_daemon(app)
    wait_verdict(app, "0")
    (guardian,) = guardians(lab, ns)
    d.proc.send_signal(signal.SIGSTOP)  # so that it cannot start another guardian
    os.kill(guardian, signal.SIGKILL)
    d.proc.kill()
    d.proc.wait()
    time.sleep(0.2)
    assert verdict_of(app) == "0", "nobody wrote it yet"
    written = app.cli("vrrp", "track", "--require-daemon", "--write", check=False)
    assert written.returncode == 1 and verdict.DAEMON_DOWN in written.stderr, written.stderr
    assert verdict_of(app) == f"1 {verdict.DAEMON_DOWN}"
    assert track(topo, "--write").returncode == 0  # without --require-daemon: fit, says 0
    assert verdict_of(app) == "0"


def test_split_brain_handover_in_the_track_file(lab: Lab) -> None:
    """vrrp_split_brain_handover=1: unfit while the split brain is reported, and HOLD
    seconds past it, also once the appliance is backup and no longer looks."""
    topo = build_topo(lab, FAST_CONF + "vrrp_split_brain_handover=1\n")
    app = topo.app
    d = start_daemon(app)
    d.write("MASTER")
    wait_for(lambda: d.status["announcement_rounds"] >= 3, 5, 0.02, "takeover burst done")
    wait_verdict(app, "0")
    send_frames(lab, topo.sub, "s0", [announce.garp(VMAC, VIP)])
    wait_verdict(app, "1 split brain", splitbrain.POLL + 1)
    d.write("FAULT")  # what keepalived does next; backup stops looking for split brain
    wait_for(lambda: d.status["role"] == "backup" and not d.status["split_brain"], 2, 0.02,
             "backup, split brain no longer watched")
    t0 = time.monotonic()
    assert verdict_of(app).startswith("1 split brain")
    assert "held" in verdict_of(app)
    wait_verdict(app, "0", trackfile.HOLD + 1)
    held = time.monotonic() - t0
    assert 0.5 * trackfile.HOLD < held < trackfile.HOLD + 0.5, held


def test_election_mismatch_is_an_alarm_only_when_it_lasts() -> None:
    """Issue 16: the pure decision the daemon, `vrrp show` and the metrics share."""
    after = health.MISMATCH_AFTER
    # Agreement, or keepalived never spoke: nothing to say.
    assert health.election_mismatch("master", "MASTER", 0, 100) is None
    assert health.election_mismatch("backup", "FAULT", 0, 100) is None
    assert health.election_mismatch("backup", "STOP", 0, 100) is None
    assert health.election_mismatch("master", None, 0, 100) is None
    # A switch in progress is not an alarm.
    assert health.election_mismatch("master", "BACKUP", 100, 100 + after / 2) is None
    two = health.election_mismatch("master", "BACKUP", 100, 100 + after + 1)
    assert two is not None and "second gateway" in two and "vrrp set backup" in two
    none = health.election_mismatch("backup", "MASTER", 100, 100 + after + 1)
    assert none is not None and "no gateway" in none and "vrrp set master" in none
    gone = health.election_mismatch(None, "MASTER", 0, 100)
    assert gone is not None and "holds no rules" in gone
