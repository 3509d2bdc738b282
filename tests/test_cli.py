"""What an operator meets at the command line: `fdpi_cli check` (everything start would
refuse, nothing changed), one exit status per cause, an honest `vrrp show`, --config after
the command, --version, a closed pipe, error lines with their journal priority, and the
imports each command pays for."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import BASE_CONF, Topo, build_topo
from daemonlab import topo_with_daemon
from netlab import PYTHON, REPO, Appliance, Lab, wait_for


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
    res = _check(topo, BASE_CONF.replace("vrrp_enable=1", "vrrp_enable=0"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok: ") and "start role master" in res.stdout
    assert res.stderr == ""
    assert _state(topo) == before and "skat_plugin" not in before[0]


def test_check_says_at_err_when_vrrp_is_on_and_no_election_runs(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16 item 4: VRRP on, no keepalived.conf, no keepalived: this appliance would be
    a second master beside a running one. check says so, with the one command that fixes
    it; with keepalived.conf written it says to start keepalived."""
    topo = build_topo(lab, start=False)
    conf = lab.path("keepalived.conf")
    monkeypatch.setenv("SKAT_KEEPALIVED_CONF", str(conf))
    base = BASE_CONF + f"vrrp_election_pidfile={lab.path('vrrp.pid')}\n"  # none runs
    res = _check(topo, base)
    assert res.returncode == 0 and res.stdout.startswith("ok: "), res
    assert res.stderr.startswith("fdpi_cli: warning: vrrp_enable=1 but no election is "
                                 "configured"), res.stderr
    assert f"fdpi_cli vrrp keepalived-config --output {conf}" in res.stderr
    conf.write_text("vrrp_instance x {\n}\n")
    res = _check(topo, base)
    assert "keepalived is not running" in res.stderr and "systemctl enable --now " \
        "keepalived" in res.stderr, res.stderr
    assert _check(topo, BASE_CONF + "vrrp_election_pidfile=\n").stderr == ""


def test_check_warns_before_a_running_backup_would_become_master(topo: Topo) -> None:
    """Issue 16 item 3: vrrp_enable=0 on a backup makes it master at the reload."""
    topo.app.cli("vrrp", "set", "backup")
    res = _check(topo, BASE_CONF.replace("vrrp_enable=1", "vrrp_enable=0"))
    assert res.returncode == 0, res
    assert "vrrp_enable=0 makes this running backup a master" in res.stderr, res.stderr
    assert topo.app.show()["role"] == "backup"


def test_reload_follows_keepalived_when_vrrp_is_switched_off_and_on(lab: Lab) -> None:
    """Issue 16 item 3: a backup with vrrp_enable 1 -> 0 -> 1 ends as backup (keepalived's
    last word, recorded while VRRP was off too), never a permanent second master."""
    topo, d = topo_with_daemon(lab)
    app = topo.app
    d.write("BACKUP")
    wait_for(lambda: app.show()["role"] == "backup", 5, 0.02, "FIFO BACKUP applied")
    conf = app.conf_path.read_text()
    app.write_conf(conf.replace("vrrp_enable=1", "vrrp_enable=0"))
    assert app.cli("reload").stdout.startswith("reloaded: master")
    d.write("BACKUP")  # keepalived carries on: recorded, the appliance stays master
    wait_for(lambda: (app.show()["keepalived"] or {}).get("at") != "", 5, 0.02)
    app.write_conf(conf)
    assert app.cli("reload").stdout.startswith("reloaded: backup")
    info = app.show()
    assert (info["role"], info["kernel_role"], info["awaiting_election"]) == \
        ("backup", "backup", False), info
    d.stop()


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
    heavy = {"jsonschema", "pyroute2", "skat_plugin.config.schema", "skat_plugin.bridges"}
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


# --- `vrrp set` at every failover: the lean client (quickset.py) ------------------------------
INSTALLED = (REPO / "debian/fdpi_cli").read_text()
# Modules the lean path must not import (each costs milliseconds at every failover).
HEAVY = {"json", "re", "argparse", "os", "site", "typing", "enum", "nftables", "pyroute2",
         "skat_plugin.cli", "skat_plugin.role", "skat_plugin.control"}


