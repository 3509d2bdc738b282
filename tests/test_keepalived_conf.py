"""`fdpi_cli vrrp keepalived-config`: keepalived accepts what it writes, and bad values stop it.

keepalived -t checks interfaces in its namespace and that the scripts exist and are safe
(enable_script_security), so it runs in a namespace that has vrrp_interface and the bridge
ports (track_interface), with the checkout's keepalived/ directory as scripts dir.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BASE_CONF
from netlab import PYTHON, REPO, Lab

from skat_plugin import config
from skat_plugin.election import keepalived_conf
from skat_plugin.errors import ConfigError

SCRIPTS = str(REPO / "keepalived")

BASE = BASE_CONF + "vrrp_interface=v0\nvrrp_mgmt_vip=192.0.2.10/24\n"
UNICAST = "vrrp_unicast_src=192.0.2.11\nvrrp_unicast_peers=192.0.2.12, 192.0.2.13\n"

MATRIX = {
    "v3-multicast-preempt": "",
    "v3-unicast-nopreempt-100ms": UNICAST + "vrrp_advert_int=0.1\nvrrp_preempt=0\n",
    "v3-multicast-10ms": "vrrp_advert_int=0.01\nvrrp_priority=254\n",
    "v3-unicast-delay-500ms": UNICAST + "vrrp_advert_int=0.5\nvrrp_preempt_delay=30\n",
    "v3-multicast-longest": "vrrp_advert_int=40.95\nvrrp_router_id=255\nvrrp_priority=1\n",
    "v2-multicast-auth": "vrrp_version=2\nvrrp_auth_pass=s3cr.t-8\n",
    "v2-unicast-auth-nopreempt": UNICAST + "vrrp_version=2\nvrrp_auth_pass=x\n"
                                           "vrrp_preempt=0\nvrrp_advert_int=5\n",
    "v2-noauth-delay": "vrrp_version=2\nvrrp_advert_int=255\nvrrp_preempt_delay=1000\n",
    "custom-fifo": "vrrp_notify_fifo=/run/skat-x/k.fifo\nvrrp_split_brain_handover=1\n",
}


def _load(tmp_path: Path, text: str, name: str = "fastdpi.conf") -> config.Config:
    path = tmp_path / name
    path.write_text(text)
    return config.load(str(path))


def _keepalived_t(lab: Lab, ns: str, conf: Path) -> subprocess.CompletedProcess[str]:
    return lab.run(ns, "keepalived", "-t", "-e", "-f", str(conf), check=False)


def test_keepalived_accepts_every_generated_configuration(lab: Lab, tmp_path: Path) -> None:
    ns = lab.ns("k")
    lab.veth(ns, "v0", ns, "v0p")
    lab.veth(ns, "i0", ns, "o0")  # the bridge ports: keepalived tracks their links
    failures = []
    for name, extra in [*MATRIX.items(), ("no-daemon", "")]:
        text = keepalived_conf.render_keepalived(_load(tmp_path, BASE + extra), SCRIPTS,
                                                 require_daemon=name != "no-daemon")
        out = lab.path(f"{name}.conf")
        out.write_text(text)
        res = _keepalived_t(lab, ns, out)
        if res.returncode != 0 or res.stderr.strip():
            failures.append(f"{name}: rc={res.returncode} {res.stderr.strip()}")
    assert not failures, "\n".join(failures)

    # keepalived -t does check: the same file without a port, or without the VRRP
    # interface, is refused.
    lab.run(ns, "ip", "link", "del", "i0")
    assert _keepalived_t(lab, ns, lab.path("v3-multicast-preempt.conf")).returncode != 0
    lab.veth(ns, "i0", ns, "o0")
    assert _keepalived_t(lab, ns, lab.path("v3-multicast-preempt.conf")).returncode == 0
    lab.run(ns, "ip", "link", "del", "v0")
    assert _keepalived_t(lab, ns, lab.path("v3-multicast-preempt.conf")).returncode != 0


def test_keepalived_refuses_the_file_once_the_package_is_gone(lab: Lab, tmp_path: Path) -> None:
    """keepalived drops missing notify scripts silently; the package's installed.conf,
    included with includea, makes `keepalived -t` say that the package is gone."""
    ns = lab.ns("k")
    lab.veth(ns, "v0", ns, "v0p")
    lab.veth(ns, "i0", ns, "o0")
    package = lab.path("usr-share-skat-plugin-keepalived")
    shutil.copytree(SCRIPTS, package)
    conf = lab.path("keepalived.conf")
    conf.write_text(keepalived_conf.render_keepalived(_load(tmp_path, BASE), str(package)))
    assert _keepalived_t(lab, ns, conf).returncode == 0
    shutil.rmtree(package)
    res = _keepalived_t(lab, ns, conf)
    assert res.returncode != 0 and "installed.conf" in res.stdout + res.stderr, res


def _key_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip()[0] not in "#!"]


def test_golden_unicast_v2(tmp_path: Path) -> None:
    cfg = _load(tmp_path, BASE + UNICAST + "vrrp_version=2\nvrrp_auth_pass=pa55\n"
                "vrrp_priority=150\nvrrp_router_id=7\nvrrp_preempt_delay=20\n")
    assert _key_lines(keepalived_conf.render_keepalived(
            cfg, "/opt/k/", track_file="/run/x/keepalived.track")) == [
        "includea /opt/k/installed.conf",
        "global_defs {",
        "enable_script_security",
        "script_user root",
        "notify_fifo /run/skat-plugin/keepalived.fifo",
        "vrrp_check_unicast_src",
        "}",
        "track_file skat_fitness {",
        'file "/run/x/keepalived.track"',
        "weight 0",
        "init_file 1",
        "}",
        "track_file skat_handover {",
        'file "/run/x/handover.track"',
        "weight 1",
        "}",
        "vrrp_instance skat_plugin {",
        "state BACKUP",
        "interface v0",
        "virtual_router_id 7",
        "priority 150",
        "advert_int 1",
        "version 2",
        "preempt_delay 20",
        "unicast_src_ip 192.0.2.11",
        "unicast_peer {", "192.0.2.12", "192.0.2.13", "}",
        "authentication {", "auth_type PASS", "auth_pass pa55", "}",
        "virtual_ipaddress {", "192.0.2.10/24 dev v0", "}",
        "track_interface {", "i0", "o0", "}",
        "track_file {", "skat_fitness", "skat_handover", "}",
        'notify_master "/opt/k/notify-master"',
        'notify_backup "/opt/k/notify-backup"',
        'notify_fault "/opt/k/notify-fault"',
        'notify_stop "/opt/k/notify-stop"',
        "}",
    ]


def test_golden_multicast_nopreempt(tmp_path: Path) -> None:
    lines = _key_lines(keepalived_conf.render_keepalived(
        _load(tmp_path, BASE + "vrrp_preempt=0\nvrrp_advert_int=0.05\n"), SCRIPTS,
        require_daemon=False))
    assert "nopreempt" in lines and "advert_int 0.05" in lines and "version 3" in lines
    # Without the daemon nothing writes a track file: keepalived runs the script itself.
    assert lines[lines.index("vrrp_script skat_track {"):][:7] == [
        "vrrp_script skat_track {", f'script "{SCRIPTS}/track"',
        "interval 1", "timeout 1", "fall 2", "rise 2", "}"]
    assert lines[lines.index("track_script {"):][:3] == ["track_script {", "skat_track", "}"]
    # ...and no track file but the operator's handover (handover.py), weight 1.
    assert [ln for ln in lines if ln.startswith("track_file")] == [
        "track_file skat_handover {", "track_file {"]
    assert lines[lines.index("track_file {"):][:3] == ["track_file {", "skat_handover", "}"]
    for absent in ("unicast_src_ip", "unicast_peer {", "vrrp_check_unicast_src",
                   "authentication {", "preempt_delay"):
        assert not any(ln.startswith(absent) for ln in lines), absent


def test_fitness_is_the_daemons_track_file_and_nothing_runs_on_a_timer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 9: no script every second. The file is the daemon's, in its run directory."""
    monkeypatch.setenv("SKAT_RUN_DIR", "/run/skat-a")
    text = keepalived_conf.render_keepalived(_load(tmp_path, BASE), SCRIPTS)
    lines = _key_lines(text)
    for absent in ("vrrp_script", "track_script", "interval", "script "):
        assert not any(ln.startswith(absent) for ln in lines), absent
    assert 'file "/run/skat-a/keepalived.track"' in lines
    block = lines[lines.index("track_file skat_fitness {"):][:5]
    assert block[2:] == ["weight 0", "init_file 1", "}"], block
    instance = lines[lines.index("vrrp_instance skat_plugin {"):]
    assert instance[instance.index("track_file {"):][:4] == ["track_file {", "skat_fitness",
                                                              "skat_handover", "}"]


