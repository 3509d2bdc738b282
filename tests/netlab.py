"""Network namespaces for tests: unique names, always removed, safe beside another run.

    with Lab("arp") as lab:
        sub = lab.ns("sub")                     # a host
        app = lab.appliance("a", conf)          # an appliance with its own SKAT_RUN_DIR
        lab.veth(sub, "s0", app.ns, "i0")
        lab.run(sub, "arping", "-c1", "-I", "s0", "100.64.0.1")

Every name carries a tag made of the process id and random bits, so two copies of the suite
never meet. Interfaces are created straight inside their namespaces (never in the root
namespace), so their short names cannot collide either.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"  # Debian's: the only one that sees python3-nftables

_live_labs: list[Lab] = []


class Appliance:
    """One appliance: a namespace, a fastdpi.conf and a run directory of its own."""

    def __init__(self, lab: Lab, ns: str, workdir: Path, conf: str) -> None:
        self.lab = lab
        self.ns = ns
        self.dir = workdir
        self.run_dir = workdir / "run"
        self.conf_path = workdir / "fastdpi.conf"
        self.conf_path.write_text(conf)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(SKAT_RUN_DIR=str(self.run_dir), FDPI_CONF=str(self.conf_path),
                   PYTHONPATH=str(REPO))
        env.pop("NOTIFY_SOCKET", None)
        return env

    def write_conf(self, text: str) -> None:
        self.conf_path.write_text(text)

    def cli(self, *args: str, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """fdpi_cli inside the appliance's namespace, exactly as keepalived would call it."""
        return self.lab.run(self.ns, PYTHON, "-m", "skat_plugin", *args, check=check,
                            env=self.env(), timeout=timeout)

    def cli_popen(self, *args: str) -> subprocess.Popen[str]:
        return self.lab.popen(self.ns, PYTHON, "-m", "skat_plugin", *args, env=self.env())

    def show(self) -> dict:
        import json
        # check=False: show exits 13 when something needs action, with its JSON all the same
        return json.loads(self.cli("vrrp", "show", "--json", check=False).stdout)


class Lab:
    def __init__(self, name: str) -> None:
        self.tag = f"sk{os.getpid() % 100000}{secrets.token_hex(2)}-{name}"[:40]
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.tmp.chmod(0o755)

    # -- lifetime --------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        _live_labs.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for proc in reversed(self.procs):
            _kill_group(proc)
        for ns in reversed(self.namespaces):
            for pid in _pids_in(ns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self in _live_labs:
            _live_labs.remove(self)

    # -- building --------------------------------------------------------------------------
    def ns(self, name: str) -> str:
        full = f"{self.tag}-{name}"
        subprocess.run(["ip", "netns", "add", full], check=True, capture_output=True)
        self.namespaces.append(full)
        self.run(full, "ip", "link", "set", "lo", "up")
        # Quiet, deterministic hosts: no DAD delay on test addresses.
        self.run(full, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                 "net.ipv6.conf.default.accept_dad=0")
        return full

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str, up: bool = True) -> None:
        subprocess.run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer",
                        "name", if_b, "netns", ns_b], check=True, capture_output=True)
        if up:
            self.run(ns_a, "ip", "link", "set", if_a, "up")
            self.run(ns_b, "ip", "link", "set", if_b, "up")

    def switch(self, ns: str, name: str, ports: Sequence[str]) -> None:
        """A plain L2 switch (Linux bridge) joining `ports` inside `ns`; silent like a switch."""
        self.run(ns, "ip", "link", "add", name, "type", "bridge", "stp_state", "0")
        for dev in (name, *ports):
            self.run(ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
        for port in ports:
            self.run(ns, "ip", "link", "set", port, "master", name)
            self.run(ns, "ip", "link", "set", port, "up")
        self.run(ns, "ip", "link", "set", name, "up")

    def appliance(self, name: str, conf: str) -> Appliance:
        ns = self.ns(name)
        workdir = self.tmp / name
        workdir.mkdir()
        return Appliance(self, ns, workdir, conf)

    # -- running ---------------------------------------------------------------------------
    def run(self, ns: str, *cmd: str, check: bool = True, timeout: float = 30,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                             timeout=timeout, env=env, cwd=REPO)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} in {ns} failed ({res.returncode}):\n"
                                 f"{res.stdout}{res.stderr}")
        return res

    def popen(self, ns: str, *cmd: str, env: dict[str, str] | None = None,
              stdout: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=stdout,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def path(self, name: str) -> Path:
        return self.tmp / name


def _kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=5)


def _pids_in(ns: str) -> list[int]:
    res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in res.stdout.split()]


def nft_tables(lab: Lab, ns: str) -> list[str]:
    """Every table as "family name", with " dormant" when it sleeps. From the text listing:
    nft 1.0.6 prints a dormant table's flags in JSON as garbage (whatever the pointer finds,
    newlines included), which breaks `nft -j list tables` and `list ruleset`."""
    text = lab.run(ns, "nft", "list", "ruleset").stdout
    return sorted(f"{fam} {name}{' dormant' if flags else ''}" for fam, name, flags in
                  re.findall(r"^table (\w+) (\w+) \{\n(\s*flags dormant)?", text, re.M))


def nft_rules(lab: Lab, ns: str) -> list[dict]:
    """Every chain and its rules, as nft's JSON objects (listed chain by chain: those
    listings carry no table object, so no table flags)."""
    items: list[dict] = []
    for item in json.loads(lab.run(ns, "nft", "-j", "list", "chains").stdout)["nftables"]:
        if "chain" in item:
            c = item["chain"]
            out = lab.run(ns, "nft", "-j", "list", "chain", c["family"], c["table"],
                          c["name"]).stdout
            items += [i for i in json.loads(out)["nftables"] if "metainfo" not in i]
    return items


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"):
    """Poll until predicate() is truthy; returns its value or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def close_all() -> None:
    """Last resort at interpreter exit (conftest registers it)."""
    for lab in list(_live_labs):
        lab.close()
