"""The package's Prometheus alert rules (docs/skat-plugin.rules.yml) fire on what the product
really writes (issue 16 item 7): each condition is made on a running appliance, its metrics
file rendered as the daemon renders it, and `promtool test rules` shows the alert firing on
those series (and not firing on a healthy group's)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from daemonlab import role_of, topo_with_daemon
from netlab import PYTHON, REPO, Appliance, Lab, wait_for

RULES = REPO / "docs/skat-plugin.rules.yml"
SAMPLE = re.compile(r"^(skat_plugin_[a-z_]+)(\{[^}]*\})? (\S+)$")
FULL_PATH = "/var/lib/prometheus/node-exporter/skat_plugin.prom"  # Debian 12's label


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    return tool


def metrics_of(app: Appliance) -> dict[str, float]:
    """The metrics file's samples, rendered from the appliance's state as the daemon does."""
    code = ("from skat_plugin import metrics, role, state\n"
            "print(metrics.render(role.show(), state.daemon_status(), 0), end='')\n")
    text = app.lab.run(app.ns, PYTHON, "-c", code, env=app.env()).stdout
    samples = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            samples[m[1] + (m[2] or "")] = float(m[3])
    assert samples, text
    return samples


def expect(alert: str, value: str = "", **labels: str) -> dict:
    """One expected alert: its labels, and its annotations filled in as Prometheus would."""
    import yaml

    rule = next(r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
                if r["alert"] == alert)
    notes = {k: v.replace("{{ $labels.instance }}", labels.get("instance", ""))
             .replace("{{ $value }}", value) for k, v in rule["annotations"].items()}
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": notes}


def series(instance: str, samples: dict[str, float], steps: int = 20) -> list[dict]:
    """promtool input series: each sample held for `steps` minutes on `instance`."""
    out = []
    for name, value in samples.items():
        base, _, labels = name.partition("{")
        labels = labels.rstrip("}")
        label_text = f'instance="{instance}"' + (f",{labels}" if labels else "")
        out.append({"series": f"{base}{{{label_text}}}", "values": f"{value:g}x{steps}"})
    return out


def test_each_alert_fires_on_the_products_own_metrics(lab: Lab, tmp_path: Path) -> None:
    tool = _promtool()
    assert subprocess.run([tool, "check", "rules", str(RULES)], capture_output=True,
                          text=True).returncode == 0
    topo, d = topo_with_daemon(lab)
    app = topo.app
    d.write("MASTER")
    wait_for(lambda: role_of(app) == "master", 5, 0.02, "elected master")
    master = metrics_of(app)
    assert master['skat_plugin_role{role="master"}'] == 1 and master["skat_plugin_fit"] == 1
    d.write("BACKUP")
    wait_for(lambda: role_of(app) == "backup", 5, 0.02, "backup")
    backup = metrics_of(app)
    # A port down: unfit (the daemon's verdict in its track file).
    lab.run(app.ns, "ip", "link", "set", "i0", "down")
    wait_for(lambda: metrics_of(app)["skat_plugin_fit"] == 0, 5, 0.05, "unfit")
    unfit = metrics_of(app)
    lab.run(app.ns, "ip", "link", "set", "i0", "up")
    # Another writer flushes the rule set: the daemon repairs, the counter moves.
    repairs = []
    for _ in range(5):
        before = metrics_of(app)["skat_plugin_rule_repairs_total"]
        lab.run(app.ns, "nft", "flush", "ruleset")
        wait_for(lambda b=before: metrics_of(app)["skat_plugin_rule_repairs_total"] > b, 5,
                 0.05, "a repair")
        repairs.append(metrics_of(app))
    # keepalived's word MASTER recorded but never applied (the daemon gone before its
    # order): the kernel keeps the backup's rules, a mismatch once it lasts.
    d.stop()
    state = app.run_dir / "state.json"
    text = state.read_text().replace('"state": "BACKUP"', '"state": "MASTER"')
    state.write_text(text)
    time.sleep(2.2)  # health.MISMATCH_AFTER
    mismatch = metrics_of(app)
    assert mismatch["skat_plugin_election_mismatch"] == 1, mismatch
    # A list error is the inspector's word: its status carries it.
    list_error = dict(master, skat_plugin_redirect_list_error=1)

    # Two masters: a and b; the others one appliance each, on its own instance label.
    inputs = (series("a", master) + series("b", {'skat_plugin_role{role="master"}': 1})
              + series("u", unfit) + series("m", mismatch) + series("l", list_error))
    repair_values = " ".join(f"{r['skat_plugin_rule_repairs_total']:g}" for r in repairs)
    inputs.append({"series": 'skat_plugin_rule_repairs_total{instance="r"}',
                   "values": f"0 {repair_values}"})
    # node_exporter's own series: the file written at t=0 (promtool's clock), never again.
    inputs.append({"series": f'node_textfile_mtime_seconds{{instance="a",file="{FULL_PATH}"}}',
                   "values": "0x20"})
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": inputs, "alert_rule_test": [
                {"eval_time": "5m", "alertname": "SkatTwoMasters", "exp_alerts": [
                    expect("SkatTwoMasters", "3")]},  # a, b and l (a master)
                {"eval_time": "5m", "alertname": "SkatRoleDiffersFromKeepalived",
                 "exp_alerts": [expect("SkatRoleDiffersFromKeepalived", instance="m")]},
                {"eval_time": "5m", "alertname": "SkatUnfit",
                 "exp_alerts": [expect("SkatUnfit", instance="u")]},
                {"eval_time": "5m", "alertname": "SkatListError",
                 "exp_alerts": [expect("SkatListError", instance="l")]},
                {"eval_time": "5m", "alertname": "SkatRulesRepairedRepeatedly",
                 "exp_alerts": [expect("SkatRulesRepairedRepeatedly", instance="r")]},
                {"eval_time": "5m", "alertname": "SkatMetricsStale", "exp_alerts": [
                    expect("SkatMetricsStale", instance="a", file=FULL_PATH)]},
            ]},
            {"interval": "1m", "input_series": series("c", backup) + series("d", backup),
             "alert_rule_test": [
                 {"eval_time": "5m", "alertname": "SkatNoMaster", "exp_alerts": [
                     expect("SkatNoMaster")]},
                 {"eval_time": "5m", "alertname": "SkatTwoMasters", "exp_alerts": []}]},
            {"interval": "1m", "input_series": series("a", master) + series("c", backup),
             "alert_rule_test": [
                 {"eval_time": "5m", "alertname": name, "exp_alerts": []}
                 for name in ("SkatTwoMasters", "SkatNoMaster", "SkatUnfit",
                              "SkatRoleDiffersFromKeepalived", "SkatListError")]},
        ],
    }
    path = tmp_path / "alerts-test.yml"
    path.write_text(json.dumps(test, indent=1))  # YAML is a superset of JSON
    res = subprocess.run([tool, "test", "rules", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_metric_the_product_writes_is_documented() -> None:
    """docs/metrics.md lists each series (issue 16 item 10: seven were missing)."""
    from skat_plugin import metrics

    show = {"role": "master", "vrrp_enable": 1, "gateway": {"subscribers": {}},
            "redirect": {"counters": {}, "inspector": {"alive": True}},
            "fitness": {"fit": True}, "keepalived": {"state": "MASTER"}}
    names = {line.split()[2] for line in metrics.render(show, {}, 0).splitlines()
             if line.startswith("# TYPE ")}
    doc = (REPO / "docs/metrics.md").read_text()
    missing = sorted(n for n in names
                     if f"`{n}" not in doc and f"`..._{n.split('_', 3)[3]}`" not in doc)
    assert len(names) > 30 and not missing, missing
