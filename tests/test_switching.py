"""Role switches: many, alternating, concurrent; each leaves exactly the rule set of its role.

The reference for a role is the rule set the kernel holds after a plain `vrrp set` of it on a
fresh appliance; after any storm the kernel must hold exactly that again (handles and counter
values aside), the recorded role must agree with it, and there must be no stray tables.
"""

from __future__ import annotations

import json
import subprocess
import time

from conftest import BASE_CONF, Topo, build_topo
from netlab import Appliance, Lab, nft_rules, nft_tables

ROLES = ("master", "backup")


def ruleset(app: Appliance) -> list[str]:
    """The kernel's rule set as comparable items: which tables exist and sleep, the chains
    and rules (no handles), the counters (no values)."""
    items = [f"table {t}" for t in nft_tables(app.lab, app.ns)]
    counters = app.lab.run(app.ns, "nft", "-j", "list", "counters").stdout
    for item in nft_rules(app.lab, app.ns) + json.loads(counters)["nftables"]:
        if "metainfo" in item:
            continue
        ((kind, body),) = item.items()
        body = {k: v for k, v in body.items() if k not in ("handle", "packets", "bytes")}
        items.append(json.dumps({kind: body}, sort_keys=True))
    return items


def tables(app: Appliance) -> list[str]:
    return [t.removesuffix(" dormant") for t in nft_tables(app.lab, app.ns)]


def chains(rules: list[str]) -> dict[str, int]:
    """chain name -> number of rules in it."""
    result: dict[str, int] = {}
    for text in rules:
        if text.startswith("table "):
            continue
        item = json.loads(text)
        if "chain" in item:
            result.setdefault(f"{item['chain']['family']} {item['chain']['name']}", 0)
        if "rule" in item:
            key = f"{item['rule']['family']} {item['rule']['chain']}"
            result[key] = result.get(key, 0) + 1
    return result


def assert_role(app: Appliance, role: str, reference: dict[str, list[str]]) -> None:
    info = app.show()
    assert (info["role"], info["kernel_role"]) == (role, role), info
    assert tables(app) == ["bridge skat_plugin_backup", "netdev skat_plugin_backup",
                           "netdev skat_plugin_master"]
    assert ruleset(app) == reference[role]


def references(topo: Topo) -> dict[str, list[str]]:
    ref = {"master": ruleset(topo.app)}
    topo.app.cli("vrrp", "set", "backup")
    ref["backup"] = ruleset(topo.app)
    topo.app.cli("vrrp", "set", "master")
    assert ruleset(topo.app) == ref["master"]
    # Sanity of the references themselves: both roles' tables are loaded in both roles
    # (the split-brain counter, IPv4's exit and the protocol dispatch; ARP probe + request,
    # 6 ND variants and 4 DAD defences, QinQ ARP probe + request; the guard: bridged
    # frames' exit, mark, own MACs), and only which of them sleeps differs.
    both = {"netdev port_in": 3, "netdev arp_in": 2, "netdev nd_in": 10, "netdev qinq_in": 2,
            "netdev port_out": 3, "bridge host_out": 1}
    assert chains(ref["master"]) == chains(ref["backup"]) == both
    assert [i for i in ref["master"] if i.endswith(" dormant")] == [
        "table bridge skat_plugin_backup dormant", "table netdev skat_plugin_backup dormant"]
    assert [i for i in ref["backup"] if i.endswith(" dormant")] == [
        "table netdev skat_plugin_master dormant"]
    return ref


def test_200_alternating_switches_some_concurrent(topo: Topo) -> None:
    app = topo.app
    ref = references(topo)
    switches = 0

    # 50 in a row, each returning only once its rule set is in the kernel.
    for i in range(50):
        role = ROLES[(i + 1) % 2]
        assert app.cli("vrrp", "set", role).stdout.strip() == f"role: {role}"
        switches += 1
        if i % 10 == 9:
            assert_role(app, role, ref)

    # 150 more, ten at a time, all at once (as keepalived's concurrent notify scripts).
    for batch in range(15):
        procs = [app.cli_popen("vrrp", "set", ROLES[(batch + j) % 2]) for j in range(10)]
        outs = [(p.communicate(timeout=30)[0], p.returncode) for p in procs]
        switches += len(procs)
        assert all(rc == 0 for _out, rc in outs), outs
        info = app.show()
        assert info["role"] in ROLES
        assert_role(app, info["role"], ref)

    # The last word.
    last = "backup"
    app.cli("vrrp", "set", last)
    switches += 1
    assert switches > 200
    assert_role(app, last, ref)
    leftovers = [p.name for p in app.run_dir.iterdir() if p.name.startswith(".state.json")]
    assert leftovers == []
    # The traffic still passes and the role is really backup: no ARP answer.
    topo.lab.run(topo.sub, "ping", "-c", "1", "-W", "2", "100.64.0.20")
    res = topo.lab.run(topo.sub, "arping", "-c", "1", "-w", "1", "-I", "s0", "100.64.0.1",
                       check=False)
    assert res.returncode != 0


