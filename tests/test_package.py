"""The Debian package in a booted Debian 12: what the operator gets from `apt install`.

Builds skat-plugin_*.deb from a clean copy of the tree, boots a Debian 12 root with its own
systemd (systemd-nspawn --boot) inside a test network namespace with two veth ports, installs
the .deb offline, and drives it the way an operator does: systemctl, fdpi_cli, journalctl,
dpkg --purge. The steps below run in order on one booted system.

The Debian root is built once with debootstrap (runtime dependencies included, so `dpkg -i`
needs no network) and cached in $SKAT_TEST_CACHE (default /var/cache/skat-plugin-test). It is
built under a temporary name and renamed when complete, so an interrupted build is never
reused. Each run boots it with --volatile=overlay: the cached root is never changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import VIP, VMAC
from netlab import Lab, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SYSTEM_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
              "HOME": "/root"}
ROOT_PACKAGES = ["systemd", "systemd-sysv", "dbus", "procps",
                 # the .deb's Depends, so that `dpkg -i` works without network
                 "python3", "python3-nftables", "python3-pyroute2", "python3-systemd",
                 "python3-jsonschema", "nftables", "iproute2",
                 # Recommends: to check the ordering drop-in on the real keepalived unit
                 "keepalived"]
TOOLS = ["debootstrap", "systemd-nspawn", "dpkg-buildpackage", "nsenter", "lintian", "arping"]

CONF = f"""# fastdpi.conf written by the package test (the operator's file)
in_dev=i0
out_dev=o0
vrrp_enable={{vrrp_enable}}
bras_arp_mac={VMAC}
bras_arp_ip={VIP}
"""
CAP_NET_ADMIN_AND_RAW = (1 << 12) | (1 << 13)

timings: dict[str, float] = {}


# --- building -------------------------------------------------------------------------------
def _run(cmd: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         env=kw.pop("env", SYSTEM_ENV), **kw)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n"
                             f"{res.stdout[-4000:]}{res.stderr[-4000:]}")
    return res


def build_deb(workdir: Path) -> Path:
    """dpkg-buildpackage in a copy of the tree (tracked + untracked, minus .gitignore'd)."""
    src = workdir / "skat-plugin"
    src.mkdir()
    if (REPO / ".git").exists():
        files = _run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                      "--exclude-standard"]).stdout.split("\0")
        for name in filter(None, files):
            path = REPO / name
            if path.is_file():
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, src / name)
    else:
        shutil.copytree(REPO, src, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc"))
    _run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src)
    debs = list(workdir.glob("skat-plugin_*_all.deb"))
    assert len(debs) == 1, f"expected one .deb, found {debs}"
    return debs[0]


def debian_mirror() -> str:
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", stanza, re.M) and "security" not in stanza:
                m = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if m:
                    return m.group(1)
    return "http://deb.debian.org/debian"


def cached_root() -> tuple[Path, bool]:
    """The Debian 12 root (built now if needed); True when it came from the cache."""
    cache = Path(os.environ.get("SKAT_TEST_CACHE") or "/var/cache/skat-plugin-test")
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(",".join(ROOT_PACKAGES).encode()).hexdigest()[:12]
    root = cache / f"bookworm-{key}"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first one's build
        if (root / "usr/lib/systemd/systemd").exists():
            return root, True
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache))
        try:
            _run(["debootstrap", "--variant=minbase", f"--include={','.join(ROOT_PACKAGES)}",
                  "bookworm", str(tmp), debian_mirror()], timeout=1200)
            for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root, False