# (fastdpi.conf lines added to BASE, or BASE with a line removed) -> key and line in the error
BAD = [
    ("vrrp_interface=eth0;x\n", "vrrp_interface", 11),
    ("vrrp_router_id=0\n", "vrrp_router_id", 11),
    ("vrrp_router_id=256\n", "vrrp_router_id", 11),
    ("vrrp_priority=255\n", "vrrp_priority", 11),
    ("vrrp_advert_int=0.5\nvrrp_version=2\n", "vrrp_advert_int", 11),
    ("vrrp_advert_int=41\n", "vrrp_advert_int", 11),
    ("vrrp_version=4\n", "vrrp_version", 11),
    ("vrrp_auth_pass=secret\n", "vrrp_auth_pass", 11),
    ("vrrp_version=2\nvrrp_auth_pass=ab#cd\n", "vrrp_auth_pass", 12),
    ("vrrp_version=2\nvrrp_auth_pass=toolong99\n", "vrrp_auth_pass", 12),
    ("vrrp_unicast_peers=192.0.2.12\n", "vrrp_unicast_peers", 11),
    ("vrrp_unicast_src=192.0.2.11\nvrrp_unicast_peers=192.0.2.300\n",
     "vrrp_unicast_peers", 12),
    ("vrrp_unicast_src=192.0.2.10\nvrrp_unicast_peers=192.0.2.12\n", "vrrp_unicast_src", 11),
    ("vrrp_preempt_delay=-1\n", "vrrp_preempt_delay", 11),
    ("vrrp_script_user=no-such-user\n", "vrrp_script_user", 11),
    ("vrrp_script_user=nobody\n", "vrrp_script_user", 11),
    ("vrrp_notify_fifo=relative/fifo\n", "vrrp_notify_fifo", 11),
    ("vrrp_notify_fifo=/run/a b\n", "vrrp_notify_fifo", 11),
    ("", "vrrp_enable", 4),  # BASE with vrrp_enable=0 (see below)
]


