"""fastdpi.conf: malformed files give one clear error (file, line, key) and change nothing;
good files with quotes, comments and hundreds of foreign keys load; a fuzz of the parser.
"""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest
from conftest import BASE_CONF, VIP, VMAC, Topo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netlab import PYTHON

from skat_plugin import config
from skat_plugin.config import conffile, schema
from skat_plugin.errors import ConfigError

BASE_LINES = BASE_CONF.splitlines()  # line n of the file is BASE_LINES[n - 1]
GONE = "# (line removed by the test)"


def conf(replace: dict[int, str] | None = None, append: tuple[str, ...] = ()) -> str:
    """BASE_CONF with some lines replaced (line numbers stay) and lines added from line 9."""
    lines = list(BASE_LINES)
    for n, text in (replace or {}).items():
        lines[n - 1] = text
    return "\n".join([*lines, *append]) + "\n"


# (id, file content, expected line, expected key, a phrase the message must contain)
CASES: list[tuple[str, str | bytes, int | None, str | None, str]] = [
    ("missing_in_dev", conf({2: GONE}), None, "in_dev", "missing"),
    ("missing_out_dev", conf({3: GONE}), None, "out_dev", "missing"),
    ("empty_file", "", None, "in_dev", "missing"),
    ("length_mismatch", conf({3: "out_dev=o0:o1"}), 3, "out_dev", "in_dev has 1"),
    ("duplicate_port_across", conf({2: "in_dev=i0:i1", 3: "out_dev=o0:i0"}), 3, "out_dev",
     "listed twice"),
    ("duplicate_port_in_list", conf({2: "in_dev=i0:i0", 3: "out_dev=o0:o1"}), 2, "in_dev",
     "listed twice"),
    ("bad_ifname", conf({2: "in_dev=i0:this_name_is_too_long"}), 2, "in_dev", "expected"),
    ("empty_in_dev", conf({2: "in_dev="}), 2, "in_dev", "expected"),
    ("empty_port_in_list", conf({2: "in_dev=i0:", 3: "out_dev=o0:o1"}), 2, "in_dev",
     "expected"),
    ("bad_mac", conf({5: "bras_arp_mac=02:00:5e:00:01"}), 5, "bras_arp_mac", "unicast MAC"),
    ("multicast_mac", conf({5: "bras_arp_mac=01:00:5e:00:00:01"}), 5, "bras_arp_mac",
     "multicast"),
    ("zero_mac", conf({5: "bras_arp_mac=00:00:00:00:00:00"}), 5, "bras_arp_mac", "zero"),
    ("bad_ipv4", conf({6: "bras_arp_ip=100.64.0.256"}), 6, "bras_arp_ip", "IPv4"),
    ("ipv4_leading_zero", conf({6: "bras_arp_ip=100.64.0.01"}), 6, "bras_arp_ip", "IPv4"),
    ("multicast_ipv4", conf({6: "bras_arp_ip=224.0.0.1"}), 6, "bras_arp_ip", "gateway"),
    ("link_local_not_fe80", conf({7: "bras_ipv6_link_local=2001:db8::1"}), 7,
     "bras_ipv6_link_local", "fe80::/10"),
    ("link_local_with_scope", conf({7: "bras_ipv6_link_local=fe80::1%i0"}), 7,
     "bras_ipv6_link_local", "fe80::/10"),
    ("global_is_link_local", conf({8: "bras_ipv6_address=fe80::2"}), 8, "bras_ipv6_address",
     "global unicast"),
    ("global_is_multicast", conf({8: "bras_ipv6_address=ff02::1"}), 8, "bras_ipv6_address",
     "global unicast"),
    ("only_link_local", conf({8: GONE}), 7, "bras_ipv6_link_local", "bras_ipv6_address"),
    ("only_global", conf({7: GONE}), 8, "bras_ipv6_address", "bras_ipv6_link_local"),
    ("vrrp_enable_2", conf({4: "vrrp_enable=2"}), 4, "vrrp_enable", "0 (VRRP off"),
    ("vrrp_enable_yes", conf({4: "vrrp_enable=yes"}), 4, "vrrp_enable", "0 (VRRP off"),
    ("vrrp_enable_unicode_digit", conf({4: "vrrp_enable=\u0661"}), 4, "vrrp_enable", "0 (VRRP"),
    ("enable_without_mac", conf({5: GONE}), 4, "vrrp_enable", "bras_arp_mac"),
    ("enable_without_ip", conf({6: GONE}), 4, "vrrp_enable", "bras_arp_ip"),
    ("ip_without_mac", conf({4: "vrrp_enable=0", 5: GONE}), 6, "bras_arp_ip", "bras_arp_mac"),
    ("unclosed_quote", conf({6: 'bras_arp_ip="100.64.0.1'}), 6, "bras_arp_ip", "never closed"),
    ("text_after_quote", conf({6: 'bras_arp_ip="100.64.0.1" x'}), 6, "bras_arp_ip",
     "after the quoted value"),
    ("no_equals", conf(append=("this line has no equals sign",)), 9, None, "key=value"),
    ("bad_key_name", conf(append=("9lives=1",)), 9, None, "not a valid key name"),
    ("key_set_twice", conf(append=("in_dev=i0",)), 9, "in_dev", "first on line 2"),
    ("v2_subsecond_advert", conf(append=("vrrp_version=2", "vrrp_advert_int=0.5")), 10,
     "vrrp_advert_int", "VRRPv2"),
    ("v3_advert_too_long", conf(append=("vrrp_advert_int=41",)), 9, "vrrp_advert_int",
     "VRRPv3"),
    ("advert_nan", conf(append=("vrrp_advert_int=nan",)), 9, "vrrp_advert_int", "expected"),
    ("garp_interval_inf", conf(append=("vrrp_garp_interval=1e400",)), 9, "vrrp_garp_interval",
     "expected"),
    ("socket_mark_0", conf(append=("vrrp_socket_mark=0",)), 9, "vrrp_socket_mark", "non-zero"),
    ("priority_255", conf(append=("vrrp_priority=255",)), 9, "vrrp_priority", "1 to 254"),
    ("auth_pass_on_v3", conf(append=("vrrp_auth_pass=secret",)), 9, "vrrp_auth_pass",
     "VRRPv3"),
    ("peers_without_src", conf(append=("vrrp_unicast_peers=192.0.2.2",)), 9,
     "vrrp_unicast_peers", "vrrp_unicast_src"),
    ("mgmt_vip_without_prefix", conf(append=("vrrp_mgmt_vip=192.0.2.10",)), 9,
     "vrrp_mgmt_vip", "prefix"),
    ("vrrp_interface_is_a_port", conf(append=("vrrp_interface=i0",)), 9, "vrrp_interface",
     "bridge port"),
    ("start_role_slave", conf(append=("vrrp_start_role=slave",)), 9, "vrrp_start_role",
     "master"),
    ("nul_byte", conf(append=("foo=ba\x00r",)), 9, None, "NUL"),
    ("not_utf8", conf(append=("# next line is Latin-1",)).encode() + b"foo=caf\xe9\n", 10,
     None, "UTF-8"),
    # A form feed in a comment is no line break for an editor: later line numbers must hold.
    ("line_numbers_after_form_feed", conf({1: "# a\x0cform feed, a\u2028line separator",
                                           6: "bras_arp_ip=1.2.3"}), 6, "bras_arp_ip", "IPv4"),
]