# --- the booted system ----------------------------------------------------------------------
class Booted:
    """A Debian root booted with systemd-nspawn in a test network namespace."""

    def __init__(self, root: Path, netns: str, pkgdir: Path, log: Path) -> None:
        self.log = log
        # A cgroup of its own: on a host without systemd everything sits in the root
        # cgroup, and two containers there (two copies of the suite) would run their
        # systemds on one cgroup tree and kill each other's processes.
        self.name = f"skat-pkg-{netns.split('-')[0]}"
        self.cgroups = _make_cgroups(self.name)
        with open(log, "w") as out:
            self.proc = self._spawn(root, netns, pkgdir, out, self.name, self.cgroups)
        self.pid = 0

    def wait_booted(self) -> None:
        log = self.log
        self.pid = wait_for(self._init_pid, timeout=30, interval=0.1, what="container's systemd")
        # systemd answers on its bus a moment after exec; until then systemctl says nothing.
        state = wait_for(self._system_state, timeout=90, interval=0.2, what="booted system")
        if state not in ("running", "degraded"):
            raise AssertionError(f"container did not boot: {state}\n{log.read_text()[-3000:]}")

    @staticmethod
    def _spawn(root: Path, netns: str, pkgdir: Path, out, name: str,
               cgroups: list[Path]) -> subprocess.Popen[str]:
        def enter_cgroups() -> None:
            for cg in cgroups:
                (cg / "cgroup.procs").write_text(str(os.getpid()))

        return subprocess.Popen(
            ["systemd-nspawn", "-D", str(root), "--boot", "--register=no", "--keep-unit",
             "--volatile=overlay", f"--network-namespace-path=/run/netns/{netns}",
             # A real appliance's systemd has CAP_NET_ADMIN and a writable /proc/sys/net;
             # nspawn grants both only with its own --private-network, so ask for them.
             "--capability=CAP_NET_ADMIN",
             f"--bind-ro={pkgdir}:/mnt/pkg", f"--machine={name}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**SYSTEM_ENV, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"},
            start_new_session=True, preexec_fn=enter_cgroups)

    def _system_state(self) -> str | None:
        res = self.sh("systemctl is-system-running --wait", check=False, timeout=90)
        # "offline": asked before the new systemd created /run/systemd/system (sd_booted()
        # is still false a moment after exec), not a verdict on the boot: ask again.
        state = res.stdout.strip()
        return None if state in ("", "offline") else state

    def _init_pid(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited:\n{self.log.read_text()[-3000:]}")
        for status in glob.glob("/proc/[0-9]*/status"):
            with contextlib.suppress(OSError):
                text = Path(status).read_text()
                nspid = re.search(r"^NSpid:\s+(.*)$", text, re.M)
                if (re.search(r"^Name:\s+systemd$", text, re.M) and nspid
                        and nspid.group(1).split()[-1] == "1" and len(nspid.group(1).split()) > 1
                        and self._descends(int(status.split("/")[2]))):
                    return int(status.split("/")[2])
        return None

    def _descends(self, pid: int) -> bool:
        while pid > 1:
            if pid == self.proc.pid:
                return True
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        return False

    def run(self, *cmd: str, check: bool = True, timeout: float = 60,
            ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["nsenter", "-t", str(self.pid), "-a", *cmd], capture_output=True,
                             text=True, timeout=timeout, env=SYSTEM_ENV)
        if check and res.returncode != 0:
            journal = ""
            if cmd[0] in ("systemctl", "dpkg"):
                journal = "journal:\n" + self.run("journalctl", "-n", "40", "--no-pager",
                                                   check=False).stdout
            raise AssertionError(f"in the container: {' '.join(cmd)} failed "
                                 f"({res.returncode}):\n{res.stdout}{res.stderr}{journal}")
        return res

    def sh(self, script: str, check: bool = True, timeout: float = 60,
           ) -> subprocess.CompletedProcess[str]:
        return self.run("/bin/sh", "-c", script, check=check, timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # nspawn: clean poweroff
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        _remove_cgroups(self.cgroups)

    # -- what the steps look at --------------------------------------------------------------
    def show(self) -> dict:
        return json.loads(self.run("fdpi_cli", "vrrp", "show", "--json").stdout)

    def ruleset(self) -> str:
        return self.run("nft", "list", "ruleset").stdout

    def prop(self, unit: str, name: str) -> str:
        return self.run("systemctl", "show", "-P", name, unit).stdout.strip()

    def write_conf(self, vrrp_enable: int, extra: str = "") -> None:
        self.sh(f"mkdir -p /etc/dpi && cat > /etc/dpi/fastdpi.conf <<'EOF'\n"
                f"{CONF.format(vrrp_enable=vrrp_enable)}{extra}EOF")

    def journal(self, *match: str) -> list[dict]:
        out = self.run("journalctl", "-o", "json", "--no-pager", *match).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def _cgroup_roots() -> list[Path]:
    """The hierarchies a container's systemd uses: hybrid (systemd + unified) or pure v2."""
    hybrid = [Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]
    found = [h for h in hybrid if (h / "cgroup.procs").exists()]
    if not found and Path("/sys/fs/cgroup/cgroup.procs").exists():
        found = [Path("/sys/fs/cgroup")]
    return found


def _make_cgroups(name: str) -> list[Path]:
    made = []
    for root in _cgroup_roots():
        cg = root / f"{name}-{os.getpid()}"
        cg.mkdir(exist_ok=True)
        made.append(cg)
    return made


def _remove_cgroups(cgroups: list[Path]) -> None:
    """Depth first: the container's systemd made its own slices and scopes below."""
    for cg in cgroups:
        for path in sorted(cg.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                with contextlib.suppress(OSError):
                    path.rmdir()
        with contextlib.suppress(OSError):
            cg.rmdir()


def _tools_missing() -> list[str]:
    return [t for t in TOOLS if shutil.which(t, path=SYSTEM_ENV["PATH"]) is None]


@pytest.fixture(scope="module")
def system(pytestconfig: pytest.Config) -> Iterator[tuple[Booted, Lab, dict]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, network namespaces, systemd-nspawn)")
    missing = _tools_missing()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install debootstrap "
                    f"systemd-container dpkg-dev debhelper dh-python pybuild-plugin-pyproject "
                    f"lintian arping)")
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="skat-pkg-"))
    work.chmod(0o755)
    lab = Lab("pkg")
    booted = None
    try:
        deb = build_deb(work)
        timings["build .deb"] = time.monotonic() - t0
        t = time.monotonic()
        root, reused = cached_root()
        timings[f"Debian root ({'cached' if reused else 'debootstrap'})"] = time.monotonic() - t
        app = lab.ns("app")
        sub = lab.ns("sub")
        lab.veth(sub, "s0", app, "i0")
        up = lab.ns("up")
        lab.veth(up, "u0", app, "o0")
        lab.run(sub, "ip", "addr", "add", "100.64.0.10/24", "dev", "s0")
        t = time.monotonic()
        booted = Booted(root, app, work, work / "nspawn.log")
        booted.wait_booted()
        timings["boot"] = time.monotonic() - t
        yield booted, lab, {"deb": deb, "sub": sub, "app": app, "work": work}
    finally:
        if booted is not None:
            booted.close()
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
        timings["total"] = time.monotonic() - t0
        reporter = pytestconfig.pluginmanager.getplugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("package test timings: " + ", ".join(
                f"{k} {v:.1f}s" for k, v in timings.items()))


