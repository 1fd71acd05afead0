"""The rendered chart against pinned Kubernetes schemas and a security scan (checkov), both offline."""

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import CHART, ROOT, Manifest, parse, tool

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the one the bundled kubectl speaks.
KUBERNETES_VERSIONS = ["1.29.0", "1.34.0"]
SKIPS_FILE = Path(__file__).parent / "checkov-skips.yaml"
# Kinds from other projects' CRDs, not in the Kubernetes schemas; checked by hand below.
FOREIGN_KINDS = {("monitoring.coreos.com/v1", kind) for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")}


def test_the_oldest_version_checked_is_the_chart_minimum() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={KUBERNETES_VERSIONS[0]}-0"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(rendered: list[Manifest], version: str) -> None:
    problems = []
    for obj in rendered:
        if (obj["apiVersion"], obj["kind"]) in FOREIGN_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert problems == []


def test_the_validator_catches_a_misspelt_field() -> None:
    """The schema check is strict: a typo in a template would fail it, not slip through."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80, "targetPort": "http"}], "selectr": {"a": "b"}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


def test_service_monitors_scrape_the_metrics_ports_only(rendered: list[Manifest]) -> None:
    """Each ServiceMonitor selects one Service, scrapes its `metrics` port (never the API's), and that
    port reaches a container port of the selected pods."""
    monitors = [o for o in rendered if o["kind"] == "ServiceMonitor"]
    services = [o for o in rendered if o["kind"] == "Service"]
    deployments = [o for o in rendered if o["kind"] == "Deployment"]
    for monitor in monitors:
        assert set(monitor["spec"]) == {"selector", "namespaceSelector", "endpoints"}
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        (service,) = [s for s in services if wanted <= s["metadata"]["labels"].items()]
        assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
        (deployment,) = [
            d
            for d in deployments
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        container_ports = [p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]]
        assert port["targetPort"] in container_ports
    if monitors:
        assert {m["metadata"]["name"].rsplit("-", 1)[-1] for m in monitors} == {"api", "operator"}


def test_metrics_ports_admit_only_the_prometheus_namespace(rendered: list[Manifest]) -> None:
    policies = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    for name in ("api", "operator"):
        (policy,) = [p for p in policies if p["metadata"]["name"].endswith(f"-{name}")]
        (rule,) = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "metrics"]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def _skips() -> dict[str, str]:
    skips: dict[str, str] = yaml.safe_load(SKIPS_FILE.read_text())
    return skips


def _annotated_skips(objects: list[Manifest]) -> dict[str, str]:
    found = {}
    for obj in objects:
        for key, value in obj["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                found[f"{check} on {obj['kind']}/{obj['metadata']['name']}"] = reason
    return found


def _checkov(manifest: str, tmp_path: Path) -> dict[str, Any]:
    target = tmp_path / "rendered.yaml"
    target.write_text(manifest)
    done = subprocess.run(
        [
            str(tool("checkov")),
            "--file",
            str(target),
            "--framework",
            "kubernetes",
            "--skip-download",  # offline: no policy metadata from the vendor's service
            "--skip-check",
            ",".join(_skips()),
            "--output",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LOG_LEVEL": "ERROR"},
    )
    assert done.stdout.strip().startswith(("{", "[")), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize("which", ["default", "everything"])
def test_checkov_finds_nothing_beyond_the_documented_skips(
    which: str, default_text: str, everything_text: str, tmp_path: Path
) -> None:
    report = _checkov(default_text if which == "default" else everything_text, tmp_path)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 100, "checkov ran no checks: the scan did not read the manifests"


def test_checkov_reports_a_privileged_pod(tmp_path: Path) -> None:
    """The scan is live: the same call flags a plainly insecure pod."""
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "headrace"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"privileged": True}}]},
    }
    report = _checkov(yaml.safe_dump(bad), tmp_path)
    assert "CKV_K8S_16" in {c["check_id"] for c in report["results"]["failed_checks"]}


def test_every_skip_has_a_reason_and_is_documented(everything_text: str) -> None:
    security = (ROOT / "docs" / "security.md").read_text()
    skips = _skips() | _annotated_skips(parse(everything_text))
    assert skips, "expected the documented skips to be found"
    for what, reason in skips.items():
        assert len(reason.split()) >= 5, f"{what}: give a reason"
        assert what.split()[0] in security, f"{what} is not listed in docs/security.md"