def write_case(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / f"{name}.conf"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def expected_prefix(path: Path, line: int | None, key: str | None) -> str:
    where = f"{path}:{line}: " if line else f"{path}: "
    return where + (f"{key}: " if key else "")


@pytest.mark.parametrize("name,content,line,key,phrase", CASES, ids=[c[0] for c in CASES])
def test_malformed_config_names_file_line_and_key(tmp_path: Path, name: str,
                                                  content: str | bytes, line: int | None,
                                                  key: str | None, phrase: str) -> None:
    path = write_case(tmp_path, name, content)
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    err = info.value
    assert (err.path, err.line, err.key) == (str(path), line, key), str(err)
    assert str(err).startswith(expected_prefix(path, line, key)), str(err)
    assert phrase in str(err), str(err)
    assert "\n" not in str(err)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20
    assert len({c[0] for c in CASES}) == len(CASES)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(str(tmp_path / "nope.conf"))
    assert str(info.value).startswith(f"{tmp_path / 'nope.conf'}: no such file")


# -- good files ---------------------------------------------------------------------------

def test_quotes_comments_and_foreign_keys(tmp_path: Path) -> None:
    foreign = [f"skat_key_{i}=value {i} # comment {i}" for i in range(400)]
    text = "\r\n".join([
        "# fastdpi.conf as an operator writes it",
        "",
        '   in_dev = "i0:i2"   # subscribers',
        "out_dev='o0:o2'",
        "vrrp_enable=1\t# on",
        f'bras_arp_mac = "{VMAC.upper()}"',
        f"bras_arp_ip={VIP}   # trailing comment",
        *foreign,
        "ajb_save_url=http://host/path#frag",
        'udr_label=" spaced # not a comment "',
        "empty_value=",
    ]) + "\r\n"
    path = tmp_path / "fastdpi.conf"
    path.write_text(text)
    cf = conffile.read(str(path))
    assert cf.get("in_dev").value == "i0:i2" and cf.get("in_dev").line == 3
    assert cf.get("skat_key_399").value == "value 399"
    assert cf.get("ajb_save_url").value == "http://host/path#frag"
    assert cf.get("udr_label").value == " spaced # not a comment "
    assert cf.get("empty_value").value == ""
    cfg = config.load(str(path))
    assert cfg.pairs == [("i0", "o0"), ("i2", "o2")]
    assert cfg["bras_arp_ip"] == VIP and cfg["vrrp_enable"] == 1
    assert cfg["bras_arp_mac"].lower() == VMAC
    # Foreign keys are kept by the reader and ignored by the schema; defaults are filled.
    assert not any(k.startswith("skat_key_") for k in cfg.values)
    assert cfg["vrrp_socket_mark"] == 0x5CA7 and cfg["vrrp_nd_router_flag"] == 1
    assert cfg["vrrp_start_role"] == "master" and cfg["vrrp_advert_int"] == 1.0
    assert not cfg.has_ipv6


def test_numbers_in_their_usual_forms(tmp_path: Path) -> None:
    path = tmp_path / "fastdpi.conf"
    path.write_text(conf(append=("vrrp_socket_mark=0x10", "vrrp_advert_int=.5",
                                 "vrrp_garp_interval=1e-2", "vrrp_priority=050")))
    cfg = config.load(str(path))
    assert (cfg["vrrp_socket_mark"], cfg["vrrp_advert_int"], cfg["vrrp_garp_interval"],
            cfg["vrrp_priority"]) == (16, 0.5, 0.01, 50)


# -- fuzz ---------------------------------------------------------------------------------

OWNED = sorted(schema.KEYS)
fuzz = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _validate_text(text: str) -> dict | None:
    try:
        return schema.validate(conffile.parse_text(text, "/fuzz.conf"))
    except ConfigError as e:
        assert str(e).startswith("/fuzz.conf"), str(e)
        assert e.line is None or 1 <= e.line <= text.count("\n") + 1
        return None


@fuzz
@given(st.text())
def test_fuzz_random_text_raises_only_config_error(text: str) -> None:
    _validate_text(text)


values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["0", "1", "2", "-1", "0x5ca7", "nan", "inf", "1e400", "0.5", "40.96",
                     "i0", "i0:o0", "o0", "i0:i1", ":", "02:00:5e:00:01:01", "100.64.0.1",
                     "fe80::1", "2001:db8::1", "::", "192.0.2.1/24", "master", "backup",
                     '"1"', "'x", "1 # c"]),
)