@pytest.mark.parametrize(("extra", "key", "line"), BAD)
def test_bad_values_name_file_line_and_key(tmp_path: Path, extra: str, key: str,
                                           line: int) -> None:
    text = BASE + extra
    if key == "vrrp_enable":
        text = BASE.replace("vrrp_enable=1", "vrrp_enable=0")
    path = tmp_path / "fastdpi.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        keepalived_conf.render_keepalived(config.load(str(path)), SCRIPTS)
    assert (e.value.path, e.value.line, e.value.key) == (str(path), line, key), str(e.value)
    assert str(e.value).startswith(f"{path}:{line}: {key}: ")


@pytest.mark.parametrize("vip", ["192.0.2.0/24", "192.0.2.255/24", "224.0.0.5/4",
                                 "127.0.0.2/8", "169.254.1.1/16", "192.0.2.10",
                                 "2001:db8::10/64", "192.0.2.10/33"])
def test_bad_mgmt_vip(tmp_path: Path, vip: str) -> None:
    path = tmp_path / "fastdpi.conf"
    path.write_text(BASE.replace("192.0.2.10/24", vip))
    with pytest.raises(ConfigError) as e:
        keepalived_conf.render_keepalived(config.load(str(path)), SCRIPTS)
    assert str(e.value).startswith(f"{path}:10: vrrp_mgmt_vip: "), str(e.value)