def _arp_replies(lab: Lab, sub: str) -> int:
    res = lab.run(sub, "arping", "-c", "2", "-w", "2", "-I", "s0", VIP, check=False)
    return len(re.findall(re.escape(VMAC), res.stdout, re.I))


def _daemon_status_mentions(booted: Booted, role: str) -> bool:
    return role in booted.prop("skat-plugin-daemon.service", "StatusText")


# --- the steps, in order --------------------------------------------------------------------
def test_01_lintian_reports_no_errors(system) -> None:
    _, _, ctx = system
    res = subprocess.run(["lintian", "--no-tag-display-limit", str(ctx["deb"])],
                         capture_output=True, text=True, env=SYSTEM_ENV, timeout=300)
    errors = [line for line in res.stdout.splitlines() if line.startswith("E:")]
    assert not errors, res.stdout


def test_02_install_offline_enables_the_unit(system) -> None:
    booted, _, ctx = system
    res = booted.run("dpkg", "-i", f"/mnt/pkg/{ctx['deb'].name}", timeout=120)
    # No fastdpi.conf yet: one clear line of what to create, not two "Could not execute
    # systemctl" from units started to fail.
    said = res.stdout + res.stderr
    assert "Could not execute systemctl" not in said, said
    assert said.count("/etc/dpi/fastdpi.conf does not exist") == 1, said
    assert "fdpi_cli check" in said
    # ...and the one command that writes the election (issue 16 item 4).
    assert "fdpi_cli vrrp keepalived-config --output /etc/keepalived/keepalived.conf" in said
    assert booted.run("systemctl", "is-enabled", "skat-plugin.service").stdout.strip() == \
        "enabled"
    for path in ("/usr/bin/fdpi_cli", "/usr/share/skat-plugin/nft/master.nft",
                 "/usr/share/skat-plugin/keepalived/notify-master",
                 "/usr/share/man/man8/fdpi_cli.8.gz",
                 "/usr/share/doc/skat-plugin/examples/fastdpi.conf.example"):
        booted.run("test", "-e", path)
    # The package does not invent a fastdpi.conf, nor start what can only fail.
    booted.run("test", "!", "-e", "/etc/dpi/fastdpi.conf")
    assert booted.run("systemctl", "is-active", "skat-plugin.service",
                      check=False).stdout.strip() == "inactive"
    # Started anyway (as at boot), the unit fails in its check, at priority err, with the
    # status of a configuration error (6, which systemd names NOTCONFIGURED).
    assert booted.run("systemctl", "start", "skat-plugin.service", check=False).returncode
    status = booted.run("systemctl", "status", "--no-pager", "--full", "skat-plugin.service",
                        check=False).stdout
    assert "status=6/NOTCONFIGURED" in status, status
    log = booted.run("journalctl", "-p", "err", "-u", "skat-plugin.service", "--no-pager").stdout
    assert "/etc/dpi/fastdpi.conf: no such file" in log, log