def _installed_script(lab: Lab) -> Path:
    """/usr/bin/fdpi_cli as the package installs it (debian/fdpi_cli, `python3 -IS`), with
    this checkout first on its path: the package's own skat_plugin is not installed here."""
    text = INSTALLED.replace("\nsys.path.append(", f"\nsys.path.insert(0, {str(REPO)!r})"
                             "\nsys.path.append(", 1)
    assert text != INSTALLED and text.startswith("#!/usr/bin/python3 -IS\n")
    path = lab.path(f"fdpi_cli-{time.monotonic_ns()}")
    path.write_text(text)
    path.chmod(0o755)
    return path


def _set(app: Appliance, script: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                           set[str]]:
    """`fdpi_cli vrrp set ARGS` as keepalived runs it (the script's own -IS), and the
    modules it imported (-X importtime, which changes nothing else)."""
    res = app.lab.run(app.ns, PYTHON, "-IS", "-X", "importtime", str(script), "vrrp", "set",
                      *args, env=app.env(), check=False)
    mods = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}
    assert "skat_plugin.quickset" in mods, res.stderr  # the listing was read
    res.stderr = "\n".join(line for line in res.stderr.splitlines()
                           if not line.startswith("import time:"))
    return res, mods


def _served(app: Appliance) -> int:
    """Requests the daemon has served, this one included."""
    res = app.lab.run(app.ns, PYTHON, "-c", "from skat_plugin import control; "
                      "print(control.request({'op': 'status'})['requests'])", env=app.env())
    return int(res.stdout)


