"""The track script: exit 0 while the appliance is fit to be master, 1 with a reason if not.

Run as keepalived runs it: keepalived/track in the appliance's namespace.
"""

from __future__ import annotations

import json
import subprocess
import time

from conftest import BASE_CONF, Topo, build_topo
from netlab import REPO, Lab

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