@pytest.mark.parametrize("missing", ["vrrp_interface", "vrrp_mgmt_vip"])
def test_required_keys(tmp_path: Path, missing: str) -> None:
    text = "".join(ln + "\n" for ln in BASE.splitlines() if not ln.startswith(missing))
    with pytest.raises(ConfigError, match=f"{missing}: missing"):
        keepalived_conf.render_keepalived(_load(tmp_path, text), SCRIPTS)


@pytest.mark.parametrize("scripts", ["relative/dir", "/a b", '/x"y'])
def test_scripts_dir_is_checked(tmp_path: Path, scripts: str) -> None:
    with pytest.raises(ConfigError, match="--scripts-dir"):
        keepalived_conf.render_keepalived(_load(tmp_path, BASE), scripts)


def test_cli_writes_the_file_only_when_valid(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.conf", tmp_path / "bad.conf"
    good.write_text(BASE)
    bad.write_text(BASE + "vrrp_priority=0\n")
    out = tmp_path / "keepalived.conf"
    assert keepalived_conf.main(["--output", str(out), "--scripts-dir", SCRIPTS],
                                str(good)) == 0
    assert "vrrp_instance skat_plugin {" in out.read_text()
    before = out.read_text()
    assert keepalived_conf.main(["--output", str(out)], str(bad)) == 6  # configuration
    assert f"{bad}:11: vrrp_priority:" in capsys.readouterr().err
    assert out.read_text() == before, "a failed run must leave the old file alone"


@pytest.mark.parametrize("password", [*"$;&*()<|\\?~^", "a$b", "x;y", "p~q"])
def test_every_password_the_schema_accepts_is_written_or_refused_clearly(
        tmp_path: Path, password: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17.7: the schema takes any printable character; keepalived-config refuses the
    ones keepalived.conf gives a meaning, naming file, line and key (no traceback)."""
    path = tmp_path / "fastdpi.conf"
    path.write_text(BASE + f"vrrp_version=2\nvrrp_auth_pass={password}\n")
    assert keepalived_conf.main(["--scripts-dir", SCRIPTS], str(path)) == 6
    err = capsys.readouterr().err
    assert err.startswith(f"fdpi_cli: {path}:12: vrrp_auth_pass: may hold only letters"), err
    assert "Traceback" not in err


def test_the_written_file_is_root_only(tmp_path: Path) -> None:
    """keepalived.conf holds vrrp_auth_pass: 0600, whatever the umask."""
    path = tmp_path / "fastdpi.conf"
    path.write_text(BASE + "vrrp_version=2\nvrrp_auth_pass=pa55\n")
    out = tmp_path / "keepalived.conf"
    out.write_text("old\n")
    out.chmod(0o644)
    assert keepalived_conf.main(["--output", str(out), "--scripts-dir", SCRIPTS],
                                str(path)) == 0
    assert "auth_pass pa55" in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600


def test_committed_example_is_what_the_generator_writes(lab: Lab) -> None:
    """keepalived/keepalived.conf.example = comments + the generator's output for A, and
    keepalived accepts both appliances' files."""
    example = (REPO / "keepalived" / "keepalived.conf.example").read_text()
    generated = subprocess.run(
        [PYTHON, "-m", "skat_plugin", "--config", "keepalived/example/fastdpi-a.conf", "vrrp",
         "keepalived-config", "--scripts-dir", keepalived_conf.INSTALLED_SCRIPTS_DIR],
        capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert example.endswith(generated), "regenerate keepalived/keepalived.conf.example"
    assert example[: -len(generated)].splitlines()[-1] == "#"

    ns = lab.ns("k")
    lab.veth(ns, "eth4", ns, "eth4p")
    lab.veth(ns, "eth0", ns, "eth1")  # the example's bridge ports (track_interface)
    lab.veth(ns, "eth2", ns, "eth3")
    for name in ("a", "b"):
        path = REPO / "keepalived" / "example" / f"fastdpi-{name}.conf"
        out = lab.path(f"example-{name}.conf")
        out.write_text(keepalived_conf.render_keepalived(config.load(str(path)), SCRIPTS))
        res = _keepalived_t(lab, ns, out)
        assert res.returncode == 0 and not res.stderr, (name, res.stderr)
