"""What an operator meets at the command line: `fdpi_cli check` (everything start would
refuse, nothing changed), one exit status per cause, an honest `vrrp show`, --config after
the command, --version, a closed pipe, error lines with their journal priority, and the
imports each command pays for."""

from __future__ import annotations

import os
import subprocess
import time

from conftest import BASE_CONF, Topo, build_topo
from netlab import PYTHON, REPO, Lab


def _state(topo: Topo) -> tuple[str, str]:
    """What check must never change: the rule set and the links (bridges made by start)."""
    ns = topo.app.ns
    return (topo.lab.run(ns, "nft", "list", "ruleset").stdout,
            topo.lab.run(ns, "ip", "-o", "link").stdout.replace("state UP", "").count("skatbr")
            .__str__())


def _check(topo: Topo, conf: str, *extra: str) -> subprocess.CompletedProcess[str]:
    path = topo.lab.path(f"check-{time.monotonic_ns()}.conf")
    path.write_text(conf)
    # --config after the command (issue 10): it used to work only before it.
    return topo.app.cli("check", "--config", str(path), *extra, check=False)


def test_check_accepts_a_good_file_and_changes_nothing(lab: Lab) -> None:
    topo = build_topo(lab, start=False)
    before = _state(topo)
    res = _check(topo, BASE_CONF)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok: ") and "start role master" in res.stdout
    assert res.stderr == ""
    assert _state(topo) == before and "skat_plugin" not in before[0]


def test_check_refuses_what_start_refuses_each_with_its_own_status(lab: Lab) -> None:
    topo = build_topo(lab, start=False)
    lab.run(topo.app.ns, "ip", "link", "add", "brX", "type", "bridge")
    lab.run(topo.app.ns, "ip", "link", "add", "brY", "type", "bridge")
    lab.run(topo.app.ns, "ip", "link", "add", "x0", "type", "veth", "peer", "name", "x0p")
    lab.run(topo.app.ns, "ip", "link", "set", "o0", "master", "brX")
    lab.run(topo.app.ns, "ip", "link", "set", "x0", "master", "brY")  # a pair split in two
    before = _state(topo)
    cases = [  # (fastdpi.conf, exit status, phrase)
        (BASE_CONF.replace("vrrp_enable=1", "vrrp_enabel=1"), 6, "did you mean vrrp_enable?"),
        (BASE_CONF + "vrrp_garp_cout=3\n", 6, "did you mean vrrp_garp_count?"),
        (BASE_CONF.replace("bras_arp_ip=100.64.0.1", "bras_arp_ip=300.1.1.1"), 6,
         "bras_arp_ip"),
        (BASE_CONF.replace("in_dev=i0", "in_dev=i9"), 11, "port(s) i9 do not exist"),
        (BASE_CONF.replace("in_dev=i0", "in_dev=x0"), 11, "o0 is already a port of another"),
    ]
    for conf, status, phrase in cases:
        t0 = time.monotonic()
        # Not a boot (no systemd here): --wait-ports-at-boot must not wait for a typo.
        res = _check(topo, conf, "--wait-ports-at-boot", "45")
        assert (res.returncode, res.stdout) == (status, ""), (phrase, res)
        assert time.monotonic() - t0 < 10, "check waited for a port outside a boot"
        assert phrase in res.stderr and len(res.stderr.splitlines()) == 1, res.stderr
    assert _state(topo) == before


def test_check_warns_of_near_misses_and_of_a_reload_that_would_refuse(topo: Topo) -> None:
    before = _state(topo)
    conf = BASE_CONF.replace("out_dev=o0", "out_dev=o0\nbras_terminate_l3=1")
    res = _check(topo, conf)
    assert res.returncode == 0, res.stderr
    assert "bras_terminate_l3: not a key of skat-plugin, which ignores it; did you mean " \
           "bras_terminate_l2?" in res.stderr
    assert "running as master" in res.stdout
    topo.lab.run(topo.app.ns, "ip", "link", "add", "i1", "type", "veth", "peer", "name", "o1")
    res = _check(topo, BASE_CONF.replace("in_dev=i0", "in_dev=i0:i1")
                 .replace("out_dev=o0", "out_dev=o0:o1"))
    assert res.returncode == 0 and "note: in_dev/out_dev differ from the running bridges" \
        in res.stdout, res
    assert _state(topo) == before