def test_03_installed_units_verify_silently(system) -> None:
    booted, _, _ = system
    res = booted.run("systemd-analyze", "verify", "--man=no", "skat-plugin.service",
                     "skat-plugin-daemon.service", "keepalived.service", check=False)
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr
    after = booted.prop("keepalived.service", "After").split()
    requires = booted.prop("keepalived.service", "Requires").split()
    assert "skat-plugin.service" in after and "skat-plugin.service" in requires
    assert "skat-plugin-daemon.service" in after


def test_04_start_comes_up_as_master_with_the_daemon(system) -> None:
    booted, lab, ctx = system
    booted.write_conf(vrrp_enable=1)
    assert booted.run("fdpi_cli", "check").stdout.startswith("ok: /etc/dpi/fastdpi.conf")
    booted.run("systemctl", "reset-failed", "skat-plugin.service")
    booted.run("systemctl", "start", "skat-plugin.service", timeout=90)
    assert booted.prop("skat-plugin.service", "ActiveState") == "active"
    # The daemon is pulled in (Wants=) and ordered after: it becomes ready a moment later.
    wait_for(lambda: booted.prop("skat-plugin-daemon.service", "ActiveState") == "active",
             timeout=20, interval=0.1, what="skat-plugin-daemon.service active (READY=1)")
    assert booted.show()["role"] == "master"
    assert "table bridge skat_plugin" in booted.ruleset() or "skat_plugin" in booted.ruleset()
    wait_for(lambda: _daemon_status_mentions(booted, "master"), timeout=10,
             what="daemon STATUS= naming the role master")
    status = booted.run("systemctl", "status", "--no-pager", "skat-plugin-daemon.service",
                        check=False).stdout
    assert "master" in status, status
    assert _arp_replies(lab, ctx["sub"]) >= 1, "the master must answer ARP for the VIP"


def test_04b_every_command_runs_from_the_installed_script(system) -> None:
    """/usr/bin/fdpi_cli starts Python without site (-IS): what each command imports
    (python3-nftables, -pyroute2, -jsonschema, -systemd) must be found all the same.
    start, check, reload, stop, show, set, keepalived-config and the daemon's unit are
    the other steps'."""
    booted, _, _ = system
    assert booted.run("fdpi_cli", "--version").stdout == "fdpi_cli (skat-plugin) 0.1.0\n"
    assert "keepalived-config" in booted.run("fdpi_cli", "vrrp", "--help").stdout
    assert json.loads(booted.run("fdpi_cli", "vrrp", "subscribers", "--json").stdout) == []
    booted.run("cp", "/etc/dpi/fastdpi.conf", "/tmp/fastdpi-b.conf")
    res = booted.run("fdpi_cli", "vrrp", "check-group", "/etc/dpi/fastdpi.conf",
                     "/tmp/fastdpi-b.conf")
    assert "group consistent" in res.stdout, res.stdout
    res = booted.run("fdpi_cli", "vrrp", "track", "--require-daemon", check=False)
    assert (res.returncode, res.stderr) == (0, ""), res  # a started master with its daemon
    # The inspector's unit runs `fdpi_cli inspector` from the same script.
    wait_for(lambda: booted.prop("skat-plugin-inspector.service", "ActiveState") == "active",
             timeout=20, interval=0.2, what="skat-plugin-inspector.service active")
    time.sleep(1)  # Type=simple: active from the fork on; an import error ends it at once
    assert booted.prop("skat-plugin-inspector.service", "ActiveState") == "active"
    assert booted.prop("skat-plugin-inspector.service", "NRestarts") == "0"