def test_vrrp_set_through_the_daemon_imports_only_what_is_built_in(lab: Lab) -> None:
    topo, d = topo_with_daemon(lab)
    app, script = topo.app, _installed_script(lab)
    served = _served(app)
    res, mods = _set(app, script, "backup", "--cause", "keepalived-notify")
    assert (res.returncode, res.stdout, res.stderr) == (0, "role: backup\n", ""), res
    assert not mods & HEAVY, sorted(mods & HEAVY)
    info = app.show()  # the daemon switched: this process never imported role or nftables
    assert (info["role"], info["kernel_role"], info["cause"]) == \
        ("backup", "backup", "keepalived-notify")
    assert _served(app) == served + 2  # our set (once), the status that counts it
    # The shebang itself (python3 -IS), and keepalived/vrrp-set of a checkout.
    res = lab.run(app.ns, str(script), "vrrp", "set", "master", "--cause=ucarp-up",
                  env=app.env())
    assert res.stdout == "role: master\n" and app.show()["cause"] == "ucarp-up"
    bin_dir = lab.path("bin")  # a PATH with no installed fdpi_cli: the checkout's is used
    bin_dir.mkdir()
    for tool in ("ip", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {**app.env(), "PATH": str(bin_dir)}
    res = lab.run(app.ns, str(REPO / "keepalived/vrrp-set"), "backup", "ucarp-down", env=env)
    assert res.stdout == "role: backup\n" and res.stderr == "", res
    assert app.show()["kernel_role"] == "backup"
    # Its reader gone (`| true` exits before it writes): quiet, and the switch is done.
    res = lab.run(app.ns, "sh", "-c", f"{script} vrrp set master | true", env=app.env())
    assert res.stderr == "" and app.show()["kernel_role"] == "master", res
    assert "role master -> backup (keepalived-notify)" in d.output()


def test_vrrp_set_leaves_to_the_full_cli_what_the_lean_client_does_not_handle(
        lab: Lab) -> None:
    """A cause that needs JSON escaping, an option it does not know, an abbreviation:
    argparse and json's turn, and still one request to the daemon."""
    topo, _ = topo_with_daemon(lab)
    app, script = topo.app, _installed_script(lab)
    cases = [  # (arguments, the cause the daemon records)
        (["backup", "--cause", 'say "hi"'], 'say "hi"'),
        (["master", "--cause=é"], "é"),
        (["backup", "--config", str(app.conf_path)], "cli"),
        (["master", "--cau", "abbreviated", "--forc"], "abbreviated"),
    ]
    for args, cause in cases:
        served = _served(app)
        res, mods = _set(app, script, *args)
        assert (res.returncode, res.stdout) == (0, f"role: {args[0]}\n"), (args, res)
        assert {"argparse", "json", "skat_plugin.cli"} <= mods, args
        assert _served(app) == served + 2, args  # asked once, by the full CLI
        info = app.show()
        assert (info["role"], info["kernel_role"], info["cause"]) == (args[0], args[0], cause)
    res, _ = _set(app, script, "mastr")
    assert res.returncode == 2 and "invalid choice: 'mastr'" in res.stderr, res


def test_vrrp_set_reports_the_daemons_refusal_and_ignored_orders_once(lab: Lab) -> None:
    topo, d = topo_with_daemon(lab)
    app, script = topo.app, _installed_script(lab)
    d.write("MASTER")  # keepalived's latest word: a late notify_backup is stale
    wait_for(lambda: (app.show().get("keepalived") or {}).get("state") == "MASTER", 5)
    served = _served(app)
    res, mods = _set(app, script, "backup", "--cause", "keepalived-notify")
    assert res.returncode == 10 and res.stdout.startswith("ignored: keepalived's latest state "
                                                          "is MASTER"), res
    assert "argparse" in mods and _served(app) == served + 2  # read by the CLI, not re-sent
    assert app.show()["role"] == "master"
    app.write_conf(BASE_CONF.replace("vrrp_enable=1", "vrrp_enable=0"))
    app.cli("reload")
    served = _served(app)
    res, _ = _set(app, script, "backup")
    assert (res.returncode, res.stdout) == (10, ""), res
    assert res.stderr.startswith("fdpi_cli: vrrp_enable=0 in ") and \
        len(res.stderr.splitlines()) == 1, res.stderr
    assert _served(app) == served + 2


def test_vrrp_set_without_a_daemon_switches_itself(topo: Topo) -> None:
    app, script = topo.app, _installed_script(topo.lab)
    res, mods = _set(app, script, "backup")
    assert (res.returncode, res.stdout, res.stderr) == (0, "role: backup\n", ""), res
    assert {"skat_plugin.role", "nftables"} <= mods  # it switched itself
    assert app.show()["kernel_role"] == "backup"
    stale = socket.socket(socket.AF_UNIX)  # a dead daemon's socket: nobody listens
    stale.bind(str(app.run_dir / "control.sock"))
    stale.close()
    t0 = time.monotonic()
    res, mods = _set(app, script, "master")
    assert (res.returncode, res.stdout) == (0, "role: master\n"), res
    assert "skat_plugin.role" in mods and time.monotonic() - t0 < 10
    assert app.show()["kernel_role"] == "master"


class _FakeDaemon:
    """A control socket that records each request and answers `answer` (None: never)."""

    def __init__(self, path: Path, answer: bytes | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.answer, self.requests, self.held = answer, [], []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
            self.requests.append(json.loads(data))
            if self.answer is None:
                self.held.append(conn)  # keeps the client waiting
                continue
            conn.sendall(self.answer)
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_vrrp_set_understands_an_old_daemon_and_outlives_a_silent_one(topo: Topo) -> None:
    app, script = topo.app, _installed_script(topo.lab)
    # A daemon from before "brief" answers the whole state: the CLI reads it.
    old = _FakeDaemon(app.run_dir / "control.sock",
                      json.dumps({"role": "backup", "cause": "x", "since": "then"}).encode())
    try:
        res, mods = _set(app, script, "backup", "--cause", "x")
        assert (res.returncode, res.stdout) == (0, "role: backup\n"), res
        assert "argparse" in mods  # an answer the lean client does not know: the CLI's
        assert old.requests == [{"op": "set", "role": "backup", "cause": "x",
                                 "force": False, "brief": True}]
        assert app.show()["role"] == "master"  # the fake switched nothing, nor did the CLI
    finally:
        old.close()
        (app.run_dir / "control.sock").unlink()
    # One that never answers: after the timeout the CLI applies the order itself, without
    # asking (and waiting) a second time.
    silent = _FakeDaemon(app.run_dir / "control.sock", None)
    code = ("import sys\nfrom skat_plugin import quickset\nquickset.TIMEOUT = 1.0\n"
            "sys.exit(quickset.main())")
    try:
        t0 = time.monotonic()
        res = topo.lab.run(app.ns, PYTHON, "-IS", "-c", f"import sys\nsys.path.insert(0, "
                           f"{str(REPO)!r})\n{code}", "vrrp", "set", "backup", env=app.env())
        took = time.monotonic() - t0
        assert res.stdout == "role: backup\n" and "did not answer 'set' within 1 s; " \
            "applying it directly" in res.stderr, res
        assert len(silent.requests) == 1 and 1 <= took < 5, (silent.requests, took)
        assert app.show()["kernel_role"] == "backup"
    finally:
        silent.close()


def test_the_lean_request_is_what_the_full_cli_sends_and_brief_answers_are_exact(
        tmp_path) -> None:
    """quickset writes its JSON by hand and compares the daemon's answer as bytes: both
    must be what json and argparse make of the same command line."""
    from skat_plugin import cli, control, quickset

    lean = [["vrrp", "set", "master"], ["vrrp", "set", "backup", "--force", "--cause", ""],
            ["vrrp", "set", "backup", "--cause=a b:c/d", "--force", "--cause", "last"]]
    for argv in lean:
        args = cli.build_parser().parse_args(argv)
        assert json.loads(quickset.request(argv)) == {
            "op": "set", "role": args.role, "cause": args.cause, "force": args.force,
            "brief": True}, argv
    for argv in (["vrrp", "set"], ["vrrp", "show"], ["vrrp", "set", "master", "--cause"],
                 ["vrrp", "set", "master", "--cause", "--force"], ["--config", "x", "vrrp",
                 "set", "master"], ["vrrp", "set", "master", "--cause", "tab\there"],
                 ["vrrp", "set", "master", "--cause", "back\\slash"]):
        assert quickset.request(argv) is None, argv

    def serve(message: dict, answer: dict) -> bytes:
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(server.path))
        client.sendall(json.dumps(message).encode())
        client.shutdown(socket.SHUT_WR)
        assert server.handle_one(lambda _: answer)
        with client:
            return client.makefile("rb").read()

    server = control.Server(tmp_path / "control.sock")
    try:
        state = {"role": "backup", "cause": "cli", "since": "now", "config": {"in_dev": "i0"}}
        brief = {"op": "set", "role": "backup", "brief": True}
        assert serve(brief, state) == b'{"role": "backup"}'
        assert quickset.DONE[serve(brief, {**state, "role": "master"})] == "master"
        for message, answer in ((brief, {**state, "ignored": "stale"}),
                                (brief, {"error": "no", "exit_code": 10}),
                                ({**brief, "brief": False}, state),
                                ({"op": "status", "brief": True}, state)):
            assert json.loads(serve(message, answer)) == answer, (message, answer)
    finally:
        server.close()


def test_show_says_what_needs_action_and_exits_13(topo: Topo) -> None:
    """Issue 16 item 7: a port down is on the first screen (text and JSON), with exit 13."""
    app = topo.app
    res = app.cli("vrrp", "show", check=False)
    assert res.returncode == 0 and "NEEDS ACTION" not in res.stdout, res
    assert "fitness:      fit to be master (by fdpi_cli vrrp track)" in res.stdout and \
        "ports:        i0, o0: up and bridged" in res.stdout, res.stdout
    topo.lab.run(app.ns, "ip", "link", "set", "o0", "down")
    res = app.cli("vrrp", "show", check=False)
    assert res.returncode == 13 and "NEEDS ACTION: o0 is down" in res.stdout, res.stdout
    info = app.show()
    assert info["ports"]["problems"] == ["o0 is down"] and "o0 is down" in info["attention"]
    assert info["fitness"] == {"fit": False, "reason": "o0 is down",
                               "by": "fdpi_cli vrrp track"}, info["fitness"]
    topo.lab.run(app.ns, "ip", "link", "set", "o0", "up")
    wait_for(lambda: app.cli("vrrp", "show", check=False).returncode == 0, 5, 0.1,
             "nothing to act on once the port is up")


def test_state_is_root_only_and_stop_writes_stopped_metrics(
        topo: Topo, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17.7: state.json holds vrrp_auth_pass. Issue 16: role="stopped" is written."""
    app = topo.app
    assert (app.run_dir / "state.json").stat().st_mode & 0o777 == 0o600
    metrics = topo.lab.path("skat_plugin.prom")
    monkeypatch.setenv("SKAT_METRICS_FILE", str(metrics))
    assert app.cli("stop").stdout == "stopped\n"
    text = metrics.read_text()
    assert 'skat_plugin_role{role="stopped"} 1' in text and \
        'skat_plugin_role{role="master"} 0' in text, text
    assert "skat_plugin_fit -1" in text


def test_reload_names_a_missing_port_as_check_does(topo: Topo) -> None:
    """Issue 16 item 9: not 'restart the plugin' (6) for a port that does not exist (11)."""
    app = topo.app
    app.write_conf(BASE_CONF.replace("in_dev=i0", "in_dev=i9"))
    res = app.cli("reload", check=False)
    assert res.returncode == 11 and "port(s) i9 do not exist" in res.stderr, res
    assert "restart" not in res.stderr
