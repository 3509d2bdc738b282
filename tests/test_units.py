"""The systemd units pass `systemd-analyze verify` without a word, and what they name exists.

systemd-analyze only warns (exit 0) on unknown keys or bad values, so any output fails.
The units are verified in a scratch root that has the host's own units (for the targets they
order against), /usr/bin/fdpi_cli (a launcher of this checkout: verify only checks that the
command is executable) and keepalived when the host has it (for the drop-in).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "units"
SERVICES = sorted(p.name for p in UNITS.glob("*.service"))
HOST_UNITS = Path("/usr/lib/systemd/system")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None or
                                not HOST_UNITS.is_dir(), reason="needs systemd-analyze")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("unitroot")
    (r / "usr/bin").mkdir(parents=True)
    (r / "usr/sbin").mkdir(parents=True)
    (r / "usr/lib/systemd").mkdir(parents=True)
    (r / "etc/systemd/system").mkdir(parents=True)
    for link in ("lib", "bin", "sbin"):
        (r / link).symlink_to(f"usr/{link}")
    shutil.copytree(HOST_UNITS, r / "usr/lib/systemd/system", symlinks=True)
    shutil.copy2("/usr/bin/kill", r / "usr/bin/kill")
    shutil.copy2("/bin/sh", r / "usr/bin/sh")  # ExecStartPost: keepalived back with the plugin
    launcher = r / "usr/bin/fdpi_cli"
    launcher.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec /usr/bin/python3 -m skat_plugin "$@"\n')
    launcher.chmod(0o755)
    if Path("/usr/sbin/keepalived").exists():
        shutil.copy2("/usr/sbin/keepalived", r / "usr/sbin/keepalived")
    # Our files exactly where the package puts them (debian/skat-plugin.install).
    dest = r / "usr/lib/systemd/system"
    for name in SERVICES:
        shutil.copy2(UNITS / name, dest / name)
    dropins = UNITS / "keepalived.service.d"
    (dest / "keepalived.service.d").mkdir(exist_ok=True)
    for f in dropins.iterdir():
        shutil.copy2(f, dest / "keepalived.service.d" / f.name)
    return r


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
           "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(["systemd-analyze", "verify", "--man=no", "--generators=no",
                           f"--root={root}", *units], capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.mark.parametrize("unit", SERVICES)
def test_unit_verifies_silently(root: Path, unit: str) -> None:
    res = verify(root, unit)
    assert res.returncode == 0 and res.stdout + res.stderr == "", (
        f"systemd-analyze verify {unit}:\n{res.stdout}{res.stderr}")


def test_keepalived_dropin_verifies_silently(root: Path) -> None:
    if not (root / "usr/lib/systemd/system/keepalived.service").exists() or \
            not (root / "usr/sbin/keepalived").exists():
        pytest.skip("keepalived is not installed on this host")
    res = verify(root, "keepalived.service")
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


def test_keepalived_is_ordered_after_the_plugin() -> None:
    text = (UNITS / "keepalived.service.d/skat-plugin.conf").read_text()
    assert re.search(r"^After=.*\bskat-plugin\.service\b", text, re.M)
    assert re.search(r"^Requires=.*\bskat-plugin\.service\b", text, re.M)
    plugin = (UNITS / "skat-plugin.service").read_text()
    assert re.search(r"^Before=.*\bkeepalived\.service\b", plugin, re.M)


def _keys(unit: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            keys.setdefault(k.strip(), []).append(v.strip())
    return keys


@pytest.mark.parametrize("unit", SERVICES)
def test_hardening_is_what_the_docs_say(unit: str) -> None:
    k = _keys(unit)
    assert k["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    assert k["ProtectSystem"] == ["strict"]
    assert k["NoNewPrivileges"] == ["yes"]
    assert set(k["RestrictAddressFamilies"][0].split()) == {
        "AF_UNIX", "AF_NETLINK", "AF_PACKET", "AF_INET", "AF_INET6"}
    # disable_ipv6 is written under /proc/sys: ProtectKernelTunables would make it read-only.
    assert k.get("ProtectKernelTunables", ["no"]) == ["no"]
    assert k["RuntimeDirectory"] == ["skat-plugin"] and k["RuntimeDirectoryPreserve"] == ["yes"]


def test_start_is_checked_first_and_brings_keepalived_back() -> None:
    """check before start (a wrong port fails at once, waiting only at boot); keepalived,
    which stopping the plugin took down, is started again after the plugin."""
    k = _keys("skat-plugin.service")
    assert k["ExecStartPre"] == ["/usr/bin/fdpi_cli check --wait-ports-at-boot 45"]
    assert k["ExecStart"] == ["/usr/bin/fdpi_cli start"]  # no unconditional port wait
    post = k["ExecStartPost"][0]
    assert post.startswith("-") and "is-enabled keepalived.service" in post
    assert "--no-block start keepalived.service" in post  # keepalived is ordered after us


def test_daemon_unit_is_notify_with_watchdog() -> None:
    k = _keys("skat-plugin-daemon.service")
    assert k["Type"] == ["notify"] and k["WatchdogSec"]
    assert k["ExecStart"][0].startswith("/usr/bin/fdpi_cli daemon")
    assert "skat-plugin.service" in k["BindsTo"][0]


def test_man_page_renders_without_warnings() -> None:
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "MANROFFSEQ": "", "MANWIDTH": "80"}
    res = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z",
                          str(REPO / "docs/fdpi_cli.8")], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_example_config_is_valid() -> None:
    """The shipped example loads with the plugin's own validation (needs jsonschema)."""
    res = subprocess.run(["/usr/bin/python3", "-c",
                          "import sys; from skat_plugin import config; "
                          "config.load(sys.argv[1])", str(REPO / "docs/fastdpi.conf.example")],
                         capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