def test_05_hardening_holds_and_still_works(system) -> None:
    booted, _, _ = system
    pid = booted.prop("skat-plugin-daemon.service", "MainPID")
    caps = booted.run("grep", "-E", "^(CapBnd|CapEff|NoNewPrivs)", f"/proc/{pid}/status").stdout
    fields = dict(line.split(":\t") for line in caps.splitlines())
    assert int(fields["CapBnd"], 16) == CAP_NET_ADMIN_AND_RAW, caps
    assert int(fields["CapEff"], 16) == CAP_NET_ADMIN_AND_RAW, caps
    assert fields["NoNewPrivs"].strip() == "1"
    # `start` ran under the same hardening: bridges made, IPv6 silenced on the ports.
    for dev in ("i0", "o0"):
        assert booted.run("cat", f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").stdout.strip() \
            == "1"
    # ProtectSystem=strict: the daemon cannot write /etc.
    res = booted.run("nsenter", "-t", pid, "-m", "touch", "/etc/skat-write-test", check=False)
    assert res.returncode != 0


def test_06_vrrp_set_backup_goes_through_the_daemon(system) -> None:
    booted, lab, ctx = system
    # /usr/bin/fdpi_cli is the package's own script (debian/fdpi_cli): Python without site.
    script = booted.run("cat", "/usr/bin/fdpi_cli").stdout
    assert script.startswith("#!/usr/bin/python3 -IS\n") and "skat_plugin.quickset" in script
    out = booted.run("fdpi_cli", "vrrp", "set", "backup").stdout
    assert out == "role: backup\n"
    # keepalived's path at every failover imports none of json, re, argparse, nftables:
    # the daemon switched (-X importtime lists the modules; the shebang's -IS as well).
    res = booted.run("/usr/bin/python3", "-IS", "-X", "importtime", "/usr/bin/fdpi_cli",
                     "vrrp", "set", "backup", "--cause", "keepalived-notify")
    mods = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines()
            if line.startswith("import time:")}
    assert res.stdout == "role: backup\n" and "skat_plugin.quickset" in mods, res
    assert not mods & {"json", "re", "argparse", "os", "site", "nftables", "skat_plugin.cli"}, \
        sorted(mods)
    info = booted.show()
    assert info["role"] == "backup" and info["kernel_role"] == "backup"
    wait_for(lambda: _daemon_status_mentions(booted, "backup"), timeout=10,
             what="daemon STATUS= naming the role backup")
    assert "backup" in booted.run("systemctl", "status", "--no-pager",
                                  "skat-plugin-daemon.service", check=False).stdout
    entries = booted.journal("SKAT_ROLE=backup")
    assert entries and entries[-1].get("SKAT_PREVIOUS_ROLE") == "master", entries[-1:]
    assert _arp_replies(lab, ctx["sub"]) == 0, "a backup must not answer ARP"


def test_07_daemon_crash_keeps_role_and_rules(system) -> None:
    booted, _, _ = system
    before = booted.prop("skat-plugin-daemon.service", "MainPID")
    booted.run("systemctl", "kill", "-s", "SIGKILL", "skat-plugin-daemon.service")
    wait_for(lambda: booted.prop("skat-plugin-daemon.service", "MainPID") not in ("0", before)
             and booted.prop("skat-plugin-daemon.service", "ActiveState") == "active",
             timeout=20, interval=0.2, what="systemd restarting the daemon")
    assert booted.prop("skat-plugin-daemon.service", "NRestarts") == "1"
    info = booted.show()
    assert info["role"] == "backup" and info["kernel_role"] == "backup"


def test_08_reload_applies_vrrp_enable_hot(system) -> None:
    booted, lab, ctx = system
    daemon_pid = booted.prop("skat-plugin-daemon.service", "MainPID")
    booted.write_conf(vrrp_enable=0)
    booted.run("systemctl", "reload", "skat-plugin.service")
    info = booted.show()
    assert info["vrrp_enable"] == 0 and info["role"] == "master"  # VRRP off: always master
    assert info["kernel_role"] == "master"
    assert booted.prop("skat-plugin-daemon.service", "MainPID") == daemon_pid  # no restart
    assert any(e.get("SKAT_CAUSE") == "reload" for e in booted.journal("SKAT_ROLE=master"))
    assert _arp_replies(lab, ctx["sub"]) >= 1
    res = booted.run("fdpi_cli", "vrrp", "set", "backup", check=False)
    assert res.returncode == 10 and "vrrp_enable=0" in res.stderr
    # Read by the full CLI started without site: it found python3-systemd for the journal.
    wait_for(lambda: any("vrrp_enable=0" in e.get("MESSAGE", "") for e in booted.journal(
        "SYSLOG_IDENTIFIER=fdpi_cli", "-p", "err")), timeout=5, interval=0.2,
        what="the refused vrrp set in the journal at priority err")


