"""The chart's PrometheusRule, as rendered, against `promtool test rules` (alerts-test.yaml), and its
runbook links against the headings of docs/operations.md."""

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.chart.conftest import ROOT, parse, render_text, tool
from tests.monitoring.promql import metric_names, registered

HERE = Path(__file__).parent
RUNBOOK = "https://runbooks.example/ops.md"


def rendered_rule() -> dict:  # type: ignore[type-arg]
    objects = parse(
        render_text(sets=("metrics.prometheusRule.enabled=true", f"metrics.prometheusRule.runbookBaseUrl={RUNBOOK}"))
    )
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    return rule  # type: ignore[no-any-return]


def test_promtool_checks_and_tests_every_alert(tmp_path: Path) -> None:
    rule = rendered_rule()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(HERE / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    promtool = str(tool("promtool"))
    checked = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts-test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert of the rule has a case in alerts-test.yaml.
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    cases = yaml.safe_load((HERE / "alerts-test.yaml").read_text())["tests"]
    firing = {case["alertname"] for test in cases for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert alerts == firing


def github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_every_runbook_link_lands_on_a_heading_of_operations_md() -> None:
    headings = {
        github_anchor(line.lstrip("#"))
        for line in (ROOT / "docs" / "operations.md").read_text().splitlines()
        if line.startswith("#")
    }
    for group in rendered_rule()["spec"]["groups"]:
        for rule in group["rules"]:
            anchor = rule["annotations"]["runbook_url"].removeprefix(f"{RUNBOOK}#")
            assert anchor in headings, f"{rule['alert']}: docs/operations.md has no heading #{anchor}"


def test_every_alert_reads_metrics_the_code_registers() -> None:
    known = registered()
    for group in rendered_rule()["spec"]["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names and names <= known, f"{rule['alert']}: {sorted(names - known)} is exported by nothing"
