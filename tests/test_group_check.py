"""`fdpi_cli vrrp check-group`: one group, one configuration; what differs is shown."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from netlab import PYTHON, REPO

from skat_plugin.config import group_check

COMMON = """in_dev=i0
out_dev=o0
vrrp_enable=1
bras_arp_mac=02:00:5e:00:01:01
bras_arp_ip=100.64.0.1
bras_ipv6_link_local=fe80::1
bras_ipv6_address=2001:db8:100::1
vrrp_interface=v0
vrrp_router_id=51
vrrp_advert_int=0.1
vrrp_mgmt_vip=192.0.2.10/24
"""


def node(src: str, peers: str, prio: int, extra: str = "") -> str:
    unicast = f"vrrp_unicast_src={src}\nvrrp_unicast_peers={peers}\n" if peers else ""
    return COMMON + f"vrrp_priority={prio}\n" + unicast + extra


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str],
          *texts: str) -> tuple[int, str, str]:
    paths = []
    for i, text in enumerate(texts):
        path = tmp_path / f"{chr(ord('a') + i)}.conf"
        path.write_text(text)
        paths.append(str(path))
    rc = group_check.main(paths)
    out, err = capsys.readouterr()
    return rc, out.replace(str(tmp_path) + "/", ""), err


def test_consistent_unicast_group_of_three(tmp_path, capsys) -> None:
    rc, out, _ = check(tmp_path, capsys,
                       node("192.0.2.11", "192.0.2.12,192.0.2.13", 200),
                       node("192.0.2.12", "192.0.2.11, 192.0.2.13", 150),
                       node("192.0.2.13", "192.0.2.11 192.0.2.12", 100))
    assert (rc, out) == (0, "group consistent\n")


def test_spelling_does_not_matter(tmp_path, capsys) -> None:
    b = COMMON.replace("02:00:5e:00:01:01", "02:00:5E:00:01:01").replace(
        "fe80::1", "fe80:0:0::1").replace("vrrp_advert_int=0.1", "vrrp_advert_int=.10")
    rc, out, _ = check(tmp_path, capsys, COMMON + "vrrp_priority=200\n",
                       b + "vrrp_priority=100\n")
    assert (rc, out) == (0, "group consistent\n")


def test_differences_are_tabled(tmp_path, capsys) -> None:
    b = COMMON.replace("100.64.0.1", "100.64.0.2").replace("vrrp_router_id=51",
                                                          "vrrp_router_id=52")
    rc, out, _ = check(tmp_path, capsys, COMMON + "vrrp_priority=200\n",
                       b + "vrrp_priority=100\nvrrp_preempt=0\n")
    assert rc == 1
    lines = out.splitlines()
    assert lines[0] == "differs (must be equal on every appliance of the group):"
    assert lines[1].split() == ["key", "a.conf", "b.conf"]
    assert lines[2].split() == ["bras_arp_ip", "100.64.0.1", "100.64.0.2"]
    assert lines[3].split() == ["vrrp_router_id", "51", "52"]
    assert ["vrrp_preempt", "1", "0"] in [ln.split() for ln in lines]
    assert lines[-1].startswith("group inconsistent: 2 key(s) differ")


def test_unset_on_one_side_differs(tmp_path, capsys) -> None:
    b = "".join(ln + "\n" for ln in COMMON.splitlines() if not ln.startswith("bras_ipv6"))
    rc, out, _ = check(tmp_path, capsys, COMMON + "vrrp_priority=2\n",
                       b + "vrrp_priority=1\n")
    assert rc == 1
    assert ["bras_ipv6_address", "2001:db8:100::1", "(unset)"] in [ln.split()
                                                                   for ln in out.splitlines()]


def test_auth_differs(tmp_path, capsys) -> None:
    v2 = COMMON.replace("vrrp_advert_int=0.1", "vrrp_advert_int=1") + "vrrp_version=2\n"
    rc, out, _ = check(tmp_path, capsys, v2 + "vrrp_auth_pass=one\nvrrp_priority=2\n",
                       v2 + "vrrp_auth_pass=two\nvrrp_priority=1\n")
    assert rc == 1 and ["vrrp_auth_pass", "one", "two"] in [ln.split()
                                                            for ln in out.splitlines()]


def test_unicast_src_missing_from_a_peer_list_fails(tmp_path, capsys) -> None:
    rc, out, _ = check(tmp_path, capsys, node("192.0.2.11", "192.0.2.12", 200),
                       node("192.0.2.12", "192.0.2.99", 100))
    assert rc == 1
    assert ("unicast: a.conf's vrrp_unicast_src 192.0.2.11 is not in b.conf's "
            "vrrp_unicast_peers (192.0.2.99): b.conf drops its adverts") in out


def test_unicast_and_multicast_mixed_fails(tmp_path, capsys) -> None:
    rc, out, _ = check(tmp_path, capsys, node("192.0.2.11", "192.0.2.12", 200),
                       node("", "", 100))
    assert rc == 1 and "a.conf sends unicast adverts but b.conf uses multicast" in out


def test_duplicate_priority_warns(tmp_path, capsys) -> None:
    rc, out, _ = check(tmp_path, capsys, node("", "", 100), node("", "", 100))
    assert rc == 0
    assert "warning: a.conf and b.conf have the same vrrp_priority 100" in out
    assert out.endswith("group consistent (1 warning(s))\n")


def test_invalid_file_names_file_line_key(tmp_path, capsys) -> None:
    rc, out, err = check(tmp_path, capsys, node("", "", 100),
                         COMMON + "vrrp_priority=300\n")
    assert rc == 6
    assert f"invalid: {tmp_path}/b.conf:12: vrrp_priority: '300' is not valid" in err
    assert "group not checked" in out


def test_through_fdpi_cli(tmp_path) -> None:
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_text(node("", "", 200))
    b.write_text(node("", "", 100))
    res = subprocess.run([PYTHON, "-m", "skat_plugin", "vrrp", "check-group", str(a), str(b)],
                         capture_output=True, text=True, cwd=REPO)
    assert (res.returncode, res.stdout) == (0, "group consistent\n"), res.stderr
    b.write_text(node("", "", 100).replace("vrrp_advert_int=0.1", "vrrp_advert_int=1")
                 + "vrrp_version=2\n")
    res = subprocess.run([PYTHON, "-m", "skat_plugin", "vrrp", "check-group", str(a), str(b)],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 1 and "vrrp_version" in res.stdout


def test_needs_two_files(tmp_path) -> None:
    with pytest.raises(SystemExit) as e:
        group_check.main([str(tmp_path / "a.conf")])
    assert e.value.code == 2
