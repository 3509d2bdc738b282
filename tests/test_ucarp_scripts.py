"""ucarp's up/down scripts switch the role, and a real ucarp failover moves the master."""

from __future__ import annotations

import os
import signal
import time

from conftest import BASE_CONF, Topo
from netlab import REPO, Appliance, Lab, wait_for

SCRIPTS = REPO / "keepalived"


def run_script(topo: Topo, name: str, *args: str, path_with_fdpi_cli: bool = False) -> None:
    env = topo.app.env()
    # Without fdpi_cli on PATH the scripts fall back to the checkout's skat_plugin.
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    if path_with_fdpi_cli:
        env["PATH"] = f"{REPO / 'lab' / 'bin'}:{env['PATH']}"
    env.pop("PYTHONPATH", None)
    res = topo.lab.run(topo.app.ns, str(SCRIPTS / name), *args, env=env, check=False)
    assert res.returncode == 0, f"{name}: {res.stdout}{res.stderr}"


def test_up_and_down_scripts_switch_the_role(topo: Topo) -> None:
    assert topo.app.show()["role"] == "master"
    run_script(topo, "ucarp-down", "v0", "192.0.2.10")
    st = topo.app.show()
    assert (st["role"], st["kernel_role"], st["cause"]) == ("backup", "backup", "ucarp-down")
    run_script(topo, "ucarp-up", "v0", "192.0.2.10")
    st = topo.app.show()
    assert (st["role"], st["kernel_role"], st["cause"]) == ("master", "master", "ucarp-up")


def test_keepalived_notify_scripts_switch_the_role(topo: Topo) -> None:
    for script, role, cause in (("notify-backup", "backup", "keepalived-notify"),
                                ("notify-master", "master", "keepalived-notify"),
                                ("notify-fault", "backup", "keepalived-fault"),
                                ("notify-master", "master", "keepalived-notify"),
                                ("notify-stop", "backup", "keepalived-stop")):
        run_script(topo, script, path_with_fdpi_cli=script == "notify-master")
        st = topo.app.show()
        assert (st["role"], st["kernel_role"], st["cause"]) == (role, role, cause), script


def _appliance(lab: Lab, name: str) -> Appliance:
    conf = BASE_CONF + "vrrp_interface=v0\nvrrp_mgmt_vip=192.0.2.10/24\n"
    app = lab.appliance(name, conf)
    lab.veth(app.ns, "i0", app.ns, "i0p")
    lab.veth(app.ns, "o0", app.ns, "o0p")
    app.cli("start")
    return app


def _ucarp(lab: Lab, app: Appliance, addr: str, skew: int) -> object:
    log = open(app.dir / "ucarp.log", "w")  # noqa: SIM115 (lives with the process)
    return lab.popen(app.ns, "ucarp", "-i", "v0", "-s", addr, "-v", "51", "-p", "skatpass",
                     "-a", "192.0.2.10", "-u", str(SCRIPTS / "ucarp-up"),
                     "-d", str(SCRIPTS / "ucarp-down"), "-b", "1", "-k", str(skew), "-z",
                     env=app.env(), stdout=log)


def test_real_ucarp_failover(lab: Lab) -> None:
    a = _appliance(lab, "a")
    b = _appliance(lab, "b")
    lab.veth(a.ns, "v0", b.ns, "v0")
    lab.run(a.ns, "ip", "addr", "add", "192.0.2.11/24", "dev", "v0")
    lab.run(b.ns, "ip", "addr", "add", "192.0.2.12/24", "dev", "v0")

    def roles() -> tuple[tuple[str, str], ...]:
        return tuple((st["role"], st["cause"]) for st in (a.show(), b.show()))

    settled = (("master", "ucarp-up"), ("backup", "ucarp-down"))
    ua = _ucarp(lab, a, "192.0.2.11", 0)  # lower skew: a wins the election
    _ucarp(lab, b, "192.0.2.12", 50)
    # Both start as master (SKAT); ucarp runs the down script at start, then the lower
    # skew becomes master. Wait until ucarp itself has set both roles, and they hold.
    wait_for(lambda: roles() == settled, 10, 0.1, "a master, b backup, set by ucarp")
    time.sleep(1.5)
    assert roles() == settled

    # A clean ucarp stop (-z: down script at exit): a steps down at once, b takes over after
    # ucarp's dead interval, 3 x (advbase + advskew/256) = 3.6 s (measured 3.5 to 4.6 s).
    t0 = time.monotonic()
    os.killpg(ua.pid, signal.SIGTERM)
    wait_for(lambda: roles() == (("backup", "ucarp-down"), ("master", "ucarp-up")), 10, 0.05,
             "b takes over")
    took = time.monotonic() - t0
    print(f"ucarp failover (advbase 1 s): {took:.2f} s")
    assert 2.0 < took < 7.0, took