def test_09_bad_config_reload_fails_and_changes_nothing(system) -> None:
    booted, _, _ = system
    rules = booted.ruleset()
    booted.write_conf(vrrp_enable=1, extra="bras_arp_ip=not-an-address\n")
    res = booted.run("systemctl", "reload", "skat-plugin.service", check=False)
    assert res.returncode != 0
    assert booted.prop("skat-plugin.service", "ActiveState") == "active"
    assert booted.ruleset() == rules
    # An error, filed as one: `journalctl -p err` finds it.
    log = booted.run("journalctl", "-p", "err", "-u", "skat-plugin.service",
                     "--no-pager").stdout
    assert "bras_arp_ip" in log, log
    booted.write_conf(vrrp_enable=1)
    booted.run("systemctl", "reload", "skat-plugin.service")


def test_10_upgrade_keeps_the_role(system) -> None:
    """Reinstalling the package (dpkg's upgrade path) restarts only the daemon."""
    booted, _, ctx = system
    booted.run("fdpi_cli", "vrrp", "set", "backup")
    since = booted.show()["since"]
    daemon_pid = booted.prop("skat-plugin-daemon.service", "MainPID")
    booted.run("dpkg", "-i", f"/mnt/pkg/{ctx['deb'].name}", timeout=120)
    info = booted.show()
    assert info["role"] == "backup" and info["kernel_role"] == "backup"
    assert info["since"] == since
    assert booted.prop("skat-plugin-daemon.service", "MainPID") != daemon_pid
    assert booted.prop("skat-plugin-daemon.service", "ActiveState") == "active"


KEEPALIVED_KEYS = """vrrp_interface=v0
vrrp_mgmt_vip=192.0.2.100/24
vrrp_advert_int=0.1
"""


def test_10b_keepalived_under_systemd_drives_the_role(system) -> None:
    """The real thing: keepalived's own unit with the package's drop-in, the generated
    keepalived.conf, the notify scripts and FIFO, the hardened daemon. A keepalived reload
    must not silence the master; keepalived killed must make it step down."""
    booted, lab, ctx = system
    mgmt = lab.ns("mgmt")
    lab.veth(ctx["app"], "v0", mgmt, "m0")
    lab.run(ctx["app"], "ip", "addr", "add", "192.0.2.11/24", "dev", "v0")
    booted.write_conf(vrrp_enable=1, extra=KEEPALIVED_KEYS)
    booted.run("systemctl", "reload", "skat-plugin.service")
    booted.run("fdpi_cli", "vrrp", "keepalived-config", "--output",
               "/etc/keepalived/keepalived.conf")
    booted.run("fdpi_cli", "vrrp", "set", "backup", "--force")  # keepalived must raise it
    booted.run("systemctl", "start", "keepalived.service", timeout=60)

    def keepalived_state() -> str | None:
        return (booted.show().get("keepalived") or {}).get("state")

    wait_for(lambda: keepalived_state() == "MASTER" and booted.show()["role"] == "master",
             timeout=15, interval=0.2, what="keepalived MASTER (alone) -> role master")
    assert _arp_replies(lab, ctx["sub"]) >= 1

    for _ in range(2):  # reopens the notify FIFO; the daemon may not read keepalived's fds
        booted.run("systemctl", "reload", "keepalived.service")
        time.sleep(1)
    info = booted.show()
    assert (info["role"], info["kernel_role"], keepalived_state()) == \
        ("master", "master", "MASTER")
    assert not booted.journal("SKAT_CAUSE=election-lost")

    booted.run("systemctl", "kill", "--signal=KILL", "keepalived.service")
    wait_for(lambda: booted.show()["role"] == "backup", timeout=5, interval=0.05,
             what="step down after keepalived was killed")
    # journald files a datagram a moment after it was sent: the state file can be first.
    wait_for(lambda: booted.journal("SKAT_CAUSE=election-lost"), timeout=5, interval=0.2,
             what="the step-down in the journal")
    assert _arp_replies(lab, ctx["sub"]) == 0


def _keepalived_active(booted: Booted) -> bool:
    return booted.prop("keepalived.service", "ActiveState") == "active"


def _elected(booted: Booted) -> bool:
    info = booted.show()
    return (info.get("keepalived") or {}).get("state") == "MASTER" and \
        info["role"] == "master" and not info["awaiting_election"]