def test_show_is_honest_stopped_running_and_mismatched(topo: Topo) -> None:
    app = topo.app
    out = app.cli("vrrp", "show").stdout
    assert "cause:        start" in out and "kernel:       master" in out
    assert "None" not in out and "MISMATCH" not in out
    # The kernel loses the rules behind the plugin's back: monitoring must see it.
    topo.lab.run(app.ns, "nft", "delete", "table", "netdev", "skat_plugin_master")
    res = app.cli("vrrp", "show", check=False)
    assert res.returncode == 13 and "MISMATCH: the recorded role is master" in res.stdout
    assert app.cli("vrrp", "show", "--json", check=False).returncode == 13
    app.cli("stop")
    res = app.cli("vrrp", "show")  # stopped with no rules: consistent, exit 0
    assert res.stdout == "role:         stopped\nkernel:       no rules loaded\n"
    res = app.cli("vrrp", "set", "backup", check=False)
    assert res.returncode == 7 and "not started" in res.stderr


def test_version_and_a_closed_pipe(topo: Topo) -> None:
    app = topo.app
    assert app.cli("--version").stdout == "fdpi_cli (skat-plugin) 0.1.0\n"
    # `| true` exits before fdpi_cli writes: its write meets a closed pipe.
    for args in ("vrrp show", "vrrp show --json", "--help"):
        res = topo.lab.run(app.ns, "sh", "-c", f"{PYTHON} -m skat_plugin {args} | true",
                           env=app.env())
        assert res.stderr == "", (args, res.stderr)


def test_error_lines_carry_their_priority_into_the_journal(topo: Topo, tmp_path) -> None:
    """Under systemd stderr is a journal stream ($JOURNAL_STREAM names it): each line of
    fdpi_cli's own starts with its syslog priority, which journald files it under."""
    err = tmp_path / "stderr"
    bad = tmp_path / "bad.conf"
    bad.write_text(BASE_CONF.replace("in_dev=i0", "in_dev=i9") + "bras_terminate_l3=1\n")
    with open(err, "w") as f:
        st = os.fstat(f.fileno())
        env = {**topo.app.env(), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        res = subprocess.run(["ip", "netns", "exec", topo.app.ns, PYTHON, "-m", "skat_plugin",
                              "check", "--config", str(bad)], stderr=f, stdout=subprocess.PIPE,
                             env=env, cwd=REPO, text=True)
    assert res.returncode == 11
    lines = err.read_text().splitlines()
    assert lines[0].startswith("<4>fdpi_cli: warning: ") and "bras_terminate_l3" in lines[0]
    assert lines[1].startswith("<3>fdpi_cli: port(s) i9 do not exist")


def _modules_after(*args: str) -> set[str]:
    code = ("import sys\nfrom skat_plugin import cli\n"
            "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "sys.stdout.flush()\nprint('MODULES', ' '.join(sorted(sys.modules)))")
    res = subprocess.run([PYTHON, "-c", code, *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO),
                              "SKAT_RUN_DIR": "/nonexistent-skat-run"}, cwd=REPO)
    return set(res.stdout.rsplit("MODULES ", 1)[1].split())


def test_help_and_show_do_not_import_the_world() -> None:
    heavy = {"jsonschema", "pyroute2", "skat_plugin.schema", "skat_plugin.bridges"}
    help_mods = _modules_after("--help")
    assert not help_mods & (heavy | {"nftables", "typing", "dataclasses", "skat_plugin.role"})
    show_mods = _modules_after("vrrp", "show")
    assert not show_mods & (heavy | {"dataclasses", "tempfile"}), show_mods & heavy
    assert "nftables" in show_mods  # it does ask the kernel


def test_show_never_mistakes_a_switch_in_progress_for_a_mismatch(topo: Topo) -> None:
    """A switch loads its rules, then records its role: show must not look in between."""
    app = topo.app
    script = ("import sys\nfrom skat_plugin import role\n"
              "for i in range(600):\n    role.set_role(('backup', 'master')[i % 2], 'test')\n")
    flipping = topo.lab.popen(app.ns, PYTHON, "-c", script, env=app.env())
    shows = []
    while flipping.poll() is None:
        shows.append(app.cli("vrrp", "show", "--json", check=False))
    assert flipping.returncode == 0, flipping.stdout.read() if flipping.stdout else ""
    assert len(shows) >= 5
    bad = [r.stdout for r in shows if r.returncode != 0]
    assert not bad, bad[0]


def test_config_after_a_delegated_command_is_fdpi_clis(tmp_path) -> None:
    for args in (["--config", str(tmp_path / "a.conf")], [f"--config={tmp_path}/a.conf"]):
        res = subprocess.run([PYTHON, "-m", "skat_plugin", "vrrp", "keepalived-config", *args],
                             capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO),
                                  "FDPI_CONF": str(tmp_path / "env.conf")})
        assert res.returncode == 6 and f"{tmp_path}/a.conf: no such file" in res.stderr, res