def test_vrrp_set_is_idempotent(topo: Topo) -> None:
    app = topo.app
    for role in ("master", "backup", "backup", "master", "master"):
        before = app.show()
        rules = ruleset(app)
        app.cli("vrrp", "set", role)
        after = app.show()
        assert (after["role"], after["kernel_role"]) == (role, role)
        if before["role"] == role:  # a repeat changes nothing, not even `since`
            assert after["since"] == before["since"]
            assert ruleset(app) == rules


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_vrrp_enable_0_refuses_backup_and_reload_turns_it_on_hot(lab: Lab) -> None:
    topo = build_topo(lab, BASE_CONF.replace("vrrp_enable=1", "vrrp_enable=0"))
    app = topo.app
    info = app.show()
    assert (info["role"], info["kernel_role"], info["vrrp_enable"]) == ("master", "master", 0)
    rules = ruleset(app)

    res = app.cli("vrrp", "set", "backup", check=False)
    line = _one_line_error(res)
    assert "vrrp_enable=0" in line and "master" in line, line
    assert (app.show()["role"], app.show()["kernel_role"]) == ("master", "master")
    assert ruleset(app) == rules

    link_before = json.loads(lab.run(app.ns, "ip", "-j", "link", "show", "skatbr0").stdout)[0]
    app.write_conf(BASE_CONF)  # vrrp_enable=1
    assert app.cli("reload").stdout.strip() == "reloaded: master"
    link_after = json.loads(lab.run(app.ns, "ip", "-j", "link", "show", "skatbr0").stdout)[0]
    # Hot: the same bridge (not re-created), same role, the `since` of the role kept.
    assert link_after["ifindex"] == link_before["ifindex"]
    after = app.show()
    assert (after["role"], after["vrrp_enable"], after["since"]) == ("master", 1, info["since"])

    app.cli("vrrp", "set", "backup")
    assert (app.show()["role"], app.show()["kernel_role"]) == ("backup", "backup")
    lab.run(topo.sub, "ping", "-c", "1", "-W", "2", "100.64.0.20")


def test_stop_removes_the_tables_and_bridging_goes_on(topo: Topo) -> None:
    lab, app = topo.lab, topo.app
    app.cli("vrrp", "set", "backup")
    assert "skat_plugin" in lab.run(app.ns, "nft", "list", "ruleset").stdout
    app.cli("stop")
    assert "skat_plugin" not in lab.run(app.ns, "nft", "list", "ruleset").stdout
    info = app.show()
    assert (info["role"], info["kernel_role"]) == ("stopped", None)
    for ns, dst in ((topo.sub, "100.64.0.20"), (topo.sub, "2001:db8:100::20"),
                    (topo.up, "100.64.0.10")):
        lab.run(ns, "ping", "-c", "1", "-W", "2", dst)
    # A switch needs a started plugin; it says so.
    line = _one_line_error(app.cli("vrrp", "set", "master", check=False))
    assert "not started" in line, line
    app.cli("stop")  # stopping twice is fine
    app.cli("start")
    assert (app.show()["role"], app.show()["kernel_role"]) == ("master", "master")


def test_start_on_a_running_appliance_keeps_its_role(topo: Topo) -> None:
    """keepalived will not repeat its last word: a second `start` (a unit restarted by hand,
    an operator) must not turn a running backup into a second master."""
    app = topo.app
    app.cli("vrrp", "set", "backup")
    since = app.show()["since"]
    assert app.cli("start").stdout.strip() == "started: backup"
    info = app.show()
    assert (info["role"], info["kernel_role"], info["since"]) == ("backup", "backup", since)
    app.cli("stop")  # from nothing, SKAT's rule holds again: start as master
    assert app.cli("start").stdout.strip() == "started: master"


def test_reload_refuses_changed_ports_and_changes_nothing(topo: Topo) -> None:
    """Bridges are built at start; a reload that moved the rules to other ports would leave
    the guard on the wrong ports."""
    app = topo.app
    app.cli("vrrp", "set", "backup")
    before = topo.lab.run(app.ns, "nft", "list", "ruleset").stdout
    # A port that does not exist is named first (issue 16: the advice to restart the
    # plugin would take the box down for a typo).
    app.write_conf(BASE_CONF.replace("out_dev=o0", "out_dev=x0"))
    res = app.cli("reload", check=False)
    assert res.returncode == 11 and "x0 do not exist" in res.stderr, res.stderr
    # Ports that exist but are not the running bridges' are refused as such.
    topo.lab.run(app.ns, "ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1")
    res = app.cli("reload", check=False)
    assert res.returncode != 0
    assert "in_dev/out_dev differ from the running bridges" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert topo.lab.run(app.ns, "nft", "list", "ruleset").stdout == before
    assert app.show()["role"] == "backup"


def test_start_waits_for_ports_that_appear_late(lab: Lab) -> None:
    """At boot a NIC may appear after udev's trigger: --wait-ports bridges it when it does."""
    sub = lab.ns("sub")
    app = lab.appliance("app", BASE_CONF)
    lab.veth(sub, "s0", app.ns, "i0")
    t0 = time.monotonic()
    starting = app.cli_popen("start", "--wait-ports", "20")
    time.sleep(3.0)  # well past Python's start-up, even on a loaded machine
    assert starting.poll() is None, "start gave up before the port appeared"
    up = lab.ns("up")
    lab.veth(up, "u0", app.ns, "o0")
    out, _ = starting.communicate(timeout=20)
    assert starting.returncode == 0, out
    assert "started: master" in out
    assert time.monotonic() - t0 >= 3.0  # it did wait for o0
    assert app.show()["kernel_role"] == "master"