@fuzz
@given(st.lists(st.tuples(st.sampled_from([*OWNED, "foreign_key"]), values), max_size=12))
def test_fuzz_plugin_keys_raise_only_config_error(pairs: list[tuple[str, str]]) -> None:
    text = BASE_CONF + "".join(f"{k}={v.replace(chr(10), ' ')}\n" for k, v in pairs)
    result = _validate_text(text)
    if result is not None:  # accepted: then every value is sane for the renderer
        for key, value in result.items():
            if isinstance(value, float):
                assert math.isfinite(value), (key, value)
        assert len(result["in_dev"]) == len(result["out_dev"])
        assert result["vrrp_enable"] in (0, 1)


key_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
raw_values = st.text(st.characters(blacklist_characters="\n\x00",
                                   blacklist_categories=("Cs",)), max_size=40)


def _render_line(key: str, value: str) -> str | None:
    """One way of writing key=value that the format can express, or None."""
    plain = value == value.strip() and not re.search(r"\s#", value) \
        and not value.startswith(("'", '"'))
    if plain:
        return f"{key}={value}"
    for q in ('"', "'"):
        if q not in value:
            return f"{key} = {q}{value}{q}"
    return None


@fuzz
@given(st.dictionaries(key_names, raw_values, max_size=15),
       st.lists(st.sampled_from(["", "# comment", "   ", "#k=v", "\t# x = y"]), max_size=15))