def test_10c_start_brings_back_the_keepalived_that_stop_took_down(system) -> None:
    """keepalived requires the plugin, so stopping the plugin stops it. Starting the plugin
    (by hand, or by dpkg -i of a stopped one) must start it again: else the appliance
    ends as a master by SKAT's start rule alone, a second master on a running group."""
    booted, _, ctx = system
    booted.run("systemctl", "reset-failed", "keepalived.service")  # 10b killed it
    booted.run("systemctl", "start", "keepalived.service", timeout=60)
    wait_for(lambda: _elected(booted), timeout=15, interval=0.2, what="keepalived MASTER")
    booted.run("systemctl", "stop", "skat-plugin.service", timeout=90)
    assert booted.prop("keepalived.service", "ActiveState") == "inactive"
    booted.run("systemctl", "start", "skat-plugin.service", timeout=90)
    wait_for(lambda: _keepalived_active(booted), timeout=15, interval=0.2,
             what="keepalived started again with the plugin")
    wait_for(lambda: _elected(booted), timeout=15, interval=0.2,
             what="the role from keepalived's election, not from the start rule")
    booted.run("systemctl", "stop", "skat-plugin.service", timeout=90)
    booted.run("dpkg", "-i", f"/mnt/pkg/{ctx['deb'].name}", timeout=120)
    wait_for(lambda: _keepalived_active(booted), timeout=15, interval=0.2,
             what="keepalived started again by the reinstall")
    wait_for(lambda: _elected(booted), timeout=15, interval=0.2, what="elected after dpkg -i")


def test_10d_restart_with_a_wrong_port_fails_at_once_and_says_so(system) -> None:
    booted, _, _ = system
    booted.sh("sed -i 's/^in_dev=i0$/in_dev=nope0/' /etc/dpi/fastdpi.conf")
    t0 = time.monotonic()
    res = booted.run("systemctl", "restart", "skat-plugin.service", check=False, timeout=90)
    took = time.monotonic() - t0
    assert res.returncode != 0
    assert took < 15, f"a restart with a wrong port took {took:.1f} s to fail"
    status = booted.run("systemctl", "status", "--no-pager", "--full", "-n", "10",
                        "skat-plugin.service", check=False).stdout
    assert "ExecStartPre=/usr/bin/fdpi_cli check --wait-ports-at-boot 45 (code=exited, " \
           "status=11)" in status, status
    assert "port(s) nope0 do not exist" in status, status
    errors = booted.run("journalctl", "-p", "err", "-u", "skat-plugin.service", "-n", "5",
                        "--no-pager").stdout
    assert "port(s) nope0 do not exist" in errors, errors
    # Stop ran first: no rules, no keepalived. That must be said, at err, where it is read.
    assert "skat-plugin is down on this appliance: no rules are loaded" in errors, errors
    assert "keepalived is not running" in errors, errors
    assert "skat_plugin" not in booted.ruleset()
    assert not _keepalived_active(booted)
    # The inspector is bound to the plugin: not left active beside no rules (issue 16).
    wait_for(lambda: booted.prop("skat-plugin-inspector.service", "ActiveState")
             in ("inactive", "failed"), timeout=15, interval=0.2, what="the inspector down")
    booted.sh("sed -i 's/^in_dev=nope0$/in_dev=i0/' /etc/dpi/fastdpi.conf")
    booted.run("systemctl", "start", "skat-plugin.service", timeout=90)
    wait_for(lambda: _keepalived_active(booted), timeout=15, interval=0.2,
             what="keepalived back once the port is fixed")


def test_10e_the_unit_can_tell_a_boot_from_a_restart(system) -> None:
    """check --wait-ports-at-boot waits only while systemd boots, and asks systemd: under
    the unit's own sandbox that question must get systemd's answer, not an error."""
    booted, _, _ = system
    unit = (REPO / "units/skat-plugin.service").read_text()
    sandbox = unit.split("# --- hardening", 1)[1].split("[Install]", 1)[0]
    props = [f"--property={line}" for line in sandbox.splitlines()
             if "=" in line and not line.startswith("#")]
    res = booted.run("systemd-run", "--wait", "--pipe", "--quiet", *props, "/usr/bin/python3",
                     "-c", "from skat_plugin import ports; print(ports.system_state())")
    assert res.stdout.strip() in ("running", "degraded"), res.stdout + res.stderr


