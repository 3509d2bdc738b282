"""Typo'd key names: an unknown vrrp_* key is an error (the plugin's own prefix), a near-miss
of a plugin key among SKAT's bras_* and other keys is a warning, and SKAT's own keys, which
fastdpi.conf holds by the hundred, pass in silence."""

from __future__ import annotations

import pytest
from conftest import BASE_CONF

from skat_plugin.config import conffile, keynames, schema
from skat_plugin.errors import ConfigError


def _conf(extra: str) -> conffile.ConfFile:
    return conffile.parse_text(BASE_CONF + extra, "/etc/dpi/fastdpi.conf")


@pytest.mark.parametrize(("line", "meant"), [
    ("vrrp_enabel=0", "vrrp_enable"),           # the issue's: VRRP silently off
    ("vrrp_garp_cout=3", "vrrp_garp_count"),    # the issue's: silently the default
    ("VRRP_ENABLE=1", "vrrp_enable"),           # case: fastdpi's keys are lower case
    ("vrrp_priorty=200", "vrrp_priority"),
    ("vrrp_unicast_peer=192.0.2.2", "vrrp_unicast_peers"),
])
def test_unknown_vrrp_key_is_an_error_with_the_key_meant(line: str, meant: str) -> None:
    with pytest.raises(ConfigError) as exc:
        schema.validate(_conf(line + "\n"))
    err = exc.value
    assert err.key == line.split("=")[0] and err.line == BASE_CONF.count("\n") + 1
    assert f"did you mean {meant}?" in str(err)


def test_unknown_vrrp_key_without_a_near_one_still_fails() -> None:
    with pytest.raises(ConfigError, match=r"vrrp_flux_capacitor: unknown key \(vrrp_\* keys"):
        schema.validate(_conf("vrrp_flux_capacitor=1\n"))


@pytest.mark.parametrize(("line", "meant"), [
    ("bras_arp_mca=02:00:5e:00:01:02", None),   # bras_arp_mac is set: a different key
    ("bras_ipv6_adress=2001:db8::1", None),     # set too
    ("bras_gateway_mca=02:00:00:00:00:09", "bras_gateway_mac"),
    ("bras_terminate_l3=1", "bras_terminate_l2"),
    ("bras_trasparency=0", "bras_transparency"),
    ("in_dve=eth9", None),                      # in_dev is set
    ("vrrp_enable_=1", "error"),
])
def test_near_misses_outside_vrrp_warn_and_load(line: str, meant: str | None) -> None:
    conf = _conf(line + "\n")
    if meant == "error":
        with pytest.raises(ConfigError):
            schema.validate(conf)
        return
    schema.validate(conf)  # never an error: bras_* is shared with SKAT
    found = keynames.warnings(conf, schema.KEYS)
    if meant is None:
        assert found == []
    else:
        key = line.split("=")[0]
        assert found == [f"/etc/dpi/fastdpi.conf:{BASE_CONF.count(chr(10)) + 1}: {key}: not "
                         f"a key of skat-plugin, which ignores it; did you mean {meant}?"]


def test_a_missing_key_is_explained_by_its_typo() -> None:
    conf = conffile.parse_text(BASE_CONF.replace("out_dev=", "ot_dev="), "/f.conf")
    assert keynames.warnings(conf, schema.KEYS) == [
        "/f.conf:3: ot_dev: not a key of skat-plugin, which ignores it; did you mean out_dev?"]


SKAT_KEYS = """bras_enable=1
bras_dhcp_mode=1
bras_dhcp_server=10.0.0.1
bras_ipv6_enable=1
bras_pppoe_enable=0
bras_arp_timeout=300
bras_gateway_mode=1
udr=1
num_threads=4
ctrl_port=29000
scale_factor=2
federal_black_list=1
tap_dev=tap0
mgmt_dev=eth9
ajb_save_emptyip=1
"""


def test_skats_own_keys_pass_in_silence() -> None:
    conf = _conf(SKAT_KEYS)
    schema.validate(conf)
    assert keynames.warnings(conf, schema.KEYS) == []


def test_distance_counts_a_swap_as_one_edit() -> None:
    assert keynames.distance("vrrp_enabel", "vrrp_enable") == 1
    assert keynames.distance("vrrp_garp_cout", "vrrp_garp_count") == 1
    assert keynames.distance("tap_dev", "in_dev") == 3
    assert keynames.distance("", "abc") == 3
