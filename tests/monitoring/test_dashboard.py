"""The Grafana dashboard: valid JSON, shipped whole in the chart's ConfigMap, and reading only metrics
Headrace's code registers (or the few foreign ones it names)."""

import json

from tests.chart.conftest import CHART, parse, render_text
from tests.monitoring.promql import FOREIGN, metric_names, registered

DASHBOARD = CHART / "dashboards" / "headrace.json"


def queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    found = [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"${variable['name']}", variable["definition"]))
    return found


def test_dashboard_is_in_the_chart_configmap_for_the_grafana_sidecar() -> None:
    objects = parse(render_text(sets=("metrics.dashboard.enabled=true",)))
    (configmap,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["headrace.json"]) == json.loads(DASHBOARD.read_text())
    assert not [o for o in parse(render_text()) if o["metadata"]["name"].endswith("-dashboard")]


def test_every_panel_has_a_query_and_the_issue_s_subjects_are_there() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert all(panel.get("targets") for panel in board["panels"])
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for subject in ("phase", "per second", "failures", "queue depth", "hpa desired", "search latency"):
        assert subject in titles


def test_every_query_names_a_metric_the_code_registers() -> None:
    known = registered() | FOREIGN
    for title, expr in queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= known, f"{title}: {sorted(names - known)} is exported by nothing"


def test_the_metric_name_check_catches_a_typo() -> None:
    known = registered()
    assert "headrace_tasks_pending" in known and "headrace_runs_total" in known
    assert metric_names('sum by (phase) (headrace_ingestion_phase{namespace=~"$ns"})') - known == {
        "headrace_ingestion_phase"
    }