def test_10f_a_restart_of_the_daemon_hands_nothing_over(system) -> None:
    """Issue 16: a restart of the daemon (by hand, by an upgrade's postinst, by systemd after
    kill -9) leaves the data plane in the kernel, so keepalived must not hear "unfit" and
    hand the gateway over twice. A daemon stopped for good still hands over at once."""
    from skat_plugin.election import restart

    booted, _, ctx = system
    booted.run("systemctl", "reset-failed", "keepalived.service", check=False)
    booted.run("systemctl", "start", "keepalived.service", timeout=60)
    wait_for(lambda: _elected(booted), timeout=15, interval=0.2, what="keepalived MASTER")

    def faults() -> int:
        return sum("Entering FAULT STATE" in str(e.get("MESSAGE", ""))
                   for e in booted.journal("-u", "keepalived.service"))

    def daemon_back(old: str) -> bool:
        return booted.prop("skat-plugin-daemon.service", "MainPID") not in ("0", old) and \
            booted.prop("skat-plugin-daemon.service", "ActiveState") == "active"

    def settled(what: str) -> None:
        time.sleep(restart.GRACE + 1)  # every grace timer fired, and found a daemon
        journal = booted.run("journalctl", "--no-pager", "-n", "60", "-o", "cat",
                             check=False).stdout
        assert faults() == before, f"keepalived went to FAULT: {what}\n{journal}"
        assert booted.sh("cat /run/skat-plugin/keepalived.track").stdout.startswith("0")
        assert _elected(booted), what

    before = faults()
    pid = booted.prop("skat-plugin-daemon.service", "MainPID")
    booted.run("systemctl", "restart", "skat-plugin-daemon.service", timeout=60)
    wait_for(lambda: daemon_back(pid), timeout=20, interval=0.1, what="daemon restarted")
    settled("systemctl restart")
    pid = booted.prop("skat-plugin-daemon.service", "MainPID")
    booted.run("dpkg", "-i", f"/mnt/pkg/{ctx['deb'].name}", timeout=120)  # restarts it
    wait_for(lambda: daemon_back(pid), timeout=20, interval=0.1, what="daemon upgraded")
    settled("dpkg -i")
    pid = booted.prop("skat-plugin-daemon.service", "MainPID")
    booted.run("systemctl", "kill", "-s", "SIGKILL", "skat-plugin-daemon.service")
    wait_for(lambda: daemon_back(pid), timeout=20, interval=0.1, what="systemd restarting it")
    settled("kill -9")
    assert booted.journal("SKAT_CAUSE=daemon-restart"), "the restart is said in the journal"

    # Stopped for good: nobody supervises the master; keepalived hears it at once.
    booted.run("systemctl", "stop", "skat-plugin-daemon.service", timeout=60)
    wait_for(lambda: faults() > before, timeout=3, interval=0.1,
             what="keepalived in FAULT once the daemon is stopped")
    booted.run("systemctl", "start", "skat-plugin-daemon.service", timeout=60)
    wait_for(lambda: _elected(booted), timeout=15, interval=0.2, what="elected again")


def test_11_stop_removes_the_rules(system) -> None:
    booted, _, _ = system
    booted.run("systemctl", "stop", "skat-plugin.service", timeout=90)
    assert booted.prop("skat-plugin-daemon.service", "ActiveState") == "inactive"
    assert "skat_plugin" not in booted.ruleset()
    assert booted.show()["role"] == "stopped"
    assert booted.run("ip", "link", "show", "i0").stdout.count("master") == 1  # bridges stay


def test_12_purge_keeps_only_the_operators_config(system) -> None:
    booted, _, _ = system
    booted.run("systemctl", "start", "skat-plugin.service", timeout=90)
    res = booted.run("dpkg", "--purge", "skat-plugin", timeout=120)
    # 10b's generated keepalived.conf calls the removed scripts: said once, by name.
    said = res.stdout + res.stderr
    assert said.count("/etc/keepalived/keepalived.conf still calls skat-plugin's scripts") \
        == 1, said
    assert "includea of installed.conf" in said and "track_file skat_fitness" in said, said
    assert booted.run("keepalived", "-t", "-f", "/etc/keepalived/keepalived.conf",
                      check=False).returncode != 0
    assert "skat_plugin" not in booted.ruleset()
    for path in ("/usr/bin/fdpi_cli", "/usr/share/skat-plugin", "/run/skat-plugin",
                 "/lib/systemd/system/skat-plugin.service",
                 "/lib/systemd/system/keepalived.service.d/skat-plugin.conf",
                 "/usr/lib/python3/dist-packages/skat_plugin",
                 "/etc/systemd/system/multi-user.target.wants/skat-plugin.service"):
        booted.run("test", "!", "-e", path)
    assert "in_dev=i0" in booted.run("cat", "/etc/dpi/fastdpi.conf").stdout
    status = booted.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "skat-plugin",
                        check=False).stdout
    assert not status.startswith("ii"), status