def test_fuzz_valid_files_round_trip(entries: dict[str, str], noise: list[str]) -> None:
    lines, expected = [], {}
    for i, (key, value) in enumerate(entries.items()):
        line = _render_line(key, value)
        if line is None:
            continue
        if i < len(noise):
            lines.append(noise[i])
        lines.append(line)
        expected[key] = (value, len(lines))
    cf = conffile.parse_text("\n".join(lines) + "\n", "/rt.conf")
    assert {k: (e.value, e.line) for k, e in cf.entries.items()} == expected


# -- start / reload in a namespace -----------------------------------------------------------

def _cli(topo: Topo, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", topo.app.ns, PYTHON, "-m", "skat_plugin",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=topo.app.env(), cwd=topo.app.dir)


def _ruleset(topo: Topo) -> str:
    return topo.lab.run(topo.app.ns, "nft", "list", "ruleset").stdout


def test_start_and_reload_refuse_every_malformed_config_and_change_nothing(
        topo: Topo, tmp_path: Path) -> None:
    app = topo.app
    app.cli("vrrp", "set", "backup")  # not the start role: a reset to master would show
    before_rules, before = _ruleset(topo), app.show()
    # Every case for reload; a representative set for start (the same loader runs first).
    start_cases = {"missing_in_dev", "length_mismatch", "multicast_mac", "unclosed_quote",
                   "key_set_twice", "not_utf8", "v2_subsecond_advert", "only_global"}
    jobs = [(name, cmd, line, key) for name, _c, line, key, _p in CASES
            for cmd in ("reload", "start") if cmd == "reload" or name in start_cases]
    paths = {name: write_case(tmp_path, name, content) for name, content, *_ in CASES}
    for i in range(0, len(jobs), 8):  # eight at a time: each has its own --config file
        batch = [(j, _cli(topo, "--config", str(paths[j[0]]), j[1])) for j in jobs[i:i + 8]]
        for (name, cmd, line, key), proc in batch:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 6, (name, cmd, proc.returncode, out, err)
            assert out == "", (name, cmd, out)
            lines = err.splitlines()
            assert len(lines) == 1, (name, cmd, err)
            prefix = "fdpi_cli: " + expected_prefix(paths[name], line, key)
            assert lines[0].startswith(prefix), (name, cmd, lines[0])
    after = app.show()
    assert _ruleset(topo) == before_rules
    assert {k: after[k] for k in ("role", "kernel_role", "since", "config")} == \
        {k: before[k] for k in ("role", "kernel_role", "since", "config")}
    assert after["role"] == "backup"


def test_vrrp_set_works_while_the_file_on_disk_is_broken(topo: Topo) -> None:
    lab, app = topo.lab, topo.app
    # Load a config whose gateway is 100.64.0.2, then break the file on disk.
    app.write_conf(BASE_CONF.replace(f"bras_arp_ip={VIP}", "bras_arp_ip=100.64.0.2"))
    app.cli("reload")
    app.conf_path.write_bytes(b"\xff\xfe garbage without equals\nin_dev\n")
    res = app.cli("reload", check=False)
    assert res.returncode == 6 and "UTF-8" in res.stderr
    rules = _ruleset(topo)
    for role in ("backup", "master", "backup", "master"):
        assert app.cli("vrrp", "set", role).stdout.strip() == f"role: {role}"
        assert app.show()["kernel_role"] == role
    assert _ruleset(topo) == rules  # the same master rule set as before the file broke
    # ... and it is the one of the last loaded config: 100.64.0.2 answered, .1 not.
    ok = lab.run(topo.sub, "arping", "-c", "1", "-w", "1", "-I", "s0", "100.64.0.2")
    assert VMAC in ok.stdout.lower()
    old = lab.run(topo.sub, "arping", "-c", "1", "-w", "1", "-I", "s0", VIP, check=False)
    assert old.returncode != 0
    app.conf_path.unlink()  # even with no file at all
    app.cli("vrrp", "set", "backup")
    assert app.show()["kernel_role"] == "backup"
